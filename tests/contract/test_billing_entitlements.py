"""Entitlements as billing gives them, read through StripeBilling from the billing sandbox
over real HTTP: plan from the items, status from the subscription, paid-through from the
latest paid invoice."""

from __future__ import annotations

from datetime import UTC, datetime

import stripe

from activities.accounts import billing_entitlements
from adapters.billing.stripe import StripeBilling
from sandbox.billing.driver import BillingDriver

AS_OF = datetime(2026, 11, 2, tzinfo=UTC)


async def invoiced_subscriber(
    driver: BillingDriver, sdk: stripe.StripeClient, key: str
) -> tuple[str, str, str]:
    """A customer on a Pro plan invoiced by e-mail (no card is charged); returns the
    customer, subscription and first invoice ids."""
    customer = await driver.create_customer(f"Entitled {key}", idempotency_key=f"{key}/c")
    product = await driver.create_product("Analytics Pro", idempotency_key=f"{key}/p")
    price = await driver.create_price(product.id, 9000, "usd", idempotency_key=f"{key}/price")
    subscription = await sdk.v1.subscriptions.create_async(
        {"customer": customer.id, "items": [{"price": price.id}],
         "collection_method": "send_invoice", "days_until_due": 30},
        {"idempotency_key": f"{key}/s"},
    )  # fmt: skip
    invoice_id = subscription.latest_invoice
    assert isinstance(invoice_id, str)
    return customer.id, subscription.id, invoice_id


async def test_an_unpaid_subscription_is_active_but_paid_through_nothing(
    stripe_billing: StripeBilling, billing_driver: BillingDriver, stripe_sdk: stripe.StripeClient
) -> None:
    customer_id, subscription_id, _ = await invoiced_subscriber(billing_driver, stripe_sdk, "ent1")

    entitlements = await billing_entitlements(stripe_billing, customer_id, [], AS_OF)

    assert entitlements.standing() == ("Analytics Pro", subscription_id, "active", None)
    assert entitlements.as_of == AS_OF


async def test_paying_the_invoice_makes_its_period_end_the_paid_through_date(
    stripe_billing: StripeBilling, billing_driver: BillingDriver, stripe_sdk: stripe.StripeClient
) -> None:
    customer_id, _, invoice_id = await invoiced_subscriber(billing_driver, stripe_sdk, "ent2")
    await billing_driver.pay(invoice_id, idempotency_key="ent2/pay", paid_out_of_band=True)
    invoice = await stripe_billing.get_invoice(invoice_id)
    period_end = max(line.period_end for line in invoice.lines if line.period_end)

    entitlements = await billing_entitlements(stripe_billing, customer_id, [], AS_OF)

    assert entitlements.paid_through == period_end


async def test_a_canceled_subscription_still_speaks_when_named(
    stripe_billing: StripeBilling, billing_driver: BillingDriver, stripe_sdk: stripe.StripeClient
) -> None:
    customer_id, subscription_id, invoice_id = await invoiced_subscriber(
        billing_driver, stripe_sdk, "ent3"
    )
    await billing_driver.pay(invoice_id, idempotency_key="ent3/pay", paid_out_of_band=True)
    await billing_driver.cancel(subscription_id)

    unnamed = await billing_entitlements(stripe_billing, customer_id, [], AS_OF)
    named = await billing_entitlements(stripe_billing, customer_id, [subscription_id], AS_OF)

    assert unnamed.status is None and unnamed.describe() == "no subscription"
    assert named.status == "canceled"
    assert named.paid_through is not None  # what was paid stays paid


async def test_another_customers_subscription_never_speaks_for_this_one(
    stripe_billing: StripeBilling, billing_driver: BillingDriver, stripe_sdk: stripe.StripeClient
) -> None:
    _, foreign_subscription, _ = await invoiced_subscriber(billing_driver, stripe_sdk, "ent4")
    lonely = await billing_driver.create_customer("Lonely Ltd", idempotency_key="ent4/lonely")

    entitlements = await billing_entitlements(
        stripe_billing, lonely.id, [foreign_subscription], AS_OF
    )

    assert entitlements.status is None
