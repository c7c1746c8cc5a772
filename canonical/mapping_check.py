"""Finance's mapping held against both systems' catalogues (`ledgerbridge mapping check`).

Three kinds of finding. *Unmapped*: billing can bill something the mapping has no entry for
(a document naming it would go to finance). *Missing in the ERP*: an entry names an ERP
product, account, tax, journal or currency the ERP does not have, or has made inactive (the
posting would fail there). *Unknown in billing*: an entry for a billing id billing does not
know (a typo, or something deleted: harmless, so a warning). Pure: the catalogues are read by
the caller.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict

from canonical.mapping import CatalogEntry, FinanceMapping

# How billing records money received on an invoice: a card charge, or a payment recorded
# outside billing. Each currency needs a journal for both (a `*` entry serves every method).
PAYMENT_METHODS = ("card", "out_of_band")


class MappingFinding(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: str
    key: str
    detail: str


class MappingReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: int
    unmapped: list[MappingFinding]
    missing_in_erp: list[MappingFinding]
    unknown_in_billing: list[MappingFinding]

    @property
    def clean(self) -> bool:
        """Nothing billing bills is unmapped and everything the mapping names exists."""
        return not self.unmapped and not self.missing_in_erp


def check_mapping(
    mapping: FinanceMapping, billing: Sequence[CatalogEntry], erp: Sequence[CatalogEntry]
) -> MappingReport:
    return MappingReport(
        version=mapping.version,
        unmapped=_unmapped(mapping, billing),
        missing_in_erp=_missing_in_erp(mapping, erp),
        unknown_in_billing=_unknown_in_billing(mapping, billing),
    )


def _of(entries: Iterable[CatalogEntry], kind: str) -> list[CatalogEntry]:
    return [entry for entry in entries if entry.kind == kind]


def _label(entry: CatalogEntry) -> str:
    archived = "" if entry.active else ", archived"
    return f"{entry.name or entry.key}{archived}"


def _unmapped(mapping: FinanceMapping, billing: Sequence[CatalogEntry]) -> list[MappingFinding]:
    found: list[MappingFinding] = []
    prices_of: dict[str, list[CatalogEntry]] = {}
    for price in _of(billing, "price"):
        prices_of.setdefault(price.parent or "", []).append(price)
    for product in _of(billing, "product"):
        if product.key in mapping.products:
            continue
        prices = prices_of.get(product.key, [])
        unpriced = [p.key for p in prices if p.key not in mapping.products]
        detail = f"{_label(product)}: no [products] entry"
        if unpriced:
            detail += f" for it or its prices {', '.join(unpriced)}"
        elif prices:
            # A credit netting a plan change of two of its prices names only the product.
            detail += " (its prices have theirs; a credit netting two of them names the product)"
        found.append(MappingFinding(kind="product", key=product.key, detail=detail))
    known_products = {p.key for p in _of(billing, "product")}
    for parent, prices in sorted(prices_of.items()):
        if parent in known_products:
            continue  # reported with its product above
        for price in prices:
            if mapping.product(parent or None, price.key) is None:
                detail = f"{_label(price)} (product {parent or 'none'}): no [products] entry"
                found.append(MappingFinding(kind="price", key=price.key, detail=detail))
    for rate in _of(billing, "tax_rate"):
        if rate.key not in mapping.tax_rates:
            found.append(
                MappingFinding(
                    kind="tax_rate", key=rate.key, detail=f"{_label(rate)}: no [tax_rates] entry"
                )
            )
    for currency in _of(billing, "currency"):
        code = currency.key.upper()
        if code not in mapping.currencies:
            found.append(MappingFinding(kind="currency", key=code, detail="not in `currencies`"))
        for method in PAYMENT_METHODS:
            if mapping.journal(method, code) is None:
                found.append(
                    MappingFinding(
                        kind="payment",
                        key=f"{method}/{code}",
                        detail=f"no [payments] entry for {method}/{code} (or */{code})",
                    )
                )
    if mapping.support_credits is None:
        found.append(
            MappingFinding(
                kind="support_credits",
                key="support_credits",
                detail="no [support_credits] entry: credits support grants have no account",
            )
        )
    if mapping.refunds is None:
        found.append(
            MappingFinding(
                kind="refunds",
                key="refunds",
                detail="no [refunds] entry: a refund made without a credit note has no account",
            )
        )
    return found


def _missing_in_erp(mapping: FinanceMapping, erp: Sequence[CatalogEntry]) -> list[MappingFinding]:
    """Each ERP name the mapping uses, looked up among the ERP's entries of its kind by code
    or name (the ERP adapter finds them either way)."""
    entries: dict[str, dict[str, CatalogEntry]] = {}
    for entry in erp:
        names = entries.setdefault(entry.kind, {})
        names.setdefault(entry.key, entry)
        if entry.name:
            names.setdefault(entry.name, entry)
    found: list[MappingFinding] = []
    seen: set[tuple[str, str]] = set()

    def need(kind: str, name: str, used_by: str) -> None:
        if (kind, name) in seen:
            return
        seen.add((kind, name))
        entry = entries.get(kind, {}).get(name)
        if entry is None:
            found.append(
                MappingFinding(
                    kind=kind,
                    key=name,
                    detail=f"the ERP has no {kind} {name!r} (named by {used_by})",
                )
            )
        elif not entry.active:
            found.append(
                MappingFinding(
                    kind=kind,
                    key=name,
                    detail=f"the ERP's {kind} {name!r} is inactive (named by {used_by})",
                )
            )

    for currency in mapping.currencies:
        need("currency", currency, "currencies")
    for key, product in mapping.products.items():
        need("product", product.erp_product, f"products.{key}")
        need("account", product.revenue_account, f"products.{key}")
    for key, tax in mapping.tax_rates.items():
        need("tax", tax.erp_tax, f"tax_rates.{key}")
    for key, journal in mapping.payments.items():
        need("journal", journal.journal, f"payments.{key}")
        need("account", journal.clearing_account, f"payments.{key}")
    for section, target in (("refunds", mapping.refunds),
                            ("support_credits", mapping.support_credits)):  # fmt: skip
        if target is not None:
            need("product", target.erp_product, section)
            need("account", target.revenue_account, section)
    return found


def _unknown_in_billing(
    mapping: FinanceMapping, billing: Sequence[CatalogEntry]
) -> list[MappingFinding]:
    sold = {e.key for e in billing if e.kind in ("product", "price")}
    rates = {e.key for e in _of(billing, "tax_rate")}
    found = [
        MappingFinding(kind="product", key=key, detail="billing has no product or price " + key)
        for key in mapping.products
        if key not in sold
    ]
    found += [
        MappingFinding(kind="tax_rate", key=key, detail="billing has no tax rate " + key)
        for key in mapping.tax_rates
        if key not in rates
    ]
    return found


__all__ = ["PAYMENT_METHODS", "MappingFinding", "MappingReport", "check_mapping"]
