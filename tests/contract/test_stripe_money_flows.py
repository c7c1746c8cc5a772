"""Contract: StripeBilling reading taxed, paid and refunded invoices from the billing sandbox
over HTTP, everything set up with plain SDK calls as a billing admin and Stripe's test card
would (tax rates, `pm_card_visa`, refunds, a credit note that refunds, a payment out of band).

The sandbox answers tax rates and payments from the billing sandbox's money release on; until
then each test is skipped, saying so (the probe is one `GET /v1/tax_rates`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import stripe

from adapters.billing import StripeBilling
from canonical import Money
from starters.local.catalog import PRODUCTS, TAX_RATES, ensure_billing_catalog
from tests.fixtures.billing import BillingSandbox


@pytest.fixture
def sdk(billing_sandbox: BillingSandbox) -> stripe.StripeClient:
    client = billing_sandbox.sdk()
    try:
        client.v1.tax_rates.list(params={"limit": 1})
    except stripe.InvalidRequestError as err:
        if err.http_status == 404:
            pytest.skip("the billing sandbox does not answer tax rates and payments yet")
        raise
    return client


def eur_customer_paying_by_card(sdk: stripe.StripeClient, name: str) -> tuple[str, str, str]:
    """A customer subscribed in EUR to 100.00 a month plus 20 % VAT, charged to Stripe's test
    Visa: (customer, product, exclusive VAT rate)."""
    customer = sdk.v1.customers.create(params={"name": name}).id
    card = sdk.v1.payment_methods.attach("pm_card_visa", params={"customer": customer}).id
    vat = sdk.v1.tax_rates.create(
        params={
            "display_name": "VAT",
            "percentage": 20.0,
            "inclusive": False,
            "jurisdiction": "EU",
            "country": "FR",
        }
    ).id
    product = sdk.v1.products.create(params={"name": "Platform"}).id
    price = sdk.v1.prices.create(
        params={
            "product": product,
            "unit_amount": 10000,
            "currency": "eur",
            "recurring": {"interval": "month"},
        }
    ).id
    sdk.v1.subscriptions.create(
        params={
            "customer": customer,
            "default_payment_method": card,
            "items": [{"price": price, "tax_rates": [vat]}],
        }
    )
    return customer, product, vat


def only_invoice(sdk: stripe.StripeClient, customer: str) -> str:
    (invoice,) = sdk.v1.invoices.list(params={"customer": customer}).data
    return invoice.id


async def test_a_taxed_invoice_paid_by_card_reads_with_its_tax_and_settlement(
    sdk: stripe.StripeClient, stripe_billing: StripeBilling
) -> None:
    customer, product, vat = eur_customer_paying_by_card(sdk, "Taxed Card")
    invoice_id = only_invoice(sdk, customer)

    invoice = await stripe_billing.get_invoice(invoice_id)
    (payment,) = await stripe_billing.invoice_payments(invoice_id)

    (line,) = invoice.lines
    assert line.product_id == product
    assert [(t.rate_id, t.percentage, t.inclusive, t.amount) for t in invoice.tax_lines] == [
        (vat, 20, False, Money.of("20.00", "EUR"))
    ]
    assert (invoice.tax, invoice.total, invoice.amount_paid) == (
        Money.of("20.00", "EUR"), Money.of("120.00", "EUR"), Money.of("120.00", "EUR"))  # fmt: skip
    assert (payment.invoice_id, payment.customer_id, payment.status, payment.method) == (
        invoice_id, customer, "paid", "card")  # fmt: skip
    assert payment.amount == Money.of("120.00", "EUR")
    assert payment.charge_id and payment.payment_intent_id
    settlement = payment.settlement
    assert settlement is not None
    assert settlement.net.amount == settlement.amount.amount - settlement.fee.amount


async def test_refunds_know_the_payment_they_give_back_and_the_credit_note_that_made_them(
    sdk: stripe.StripeClient, stripe_billing: StripeBilling
) -> None:
    customer, _, _ = eur_customer_paying_by_card(sdk, "Refunded")
    invoice_id = only_invoice(sdk, customer)
    (payment,) = await stripe_billing.invoice_payments(invoice_id)
    assert payment.charge_id is not None
    plain = sdk.v1.refunds.create(params={"charge": payment.charge_id, "amount": 1000})
    note = sdk.v1.credit_notes.create(
        params={"invoice": invoice_id, "amount": 1200, "refund_amount": 1200}
    )
    by_note = str(note.refunds[0].refund)

    refunds = await stripe_billing.charge_refunds(payment.charge_id)
    one = await stripe_billing.get_refund(plain.id)

    assert [r.refund_id for r in refunds] == [plain.id, by_note]  # oldest first
    assert [r.credit_note_id for r in refunds] == [None, note.id]
    assert {(r.payment_id, r.invoice_id, r.customer_id) for r in refunds} == {
        (payment.payment_id, invoice_id, customer)
    }
    assert (one.amount, one.status) == (Money.of("10.00", "EUR"), "succeeded")


async def test_a_credit_note_naming_an_earlier_refund_and_one_out_of_band_read_as_such(
    sdk: stripe.StripeClient, stripe_billing: StripeBilling
) -> None:
    customer, _, _ = eur_customer_paying_by_card(sdk, "Linked later")
    invoice_id = only_invoice(sdk, customer)
    (payment,) = await stripe_billing.invoice_payments(invoice_id)
    assert payment.charge_id is not None
    earlier = sdk.v1.refunds.create(params={"charge": payment.charge_id, "amount": 1200})
    before = await stripe_billing.get_refund(earlier.id)
    linked = sdk.v1.credit_notes.create(
        params={"invoice": invoice_id, "amount": 1200, "refunds": [{"refund": earlier.id}]}
    )
    wired = sdk.v1.credit_notes.create(
        params={"invoice": invoice_id, "amount": 600, "out_of_band_amount": 600}
    )

    note = await stripe_billing.get_credit_note(linked.id)
    after = await stripe_billing.get_refund(earlier.id)
    outside = await stripe_billing.get_credit_note(wired.id)

    assert before.credit_note_id is None and after.credit_note_id == linked.id
    assert [(r.refund_id, r.amount) for r in note.refunds] == [
        (earlier.id, Money.of("12.00", "EUR"))
    ]
    assert note.out_of_band_amount is None
    assert (outside.refunds, outside.out_of_band_amount) == ([], Money.of("6.00", "EUR"))


async def test_a_payment_out_of_band_reads_as_such(
    sdk: stripe.StripeClient, stripe_billing: StripeBilling
) -> None:
    customer = sdk.v1.customers.create(params={"name": "Wire"}).id
    sdk.v1.invoice_items.create(
        params={"customer": customer, "amount": 5000, "currency": "gbp", "description": "Setup"}
    )
    draft = sdk.v1.invoices.create(
        params={
            "customer": customer,
            "pending_invoice_items_behavior": "include",
            "collection_method": "send_invoice",
            "days_until_due": 30,
        }
    )
    invoice_id = sdk.v1.invoices.finalize_invoice(draft.id).id
    sdk.v1.invoices.pay(invoice_id, params={"paid_out_of_band": True})

    (payment,) = await stripe_billing.invoice_payments(invoice_id)
    now = datetime.now(UTC)
    page = await stripe_billing.payment_page(now - timedelta(hours=1), now + timedelta(hours=1),
                                             None, 100)  # fmt: skip

    assert (payment.method, payment.amount, payment.settlement) == (
        "out_of_band", Money.of("50.00", "GBP"), None)  # fmt: skip
    assert payment.payment_id in [p.payment_id for p in page.payments]


async def test_the_catalog_names_tax_rates_and_the_currencies_prices_charge_in(
    sdk: stripe.StripeClient, stripe_billing: StripeBilling
) -> None:
    _, product, vat = eur_customer_paying_by_card(sdk, "Catalogued")

    entries = {(e.kind, e.key) for e in await stripe_billing.catalog()}

    assert {("product", product), ("tax_rate", vat), ("currency", "EUR")} <= entries


@pytest.fixture
async def sdk_async(billing_sandbox: BillingSandbox) -> AsyncIterator[stripe.StripeClient]:
    async with billing_sandbox.driver() as driver:
        yield driver.client


async def test_the_local_catalog_is_made_once_with_chosen_product_ids(
    sdk: stripe.StripeClient, sdk_async: stripe.StripeClient
) -> None:
    first = await ensure_billing_catalog(sdk_async)
    again = await ensure_billing_catalog(sdk_async)

    assert first == again
    assert {p.id for p in sdk.v1.products.list(params={"limit": 100}).data} >= {
        p.product_id for p in PRODUCTS
    }
    rates = sdk.v1.tax_rates.list(params={"limit": 100}).data
    assert len(rates) == len(TAX_RATES)
