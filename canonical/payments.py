"""Money that moved: payments of invoices and refunds of them, and what the ERP records.

A payment is one of billing's invoice payments: the part of one payment (a card charge, or
money received out of band) applied to one invoice. Its id is what the ERP posting is
idempotent on, so each is posted exactly once however often its events arrive. A refund
gives back part or all of a charge; it is posted against the invoice payment it reverses.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from canonical.money import Money

PaymentStatus = Literal["paid", "open", "canceled"]
RefundStatus = Literal["pending", "requires_action", "succeeded", "failed", "canceled"]


class Settlement(BaseModel):
    """What a charge settled as in the billing account's own currency (Stripe's balance
    transaction): the amount, the processor's fee and the net, and the rate used when the
    charge's currency is not the account's."""

    model_config = ConfigDict(frozen=True)

    balance_transaction_id: str
    amount: Money
    fee: Money
    net: Money
    exchange_rate: Decimal | None = None
    available_on: date | None = None


class Payment(BaseModel):
    SCHEMA_VERSION: ClassVar[int] = 1
    model_config = ConfigDict(frozen=True)

    payment_id: str = Field(description="billing's invoice payment id (inpay_...)")
    invoice_id: str
    customer_id: str
    status: PaymentStatus
    amount: Money = Field(description="what this payment paid of the invoice")
    method: str = Field(description="card, out_of_band, ...: chooses the ERP journal")
    payment_intent_id: str | None = None
    charge_id: str | None = None
    paid_at: AwareDatetime | None = None
    settlement: Settlement | None = None


class Refund(BaseModel):
    SCHEMA_VERSION: ClassVar[int] = 1
    model_config = ConfigDict(frozen=True)

    refund_id: str = Field(description="billing's refund id (re_...)")
    charge_id: str
    payment_intent_id: str | None = None
    payment_id: str | None = Field(
        default=None, description="the invoice payment it gives back, when the charge paid one"
    )
    invoice_id: str | None = None
    customer_id: str
    status: RefundStatus
    amount: Money
    reason: str | None = None
    credit_note_id: str | None = Field(
        default=None, description="billing's credit note that made this refund, if one did"
    )
    created_at: AwareDatetime


class PaymentPosting(BaseModel):
    """Money in (a payment) or out (a refund), applied to an ERP document by its reference.

    A payment is applied to its invoice (reference = the billing invoice id); a refund to
    the credit note that reverses what it gives back (billing's credit note when one made
    the refund, else the refund's own credit note, reference = the refund id).
    """

    SCHEMA_VERSION: ClassVar[int] = 1
    model_config = ConfigDict(frozen=True)

    reference: str = Field(description="unique: the payment id or the refund id")
    kind: Literal["payment", "refund"]
    customer_id: str
    applies_to: str = Field(description="reference of the ERP document it settles")
    amount: Money = Field(description="positive")
    payment_date: date
    method: str
    journal: str | None = Field(default=None, description="ERP payment journal (mapped)")
    clearing_account: str | None = Field(default=None, description="ERP account (mapped)")
    description: str

    def unmapped(self) -> list[str]:
        if self.journal and self.clearing_account:
            return []
        return [f"payment method {self.method} in {self.amount.currency}"]


class PostedPayment(BaseModel):
    """A payment or refund the ERP holds, and the state of the document it settles."""

    SCHEMA_VERSION: ClassVar[int] = 1
    model_config = ConfigDict(frozen=True)

    reference: str
    kind: Literal["payment", "refund"]
    erp_document_id: str
    erp_number: str | None = None
    amount: Money
    applies_to: str
    applied_document_state: str = Field(description="e.g. paid once nothing remains")
    created_now: bool = Field(description="False when an earlier attempt had already made it")
