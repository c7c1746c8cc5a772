"""Contract: BillingDriver, the customers' and billing admins' hands, against the sandbox."""

from __future__ import annotations

import pytest
import stripe

from sandbox.billing.driver import BillingDriver


async def test_customers_are_listed_newest_first_and_filtered_by_email(
    billing_driver: BillingDriver,
) -> None:
    first = await billing_driver.create_customer("One", email="a@example.test", idempotency_key="1")
    second = await billing_driver.create_customer(
        "Two", email="b@example.test", idempotency_key="2"
    )

    listed = [c.id async for c in billing_driver.customers()]
    by_email = [c.id async for c in billing_driver.customers(email="a@example.test")]

    assert listed == [second.id, first.id]
    assert by_email == [first.id]


async def test_balance_has_no_currency_until_billing_fixes_one(
    billing_driver: BillingDriver, stripe_sdk: stripe.StripeClient
) -> None:
    customer = await billing_driver.create_customer("Owed", idempotency_key="owed")
    assert await billing_driver.balance(customer.id) == (0, None)

    await stripe_sdk.v1.customers.balance_transactions.create_async(
        customer.id, {"amount": -1250, "currency": "eur"}
    )

    assert await billing_driver.balance(customer.id) == (-1250, "eur")


async def test_a_one_off_charge_is_an_open_invoice_that_can_be_written_off(
    billing_driver: BillingDriver,
) -> None:
    customer = await billing_driver.create_customer("Once", idempotency_key="once")

    invoice = await billing_driver.charge_once(customer.id, 4200, "usd", "Setup", key="once/1")
    again = await billing_driver.charge_once(customer.id, 4200, "usd", "Setup", key="once/1")
    written_off = await billing_driver.mark_uncollectible(str(invoice.id), idempotency_key="w/1")

    assert (invoice.status, invoice.total, invoice.currency) == ("open", 4200, "usd")
    assert again.id == invoice.id  # the same keys: the same invoice, no second charge
    assert written_off.status == "uncollectible"


async def test_change_plan_needs_a_change_and_a_single_item(billing_driver: BillingDriver) -> None:
    customer = await billing_driver.create_customer("Plans", idempotency_key="plans")
    product = await billing_driver.create_product("Seats", idempotency_key="seats")
    price = await billing_driver.create_price(product.id, 1000, "usd", idempotency_key="p")
    other = await billing_driver.create_price(product.id, 2000, "usd", idempotency_key="o")
    two_items = await billing_driver.client.v1.subscriptions.create_async(
        {
            "customer": customer.id,
            "items": [{"price": price.id}, {"price": other.id}],
            "collection_method": "send_invoice",
            "days_until_due": 30,
        }
    )

    with pytest.raises(ValueError, match="new price_id, a new quantity"):
        await billing_driver.change_plan(two_items.id, idempotency_key="none")
    with pytest.raises(ValueError, match="2 items"):
        await billing_driver.change_plan(two_items.id, quantity=3, idempotency_key="q")
    unchanged = await billing_driver.client.v1.subscriptions.retrieve_async(two_items.id)
    assert [i.quantity for i in unchanged["items"].data] == [1, 1]
