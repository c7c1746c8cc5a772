"""Contract: subscriptions, prorated amendments, invoices, credit notes and the customer
balance, through StripeBilling and the official stripe SDK against the billing sandbox."""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import pytest
import stripe

from adapters.billing import StripeBilling, invoice_from_stripe, subscription_from_stripe
from adapters.billing.webhook_signature import verify_stripe
from adapters.errors import RejectedError
from adapters.ports import BillingSystem
from canonical import BillingDocument, Money, Subscription
from sandbox.billing.driver import BillingDriver
from tests.fixtures.billing import BillingSandbox, WebhookReceiver, wait_until

TIMES = "\N{MULTIPLICATION SIGN}"  # Stripe's "2 TIMES Pro" in line descriptions


def usd(amount: str) -> Money:
    return Money.of(amount, "USD")


def hand_prorated(unit_amount: int, quantity: int, remaining: int, period: int) -> int:
    """The expected proration, computed independently of the sandbox: half to even."""
    exact = Decimal(unit_amount * quantity * remaining) / Decimal(period)
    return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def unix(moment: datetime) -> int:
    return int(moment.timestamp())


@dataclass(frozen=True)
class Catalog:
    customer_id: str
    pro: str  # 30.00 USD a month
    team: str  # 90.00 USD a month


async def catalog(driver: BillingDriver, name: str = "Acme") -> Catalog:
    customer = await driver.create_customer(
        name, email=f"{name.lower()}@example.test", idempotency_key=f"{name}/customer"
    )
    product = await driver.create_product("Pro", idempotency_key=f"{name}/product")
    pro = await driver.create_price(product.id, 3000, "usd", idempotency_key=f"{name}/price/pro")
    team_product = await driver.create_product("Team", idempotency_key=f"{name}/team")
    team = await driver.create_price(
        team_product.id, 9000, "usd", idempotency_key=f"{name}/price/team"
    )
    return Catalog(customer.id, pro.id, team.id)


async def subscribe(
    driver: BillingDriver,
    port: BillingSystem,
    customer_id: str,
    price_id: str,
    quantity: int,
    key: str,
) -> Subscription:
    """Subscribe through the SDK; the subscription as the port reads it."""
    created = await driver.subscribe(customer_id, price_id, quantity=quantity, idempotency_key=key)
    return await port.get_subscription(created.id)


async def change_plan(
    driver: BillingDriver, port: BillingSystem, subscription_id: str, **changes: Any
) -> Subscription:
    """Amend through the SDK; the subscription as the port reads it."""
    await driver.change_plan(subscription_id, **changes)
    return await port.get_subscription(subscription_id)


async def balance(driver: BillingDriver, customer_id: str) -> Money | None:
    minor, currency = await driver.balance(customer_id)
    return Money.from_minor(minor, currency) if currency else None


async def invoices_of(billing: StripeBilling, subscription_id: str) -> list[BillingDocument]:
    """The subscription's invoices, oldest first."""
    found = [i async for i in billing.list_invoices(subscription_id=subscription_id)]
    return list(reversed(found))


def period_of(sub: Subscription) -> tuple[int, int]:
    return unix(sub.current_period_start), unix(sub.current_period_end)


def raw(sdk: stripe.StripeClient, path: str, **params: Any) -> Any:
    """The JSON the sandbox answers to a GET, as the SDK receives it."""
    return json.loads(sdk.raw_request("get", path, **params).body)


def types_after(sandbox: BillingSandbox, seen: set[str]) -> list[dict[str, Any]]:
    return [e for e in sandbox.events() if e["id"] not in seen]


# subscriptions and their first invoice ----------------------------------------------------


async def test_subscription_create_finalizes_the_first_invoice_for_the_full_period(
    stripe_billing: StripeBilling, billing_driver: BillingDriver
) -> None:
    port: BillingSystem = stripe_billing
    shop = await catalog(billing_driver)

    sub = await subscribe(
        billing_driver, stripe_billing, shop.customer_id, shop.pro, 2, "sub/create"
    )

    assert sub.subscription_id.startswith("sub_") and sub.status == "active"
    assert sub.currency == "USD" and sub.customer_id == shop.customer_id
    [item] = sub.items
    assert (item.price_id, item.quantity, item.unit_amount) == (shop.pro, 2, usd("30.00"))
    assert (item.description, item.interval, item.interval_count) == ("Pro", "month", 1)
    assert timedelta(days=28) <= sub.current_period_end - sub.current_period_start
    assert await port.get_subscription(sub.subscription_id) == sub
    [invoice] = await invoices_of(stripe_billing, sub.subscription_id)
    assert invoice == await port.get_invoice(invoice.document_id)
    assert (invoice.kind, invoice.status, invoice.billing_reason) == (
        "invoice",
        "open",
        "subscription_create",
    )
    assert invoice.total == invoice.subtotal == invoice.amount_remaining == usd("60.00")
    assert invoice.tax == usd("0")
    assert invoice.number is not None and re.fullmatch(r"[0-9A-F]{8}-0001", invoice.number)
    assert invoice.finalized_at is not None and invoice.voided_at is None
    assert invoice.subscription_id == sub.subscription_id
    [line] = invoice.lines
    assert (line.quantity, line.unit_amount, line.amount) == (2, usd("30.00"), usd("60.00"))
    assert line.proration is False and line.price_id == shop.pro
    assert line.period_start == sub.current_period_start.date()
    assert line.description.startswith(f"2 {TIMES} Pro")
    # Billing fixed the customer's currency with the subscription, as Stripe does.
    assert (await stripe_billing.get_customer(shop.customer_id)).currency == "USD"


async def test_mid_cycle_upgrade_with_always_invoice_invoices_the_hand_computed_proration(
    stripe_billing: StripeBilling, billing_driver: BillingDriver
) -> None:
    shop = await catalog(billing_driver)
    sub = await subscribe(
        billing_driver, stripe_billing, shop.customer_id, shop.pro, 1, "up/create"
    )
    start, end = period_of(sub)
    on = start + (end - start) * 2 // 5 + 4321  # about 40 % into the period
    remaining, period = end - on, end - start
    assert (3000 * remaining) % period and (9000 * remaining) % period  # rounding matters

    upgraded = await change_plan(
        billing_driver,
        stripe_billing,
        sub.subscription_id,
        price_id=shop.team,
        proration_behavior="always_invoice",
        proration_date=on,
        idempotency_key="up/upgrade",
    )

    assert [i.price_id for i in upgraded.items] == [shop.team]
    assert upgraded.items[0].item_id == sub.items[0].item_id  # Stripe keeps the item
    first, prorated = await invoices_of(stripe_billing, sub.subscription_id)
    assert prorated.billing_reason == "subscription_update" and prorated.status == "open"
    credit, charge = prorated.lines
    expected_credit = -hand_prorated(3000, 1, remaining, period)
    expected_charge = hand_prorated(9000, 1, remaining, period)
    assert credit.amount == Money.from_minor(expected_credit, "USD")
    assert charge.amount == Money.from_minor(expected_charge, "USD")
    assert credit.proration and charge.proration
    assert credit.description.startswith(f"Unused time on 1 {TIMES} Pro after")
    assert charge.description.startswith(f"Remaining time on 1 {TIMES} Team after")
    assert credit.period_start == charge.period_start == datetime.fromtimestamp(on, UTC).date()
    assert prorated.total == Money.from_minor(expected_credit + expected_charge, "USD")
    assert prorated.amount_remaining == prorated.total
    assert first.total == usd("30.00")  # the first invoice is untouched


async def test_downgrade_credit_goes_to_the_balance_and_is_applied_to_the_next_invoice(
    stripe_billing: StripeBilling,
    billing_sandbox: BillingSandbox,
    billing_driver: BillingDriver,
    stripe_sdk: stripe.StripeClient,
) -> None:
    shop = await catalog(billing_driver)
    sub = await subscribe(
        billing_driver, stripe_billing, shop.customer_id, shop.team, 1, "down/new"
    )
    [first] = await invoices_of(stripe_billing, sub.subscription_id)
    await billing_driver.pay(first.document_id, idempotency_key="down/pay")
    start, end = period_of(sub)
    half = start + (end - start) // 2  # periods are whole days: exactly half is left

    await change_plan(
        billing_driver,
        stripe_billing,
        sub.subscription_id,
        price_id=shop.pro,
        quantity=2,
        proration_behavior="always_invoice",
        proration_date=half,
        idempotency_key="down/downgrade",
    )

    _, credit_invoice = await invoices_of(stripe_billing, sub.subscription_id)
    assert credit_invoice.total == usd("-15.00")  # -45.00 unused Team, +30.00 for two Pro
    assert credit_invoice.status == "paid"  # nothing is due on a negative invoice
    assert credit_invoice.amount_remaining == usd("0")
    assert await balance(billing_driver, shop.customer_id) == usd("-15.00")

    advanced = billing_sandbox.advance_subscription(sub.subscription_id)

    cycle = await stripe_billing.get_invoice(advanced["invoice"]["id"])
    assert cycle.billing_reason == "subscription_cycle" and cycle.status == "open"
    assert cycle.total == usd("60.00") and cycle.amount_remaining == usd("45.00")
    raw_cycle = raw(stripe_sdk, f"/v1/invoices/{cycle.document_id}")
    assert (raw_cycle["starting_balance"], raw_cycle["ending_balance"]) == (-1500, 0)
    assert raw_cycle["amount_due"] == 4500
    assert await balance(billing_driver, shop.customer_id) == usd("0")
    history = raw(stripe_sdk, f"/v1/customers/{shop.customer_id}/balance_transactions")
    assert [(t["type"], t["amount"]) for t in reversed(history["data"])] == [
        ("applied_to_invoice", -1500),
        ("applied_to_invoice", 1500),
    ]


async def test_quantity_change_credits_the_old_quantity_and_charges_the_new(
    stripe_billing: StripeBilling,
    billing_sandbox: BillingSandbox,
    billing_driver: BillingDriver,
    stripe_sdk: stripe.StripeClient,
) -> None:
    shop = await catalog(billing_driver)
    sub = await subscribe(billing_driver, stripe_billing, shop.customer_id, shop.pro, 2, "qty/new")
    start, end = period_of(sub)
    on = start + (end - start) // 3 + 777
    assert (6000 * (end - on)) % (end - start)  # rounding matters

    updated = await change_plan(
        billing_driver,
        stripe_billing,
        sub.subscription_id,
        quantity=5,
        proration_behavior="always_invoice",
        proration_date=on,
        idempotency_key="qty/seats",
    )

    assert updated.items[0].quantity == 5 and updated.items[0].price_id == shop.pro
    _, prorated = await invoices_of(stripe_billing, sub.subscription_id)
    remaining, period = end - on, end - start
    assert [line.amount.to_minor() for line in prorated.lines] == [
        -hand_prorated(3000, 2, remaining, period),
        hand_prorated(3000, 5, remaining, period),
    ]
    raw_lines = raw(stripe_sdk, f"/v1/invoices/{prorated.document_id}/lines")["data"]
    assert [line["quantity"] for line in raw_lines] == [2, 5]
    # Canonical lines always multiply out: a proration reads as one unit of its amount.
    assert all(
        line.unit_amount.amount * line.quantity == line.amount.amount for line in prorated.lines
    )


async def test_yen_subscription_is_prorated_and_mapped_in_whole_yen(
    stripe_billing: StripeBilling, billing_driver: BillingDriver
) -> None:
    customer = await billing_driver.create_customer("Kabushiki", idempotency_key="jpy/customer")
    product = await billing_driver.create_product("Basic", idempotency_key="jpy/product")
    basic, plus = [
        (await billing_driver.create_price(product.id, yen, "jpy", idempotency_key=f"jpy/{yen}")).id
        for yen in (1000, 2500)
    ]
    sub = await subscribe(billing_driver, stripe_billing, customer.id, basic, 1, "jpy/sub")
    start, end = period_of(sub)
    on = start + (end - start) // 3 + 555

    await change_plan(
        billing_driver,
        stripe_billing,
        sub.subscription_id,
        price_id=plus,
        proration_behavior="always_invoice",
        proration_date=on,
        idempotency_key="jpy/upgrade",
    )

    first, prorated = await invoices_of(stripe_billing, sub.subscription_id)
    assert first.total == Money.of("1000", "JPY") and sub.items[0].unit_amount.currency == "JPY"
    credit = -hand_prorated(1000, 1, end - on, end - start)
    charge = hand_prorated(2500, 1, end - on, end - start)
    assert [line.amount for line in prorated.lines] == [
        Money.of(credit, "JPY"),
        Money.of(charge, "JPY"),
    ]
    assert prorated.total == Money.of(credit + charge, "JPY")
    assert all(line.amount.amount == line.amount.amount.to_integral() for line in prorated.lines)


async def test_create_prorations_leaves_pending_items_that_the_next_cycle_invoices(
    stripe_billing: StripeBilling,
    billing_sandbox: BillingSandbox,
    billing_driver: BillingDriver,
    stripe_sdk: stripe.StripeClient,
) -> None:
    shop = await catalog(billing_driver)
    sub = await subscribe(billing_driver, stripe_billing, shop.customer_id, shop.pro, 1, "pend/new")
    start, end = period_of(sub)
    on = start + (end - start) // 4 + 999

    await change_plan(
        billing_driver,
        stripe_billing,
        sub.subscription_id,
        price_id=shop.team,
        proration_date=on,
        idempotency_key="pend/upgrade",
    )

    assert len(await invoices_of(stripe_billing, sub.subscription_id)) == 1  # nothing invoiced
    pending = raw(stripe_sdk, "/v1/invoiceitems", customer=shop.customer_id, pending="true")
    assert [(i["proration"], i["invoice"]) for i in pending["data"]] == [(True, None)] * 2
    credit = -hand_prorated(3000, 1, end - on, end - start)
    charge = hand_prorated(9000, 1, end - on, end - start)

    advanced = billing_sandbox.advance_subscription(sub.subscription_id)

    renewed = await stripe_billing.get_subscription(sub.subscription_id)
    assert renewed.current_period_start == sub.current_period_end
    assert renewed.current_period_end > renewed.current_period_start
    _, cycle = await invoices_of(stripe_billing, sub.subscription_id)
    assert cycle.document_id == advanced["invoice"]["id"]
    assert cycle.billing_reason == "subscription_cycle"
    assert [(line.proration, line.amount.to_minor()) for line in cycle.lines] == [
        (True, credit),
        (True, charge),
        (False, 9000),
    ]
    assert cycle.lines[2].period_start == renewed.current_period_start.date()
    assert cycle.total == Money.from_minor(credit + charge + 9000, "USD")
    left = raw(stripe_sdk, "/v1/invoiceitems", customer=shop.customer_id, pending="true")
    assert left["data"] == []


async def test_cancel_with_proration_and_invoice_now_issues_a_final_credit_invoice(
    stripe_billing: StripeBilling,
    billing_sandbox: BillingSandbox,
    billing_driver: BillingDriver,
    stripe_sdk: stripe.StripeClient,
) -> None:
    shop = await catalog(billing_driver)
    sub = await subscribe(billing_driver, stripe_billing, shop.customer_id, shop.pro, 1, "end/new")
    [first] = await invoices_of(stripe_billing, sub.subscription_id)
    await billing_driver.pay(first.document_id, idempotency_key="end/pay")
    start, end = period_of(sub)

    await billing_driver.cancel(sub.subscription_id, prorate=True, invoice_now=True)
    canceled = await stripe_billing.get_subscription(sub.subscription_id)

    assert canceled.status == "canceled" and canceled.canceled_at is not None
    _, final = await invoices_of(stripe_billing, sub.subscription_id)
    unused = hand_prorated(3000, 1, end - unix(canceled.canceled_at), end - start)
    assert final.total == Money.from_minor(-unused, "USD")
    assert [line.description.split(" after")[0] for line in final.lines] == [
        f"Unused time on 1 {TIMES} Pro"
    ]
    assert final.status == "paid"
    assert await balance(billing_driver, shop.customer_id) == final.total
    again = await billing_driver.cancel(sub.subscription_id, prorate=True, invoice_now=True)
    assert again.status == "canceled" and again.canceled_at == unix(canceled.canceled_at)
    assert len(await invoices_of(stripe_billing, sub.subscription_id)) == 2
    assert "customer.subscription.deleted" in [e["type"] for e in billing_sandbox.events()]
    # As in Stripe, lists leave canceled subscriptions out unless asked for them.
    assert raw(stripe_sdk, "/v1/subscriptions", customer=shop.customer_id)["data"] == []
    listed = raw(stripe_sdk, "/v1/subscriptions", customer=shop.customer_id, status="all")
    assert [s["id"] for s in listed["data"]] == [sub.subscription_id]


async def test_subscription_set_to_cancel_at_period_end_ends_when_advanced(
    stripe_billing: StripeBilling,
    billing_sandbox: BillingSandbox,
    billing_driver: BillingDriver,
    stripe_sdk: stripe.StripeClient,
) -> None:
    shop = await catalog(billing_driver)
    sub = await subscribe(billing_driver, stripe_billing, shop.customer_id, shop.pro, 1, "ape/new")
    marked = await stripe_sdk.v1.subscriptions.update_async(
        sub.subscription_id, {"cancel_at_period_end": True}
    )
    assert marked.cancel_at_period_end is True and marked.status == "active"

    advanced = billing_sandbox.advance_subscription(sub.subscription_id)

    assert advanced["invoice"] is None
    assert advanced["subscription"]["status"] == "canceled"
    assert advanced["subscription"]["ended_at"] == unix(sub.current_period_end)
    assert len(await invoices_of(stripe_billing, sub.subscription_id)) == 1


# invoice lifecycle ------------------------------------------------------------------------


async def test_void_open_invoice_succeeds_and_voiding_a_paid_one_is_refused(
    stripe_billing: StripeBilling, billing_driver: BillingDriver
) -> None:
    shop = await catalog(billing_driver)
    one = await subscribe(billing_driver, stripe_billing, shop.customer_id, shop.pro, 1, "void/one")
    two = await subscribe(
        billing_driver, stripe_billing, shop.customer_id, shop.team, 1, "void/two"
    )
    [open_invoice] = await invoices_of(stripe_billing, one.subscription_id)
    [paid_invoice] = await invoices_of(stripe_billing, two.subscription_id)
    await billing_driver.pay(paid_invoice.document_id, idempotency_key="void/pay")

    await billing_driver.void(open_invoice.document_id, idempotency_key="v/1")

    voided = await stripe_billing.get_invoice(open_invoice.document_id)
    assert voided.status == "void" and voided.voided_at is not None
    assert voided.amount_remaining == usd("0") and voided.total == usd("30.00")
    with pytest.raises(stripe.InvalidRequestError) as refused:
        await billing_driver.void(paid_invoice.document_id, idempotency_key="v/2")
    assert refused.value.http_status == 400 and refused.value.code == "invoice_not_editable"
    assert "paid" in str(refused.value.user_message)
    assert (await stripe_billing.get_invoice(paid_invoice.document_id)).status == "paid"


async def test_manual_invoice_collects_pending_items_and_walks_the_lifecycle(
    stripe_billing: StripeBilling,
    billing_sandbox: BillingSandbox,
    billing_driver: BillingDriver,
    stripe_sdk: stripe.StripeClient,
) -> None:
    shop = await catalog(billing_driver)
    await billing_driver.add_invoice_item(
        shop.customer_id, 12000, "usd", "Onboarding", idempotency_key="man/item"
    )

    created = await billing_driver.invoice_pending_items(
        shop.customer_id, idempotency_key="man/draft"
    )
    draft = await stripe_billing.get_invoice(str(created.id))

    assert draft.status == "draft" and draft.number is None and draft.finalized_at is None
    assert draft.billing_reason == "manual" and draft.subscription_id is None
    assert [(line.description, line.amount) for line in draft.lines] == [
        ("Onboarding", usd("120.00"))
    ]
    finalized = await billing_driver.finalize(draft.document_id, idempotency_key="m/f")
    assert finalized.status == "open" and finalized.number is not None
    with pytest.raises(stripe.InvalidRequestError, match="already finalized"):
        await billing_driver.finalize(draft.document_id, idempotency_key="m/f2")
    uncollectible = await billing_driver.mark_uncollectible(
        draft.document_id, idempotency_key="m/u"
    )
    assert uncollectible.status == "uncollectible"
    paid = await billing_driver.pay(draft.document_id, idempotency_key="m/p")
    assert paid.status == "paid" and paid.amount_remaining == 0
    body = raw(stripe_sdk, f"/v1/invoices/{draft.document_id}")
    assert body["amount_paid"] == 12000 and body["status_transitions"]["paid_at"] is not None
    assert body["status_transitions"]["marked_uncollectible_at"] is not None


def test_deleting_a_draft_puts_its_items_back_to_pending(stripe_sdk: stripe.StripeClient) -> None:
    client = stripe_sdk.v1
    customer = client.customers.create({"name": "Drafty"}).id
    item = client.invoice_items.create({"customer": customer, "amount": 700, "currency": "gbp"})
    draft = client.invoices.create(
        {"customer": customer, "pending_invoice_items_behavior": "include"}
    )
    excluded = client.invoices.create({"customer": customer})
    attached = client.invoice_items.retrieve(item.id)
    deleted = client.invoices.delete(str(draft.id))
    pending = client.invoice_items.retrieve(item.id)
    client.invoices.finalize_invoice(str(excluded.id))
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.invoices.delete(str(excluded.id))

    assert (draft.total, draft.currency, draft.lines.total_count) == (700, "gbp", 1)
    assert excluded.total == 0  # Stripe's default since 2022: pending items stay out
    assert attached.invoice == draft.id
    assert deleted.to_dict() == {"id": draft.id, "object": "invoice", "deleted": True}
    assert pending.invoice is None
    assert refused.value.http_status == 400 and refused.value.code == "invoice_not_editable"


async def test_invoice_lines_beyond_the_embedded_first_page_are_read(
    stripe_billing: StripeBilling,
    billing_sandbox: BillingSandbox,
    billing_driver: BillingDriver,
    stripe_sdk: stripe.StripeClient,
) -> None:
    shop = await catalog(billing_driver)
    for n in range(12):
        await billing_driver.add_invoice_item(
            shop.customer_id, (n + 1) * 100, "usd", f"Item {n}", idempotency_key=f"many/{n}"
        )

    created = await billing_driver.invoice_pending_items(
        shop.customer_id, idempotency_key="many/inv"
    )
    draft = await stripe_billing.get_invoice(str(created.id))

    embedded = raw(stripe_sdk, f"/v1/invoices/{draft.document_id}")["lines"]
    assert len(embedded["data"]) == 10 and embedded["has_more"] is True
    assert [line.description for line in draft.lines] == [f"Item {n}" for n in range(12)]
    assert draft.total == usd("78.00")


async def test_list_invoices_filters_by_status(
    stripe_billing: StripeBilling, billing_driver: BillingDriver
) -> None:
    shop = await catalog(billing_driver)
    one = await subscribe(billing_driver, stripe_billing, shop.customer_id, shop.pro, 1, "ls/one")
    two = await subscribe(billing_driver, stripe_billing, shop.customer_id, shop.team, 1, "ls/two")
    [paid] = await invoices_of(stripe_billing, two.subscription_id)
    await billing_driver.pay(paid.document_id, idempotency_key="ls/pay")

    open_ones = [i async for i in stripe_billing.list_invoices(status="open")]
    everything = [
        i async for i in stripe_billing.list_invoices(customer_id=shop.customer_id, page_size=1)
    ]

    assert [i.subscription_id for i in open_ones] == [one.subscription_id]
    assert [i.subscription_id for i in everything] == [two.subscription_id, one.subscription_id]


# credit notes -----------------------------------------------------------------------------


async def test_credit_note_on_an_open_invoice_reduces_what_remains_due(
    stripe_billing: StripeBilling,
    billing_sandbox: BillingSandbox,
    billing_driver: BillingDriver,
    stripe_sdk: stripe.StripeClient,
) -> None:
    port: BillingSystem = stripe_billing
    shop = await catalog(billing_driver)
    sub = await subscribe(billing_driver, stripe_billing, shop.customer_id, shop.pro, 1, "cn/new")
    [invoice] = await invoices_of(stripe_billing, sub.subscription_id)

    note = await stripe_billing.create_credit_note(
        invoice.document_id, usd("10.00"), "Outage credit", "product_unsatisfactory", "cn/1"
    )

    assert (note.kind, note.status, note.number) == (
        "credit_note",
        "issued",
        f"{invoice.number}-CN-01",
    )
    assert note.invoice_id == invoice.document_id
    assert note.subscription_id == sub.subscription_id
    assert note.billing_reason == "product_unsatisfactory"
    assert note.total == usd("10.00") and note.was_finalized
    assert [(line.description, line.amount) for line in note.lines] == [
        ("Outage credit", usd("10.00"))
    ]
    assert await port.get_credit_note(note.document_id) == note
    after = await stripe_billing.get_invoice(invoice.document_id)
    assert after.amount_remaining == usd("20.00") and after.total == usd("30.00")
    assert await balance(billing_driver, shop.customer_id) == usd("0")
    assert raw(stripe_sdk, f"/v1/credit_notes/{note.document_id}")["type"] == "pre_payment"
    listed = await billing_driver.credit_notes(invoice.document_id)
    assert [n.id for n in listed] == [note.document_id]

    voided = await stripe_billing.void_credit_note(note.document_id, idempotency_key="cn/v")

    assert voided.status == "void" and voided.voided_at is not None
    restored = await stripe_billing.get_invoice(invoice.document_id)
    assert restored.amount_remaining == usd("30.00")


async def test_credit_note_on_a_paid_invoice_credits_the_customer_balance(
    stripe_billing: StripeBilling,
    billing_sandbox: BillingSandbox,
    billing_driver: BillingDriver,
    stripe_sdk: stripe.StripeClient,
) -> None:
    shop = await catalog(billing_driver)
    sub = await subscribe(billing_driver, stripe_billing, shop.customer_id, shop.team, 1, "pcn/new")
    [invoice] = await invoices_of(stripe_billing, sub.subscription_id)
    await billing_driver.pay(invoice.document_id, idempotency_key="pcn/pay")

    note = await stripe_billing.create_credit_note(
        invoice.document_id,
        usd("12.50"),
        "Goodwill for ticket 4711",
        "order_change",
        "pcn/credit",
        invoice_line_id=invoice.lines[0].line_id,
    )

    assert note.total == usd("12.50")
    assert await balance(billing_driver, shop.customer_id) == usd("-12.50")
    after = await stripe_billing.get_invoice(invoice.document_id)
    assert after.status == "paid" and after.amount_remaining == usd("0")
    body = raw(stripe_sdk, f"/v1/credit_notes/{note.document_id}")
    assert body["type"] == "post_payment" and body["post_payment_amount"] == 1250
    assert body["lines"]["data"][0]["invoice_line_item"] == invoice.lines[0].line_id
    transaction = raw(
        stripe_sdk,
        f"/v1/customers/{shop.customer_id}/balance_transactions/{body['customer_balance_transaction']}",
    )
    assert (transaction["type"], transaction["amount"]) == ("credit_note", -1250)
    assert transaction["credit_note"] == note.document_id


async def test_crediting_more_than_is_left_on_the_invoice_is_refused(
    stripe_billing: StripeBilling, billing_driver: BillingDriver
) -> None:
    shop = await catalog(billing_driver)
    sub = await subscribe(billing_driver, stripe_billing, shop.customer_id, shop.pro, 1, "over/new")
    [invoice] = await invoices_of(stripe_billing, sub.subscription_id)
    await stripe_billing.create_credit_note(
        invoice.document_id, usd("20.00"), "First", None, "over/1"
    )

    with pytest.raises(RejectedError) as refused:
        await stripe_billing.create_credit_note(
            invoice.document_id, usd("10.01"), "Too much", None, "over/2"
        )

    assert refused.value.remote_code == "amount_too_large"
    assert "10.00 USD" in refused.value.message  # what is left to credit
    last = await stripe_billing.create_credit_note(
        invoice.document_id, usd("10.00"), "The rest", None, "over/3"
    )
    assert last.number is not None and last.number.endswith("-CN-02")
    assert (await stripe_billing.get_invoice(invoice.document_id)).status == "paid"


async def test_crediting_a_draft_or_void_invoice_is_refused(
    stripe_billing: StripeBilling, billing_driver: BillingDriver
) -> None:
    shop = await catalog(billing_driver)
    await billing_driver.add_invoice_item(
        shop.customer_id, 5000, "usd", "Setup", idempotency_key="draft/item"
    )
    created = await billing_driver.invoice_pending_items(
        shop.customer_id, idempotency_key="draft/inv"
    )
    draft = await stripe_billing.get_invoice(str(created.id))

    with pytest.raises(RejectedError) as on_draft:
        await stripe_billing.create_credit_note(
            draft.document_id, usd("5.00"), "Early", None, "draft/cn"
        )

    assert on_draft.value.remote_code == "invoice_not_editable"
    assert "draft" in on_draft.value.message
    await billing_driver.finalize(draft.document_id, idempotency_key="draft/fin")
    await billing_driver.void(draft.document_id, idempotency_key="draft/void")
    with pytest.raises(RejectedError, match="void"):
        await stripe_billing.create_credit_note(
            draft.document_id, usd("5.00"), "Late", None, "draft/cn2"
        )


# customer balance -------------------------------------------------------------------------


async def test_balance_credit_is_applied_to_the_next_finalized_invoice(
    stripe_billing: StripeBilling,
    billing_sandbox: BillingSandbox,
    billing_driver: BillingDriver,
    stripe_sdk: stripe.StripeClient,
) -> None:
    shop = await catalog(billing_driver)
    seen = {e["id"] for e in billing_sandbox.events()}

    credit = await stripe_billing.create_balance_credit(
        shop.customer_id, usd("10.00"), "Support credit case 17", "credit/17"
    )

    events = types_after(billing_sandbox, seen)
    assert [e["type"] for e in events] == [
        "customer.updated",  # the currency is fixed by the first balance transaction
        "customer_balance_transaction.created",
        "customer.updated",
    ]
    assert events[2]["data"]["previous_attributes"] == {"balance": 0}
    assert events[2]["data"]["object"]["balance"] == -1000
    assert credit.transaction_id.startswith("cbtxn_")
    assert (credit.amount, credit.ending_balance) == (usd("-10.00"), usd("-10.00"))
    assert await balance(billing_driver, shop.customer_id) == usd("-10.00")
    sub = await subscribe(
        billing_driver, stripe_billing, shop.customer_id, shop.pro, 1, "credit/sub"
    )
    [invoice] = await invoices_of(stripe_billing, sub.subscription_id)
    assert invoice.total == usd("30.00") and invoice.amount_remaining == usd("20.00")
    body = raw(stripe_sdk, f"/v1/invoices/{invoice.document_id}")
    assert (body["starting_balance"], body["ending_balance"], body["amount_due"]) == (
        -1000,
        0,
        2000,
    )
    assert await balance(billing_driver, shop.customer_id) == usd("0")
    replayed = await stripe_billing.create_balance_credit(
        shop.customer_id, usd("10.00"), "Support credit case 17", "credit/17"
    )
    assert replayed == credit  # the same key: no second credit


async def test_mixing_currencies_on_a_customer_is_refused(
    stripe_billing: StripeBilling, billing_driver: BillingDriver
) -> None:
    shop = await catalog(billing_driver)
    await stripe_billing.create_balance_credit(shop.customer_id, usd("1.00"), "x", "mix/usd")

    with pytest.raises(RejectedError) as refused:
        await stripe_billing.create_balance_credit(
            shop.customer_id, Money.of("1.00", "EUR"), "y", "mix/eur"
        )

    assert refused.value.remote_code == "currency_mismatch"


async def test_unknown_price_is_not_found(
    stripe_billing: StripeBilling, billing_driver: BillingDriver
) -> None:
    shop = await catalog(billing_driver)

    with pytest.raises(stripe.InvalidRequestError) as missing:
        await billing_driver.subscribe(shop.customer_id, "price_nope", idempotency_key="nf/1")

    assert missing.value.http_status == 400 and missing.value.code == "resource_missing"
    assert "price_nope" in str(missing.value.user_message)


# events -----------------------------------------------------------------------------------


async def test_subscription_and_upgrade_emit_stripe_events_in_billing_order(
    stripe_billing: StripeBilling, billing_sandbox: BillingSandbox, billing_driver: BillingDriver
) -> None:
    shop = await catalog(billing_driver)
    seen = {e["id"] for e in billing_sandbox.events()}
    sub = await subscribe(billing_driver, stripe_billing, shop.customer_id, shop.pro, 1, "ev/new")
    created = types_after(billing_sandbox, seen)
    seen |= {e["id"] for e in created}
    start, end = period_of(sub)

    await change_plan(
        billing_driver,
        stripe_billing,
        sub.subscription_id,
        price_id=shop.team,
        proration_behavior="always_invoice",
        proration_date=(start + end) // 2,
        idempotency_key="ev/upgrade",
    )

    upgraded = types_after(billing_sandbox, seen)
    assert [e["type"] for e in created] == [
        "customer.updated",  # the currency is fixed
        "customer.subscription.created",
        "invoice.created",
        "invoice.finalized",
    ]
    assert [e["type"] for e in upgraded] == [
        "invoiceitem.created",
        "invoiceitem.created",
        "customer.subscription.updated",
        "invoice.created",
        "invoice.finalized",
    ]
    everything = created + upgraded
    assert len({e["id"] for e in everything}) == len(everything)
    assert all(isinstance(e["created"], int) for e in everything)
    assert [e["created"] for e in everything] == sorted(e["created"] for e in everything)
    updated = upgraded[2]["data"]
    assert "items" in updated["previous_attributes"]
    assert updated["object"]["items"]["data"][0]["price"]["id"] == shop.team
    new_invoice = upgraded[3]["data"]["object"]
    assert updated["object"]["latest_invoice"] == new_invoice["id"]
    assert new_invoice["status"] == "draft"
    assert upgraded[4]["data"]["object"]["status"] == "open"
    assert "previous_attributes" not in upgraded[4]["data"]
    assert all(e["request"]["idempotency_key"] == "ev/upgrade" for e in upgraded)


async def test_list_events_returns_a_time_range_oldest_first_across_pages(
    stripe_billing: StripeBilling, billing_sandbox: BillingSandbox, billing_driver: BillingDriver
) -> None:
    t0 = int(time.time())
    shop = await catalog(billing_driver, "Early")  # events at ~t0
    billing_sandbox.shift_clock(1000)
    sub = await subscribe(
        billing_driver, stripe_billing, shop.customer_id, shop.pro, 1, "range/sub"
    )
    billing_sandbox.shift_clock(1000)  # now ~t0 + 2000
    await billing_driver.cancel(sub.subscription_id)
    everything = billing_sandbox.events()
    middle = [e for e in everything if t0 + 500 <= e["created"] < t0 + 1500]

    in_range = [
        e
        async for e in stripe_billing.list_events(
            created_from=datetime.fromtimestamp(t0 + 500, UTC),
            created_until=datetime.fromtimestamp(t0 + 1500, UTC),
            page_size=2,
        )
    ]
    from_the_start = [
        e
        async for e in stripe_billing.list_events(
            created_from=datetime.fromtimestamp(0, UTC), page_size=3
        )
    ]
    invoices_only = [
        e["type"]
        async for e in stripe_billing.list_events(
            created_from=datetime.fromtimestamp(t0 + 500, UTC), types=["invoice.*"]
        )
    ]

    assert [e["type"] for e in middle] == [
        "customer.updated",
        "customer.subscription.created",
        "invoice.created",
        "invoice.finalized",
    ]
    assert [e["id"] for e in in_range] == [e["id"] for e in middle]
    assert [e["id"] for e in from_the_start] == [e["id"] for e in everything]
    assert invoices_only == ["invoice.created", "invoice.finalized"]


def test_events_api_filters_by_created_and_types_and_pages_oldest_first(
    billing_sandbox: BillingSandbox, stripe_sdk: stripe.StripeClient
) -> None:
    client = stripe_sdk.v1
    for n in range(5):
        client.products.create({"name": f"P{n}"})
    billing_sandbox.shift_clock(100)
    client.customers.create({"name": "Later"})
    everything = billing_sandbox.events()
    oldest = everything[0]
    later = int(everything[-1]["created"])
    pages = []
    cursor = oldest["id"]
    while True:
        page = client.events.list(
            {"ending_before": cursor, "limit": 2, "types": ["product.created"]}
        )
        pages.append([e.data.object["name"] for e in page.data])
        if not page.has_more:
            break
        cursor = page.data[0].id
    recent = client.events.list({"created": {"gte": later}})
    before = client.events.list({"created": {"lt": later}})

    # Each page lists newest first (as Stripe does); pages walk towards newer events.
    assert pages == [["P2", "P1"], ["P4", "P3"]]
    assert [e.type for e in recent.data] == ["customer.created"]
    assert len(before.data) == 5


# idempotency ------------------------------------------------------------------------------


async def test_replayed_subscription_update_makes_no_second_proration(
    stripe_billing: StripeBilling,
    billing_sandbox: BillingSandbox,
    billing_driver: BillingDriver,
    stripe_sdk: stripe.StripeClient,
) -> None:
    shop = await catalog(billing_driver)
    sub = await subscribe(billing_driver, stripe_billing, shop.customer_id, shop.pro, 1, "idem/new")
    start, end = period_of(sub)
    on = (start + end) // 2

    async def upgrade(key: str, price: str) -> Subscription:
        return await change_plan(
            billing_driver,
            stripe_billing,
            sub.subscription_id,
            price_id=price,
            proration_behavior="always_invoice",
            proration_date=on,
            idempotency_key=key,
        )

    first = await upgrade("subscription/x/upgrade-1", shop.team)
    events_after_first = len(billing_sandbox.events())
    second = await upgrade("subscription/x/upgrade-1", shop.team)

    assert second == first
    invoices = await invoices_of(stripe_billing, sub.subscription_id)
    assert [i.billing_reason for i in invoices] == ["subscription_create", "subscription_update"]
    items = raw(stripe_sdk, "/v1/invoiceitems", customer=shop.customer_id)
    assert len(items["data"]) == 2
    assert len(billing_sandbox.events()) == events_after_first
    with pytest.raises(stripe.IdempotencyError) as reused:
        await upgrade("subscription/x/upgrade-1", shop.pro)
    assert reused.value.http_status == 400


# webhooks ---------------------------------------------------------------------------------


async def upgrade_scenario(driver: BillingDriver, billing: StripeBilling, name: str) -> None:
    shop = await catalog(driver, name)
    sub = await subscribe(driver, billing, shop.customer_id, shop.pro, 1, f"{name}/sub")
    start, end = period_of(sub)
    await driver.change_plan(
        sub.subscription_id,
        price_id=shop.team,
        proration_behavior="always_invoice",
        proration_date=(start + end) // 2,
        idempotency_key=f"{name}/upgrade",
    )
    [_, prorated] = await invoices_of(billing, sub.subscription_id)
    await billing.create_credit_note(
        prorated.document_id, usd("5.00"), "Goodwill", None, f"{name}/credit"
    )


async def test_billing_webhooks_are_delivered_signed(
    stripe_billing: StripeBilling,
    billing_sandbox: BillingSandbox,
    billing_webhook_receiver: WebhookReceiver,
    billing_driver: BillingDriver,
) -> None:
    endpoint = billing_sandbox.add_webhook_endpoint(billing_webhook_receiver.url)

    await upgrade_scenario(billing_driver, stripe_billing, "Hooked")

    events = billing_sandbox.events()
    received = billing_webhook_receiver.wait_for(len(events))
    now = int(time.time())
    for webhook in received:
        verify_stripe(
            webhook.body, webhook.headers["stripe-signature"], [endpoint.secret], 300, now
        )
    bodies = [json.loads(r.body) for r in received]
    assert [b["id"] for b in bodies] == [e["id"] for e in events]  # in billing order
    assert {"customer.subscription.updated", "invoice.finalized", "credit_note.created"} <= {
        b["type"] for b in bodies
    }


async def test_shuffled_and_duplicated_deliveries_still_bring_every_event(
    stripe_billing: StripeBilling,
    billing_sandbox: BillingSandbox,
    billing_webhook_receiver: WebhookReceiver,
    billing_driver: BillingDriver,
) -> None:
    endpoint = billing_sandbox.add_webhook_endpoint(billing_webhook_receiver.url)
    billing_sandbox.set_delivery_mode(
        shuffle=True, shuffle_window_seconds=0.2, duplicate_rate=1.0, seed=11
    )

    await upgrade_scenario(billing_driver, stripe_billing, "Chaos")

    expected = [e["id"] for e in billing_sandbox.events()]

    def every_event_twice() -> bool:
        counts = Counter(json.loads(r.body)["id"] for r in billing_webhook_receiver.received)
        return all(counts[event_id] >= 2 for event_id in expected)

    wait_until(every_event_twice, timeout=20, what="every event delivered (and duplicated)")
    received = list(billing_webhook_receiver.received)
    now = int(time.time())
    for webhook in received:
        verify_stripe(
            webhook.body, webhook.headers["stripe-signature"], [endpoint.secret], 300, now
        )
    assert {json.loads(r.body)["id"] for r in received} == set(expected)
    reasons = Counter(d["reason"] for d in billing_sandbox.deliveries())
    assert reasons["event"] == len(expected) and reasons["duplicate"] >= len(expected)


# mapping of Stripe's current shapes -------------------------------------------------------


def test_mapping_reads_stripe_shapes_without_the_legacy_fields() -> None:
    # Since 2025 Stripe names the subscription under `parent`, prorations under the line's
    # `parent`, the price under `pricing`, and the period only on subscription items.
    invoice = invoice_from_stripe(
        {
            "id": "in_1",
            "object": "invoice",
            "status": "open",
            "number": "ABC-0002",
            "customer": "cus_1",
            "billing_reason": "subscription_update",
            "currency": "eur",
            "parent": {"subscription_details": {"subscription": "sub_1"}},
            "subtotal": 1150,
            "total": 1150,
            "amount_remaining": 1150,
            "created": 1_800_000_000,
            "status_transitions": {"finalized_at": 1_800_000_001, "voided_at": None},
            "lines": {
                "data": [
                    {
                        "id": "il_1",
                        "amount": 1150,
                        "quantity": 3,
                        "description": "Remaining time on 3 × Pro",  # noqa: RUF001
                        "parent": {"subscription_item_details": {"proration": True}},
                        "pricing": {
                            "price_details": {"price": "price_1"},
                            "unit_amount_decimal": "1000",
                        },
                        "period": {"start": 1_800_000_000, "end": 1_802_592_000},
                    }
                ]
            },
        }
    )
    subscription = subscription_from_stripe(
        {
            "id": "sub_1",
            "customer": "cus_1",
            "status": "active",
            "currency": "eur",
            "created": 1_800_000_000,
            "items": {
                "data": [
                    {
                        "id": "si_1",
                        "quantity": 3,
                        "current_period_start": 1_800_000_000,
                        "current_period_end": 1_802_592_000,
                        "price": {
                            "id": "price_1",
                            "product": "prod_1",
                            "nickname": "Pro monthly",
                            "unit_amount": 1000,
                            "recurring": {"interval": "month", "interval_count": 1},
                        },
                    }
                ]
            },
        }
    )

    assert invoice.subscription_id == "sub_1" and invoice.tax == Money.of("0", "EUR")
    [line] = invoice.lines
    assert line.proration and line.price_id == "price_1"
    assert (line.quantity, line.unit_amount) == (1, Money.of("11.50", "EUR"))
    assert invoice.finalized_at == datetime.fromtimestamp(1_800_000_001, UTC)
    assert subscription.current_period_end == datetime.fromtimestamp(1_802_592_000, UTC)
    assert subscription.items[0].description == "Pro monthly"
    assert subscription.monthly_recurring() == Money.of("30.00", "EUR")


# the official SDK -------------------------------------------------------------------------


def test_official_sdk_drives_an_amendment_a_credit_note_and_a_refusal(
    stripe_sdk: stripe.StripeClient,
) -> None:
    client = stripe_sdk
    customer = client.v1.customers.create(params={"name": "SDK Subscriber"})
    product = client.v1.products.create(params={"name": "Scale"})
    monthly = {"interval": "month", "interval_count": 1}
    small = client.v1.prices.create(
        params={"product": product.id, "unit_amount": 2000, "currency": "eur", "recurring": monthly}
    )
    large = client.v1.prices.create(
        params={
            "product_data": {"name": "Scale Plus"},
            "unit_amount": 5000,
            "currency": "eur",
            "recurring": monthly,
        }
    )

    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": small.id, "quantity": 1}],
            "collection_method": "send_invoice",
            "days_until_due": 30,
        },
        options={"idempotency_key": "sdk/sub"},
    )
    item = sub["items"].data[0]
    mid = (item.current_period_start + item.current_period_end) // 2
    updated = client.v1.subscriptions.update(
        sub.id,
        params={
            "items": [{"id": item.id, "price": large.id}],
            "proration_behavior": "always_invoice",
            "proration_date": mid,
        },
        options={"idempotency_key": "sdk/upgrade"},
    )
    invoice = client.v1.invoices.retrieve(
        str(updated.latest_invoice), params={"expand": ["customer"]}
    )
    paid = client.v1.invoices.pay(invoice.id, params={"payment_method": "pm_card_visa"})
    note = client.v1.credit_notes.create(
        params={
            "invoice": invoice.id,
            "lines": [
                {
                    "type": "invoice_line_item",
                    "invoice_line_item": invoice.lines.data[1].id,
                    "amount": 500,
                }
            ],
            "reason": "product_unsatisfactory",
        }
    )
    balance = client.v1.customers.balance_transactions.list(customer.id)
    lines = client.v1.invoices.line_items.list(invoice.id, params={"limit": 1})
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.invoices.void_invoice(invoice.id)
    canceled = client.v1.subscriptions.cancel(sub.id)
    listed = [
        i.id
        for i in client.v1.invoices.list(
            params={"customer": customer.id, "limit": 1}
        ).auto_paging_iter()
    ]
    events = client.v1.events.list(params={"types": ["credit_note.created", "invoice.paid"]})

    assert isinstance(sub, stripe.Subscription) and sub.status == "active"
    assert isinstance(invoice, stripe.Invoice) and isinstance(note, stripe.CreditNote)
    assert invoice.billing_reason == "subscription_update"
    assert invoice.customer.name == "SDK Subscriber"  # expanded
    assert [line.amount for line in invoice.lines.data] == [-1000, 2500]
    assert paid.status == "paid" and paid.amount_remaining == 0
    assert note.number == f"{invoice.number}-CN-01" and note.total == 500
    assert balance.data[0].amount == -500 and balance.data[0].type == "credit_note"
    assert [line.id for line in lines.data] == [invoice.lines.data[0].id] and lines.has_more
    assert refused.value.http_status == 400 and refused.value.code == "invoice_not_editable"
    assert canceled.status == "canceled"
    assert listed == [invoice.id, sub.latest_invoice]
    assert [e.type for e in events.data] == ["credit_note.created", "invoice.paid"]


async def test_active_subscription_and_a_reversed_balance_credit(
    stripe_billing: StripeBilling, billing_driver: BillingDriver
) -> None:
    created = await billing_driver.create_customer("Credit Co", idempotency_key="ab/c")
    customer = await stripe_billing.get_customer(created.id)
    assert await stripe_billing.active_subscription(customer.customer_id) is None
    product = await billing_driver.create_product("P", idempotency_key="ab/p")
    price = await billing_driver.create_price(product.id, 9000, "usd", idempotency_key="ab/pr")
    subscription = await billing_driver.subscribe(
        customer.customer_id, price.id, idempotency_key="ab/s"
    )
    found = await stripe_billing.active_subscription(customer.customer_id)
    assert found is not None and found.subscription_id == subscription.id
    assert found.monthly_recurring() == Money.of("90.00", "USD")

    credit = Money.of("25.00", "USD")
    await stripe_billing.create_balance_credit(customer.customer_id, credit, "outage", "ab/cr")
    assert await balance(billing_driver, customer.customer_id) == -credit
    await stripe_billing.reverse_balance_credit(customer.customer_id, credit, "undo", "ab/rv")
    assert await balance(billing_driver, customer.customer_id) == Money.zero("USD")
