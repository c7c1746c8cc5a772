"""ZendeskSupport cases (tickets) against the Zendesk-compatible sandbox, over real HTTP:
what the case-to-credit process reads from and writes to the support desk."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from adapters.errors import NotFoundError, RateLimitedError, ValidationError
from adapters.support import ZendeskSupport
from adapters.support.webhook_signature import verify_zendesk
from canonical.money import Money
from canonical.support import CreditAsk
from tests.fixtures.support import (
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
    with pytest.raises(NotFoundError):
        await zendesk_support.get_case("../organizations/1")


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
    assert written == [("Approved by finance.", False), ("We credited 120.00 EUR.", True)]


async def test_same_idempotency_key_adds_a_note_once(
    zendesk_support: ZendeskSupport, support_sandbox: SupportSandbox
) -> None:
    created = create_ticket_with_credit(support_sandbox, organization_id=None)
    case_id = str(created["id"])

    await zendesk_support.add_internal_note(case_id, "Approved.", "credit/1/note")
    await zendesk_support.add_internal_note(case_id, "Approved.", "credit/1/note")
    await zendesk_support.add_internal_note(case_id, "Approved.", "credit/1/note-2")

    assert [c["body"] for c in comments(support_sandbox, created["id"])][1:] == [
        "Approved.",
        "Approved.",
    ]


async def test_tags_are_added_once_per_idempotency_key(
    zendesk_support: ZendeskSupport, support_sandbox: SupportSandbox
) -> None:
    created = create_ticket_with_credit(support_sandbox, organization_id=None, tags=["outage"])
    case_id = str(created["id"])

    await zendesk_support.add_tags(case_id, ["credit_applied"], "credit/1/tags")
    # Someone removes the tag; a retry of the same step must not put it back.
    with support_sandbox.api() as api:
        api.put(
            f"/api/v2/tickets/{case_id}.json", json={"ticket": {"remove_tags": ["credit_applied"]}}
        ).raise_for_status()
    await zendesk_support.add_tags(case_id, ["credit_applied"], "credit/1/tags")

    assert ticket(support_sandbox, created["id"])["tags"] == ["outage"]
    await zendesk_support.add_tags(case_id, ["Credit_Applied", "vip"], "credit/1/tags-2")
    assert ticket(support_sandbox, created["id"])["tags"] == ["outage", "credit_applied", "vip"]


async def test_same_idempotency_key_for_another_write_is_refused(
    zendesk_support: ZendeskSupport, support_sandbox: SupportSandbox
) -> None:
    created = create_ticket_with_credit(support_sandbox, organization_id=None)
    case_id = str(created["id"])
    await zendesk_support.add_tags(case_id, ["a"], "credit/1/step")

    with pytest.raises(ValidationError):
        await zendesk_support.add_tags(case_id, ["b"], "credit/1/step")

    assert "b" not in ticket(support_sandbox, created["id"])["tags"]


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
