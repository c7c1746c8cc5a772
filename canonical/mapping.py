"""Finance's mapping from billing's catalogue to the ERP's chart: products and prices to
ERP products and revenue accounts, tax rates to ERP taxes, payment methods and currencies
to payment journals and clearing accounts.

Finance owns it (a versioned file, see `adapters.mapping_file`); ledgerbridge never guesses:
a document that names something the mapping lacks is not posted, and the finance exception
names exactly what is missing.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from canonical.billing import LedgerLine, LedgerPosting
from canonical.payments import PaymentPosting

ANY_METHOD = "*"
# Lines ledgerbridge itself makes, booked on the mapping's own entries, not on a product's:
# a refund made without a billing credit note (`refunds`), a support credit (`support_credits`).
REFUND_LINE = "ledgerbridge:refund"
SUPPORT_CREDIT_LINE = "ledgerbridge:support_credit"


class ProductAccount(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    erp_product: str = Field(min_length=1, description="ERP product code")
    revenue_account: str = Field(min_length=1, description="ERP revenue account code")


class TaxAccount(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    erp_tax: str = Field(min_length=1, description="the ERP tax's name (it names its accounts)")


class PaymentJournal(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    journal: str = Field(min_length=1, description="ERP payment journal (its name or code)")
    clearing_account: str = Field(min_length=1, description="ERP clearing account code")


class FinanceMapping(BaseModel):
    """Keys are billing ids: `products` by product id or price id (a price wins over its
    product), `tax_rates` by tax rate id, `payments` by `method/CURRENCY` (method `*` for
    any method of that currency). `refunds` names the product and account that a refund
    made without a billing credit note is booked against; `support_credits` those of the
    credit notes support credits make (a contra-revenue account, as finance decides)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(ge=1, description="finance bumps it with every change")
    currencies: list[str] = Field(default_factory=list, description="currencies the ERP books")
    products: dict[str, ProductAccount] = Field(default_factory=dict)
    tax_rates: dict[str, TaxAccount] = Field(default_factory=dict)
    payments: dict[str, PaymentJournal] = Field(default_factory=dict)
    refunds: ProductAccount | None = None
    support_credits: ProductAccount | None = None

    def product(self, product_id: str | None, price_id: str | None) -> ProductAccount | None:
        if product_id == REFUND_LINE:
            return self.refunds
        if product_id == SUPPORT_CREDIT_LINE:
            return self.support_credits
        for key in (price_id, product_id):
            if key and key in self.products:
                return self.products[key]
        return None

    def journal(self, method: str, currency: str) -> PaymentJournal | None:
        currency = currency.upper()
        return self.payments.get(f"{method}/{currency}") or self.payments.get(
            f"{ANY_METHOD}/{currency}"
        )


class CatalogEntry(BaseModel):
    """One thing a system can be asked to book against, for `ledgerbridge mapping check`."""

    model_config = ConfigDict(frozen=True)

    kind: str = Field(description="billing: product, price, tax_rate, currency, payment_method; "
                      "ERP: product, account, tax, journal, currency")  # fmt: skip
    key: str = Field(description="the id or code a mapping entry names")
    name: str = ""
    active: bool = True
    parent: str | None = Field(
        default=None, description="what it belongs to: a price's product (a price is mapped "
        "by its own entry or its product's)",
    )  # fmt: skip


class Unmapped(ValueError):
    """What the mapping lacks for one posting: each item names the billing id to map."""

    def __init__(self, reference: str, missing: list[str], version: int) -> None:
        self.reference = reference
        self.missing = missing
        self.version = version
        super().__init__(
            f"{reference} cannot be posted: finance mapping v{version} has no entry for "
            + "; ".join(missing)
        )


def map_document(posting: LedgerPosting, mapping: FinanceMapping) -> LedgerPosting:
    """The posting with each line's ERP product and revenue account and each tax's ERP tax;
    Unmapped listing every gap (all of them at once: finance fixes the file once)."""
    missing: list[str] = []
    if posting.currency.upper() not in mapping.currencies:
        missing.append(f"currency {posting.currency.upper()}")
    lines = []
    for line in posting.lines:
        target = mapping.product(line.product_id, line.price_id)
        if target is None:
            missing.append(_unmapped_line(line))
            lines.append(line)
            continue
        mapped = {"erp_product": target.erp_product, "revenue_account": target.revenue_account}
        lines.append(line.model_copy(update=mapped))
    taxes = []
    for tax in posting.taxes:
        tax_target = mapping.tax_rates.get(tax.rate_id)
        if tax_target is None:
            missing.append(f"tax rate {tax.rate_id} ({tax.description})")
            taxes.append(tax)
            continue
        taxes.append(tax.model_copy(update={"erp_tax": tax_target.erp_tax}))
    if missing:
        raise Unmapped(posting.reference, _unique(missing), mapping.version)
    return posting.model_copy(update={"lines": lines, "taxes": taxes})


def map_payment(posting: PaymentPosting, mapping: FinanceMapping) -> PaymentPosting:
    currency = posting.amount.currency.upper()
    missing = [] if currency in mapping.currencies else [f"currency {currency}"]
    target = mapping.journal(posting.method, currency)
    if target is None:
        missing.append(f"payment journal for {posting.method}/{currency}")
    if missing:
        raise Unmapped(posting.reference, missing, mapping.version)
    assert target is not None
    return posting.model_copy(
        update={"journal": target.journal, "clearing_account": target.clearing_account}
    )


def _unmapped_line(line: LedgerLine) -> str:
    if line.product_id == REFUND_LINE:
        return "refunds (the [refunds] entry: ERP product and account of refunds)"
    if line.product_id == SUPPORT_CREDIT_LINE:
        return "support credits (the [support_credits] entry: ERP product and account)"
    what = line.product_id or "none"
    return f"product {what} (price {line.price_id or 'none'}, line {line.description!r})"


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
