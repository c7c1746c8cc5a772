"""The subscription ledger's messages and the ERP documents a billing document needs.

Pure: the ledger workflow, webhook routing and reconciliation's healing all read these.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field

from canonical.billing import BillingDocument, LedgerLine, LedgerPosting
from canonical.money import Money

LEDGER_PROCESS = "amendment_to_erp"
LEDGER_WORKFLOW = "SubscriptionLedger"  # the workflow type: signal-with-start by name
BILLING_EVENT_SIGNAL = "billing_event"
VOID_SUFFIX = "/void"
CONTINUE_AS_NEW_AFTER = 500


def ledger_workflow_id(subscription_id: str | None, customer_id: str) -> str:
    if subscription_id:
        return f"subscription/{subscription_id}"
    return f"customer-ledger/{customer_id}"


class BillingEventRef(BaseModel):
    """A billing event, reduced to what ordering and refetching need (no documents)."""

    event_id: str
    event_type: str
    created: int = Field(description="billing's own event time, unix seconds")
    object_kind: Literal["invoice", "credit_note", "subscription"]
    object_id: str
    customer_id: str
    correlation_id: str
    # The document's billing number (per customer, sequential): orders same-second events.
    document_number: str | None = None

    def billing_order(self) -> tuple[int, str, str]:
        return (self.created, self.document_number or "", self.event_id)


class SubscriptionLedgerInput(BaseModel):
    subscription_id: str | None
    customer_id: str
    supported_currencies: list[str]
    # Carried across continue-as-new: only what is still pending, and recent event ids.
    pending: list[BillingEventRef] = []
    seen_event_ids: list[str] = []
    settled_documents: list[str] = []
    exceptions_opened: int = 0
    continue_as_new_after: int = CONTINUE_AS_NEW_AFTER


def required_postings(document: BillingDocument) -> list[LedgerPosting]:
    """The ERP documents that mirror a billing document in its current state, in order.

    A draft needs nothing; a finalized invoice needs an ERP invoice (or a credit note when
    its total is negative, e.g. a downgrade's proration); a voided one also needs the
    reversal. A credit note needs an ERP credit note, and a reversing invoice once voided.
    A zero total moves no money and needs nothing.
    """
    if not document.was_finalized or document.total.amount == 0:
        return []
    main = _posting(document)
    if document.status == "void":
        return [main, _reversal(main)]
    return [main]


def _posting(document: BillingDocument) -> LedgerPosting:
    credit = (document.kind == "credit_note") != (document.total.amount < 0)
    sign = Decimal(-1) if document.total.amount < 0 else Decimal(1)
    lines = [
        LedgerLine(
            description=_line_description(line.description, line.period_start, line.period_end),
            quantity=Decimal(1),
            unit_price=sign * line.amount.amount,
        )
        for line in document.lines
    ]
    if document.tax.amount:
        lines.append(
            LedgerLine(
                description="Tax", quantity=Decimal(1), unit_price=sign * document.tax.amount
            )
        )
    label = "Credit note" if document.kind == "credit_note" else "Invoice"
    billing_date = (document.finalized_at or document.created_at).date()
    posting = LedgerPosting(
        reference=document.document_id,
        kind="credit_note" if credit else "invoice",
        customer_id=document.customer_id,
        currency=document.currency,
        lines=lines,
        total=Money(amount=abs(document.total.amount), currency=document.currency),
        billing_date=billing_date,
        description=(
            f"{label} {document.number or document.document_id} of {billing_date.isoformat()}"
            + (f", subscription {document.subscription_id}" if document.subscription_id else "")
        ),
    )
    return _net_credit_lines(posting)


def _reversal(posting: LedgerPosting) -> LedgerPosting:
    reversal = posting.model_copy(
        update={
            "reference": posting.reference + VOID_SUFFIX,
            "kind": "invoice" if posting.kind == "credit_note" else "credit_note",
            "description": f"Reversal (voided in billing) of {posting.description}",
        }
    )
    return _net_credit_lines(reversal)


def _net_credit_lines(posting: LedgerPosting) -> LedgerPosting:
    """An ERP credit note takes lines of one sign (Tryton numbers it as a credit note only
    then): a credit with a proration charge inside is booked as one net line."""
    if posting.kind != "credit_note" or all(
        ln.unit_price * ln.quantity >= 0 for ln in posting.lines
    ):
        return posting
    parts = "; ".join(f"{ln.description}: {ln.unit_price * ln.quantity}" for ln in posting.lines)
    net = LedgerLine(description=f"Net of {parts}"[:500], quantity=Decimal(1),
                     unit_price=posting.total.amount)  # fmt: skip
    return posting.model_copy(update={"lines": [net]})


def _line_description(text: str, start: date | None, end: date | None) -> str:
    if start and end:
        return f"{text} ({start.isoformat()} to {end.isoformat()})"
    return text
