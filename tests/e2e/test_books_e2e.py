"""End to end through billing's signed webhooks: a taxed invoice in a foreign currency paid by
card and partly refunded is booked in the real Tryton once: the invoice with its VAT as the
ERP's tax, the payment applied so the invoice is paid, the refund as a credit note and a
payment out; redelivered events change nothing, and both systems say the customer owes
nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from canonical import Money
from starters.local.catalog import LOCAL_CURRENCIES, load_local_catalog
from tests.e2e.conftest import SOLD_PRODUCT, Stack, eventually

pytestmark = pytest.mark.e2e
BOOKS = {"ledger_currencies": list(LOCAL_CURRENCIES)}


async def journaled(stack: Stack, reference: str) -> None:
    async def found() -> bool:
        return stack.adapters.store.find_posting("billing", reference) is not None

    await eventually(found, f"{reference} journaled", 90)


async def erp_copies(stack: Stack, reference: str) -> int:
    today = datetime.now(UTC).date()
    copies, cursor = 0, None
    while True:
        page = await stack.adapters.ledger.document_page(today, today, cursor, 200)
        copies += sum(d.reference == reference for d in page.documents)
        if page.next_cursor is None:
            return copies
        cursor = page.next_cursor


async def owed_in_erp(stack: Stack, customer_id: str) -> list[Money]:
    owed, cursor = [], None
    while True:
        page = await stack.adapters.ledger.open_receivable_page(cursor, 200)
        owed += [r.amount for r in page.receivables if r.customer_id == customer_id]
        if page.next_cursor is None:
            return owed
        cursor = page.next_cursor


@pytest.mark.parametrize("stack", [BOOKS], indirect=True)
async def test_eur_invoice_with_vat_paid_by_card_and_partly_refunded_is_booked_once(
    stack: Stack, in_process_worker: None
) -> None:
    driver = stack.driver
    catalog = load_local_catalog(stack.settings.home)
    customer = await driver.create_customer("Lumière E2E", idempotency_key="books/c")
    method = await driver.attach_payment_method(customer.id, idempotency_key="books/pm")
    price = await driver.create_price(SOLD_PRODUCT, 10000, "eur", idempotency_key="books/price")
    subscription = await driver.subscribe(
        customer.id,
        price.id,
        payment_method=str(method.id),
        default_tax_rates=[catalog.tax_rates["eu_vat_20"]],
        idempotency_key="books/s",
    )
    invoice_id = str(subscription.latest_invoice)
    [payment] = await stack.adapters.billing.invoice_payments(invoice_id)
    assert payment.amount == Money.of("120.00", "EUR")

    await journaled(stack, payment.payment_id)
    posted = await stack.adapters.ledger.find_document(invoice_id)
    assert posted is not None
    assert (posted.total, posted.state) == (Money.of("120.00", "EUR"), "paid")
    today = datetime.now(UTC).date()
    page = await stack.adapters.ledger.document_page(today, today, None, 200)
    [erp_invoice] = [d for d in page.documents if d.reference == invoice_id]
    assert erp_invoice.taxes == {"VAT 20%": Money.of("20.00", "EUR")}

    refund = await driver.refund(
        payment_intent_id=payment.payment_intent_id, amount=3000, idempotency_key="books/r"
    )
    await journaled(stack, f"{refund.id}/payout")
    note = await stack.adapters.ledger.find_document(str(refund.id))
    payout = await stack.adapters.ledger.find_payment(f"{refund.id}/payout")
    assert note is not None and payout is not None
    assert (note.kind, note.total) == ("credit_note", Money.of("30.00", "EUR"))
    assert (payout.kind, payout.amount, payout.applies_to) == (
        "refund", Money.of("30.00", "EUR"), refund.id,
    )  # fmt: skip

    # Billing sends it all again: the ledgers drop what they have seen, the journal and the
    # ERP's own lookups keep every posting single.
    for kind in ("invoice.paid", "charge.refunded"):
        for event in stack.billing.events(type=kind):
            obj: dict[str, Any] = event["data"]["object"]
            if obj.get("customer") == customer.id:
                stack.billing.redeliver(event["id"])
    stack.billing.wait_for_deliveries()
    await asyncio.sleep(3)  # past the ledger's reorder window: anything they caused is done
    for reference in (invoice_id, str(refund.id)):
        assert await erp_copies(stack, reference) == 1
    assert await stack.adapters.ledger.find_payment(payment.payment_id) is not None
    # Paid, and the refund netted by its credit note: nobody owes anybody anything.
    assert [m.amount for m in await owed_in_erp(stack, customer.id)] in ([], [0])
    billing_owed, cursor = [], None
    while True:
        billing_page = await stack.adapters.billing.open_receivable_page(cursor, 100)
        billing_owed += [r for r in billing_page.receivables if r.customer_id == customer.id]
        if billing_page.next_cursor is None:
            break
        cursor = billing_page.next_cursor
    assert [r.amount.amount for r in billing_owed] in ([], [0])


async def billing_owes(stack: Stack, customer_id: str) -> list[Money]:
    owed, cursor = [], None
    while True:
        page = await stack.adapters.billing.open_receivable_page(cursor, 100)
        owed += [r.amount for r in page.receivables if r.customer_id == customer_id]
        if page.next_cursor is None:
            return owed
        cursor = page.next_cursor


@pytest.mark.parametrize("stack", [BOOKS], indirect=True)
async def test_a_refund_named_later_by_a_taxed_credit_note_and_money_given_back_out_of_band(
    stack: Stack, in_process_worker: None
) -> None:
    """A refund made first gets its own credit note; billing's credit note naming it later
    (VAT and all) reverses that one and is applied to the reversal; a second credit note
    gives money back out of band, paid out on it. Both systems end owing the same."""
    driver = stack.driver
    catalog = load_local_catalog(stack.settings.home)
    customer = await driver.create_customer("Rückgabe E2E", idempotency_key="linked/c")
    method = await driver.attach_payment_method(customer.id, idempotency_key="linked/pm")
    price = await driver.create_price(SOLD_PRODUCT, 10000, "eur", idempotency_key="linked/price")
    subscription = await driver.subscribe(
        customer.id, price.id, payment_method=str(method.id),
        default_tax_rates=[catalog.tax_rates["eu_vat_20"]], idempotency_key="linked/s",
    )  # fmt: skip
    invoice_id = str(subscription.latest_invoice)
    [payment] = await stack.adapters.billing.invoice_payments(invoice_id)
    await journaled(stack, payment.payment_id)
    refund = await driver.refund(
        payment_intent_id=payment.payment_intent_id, amount=3000, idempotency_key="linked/r"
    )
    await journaled(stack, f"{refund.id}/payout")
    [line] = (await driver.client.v1.invoices.retrieve_async(invoice_id)).lines.data

    # For the tax paperwork: 25.00 + 5.00 VAT credited, given back by the earlier refund.
    named = await driver.client.v1.credit_notes.create_async({
        "invoice": invoice_id,
        "lines": [{"type": "invoice_line_item", "invoice_line_item": str(line.id),
                   "amount": 2500}],
        "refunds": [{"refund": str(refund.id), "amount_refunded": 3000}],
    })  # fmt: skip
    wired = await driver.client.v1.credit_notes.create_async({
        "invoice": invoice_id,
        "lines": [{"type": "invoice_line_item", "invoice_line_item": str(line.id),
                   "amount": 1000}],
        "out_of_band_amount": 1200,
    })  # fmt: skip
    reversal = f"{refund.id}/credited-by/{named.id}"
    await journaled(stack, str(named.id))
    await journaled(stack, f"{wired.id}/out_of_band")

    ledger = stack.adapters.ledger
    for reference in (str(refund.id), reversal, str(named.id), str(wired.id)):
        found = await ledger.find_document(reference)
        assert found is not None and found.state == "paid", (reference, found)
    back = await ledger.find_document(reversal)
    assert back is not None and (back.kind, back.total) == ("invoice", Money.of("30.00", "EUR"))
    today = datetime.now(UTC).date()
    page = await ledger.document_page(today, today, None, 200)
    [erp_note] = [d for d in page.documents if d.reference == named.id]
    assert (erp_note.kind, erp_note.taxes) == ("credit_note", {"VAT 20%": Money.of("5.00", "EUR")})
    out = await ledger.find_payment(f"{wired.id}/out_of_band")
    assert out is not None and (out.amount, out.applies_to) == (Money.of("12.00", "EUR"), wired.id)

    # Redelivered, the credit notes' and the charge's events change nothing.
    for kind in ("credit_note.created", "charge.refunded"):
        for event in stack.billing.events(type=kind):
            if event["data"]["object"].get("customer") == customer.id:
                stack.billing.redeliver(event["id"])
    stack.billing.wait_for_deliveries()
    await asyncio.sleep(3)
    for reference in (str(refund.id), reversal, str(named.id), str(wired.id)):
        assert await erp_copies(stack, reference) == 1
    assert [m.amount for m in await owed_in_erp(stack, customer.id)] in ([], [0])
    assert [m.amount for m in await billing_owes(stack, customer.id)] in ([], [0])
