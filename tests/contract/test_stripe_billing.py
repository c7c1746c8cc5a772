"""Contract: StripeBilling (the BillingSystem port over the official stripe SDK) and the
billing sandbox, over HTTP. Data is set up as a billing admin would, with plain SDK calls."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import stripe

from adapters.billing import StripeBilling
from adapters.billing.stripe import IDEMPOTENCY_KEY_METADATA, INTENDED_CURRENCY_KEY
from adapters.billing.webhook_signature import verify_stripe
from adapters.errors import (
    AuthenticationError,
    NotFoundError,
    RateLimitedError,
    RejectedError,
    TransientError,
    ValidationError,
)
from adapters.ports import BillingSystem
from canonical import Money, PostalAddress
from tests.fixtures.billing import BillingSandbox, WebhookReceiver, wait_until
from tests.fixtures.servers import free_port

ADDRESS = PostalAddress(line1="1 Rue de la Paix", city="Paris", postal_code="75002", country="FR")


def usd(amount: str) -> Money:
    return Money.of(amount, "USD")


def sdk_customer(sdk: stripe.StripeClient, name: str, key: str | None = None) -> str:
    """A customer created in billing; its id."""
    email = f"{name.lower().replace(' ', '.')}@example.test"
    options: stripe.RequestOptions = {"idempotency_key": key} if key else {}
    return sdk.v1.customers.create(params={"name": name, "email": email}, options=options).id


def sdk_subscription(sdk: stripe.StripeClient, name: str, monthly_minor: int = 3000) -> str:
    """A customer subscribed to "Pro" for `monthly_minor` USD cents a month; the
    subscription id (billing invoices the first month at once)."""
    customer_id = sdk_customer(sdk, name)
    product = sdk.v1.products.create(params={"name": "Pro"})
    price = sdk.v1.prices.create(
        params={
            "product": product.id,
            "unit_amount": monthly_minor,
            "currency": "usd",
            "recurring": {"interval": "month"},
        }
    )
    subscription = sdk.v1.subscriptions.create(
        params={
            "customer": customer_id,
            "items": [{"price": price.id, "quantity": 1}],
            "collection_method": "send_invoice",
            "days_until_due": 30,
        }
    )
    return subscription.id


def sdk_open_invoice(sdk: stripe.StripeClient, customer_id: str, line_minor: list[int]) -> str:
    """A finalized one-off invoice with one line per amount; its id."""
    for number, amount in enumerate(line_minor, start=1):
        sdk.v1.invoice_items.create(
            params={
                "customer": customer_id,
                "amount": amount,
                "currency": "usd",
                "description": f"Service {number}",
            }
        )
    draft = sdk.v1.invoices.create(
        params={"customer": customer_id, "pending_invoice_items_behavior": "include"}
    )
    return sdk.v1.invoices.finalize_invoice(draft.id).id


# customers --------------------------------------------------------------------------------


async def test_customer_reads_back_as_canonical_customer(
    stripe_billing: StripeBilling, stripe_sdk: stripe.StripeClient
) -> None:
    port: BillingSystem = stripe_billing
    created = stripe_sdk.v1.customers.create(
        params={
            "name": "Acme GmbH",
            "email": "billing@acme.test",
            "address": {"line1": "1 Rue de la Paix", "city": "Paris", "postal_code": "75002",
                        "country": "FR"},
            "metadata": {"segment": "smb"},
        }
    )  # fmt: skip

    fetched = await port.get_customer(created.id)

    assert fetched.customer_id == created.id
    assert fetched.name == "Acme GmbH"
    assert fetched.email == "billing@acme.test"
    assert fetched.address == ADDRESS
    assert fetched.currency is None  # Stripe fixes it with the first subscription
    assert fetched.deleted is False


async def test_currency_set_by_billing_is_mapped_uppercase(
    stripe_billing: StripeBilling, billing_sandbox: BillingSandbox, stripe_sdk: stripe.StripeClient
) -> None:
    customer_id = sdk_customer(stripe_sdk, "Yen Co")
    async with httpx.AsyncClient(base_url=billing_sandbox.url) as control:
        # What billing does itself when the first JPY subscription is created.
        patched = await control.post(f"/_sandbox/objects/{customer_id}", json={"currency": "jpy"})
    assert patched.status_code == 200

    assert (await stripe_billing.get_customer(customer_id)).currency == "JPY"


async def test_currency_intended_in_metadata_is_reported_until_billing_fixes_one(
    stripe_billing: StripeBilling, billing_sandbox: BillingSandbox, stripe_sdk: stripe.StripeClient
) -> None:
    customer_id = stripe_sdk.v1.customers.create(
        params={"name": "Euro Co", "metadata": {INTENDED_CURRENCY_KEY: "eur"}}
    ).id
    intended = await stripe_billing.get_customer(customer_id)
    async with billing_sandbox.async_http() as client:
        # Billing fixes its own currency (e.g. the first subscription was priced in USD).
        await client.post(f"/_sandbox/objects/{customer_id}", json={"currency": "usd"})

    assert intended.currency == "EUR"
    assert (await stripe_billing.get_customer(customer_id)).currency == "USD"


async def test_deleted_customer_reads_as_deleted(
    stripe_billing: StripeBilling, stripe_sdk: stripe.StripeClient
) -> None:
    customer_id = sdk_customer(stripe_sdk, "Gone")
    stripe_sdk.v1.customers.delete(customer_id)

    after = await stripe_billing.get_customer(customer_id)

    assert after.deleted is True and after.customer_id == customer_id


# subscriptions and invoices ---------------------------------------------------------------


async def test_subscription_and_its_first_invoice_read_back_from_pinned_version_fields(
    stripe_billing: StripeBilling, stripe_sdk: stripe.StripeClient
) -> None:
    subscription_id = sdk_subscription(stripe_sdk, "Pinned Co")
    raw_subscription = stripe_sdk.v1.subscriptions.retrieve(subscription_id)
    [raw_item] = raw_subscription["items"].data
    invoice_id = str(raw_subscription.latest_invoice)

    subscription = await stripe_billing.get_subscription(subscription_id)
    active = await stripe_billing.active_subscription(subscription.customer_id)
    invoice = await stripe_billing.get_invoice(invoice_id)
    listed = [i async for i in stripe_billing.list_invoices(subscription_id=subscription_id)]

    assert subscription.status == "active" and subscription.currency == "USD"
    assert [(i.description, i.quantity, i.unit_amount) for i in subscription.items] == [
        ("Pro", 1, usd("30.00"))
    ]
    assert subscription.current_period_start == datetime.fromtimestamp(
        raw_item.current_period_start, UTC
    )
    assert subscription.current_period_end == datetime.fromtimestamp(
        raw_item.current_period_end, UTC
    )
    assert active == subscription
    assert invoice.subscription_id == subscription_id  # from parent.subscription_details
    assert invoice.status == "open" and invoice.billing_reason == "subscription_create"
    assert (invoice.subtotal, invoice.tax, invoice.total) == (usd("30.00"), usd("0"), usd("30.00"))
    assert invoice.amount_remaining == usd("30.00")
    [line] = invoice.lines
    assert line.price_id == raw_item.price.id and line.proration is False
    assert (line.quantity, line.unit_amount, line.amount) == (1, usd("30.00"), usd("30.00"))
    assert [i.document_id for i in listed] == [invoice_id]


async def test_canceled_subscription_is_no_active_subscription(
    stripe_billing: StripeBilling, stripe_sdk: stripe.StripeClient
) -> None:
    subscription_id = sdk_subscription(stripe_sdk, "Leaving Co")
    stripe_sdk.v1.subscriptions.cancel(subscription_id)

    subscription = await stripe_billing.get_subscription(subscription_id)

    assert subscription.status == "canceled"
    assert await stripe_billing.active_subscription(subscription.customer_id) is None


async def test_invoice_lines_past_the_embedded_first_page_are_all_read(
    stripe_billing: StripeBilling, stripe_sdk: stripe.StripeClient
) -> None:
    customer_id = sdk_customer(stripe_sdk, "Many Lines")
    amounts = [100 * n for n in range(1, 24)]
    invoice_id = sdk_open_invoice(stripe_sdk, customer_id, amounts)
    embedded = stripe_sdk.v1.invoices.retrieve(invoice_id).lines

    invoice = await stripe_billing.get_invoice(invoice_id)
    [page_copy] = (await stripe_billing.invoice_page(
        datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1), None, 10
    )).documents  # fmt: skip

    assert embedded.has_more and len(embedded.data) < len(amounts)
    assert sorted(line.amount.to_minor() for line in invoice.lines) == amounts
    assert len({line.line_id for line in invoice.lines}) == len(amounts)
    assert invoice.subscription_id is None and invoice.total == usd("276.00")
    assert page_copy == invoice


# credit notes -----------------------------------------------------------------------------


async def test_credit_note_is_created_with_the_key_found_by_it_and_voided(
    stripe_billing: StripeBilling, stripe_sdk: stripe.StripeClient, billing_sandbox: BillingSandbox
) -> None:
    subscription_id = sdk_subscription(stripe_sdk, "Credited Co")
    invoice_id = str(stripe_sdk.v1.subscriptions.retrieve(subscription_id).latest_invoice)
    key = "credit/7/evt_1/credit_note"

    note = await stripe_billing.create_credit_note(
        invoice_id, usd("10.00"), "Outage credit", "product_unsatisfactory", key,
        metadata={"case_id": "7"},
    )  # fmt: skip
    found = await stripe_billing.find_credit_note(invoice_id, key)
    not_ours = await stripe_billing.find_credit_note(invoice_id, "credit/8/evt_2/credit_note")
    voided = await stripe_billing.void_credit_note(note.document_id, idempotency_key=f"{key}/void")

    assert note.kind == "credit_note" and note.status == "issued"
    assert (note.invoice_id, note.subscription_id) == (invoice_id, subscription_id)
    assert (note.total, note.billing_reason) == (usd("10.00"), "product_unsatisfactory")
    assert [(line.description, line.amount) for line in note.lines] == [
        ("Outage credit", usd("10.00"))
    ]
    assert found == note and not_ours is None
    assert voided.status == "void" and voided.voided_at is not None
    assert await stripe_billing.get_credit_note(note.document_id) == voided
    raw = stripe_sdk.v1.credit_notes.retrieve(note.document_id)
    assert raw.metadata is not None
    assert raw.metadata.to_dict() == {"case_id": "7", IDEMPOTENCY_KEY_METADATA: key}
    [created] = billing_sandbox.events("credit_note.created")
    [void] = billing_sandbox.events("credit_note.voided")
    assert created["request"]["idempotency_key"] == key  # the workflow's, not the SDK's
    assert void["request"]["idempotency_key"] == f"{key}/void"


async def test_credit_note_billing_refuses_is_a_rejection_not_a_malformed_request(
    stripe_billing: StripeBilling, stripe_sdk: stripe.StripeClient
) -> None:
    subscription_id = sdk_subscription(stripe_sdk, "Small Invoice Co")
    invoice_id = str(stripe_sdk.v1.subscriptions.retrieve(subscription_id).latest_invoice)

    with pytest.raises(RejectedError) as refused:
        await stripe_billing.create_credit_note(
            invoice_id, usd("31.00"), "More than billed", None, "credit/too-much"
        )

    assert type(refused.value) is RejectedError and not refused.value.retryable
    assert refused.value.status == 400 and refused.value.remote_code
    assert [n async for n in _credit_notes(stripe_sdk, invoice_id)] == []


async def _credit_notes(sdk: stripe.StripeClient, invoice_id: str):  # type: ignore[no-untyped-def]
    for note in (await sdk.v1.credit_notes.list_async(params={"invoice": invoice_id})).data:
        yield note.id


async def test_credit_in_another_currency_is_refused_before_writing(
    stripe_billing: StripeBilling, stripe_sdk: stripe.StripeClient
) -> None:
    subscription_id = sdk_subscription(stripe_sdk, "Dollar Co")
    invoice_id = str(stripe_sdk.v1.subscriptions.retrieve(subscription_id).latest_invoice)

    with pytest.raises(ValueError, match="is in USD, the credit in EUR"):
        await stripe_billing.create_credit_note(
            invoice_id, Money.of("10.00", "EUR"), "Wrong currency", None, "credit/eur"
        )

    assert [n async for n in _credit_notes(stripe_sdk, invoice_id)] == []


# customer balance and idempotency ---------------------------------------------------------


async def test_balance_credit_and_its_reversal_read_back_on_the_balance_page(
    stripe_billing: StripeBilling, stripe_sdk: stripe.StripeClient
) -> None:
    customer_id = sdk_customer(stripe_sdk, "Balance Co")
    since = datetime.now(UTC) - timedelta(hours=1)

    credit = await stripe_billing.create_balance_credit(
        customer_id, usd("12.50"), "Support credit", "credit/9/apply", metadata={"case_id": "9"}
    )
    reversal = await stripe_billing.reverse_balance_credit(
        customer_id, usd("12.50"), "Credit taken back", "credit/9/reverse",
        metadata={"reverses": credit.transaction_id},
    )  # fmt: skip
    page = await stripe_billing.balance_credit_page(
        customer_id, since, datetime.now(UTC) + timedelta(hours=1), None, 10
    )

    assert (credit.amount, credit.ending_balance) == (usd("-12.50"), usd("-12.50"))
    assert (reversal.amount, reversal.ending_balance) == (usd("12.50"), usd("0.00"))
    assert page.transactions == [credit, reversal] and page.next_cursor is None
    assert page.transactions[0].metadata == {"case_id": "9"}
    assert stripe_sdk.v1.customers.retrieve(customer_id).balance == 0


async def test_same_idempotency_key_and_params_replays_the_first_write(
    stripe_billing: StripeBilling, stripe_sdk: stripe.StripeClient
) -> None:
    customer_id = sdk_customer(stripe_sdk, "Once Only")

    first = await stripe_billing.create_balance_credit(customer_id, usd("5.00"), "c", "once")
    second = await stripe_billing.create_balance_credit(customer_id, usd("5.00"), "c", "once")

    assert second == first
    assert stripe_sdk.v1.customers.retrieve(customer_id).balance == -500


async def test_same_idempotency_key_with_other_params_is_rejected(
    stripe_billing: StripeBilling, stripe_sdk: stripe.StripeClient
) -> None:
    customer_id = sdk_customer(stripe_sdk, "Reused Key")
    await stripe_billing.create_balance_credit(customer_id, usd("5.00"), "c", "reused-key")

    with pytest.raises(ValidationError) as rejected:
        await stripe_billing.create_balance_credit(customer_id, usd("6.00"), "c", "reused-key")

    assert rejected.value.status == 400
    assert rejected.value.remote_code == "idempotency_error"
    assert rejected.value.retryable is False


async def test_idempotency_key_is_forgotten_after_24_hours(
    stripe_billing: StripeBilling, billing_sandbox: BillingSandbox, stripe_sdk: stripe.StripeClient
) -> None:
    customer_id = sdk_customer(stripe_sdk, "Day One")
    first = await stripe_billing.create_balance_credit(customer_id, usd("1.00"), "c", "daily")
    billing_sandbox.shift_clock(24 * 3600 + 1)

    later = await stripe_billing.create_balance_credit(customer_id, usd("1.00"), "c", "daily")

    assert later.transaction_id != first.transaction_id


async def test_write_refused_by_a_fault_is_not_remembered_by_its_idempotency_key(
    stripe_billing: StripeBilling, billing_sandbox: BillingSandbox, stripe_sdk: stripe.StripeClient
) -> None:
    customer_id = sdk_customer(stripe_sdk, "Retry Me")
    billing_sandbox.inject_fault(503, method="POST")
    with pytest.raises(TransientError):
        await stripe_billing.create_balance_credit(customer_id, usd("2.00"), "c", "k-retry")

    credit = await stripe_billing.create_balance_credit(customer_id, usd("2.00"), "c", "k-retry")

    assert credit.amount == usd("-2.00")
    assert stripe_sdk.v1.customers.retrieve(customer_id).balance == -200


@pytest.mark.parametrize("key", ["", "   "])
async def test_write_without_the_workflows_idempotency_key_is_refused_before_writing(
    stripe_billing: StripeBilling, stripe_sdk: stripe.StripeClient, key: str
) -> None:
    customer_id = sdk_customer(stripe_sdk, "Keyless")

    with pytest.raises(ValueError, match="idempotency key"):
        await stripe_billing.create_balance_credit(customer_id, usd("2.00"), "c", key)

    assert stripe_sdk.v1.customers.retrieve(customer_id).balance == 0


# errors -----------------------------------------------------------------------------------


async def test_rate_limit_becomes_rate_limited_error_with_retry_after(
    stripe_billing: StripeBilling, billing_sandbox: BillingSandbox, stripe_sdk: stripe.StripeClient
) -> None:
    customer_id = sdk_customer(stripe_sdk, "Busy")
    billing_sandbox.inject_fault(429, count=1, retry_after=7)

    with pytest.raises(RateLimitedError) as limited:
        await stripe_billing.get_customer(customer_id)

    assert limited.value.retry_after == 7.0
    assert limited.value.status == 429 and limited.value.remote_code == "rate_limit"
    assert (await stripe_billing.get_customer(customer_id)).customer_id == customer_id


async def test_event_id_that_would_leave_its_path_is_not_found_and_billing_is_not_asked(
    stripe_billing: StripeBilling, billing_sandbox: BillingSandbox
) -> None:
    billing_sandbox.inject_fault(503, count=1)  # any request that went out would meet it

    for event_id in (".", "..", "evt_1/../../customers"):
        with pytest.raises(NotFoundError):
            await stripe_billing.get_event(event_id)

    with pytest.raises(TransientError):  # the fault is still waiting: nothing was sent
        await stripe_billing.get_event("evt_unknown")


# events -----------------------------------------------------------------------------------


async def test_events_record_the_customer_lifecycle_and_read_back_as_billing_sent_them(
    stripe_billing: StripeBilling, billing_sandbox: BillingSandbox, stripe_sdk: stripe.StripeClient
) -> None:
    customer_id = sdk_customer(stripe_sdk, "Evented", key="account/evented/create")
    stripe_sdk.v1.customers.update(
        customer_id, params={"name": "Evented Renamed"}, options={"idempotency_key": "rename"}
    )
    stripe_sdk.v1.customers.update(  # no change: Stripe records no event
        customer_id, params={"name": "Evented Renamed"}, options={"idempotency_key": "noop"}
    )
    stripe_sdk.v1.customers.delete(customer_id)

    events = billing_sandbox.events()

    assert [e["type"] for e in events] == [
        "customer.created",
        "customer.updated",
        "customer.deleted",
    ]
    assert all(e["id"].startswith("evt_") and e["object"] == "event" for e in events)
    assert all(e["data"]["object"]["id"] == customer_id for e in events)
    assert events[0]["request"]["idempotency_key"] == "account/evented/create"
    assert events[0]["request"]["id"].startswith("req_")
    assert events[1]["data"]["previous_attributes"] == {"name": "Evented"}
    assert events[0]["created"] <= events[1]["created"] <= events[2]["created"]
    assert [await stripe_billing.get_event(e["id"]) for e in events] == events
    listed = [
        e async for e in stripe_billing.list_events(created_from=datetime.fromtimestamp(0, UTC))
    ]
    assert listed == events


# the sandbox as Stripe -----------------------------------------------------------------


def test_list_pages_follow_stripe_cursor_semantics(billing_sandbox: BillingSandbox) -> None:
    with billing_sandbox.http() as client:
        ids = [client.post("/v1/customers", data={"name": f"c{i}"}).json()["id"] for i in range(5)]
        newest_first = list(reversed(ids))

        first = client.get("/v1/customers", params={"limit": 2}).json()
        second = client.get(
            "/v1/customers", params={"limit": 2, "starting_after": first["data"][-1]["id"]}
        ).json()
        third = client.get(
            "/v1/customers", params={"limit": 2, "starting_after": second["data"][-1]["id"]}
        ).json()
        back = client.get(
            "/v1/customers", params={"limit": 2, "ending_before": second["data"][0]["id"]}
        ).json()
        bad_cursor = client.get("/v1/customers", params={"starting_after": "cus_nope"})
        bad_limit = client.get("/v1/customers", params={"limit": 101})

    assert first["object"] == "list" and first["url"] == "/v1/customers"
    assert [c["id"] for c in first["data"]] == newest_first[:2] and first["has_more"]
    assert [c["id"] for c in second["data"]] == newest_first[2:4] and second["has_more"]
    assert [c["id"] for c in third["data"]] == newest_first[4:] and not third["has_more"]
    assert [c["id"] for c in back["data"]] == newest_first[:2] and not back["has_more"]
    assert bad_cursor.status_code == 400
    assert bad_cursor.json()["error"]["param"] == "starting_after"
    assert bad_limit.status_code == 400


def test_form_bracket_notation_and_stripe_strictness(billing_sandbox: BillingSandbox) -> None:
    with billing_sandbox.http() as client:
        ok = client.post(
            "/v1/customers",
            content=(
                "name=Nested&metadata[tier]=gold&address[line1]=1+High+St&address[country]=GB"
                "&preferred_locales[0]=en&preferred_locales[1]=fr&expand[]=test_clock"
            ),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        currency = client.post("/v1/customers", data={"currency": "usd"})
        unknown_nested = client.post("/v1/customers", data={"address[planet]": "Mars"})
        cleared = client.post(f"/v1/customers/{ok.json()['id']}", data={"address": ""})

    body = ok.json()
    assert ok.status_code == 200
    assert body["object"] == "customer" and body["livemode"] is False
    assert isinstance(body["created"], int)
    assert body["metadata"] == {"tier": "gold"}
    assert body["address"]["line1"] == "1 High St" and body["address"]["city"] is None
    assert body["preferred_locales"] == ["en", "fr"]
    # Stripe refuses `currency` on customers; a lenient sandbox would hide that bug.
    assert currency.status_code == 400
    assert currency.json()["error"]["code"] == "parameter_unknown"
    assert unknown_nested.json()["error"]["param"] == "address[planet]"
    assert cleared.json()["address"] is None


def test_official_stripe_sdk_works_against_the_sandbox(billing_sandbox: BillingSandbox) -> None:
    client = stripe.StripeClient(
        billing_sandbox.api_key,
        base_addresses={"api": billing_sandbox.url},
        max_network_retries=0,
    )

    created = client.v1.customers.create(
        params={
            "name": "SDK Ltd",
            "email": "sdk@example.test",
            "metadata": {"source": "sdk"},
            "address": {"line1": "2 SDK Way", "country": "GB"},
        },
        options={"idempotency_key": "sdk-create-1"},
    )
    fetched = client.v1.customers.retrieve(created.id)
    updated = client.v1.customers.update(created.id, params={"name": "SDK Limited"})
    listed = [c.id for c in client.v1.customers.list(params={"limit": 1}).auto_paging_iter()]
    deleted = client.v1.customers.delete(created.id)
    events = client.v1.events.list(params={"type": "customer.*"})

    assert isinstance(fetched, stripe.Customer)
    assert fetched.id == created.id and fetched.name == "SDK Ltd"
    assert fetched.metadata["source"] == "sdk"
    assert fetched.address is not None and fetched.address.line1 == "2 SDK Way"
    assert updated.name == "SDK Limited"
    assert listed == [created.id]
    assert deleted.deleted is True
    assert [e.type for e in reversed(events.data)] == [
        "customer.created",
        "customer.updated",
        "customer.deleted",
    ]
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.customers.retrieve("cus_missing")
    assert missing.value.http_status == 404 and missing.value.code == "resource_missing"


def test_official_stripe_sdk_sees_wrong_key_as_authentication_error(
    billing_sandbox: BillingSandbox,
) -> None:
    client = stripe.StripeClient("sk_test_wrong", base_addresses={"api": billing_sandbox.url})
    with pytest.raises(stripe.AuthenticationError):
        client.v1.customers.list()


def test_only_requests_with_an_idempotency_key_are_replayed(
    billing_sandbox: BillingSandbox,
) -> None:
    with billing_sandbox.http() as client:
        first = client.post("/v1/customers", data={"name": "A"}, headers={"Idempotency-Key": "k"})
        again = client.post("/v1/customers", data={"name": "A"}, headers={"Idempotency-Key": "k"})
        unkeyed_1 = client.post("/v1/customers", data={"name": "A"})
        unkeyed_2 = client.post("/v1/customers", data={"name": "A"})

    assert first.json()["id"] == again.json()["id"]
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Original-Request"] == first.headers["Request-Id"]
    assert unkeyed_1.json()["id"] != unkeyed_2.json()["id"]


def test_idempotency_keys_are_scoped_per_api_key(
    billing_sandbox_factory: Callable[..., BillingSandbox],
) -> None:
    sandbox = billing_sandbox_factory(other_api_keys=("sk_test_second_account",))
    headers = {"Idempotency-Key": "shared-key"}
    with httpx.Client(base_url=sandbox.url) as client:
        one = client.post(
            "/v1/customers", data={"name": "A"}, headers=headers, auth=(sandbox.api_key, "")
        )
        other = client.post(
            "/v1/customers",
            data={"name": "A"},
            headers=headers,
            auth=("sk_test_second_account", ""),
        )

    assert one.status_code == other.status_code == 200
    assert one.json()["id"] != other.json()["id"]
    assert "Idempotent-Replayed" not in other.headers


async def test_unreachable_billing_is_transient() -> None:
    billing = StripeBilling(f"http://127.0.0.1:{free_port()}", "sk_test_x", timeout=2.0)
    try:
        with pytest.raises(TransientError, match="cannot reach billing"):
            await billing.get_customer("cus_123")
    finally:
        await billing.aclose()


async def test_unknown_customer_is_not_found(stripe_billing: StripeBilling) -> None:
    with pytest.raises(NotFoundError) as missing:
        await stripe_billing.get_customer("cus_doesnotexist")

    assert missing.value.status == 404
    assert missing.value.remote_code == "resource_missing"
    assert "cus_doesnotexist" in missing.value.message


async def test_bad_api_key_is_authentication_error(billing_sandbox: BillingSandbox) -> None:
    billing = StripeBilling(billing_sandbox.url, "sk_test_not_the_key")
    try:
        with pytest.raises(AuthenticationError) as refused:
            await billing.get_customer("cus_123")
    finally:
        await billing.aclose()

    assert refused.value.status == 401
    assert refused.value.retryable is False
    async with httpx.AsyncClient(base_url=billing_sandbox.url) as anonymous:
        body = (await anonymous.get("/v1/customers")).json()
    assert body["error"]["type"] == "invalid_request_error"


def test_basic_auth_with_key_as_user_is_accepted(billing_sandbox: BillingSandbox) -> None:
    with httpx.Client(base_url=billing_sandbox.url, auth=(billing_sandbox.api_key, "")) as client:
        assert client.get("/v1/customers").status_code == 200


async def test_service_unavailable_becomes_transient_error(
    stripe_billing: StripeBilling, billing_sandbox: BillingSandbox
) -> None:
    billing_sandbox.inject_fault(503, count=2)

    for _ in range(2):
        with pytest.raises(TransientError) as unavailable:
            await stripe_billing.get_customer("cus_anything")
        assert unavailable.value.status == 503
        assert not isinstance(unavailable.value, RateLimitedError)

    with pytest.raises(NotFoundError):  # the sandbox answers normally again
        await stripe_billing.get_customer("cus_anything")


def test_health_answers_without_a_key(billing_sandbox: BillingSandbox) -> None:
    with httpx.Client(base_url=billing_sandbox.url) as client:
        assert client.get("/_sandbox/health").status_code == 200


def test_unrecognized_url_answers_stripe_404(billing_sandbox: BillingSandbox) -> None:
    with billing_sandbox.http() as client:
        answer = client.get("/v1/nonsense")
    assert answer.status_code == 404
    assert "Unrecognized request URL" in answer.json()["error"]["message"]


async def test_customer_without_name_falls_back_to_email_then_id(
    billing_sandbox: BillingSandbox, stripe_billing: StripeBilling
) -> None:
    async with billing_sandbox.async_http() as client:
        with_email = (await client.post("/v1/customers", data={"email": "ap@nameless.test"})).json()
        bare = (await client.post("/v1/customers")).json()

    assert (await stripe_billing.get_customer(with_email["id"])).name == "ap@nameless.test"
    assert (await stripe_billing.get_customer(bare["id"])).name == bare["id"]


# webhooks ---------------------------------------------------------------------------------


async def test_webhook_is_delivered_signed_and_verifies(
    stripe_sdk: stripe.StripeClient,
    billing_sandbox: BillingSandbox,
    billing_webhook_receiver: WebhookReceiver,
) -> None:
    endpoint = billing_sandbox.add_webhook_endpoint(billing_webhook_receiver.url)
    assert endpoint.secret.startswith("whsec_")
    customer_id = sdk_customer(stripe_sdk, "Hooked")

    [received] = billing_webhook_receiver.wait_for(1)

    timestamp = verify_stripe(
        received.body,
        received.headers.get("stripe-signature"),
        [endpoint.secret],
        tolerance=300,
        now=int(time.time()),
    )
    assert abs(timestamp - time.time()) < 60
    event = json.loads(received.body)
    assert event["type"] == "customer.created"
    assert event["data"]["object"]["id"] == customer_id
    assert received.headers["content-type"].startswith("application/json")
    [delivery] = billing_sandbox.wait_for_deliveries(event_id=event["id"])
    assert delivery["status"] == "succeeded" and delivery["attempt_count"] == 1
    async with billing_sandbox.async_http() as client:  # the secret is shown only at creation
        assert "secret" not in (await client.get(f"/v1/webhook_endpoints/{endpoint.id}")).json()


async def test_webhook_is_retried_until_the_receiver_answers_2xx(
    stripe_sdk: stripe.StripeClient,
    billing_sandbox: BillingSandbox,
    billing_webhook_receiver: WebhookReceiver,
) -> None:
    endpoint = billing_sandbox.add_webhook_endpoint(billing_webhook_receiver.url)
    billing_webhook_receiver.answer_next(500, 503)
    sdk_customer(stripe_sdk, "Flaky")

    received = billing_webhook_receiver.wait_for(3)
    [event] = billing_sandbox.events()
    [delivery] = billing_sandbox.wait_for_deliveries(event_id=event["id"])

    assert [r.answered for r in received] == [500, 503, 200]
    assert len({r.body for r in received}) == 1  # the same event each time
    for r in received:
        verify_stripe(
            r.body, r.headers["stripe-signature"], [endpoint.secret], 300, int(time.time())
        )
    assert delivery["status"] == "succeeded"
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 503, 200]
    assert delivery["response_body"] == "received"


async def test_redelivery_sends_an_event_again(
    stripe_sdk: stripe.StripeClient,
    billing_sandbox: BillingSandbox,
    billing_webhook_receiver: WebhookReceiver,
) -> None:
    billing_sandbox.add_webhook_endpoint(billing_webhook_receiver.url)
    sdk_customer(stripe_sdk, "Twice")
    [first] = billing_webhook_receiver.wait_for(1)
    event_id = json.loads(first.body)["id"]

    [scheduled] = billing_sandbox.redeliver(event_id)
    received = billing_webhook_receiver.wait_for(2)

    assert scheduled["reason"] == "redelivery"
    assert [json.loads(r.body)["id"] for r in received] == [event_id, event_id]


async def test_duplicate_mode_delivers_events_more_than_once(
    stripe_sdk: stripe.StripeClient,
    billing_sandbox: BillingSandbox,
    billing_webhook_receiver: WebhookReceiver,
) -> None:
    billing_sandbox.add_webhook_endpoint(billing_webhook_receiver.url)
    billing_sandbox.set_delivery_mode(duplicate_rate=1.0, shuffle_window_seconds=0.05)
    sdk_customer(stripe_sdk, "Echo")

    received = billing_webhook_receiver.wait_for(2)

    assert json.loads(received[0].body)["id"] == json.loads(received[1].body)["id"]


async def test_endpoint_receives_only_enabled_event_types(
    stripe_sdk: stripe.StripeClient,
    billing_sandbox: BillingSandbox,
    billing_webhook_receiver: WebhookReceiver,
) -> None:
    billing_sandbox.add_webhook_endpoint(
        billing_webhook_receiver.url, enabled_events=("customer.deleted",)
    )
    stripe_sdk.v1.customers.delete(sdk_customer(stripe_sdk, "Picky"))

    [received] = billing_webhook_receiver.wait_for(1)

    assert json.loads(received.body)["type"] == "customer.deleted"
    assert len(billing_sandbox.deliveries()) == 1


# persistence ------------------------------------------------------------------------------


async def test_state_survives_a_restart_on_the_same_file(
    tmp_path: Path, billing_sandbox_factory: Callable[..., BillingSandbox]
) -> None:
    state = tmp_path / "billing.sqlite"
    first = billing_sandbox_factory(state_path=state)
    customer_id = sdk_customer(first.sdk(), "Durable", key="account/durable/create")
    async with StripeBilling(first.url, first.api_key) as billing:
        created = await billing.get_customer(customer_id)
    events_before = first.events()
    first.stop()

    second = billing_sandbox_factory(state_path=state)
    async with StripeBilling(second.url, second.api_key) as billing:
        assert (await billing.get_customer(customer_id)) == created
    replayed = sdk_customer(second.sdk(), "Durable", key="account/durable/create")
    assert replayed == customer_id  # the idempotency key outlived the restart too
    assert second.events() == events_before


async def test_pending_webhook_deliveries_resume_after_a_restart(
    tmp_path: Path,
    billing_sandbox_factory: Callable[..., BillingSandbox],
    billing_webhook_receiver: WebhookReceiver,
) -> None:
    state = tmp_path / "billing.sqlite"
    endpoints = [(billing_webhook_receiver.url, "whsec_restart_test")]
    billing_webhook_receiver.default_status = 503
    first = billing_sandbox_factory(state_path=state, webhook_endpoints=endpoints)
    sdk_customer(first.sdk(), "Patient")
    wait_until(lambda: first.deliveries()[0]["attempt_count"] >= 1, what="a refused attempt")
    [pending] = first.deliveries()
    first.stop()

    billing_webhook_receiver.default_status = 200
    second = billing_sandbox_factory(state_path=state, webhook_endpoints=endpoints)
    [delivery] = second.wait_for_deliveries()

    assert pending["status"] == "pending"
    assert delivery["id"] == pending["id"] and delivery["status"] == "succeeded"
    assert delivery["attempts"][0]["status_code"] == 503
    assert delivery["attempts"][-1]["status_code"] == 200
    last = billing_webhook_receiver.received[-1]
    assert last.answered == 200
    verify_stripe(
        last.body, last.headers["stripe-signature"], ["whsec_restart_test"], 300, int(time.time())
    )
    assert len(second.state.store.all_objects("webhook_endpoint")) == 1  # not duplicated
