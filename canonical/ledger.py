"""The subscription ledger's messages and the ERP documents a billing document needs, and
the ERP payments its payments and refunds need.

Pure: the ledger workflow, webhook routing and reconciliation's healing all read these.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field

from canonical.billing import (
    BillingDocument,
    LedgerLine,
    LedgerPosting,
    LedgerTax,
    LinkedRefund,
    TaxLine,
)
from canonical.mapping import REFUND_LINE, SUPPORT_CREDIT_LINE
from canonical.money import Money
from canonical.payments import Payment, PaymentPosting, Refund

LEDGER_PROCESS = "amendment_to_erp"
LEDGER_WORKFLOW = "SubscriptionLedger"  # the workflow type: signal-with-start by name
BILLING_EVENT_SIGNAL = "billing_event"
# Asks a running ledger to continue as new once it is idle: the new run takes the code
# deployed now, every patch included. A run begun before a deployment keeps the old
# behaviour of each patch it had already answered before (`workflow.patched` answers once
# per run and patch); only a new run answers them all anew.
REFRESH_SIGNAL = "refresh"
VOID_SUFFIX = "/void"
# A refund made without a billing credit note is two ERP rows: its credit note (reference =
# the refund id) and the payment out applied to it (this suffix), each journaled once.
PAYOUT_SUFFIX = "/payout"
# A refund's own credit note stands until billing names the refund in a credit note of its
# own (linked later, e.g. for the tax paperwork): billing's credit note is then the credit,
# and ours is cancelled by its reversal, `{refund id}/credited-by/{credit note id}`, an ERP
# invoice on the same `refunds` line that billing's credit note is applied to.
CREDITED_BY_INFIX = "/credited-by/"
# A refund billing's credit note names for only part of it (`refunds[][amount_refunded]`):
# the linked part is paid out on billing's credit note, `{refund id}/paid-out-on/{credit note
# id}`, and the rest through the refund's own credit note (for the rest) and its `/payout`.
PAID_OUT_ON_INFIX = "/paid-out-on/"
# What a credit note gives back outside billing (`out_of_band_amount`) is paid out on it:
# `{credit note id}/out_of_band`, on finance's `out_of_band/{CURRENCY}` payment journal.
OUT_OF_BAND_SUFFIX = "/out_of_band"
OUT_OF_BAND_METHOD = "out_of_band"
# Reconciliation's healing replays a document with an event id of this prefix: the ledger then
# looks again even at a document it had settled (a payment may be missing behind it).
HEAL_EVENT_PREFIX = "recon:"
# The customer's ledger reads a charge again, with an event id of this prefix, while billing
# holds one of its refunds pending: Stripe's later `charge.refund.updated` names no customer.
REFUND_CHECK_EVENT_PREFIX = "refund-check:"
# Journal entries made by a finance decision instead of an ERP posting carry an ERP document
# id of one of these prefixes: `resolve_manually` (finance posted it by hand, under the ERP
# number given) and `reject` (finance decided it is never to be posted; the id names the
# exception). The journal then tells every later look, healing included, that it is done.
MANUAL_POSTING_PREFIX = "manual:"
REJECTED_POSTING_PREFIX = "rejected:"
# Billing metadata naming the support case a credit note was made for: such a credit note is
# a support credit, booked on finance's `support_credits` entry whichever way it reaches the ERP.
SUPPORT_CASE_METADATA = "case_id"
CONTINUE_AS_NEW_AFTER = 500
# The rate id of tax that billing reported without a rate: no mapping can name it.
UNATTRIBUTED_TAX = "unattributed"


def ledger_workflow_id(subscription_id: str | None, customer_id: str) -> str:
    if subscription_id:
        return f"subscription/{subscription_id}"
    return f"customer-ledger/{customer_id}"


def document_ledger_id(document: BillingDocument) -> str:
    """The ledger a document's own events feed: an invoice its subscription's (or its
    customer's when it has none); a credit note always its customer's, since billing's
    credit note events name no subscription."""
    subscription = document.subscription_id if document.kind == "invoice" else None
    return ledger_workflow_id(subscription, document.customer_id)


class BillingEventRef(BaseModel):
    """A billing event, reduced to what ordering and refetching need (no documents)."""

    event_id: str
    event_type: str
    created: int = Field(description="billing's own event time, unix seconds")
    # A charge's events (refunds) go to the customer's ledger: a charge names no subscription.
    object_kind: Literal["invoice", "credit_note", "subscription", "charge"]
    object_id: str
    customer_id: str
    correlation_id: str
    # The document's billing number (per customer, sequential): orders same-second events.
    document_number: str | None = None

    def billing_order(self) -> tuple[int, str, str]:
        return (self.created, self.document_number or "", self.event_id)


class PendingRefundWatch(BaseModel):
    """A charge with refunds billing still holds `pending` (or `requires_action`), which the
    customer's ledger reads again at `next_look`, backing off."""

    charge_id: str
    customer_id: str
    correlation_id: str
    refund_ids: list[str]
    since: datetime = Field(description="when the ledger first found a refund of it pending")
    next_look: datetime
    delay_seconds: int = Field(description="the wait before the look after next_look")
    looks: int = 0
    # Each refund's own start: a refund that starts pending while the charge is watched has
    # waited only since then. Watches from before hold none: their refunds count from `since`.
    refund_since: dict[str, datetime] = Field(
        default_factory=dict, description="when the ledger first found each refund pending"
    )

    def pending_since(self, refund_id: str, now: datetime) -> datetime:
        """When `refund_id` started pending as far as this watch knows; `now` if it is new."""
        if refund_id in self.refund_since:
            return self.refund_since[refund_id]
        return self.since if refund_id in self.refund_ids else now


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
    # Charges whose refunds billing holds pending, read again on a timer (none before).
    pending_refunds: list[PendingRefundWatch] = []
    # A canceled subscription's ledger closes once idle, also after continuing as new.
    subscription_canceled: bool = False


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
    # The same account as the case-to-credit workflow's own posting of it, whichever is first.
    support_credit = document.kind == "credit_note" and SUPPORT_CASE_METADATA in document.metadata
    lines = [
        LedgerLine(
            description=_line_description(line.description, line.period_start, line.period_end),
            quantity=Decimal(1),
            # Revenue is the line without its tax; the tax goes on the tax accounts.
            unit_price=sign * line.net_amount().amount,
            product_id=SUPPORT_CREDIT_LINE if support_credit else line.product_id,
            price_id=None if support_credit else line.price_id,
        )
        for line in document.lines
    ]
    taxes = [
        LedgerTax(
            rate_id=tax.rate_id,
            description=_tax_description(tax),
            base=sign * tax.taxable_amount.amount,
            amount=sign * tax.amount.amount,
        )
        for tax in document.tax_lines
    ]
    untold = document.tax.amount - sum((t.amount.amount for t in document.tax_lines), Decimal(0))
    if untold:
        # Tax billing did not attribute to a rate: never guessed; the mapping refuses it.
        taxes.append(LedgerTax(rate_id=UNATTRIBUTED_TAX, description="Tax without a rate",
                               base=Decimal(0), amount=sign * untold))  # fmt: skip
    label = "Credit note" if document.kind == "credit_note" else "Invoice"
    billing_date = (document.finalized_at or document.created_at).date()
    posting = LedgerPosting(
        reference=document.document_id,
        kind="credit_note" if credit else "invoice",
        customer_id=document.customer_id,
        currency=document.currency,
        lines=lines,
        taxes=taxes,
        total=Money(amount=abs(document.total.amount), currency=document.currency),
        billing_date=billing_date,
        description=(
            f"{label} {document.number or document.document_id} of {billing_date.isoformat()}"
            + (f", subscription {document.subscription_id}" if document.subscription_id else "")
        ),
        applies_to=document.invoice_id if credit and document.kind == "credit_note" else None,
    )
    return _net_credit_lines(posting)


def _tax_description(tax: TaxLine) -> str:
    name = tax.display_name or "Tax"
    where = f" {tax.jurisdiction}" if tax.jurisdiction else ""
    kind = "incl." if tax.inclusive else "excl."
    return f"{name}{where} {tax.percentage.normalize():f}% ({kind})"


def _reversal(posting: LedgerPosting) -> LedgerPosting:
    kind = "invoice" if posting.kind == "credit_note" else "credit_note"
    reversal = posting.model_copy(
        update={
            "reference": posting.reference + VOID_SUFFIX,
            "kind": kind,
            "description": f"Reversal (voided in billing) of {posting.description}",
            # A voided invoice's reversal settles it: neither stays open in the ERP.
            "applies_to": posting.reference if kind == "credit_note" else None,
        }
    )
    return _net_credit_lines(reversal)


def _net_credit_lines(posting: LedgerPosting) -> LedgerPosting:
    """An ERP credit note takes lines of one sign (Tryton numbers it as a credit note only
    then): a credit with a proration charge inside is booked net, one line per product
    and price, else per product (a plan change nets its two prices of one product). If
    products still differ in sign the net line names no product, and the mapping refuses
    it rather than guess which revenue account it belongs to."""
    if posting.kind != "credit_note" or _one_sign(posting.lines):
        return posting
    for by_price in (True, False):
        groups: dict[tuple[str | None, str | None], list[LedgerLine]] = {}
        for line in posting.lines:
            key = (line.product_id, line.price_id if by_price else None)
            groups.setdefault(key, []).append(line)
        netted = [_net_line(group, key) for key, group in groups.items()]
        if _one_sign(netted):
            break
    else:
        netted = [_net_line(posting.lines, (None, None))]
    return posting.model_copy(update={"lines": [ln for ln in netted if ln.unit_price]})


def _one_sign(lines: list[LedgerLine]) -> bool:
    return all(ln.unit_price * ln.quantity >= 0 for ln in lines)


def _net_line(lines: list[LedgerLine], key: tuple[str | None, str | None]) -> LedgerLine:
    if len(lines) == 1:
        return lines[0]
    parts = "; ".join(f"{ln.description}: {ln.unit_price * ln.quantity}" for ln in lines)
    amount = sum((ln.unit_price * ln.quantity for ln in lines), Decimal(0))
    return LedgerLine(description=f"Net of {parts}"[:500], quantity=Decimal(1),
                      unit_price=amount, product_id=key[0], price_id=key[1])  # fmt: skip


def _line_description(text: str, start: date | None, end: date | None) -> str:
    if start and end:
        return f"{text} ({start.isoformat()} to {end.isoformat()})"
    return text


def payment_postings(invoice: BillingDocument, payments: list[Payment]) -> list[PaymentPosting]:
    """The ERP payments an invoice's paid payments need, oldest first, each applied to the
    invoice's own ERP document. Payments of nothing move no money and need nothing."""
    postings = []
    for payment in payments:
        if payment.status != "paid" or payment.amount.amount <= 0:
            continue
        assert payment.paid_at is not None, "check_payments refuses a paid payment without date"
        paid_on = payment.paid_at.date()
        postings.append(
            PaymentPosting(
                reference=payment.payment_id,
                kind="payment",
                customer_id=payment.customer_id,
                applies_to=invoice.document_id,
                amount=payment.amount,
                payment_date=paid_on,
                method=payment.method,
                description=(
                    f"Payment {payment.payment_id} ({payment.method}) of invoice "
                    f"{invoice.number or invoice.document_id} on {paid_on.isoformat()}"
                ),
            )
        )
    return postings


def refund_references(refund: Refund) -> list[tuple[str, str]]:
    """What a refund journals, in order, as (reference, document type): its own credit note
    when no billing credit note made it, then the payment out."""
    payout = (refund.refund_id + PAYOUT_SUFFIX, "refund")
    return [payout] if refund.credit_note_id else [(refund.refund_id, "credit_note"), payout]


def refund_credit_note(refund: Refund) -> LedgerPosting:
    """The ERP credit note of a refund that no billing credit note made: one line on
    finance's `refunds` entry, no tax (what billing gives back is money, not a sale)."""
    on = refund.created_at.date()
    about = f"payment {refund.payment_id}" + (
        f" of invoice {refund.invoice_id}" if refund.invoice_id else ""
    )
    return _on_refunds_line(
        refund.refund_id, "credit_note", refund.customer_id, refund.amount, on,
        line=f"Refund {refund.refund_id} of {about}",
        description=f"Refund {refund.refund_id} of {about} on {on.isoformat()}",
    )  # fmt: skip


def _on_refunds_line(
    reference: str,
    kind: Literal["invoice", "credit_note"],
    customer_id: str,
    amount: Money,
    on: date,
    *,
    line: str,
    description: str,
) -> LedgerPosting:
    """An ERP document of one line on finance's `refunds` entry, without tax."""
    return LedgerPosting(
        reference=reference,
        kind=kind,
        customer_id=customer_id,
        currency=amount.currency,
        lines=[LedgerLine(description=line, quantity=Decimal(1), unit_price=amount.amount,
                          product_id=REFUND_LINE)],
        total=amount,
        billing_date=on,
        description=description,
    )  # fmt: skip


def refund_payout(refund: Refund, method: str, applies_to: str) -> PaymentPosting:
    """The money going back, applied to the ERP credit note of the refund: billing's own
    credit note when one made the refund, else the refund's credit note."""
    on = refund.created_at.date()
    return PaymentPosting(
        reference=refund.refund_id + PAYOUT_SUFFIX,
        kind="refund",
        customer_id=refund.customer_id,
        applies_to=applies_to,
        amount=refund.amount,
        payment_date=on,
        method=method,
        description=(
            f"Refund {refund.refund_id} paid out ({method}) for payment {refund.payment_id} "
            f"on {on.isoformat()}"
        ),
    )


def linked_part(refund: Refund, credit_note: BillingDocument) -> Money:
    """What of the refund the credit note names (its `refunds[]` entries for it), never more
    than the refund; the whole refund when the credit note lists none (it made the refund
    under an API version that named a single refund)."""
    named = [link.amount.amount for link in credit_note.refunds
             if link.refund_id == refund.refund_id]  # fmt: skip
    if not named:
        return refund.amount
    return refund.amount.model_copy(update={"amount": min(sum(named), refund.amount.amount)})


def linked_payout_reference(refund_id: str, credit_note_id: str) -> str:
    return refund_id + PAID_OUT_ON_INFIX + credit_note_id


def linked_refund_payout(
    refund: Refund, method: str, credit_note_id: str, linked: Money
) -> PaymentPosting:
    """The part of a refund billing's credit note names, paid out on that credit note; the
    rest is the refund's own (`refund_credit_note` and `refund_payout` of the rest)."""
    payout = refund_payout(refund, method, credit_note_id)
    return payout.model_copy(
        update={
            "reference": linked_payout_reference(refund.refund_id, credit_note_id),
            "amount": linked,
            "description": f"{payout.description}: the part credit note {credit_note_id} names",
        }
    )


def refund_credit_reversal(
    link: LinkedRefund, credit_note: BillingDocument, refund_credit: Money
) -> LedgerPosting:
    """The ERP invoice that cancels (the linked part of) a refund's own credit note once
    billing's credit note names the refund: the same `refunds` line the other way, so the
    credit is billing's credit note alone (its revenue and tax) and is not given twice.
    `refund_credit` is what the refund's credit note in the ERP is worth: never more is
    reversed."""
    amount = Money(
        amount=min(link.amount.amount, refund_credit.amount), currency=link.amount.currency
    )
    on = (credit_note.finalized_at or credit_note.created_at).date()
    name = credit_note.number or credit_note.document_id
    return _on_refunds_line(
        link.refund_id + CREDITED_BY_INFIX + credit_note.document_id, "invoice",
        credit_note.customer_id, amount, on,
        line=f"Refund {link.refund_id} credited by credit note {name}",
        description=(
            f"Reversal of the credit note of refund {link.refund_id}: billing's credit note "
            f"{name} of {on.isoformat()} names the refund"
        ),
    )  # fmt: skip


def out_of_band_payout(credit_note: BillingDocument) -> PaymentPosting | None:
    """The money a credit note gives back outside billing, paid out on the credit note's
    ERP document (finance's `out_of_band` journal of its currency); None when it gives
    nothing back that way."""
    given = credit_note.out_of_band_amount
    if credit_note.kind != "credit_note" or given is None or given.amount <= 0:
        return None
    on = (credit_note.finalized_at or credit_note.created_at).date()
    name = credit_note.number or credit_note.document_id
    return PaymentPosting(
        reference=credit_note.document_id + OUT_OF_BAND_SUFFIX,
        kind="refund",
        customer_id=credit_note.customer_id,
        applies_to=credit_note.document_id,
        amount=given,
        payment_date=on,
        method=OUT_OF_BAND_METHOD,
        description=f"Credit note {name} given back out of band on {on.isoformat()}",
    )


class LedgerStatus(BaseModel):
    """What the ledger workflow's `status` query answers (here, not in the workflow's
    module, so the sandbox does not build the model again for every run it holds)."""

    workflow_id: str
    status: str
    pending_events: int
    processed_events: int
    blocked_by: str | None
    last_posted: list[str]
    # Refunds billing holds pending, read again at the time given.
    pending_refunds: list[str] = []
    # Refunds that ended failed or canceled in billing while waited for: nothing posted.
    refunds_not_posted: list[str] = []
