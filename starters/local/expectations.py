"""What the ERP must hold, as the chaos run judges it: stated from billing's documents alone.

The run checks the posting path, so it must not borrow that path's rules: these are written
out again here, from the business, in as few words as the books need.

- An invoice counts once billing finalized it; a credit note counts from the moment it is
  issued. A draft, and a document whose total is zero, call for nothing.
- A finalized invoice calls for one ERP invoice of its total; with a negative total (a
  downgrade's proration) one ERP credit note of the absolute value instead.
- A credit note calls for one ERP credit note of its total (an ERP invoice if negative).
- A voided document calls, besides, for its reversal `<id>/void`: the other kind, same amount.
- A balance credit (billing's negative adjustment, e.g. a credit asked on a support ticket)
  calls for one ERP credit note of the amount credited, unless it was taken back: a reversal
  names the adjustment it takes back in its metadata, and neither of the two is booked.
- Money in a currency the ledger does not book is never posted: it waits on finance.
- Every billing event about a customer's account, documents or subscriptions reaches a
  process.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from canonical import BalanceTransaction, BillingDocument, BusinessEvent

ErpKind = Literal["invoice", "credit_note"]
VOID_REFERENCE_SUFFIX = "/void"  # the reference of the ERP document that reverses a voided one
REVERSES = "reverses"  # billing metadata of an adjustment that takes another back
CASE_ID = "case_id"  # billing metadata naming the support case a credit was asked on


@dataclass(frozen=True)
class ExpectedDocument:
    """One ERP document billing's books call for, under the reference it must carry."""

    reference: str
    kind: ErpKind
    currency: str
    amount: Decimal  # positive, whatever the kind

    def __post_init__(self) -> None:
        if self.amount <= 0:
            raise ValueError(f"{self.reference}: an ERP document of {self.amount} books nothing")


def expected_for_document(document: BillingDocument) -> list[ExpectedDocument]:
    """The ERP documents one invoice or credit note calls for in its current state."""
    counts = document.kind == "credit_note" or document.finalized_at is not None
    total = document.total.amount
    if not counts or total == 0:
        return []
    if document.kind == "invoice":
        kind: ErpKind = "invoice" if total > 0 else "credit_note"
    else:
        kind = "credit_note" if total > 0 else "invoice"
    booked = ExpectedDocument(document.document_id, kind, document.currency, abs(total))
    if document.status != "void":
        return [booked]
    reversal = ExpectedDocument(
        document.document_id + VOID_REFERENCE_SUFFIX,
        "credit_note" if kind == "invoice" else "invoice",
        document.currency,
        abs(total),
    )
    return [booked, reversal]


def expected_for_balance_credits(
    adjustments: Iterable[BalanceTransaction],
) -> list[ExpectedDocument]:
    """The ERP credit notes a customer's balance adjustments call for."""
    adjustments = list(adjustments)
    taken_back = {a.metadata[REVERSES] for a in adjustments if REVERSES in a.metadata}
    return [
        ExpectedDocument(a.transaction_id, "credit_note", a.amount.currency, -a.amount.amount)
        for a in adjustments
        if a.kind in (None, "adjustment")  # not an invoice or credit note drawing on the balance
        and a.amount.amount < 0
        and REVERSES not in a.metadata
        and a.transaction_id not in taken_back
    ]


def waits_on_finance(expected: ExpectedDocument, ledger_currencies: Iterable[str]) -> bool:
    """True when the ledger does not book the document's currency: finance must decide."""
    return expected.currency.upper() not in {c.upper() for c in ledger_currencies}


# Billing events some process must see: customer changes (account sync), and changes of a
# document or subscription that may change what the ERP holds (a draft's creation never does).
EVENTS_FOR_A_PROCESS = frozenset(
    {
        "customer.created",
        "customer.updated",
        "customer.deleted",
        "invoice.finalized",
        "invoice.paid",
        "invoice.voided",
        "invoice.marked_uncollectible",
        "credit_note.created",
        "credit_note.voided",
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
    }
)


def must_reach_a_process(event: BusinessEvent) -> bool:
    """A billing event about a customer's account, documents or subscriptions."""
    return event.type in EVENTS_FOR_A_PROCESS and bool(event.subject.customer_id)
