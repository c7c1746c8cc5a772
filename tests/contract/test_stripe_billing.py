"""Contract: StripeBilling and the official stripe SDK against the billing sandbox, over HTTP."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import stripe

from adapters.billing import StripeBilling
from adapters.billing.webhook_signature import verify_stripe
from adapters.errors import (
    AuthenticationError,
    NotFoundError,
    RateLimitedError,
    TransientError,
    ValidationError,
)
from adapters.ports import BillingSystem
from canonical import CurrencyError, PostalAddress
from tests.fixtures.billing import BillingSandbox, WebhookReceiver, wait_until
from tests.fixtures.servers import free_port

ADDRESS = PostalAddress(line1="1 Rue de la Paix", city="Paris", postal_code="75002", country="FR")


async def _create(billing: StripeBilling, name: str, key: str, **kwargs: object):  # type: ignore[no-untyped-def]
    return await billing.create_customer(
        name=name,
        email=f"{name.lower().replace(' ', '.')}@example.test",
        idempotency_key=key,
        **kwargs,
    )


# customers --------------------------------------------------------------------------------


async def test_created_customer_reads_back_as_canonical_customer(
    stripe_billing: StripeBilling,
) -> None:
    port: BillingSystem = stripe_billing
    created = await stripe_billing.create_customer(
        name="Acme GmbH",
        email="billing@acme.test",
        address=ADDRESS,
        metadata={"segment": "smb"},
        idempotency_key="account/acme/create",
    )
    assert created.customer_id.startswith("cus_")

    fetched = await port.get_customer(created.customer_id)

    assert fetched == created
    assert fetched.name == "Acme GmbH"
    assert fetched.email == "billing@acme.test"
    assert fetched.address == ADDRESS
    assert fetched.currency is None  # Stripe fixes it with the first subscription
    assert fetched.deleted is False


async def test_currency_set_by_billing_is_mapped_uppercase(
    stripe_billing: StripeBilling, billing_sandbox: BillingSandbox
) -> None:
    created = await _create(stripe_billing, "Yen Co", "k-yen")
    async with httpx.AsyncClient(base_url=billing_sandbox.url) as control:
        # What billing does itself when the first JPY subscription is created.
        patched = await control.post(
            f"/_sandbox/objects/{created.customer_id}", json={"currency": "jpy"}
        )
    assert patched.status_code == 200

    assert (await stripe_billing.get_customer(created.customer_id)).currency == "JPY"


async def test_currency_asked_for_at_creation_is_reported_until_billing_fixes_one(
    stripe_billing: StripeBilling, billing_sandbox: BillingSandbox
) -> None:
    created = await _create(stripe_billing, "Euro Co", "k-eur", currency="eur")
    assert created.currency == "EUR"
    async with billing_sandbox.async_http() as client:
        raw = (await client.get(f"/v1/customers/{created.customer_id}")).json()
        # Billing fixes its own currency (e.g. the first subscription was priced in USD).
        await client.post(f"/_sandbox/objects/{created.customer_id}", json={"currency": "usd"})
    assert raw["currency"] is None  # as in Stripe: not a customer parameter
    assert (await stripe_billing.get_customer(created.customer_id)).currency == "USD"
    with pytest.raises(CurrencyError):
        await _create(stripe_billing, "Doubloon Co", "k-xxx", currency="xdb")


async def test_customer_without_name_falls_back_to_email_then_id(
    billing_sandbox: BillingSandbox, stripe_billing: StripeBilling
) -> None:
    async with billing_sandbox.async_http() as client:
        with_email = (await client.post("/v1/customers", data={"email": "ap@nameless.test"})).json()
        bare = (await client.post("/v1/customers")).json()

    assert (await stripe_billing.get_customer(with_email["id"])).name == "ap@nameless.test"
    assert (await stripe_billing.get_customer(bare["id"])).name == bare["id"]


async def test_update_changes_given_fields_and_merges_metadata(
    stripe_billing: StripeBilling, billing_sandbox: BillingSandbox
) -> None:
    created = await stripe_billing.create_customer(
        name="Old Name",
        email="ops@old.test",
        metadata={"keep": "1", "drop": "2"},
        idempotency_key="k-create",
    )

    updated = await stripe_billing.update_customer(
        created.customer_id,
        name="New Name",
        metadata={"drop": None, "added": "3"},
        idempotency_key="k-update",
    )

    assert updated.name == "New Name"
    assert updated.email == "ops@old.test"  # not sent, so unchanged
    async with billing_sandbox.async_http() as client:
        raw = (await client.get(f"/v1/customers/{created.customer_id}")).json()
    assert raw["metadata"] == {"keep": "1", "added": "3"}


async def test_update_with_address_replaces_every_address_field(
    stripe_billing: StripeBilling,
) -> None:
    created = await _create(stripe_billing, "Mover", "k-mover", address=ADDRESS)
    new_address = PostalAddress(line1="5 Main St", city="Springfield", country="US")

    updated = await stripe_billing.update_customer(
        created.customer_id, address=new_address, idempotency_key="k-move"
    )

    assert updated.address == new_address  # postal_code from the old address is gone


async def test_deleted_customer_reads_as_deleted_and_leaves_the_list(
    stripe_billing: StripeBilling,
) -> None:
    kept = await _create(stripe_billing, "Kept", "k-kept")
    gone = await _create(stripe_billing, "Gone", "k-gone")

    deleted = await stripe_billing.delete_customer(gone.customer_id)

    assert deleted.deleted is True
    after = await stripe_billing.get_customer(gone.customer_id)
    assert after.deleted is True and after.customer_id == gone.customer_id
    assert [c.customer_id async for c in stripe_billing.list_customers()] == [kept.customer_id]
    with pytest.raises(NotFoundError):
        await stripe_billing.update_customer(gone.customer_id, name="x", idempotency_key="k-late")
    with pytest.raises(NotFoundError):
        await stripe_billing.delete_customer(gone.customer_id)


async def test_list_customers_follows_cursor_pages_newest_first(
    stripe_billing: StripeBilling,
) -> None:
    created = [await _create(stripe_billing, f"Customer {i}", f"k-list-{i}") for i in range(7)]

    listed = [c.customer_id async for c in stripe_billing.list_customers(page_size=3)]

    assert listed == [c.customer_id for c in reversed(created)]


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


async def test_list_customers_filters_by_email(stripe_billing: StripeBilling) -> None:
    wanted = await stripe_billing.create_customer(
        name="Twin A", email="twin@example.test", idempotency_key="k-twin-a"
    )
    await stripe_billing.create_customer(
        name="Other", email="other@example.test", idempotency_key="k-other"
    )

    found = [c async for c in stripe_billing.list_customers(email="twin@example.test")]

    assert [c.customer_id for c in found] == [wanted.customer_id]


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


# idempotency ------------------------------------------------------------------------------


async def test_same_idempotency_key_and_params_replays_the_first_answer(
    stripe_billing: StripeBilling, billing_sandbox: BillingSandbox
) -> None:
    first = await _create(stripe_billing, "Once Only", "account/once/create")
    second = await _create(stripe_billing, "Once Only", "account/once/create")

    assert second == first
    assert [c.customer_id async for c in stripe_billing.list_customers()] == [first.customer_id]
    assert [e["type"] for e in billing_sandbox.events()] == ["customer.created"]
    async with billing_sandbox.async_http() as client:
        form = {"name": "Once Only", "email": "once.only@example.test"}
        raw = await client.post(
            "/v1/customers", data=form, headers={"Idempotency-Key": "account/once/create"}
        )
    assert raw.headers["Idempotent-Replayed"] == "true"
    assert raw.json()["id"] == first.customer_id


async def test_same_idempotency_key_with_other_params_is_rejected(
    stripe_billing: StripeBilling,
) -> None:
    await _create(stripe_billing, "First", "reused-key")

    with pytest.raises(ValidationError) as rejected:
        await _create(stripe_billing, "Second", "reused-key")

    assert rejected.value.status == 400
    assert rejected.value.remote_code == "idempotency_error"
    assert rejected.value.retryable is False


async def test_idempotency_key_is_forgotten_after_24_hours(
    stripe_billing: StripeBilling, billing_sandbox: BillingSandbox
) -> None:
    first = await _create(stripe_billing, "Day One", "daily-key")
    engine = billing_sandbox.state.engine
    real_clock = engine.clock
    engine.clock = lambda: real_clock() + 24 * 3600 + 1

    later = await _create(stripe_billing, "Day Two", "daily-key")

    assert later.customer_id != first.customer_id


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


# errors -----------------------------------------------------------------------------------


async def test_rate_limit_becomes_rate_limited_error_with_retry_after(
    stripe_billing: StripeBilling, billing_sandbox: BillingSandbox
) -> None:
    created = await _create(stripe_billing, "Busy", "k-busy")
    billing_sandbox.inject_fault(429, count=1, retry_after=7)

    with pytest.raises(RateLimitedError) as limited:
        await stripe_billing.get_customer(created.customer_id)

    assert limited.value.retry_after == 7.0
    assert limited.value.status == 429 and limited.value.remote_code == "rate_limit"
    assert (await stripe_billing.get_customer(created.customer_id)) == created  # fault used up


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


async def test_write_refused_by_a_fault_is_not_remembered_by_its_idempotency_key(
    stripe_billing: StripeBilling, billing_sandbox: BillingSandbox
) -> None:
    billing_sandbox.inject_fault(503, method="POST")
    with pytest.raises(TransientError):
        await _create(stripe_billing, "Retry Me", "k-retry")

    created = await _create(stripe_billing, "Retry Me", "k-retry")

    assert created.name == "Retry Me"


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


# events -----------------------------------------------------------------------------------


async def test_events_record_the_customer_lifecycle_in_order(
    stripe_billing: StripeBilling, billing_sandbox: BillingSandbox
) -> None:
    created = await _create(stripe_billing, "Evented", "account/evented/create")
    await stripe_billing.update_customer(
        created.customer_id, name="Evented Renamed", idempotency_key="account/evented/rename"
    )
    await stripe_billing.update_customer(  # no change: Stripe records no event
        created.customer_id, name="Evented Renamed", idempotency_key="account/evented/noop"
    )
    await stripe_billing.delete_customer(created.customer_id)

    events = billing_sandbox.events()

    assert [e["type"] for e in events] == [
        "customer.created",
        "customer.updated",
        "customer.deleted",
    ]
    assert all(e["id"].startswith("evt_") and e["object"] == "event" for e in events)
    assert all(e["data"]["object"]["id"] == created.customer_id for e in events)
    assert events[0]["request"]["idempotency_key"] == "account/evented/create"
    assert events[0]["request"]["id"].startswith("req_")
    assert events[1]["data"]["previous_attributes"] == {"name": "Evented"}
    assert events[1]["data"]["object"]["name"] == "Evented Renamed"
    assert events[0]["created"] <= events[1]["created"] <= events[2]["created"]
    async with billing_sandbox.async_http() as client:
        single = (await client.get(f"/v1/events/{events[1]['id']}")).json()
        only_updates = (await client.get("/v1/events", params={"type": "customer.updated"})).json()
    assert single["id"] == events[1]["id"] and single["api_version"]
    assert [e["id"] for e in only_updates["data"]] == [events[1]["id"]]


# webhooks ---------------------------------------------------------------------------------


async def test_webhook_is_delivered_signed_and_verifies(
    stripe_billing: StripeBilling,
    billing_sandbox: BillingSandbox,
    billing_webhook_receiver: WebhookReceiver,
) -> None:
    endpoint = billing_sandbox.add_webhook_endpoint(billing_webhook_receiver.url)
    assert endpoint.secret.startswith("whsec_")
    created = await _create(stripe_billing, "Hooked", "k-hooked")

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
    assert event["data"]["object"]["id"] == created.customer_id
    assert received.headers["content-type"].startswith("application/json")
    [delivery] = billing_sandbox.wait_for_deliveries(event_id=event["id"])
    assert delivery["status"] == "succeeded" and delivery["attempt_count"] == 1
    async with billing_sandbox.async_http() as client:  # the secret is shown only at creation
        assert "secret" not in (await client.get(f"/v1/webhook_endpoints/{endpoint.id}")).json()


async def test_webhook_is_retried_until_the_receiver_answers_2xx(
    stripe_billing: StripeBilling,
    billing_sandbox: BillingSandbox,
    billing_webhook_receiver: WebhookReceiver,
) -> None:
    endpoint = billing_sandbox.add_webhook_endpoint(billing_webhook_receiver.url)
    billing_webhook_receiver.answer_next(500, 503)
    await _create(stripe_billing, "Flaky", "k-flaky")

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
    stripe_billing: StripeBilling,
    billing_sandbox: BillingSandbox,
    billing_webhook_receiver: WebhookReceiver,
) -> None:
    billing_sandbox.add_webhook_endpoint(billing_webhook_receiver.url)
    await _create(stripe_billing, "Twice", "k-twice")
    [first] = billing_webhook_receiver.wait_for(1)
    event_id = json.loads(first.body)["id"]

    [scheduled] = billing_sandbox.redeliver(event_id)
    received = billing_webhook_receiver.wait_for(2)

    assert scheduled["reason"] == "redelivery"
    assert [json.loads(r.body)["id"] for r in received] == [event_id, event_id]


async def test_duplicate_mode_delivers_events_more_than_once(
    stripe_billing: StripeBilling,
    billing_sandbox: BillingSandbox,
    billing_webhook_receiver: WebhookReceiver,
) -> None:
    billing_sandbox.add_webhook_endpoint(billing_webhook_receiver.url)
    billing_sandbox.set_delivery_mode(duplicate_rate=1.0, shuffle_window_seconds=0.05)
    await _create(stripe_billing, "Echo", "k-echo")

    received = billing_webhook_receiver.wait_for(2)

    assert json.loads(received[0].body)["id"] == json.loads(received[1].body)["id"]


async def test_endpoint_receives_only_enabled_event_types(
    stripe_billing: StripeBilling,
    billing_sandbox: BillingSandbox,
    billing_webhook_receiver: WebhookReceiver,
) -> None:
    billing_sandbox.add_webhook_endpoint(
        billing_webhook_receiver.url, enabled_events=("customer.deleted",)
    )
    created = await _create(stripe_billing, "Picky", "k-picky")
    await stripe_billing.delete_customer(created.customer_id)

    [received] = billing_webhook_receiver.wait_for(1)

    assert json.loads(received.body)["type"] == "customer.deleted"
    assert len(billing_sandbox.deliveries()) == 1


# persistence ------------------------------------------------------------------------------


async def test_state_survives_a_restart_on_the_same_file(
    tmp_path: Path, billing_sandbox_factory: Callable[..., BillingSandbox]
) -> None:
    state = tmp_path / "billing.sqlite"
    first = billing_sandbox_factory(state_path=state)
    async with StripeBilling(first.url, first.api_key) as billing:
        created = await _create(billing, "Durable", "account/durable/create")
    events_before = first.events()
    first.stop()

    second = billing_sandbox_factory(state_path=state)
    async with StripeBilling(second.url, second.api_key) as billing:
        assert (await billing.get_customer(created.customer_id)) == created
        replayed = await _create(billing, "Durable", "account/durable/create")
    assert replayed == created  # the idempotency key outlived the restart too
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
    async with StripeBilling(first.url, first.api_key) as billing:
        await _create(billing, "Patient", "k-patient")
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


def test_health_answers_without_a_key(billing_sandbox: BillingSandbox) -> None:
    with httpx.Client(base_url=billing_sandbox.url) as client:
        assert client.get("/_sandbox/health").status_code == 200


def test_unrecognized_url_answers_stripe_404(billing_sandbox: BillingSandbox) -> None:
    with billing_sandbox.http() as client:
        answer = client.get("/v1/nonsense")
    assert answer.status_code == 404
    assert "Unrecognized request URL" in answer.json()["error"]["message"]
