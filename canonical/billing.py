"""Billing documents and subscriptions as ledgerbridge understands them.

Amounts are Money (Decimal); the billing adapter converts from minor units. A document's
sign follows its effect on what the customer owes: an invoice line that credits unused time
is negative, a credit note's lines are positive amounts credited.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from canonical.money import Money

InvoiceStatus = Literal["draft", "open", "paid", "void", "uncollectible"]
CreditNoteStatus = Literal["issued", "void"]
SubscriptionStatus = Literal[
    "active", "trialing", "past_due", "canceled", "unpaid", "incomplete", "incomplete_expired",
    "paused",
]  # fmt: skip


class TaxLine(BaseModel):
    """Tax of one rate, as billing computed it: on one document line, or summed over a
    whole document. `amount` is billing's own figure, never recomputed from the rate."""

    model_config = ConfigDict(frozen=True)

    rate_id: str = Field(description="billing's tax rate id, e.g. txr_...")
    display_name: str | None = Field(default=None, description="e.g. VAT, Sales tax")
    jurisdiction: str | None = None
    percentage: Decimal
    inclusive: bool = Field(description="True when the line amount already includes the tax")
    taxable_amount: Money = Field(description="the amount the rate applies to, tax excluded")
    amount: Money


class DocumentLine(BaseModel):
    """One line of a document. `amount` is billing's line amount: it includes the line's
    inclusive taxes and excludes its exclusive ones (Stripe's meaning)."""

    model_config = ConfigDict(frozen=True)

    line_id: str
    description: str
    quantity: Decimal
    unit_amount: Money
    amount: Money
    proration: bool = False
    price_id: str | None = None
    product_id: str | None = None
    period_start: date | None = None
    period_end: date | None = None
    tax_lines: list[TaxLine] = Field(default_factory=list)

    def net_amount(self) -> Money:
        """The line's amount without any tax: what the revenue account receives."""
        inclusive = sum((t.amount.amount for t in self.tax_lines if t.inclusive), Decimal(0))
        return Money(amount=self.amount.amount - inclusive, currency=self.amount.currency)


class LinkedRefund(BaseModel):
    """A refund a credit note names (Stripe's `refunds[]`): the money of the credit given
    back by that refund, made with the credit note or before it and linked to it later."""

    model_config = ConfigDict(frozen=True)

    refund_id: str = Field(description="billing's refund id (re_...)")
    amount: Money = Field(description="what of the refund applies to this credit note")


class BillingDocument(BaseModel):
    """An invoice or a credit note in billing: what the ERP must mirror once finalized."""

    SCHEMA_VERSION: ClassVar[int] = 1
    model_config = ConfigDict(frozen=True)

    document_id: str = Field(description="billing id: in_... or cn_...")
    kind: Literal["invoice", "credit_note"]
    status: InvoiceStatus | CreditNoteStatus
    number: str | None = None
    customer_id: str
    subscription_id: str | None = None
    invoice_id: str | None = Field(default=None, description="the invoice a credit note credits")
    billing_reason: str | None = None
    currency: str
    lines: list[DocumentLine]
    subtotal: Money
    tax: Money = Field(description="all tax of the document, inclusive and exclusive")
    total: Money
    tax_lines: list[TaxLine] = Field(
        default_factory=list, description="the document's tax per rate (billing's total_taxes)"
    )
    amount_paid: Money | None = None
    amount_remaining: Money | None = None
    created_at: AwareDatetime
    finalized_at: AwareDatetime | None = None
    voided_at: AwareDatetime | None = None
    metadata: dict[str, str] = Field(
        default_factory=dict, description="e.g. case_id on a credit note a support case asked"
    )
    refunds: list[LinkedRefund] = Field(
        default_factory=list, description="a credit note's: the refunds that give its money back"
    )
    out_of_band_amount: Money | None = Field(
        default=None,
        description="a credit note's: what it gives back outside billing (Stripe's field)",
    )

    @property
    def was_finalized(self) -> bool:
        """Finalized documents exist for the books; drafts do not. Credit notes are final
        from the moment they are issued."""
        return self.kind == "credit_note" or self.finalized_at is not None


class BalanceTransaction(BaseModel):
    """A change of what billing owes the customer: negative credits the customer (Stripe's sign)."""

    model_config = ConfigDict(frozen=True)

    transaction_id: str
    customer_id: str
    amount: Money
    ending_balance: Money
    description: str | None = None
    invoice_id: str | None = None
    credit_note_id: str | None = None
    created_at: AwareDatetime
    kind: str | None = Field(
        default=None, description="billing's type: adjustment, applied_to_invoice, credit_note…"
    )
    metadata: dict[str, str] = Field(
        default_factory=dict, description="case_id of a support credit; `reverses` on a reversal"
    )


class SubscriptionItem(BaseModel):
    model_config = ConfigDict(frozen=True)

    item_id: str
    price_id: str
    product_id: str
    description: str
    quantity: int
    unit_amount: Money
    interval: Literal["day", "week", "month", "year"]
    interval_count: int = 1


class Subscription(BaseModel):
    SCHEMA_VERSION: ClassVar[int] = 1
    model_config = ConfigDict(frozen=True)

    subscription_id: str
    customer_id: str
    status: SubscriptionStatus
    currency: str
    items: list[SubscriptionItem]
    current_period_start: AwareDatetime
    current_period_end: AwareDatetime
    cancel_at_period_end: bool = False
    canceled_at: AwareDatetime | None = None
    created_at: AwareDatetime

    def monthly_recurring(self) -> Money:
        """Monthly recurring revenue of the items (yearly / 12, weekly * 52 / 12)."""
        per_month = {"day": Decimal(365) / 12, "week": Decimal(52) / 12, "month": Decimal(1),
                     "year": Decimal(1) / 12}  # fmt: skip
        total = Money.zero(self.currency)
        for item in self.items:
            factor = per_month[item.interval] / item.interval_count
            total = total + Money(
                amount=item.unit_amount.amount * item.quantity * factor, currency=self.currency
            )
        return total.quantized()


class LedgerLine(BaseModel):
    """A revenue line of an ERP document: net of tax. The billing ids say what was sold;
    the ERP fields are filled from finance's mapping before the ERP sees the line."""

    model_config = ConfigDict(frozen=True)

    description: str
    quantity: Decimal
    unit_price: Decimal
    product_id: str | None = None
    price_id: str | None = None
    erp_product: str | None = Field(default=None, description="ERP product code (mapped)")
    revenue_account: str | None = Field(default=None, description="ERP account code (mapped)")


class LedgerTax(BaseModel):
    """Billing's tax of one rate on an ERP document, posted as the ERP's tax with billing's
    exact amount (a manual tax line where the ERP's computation could round otherwise).
    Signed like the lines."""

    model_config = ConfigDict(frozen=True)

    rate_id: str
    description: str
    base: Decimal = Field(description="the taxable amount, in the posting's sign")
    amount: Decimal
    erp_tax: str | None = Field(default=None, description="the ERP's tax (mapped)")


class LedgerPosting(BaseModel):
    """What ledgerbridge asks the ERP to record for one billing document (or its reversal).

    `total` is positive; the lines plus the taxes sum to it (quantity * unit_price, and
    each tax amount), a proration credit being a negative line inside an invoice. For a
    credit note the ERP adapter turns the lines into the ERP's own credit form (negative
    quantities in Tryton).
    """

    SCHEMA_VERSION: ClassVar[int] = 2
    model_config = ConfigDict(frozen=True)

    reference: str = Field(description="unique: the billing document id, `/void` for reversal")
    kind: Literal["invoice", "credit_note"]
    customer_id: str
    currency: str
    lines: list[LedgerLine]
    taxes: list[LedgerTax] = Field(default_factory=list)
    total: Money = Field(description="positive: what the document is worth, tax included")
    billing_date: date = Field(description="the document's date: also its exchange-rate date")
    description: str
    applies_to: str | None = Field(
        default=None,
        description="a credit note's: the reference of the invoice it credits (settled by it "
        "in the ERP when the credit fits what is open there)",
    )

    def unmapped(self) -> list[str]:
        """What the ERP cannot be told yet: lines or taxes without their mapped ERP names."""
        missing = [
            f"line {line.description!r}" for line in self.lines
            if not (line.erp_product and line.revenue_account)
        ]  # fmt: skip
        missing += [f"tax rate {tax.rate_id}" for tax in self.taxes if not tax.erp_tax]
        return missing


class PostedDocument(BaseModel):
    """An ERP document that exists for a reference."""

    SCHEMA_VERSION: ClassVar[int] = 1
    model_config = ConfigDict(frozen=True)

    reference: str
    kind: Literal["invoice", "credit_note"]
    erp_document_id: str
    erp_number: str | None
    total: Money
    state: str
    created_now: bool = Field(description="False when an earlier attempt had already made it")
