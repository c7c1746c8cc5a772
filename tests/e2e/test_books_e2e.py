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
