"""ZendeskSupport against the Zendesk-compatible sandbox, over real HTTP."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.errors import (
    AuthenticationError,
    ConflictError,
    RateLimitedError,
    TransientError,
)
from adapters.support import ZendeskSupport
from adapters.support.webhook_signature import verify_zendesk
from canonical import AccountRecord, Customer
from tests.fixtures.servers import free_port
from tests.fixtures.support import (
    RecordingTransport,
    SupportSandbox,
    WebhookReceiver,
    serve_support_sandbox,
    serve_webhook_receiver,
)

ACME = Customer(customer_id="cus_acme001", name="Acme Corp", currency="EUR")


def all_organizations(sandbox: SupportSandbox) -> list[dict[str, Any]]:
    with sandbox.api() as api:
        return list(api.get("/api/v2/organizations.json").json()["organizations"])


def delivered_to(receiver: WebhookReceiver, event_type: str) -> list[dict[str, Any]]:
    return [
        json.loads(hook.body)
        for hook in receiver.accepted()
        if json.loads(hook.body)["type"] == event_type
    ]


# -- organizations through the adapter -------------------------------------------------


async def test_ensure_organization_creates_it_once_and_reuses_it(
    zendesk_support: ZendeskSupport, support_sandbox: SupportSandbox
) -> None:
    first = await zendesk_support.ensure_organization(ACME, "account/cus_acme001/support")
    again = await zendesk_support.ensure_organization(ACME, "account/cus_acme001/support-2")

    assert first == again
    assert first.system == "support"
    assert first.customer_id == "cus_acme001"
    assert first.name == "Acme Corp"
    orgs = all_organizations(support_sandbox)
    assert [(str(o["id"]), o["external_id"]) for o in orgs] == [(first.external_id, "cus_acme001")]


async def test_ensure_organization_renames_when_the_customer_name_changed(
    zendesk_support: ZendeskSupport, support_sandbox: SupportSandbox
) -> None:
    created = await zendesk_support.ensure_organization(ACME, "k1")
    renamed_customer = ACME.model_copy(update={"name": "Acme Holdings"})

    renamed = await zendesk_support.ensure_organization(renamed_customer, "k2")

    assert renamed.external_id == created.external_id
    assert renamed.name == "Acme Holdings"
    assert renamed.differs_from(renamed_customer) == []
    assert [o["name"] for o in all_organizations(support_sandbox)] == ["Acme Holdings"]


async def test_find_organization_of_unknown_customer_is_none(
    zendesk_support: ZendeskSupport,
) -> None:
    assert await zendesk_support.find_organization("cus_nobody") is None


async def test_find_organization_returns_the_account_record(
    zendesk_support: ZendeskSupport,
) -> None:
    created = await zendesk_support.ensure_organization(ACME, "k1")

    found = await zendesk_support.find_organization("cus_acme001")

    assert found == AccountRecord(
        system="support", external_id=created.external_id, customer_id="cus_acme001", name=ACME.name
    )


async def test_name_held_by_another_organization_is_a_conflict_without_the_name_in_it(
    zendesk_support: ZendeskSupport, support_sandbox: SupportSandbox
) -> None:
    with support_sandbox.api() as api:
        other = api.post(
            "/api/v2/organizations.json",
            json={"organization": {"name": "acme corp", "external_id": "cus_other01"}},
        ).json()["organization"]

    with pytest.raises(ConflictError) as raised:
        await zendesk_support.ensure_organization(ACME, "k1")

    assert str(other["id"]) in raised.value.message
    assert "cus_other01" in raised.value.message
    assert "Acme" not in raised.value.message
    assert raised.value.retryable is False
    assert len(all_organizations(support_sandbox)) == 1


async def test_rename_onto_a_taken_name_is_a_conflict(
    zendesk_support: ZendeskSupport, support_sandbox: SupportSandbox
) -> None:
    await zendesk_support.ensure_organization(ACME, "k1")
    beta = Customer(customer_id="cus_beta0001", name="Beta GmbH")
    await zendesk_support.ensure_organization(beta, "k2")

    with pytest.raises(ConflictError, match="already taken"):
        await zendesk_support.ensure_organization(
            beta.model_copy(update={"name": "Acme Corp"}), "k3"
        )


# -- idempotency: Zendesk documents Idempotency-Key for ticket creation only ------------


def create_ticket(api: httpx.Client, body: str, key: str) -> httpx.Response:
    return api.post(
        "/api/v2/tickets.json",
        json={"ticket": {"subject": "Outage", "comment": {"body": body}}},
        headers={"Idempotency-Key": key},
    )


async def test_adapter_sends_no_idempotency_key_and_finds_the_organization_it_created(
    support_sandbox: SupportSandbox,
) -> None:
    recording = RecordingTransport()
    async with ZendeskSupport(
        support_sandbox.url, support_sandbox.email, support_sandbox.api_token, transport=recording
    ) as support:
        created = await support.ensure_organization(ACME, "account/cus_acme001/create")
        again = await support.ensure_organization(ACME, "account/cus_acme001/create")

    assert again == created
    assert [r.method for r in recording.requests] == ["GET", "POST", "GET"]
    assert not [r for r in recording.requests if "idempotency-key" in r.headers]
    assert len(all_organizations(support_sandbox)) == 1


def test_organization_creation_ignores_an_idempotency_key(support_sandbox: SupportSandbox) -> None:
    body = {"organization": {"name": "Gamma", "external_id": "cus_gamma01"}}
    with support_sandbox.api() as api:
        first = api.post("/api/v2/organizations.json", json=body, headers={"Idempotency-Key": "g"})
        second = api.post("/api/v2/organizations.json", json=body, headers={"Idempotency-Key": "g"})

    assert first.status_code == 201
    assert "x-idempotency-lookup" not in first.headers
    # The key did not make the second request a replay: Zendesk judges it afresh.
    assert second.status_code == 422
    assert second.json()["details"]["name"][0]["error"] == "DuplicateValue"
    assert len(all_organizations(support_sandbox)) == 1


def test_same_idempotency_key_on_ticket_creation_replays_the_first_answer(
    support_sandbox: SupportSandbox,
) -> None:
    with support_sandbox.api() as api:
        first = create_ticket(api, "The customer asks for a credit.", "t-1")
        second = create_ticket(api, "The customer asks for a credit.", "t-1")
        tickets = api.get("/api/v2/tickets.json").json()["tickets"]

    assert first.status_code == second.status_code == 201
    assert first.headers["x-idempotency-lookup"] == "miss"
    assert second.headers["x-idempotency-lookup"] == "hit"
    assert first.json() == second.json()
    assert [t["id"] for t in tickets] == [first.json()["ticket"]["id"]]


def test_same_idempotency_key_on_ticket_creation_with_another_body_is_refused(
    support_sandbox: SupportSandbox,
) -> None:
    with support_sandbox.api() as api:
        create_ticket(api, "First", "t-1").raise_for_status()
        mismatch = create_ticket(api, "Second", "t-1")
        tickets = api.get("/api/v2/tickets.json").json()["tickets"]

    assert mismatch.status_code == 400
    assert mismatch.json()["error"] == "IdempotentRequestError"
    assert [t["description"] for t in tickets] == ["First"]


def test_idempotency_key_on_a_ticket_update_is_ignored(support_sandbox: SupportSandbox) -> None:
    with support_sandbox.api() as api:
        ticket_id = create_ticket(api, "Opening", "t-1").json()["ticket"]["id"]
        update = {"ticket": {"comment": {"body": "Credit applied.", "public": False}}}
        for _ in range(2):
            answer = api.put(
                f"/api/v2/tickets/{ticket_id}.json", json=update, headers={"Idempotency-Key": "u"}
            )
            assert answer.status_code == 200
            assert "x-idempotency-lookup" not in answer.headers
        comments = api.get(f"/api/v2/tickets/{ticket_id}/comments.json").json()["comments"]

    assert [c["body"] for c in comments] == ["Opening", "Credit applied.", "Credit applied."]


def test_duplicate_name_answers_zendesk_record_invalid(support_sandbox: SupportSandbox) -> None:
    with support_sandbox.api() as api:
        api.post("/api/v2/organizations.json", json={"organization": {"name": "Gamma"}})
        duplicate = api.post("/api/v2/organizations.json", json={"organization": {"name": "Gamma"}})

    assert duplicate.status_code == 422
    assert duplicate.json() == {
        "error": "RecordInvalid",
        "description": "Record validation errors",
        "details": {
            "name": [{"description": "Name: has already been taken", "error": "DuplicateValue"}]
        },
    }


# -- failures mapped to the taxonomy ---------------------------------------------------


async def test_429_becomes_rate_limited_with_the_retry_after(
    zendesk_support: ZendeskSupport, support_sandbox: SupportSandbox
) -> None:
    support_sandbox.inject_fault(429, count=1, retry_after=7)

    with pytest.raises(RateLimitedError) as raised:
        await zendesk_support.find_organization("cus_acme001")

    assert raised.value.retry_after == 7
    assert raised.value.retryable is True
    assert raised.value.status == 429
    # The fault is spent: the next call goes through.
    assert await zendesk_support.find_organization("cus_acme001") is None


async def test_rate_limit_per_minute_answers_429_with_retry_after() -> None:
    with serve_support_sandbox(rate_limit_per_minute=2) as sandbox:
        async with ZendeskSupport(sandbox.url, sandbox.email, sandbox.api_token) as support:
            await support.find_organization("cus_acme001")
            await support.find_organization("cus_acme001")
            with pytest.raises(RateLimitedError) as raised:
                await support.find_organization("cus_acme001")

    assert 1 <= raised.value.retry_after <= 60


async def test_503_becomes_transient(
    zendesk_support: ZendeskSupport, support_sandbox: SupportSandbox
) -> None:
    support_sandbox.inject_fault(503, count=1)

    with pytest.raises(TransientError) as raised:
        await zendesk_support.ensure_organization(ACME, "k1")

    assert not isinstance(raised.value, RateLimitedError)
    assert raised.value.status == 503
    assert all_organizations(support_sandbox) == []


async def test_unreachable_support_is_transient() -> None:
    async with ZendeskSupport(f"http://127.0.0.1:{free_port()}", "a@b.test", "t") as support:
        with pytest.raises(TransientError):
            await support.find_organization("cus_acme001")


async def test_wrong_token_is_an_authentication_error(support_sandbox: SupportSandbox) -> None:
    async with ZendeskSupport(support_sandbox.url, support_sandbox.email, "wrong") as support:
        with pytest.raises(AuthenticationError) as raised:
            await support.find_organization("cus_acme001")

    assert raised.value.status == 401
    assert raised.value.remote_answer == {"error": "Couldn't authenticate you"}


# -- pagination ------------------------------------------------------------------------


def test_cursor_pagination_walks_every_organization_once(support_sandbox: SupportSandbox) -> None:
    with support_sandbox.api() as api:
        created = [
            api.post(
                "/api/v2/organizations.json",
                json={"organization": {"name": f"Org {n}", "external_id": f"cus_{n:04d}"}},
            ).json()["organization"]["id"]
            for n in range(5)
        ]
        seen: list[int] = []
        pages = 0
        url: str | None = "/api/v2/organizations.json?page[size]=2"
        while url:
            page = api.get(url).json()
            pages += 1
            seen.extend(org["id"] for org in page["organizations"])
            assert page["meta"]["has_more"] == (page["links"]["next"] is not None)
            url = page["links"]["next"]
        offset = api.get("/api/v2/organizations.json", params={"per_page": 2, "page": 3}).json()

    assert seen == created
    assert pages == 3
    assert [org["id"] for org in offset["organizations"]] == created[4:]
    assert offset["count"] == 5
    assert offset["next_page"] is None


def test_search_by_external_id_matches_exactly(support_sandbox: SupportSandbox) -> None:
    with support_sandbox.api() as api:
        for external_id in ("cus_a001", "cus_a0011"):
            api.post(
                "/api/v2/organizations.json",
                json={"organization": {"name": external_id, "external_id": external_id}},
            )
        found = api.get(
            "/api/v2/organizations/search.json", params={"external_id": "cus_a001"}
        ).json()

    assert [org["external_id"] for org in found["organizations"]] == ["cus_a001"]


# -- webhooks --------------------------------------------------------------------------


async def test_organization_events_are_delivered_signed_like_zendesk(
    zendesk_webhook_receiver: WebhookReceiver,
) -> None:
    receiver = zendesk_webhook_receiver
    with serve_support_sandbox(webhook_endpoints=[(receiver.url, receiver.secret)]) as sandbox:
        async with ZendeskSupport(sandbox.url, sandbox.email, sandbox.api_token) as support:
            created = await support.ensure_organization(ACME, "k1")
            await support.ensure_organization(ACME.model_copy(update={"name": "Acme AG"}), "k2")
        await sandbox.wait_for_deliveries(
            lambda ds: len(ds) == 2 and all(d["status"] == "delivered" for d in ds)
        )

    hooks = receiver.accepted()
    assert len(hooks) == 2
    for hook in hooks:
        verify_zendesk(
            hook.body,
            hook.headers.get("x-zendesk-webhook-signature"),
            hook.headers.get("x-zendesk-webhook-signature-timestamp"),
            [receiver.secret],
            tolerance=300,
            now=datetime.now(UTC),
        )
    created_event = delivered_to(receiver, "zen:event-type:organization.created")[0]
    assert created_event["detail"]["id"] == created.external_id
    assert created_event["detail"]["external_id"] == "cus_acme001"
    assert created_event["subject"] == f"zen:organization:{created.external_id}"
    renamed_event = delivered_to(receiver, "zen:event-type:organization.name_changed")[0]
    assert renamed_event["event"] == {"current": "Acme AG", "previous": "Acme Corp"}
    assert created_event["id"] != renamed_event["id"]


async def test_a_webhook_gets_only_the_event_types_it_subscribes_to(
    support_sandbox: SupportSandbox,
) -> None:
    with serve_webhook_receiver() as organizations, serve_webhook_receiver() as triggers:
        support_sandbox.add_webhook_endpoint(
            organizations.url, ["zen:event-type:organization.created"]
        )
        support_sandbox.add_webhook_endpoint(triggers.url, ["conditional_ticket_events"])
        async with ZendeskSupport(
            support_sandbox.url, support_sandbox.email, support_sandbox.api_token
        ) as support:
            await support.ensure_organization(ACME, "k1")
            await support.ensure_organization(ACME.model_copy(update={"name": "Acme AG"}), "k2")
        # Deliveries are queued with the change: the log is complete once the calls answered.
        deliveries = await support_sandbox.wait_for_deliveries(
            lambda ds: [d["status"] for d in ds] == ["delivered"]
        )

    assert [d["event_type"] for d in deliveries] == ["zen:event-type:organization.created"]
    assert {d["endpoint_url"] for d in deliveries} == {organizations.url}
    assert [json.loads(h.body)["type"] for h in organizations.accepted()] == [
        "zen:event-type:organization.created"
    ]
    assert triggers.received == []


@pytest.mark.parametrize(
    ("change", "refusal"),
    [
        ({"name": None}, "webhook.name is required"),
        ({"subscriptions": ["organization.created"]}, "unknown subscriptions"),
        (
            {"subscriptions": ["conditional_ticket_events", "zen:event-type:ticket.created"]},
            "not both",
        ),
        ({"http_method": "GET"}, "must POST json"),
    ],
)
def test_webhook_registration_refuses_what_zendesk_refuses(
    support_sandbox: SupportSandbox, change: dict[str, Any], refusal: str
) -> None:
    webhook = {
        "name": "ledgerbridge",
        "endpoint": "http://127.0.0.1:9/hook",
        "http_method": "POST",
        "request_format": "json",
        "status": "active",
        "subscriptions": ["zen:event-type:organization.created"],
        **change,
    }
    with support_sandbox.api() as api:
        answer = api.post("/api/v2/webhooks", json={"webhook": webhook})

    assert answer.status_code == 400
    assert refusal in answer.json()["description"]


async def test_webhook_signed_with_another_secret_does_not_verify(
    zendesk_webhook_receiver: WebhookReceiver,
) -> None:
    receiver = zendesk_webhook_receiver
    with serve_support_sandbox(webhook_endpoints=[(receiver.url, "zdsec_other")]) as sandbox:
        async with ZendeskSupport(sandbox.url, sandbox.email, sandbox.api_token) as support:
            await support.ensure_organization(ACME, "k1")
        await sandbox.wait_for_deliveries(lambda ds: [d["status"] for d in ds] == ["delivered"])

    hook = receiver.accepted()[0]
    with pytest.raises(ValueError, match="no matching signature"):
        verify_zendesk(
            hook.body,
            hook.headers.get("x-zendesk-webhook-signature"),
            hook.headers.get("x-zendesk-webhook-signature-timestamp"),
            [receiver.secret],
            tolerance=300,
            now=datetime.now(UTC),
        )


async def test_webhook_is_retried_after_the_receiver_answers_500(
    zendesk_webhook_receiver: WebhookReceiver,
) -> None:
    receiver = zendesk_webhook_receiver
    receiver.fail_next(2, status=500)
    with serve_support_sandbox(webhook_endpoints=[(receiver.url, receiver.secret)]) as sandbox:
        async with ZendeskSupport(sandbox.url, sandbox.email, sandbox.api_token) as support:
            await support.ensure_organization(ACME, "k1")
        deliveries = await sandbox.wait_for_deliveries(
            lambda ds: [d["status"] for d in ds] == ["delivered"]
        )

    delivery = deliveries[0]
    assert [a["status_code"] for a in delivery["attempts"]] == [500, 500, 200]
    assert [hook.answered for hook in receiver.received] == [500, 500, 200]
    # Every attempt is the same delivery of the same event, so receivers can dedupe.
    assert {hook.headers["x-zendesk-webhook-invocation-id"] for hook in receiver.received} == {
        delivery["id"]
    }
    assert {json.loads(hook.body)["id"] for hook in receiver.received} == {delivery["event_id"]}


# -- persistence -----------------------------------------------------------------------


async def test_state_and_pending_webhooks_survive_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "support.sqlite"
    receiver_port = free_port()
    # Nothing listens on the receiver port yet: the delivery stays pending across the restart.
    endpoint = f"http://127.0.0.1:{receiver_port}/webhooks/zendesk"
    webhooks = [(endpoint, "zdsec_test_secret")]
    with serve_support_sandbox(state, webhook_endpoints=webhooks) as sandbox:
        async with ZendeskSupport(sandbox.url, sandbox.email, sandbox.api_token) as support:
            created = await support.ensure_organization(ACME, "account/cus_acme001/create")
        with sandbox.api() as api:
            first_ticket = create_ticket(api, "Opened before the restart", "ticket-before-restart")
        await sandbox.wait_for_deliveries(
            lambda ds: [(d["status"], d["attempt_count"] >= 1) for d in ds] == [("pending", True)],
            event_type="organization.created",
        )

    with (
        serve_webhook_receiver(port=receiver_port) as receiver,
        serve_support_sandbox(state, webhook_endpoints=webhooks) as restarted,
    ):
        async with ZendeskSupport(restarted.url, restarted.email, restarted.api_token) as support:
            assert await support.find_organization("cus_acme001") == created
            beta = await support.ensure_organization(
                Customer(customer_id="cus_beta0001", name="Beta GmbH"), "k-beta"
            )
        with restarted.api() as api:
            replay = create_ticket(api, "Opened before the restart", "ticket-before-restart")
        await restarted.wait_for_deliveries(
            lambda ds: len(ds) == 2 and all(d["status"] == "delivered" for d in ds),
            event_type="organization.created",
        )

    assert beta.external_id != created.external_id
    assert replay.headers["x-idempotency-lookup"] == "hit"
    assert replay.json()["ticket"]["id"] == first_ticket.json()["ticket"]["id"]
    events = delivered_to(receiver, "zen:event-type:organization.created")
    created_ids = sorted(e["detail"]["id"] for e in events)
    assert created_ids == sorted([created.external_id, beta.external_id])


# -- paths with and without .json ------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".json"])
def test_api_paths_answer_with_and_without_json(
    support_sandbox: SupportSandbox, suffix: str
) -> None:
    with support_sandbox.api() as api:
        created = api.post(
            f"/api/v2/organizations{suffix}", json={"organization": {"name": f"Org{suffix}"}}
        )
        org_id = created.json()["organization"]["id"]
        shown = api.get(f"/api/v2/organizations/{org_id}{suffix}")
        ticket = api.post(
            f"/api/v2/tickets{suffix}",
            json={"ticket": {"comment": {"body": "Hello"}, "organization_id": org_id}},
        )
        ticket_id = ticket.json()["ticket"]["id"]
        comments = api.get(f"/api/v2/tickets/{ticket_id}/comments{suffix}")
        fields = api.get(f"/api/v2/ticket_fields{suffix}")
        me = api.get(f"/api/v2/users/me{suffix}")
        exported = api.get(
            f"/api/v2/search/export{suffix}",
            params={"query": "status:new", "filter[type]": "ticket"},
        )

    assert created.status_code == ticket.status_code == 201
    assert shown.json()["organization"]["name"] == f"Org{suffix}"
    assert [c["body"] for c in comments.json()["comments"]] == ["Hello"]
    assert fields.status_code == me.status_code == 200
    assert [r["id"] for r in exported.json()["results"]] == [ticket_id]


def test_comments_list_newest_first_by_cursor(support_sandbox: SupportSandbox) -> None:
    with support_sandbox.api() as api:
        ticket_id = create_ticket(api, "c0", "t-1").json()["ticket"]["id"]
        for n in range(1, 5):
            api.put(
                f"/api/v2/tickets/{ticket_id}", json={"ticket": {"comment": {"body": f"c{n}"}}}
            ).raise_for_status()
        path = f"/api/v2/tickets/{ticket_id}/comments"
        params: dict[str, Any] = {"sort": "-created_at", "page[size]": 2}
        bodies: list[str] = []
        while True:
            page = api.get(path, params=params).json()
            bodies += [c["body"] for c in page["comments"]]
            if not page["meta"]["has_more"]:
                break
            params["page[after]"] = page["meta"]["after_cursor"]
        oldest_first = api.get(path, params={"page[size]": 10}).json()["comments"]
        unknown_sort = api.get(path, params={"sort": "-author_id"})

    assert bodies == ["c4", "c3", "c2", "c1", "c0"]
    assert [c["body"] for c in oldest_first] == ["c0", "c1", "c2", "c3", "c4"]
    assert unknown_sort.status_code == 400


# -- tickets (the basics the credit flow will build on) --------------------------------


def test_ticket_keeps_comments_tags_and_custom_fields(support_sandbox: SupportSandbox) -> None:
    with support_sandbox.api() as api:
        org = api.post(
            "/api/v2/organizations.json", json={"organization": {"name": "Acme Corp"}}
        ).json()["organization"]
        field = api.post(
            "/api/v2/ticket_fields.json",
            json={"ticket_field": {"type": "decimal", "title": "Credit amount"}},
        ).json()["ticket_field"]
        created = api.post(
            "/api/v2/tickets.json",
            json={
                "ticket": {
                    "subject": "Outage credit",
                    "comment": {"body": "Please credit the outage."},
                    "organization_id": org["id"],
                    "priority": "high",
                    "tags": ["credit_requested", "Outage"],
                    "custom_fields": [{"id": field["id"], "value": "120.00"}],
                }
            },
        )
        ticket_id = created.json()["ticket"]["id"]
        updated = api.put(
            f"/api/v2/tickets/{ticket_id}.json",
            json={
                "ticket": {
                    "status": "solved",
                    "comment": {"body": "Credit applied.", "public": False},
                    "additional_tags": ["credit_applied"],
                    "remove_tags": ["credit_requested"],
                }
            },
        ).json()["ticket"]
        comments = api.get(f"/api/v2/tickets/{ticket_id}/comments.json").json()["comments"]
        bad_org = api.post(
            "/api/v2/tickets.json",
            json={"ticket": {"comment": {"body": "x"}, "organization_id": 1}},
        )

    assert created.status_code == 201
    assert updated["status"] == "solved"
    assert updated["organization_id"] == org["id"]
    assert updated["tags"] == ["outage", "credit_applied"]
    assert updated["custom_fields"] == [{"id": field["id"], "value": "120.00"}]
    assert [(c["body"], c["public"]) for c in comments] == [
        ("Please credit the outage.", True),
        ("Credit applied.", False),
    ]
    assert bad_org.status_code == 422


def test_unknown_organization_is_zendesk_not_found(support_sandbox: SupportSandbox) -> None:
    with support_sandbox.api() as api:
        missing = api.get("/api/v2/organizations/42.json")

    assert missing.status_code == 404
    assert missing.json()["error"] == "RecordNotFound"


def test_health_needs_no_credentials(support_sandbox: SupportSandbox) -> None:
    assert httpx.get(f"{support_sandbox.url}/_sandbox/health").status_code == 200
