"""Contract: the real Tryton books a refund later named by billing's credit note, and money a
credit note gives back out of band, so that the customer's receivable ends as billing's. The
postings are the ledger's own (canonical/ledger.py), mapped by the local finance mapping."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest_asyncio

from adapters.erp import TrytonLedger
from canonical import (
    BillingDocument,
    Customer,
    DocumentLine,
    LedgerPosting,
    LinkedRefund,
    Money,
    Payment,
    Refund,
)
from canonical.ledger import (
    linked_refund_payout,
    out_of_band_payout,
    payment_postings,
    refund_credit_note,
    refund_credit_reversal,
    refund_payout,
    required_postings,
)
from canonical.mapping import map_document, map_payment
from starters.local.catalog import PRODUCTS, local_mapping
from tests.fixtures.tryton import TrytonServer

ON = dt.datetime.combine(dt.date(dt.date.today().year, 3, 9), dt.time(10), dt.UTC)
MAPPING = local_mapping({})
PRODUCT = PRODUCTS[0].product_id


@pytest_asyncio.fixture
async def ledger(tryton_module_server: TrytonServer) -> AsyncIterator[TrytonLedger]:
    async with tryton_module_server.ledger() as ledger:
        await ledger.login()
        yield ledger


@pytest_asyncio.fixture
async def customer_id(ledger: TrytonLedger) -> str:
    customer = Customer(customer_id=f"cus_{uuid.uuid4().hex[:14]}", name="Credit Money Co")
    await ledger.ensure_party(customer)
    return customer.customer_id


def usd(amount: str) -> Money:
    return Money.of(amount, "USD")


def billing_document(customer_id: str, kind: str, amount: str, **changes: Any) -> BillingDocument:
    doc_id = f"{'in' if kind == 'invoice' else 'cn'}_{uuid.uuid4().hex[:14]}"
    money = usd(amount)
    line = DocumentLine(line_id=f"{doc_id}-l", description="Platform", quantity=Decimal(1),
                        unit_amount=money, amount=money, product_id=PRODUCT)  # fmt: skip
    fields: dict[str, Any] = {
        "document_id": doc_id, "kind": kind, "status": "paid" if kind == "invoice" else "issued",
        "customer_id": customer_id, "currency": "USD", "lines": [line],
        "subtotal": usd(amount), "tax": usd("0"), "total": usd(amount), "created_at": ON,
        "finalized_at": ON,
    }  # fmt: skip
    fields.update(changes)
    return BillingDocument(**fields)


async def paid_invoice(ledger: TrytonLedger, customer_id: str, amount: str) -> Payment:
    invoice = billing_document(customer_id, "invoice", amount)
    paid = Payment(payment_id=f"inpay_{uuid.uuid4().hex[:12]}", invoice_id=invoice.document_id,
                   customer_id=customer_id, status="paid", amount=usd(amount), method="card",
                   charge_id=f"ch_{uuid.uuid4().hex[:12]}", paid_at=ON)  # fmt: skip
    for posting in required_postings(invoice):
        await ledger.post_document(map_document(posting, MAPPING))
    for money in payment_postings(invoice, [paid]):
        await ledger.post_payment(map_payment(money, MAPPING))
    return paid


async def owed(ledger: TrytonLedger, customer_id: str) -> list[Money]:
    page = await ledger.open_receivable_page(None, 10_000)
    return [r.amount for r in page.receivables if r.customer_id == customer_id]


async def state_of(ledger: TrytonLedger, reference: str) -> str:
    found = await ledger.find_document(reference)
    assert found is not None, reference
    return found.state


def refund_of(paid: Payment, amount: str, **changes: Any) -> Refund:
    return Refund(refund_id=f"re_{uuid.uuid4().hex[:14]}", charge_id=str(paid.charge_id),
                  payment_id=paid.payment_id, invoice_id=paid.invoice_id,
                  customer_id=paid.customer_id, status="succeeded", amount=usd(amount),
                  created_at=ON, **changes)  # fmt: skip


async def refund_named_later(
    ledger: TrytonLedger, customer_id: str
) -> tuple[LedgerPosting, LedgerPosting, LedgerPosting]:
    """A refund of 30 of a paid invoice booked as its own credit note and paid out; later
    billing's credit note names it: (the refund's credit note, its reversal, billing's)."""
    paid = await paid_invoice(ledger, customer_id, "100.00")
    refund = refund_of(paid, "30.00")
    own = refund_credit_note(refund)
    await ledger.post_document(map_document(own, MAPPING))
    await ledger.post_payment(map_payment(refund_payout(refund, "card", own.reference), MAPPING))
    link = LinkedRefund(refund_id=refund.refund_id, amount=usd("30.00"))
    note = billing_document(customer_id, "credit_note", "30.00", invoice_id=paid.invoice_id,
                            refunds=[link])  # fmt: skip
    reversal = refund_credit_reversal(link, note, own.total)
    [main] = required_postings(note)
    return own, reversal, main


async def test_a_refunds_credit_note_reversed_for_billings_credit_note_leaves_nothing_open(
    ledger: TrytonLedger, customer_id: str
) -> None:
    own, reversal, main = await refund_named_later(ledger, customer_id)

    await ledger.post_document(map_document(reversal, MAPPING))
    posted = await ledger.post_document(
        map_document(main.model_copy(update={"applies_to": reversal.reference}), MAPPING)
    )

    assert posted.kind == "credit_note"
    for reference in (own.reference, reversal.reference, main.reference):
        assert await state_of(ledger, reference) == "paid", reference
    assert await owed(ledger, customer_id) == []  # billing: nothing remaining, no balance


async def test_billings_credit_note_posted_before_the_reversal_is_applied_to_it_when_posted_again(
    ledger: TrytonLedger, customer_id: str
) -> None:
    """The ledger's order since linked-refunds-books-equal: billing's credit note first (the
    reversal it names is not in the ERP yet: its credit stays open), the reversal, then the
    credit note posted again, which the adapter adopts and applies to the reversal."""
    own, reversal, main = await refund_named_later(ledger, customer_id)
    main = main.model_copy(update={"applies_to": reversal.reference})

    first = await ledger.post_document(map_document(main, MAPPING))
    assert await owed(ledger, customer_id) == [usd("-30.00")]  # a credit note alone: open
    await ledger.post_document(map_document(reversal, MAPPING))
    again = await ledger.post_document(map_document(main, MAPPING))
    twice = await ledger.post_document(map_document(main, MAPPING))

    assert (first.created_now, again.created_now, twice.created_now) == (True, False, False)
    assert again.erp_document_id == first.erp_document_id
    for reference in (own.reference, reversal.reference, main.reference):
        assert await state_of(ledger, reference) == "paid", reference
    assert await owed(ledger, customer_id) == []


async def test_a_refund_a_credit_note_names_in_part_is_paid_out_on_both_credit_notes(
    ledger: TrytonLedger, customer_id: str
) -> None:
    paid = await paid_invoice(ledger, customer_id, "100.00")
    note = billing_document(customer_id, "credit_note", "20.00", invoice_id=paid.invoice_id)
    refund = refund_of(paid, "30.00", credit_note_id=note.document_id)
    note = note.model_copy(update={"refunds": [
        LinkedRefund(refund_id=refund.refund_id, amount=usd("20.00"))]})  # fmt: skip
    [main] = required_postings(note)
    await ledger.post_document(map_document(main, MAPPING))

    part = linked_refund_payout(refund, "card", note.document_id, usd("20.00"))
    await ledger.post_payment(map_payment(part, MAPPING))
    rest = refund.model_copy(update={"amount": usd("10.00"), "credit_note_id": None})
    own = refund_credit_note(rest)
    await ledger.post_document(map_document(own, MAPPING))
    await ledger.post_payment(map_payment(refund_payout(rest, "card", own.reference), MAPPING))

    for reference in (note.document_id, own.reference):
        assert await state_of(ledger, reference) == "paid", reference
    assert await owed(ledger, customer_id) == []  # billing's: 100 paid, 30 given back


async def test_money_given_back_out_of_band_is_paid_out_on_the_credit_note(
    ledger: TrytonLedger, customer_id: str
) -> None:
    paid = await paid_invoice(ledger, customer_id, "80.00")
    note = billing_document(customer_id, "credit_note", "20.00", invoice_id=paid.invoice_id,
                            out_of_band_amount=usd("20.00"))  # fmt: skip
    [main] = required_postings(note)
    await ledger.post_document(map_document(main, MAPPING))
    assert await owed(ledger, customer_id) == [usd("-20.00")]  # the credit, still open
    payout = out_of_band_payout(note)
    assert payout is not None

    out = await ledger.post_payment(map_payment(payout, MAPPING))
    again = await ledger.post_payment(map_payment(payout, MAPPING))

    assert (out.applied_document_state, again.created_now) == ("paid", False)
    assert await state_of(ledger, note.document_id) == "paid"
    assert await owed(ledger, customer_id) == []
