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
- A succeeded refund gives money back: one ERP payment out of its amount, `<refund id>/payout`,
  applied to the credit note that reverses what it gives back. That is billing's credit note
  when one made the refund, else the refund's own ERP credit note (reference: the refund id,
  of the refund's amount).
- A paid invoice payment calls for one ERP payment of its amount, under its own id, applied to
  its invoice.
- A document in a currency the ledger does not book, or with a line whose product finance has
  not mapped, is never posted: it waits on finance (a support credit's credit note is booked on
  finance's own entry for support credits, whatever it names).
- Tax: each document's tax per rate, as billing reported it, lands on the ERP tax finance maps
  the rate to, with the sign of the ERP document (an ERP credit note's tax is negative).
- What a customer owes (per currency): the amount remaining on its open and uncollectible
  invoices, plus its balance (negative: a credit owed to the customer).
- Every billing event about a customer's account, documents, subscriptions or refunds reaches
  a process.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from canonical import BalanceTransaction, BillingDocument, BusinessEvent, Money

ErpKind = Literal["invoice", "credit_note"]
MoneyKind = Literal["payment", "refund"]
VOID_REFERENCE_SUFFIX = "/void"  # the reference of the ERP document that reverses a voided one
PAYOUT_REFERENCE_SUFFIX = "/payout"  # the reference of the ERP payment out of a refund
REVERSES = "reverses"  # billing metadata of an adjustment that takes another back
CASE_ID = "case_id"  # billing metadata naming the support case a credit was asked on
# What billing's tax of a rate finance has not mapped is counted under (no ERP tax is named so).
UNMAPPED_TAX = "unmapped tax rate "
OWING_STATUSES = ("open", "uncollectible")  # invoices whose amount remaining is still owed


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


@dataclass(frozen=True)
class ExpectedPayment:
    """One ERP payment (money in) or refund (money out) billing's books call for."""

    reference: str
    kind: MoneyKind
    customer_id: str
    currency: str
    amount: Decimal  # positive, whatever the kind
    applies_to: str  # the reference of the ERP document it settles

    def __post_init__(self) -> None:
        if self.amount <= 0:
            raise ValueError(f"{self.reference}: an ERP {self.kind} of {self.amount} moves nothing")


@dataclass(frozen=True)
class BilledPayment:
    """An invoice payment as billing lists it (read by the run through billing's own API)."""

    payment_id: str
    invoice_id: str
    customer_id: str
    status: str
    amount: Money


@dataclass(frozen=True)
class BilledRefund:
    """A refund as billing lists it, with the credit note that made it (None: none did)."""

    refund_id: str
    customer_id: str
    status: str
    amount: Money
    credit_note_id: str | None = None


@dataclass(frozen=True)
class OwedInvoice:
    """An invoice as billing lists it, for what the customer still owes on it."""

    customer_id: str
    status: str
    amount_remaining: Money


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


def expected_for_payments(payments: Iterable[BilledPayment]) -> list[ExpectedPayment]:
    """The ERP payments billing's invoice payments call for: the paid ones that paid something."""
    return [
        ExpectedPayment(p.payment_id, "payment", p.customer_id, p.amount.currency,
                        p.amount.amount, p.invoice_id)
        for p in payments
        if p.status == "paid" and p.amount.amount > 0
    ]  # fmt: skip


def expected_for_refund(
    refund: BilledRefund,
) -> tuple[list[ExpectedDocument], list[ExpectedPayment]]:
    """The ERP credit note (when no billing credit note made the refund) and the payment out a
    refund calls for; nothing until it succeeded."""
    if refund.status != "succeeded" or refund.amount.amount <= 0:
        return [], []
    currency, amount = refund.amount.currency, refund.amount.amount
    own_credit_note = (
        [] if refund.credit_note_id
        else [ExpectedDocument(refund.refund_id, "credit_note", currency, amount)]
    )  # fmt: skip
    payout = ExpectedPayment(
        refund.refund_id + PAYOUT_REFERENCE_SUFFIX, "refund", refund.customer_id, currency,
        amount, refund.credit_note_id or refund.refund_id,
    )  # fmt: skip
    return own_credit_note, [payout]


def waits_on_finance(
    document: BillingDocument, ledger_currencies: Iterable[str], mapped_products: Iterable[str]
) -> bool:
    """True when finance must decide before the document can be booked: the ledger does not
    book its currency, or a line sells a product finance's mapping does not name (a line
    naming none included: nothing is guessed). A support credit's credit note is booked on
    finance's entry for support credits, whatever its lines name."""
    if document.currency.upper() not in {c.upper() for c in ledger_currencies}:
        return True
    if document.kind == "credit_note" and CASE_ID in document.metadata:
        return False
    mapped = set(mapped_products)
    return any(line.product_id not in mapped for line in document.lines)


TaxKey = tuple[str, str]  # (ERP tax name, currency)


def expected_tax(
    document: BillingDocument, erp_tax_of_rate: Mapping[str, str]
) -> dict[str, dict[TaxKey, Decimal]]:
    """Per ERP document reference the document calls for: its tax per ERP tax and currency,
    as the ERP's effect (an ERP credit note's tax negative). Billing's tax of a rate on an
    invoice adds to what the customer owes, on a credit note takes from it; a reversal undoes
    its document."""
    rows = expected_for_document(document)
    if not rows:
        return {}
    sign = Decimal(1) if document.kind == "invoice" else Decimal(-1)
    effect: dict[TaxKey, Decimal] = defaultdict(Decimal)
    for line in document.tax_lines:
        name = erp_tax_of_rate.get(line.rate_id, UNMAPPED_TAX + line.rate_id)
        effect[(name, document.currency.upper())] += sign * line.amount.amount
    booked = {key: amount for key, amount in effect.items() if amount}
    taxes = {rows[0].reference: booked}
    if len(rows) == 2:
        taxes[rows[1].reference] = {key: -amount for key, amount in booked.items()}
    return taxes


def expected_receivables(
    invoices: Iterable[OwedInvoice], balances: Mapping[str, Money]
) -> dict[tuple[str, str], Decimal]:
    """What each customer owes per currency: the amount remaining on its open and
    uncollectible invoices plus its balance (negative: owed to the customer); zeros left out."""
    owed: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for invoice in invoices:
        if invoice.status in OWING_STATUSES:
            remaining = invoice.amount_remaining
            owed[(invoice.customer_id, remaining.currency.upper())] += remaining.amount
    for customer_id, balance in balances.items():
        owed[(customer_id, balance.currency.upper())] += balance.amount
    return {key: amount for key, amount in owed.items() if amount}


# Billing events some process must see: customer changes (account sync), changes of a
# document or subscription that may change what the ERP holds (a draft's creation never
# does), and refunds of a charge (the charge names the customer).
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
        "charge.refunded",
    }
)


def must_reach_a_process(event: BusinessEvent) -> bool:
    """A billing event about a customer's account, documents, subscriptions or refunds."""
    return event.type in EVENTS_FOR_A_PROCESS and bool(event.subject.customer_id)
