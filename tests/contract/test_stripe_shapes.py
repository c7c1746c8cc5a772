"""Contract: the billing sandbox answers only the shapes of the pinned Stripe API version.

Every object kind is made through the official SDK (via BillingDriver); every JSON object the
sandbox answers, and every event's `data.object`, may carry only the attributes the SDK's
typed model declares at the SDK's API version (nested objects included where the SDK types
them). A field Stripe removed would otherwise let the product depend on it unnoticed.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

import stripe
from stripe._object_classes import get_object_class

from adapters.billing.stripe import STRIPE_API_VERSION
from sandbox.billing._engine import API_VERSION as SANDBOX_API_VERSION
from sandbox.billing.driver import BillingDriver
from tests.fixtures.billing import BillingSandbox, WebhookReceiver

PINNED_API_VERSION = "2026-10-28.endive"


def declared(cls: type) -> set[str]:
    """The attributes the SDK's model declares (its annotations, without the SDK's own)."""
    names: set[str] = set()
    for klass in cls.__mro__:
        names.update(k for k in getattr(klass, "__annotations__", {}) if not k.startswith("_"))
    return names - {"OBJECT_NAME"}


def model_of(value: Mapping[str, Any]) -> type | None:
    kind = value.get("object")
    if not isinstance(kind, str) or kind == "list":
        return None
    return get_object_class(api_mode="V1", object_name=kind)


def undeclared(value: Any, cls: type | None, path: str) -> list[str]:
    """Paths of keys in `value` (and the objects nested in it) their model does not declare."""
    if isinstance(value, list):
        return [bad for item in value for bad in undeclared(item, cls, f"{path}[]")]
    if not isinstance(value, dict):
        return []
    if value.get("object") == "list":
        return undeclared(value.get("data") or [], None, f"{path}.data")
    cls = model_of(value) or cls
    if cls is None:
        return []
    names = declared(cls)
    inner: Mapping[str, type] = getattr(cls, "_inner_class_types", {})
    found = [f"{path}.{key} ({cls.__name__})" for key in value if key not in names]
    for key, nested in value.items():
        if key in names:
            found += undeclared(nested, inner.get(key), f"{path}.{key}")
    return found


def kinds_in(value: Any) -> set[str]:
    """The object kinds in an answer, nested ones included."""
    if isinstance(value, list):
        return {kind for item in value for kind in kinds_in(item)}
    if not isinstance(value, dict):
        return set()
    own = {value["object"]} if isinstance(value.get("object"), str) else set()
    return own | kinds_in(list(value.values()))


class RecordingHTTPXClient(stripe.HTTPXClient):
    """The SDK's HTTP client, keeping every successful JSON answer it receives."""

    answers: list[tuple[str, Any]]

    def __init__(self) -> None:
        super().__init__(timeout=10)
        self.answers = []

    async def request_async(
        self, method: str, url: str, headers: Any, post_data: Any = None
    ) -> Any:
        content, status, answer_headers = await super().request_async(
            method, url, headers, post_data
        )
        if status == 200:
            path = "/" + url.split("/", 3)[-1].split("?")[0]
            self.answers.append((f"{method.upper()} {path}", json.loads(content)))
        return content, status, answer_headers


def test_the_sandbox_the_adapter_and_the_sdk_speak_one_api_version() -> None:
    assert stripe.api_version == PINNED_API_VERSION
    assert SANDBOX_API_VERSION == PINNED_API_VERSION
    assert STRIPE_API_VERSION == PINNED_API_VERSION


async def test_every_object_the_sandbox_answers_is_declared_by_the_sdk(
    billing_sandbox: BillingSandbox, billing_webhook_receiver: WebhookReceiver
) -> None:
    http = RecordingHTTPXClient()
    client = stripe.StripeClient(
        billing_sandbox.api_key,
        base_addresses={"api": billing_sandbox.url},
        max_network_retries=0,
        http_client=http,
    )
    driver = BillingDriver(client)
    await client.v1.webhook_endpoints.create_async(
        {"url": billing_webhook_receiver.url, "enabled_events": ["*"]}
    )
    await client.v1.webhook_endpoints.list_async()

    customer = await driver.create_customer(
        "Shape Co", email="shape@example.test", idempotency_key="shape/c",
        address={"city": "Lyon", "country": "FR"}, metadata={"crm": "7"},
    )  # fmt: skip
    await driver.update_customer(customer.id, idempotency_key="shape/c2", description="new")
    product = await driver.create_product("Pro", idempotency_key="shape/p")
    basic = await driver.create_price(product.id, 3000, "usd", idempotency_key="shape/basic")
    pro = await driver.create_price(product.id, 9000, "usd", idempotency_key="shape/pro")
    await driver.create_price(product.id, 500, "usd", idempotency_key="shape/once", interval=None)
    subscription = await driver.subscribe(customer.id, basic.id, idempotency_key="shape/s")
    await driver.change_plan(subscription.id, price_id=pro.id, idempotency_key="shape/up")
    first = subscription.latest_invoice
    assert isinstance(first, str)
    await driver.pay(first, idempotency_key="shape/pay")
    await client.v1.credit_notes.create_async(
        {"invoice": first, "amount": 500, "reason": "order_change"},
        {"idempotency_key": "shape/cn"},
    )
    await driver.add_invoice_item(customer.id, 1200, "usd", "Setup", idempotency_key="shape/ii")
    draft = await driver.invoice_pending_items(customer.id, idempotency_key="shape/draft")
    assert draft.id is not None
    invoice = await driver.finalize(draft.id, idempotency_key="shape/final")
    await driver.void(invoice.id or "", idempotency_key="shape/void")
    await client.v1.customers.balance_transactions.create_async(
        customer.id, {"amount": -700, "currency": "usd", "description": "Goodwill"},
        {"idempotency_key": "shape/balance"},
    )  # fmt: skip
    await driver.cancel(subscription.id, prorate=True, invoice_now=True)
    # Money: tax rates, payment methods, card and partial payments, declines, refunds.
    vat = await driver.create_tax_rate(
        "VAT", "20", inclusive=True, idempotency_key="shape/vat", jurisdiction="FR", country="FR"
    )
    sales = await driver.create_tax_rate(
        "Sales", "8.875", inclusive=False, idempotency_key="shape/st"
    )
    await client.v1.tax_rates.update_async(sales.id, {"description": "NYC"})
    payer = await driver.create_customer("Payer", idempotency_key="shape/payer")
    card = await driver.attach_payment_method(payer.id, idempotency_key="shape/pm")
    eur = await driver.create_price(product.id, 1200, "eur", idempotency_key="shape/eur")
    taxed = await driver.subscribe(
        payer.id, eur.id, idempotency_key="shape/taxed", payment_method=str(card.id),
        default_tax_rates=[vat.id],
    )  # fmt: skip
    [payment] = await driver.invoice_payments(str(taxed.latest_invoice))
    intent = await client.v1.payment_intents.retrieve_async(str(payment.payment.payment_intent))
    charge_id = str(intent.latest_charge)
    await driver.refund(charge_id=charge_id, amount=200, idempotency_key="shape/refund")
    await client.v1.credit_notes.create_async(
        {"invoice": str(taxed.latest_invoice), "amount": 100, "refund_amount": 100}
    )
    failing = await driver.attach_payment_method(
        payer.id, "pm_card_chargeCustomerFail", idempotency_key="shape/fail", make_default=False
    )
    await driver.add_invoice_item(payer.id, 900, "eur", "Extra", idempotency_key="shape/x")
    extra = await driver.invoice_pending_items(payer.id, idempotency_key="shape/xd")
    extra = await driver.finalize(str(extra.id), idempotency_key="shape/xf")
    with contextlib.suppress(stripe.CardError):
        await driver.pay(
            str(extra.id), idempotency_key="shape/decl", payment_method=str(failing.id)
        )
    await driver.pay_part(str(extra.id), 400, idempotency_key="shape/part")
    await driver.pay(str(extra.id), idempotency_key="shape/oob", paid_out_of_band=True)
    await client.v1.tax_rates.list_async()
    await client.v1.payment_methods.retrieve_async(str(card.id))
    await client.v1.customers.payment_methods.list_async(payer.id)
    await client.v1.payment_intents.list_async({"customer": payer.id})
    await client.v1.charges.list_async({"customer": payer.id})
    await client.v1.refunds.list_async({"charge": charge_id})
    await client.v1.balance_transactions.list_async()
    await client.v1.invoice_payments.list_async({"invoice": str(extra.id)})
    await client.v1.invoice_payments.retrieve_async(str(payment.id))
    await client.v1.invoices.line_items.list_async(str(taxed.latest_invoice))
    # Reads of every kind, lists and the lines pages included.
    await client.v1.customers.retrieve_async(customer.id)
    await client.v1.products.retrieve_async(product.id)
    await client.v1.prices.list_async({"product": product.id})
    await client.v1.subscriptions.list_async({"customer": customer.id, "status": "all"})
    await client.v1.invoices.list_async({"customer": customer.id})
    await client.v1.invoices.line_items.list_async(first)
    await client.v1.invoice_items.list_async({"customer": customer.id})
    notes = await driver.credit_notes(first)
    await client.v1.credit_notes.line_items.list_async(notes[0].id)
    await client.v1.customers.balance_transactions.list_async(customer.id)
    await client.v1.events.list_async({"limit": 100})
    deleted = await driver.delete_customer(customer.id)
    assert deleted.deleted is True

    kinds = {kind for _, answer in http.answers for kind in kinds_in(answer)}
    assert {
        "customer", "product", "price", "subscription", "subscription_item", "invoice",
        "line_item", "invoiceitem", "credit_note", "credit_note_line_item",
        "customer_balance_transaction", "event", "webhook_endpoint", "tax_rate",
        "payment_method", "payment_intent", "charge", "refund", "balance_transaction",
        "invoice_payment",
    } <= kinds  # fmt: skip
    unmodelled = {k for k in kinds - {"list"} if model_of({"object": k}) is None}
    assert unmodelled == set()  # each kind is checked against its model, none skipped
    problems = {bad for call, answer in http.answers for bad in undeclared(answer, None, call)}
    assert not problems, "\n".join(sorted(problems))

    events = billing_sandbox.events()
    assert {e["type"] for e in events} >= {
        "customer.subscription.updated", "invoice.paid", "charge.succeeded", "charge.failed",
        "charge.refunded", "refund.created", "payment_intent.succeeded",
        "payment_intent.payment_failed", "invoice.payment_failed", "invoice_payment.paid",
        "payment_method.attached", "tax_rate.created",
    }  # fmt: skip
    problems = {bad for e in events for bad in undeclared(e["data"]["object"], None, e["type"])}
    assert not problems, "\n".join(sorted(problems))
    delivered = billing_webhook_receiver.wait_for(len(events))
    sent = [json.loads(w.body)["data"]["object"] for w in delivered]
    problems = {bad for obj in sent for bad in undeclared(obj, None, "webhook")}
    assert not problems, "\n".join(sorted(problems))


def test_the_check_finds_a_field_stripe_removed() -> None:
    """The check above is only as good as its power to fail."""
    invoice = {"object": "invoice", "id": "in_1", "subscription": "sub_1", "lines": {
        "object": "list", "data": [{"object": "line_item", "id": "il_1", "price": {}}],
    }}  # fmt: skip
    assert undeclared(invoice, None, "in_1") == [
        "in_1.subscription (Invoice)",
        "in_1.lines.data[].price (InvoiceLineItem)",
    ]
    subscription = {"object": "subscription", "current_period_end": 1, "items": {
        "object": "list", "data": [{"object": "subscription_item", "current_period_end": 1}],
    }}  # fmt: skip
    assert undeclared(subscription, None, "sub") == ["sub.current_period_end (Subscription)"]
    nested = {"object": "invoice", "parent": {"type": "x", "subscription": "sub_1"}}
    assert undeclared(nested, None, "in") == ["in.parent.subscription (Parent)"]
