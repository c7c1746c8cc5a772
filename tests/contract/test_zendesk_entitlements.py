"""Organization fields and the entitlements they carry: the sandbox held to Zendesk's
documented behaviour (Organization Fields API; Update Organization's example answer), and
ZendeskSupport reading and writing a customer's entitlements over real HTTP."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

import httpx
import pytest

from adapters.errors import ConflictError, NotFoundError
from adapters.support import ZendeskSupport
from adapters.support.zendesk import (
    ENTITLEMENT_FIELDS,
    PAID_THROUGH_FIELD,
    PLAN_FIELD,
    STATUS_FIELD,
    SUBSCRIPTION_FIELD,
)
from canonical import Customer
from canonical.entitlements import Entitlements
from tests.fixtures.support import RecordingTransport, SupportSandbox, WebhookReceiver

ACME = Customer(customer_id="cus_acme001", name="Acme Corp", currency="EUR")
T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
CUSTOM_FIELD_CHANGED = "zen:event-type:organization.custom_field_changed"


def past_due(**changes: Any) -> Entitlements:
    fields: dict[str, Any] = {
        "customer_id": ACME.customer_id, "plan": "Pro", "subscription_id": "sub_1",
        "status": "past_due", "paid_through": date(2026, 10, 31), "as_of": T0,
    }  # fmt: skip
    fields.update(changes)
    return Entitlements(**fields)


def define(api: httpx.Client, **field: Any) -> httpx.Response:
    return api.post("/api/v2/organization_fields.json", json={"organization_field": field})


def organization(api: httpx.Client, **fields: Any) -> dict[str, Any]:
    body = {"organization": {"name": "Acme Corp", "external_id": "cus_acme001", **fields}}
    response = api.post("/api/v2/organizations.json", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json()["organization"])


def put(api: httpx.Client, org_id: int, values: dict[str, Any]) -> httpx.Response:
    return api.put(
        f"/api/v2/organizations/{org_id}.json",
        json={"organization": {"organization_fields": values}},
    )


# -- the sandbox as Zendesk documents it ---------------------------------------------------


def test_a_field_is_defined_by_key_title_and_type_and_text_is_the_default(
    support_sandbox: SupportSandbox,
) -> None:
    with support_sandbox.api() as api:
        created = define(api, key="support_description", title="Support description")
        listed = api.get("/api/v2/organization_fields.json").json()["organization_fields"]
        by_key = api.get("/api/v2/organization_fields/support_description.json")

    assert created.status_code == 201
    field = created.json()["organization_field"]
    assert (field["key"], field["title"], field["type"], field["active"]) == (
        "support_description", "Support description", "text", True,
    )  # fmt: skip
    assert field["url"].endswith(f"/api/v2/organization_fields/{field['id']}.json")
    assert [f["id"] for f in listed] == [field["id"]]
    assert by_key.json()["organization_field"]["id"] == field["id"]


@pytest.mark.parametrize(
    ("field", "refused"),
    [
        ({"title": "No key"}, "key"),
        ({"key": "12345", "title": "Only digits"}, "key"),
        ({"key": "has space", "title": "Space"}, "key"),
        ({"key": "no_title"}, "title"),
        ({"key": "odd", "title": "Odd", "type": "colour"}, "type"),
        ({"key": "tier", "title": "Tier", "type": "dropdown"}, "custom_field_options"),
    ],
)
def test_a_malformed_field_is_refused_and_nothing_is_defined(
    support_sandbox: SupportSandbox, field: dict[str, Any], refused: str
) -> None:
    with support_sandbox.api() as api:
        response = define(api, **field)
        listed = api.get("/api/v2/organization_fields.json").json()["organization_fields"]

    assert response.status_code == 422
    assert response.json()["error"] == "RecordInvalid"
    assert refused in response.json()["details"]
    assert listed == []


def test_a_key_is_unique_and_never_reused_after_deletion(support_sandbox: SupportSandbox) -> None:
    with support_sandbox.api() as api:
        first = define(api, key="tier", title="Tier").json()["organization_field"]
        taken = define(api, key="tier", title="Tier again")
        deleted = api.delete(f"/api/v2/organization_fields/{first['id']}.json")
        reused = define(api, key="tier", title="Tier once more")

    assert taken.status_code == 422
    assert taken.json()["details"]["key"][0]["error"] == "DuplicateValue"
    assert deleted.status_code == 204
    assert reused.status_code == 422


def test_an_organization_lists_every_field_and_answers_dates_as_zendesk_does(
    support_sandbox: SupportSandbox,
) -> None:
    """Update Organization's documented answer carries `"datepudding":
    "2018-11-04T00:00:00+00:00"` next to text and dropdown values."""
    with support_sandbox.api() as api:
        define(api, key="org_field_1", title="Field 1")
        define(api, key="org_field_2", title="Field 2", type="dropdown",
               custom_field_options=[{"name": "Teapot", "value": "teapot_kettle"}])  # fmt: skip
        define(api, key="datepudding", title="Date", type="date")
        org = organization(api)
        unset = org["organization_fields"]
        response = put(api, org["id"], {"datepudding": "2018-11-04", "org_field_1": "happy happy",
                                        "org_field_2": "teapot_kettle"})  # fmt: skip
        shown = api.get(f"/api/v2/organizations/{org['id']}.json").json()["organization"]
        searched = api.get(
            "/api/v2/organizations/search.json", params={"external_id": "cus_acme001"}
        ).json()["organizations"]

    assert unset == {"org_field_1": None, "org_field_2": None, "datepudding": None}
    assert response.status_code == 200
    expected = {"datepudding": "2018-11-04T00:00:00+00:00", "org_field_1": "happy happy",
                "org_field_2": "teapot_kettle"}  # fmt: skip
    assert response.json()["organization"]["organization_fields"] == expected
    assert shown["organization_fields"] == expected
    assert searched[0]["organization_fields"] == expected


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"paid": "next tuesday"}, "paid"),
        ({"paid": "2026-02-30"}, "paid"),
        ({"status": "bankrupt"}, "status"),
        ({"plan": 42}, "plan"),
        ({"plan": "Pro", "paid": "soon"}, "paid"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_and_nothing_changes(
    support_sandbox: SupportSandbox, values: dict[str, Any], field: str
) -> None:
    with support_sandbox.api() as api:
        define(api, key="plan", title="Plan")
        define(api, key="paid", title="Paid", type="date")
        define(api, key="status", title="Status", type="dropdown",
               custom_field_options=[{"name": "Active", "value": "active"}])  # fmt: skip
        org = organization(api, organization_fields={"plan": "Basic"})
        response = put(api, org["id"], values)
        after = api.get(f"/api/v2/organizations/{org['id']}.json").json()["organization"]

    assert response.status_code == 422
    assert response.json()["error"] == "RecordInvalid"
    assert field in response.json()["details"]
    assert after["organization_fields"] == {"plan": "Basic", "paid": None, "status": None}
    assert after["updated_at"] == org["updated_at"]


def test_a_key_no_field_defines_is_dropped_as_zendesk_drops_unknown_attributes(
    support_sandbox: SupportSandbox,
) -> None:
    with support_sandbox.api() as api:
        define(api, key="plan", title="Plan")
        org = organization(api)
        response = put(api, org["id"], {"plan": "Pro", "undefined_key": "x"})

    assert response.status_code == 200
    assert response.json()["organization"]["organization_fields"] == {"plan": "Pro"}


def test_values_merge_by_key_and_null_clears_one(support_sandbox: SupportSandbox) -> None:
    with support_sandbox.api() as api:
        define(api, key="plan", title="Plan")
        define(api, key="paid", title="Paid", type="date")
        org = organization(api, organization_fields={"plan": "Pro", "paid": "2026-10-31"})
        cleared = put(api, org["id"], {"paid": None}).json()["organization"]

    assert cleared["organization_fields"] == {"plan": "Pro", "paid": None}


def test_a_changed_value_emits_zendesks_custom_field_changed_event_once(
    support_sandbox: SupportSandbox, zendesk_webhook_receiver: WebhookReceiver
) -> None:
    support_sandbox.add_webhook_endpoint(zendesk_webhook_receiver.url, [CUSTOM_FIELD_CHANGED])
    with support_sandbox.api() as api:
        define(api, key="plan", title="Plan")
        org = organization(api)
        put(api, org["id"], {"plan": "Pro"})
        put(api, org["id"], {"plan": "Pro"})  # the same again: no change, no event

    [changed] = support_sandbox.deliveries(event_type=CUSTOM_FIELD_CHANGED)
    event = changed["payload"]["event"]
    assert (event["current"], event["previous"], event["field"]["key"]) == ("Pro", None, "plan")


def test_the_export_finds_organizations_by_an_organization_field(
    support_sandbox: SupportSandbox,
) -> None:
    """Zendesk searches custom organization fields by key: an agent lists who is past due."""
    with support_sandbox.api() as api:
        define(api, key="status", title="Status", type="dropdown",
               custom_field_options=[{"name": "Active", "value": "active"},
                                     {"name": "Past due", "value": "past_due"}])  # fmt: skip
        define(api, key="paid", title="Paid", type="date")
        late = organization(api, organization_fields={"status": "past_due", "paid": "2026-10-31"})
        body = {"organization": {"name": "Fine Co", "external_id": "cus_fine001",
                                 "organization_fields": {"status": "active"}}}  # fmt: skip
        api.post("/api/v2/organizations.json", json=body).raise_for_status()
        found = api.get(
            "/api/v2/search/export.json",
            params={"query": "status:past_due", "filter[type]": "organization"},
        ).json()
        unknown = api.get(
            "/api/v2/search/export.json",
            params={"query": "undefined_key:x", "filter[type]": "organization"},
        )

    assert [(r["id"], r["result_type"]) for r in found["results"]] == [(late["id"], "organization")]
    assert found["results"][0]["organization_fields"] == {
        "status": "past_due", "paid": "2026-10-31T00:00:00+00:00",
    }  # fmt: skip
    assert found["meta"]["has_more"] is False
    assert unknown.status_code == 400


# -- the adapter -----------------------------------------------------------------------------


async def test_the_entitlement_fields_are_defined_once_whoever_asks(
    zendesk_support: ZendeskSupport, support_sandbox: SupportSandbox
) -> None:
    created = await zendesk_support.ensure_entitlement_fields()
    async with ZendeskSupport(
        support_sandbox.url, support_sandbox.email, support_sandbox.api_token
    ) as another_worker:
        again = await another_worker.ensure_entitlement_fields()

    with support_sandbox.api() as api:
        fields = api.get("/api/v2/organization_fields.json").json()["organization_fields"]
    assert created == [f["key"] for f in ENTITLEMENT_FIELDS]
    assert again == []
    assert {f["key"]: f["type"] for f in fields} == {
        PLAN_FIELD: "text", STATUS_FIELD: "dropdown", PAID_THROUGH_FIELD: "date",
        SUBSCRIPTION_FIELD: "text",
    }  # fmt: skip


async def test_a_field_an_admin_changed_is_a_conflict_not_a_guess(
    zendesk_support: ZendeskSupport, support_sandbox: SupportSandbox
) -> None:
    with support_sandbox.api() as api:
        define(api, key=PAID_THROUGH_FIELD, title="Paid through", type="text")

    with pytest.raises(ConflictError, match=r"ledgerbridge_paid_through.*type 'text'"):
        await zendesk_support.ensure_entitlement_fields()


async def test_entitlements_are_written_once_and_read_back(
    support_sandbox: SupportSandbox,
) -> None:
    recording = RecordingTransport()
    async with ZendeskSupport(
        support_sandbox.url, support_sandbox.email, support_sandbox.api_token, transport=recording
    ) as support:
        await support.ensure_organization(ACME, "k1")
        assert await support.read_entitlements(ACME.customer_id) is None

        first = await support.write_entitlements(past_due())
        writes_after_first = [r.method for r in recording.requests].count("PUT")
        again = await support.write_entitlements(past_due(as_of=datetime(2026, 11, 3, tzinfo=UTC)))
        read = await support.read_entitlements(ACME.customer_id)

    assert (first, again) == (True, False)
    puts = [r for r in recording.requests if r.method == "PUT"]
    assert len(puts) == writes_after_first == 1  # the second saw nothing to change
    assert not [r for r in recording.requests if "idempotency-key" in r.headers]
    assert read is not None
    assert read.standing() == ("Pro", "sub_1", "past_due", date(2026, 10, 31))
    with support_sandbox.api() as api:
        search = {"external_id": ACME.customer_id}
        org = api.get("/api/v2/organizations/search.json", params=search).json()["organizations"][0]
    assert org["organization_fields"] == {
        PLAN_FIELD: "Pro", STATUS_FIELD: "past_due",
        PAID_THROUGH_FIELD: "2026-10-31T00:00:00+00:00", SUBSCRIPTION_FIELD: "sub_1",
    }  # fmt: skip


async def test_only_the_fields_that_differ_are_sent(support_sandbox: SupportSandbox) -> None:
    recording = RecordingTransport()
    async with ZendeskSupport(
        support_sandbox.url, support_sandbox.email, support_sandbox.api_token, transport=recording
    ) as support:
        await support.ensure_organization(ACME, "k1")
        await support.write_entitlements(past_due())
        recording.requests.clear()

        await support.write_entitlements(past_due(status="active", paid_through=date(2026, 11, 30)))

    [put_request] = [r for r in recording.requests if r.method == "PUT"]
    sent = json.loads(put_request.content)
    assert sent == {"organization": {"organization_fields": {
        STATUS_FIELD: "active", PAID_THROUGH_FIELD: "2026-11-30",
    }}}  # fmt: skip


async def test_no_subscription_is_written_as_such_not_left_blank(
    zendesk_support: ZendeskSupport,
) -> None:
    await zendesk_support.ensure_organization(ACME, "k1")
    none = Entitlements(customer_id=ACME.customer_id, as_of=T0)

    assert await zendesk_support.write_entitlements(none) is True
    read = await zendesk_support.read_entitlements(ACME.customer_id)

    assert read is not None
    assert read.status is None
    assert read.describe() == "no subscription"


async def test_entitlements_of_a_customer_without_organization_are_not_found(
    zendesk_support: ZendeskSupport,
) -> None:
    with pytest.raises(NotFoundError):
        await zendesk_support.read_entitlements("cus_nobody")
    with pytest.raises(NotFoundError):
        await zendesk_support.write_entitlements(past_due(customer_id="cus_nobody"))
