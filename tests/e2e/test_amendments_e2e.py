"""Amendment-to-ERP through every layer: billing sandbox -> signed webhooks -> API ->
SubscriptionLedgerWorkflow -> the real Tryton (behind the fault proxy) -> posting journal."""

from __future__ import annotations

import signal
from decimal import Decimal

import pytest

from adapters.billing.stripe import StripeBilling
from canonical import BillingDocument, Money
from tests.e2e.conftest import SOLD_PRODUCT, Stack, eventually, stop_process

pytestmark = pytest.mark.e2e


def usd(amount: str) -> Money:
    return Money.of(amount, "USD")


async def subscribe(stack: Stack, name: str, quantity: int = 1) -> tuple[str, str, str]:
    """A customer on the Basic plan; returns (customer id, subscription id, Pro price id)."""
    driver = stack.driver
    key = f"e2e/{name}"
    customer = await driver.create_customer(name, idempotency_key=f"{key}/c")
    basic = await driver.create_price(SOLD_PRODUCT, 3000, "usd", idempotency_key=f"{key}/basic")
    pro = await driver.create_price(SOLD_PRODUCT, 9000, "usd", idempotency_key=f"{key}/pro")
    subscription = await driver.subscribe(
        customer.id, basic.id, quantity=quantity, idempotency_key=f"{key}/s"
    )
    return customer.id, subscription.id, pro.id


async def invoices_of(stack: Stack, subscription_id: str) -> list[BillingDocument]:
    billing: StripeBilling = stack.adapters.billing  # type: ignore[assignment]
    newest_first = [i async for i in billing.list_invoices(subscription_id=subscription_id)]
    return newest_first[::-1]  # `created` ties within a second; the list order does not


async def posted(stack: Stack, reference: str):  # type: ignore[no-untyped-def]
    async def probe():  # type: ignore[no-untyped-def]
        if stack.adapters.store.find_posting("billing", reference) is None:
            return None
        return await stack.adapters.ledger.find_document(reference)

    return await eventually(probe, f"{reference} posted and journaled", 120)


async def erp_documents_with_reference(stack: Stack, reference: str) -> int:
    found = await stack.adapters.ledger.call(  # type: ignore[attr-defined]
        "model.account.invoice.search", [["reference", "=", reference]], 0, None, None
    )
    return len(found)


async def test_mid_cycle_upgrade_posts_a_prorated_invoice_equal_to_billing(
    stack: Stack, in_process_worker: None
) -> None:
    _customer, subscription_id, pro = await subscribe(stack, "Upgrade Co")
    [first] = await invoices_of(stack, subscription_id)
    first_erp = await posted(stack, first.document_id)
    assert first_erp.total == first.total == usd("30.00")

    await stack.driver.change_plan(
        subscription_id, price_id=pro, proration_behavior="always_invoice",
        idempotency_key="e2e/upgrade",
    )  # fmt: skip
    proration = (await invoices_of(stack, subscription_id))[-1]
    assert proration.billing_reason == "subscription_update"
    assert any(line.proration and line.amount.amount < 0 for line in proration.lines)
    erp = await posted(stack, proration.document_id)

    assert erp.kind == "invoice"
    assert erp.total == proration.total
    assert erp.erp_number and erp.erp_number != first_erp.erp_number
    journal = stack.adapters.store.find_posting("billing", proration.document_id)
    assert journal is not None and journal.amount == proration.total.amount
    assert await erp_documents_with_reference(stack, proration.document_id) == 1


async def test_voided_invoice_is_reversed_in_the_erp(stack: Stack, in_process_worker: None) -> None:
    customer_id, subscription_id, pro = await subscribe(stack, "Void Co")
    await stack.driver.change_plan(
        subscription_id, price_id=pro, proration_behavior="always_invoice",
        idempotency_key="e2e/void-upgrade",
    )  # fmt: skip
    proration = (await invoices_of(stack, subscription_id))[-1]
    await stack.driver.void(proration.document_id, idempotency_key="e2e/void")
    reversal = await posted(stack, f"{proration.document_id}/void")
    original = await posted(stack, proration.document_id)
    assert reversal.kind == "credit_note"
    assert reversal.total == original.total
    assert customer_id


async def test_lost_erp_answer_leaves_exactly_one_erp_document(
    stack: Stack, in_process_worker: None
) -> None:
    # The ERP commits the create but the answer never reaches us: the retry must find it.
    stack.erp_faults.add_rule("drop", body_contains="model.account.invoice.create", count=1)
    _customer, subscription_id, _pro = await subscribe(stack, "Lost Answer Co")
    [first] = await invoices_of(stack, subscription_id)
    erp = await posted(stack, first.document_id)
    assert erp.total == usd("30.00")
    assert stack.erp_faults.stats()["faults"].get("drop") == 1
    assert await erp_documents_with_reference(stack, first.document_id) == 1


async def test_erp_outage_is_waited_out_and_posts_once(
    stack: Stack, in_process_worker: None
) -> None:
    stack.erp_faults.add_rule("unavailable", path="/*/rpc/*", count=3)
    _customer, subscription_id, _pro = await subscribe(stack, "Outage Co")
    [first] = await invoices_of(stack, subscription_id)
    await posted(stack, first.document_id)
    assert stack.erp_faults.stats()["faults"].get("unavailable") == 3
    assert await erp_documents_with_reference(stack, first.document_id) == 1


async def test_worker_killed_during_erp_posting_does_not_duplicate(stack: Stack) -> None:
    # The ERP answers slowly: the worker dies with the posting in flight (committed or not).
    stack.erp_faults.add_rule("latency", delay=3.0, body_contains="model.account.invoice.post")
    worker = stack.start_worker_process()
    try:
        _customer, subscription_id, _pro = await subscribe(stack, "Killed Poster Co")
        [first] = await invoices_of(stack, subscription_id)

        async def posting_in_flight() -> bool:
            return (stack.erp_faults.stats()["faults"].get("latency") or 0) >= 1

        await eventually(posting_in_flight, "ERP post in flight", 60)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        stack.erp_faults.clear()
        worker = stack.start_worker_process()
        erp = await posted(stack, first.document_id)
    finally:
        stop_process(worker)
    assert erp.total == usd("30.00")
    assert await erp_documents_with_reference(stack, first.document_id) == 1


async def test_unsupported_currency_is_held_for_finance_never_posted(
    stack: Stack, in_process_worker: None
) -> None:
    driver = stack.driver
    customer = await driver.create_customer("Euro Co", idempotency_key="eur/c")
    product = await driver.create_product("Analytics EU", idempotency_key="eur/p")
    price = await driver.create_price(product.id, 2500, "eur", idempotency_key="eur/price")
    subscription = await driver.subscribe(customer.id, price.id, idempotency_key="eur/s")
    ledger = stack.client.get_workflow_handle(f"subscription/{subscription.id}")

    async def blocked_by() -> str | None:
        try:
            return (await ledger.query("status")).get("blocked_by")  # type: ignore[no-any-return]
        except Exception:
            return None

    exception_id = await eventually(blocked_by, "finance exception opened", 90)
    assert exception_id == f"exception/subscription/{subscription.id}/1"
    [invoice] = await invoices_of(stack, subscription.id)
    assert stack.adapters.store.find_posting("billing", invoice.document_id) is None
    assert await erp_documents_with_reference(stack, invoice.document_id) == 0
    assert Decimal(invoice.total.amount) == Decimal("25.00")


async def test_shuffled_duplicated_webhooks_for_20_subscriptions_post_each_document_once_in_order(
    stack: Stack, in_process_worker: None
) -> None:
    stack.billing.set_delivery_mode(shuffle=True, duplicate_rate=0.3, seed=11)
    subscriptions = []
    for n in range(20):
        _customer, subscription_id, pro = await subscribe(stack, f"Scale Co {n}")
        await stack.driver.change_plan(
            subscription_id, price_id=pro, proration_behavior="always_invoice",
            idempotency_key=f"e2e/scale/{n}/upgrade",
        )  # fmt: skip
        subscriptions.append(subscription_id)
    assert len(stack.billing.events()) >= 200

    for subscription_id in subscriptions:
        first, upgrade = await invoices_of(stack, subscription_id)
        first_erp = await posted(stack, first.document_id)
        upgrade_erp = await posted(stack, upgrade.document_id)
        assert (first_erp.total, upgrade_erp.total) == (first.total, upgrade.total)
        # Billing order per subscription is ERP order: the ERP numbers documents as it posts.
        assert int(first_erp.erp_document_id) < int(upgrade_erp.erp_document_id)
        for invoice in (first, upgrade):
            assert await erp_documents_with_reference(stack, invoice.document_id) == 1
    deliveries = stack.billing.deliveries()
    assert len(deliveries) > len(stack.billing.events())  # duplicates were really sent
