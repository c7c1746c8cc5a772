"""ZendeskSupport cases (tickets) against the Zendesk-compatible sandbox, over real HTTP:
what the case-to-credit process reads from and writes to the support desk."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from adapters.errors import NotFoundError, RateLimitedError, ValidationError
from adapters.support import ZendeskSupport
from adapters.support.webhook_signature import verify_zendesk
from adapters.support.zendesk import without_write_marker, write_marker
from canonical.money import Money
from canonical.support import CreditAsk
from tests.fixtures.support import (
    RecordingTransport,
    SupportSandbox,
    WebhookReceiver,
    create_organization,
    create_ticket_with_credit,
    credit_field_ids,
    serve_support_sandbox,
)

CUSTOM_FIELD_CHANGED = "zen:event-type:ticket.custom_field_changed"


def comments(sandbox: SupportSandbox, ticket_id: int) -> list[dict[str, Any]]:
    with sandbox.api() as api:
        return list(api.get(f"/api/v2/tickets/{ticket_id}/comments.json").json()["comments"])


def comments_all(sandbox: SupportSandbox, ticket_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    with sandbox.api() as api:
        params: dict[str, Any] = {"page[size]": 100}
        while True:
            page = api.get(f"/api/v2/tickets/{ticket_id}/comments", params=params).json()
            found += page["comments"]
            if not page["meta"]["has_more"]:
                return found
            params["page[after]"] = page["meta"]["after_cursor"]


def ticket(sandbox: SupportSandbox, ticket_id: int) -> dict[str, Any]:
    with sandbox.api() as api:
        return dict(api.get(f"/api/v2/tickets/{ticket_id}.json").json()["ticket"])


# -- reading a case --------------------------------------------------------------------


def test_sandbox_seeds_the_credit_fields(support_sandbox: SupportSandbox) -> None:
    with support_sandbox.api() as api:
        fields = api.get("/api/v2/ticket_fields.json").json()["ticket_fields"]

    by_title = {f["title"]: f["type"] for f in fields}
    assert by_title["Credit amount"] == "decimal"
    assert {"Credit currency", "Credit reason", "Incident reference"} <= set(by_title)


async def test_get_case_maps_the_ticket_and_the_credit_asked_on_it(
    zendesk_support: ZendeskSupport, support_sandbox: SupportSandbox
) -> None:
    org = create_organization(support_sandbox, "Acme Corp", external_id="cus_acme001")
    created = create_ticket_with_credit(
        support_sandbox, organization_id=org["id"], amount="120.50", tags=["outage"]
    )

    case = await zendesk_support.get_case(str(created["id"]))

    assert case.case_id == str(created["id"])
    assert case.organization_id == str(org["id"])
    assert case.customer_id == "cus_acme001"
    assert case.subject == "Outage credit"
    assert case.status == "new"
    assert case.tags == ["outage"]
    assert case.updated_at.tzinfo is not None
    assert case.credit == CreditAsk(
        amount=Money(amount=Decimal("120.50"), currency="EUR"),
        reason="Four hours of outage on 3 March",
        incident_reference="INC-2041",
    )


async def test_get_case_without_a_credit_amount_has_no_credit(
    zendesk_support: ZendeskSupport, support_sandbox: SupportSandbox
) -> None:
    org = create_organization(support_sandbox, "Acme Corp", external_id="cus_acme001")
    created = create_ticket_with_credit(
        support_sandbox, organization_id=org["id"], amount=None, currency=None, reason=None
    )

    case = await zendesk_support.get_case(str(created["id"]))

    assert case.credit is None
    assert case.customer_id == "cus_acme001"


async def test_get_case_without_an_organization_has_no_customer(
    zendesk_support: ZendeskSupport, support_sandbox: SupportSandbox
) -> None:
    created = create_ticket_with_credit(support_sandbox, organization_id=None)

    case = await zendesk_support.get_case(str(created["id"]))

    assert case.organization_id is None
    assert case.customer_id is None


async def test_customer_id_is_the_organization_external_id_cached_for_a_minute(
    zendesk_support: ZendeskSupport, support_sandbox: SupportSandbox
) -> None:
    org = create_organization(support_sandbox, "Acme Corp", external_id="cus_acme001")
    first = create_ticket_with_credit(support_sandbox, organization_id=org["id"])
    second = create_ticket_with_credit(support_sandbox, organization_id=org["id"])
    assert (await zendesk_support.get_case(str(first["id"]))).customer_id == "cus_acme001"
    with support_sandbox.api() as api:
        api.put(
            f"/api/v2/organizations/{org['id']}.json",
            json={"organization": {"external_id": "cus_renamed1"}},
        ).raise_for_status()

    # Within the minute the cached external id answers, without another organization GET.
    assert (await zendesk_support.get_case(str(second["id"]))).customer_id == "cus_acme001"
    fresh = ZendeskSupport(support_sandbox.url, support_sandbox.email, support_sandbox.api_token)
    async with fresh:
        assert (await fresh.get_case(str(second["id"]))).customer_id == "cus_renamed1"


@pytest.mark.parametrize(
    ("amount", "currency", "field"),
    [
        ("12O.00", "EUR", "Credit amount"),
        ("-5.00", "EUR", "Credit amount"),
        ("10.005", "EUR", "Credit amount"),
        ("120.00", "XYZ", "Credit currency"),
        ("120.00", None, "Credit currency"),
    ],
)
async def test_malformed_credit_is_a_validation_error_naming_the_field(
    zendesk_support: ZendeskSupport,
    support_sandbox: SupportSandbox,
    amount: str,
    currency: str | None,
    field: str,
) -> None:
    created = create_ticket_with_credit(
        support_sandbox, organization_id=None, amount=amount, currency=currency
    )

    with pytest.raises(ValidationError) as raised:
        await zendesk_support.get_case(str(created["id"]))

    assert repr(field) in raised.value.message
    assert raised.value.remote_answer == {"ticket_id": str(created["id"]), "field": field}
    assert raised.value.retryable is False


async def test_unknown_ticket_is_not_found(zendesk_support: ZendeskSupport) -> None:
    with pytest.raises(NotFoundError):
        await zendesk_support.get_case("360000009999")
    with pytest.raises(NotFoundError):
        await zendesk_support.add_internal_note("360000009999", "note", "k1")


@pytest.mark.parametrize("case_id", ["../organizations/1", "12/comments", "١٢", "12.json", ""])
@pytest.mark.parametrize(
    "method", ["get_case", "add_internal_note", "add_public_reply", "add_tags"]
)
async def test_a_ticket_id_not_shaped_like_zendesks_is_refused_before_any_call(
    support_sandbox: SupportSandbox, method: str, case_id: str
) -> None:
    recording = RecordingTransport()
    async with ZendeskSupport(
        support_sandbox.url, support_sandbox.email, support_sandbox.api_token, transport=recording
    ) as support:
        calls = {
            "get_case": lambda: support.get_case(case_id),
            "add_internal_note": lambda: support.add_internal_note(case_id, "note", "k"),
            "add_public_reply": lambda: support.add_public_reply(case_id, "reply", "k"),
            "add_tags": lambda: support.add_tags(case_id, ["vip"], "k"),
        }
        with pytest.raises(NotFoundError, match="ticket ids are numeric"):
            await calls[method]()

    assert recording.requests == []


async def test_429_on_get_case_is_rate_limited_with_the_retry_after(
    zendesk_support: ZendeskSupport, support_sandbox: SupportSandbox
) -> None:
    created = create_ticket_with_credit(support_sandbox, organization_id=None)
    support_sandbox.inject_fault(429, retry_after=7)

    with pytest.raises(RateLimitedError) as raised:
        await zendesk_support.get_case(str(created["id"]))

    assert raised.value.retry_after == 7
    assert (await zendesk_support.get_case(str(created["id"]))).credit is not None


# -- writing back on the case ----------------------------------------------------------


async def test_internal_note_is_private_and_public_reply_is_public(
    zendesk_support: ZendeskSupport, support_sandbox: SupportSandbox
) -> None:
    created = create_ticket_with_credit(support_sandbox, organization_id=None)
    case_id = str(created["id"])

    await zendesk_support.add_internal_note(case_id, "Approved by finance.", "credit/1/note")
    await zendesk_support.add_public_reply(case_id, "We credited 120.00 EUR.", "credit/1/reply")

    written = [(c["body"], c["public"]) for c in comments(support_sandbox, created["id"])][1:]
    assert [(without_write_marker(body), public) for body, public in written] == [
        ("Approved by finance.", False),
        ("We credited 120.00 EUR.", True),
    ]
    # The marker is the last line, apart from the text, and tells nothing of the customer.
    assert written[0][0] == f"Approved by finance.\n\n{write_marker('credit/1/note')}"
    assert written[1][0].endswith(f"\n\n{write_marker('credit/1/reply')}")
    assert "credit/1" not in written[0][0]


async def test_same_idempotency_key_adds_a_note_once(
    zendesk_support: ZendeskSupport, support_sandbox: SupportSandbox
) -> None:
    created = create_ticket_with_credit(support_sandbox, organization_id=None)
    case_id = str(created["id"])

    await zendesk_support.add_internal_note(case_id, "Approved.", "credit/1/note")
    await zendesk_support.add_internal_note(case_id, "Approved.", "credit/1/note")
    await zendesk_support.add_public_reply(case_id, "Credited.", "credit/1/reply")
    await zendesk_support.add_public_reply(case_id, "Credited.", "credit/1/reply")
    await zendesk_support.add_internal_note(case_id, "Approved.", "credit/1/note-2")

    assert [without_write_marker(c["body"]) for c in comments(support_sandbox, created["id"])][
        1:
    ] == ["Approved.", "Credited.", "Approved."]


async def test_a_note_is_found_behind_many_newer_comments(
    zendesk_support: ZendeskSupport, support_sandbox: SupportSandbox
) -> None:
    created = create_ticket_with_credit(support_sandbox, organization_id=None)
    case_id = str(created["id"])
    await zendesk_support.add_internal_note(case_id, "Approved.", "credit/1/note")
    with support_sandbox.api() as api:
        for n in range(105):  # more than one page of comments, newest first
            api.put(
                f"/api/v2/tickets/{case_id}", json={"ticket": {"comment": {"body": f"c{n}"}}}
            ).raise_for_status()

    await zendesk_support.add_internal_note(case_id, "Approved.", "credit/1/note")

    bodies = [without_write_marker(c["body"]) for c in comments_all(support_sandbox, case_id)]
    assert bodies.count("Approved.") == 1
    assert len(bodies) == 107


async def test_tags_are_added_without_replacing_and_once_however_often(
    zendesk_support: ZendeskSupport, support_sandbox: SupportSandbox
) -> None:
    created = create_ticket_with_credit(support_sandbox, organization_id=None, tags=["outage"])
    case_id = str(created["id"])
    recording = RecordingTransport()

    async with ZendeskSupport(
        support_sandbox.url, support_sandbox.email, support_sandbox.api_token, transport=recording
    ) as support:
        await support.add_tags(case_id, ["credit_applied"], "credit/1/tags")
        await support.add_tags(case_id, ["credit_applied"], "credit/1/tags")
    await zendesk_support.add_tags(case_id, ["Credit_Applied", "vip"], "credit/1/tags-2")

    assert ticket(support_sandbox, created["id"])["tags"] == ["outage", "credit_applied", "vip"]
    assert [json.loads(r.content) for r in recording.requests] == [
        {"ticket": {"additional_tags": ["credit_applied"]}}
    ] * 2
    assert not [r for r in recording.requests if "idempotency-key" in r.headers]


# -- the ticket export reconciliation reads ---------------------------------------------


@pytest.mark.parametrize(
    ("params", "refusal"),
    [
        ({"query": "type:ticket tags:credit_applied", "filter[type]": "ticket"}, "filter[type]"),
        ({"query": "tags:credit_applied"}, "filter[type] is required"),
        ({"query": "tags:credit_applied", "filter[type]": "ticket", "page[size]": 1001}, "1000"),
    ],
)
def test_export_refuses_what_zendesk_refuses(
    support_sandbox: SupportSandbox, params: dict[str, Any], refusal: str
) -> None:
    with support_sandbox.api() as api:
        answer = api.get("/api/v2/search/export", params=params)

    assert answer.status_code == 400
    assert refusal in answer.json()["description"]


async def test_credit_ticket_page_sends_the_type_as_a_filter_only(
    support_sandbox: SupportSandbox,
) -> None:
    created = create_ticket_with_credit(
        support_sandbox, organization_id=None, tags=["credit_applied"]
    )
    updated = datetime.fromisoformat(str(created["updated_at"]))
    recording = RecordingTransport()
    async with ZendeskSupport(
        support_sandbox.url, support_sandbox.email, support_sandbox.api_token, transport=recording
    ) as support:
        page = await support.credit_ticket_page(updated, updated + timedelta(days=1), None, 50)

    assert [t.case_id for t in page.tickets] == [str(created["id"])]
    [export] = [r for r in recording.requests if r.url.path == "/api/v2/search/export"]
    assert export.url.params["filter[type]"] == "ticket"
    assert "type:" not in export.url.params["query"]


# -- the webhook an ingress sees when a credit is asked ----------------------------------


async def test_setting_the_credit_amount_emits_a_signed_custom_field_changed_event(
    zendesk_webhook_receiver: WebhookReceiver,
) -> None:
    receiver = zendesk_webhook_receiver
    with serve_support_sandbox(webhook_endpoints=[(receiver.url, receiver.secret)]) as sandbox:
        org = create_organization(sandbox, "Acme Corp", external_id="cus_acme001")
        amount_field = credit_field_ids(sandbox)["Credit amount"]
        created = create_ticket_with_credit(sandbox, organization_id=org["id"], amount="99.00")
        with sandbox.api() as api:
            api.put(
                f"/api/v2/tickets/{created['id']}.json",
                json={"ticket": {"custom_fields": [{"id": amount_field, "value": "150.00"}]}},
            ).raise_for_status()
        await sandbox.wait_for_deliveries(
            lambda ds: len(ds) == 5 and all(d["status"] == "delivered" for d in ds),
            event_type="ticket.custom_field_changed",
        )

    amount_events = []
    for hook in receiver.accepted():
        payload = json.loads(hook.body)
        if payload["type"] != CUSTOM_FIELD_CHANGED:
            continue
        verify_zendesk(
            hook.body,
            hook.headers.get("x-zendesk-webhook-signature"),
            hook.headers.get("x-zendesk-webhook-signature-timestamp"),
            [receiver.secret],
            tolerance=300,
            now=datetime.now(UTC),
        )
        if payload["event"]["field"]["title"] == "Credit amount":
            amount_events.append(payload)

    assert [(e["event"]["previous"], e["event"]["current"]) for e in amount_events] == [
        (None, "99.00"),
        ("99.00", "150.00"),
    ]
    for event in amount_events:
        assert event["subject"] == f"zen:ticket:{created['id']}"
        assert event["detail"]["id"] == str(created["id"])
        assert event["detail"]["organization_id"] == str(org["id"])
        assert event["event"]["field"] == {
            "id": str(amount_field),
            "title": "Credit amount",
            "type": "decimal",
        }
