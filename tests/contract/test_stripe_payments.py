"""Contract: the billing sandbox takes payments and gives refunds as Stripe does, through the
official SDK (BillingDriver): payment methods, paying invoices (card, partial, declined, out
of band, refused), payment intents, charges, balance transactions, invoice payments and
refunds, with the events Stripe sends for them, signed."""

from __future__ import annotations

import json
from typing import Any

import pytest
import stripe

from sandbox.billing._payments import card_fee
from sandbox.billing.driver import BillingDriver
from tests.fixtures.billing import BillingSandbox, WebhookReceiver


async def shop(
    driver: BillingDriver, tag: str, *, currency: str = "usd", amount: int = 3000
) -> tuple[str, str]:
    """A customer and a monthly price of `amount` in `currency`."""
    customer = await driver.create_customer(f"Buyer {tag}", idempotency_key=f"{tag}/c")
    product = await driver.create_product(f"Plan {tag}", idempotency_key=f"{tag}/prod")
    price = await driver.create_price(product.id, amount, currency, idempotency_key=f"{tag}/p")
    return customer.id, price.id


async def open_invoice(driver: BillingDriver, customer_id: str, amount: int, tag: str) -> str:
    invoice = await driver.charge_once(customer_id, amount, "usd", "Setup", key=tag)
    assert invoice.status == "open" and invoice.id is not None
    return invoice.id


async def charge_of(driver: BillingDriver, payment: stripe.InvoicePayment) -> stripe.Charge:
    """The charge behind a card payment: Stripe's invoice payment names its intent."""
    intent_id = str(payment.payment.payment_intent)
    intent = await driver.client.v1.payment_intents.retrieve_async(intent_id)
    return await driver.client.v1.charges.retrieve_async(str(intent.latest_charge))


def types_of(sandbox: BillingSandbox, since: int = 0) -> list[str]:
    return [e["type"] for e in sandbox.events()[since:]]


# payment methods ------------------------------------------------------------------------


async def test_charge_automatically_without_a_payment_method_is_refused_and_nothing_is_made(
    billing_driver: BillingDriver, billing_sandbox: BillingSandbox
) -> None:
    customer_id, price_id = await shop(billing_driver, "nopm")
    before = len(billing_sandbox.events())

    with pytest.raises(stripe.InvalidRequestError) as refused:
        await billing_driver.subscribe(
            customer_id,
            price_id,
            idempotency_key="nopm/s",
            collection_method="charge_automatically",
        )

    assert refused.value.http_status == 400
    assert refused.value.code == "resource_missing"
    assert "no attached payment source or default payment method" in str(refused.value)
    listed = await billing_driver.client.v1.subscriptions.list_async({"customer": customer_id})
    invoices = await billing_driver.client.v1.invoices.list_async({"customer": customer_id})
    assert (listed.data, invoices.data) == ([], [])
    assert len(billing_sandbox.events()) == before  # not even the customer's currency moved


async def test_default_incomplete_creates_an_incomplete_subscription_without_charging(
    billing_driver: BillingDriver, billing_sandbox: BillingSandbox
) -> None:
    customer_id, price_id = await shop(billing_driver, "inc")

    sub = await billing_driver.subscribe(
        customer_id,
        price_id,
        idempotency_key="inc/s",
        collection_method="charge_automatically",
        payment_behavior="default_incomplete",
    )

    invoice = await billing_driver.client.v1.invoices.retrieve_async(str(sub.latest_invoice))
    assert sub.status == "incomplete"
    assert (invoice.status, invoice.attempted, invoice.amount_remaining) == ("open", False, 3000)
    [created] = billing_sandbox.events("customer.subscription.created")
    assert created["data"]["object"]["status"] == "incomplete"
    paid = await billing_driver.pay(str(invoice.id), idempotency_key="inc/pay")
    current = await billing_driver.client.v1.subscriptions.retrieve_async(sub.id)
    assert (paid.status, current.status) == ("paid", "active")


async def test_attaching_a_test_token_makes_a_new_method_listed_for_the_customer(
    billing_driver: BillingDriver,
) -> None:
    customer_id, _ = await shop(billing_driver, "attach")

    method = await billing_driver.attach_payment_method(customer_id, idempotency_key="attach/pm")

    assert method.id is not None and method.id.startswith("pm_") and method.id != "pm_card_visa"
    assert (method.customer, method.type) == (customer_id, "card")
    assert method.card is not None and (method.card.brand, method.card.last4) == ("visa", "4242")
    customer = await billing_driver.client.v1.customers.retrieve_async(customer_id)
    assert customer.invoice_settings is not None
    assert customer.invoice_settings.default_payment_method == method.id
    own = await billing_driver.client.v1.customers.payment_methods.list_async(customer_id)
    listed = await billing_driver.client.v1.payment_methods.list_async(
        {"customer": customer_id, "type": "card"}
    )
    assert [m.id for m in own.data] == [m.id for m in listed.data] == [method.id]


@pytest.mark.parametrize(
    ("token", "decline_code"),
    [
        ("pm_card_chargeDeclined", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ],
)
async def test_a_declined_card_is_refused_when_attached(
    billing_driver: BillingDriver, token: str, decline_code: str
) -> None:
    customer_id, _ = await shop(billing_driver, f"decl-{decline_code}")

    with pytest.raises(stripe.CardError) as declined:
        await billing_driver.attach_payment_method(
            customer_id, token, idempotency_key=f"decl/{token}"
        )

    assert declined.value.http_status == 402
    assert (declined.value.code, declined.value.error.decline_code) == (  # type: ignore[union-attr]
        "card_declined",
        decline_code,
    )
    own = await billing_driver.client.v1.customers.payment_methods.list_async(customer_id)
    assert own.data == []


async def test_a_detached_method_is_no_longer_the_default_and_cannot_come_back(
    billing_driver: BillingDriver, billing_sandbox: BillingSandbox
) -> None:
    customer_id, _ = await shop(billing_driver, "detach")
    method = await billing_driver.attach_payment_method(customer_id, idempotency_key="detach/pm")
    client = billing_driver.client.v1

    detached = await client.payment_methods.detach_async(str(method.id))
    with pytest.raises(stripe.InvalidRequestError) as again:
        await client.payment_methods.attach_async(str(method.id), {"customer": customer_id})

    customer = await client.customers.retrieve_async(customer_id)
    assert detached.customer is None
    assert customer.invoice_settings is not None
    assert customer.invoice_settings.default_payment_method is None
    assert "may not be used again" in str(again.value)
    types = types_of(billing_sandbox)
    assert types.count("payment_method.attached") == 1
    assert types.count("payment_method.detached") == 1


async def test_a_default_payment_method_must_belong_to_the_customer(
    billing_driver: BillingDriver,
) -> None:
    mine, _ = await shop(billing_driver, "own1")
    theirs, _ = await shop(billing_driver, "own2")
    method = await billing_driver.attach_payment_method(theirs, idempotency_key="own/pm")

    with pytest.raises(stripe.InvalidRequestError) as refused:
        await billing_driver.set_default_payment_method(
            mine, str(method.id), idempotency_key="own/default"
        )

    assert refused.value.code == "resource_missing"
    assert refused.value.param == "invoice_settings[default_payment_method]"


# paying invoices ------------------------------------------------------------------------


async def test_a_subscription_with_a_card_pays_its_first_invoice_with_stripes_objects(
    billing_driver: BillingDriver, billing_sandbox: BillingSandbox
) -> None:
    customer_id, price_id = await shop(billing_driver, "card")
    method = await billing_driver.attach_payment_method(customer_id, idempotency_key="card/pm")
    before = len(billing_sandbox.events())

    sub = await billing_driver.subscribe(
        customer_id, price_id, idempotency_key="card/s", payment_method=str(method.id)
    )

    client = billing_driver.client.v1
    invoice = await client.invoices.retrieve_async(str(sub.latest_invoice))
    assert sub.status == "active" and sub.collection_method == "charge_automatically"
    assert (invoice.status, invoice.amount_paid, invoice.amount_remaining) == ("paid", 3000, 0)
    assert (invoice.attempted, invoice.attempt_count) == (True, 1)
    [payment] = await billing_driver.invoice_payments(str(invoice.id))
    assert payment.id.startswith("inpay_")
    assert (payment.amount_paid, payment.status, payment.currency) == (3000, "paid", "usd")
    assert payment.payment.type == "payment_intent"
    assert payment.payment.charge is None  # Stripe names the intent, not its charge
    intent = await client.payment_intents.retrieve_async(str(payment.payment.payment_intent))
    charge = await client.charges.retrieve_async(str(intent.latest_charge))
    assert (intent.status, intent.amount_received, intent.latest_charge) == (
        "succeeded",
        3000,
        charge.id,
    )
    assert (charge.status, charge.paid, charge.amount, charge.customer) == (
        "succeeded",
        True,
        3000,
        customer_id,
    )
    assert (charge.payment_intent, charge.payment_method) == (intent.id, method.id)
    txn = await client.balance_transactions.retrieve_async(str(charge.balance_transaction))
    assert (txn.amount, txn.currency, txn.exchange_rate, txn.type) == (3000, "usd", None, "charge")
    assert (txn.fee, txn.net, txn.source) == (117, 3000 - 117, charge.id)  # 2.9 % + 30 c
    assert txn.fee_details[0].type == "stripe_fee"
    assert types_of(billing_sandbox, before) == [
        "customer.updated",
        "customer.subscription.created",
        "invoice.created",
        "invoice.finalized",
        "payment_intent.created",
        "charge.succeeded",
        "payment_intent.succeeded",
        "invoice_payment.paid",
        "invoice.paid",
        "invoice.payment_succeeded",
    ]


async def test_a_declined_first_invoice_leaves_the_subscription_incomplete_then_past_due(
    billing_driver: BillingDriver, billing_sandbox: BillingSandbox
) -> None:
    customer_id, price_id = await shop(billing_driver, "fail")
    method = await billing_driver.attach_payment_method(
        customer_id, "pm_card_chargeCustomerFail", idempotency_key="fail/pm"
    )
    before = len(billing_sandbox.events())

    sub = await billing_driver.subscribe(
        customer_id, price_id, idempotency_key="fail/s", payment_method=str(method.id)
    )

    client = billing_driver.client.v1
    first = await client.invoices.retrieve_async(str(sub.latest_invoice))
    current = await client.subscriptions.retrieve_async(sub.id)
    assert current.status == "incomplete"
    assert (first.status, first.amount_paid, first.attempt_count) == ("open", 0, 1)
    assert await billing_driver.invoice_payments(str(first.id)) == []
    charges = await client.charges.list_async({"customer": customer_id})
    [charge] = charges.data
    assert (charge.status, charge.failure_code, charge.balance_transaction) == (
        "failed",
        "card_declined",
        None,
    )
    assert charge.outcome is not None and charge.outcome.type == "issuer_declined"
    intent = await client.payment_intents.retrieve_async(str(charge.payment_intent))
    assert intent.status == "requires_payment_method"
    assert intent.last_payment_error is not None
    assert intent.last_payment_error.decline_code == "generic_decline"
    assert {"charge.failed", "payment_intent.payment_failed", "invoice.payment_failed"} <= set(
        types_of(billing_sandbox, before)
    )

    # Paid with a good card the subscription becomes active; a declined renewal: past_due.
    await billing_driver.pay(str(first.id), idempotency_key="fail/pay")
    assert (await client.subscriptions.retrieve_async(sub.id)).status == "active"
    renewal = billing_sandbox.advance_subscription(sub.id)
    assert renewal["invoice"]["status"] == "open"
    assert renewal["subscription"]["status"] == "past_due"
    await billing_driver.pay(renewal["invoice"]["id"], idempotency_key="fail/pay2")
    assert (await client.subscriptions.retrieve_async(sub.id)).status == "active"


async def test_a_renewal_with_a_good_card_is_charged_when_billed(
    billing_driver: BillingDriver, billing_sandbox: BillingSandbox
) -> None:
    customer_id, price_id = await shop(billing_driver, "renew")
    method = await billing_driver.attach_payment_method(customer_id, idempotency_key="renew/pm")
    sub = await billing_driver.subscribe(
        customer_id, price_id, idempotency_key="renew/s", payment_method=str(method.id)
    )

    renewal = billing_sandbox.advance_subscription(sub.id)

    assert renewal["invoice"]["status"] == "paid"
    assert renewal["invoice"]["billing_reason"] == "subscription_cycle"
    assert renewal["subscription"]["status"] == "active"
    assert len(await billing_driver.invoice_payments(renewal["invoice"]["id"])) == 1


async def test_a_renewal_with_nothing_to_charge_fails_and_falls_due(
    billing_driver: BillingDriver, billing_sandbox: BillingSandbox
) -> None:
    customer_id, price_id = await shop(billing_driver, "gone")
    method = await billing_driver.attach_payment_method(customer_id, idempotency_key="gone/pm")
    sub = await billing_driver.subscribe(
        customer_id,
        price_id,
        idempotency_key="gone/s",
        collection_method="charge_automatically",
    )
    await billing_driver.client.v1.payment_methods.detach_async(str(method.id))
    before = len(billing_sandbox.events())

    renewal = billing_sandbox.advance_subscription(sub.id)

    assert renewal["subscription"]["status"] == "past_due"
    assert (renewal["invoice"]["status"], renewal["invoice"]["attempt_count"]) == ("open", 1)
    assert "invoice.payment_failed" in types_of(billing_sandbox, before)


async def test_paying_with_a_declined_card_answers_402_and_keeps_the_failed_attempt(
    billing_driver: BillingDriver, billing_sandbox: BillingSandbox
) -> None:
    customer_id, _ = await shop(billing_driver, "pay402")
    invoice_id = await open_invoice(billing_driver, customer_id, 2500, "pay402/inv")

    with pytest.raises(stripe.CardError) as declined:
        await billing_driver.pay(
            invoice_id, idempotency_key="pay402/pay", payment_method="pm_card_chargeDeclined"
        )

    error = declined.value.error
    assert error is not None and (error.code, error.decline_code) == (
        "card_declined",
        "generic_decline",
    )
    assert error.charge is not None
    charge = await billing_driver.client.v1.charges.retrieve_async(error.charge)
    invoice = await billing_driver.client.v1.invoices.retrieve_async(invoice_id)
    assert charge.status == "failed"
    assert (invoice.status, invoice.amount_remaining, invoice.attempt_count) == ("open", 2500, 1)
    assert "invoice.payment_failed" in types_of(billing_sandbox)
    # The same key answers the same 402 again, and charges nothing more.
    with pytest.raises(stripe.CardError):
        await billing_driver.pay(
            invoice_id, idempotency_key="pay402/pay", payment_method="pm_card_chargeDeclined"
        )
    charges = await billing_driver.client.v1.charges.list_async({"customer": customer_id})
    assert len(charges.data) == 1


async def test_paying_with_nothing_to_charge_is_refused_unless_paid_out_of_band(
    billing_driver: BillingDriver,
) -> None:
    customer_id, _ = await shop(billing_driver, "oob")
    invoice_id = await open_invoice(billing_driver, customer_id, 1800, "oob/inv")

    with pytest.raises(stripe.InvalidRequestError) as refused:
        await billing_driver.pay(invoice_id, idempotency_key="oob/p1", payment_method=None)
    unchanged = await billing_driver.client.v1.invoices.retrieve_async(invoice_id)
    paid = await billing_driver.pay(invoice_id, idempotency_key="oob/p2", paid_out_of_band=True)

    assert refused.value.code == "resource_missing"
    assert (unchanged.status, unchanged.amount_paid) == ("open", 0)
    assert (paid.status, paid.amount_paid, paid.amount_remaining) == ("paid", 1800, 0)
    [payment] = await billing_driver.invoice_payments(invoice_id)
    assert payment.payment.type == "payment_record"
    assert payment.payment.payment_record is not None
    assert payment.payment.payment_intent is None and payment.payment.charge is None
    charges = await billing_driver.client.v1.charges.list_async({"customer": customer_id})
    assert charges.data == []


async def test_partial_payments_are_attached_intents_and_overpaying_is_refused(
    billing_driver: BillingDriver, billing_sandbox: BillingSandbox
) -> None:
    customer_id, _ = await shop(billing_driver, "part")
    invoice_id = await open_invoice(billing_driver, customer_id, 3000, "part/inv")

    first = await billing_driver.pay_part(invoice_id, 1000, idempotency_key="part/1")
    with pytest.raises(stripe.InvalidRequestError) as too_much:
        await billing_driver.pay_part(invoice_id, 2500, idempotency_key="part/2")
    after_refusal = await billing_driver.client.v1.invoices.retrieve_async(invoice_id)
    last = await billing_driver.pay_part(invoice_id, 2000, idempotency_key="part/3")

    assert (first.status, first.amount_paid, first.amount_remaining) == ("open", 1000, 2000)
    assert too_much.value.code == "amount_too_large"
    assert (after_refusal.amount_paid, after_refusal.amount_remaining) == (1000, 2000)
    assert (last.status, last.amount_paid, last.amount_remaining) == ("paid", 3000, 0)
    payments = await billing_driver.invoice_payments(invoice_id)
    assert [p.amount_paid for p in payments] == [1000, 2000]
    assert [p.is_default for p in payments] == [True, False]
    # The refused intent's money was taken; it stays unattached (as in Stripe) and refundable.
    intents = await billing_driver.client.v1.payment_intents.list_async({"customer": customer_id})
    attached = {p.payment.payment_intent for p in payments}
    [loose] = [i for i in intents.data if i.id not in attached]
    assert (loose.amount, loose.status) == (2500, "succeeded")
    with pytest.raises(stripe.InvalidRequestError) as twice:
        await billing_driver.client.v1.invoices.attach_payment_async(
            invoice_id, {"payment_intent": str(next(iter(attached)))}
        )
    assert twice.value.code in {"invoice_not_editable", "payment_intent_unexpected_state"}
    assert types_of(billing_sandbox).count("invoice_payment.paid") == 2


@pytest.mark.parametrize(
    ("amount", "currency", "message"),
    [
        (49, "usd", "Amount must be at least 0.50 USD"),
        (29, "gbp", "Amount must be at least 0.30 GBP"),
        (49, "jpy", "Amount must be at least 50 JPY"),
        (400, "krw", "Amount must convert to at least 50 cents"),
    ],
)
async def test_a_payment_below_stripes_minimum_charge_is_refused(
    billing_driver: BillingDriver, amount: int, currency: str, message: str
) -> None:
    intent: Any = {
        "amount": amount,
        "currency": currency,
        "payment_method": "pm_card_visa",
        "confirm": True,
    }

    with pytest.raises(stripe.InvalidRequestError) as refused:
        await billing_driver.client.v1.payment_intents.create_async(intent)

    assert (refused.value.code, refused.value.param) == ("amount_too_small", "amount")
    assert message in str(refused.value)
    assert (await billing_driver.client.v1.charges.list_async()).data == []


async def test_an_invoice_with_a_partial_payment_cannot_be_voided(
    billing_driver: BillingDriver,
) -> None:
    customer_id, _ = await shop(billing_driver, "novoid")
    invoice_id = await open_invoice(billing_driver, customer_id, 3000, "novoid/inv")
    await billing_driver.pay_part(invoice_id, 1000, idempotency_key="novoid/part")

    with pytest.raises(stripe.InvalidRequestError) as refused:
        await billing_driver.void(invoice_id, idempotency_key="novoid/void")

    invoice = await billing_driver.client.v1.invoices.retrieve_async(invoice_id)
    assert refused.value.code == "invoice_not_editable"
    assert (invoice.status, invoice.amount_paid, invoice.amount_remaining) == ("open", 1000, 2000)


async def test_a_charge_in_another_currency_settles_in_usd_at_the_stated_rate(
    billing_driver: BillingDriver,
) -> None:
    customer_id, price_id = await shop(billing_driver, "eur", currency="eur", amount=2000)
    method = await billing_driver.attach_payment_method(customer_id, idempotency_key="eur/pm")
    sub = await billing_driver.subscribe(
        customer_id, price_id, idempotency_key="eur/s", payment_method=str(method.id)
    )

    [payment] = await billing_driver.invoice_payments(str(sub.latest_invoice))
    charge = await charge_of(billing_driver, payment)
    txn = await billing_driver.client.v1.balance_transactions.retrieve_async(
        str(charge.balance_transaction)
    )

    assert (charge.amount, charge.currency) == (2000, "eur")
    assert (txn.amount, txn.currency, txn.exchange_rate) == (2200, "usd", 1.1)
    assert (txn.fee, txn.net) == (card_fee(2200), 2200 - card_fee(2200))


async def test_a_jpy_charge_is_in_whole_yen_and_settles_in_cents(
    billing_driver: BillingDriver,
) -> None:
    customer_id, price_id = await shop(billing_driver, "jpy", currency="jpy", amount=1500)
    method = await billing_driver.attach_payment_method(customer_id, idempotency_key="jpy/pm")
    sub = await billing_driver.subscribe(
        customer_id, price_id, idempotency_key="jpy/s", payment_method=str(method.id)
    )

    [payment] = await billing_driver.invoice_payments(str(sub.latest_invoice))
    charge = await charge_of(billing_driver, payment)
    txn = await billing_driver.client.v1.balance_transactions.retrieve_async(
        str(charge.balance_transaction)
    )

    assert (charge.amount, charge.currency) == (1500, "jpy")
    assert (txn.amount, txn.currency) == (1050, "usd")  # 1500 yen x 0.0070 = 10.50 USD


# refunds --------------------------------------------------------------------------------


async def paid_charge(driver: BillingDriver, tag: str, amount: int = 5000) -> tuple[str, str]:
    """(charge id, customer id) of an invoice of `amount` paid by card."""
    customer_id, _ = await shop(driver, tag)
    invoice_id = await open_invoice(driver, customer_id, amount, f"{tag}/inv")
    await driver.pay(invoice_id, idempotency_key=f"{tag}/pay")
    [payment] = await driver.invoice_payments(invoice_id)
    return str((await charge_of(driver, payment)).id), customer_id


async def test_partial_then_full_refunds_give_back_what_remains_and_no_more(
    billing_driver: BillingDriver, billing_sandbox: BillingSandbox
) -> None:
    charge_id, _ = await paid_charge(billing_driver, "ref")
    before = len(billing_sandbox.events())

    part = await billing_driver.refund(charge_id=charge_id, amount=1500, idempotency_key="ref/1")
    with pytest.raises(stripe.InvalidRequestError) as too_large:
        await billing_driver.refund(charge_id=charge_id, amount=3501, idempotency_key="ref/2")
    rest = await billing_driver.refund(charge_id=charge_id, idempotency_key="ref/3")
    with pytest.raises(stripe.InvalidRequestError) as already:
        await billing_driver.refund(charge_id=charge_id, amount=1, idempotency_key="ref/4")

    assert (part.amount, part.status, part.charge) == (1500, "succeeded", charge_id)
    assert (too_large.value.code, too_large.value.param) == ("amount_too_large", "amount")
    assert "greater than unrefunded amount" in str(too_large.value)
    assert rest.amount == 3500
    assert already.value.code == "charge_already_refunded"
    charge = await billing_driver.client.v1.charges.retrieve_async(charge_id)
    assert (charge.amount_refunded, charge.refunded) == (5000, True)
    txn = await billing_driver.client.v1.balance_transactions.retrieve_async(
        str(part.balance_transaction)
    )
    assert (txn.amount, txn.fee, txn.net, txn.type, txn.source) == (
        -1500,
        0,
        -1500,
        "refund",
        part.id,
    )
    listed = await billing_driver.client.v1.refunds.list_async({"charge": charge_id})
    assert [r.id for r in listed.data] == [rest.id, part.id]  # newest first
    events = billing_sandbox.events()[before:]
    assert [e["type"] for e in events] == [
        "refund.created",
        "charge.refunded",
        "refund.created",
        "charge.refunded",
    ]
    refunded = [e["data"]["object"] for e in events if e["type"] == "charge.refunded"]
    assert [(c["object"], c["amount_refunded"]) for c in refunded] == [
        ("charge", 1500),
        ("charge", 5000),
    ]


async def test_a_refund_by_payment_intent_refunds_its_charge(billing_driver: BillingDriver) -> None:
    charge_id, _ = await paid_charge(billing_driver, "refpi")
    charge = await billing_driver.client.v1.charges.retrieve_async(charge_id)

    refund = await billing_driver.refund(
        payment_intent_id=str(charge.payment_intent), amount=100, idempotency_key="refpi/1"
    )

    assert (refund.charge, refund.payment_intent, refund.amount) == (
        charge_id,
        charge.payment_intent,
        100,
    )


async def test_a_credit_note_with_a_refund_amount_refunds_the_invoice_charge(
    billing_driver: BillingDriver,
) -> None:
    customer_id, _ = await shop(billing_driver, "cnref")
    invoice_id = await open_invoice(billing_driver, customer_id, 4000, "cnref/inv")
    await billing_driver.pay(invoice_id, idempotency_key="cnref/pay")

    note = await billing_driver.client.v1.credit_notes.create_async(
        {"invoice": invoice_id, "amount": 1000, "refund_amount": 1000}
    )

    [entry] = note.refunds
    refund = await billing_driver.client.v1.refunds.retrieve_async(str(entry.refund))
    charge = await billing_driver.client.v1.charges.retrieve_async(str(refund.charge))
    assert (entry.type, entry.amount_refunded) == ("refund", 1000)
    assert (refund.amount, charge.amount_refunded) == (1000, 1000)
    assert note.customer_balance_transaction is None  # nothing went to the balance

    # Linking an existing refund instead: the note names it and no new money moves.
    loose = await billing_driver.refund(
        charge_id=str(refund.charge), amount=500, idempotency_key="cnref/loose"
    )
    linked = await billing_driver.client.v1.credit_notes.create_async(
        {"invoice": invoice_id, "amount": 500, "refunds": [{"refund": str(loose.id)}]}
    )
    assert [r.refund for r in linked.refunds] == [loose.id]
    charge = await billing_driver.client.v1.charges.retrieve_async(str(refund.charge))
    assert charge.amount_refunded == 1500
    # The linked refund is the note's refund: nothing goes to the customer's balance.
    assert linked.customer_balance_transaction is None
    assert (await billing_driver.balance(customer_id))[0] == 0


async def test_a_credit_note_naming_an_earlier_refund_links_it_and_refunds_nothing_more(
    billing_driver: BillingDriver,
) -> None:
    customer_id, _ = await shop(billing_driver, "relink")
    invoice_id = await open_invoice(billing_driver, customer_id, 4000, "relink/inv")
    await billing_driver.pay(invoice_id, idempotency_key="relink/pay")
    [payment] = await billing_driver.invoice_payments(invoice_id)
    charge_id = str((await charge_of(billing_driver, payment)).id)
    earlier = await billing_driver.refund(
        charge_id=charge_id, amount=1500, idempotency_key="relink/refund"
    )
    client = billing_driver.client.v1

    note = await client.credit_notes.create_async(
        {"invoice": invoice_id, "amount": 1000, "refund_amount": 1000,
         "refunds": [{"refund": str(earlier.id), "amount_refunded": 1000}]}
    )  # fmt: skip
    with pytest.raises(stripe.InvalidRequestError) as beyond:
        await client.credit_notes.create_async(
            {"invoice": invoice_id, "amount": 1000,
             "refunds": [{"refund": str(earlier.id), "amount_refunded": 1000}]}
        )  # fmt: skip
    with pytest.raises(stripe.InvalidRequestError) as unequal:
        await client.credit_notes.create_async(
            {"invoice": invoice_id, "amount": 500, "credit_amount": 500,
             "refunds": [{"refund": str(earlier.id)}]}
        )  # fmt: skip
    with pytest.raises(stripe.InvalidRequestError) as legacy:
        await client.credit_notes.create_async(
            {"invoice": invoice_id, "amount": 500, "refund": str(earlier.id)}
        )
    rest = await client.credit_notes.create_async(
        {"invoice": invoice_id, "amount": 500, "refunds": [{"refund": str(earlier.id)}]}
    )

    assert [(r.refund, r.amount_refunded) for r in note.refunds] == [(earlier.id, 1000)]
    assert [(r.refund, r.amount_refunded) for r in rest.refunds] == [(earlier.id, 500)]
    assert (note.post_payment_amount, note.customer_balance_transaction) == (1000, None)
    # No refund was made for either note: the charge gave back the earlier refund only.
    charge = await client.charges.retrieve_async(charge_id)
    listed = await client.refunds.list_async({"charge": charge_id})
    assert (charge.amount_refunded, [r.id for r in listed.data]) == (1500, [earlier.id])
    assert (await billing_driver.balance(customer_id))[0] == 0
    # A refund is linked up to its amount; the note's split must add up; the single
    # `refund` of older API versions is unknown at ours.
    assert (beyond.value.code, beyond.value.param) == (
        "amount_too_large", "refunds[0][amount_refunded]")  # fmt: skip
    assert unequal.value.param == "credit_amount"
    assert legacy.value.param == "refund"


# lists and events -----------------------------------------------------------------------


async def test_money_lists_page_by_cursor_and_filter_by_created(
    billing_driver: BillingDriver, billing_sandbox: BillingSandbox
) -> None:
    customer_id, _ = await shop(billing_driver, "pages")
    ids = []
    for n in range(3):
        invoice_id = await open_invoice(billing_driver, customer_id, 1000 + n, f"pages/{n}")
        await billing_driver.pay(invoice_id, idempotency_key=f"pages/pay/{n}")
        ids.append(invoice_id)
        billing_sandbox.shift_clock(3600 * (n + 1))
    client = billing_driver.client.v1

    first = await client.charges.list_async({"customer": customer_id, "limit": 2})
    second = await client.charges.list_async(
        {"customer": customer_id, "limit": 2, "starting_after": str(first.data[-1].id)}
    )
    every = [c async for c in first.auto_paging_iter()]
    payments = await client.invoice_payments.list_async({"limit": 100})
    oldest = min(p.created for p in payments.data)
    later = await client.invoice_payments.list_async({"created": {"gt": oldest}, "limit": 100})

    assert [c.amount for c in first.data] == [1002, 1001] and first.has_more
    assert [c.amount for c in second.data] == [1000] and not second.has_more
    assert len(every) == 3
    assert sorted(p.amount_paid or 0 for p in later.data) == [1001, 1002]
    for invoice_id in ids:
        one = await client.invoice_payments.list_async({"invoice": invoice_id})
        assert [p.invoice for p in one.data] == [invoice_id]


async def test_payment_events_are_delivered_signed_with_their_objects(
    billing_sandbox: BillingSandbox, billing_webhook_receiver: WebhookReceiver
) -> None:
    endpoint = billing_sandbox.add_webhook_endpoint(billing_webhook_receiver.url)
    driver = billing_sandbox.driver()
    async with driver:
        charge_id, _ = await paid_charge(driver, "signed")
        await driver.refund(charge_id=charge_id, amount=200, idempotency_key="signed/r")
    wanted = {
        "payment_intent.succeeded": "payment_intent",
        "charge.succeeded": "charge",
        "invoice_payment.paid": "invoice_payment",
        "invoice.paid": "invoice",
        "refund.created": "refund",
        "charge.refunded": "charge",
    }
    count = len(billing_sandbox.events())

    received = billing_webhook_receiver.wait_for(count)

    seen: dict[str, Any] = {}
    for webhook in received:
        event = stripe.Webhook.construct_event(
            webhook.body.decode(), webhook.headers["stripe-signature"], endpoint.secret
        )
        seen[event["type"]] = json.loads(webhook.body)["data"]["object"]["object"]
    assert {t: seen.get(t) for t in wanted} == wanted


async def test_a_credit_note_that_refunded_money_cannot_be_voided(
    billing_driver: BillingDriver,
) -> None:
    customer_id, _ = await shop(billing_driver, "cnvoid")
    invoice_id = await open_invoice(billing_driver, customer_id, 4000, "cnvoid/inv")
    await billing_driver.pay(invoice_id, idempotency_key="cnvoid/pay")
    note = await billing_driver.client.v1.credit_notes.create_async(
        {"invoice": invoice_id, "amount": 1000, "refund_amount": 1000}
    )

    with pytest.raises(stripe.InvalidRequestError) as refused:
        await billing_driver.client.v1.credit_notes.void_credit_note_async(str(note.id))

    kept = await billing_driver.client.v1.credit_notes.retrieve_async(str(note.id))
    assert refused.value.code == "credit_note_not_voidable"
    assert kept.status == "issued"


async def test_an_incomplete_subscription_expires_and_its_first_invoice_is_voided(
    billing_driver: BillingDriver, billing_sandbox: BillingSandbox
) -> None:
    customer_id, price_id = await shop(billing_driver, "expire")
    sub = await billing_driver.subscribe(
        customer_id,
        price_id,
        idempotency_key="expire/s",
        collection_method="charge_automatically",
        payment_behavior="default_incomplete",
    )

    advanced = billing_sandbox.advance_subscription(sub.id)

    invoice = await billing_driver.client.v1.invoices.retrieve_async(str(sub.latest_invoice))
    assert (advanced["subscription"]["status"], advanced["invoice"]) == ("incomplete_expired", None)
    assert invoice.status == "void"
    with billing_sandbox.http() as http:
        again = http.post(f"/_sandbox/subscriptions/{sub.id}/advance")
    assert again.status_code == 400 and "incomplete_expired" in again.json()["error"]["message"]


async def test_an_upgrade_with_error_if_incomplete_and_a_declined_card_changes_nothing(
    billing_driver: BillingDriver,
) -> None:
    customer_id, price_id = await shop(billing_driver, "eii")
    good = await billing_driver.attach_payment_method(customer_id, idempotency_key="eii/pm")
    sub = await billing_driver.subscribe(
        customer_id, price_id, idempotency_key="eii/s", payment_method=str(good.id)
    )
    failing = await billing_driver.attach_payment_method(
        customer_id, "pm_card_chargeCustomerFail", idempotency_key="eii/fail", make_default=False
    )
    client = billing_driver.client.v1
    await client.subscriptions.update_async(sub.id, {"default_payment_method": str(failing.id)})
    item = sub["items"].data[0]
    change: Any = {
        "items": [{"id": item.id, "quantity": 3}],
        "proration_behavior": "always_invoice",
        "payment_behavior": "error_if_incomplete",
    }

    with pytest.raises(stripe.CardError):
        await client.subscriptions.update_async(sub.id, change)
    change["payment_behavior"] = "allow_incomplete"
    allowed = await client.subscriptions.update_async(sub.id, change)

    kept = [
        i
        async for i in (
            await client.invoices.list_async({"customer": customer_id})
        ).auto_paging_iter()
    ]
    assert len(kept) == 2  # the first and the allowed upgrade's: the refused one left nothing
    assert allowed.status == "past_due"
    assert allowed["items"].data[0].quantity == 3


# what the adapter's money reading relies on ----------------------------------------------


async def test_a_product_takes_the_id_its_creator_chooses_once(
    billing_driver: BillingDriver,
) -> None:
    # Stripe's product create: "You can optionally override this ID"; a taken id is refused.
    params: Any = {"id": "prod_contract_chosen", "name": "Chosen"}
    made = await billing_driver.client.v1.products.create_async(params)
    assert made.id == "prod_contract_chosen"

    with pytest.raises(stripe.InvalidRequestError) as refused:
        await billing_driver.client.v1.products.create_async({**params, "name": "Again"})
    assert refused.value.code == "resource_already_exists"
    kept = await billing_driver.client.v1.products.retrieve_async("prod_contract_chosen")
    assert kept.name == "Chosen"


async def test_invoice_payments_are_found_by_the_payment_intent_that_made_them(
    billing_driver: BillingDriver,
) -> None:
    customer_id, _ = await shop(billing_driver, "bypi")
    invoice_id = await open_invoice(billing_driver, customer_id, 2500, "bypi/inv")
    await billing_driver.pay(invoice_id, idempotency_key="bypi/pay")
    [payment] = (
        await billing_driver.client.v1.invoice_payments.list_async({"invoice": invoice_id})
    ).data
    intent_id = str(payment.payment.payment_intent)

    found = await billing_driver.client.v1.invoice_payments.list_async(
        {"payment": {"type": "payment_intent", "payment_intent": intent_id}}
    )
    others = await billing_driver.client.v1.invoice_payments.list_async(
        {"payment": {"type": "payment_intent", "payment_intent": "pi_none"}}
    )

    assert [p.id for p in found.data] == [payment.id]
    assert others.data == []
    with pytest.raises(stripe.InvalidRequestError):  # Stripe requires payment[type]
        await billing_driver.client.v1.invoice_payments.list_async(
            {"payment": {"payment_intent": intent_id}}  # type: ignore[arg-type]
        )
