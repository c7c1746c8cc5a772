"""Contract: StripeBilling's reading of money against the billing sandbox over HTTP, for what
the sandbox answers today (product ids on lines, amounts paid, open receivables per
customer). Tax rates, invoice payments, charges and refunds are read in
tests/unit/test_stripe_money.py against Stripe's shapes until the sandbox answers them."""

from __future__ import annotations

import stripe

from adapters.billing import StripeBilling
from canonical import Money
from canonical.reconciliation import Receivable


def subscribe(sdk: stripe.StripeClient, name: str, monthly_minor: int) -> tuple[str, str, str]:
    """A customer subscribed to one product at `monthly_minor` USD cents a month:
    (customer, product, price)."""
    customer = sdk.v1.customers.create(params={"name": name}).id
    product = sdk.v1.products.create(params={"name": f"{name} plan"}).id
    price = sdk.v1.prices.create(
        params={
            "product": product,
            "unit_amount": monthly_minor,
            "currency": "usd",
            "recurring": {"interval": "month"},
        }
    ).id
    # Invoiced, not charged: Stripe charges a subscription automatically only with a payment
    # method on file.
    sdk.v1.subscriptions.create(
        params={
            "customer": customer,
            "items": [{"price": price}],
            "collection_method": "send_invoice",
            "days_until_due": 30,
        }
    )
    return customer, product, price


def first_invoice(sdk: stripe.StripeClient, customer: str) -> str:
    return sdk.v1.invoices.list(params={"customer": customer}).data[0].id


async def test_invoice_lines_name_the_product_and_price_billed(
    stripe_sdk: stripe.StripeClient, stripe_billing: StripeBilling
) -> None:
    customer, product, price = subscribe(stripe_sdk, "Product Lines", 3000)

    invoice = await stripe_billing.get_invoice(first_invoice(stripe_sdk, customer))

    (line,) = invoice.lines
    assert (line.product_id, line.price_id) == (product, price)
    assert line.tax_lines == [] and invoice.tax_lines == []
    assert invoice.tax == Money.of("0", "USD")
    assert line.net_amount() == Money.of("30.00", "USD")


async def test_amount_paid_and_remaining_follow_the_payment(
    stripe_sdk: stripe.StripeClient, stripe_billing: StripeBilling
) -> None:
    customer, _, _ = subscribe(stripe_sdk, "Paid Amounts", 4500)
    invoice_id = first_invoice(stripe_sdk, customer)

    before = await stripe_billing.get_invoice(invoice_id)
    stripe_sdk.v1.invoices.pay(invoice_id, params={"paid_out_of_band": True})
    after = await stripe_billing.get_invoice(invoice_id)

    assert (before.amount_paid, before.amount_remaining) == (
        Money.of("0", "USD"), Money.of("45.00", "USD"))  # fmt: skip
    assert (after.status, after.amount_paid, after.amount_remaining) == (
        "paid", Money.of("45.00", "USD"), Money.of("0", "USD"))  # fmt: skip


async def test_open_receivables_page_over_customers_and_add_their_balance(
    stripe_sdk: stripe.StripeClient, stripe_billing: StripeBilling
) -> None:
    owing, _, _ = subscribe(stripe_sdk, "Owes Thirty", 3000)
    settled, _, _ = subscribe(stripe_sdk, "Settled", 2000)
    stripe_sdk.v1.invoices.pay(
        first_invoice(stripe_sdk, settled), params={"paid_out_of_band": True}
    )
    stripe_sdk.v1.customers.balance_transactions.create(
        owing, params={"amount": -500, "currency": "usd", "description": "goodwill"}
    )
    credited = stripe_sdk.v1.customers.create(params={"name": "Credit Only"}).id
    stripe_sdk.v1.customers.balance_transactions.create(
        credited, params={"amount": -700, "currency": "usd", "description": "goodwill"}
    )

    receivables: list[Receivable] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await stripe_billing.open_receivable_page(cursor, 1)
        receivables += page.receivables
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break

    assert pages == 3  # one customer a page
    assert sorted((r.customer_id, r.amount) for r in receivables) == sorted([
        (owing, Money.of("25.00", "USD")),  # 30.00 open less a 5.00 credit
        (credited, Money.of("-7.00", "USD")),  # billing owes it
    ])  # fmt: skip
