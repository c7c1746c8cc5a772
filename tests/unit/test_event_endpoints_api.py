"""/v1/event-endpoints mounted alone on a bare app over a real SQLite store: what it accepts,
what it refuses and why, that the secret is shown only when it is made, that each write is
audited, and that only ops may use it (the real role check, with real keys)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from adapters.settings import Settings
from adapters.store import EventEndpointStore, IntegrationStore
from starters.api import dependencies, event_endpoints
from starters.api.auth import ApiKeyring, ApiPrincipal, key_entry
from starters.api.correlation import CorrelationMiddleware
from starters.api.errors import install_error_handlers

OPS = ApiPrincipal("ops-1", "ops")
BASE = "/v1/event-endpoints"
APPROVED = "com.ledgerbridge.credit.approved.v1"
UNKNOWN_ID = "ep_" + "0" * 32


@dataclass
class Api:
    client: TestClient
    store: IntegrationStore

    @property
    def endpoints(self) -> EventEndpointStore:
        return EventEndpointStore(self.store)

    def audit(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [(a.action, a.subject, a.details) for a in self.store.audit_entries()]

    def create(self, **body: Any) -> dict[str, Any]:
        values = {"url": "https://subscriber.example/hooks?token=t0k3n", **body}
        response = self.client.post(BASE, json=values)
        assert response.status_code == 201, response.text
        return dict(response.json())


def mount(tmp_path: Path, caller: ApiPrincipal | None = OPS) -> Api:
    """The router on a bare app; the caller admitted as `caller`, or, with None, through the
    real key check against the keys of KEYS."""
    app = FastAPI()
    app.add_middleware(CorrelationMiddleware)
    install_error_handlers(app)
    app.include_router(event_endpoints.router)
    store = IntegrationStore(f"sqlite:///{tmp_path / 'store.sqlite'}")
    store.migrate()
    settings = Settings(api_host="127.0.0.1", api_port=8080)
    keyring = ApiKeyring([key_entry(f"{role}-1", role, key) for role, key in KEYS.items()])
    overrides: dict[Callable[..., Any], Callable[..., Any]] = {
        dependencies.get_settings: lambda: settings,
        dependencies.get_store: lambda: store,
        dependencies.get_keyring: lambda: keyring,
    }
    if caller is not None:
        overrides[dependencies.event_operators] = lambda: caller
    app.dependency_overrides.update(overrides)
    return Api(TestClient(app), store)


KEYS = {role: f"lb_unit_{role}" for role in ("support", "finance", "finance_admin", "ops")}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    mounted = mount(tmp_path)
    yield mounted
    mounted.store.dispose()


# --- registering ----------------------------------------------------------------------------


def test_a_registration_answers_the_secret_once_and_is_audited_without_the_url(api: Api) -> None:
    created = api.create(event_types=[APPROVED, "com.ledgerbridge.ledger.*"], description="DWH")
    assert created["secret"].startswith("whsec_")
    Webhook(created["secret"])  # the reference library takes it
    assert (created["status"], created["event_types"], created["created_by"]) == (
        "active", [APPROVED, "com.ledgerbridge.ledger.*"], "ops-1")  # fmt: skip
    assert created["signing_secrets"] == 1 and created["rotation_ends_at"] is None

    listed = api.client.get(BASE).json()
    one = api.client.get(f"{BASE}/{created['id']}").json()
    assert [e["id"] for e in listed] == [created["id"]] and one["id"] == created["id"]
    for shown in (*listed, one):
        assert "secret" not in shown and created["secret"] not in str(shown)

    [(action, subject, details)] = api.audit()
    assert (action, subject) == ("event_endpoint.created", created["id"])
    assert details["host"] == "subscriber.example" and "t0k3n" not in str(details)


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("http://127.0.0.1:8080/webhooks/stripe", "body.url: url points at ledgerbridge's own API"),
        ("http://localhost:8080/", "body.url: url points at ledgerbridge's own API"),
        ("ftp://subscriber.example/", "body.url: String should match pattern"),
        ("https://user:pw@subscriber.example/", "body.url: String should match pattern"),
        ("javascript:alert(1)", "body.url: String should match pattern"),
    ],
)
def test_a_url_no_webhook_may_go_to_is_a_422_that_says_why(api: Api, url: str, said: str) -> None:
    response = api.client.post(BASE, json={"url": url})
    assert response.status_code == 422
    assert response.json()["error"].startswith(said)
    assert api.endpoints.endpoints() == [] and api.audit() == []


@pytest.mark.parametrize(
    "event_types", [["com.ledgerbridge.credit.aproved.v1"], ["com.other.*"], ["*"], [APPROVED, 1]]
)
def test_an_event_type_ledgerbridge_never_sends_is_refused(api: Api, event_types: Any) -> None:
    response = api.client.post(BASE, json={"url": "https://s.example/", "event_types": event_types})
    assert response.status_code == 422
    assert response.json()["error"].startswith("body.event_types")
    assert api.endpoints.endpoints() == []


def test_a_registration_takes_no_field_it_does_not_know(api: Api) -> None:
    response = api.client.post(BASE, json={"url": "https://s.example/", "secret": "whsec_mine"})
    assert response.status_code == 422
    assert response.json()["error"].startswith("body.secret: Extra inputs are not permitted")


def test_a_description_is_one_printable_line(api: Api) -> None:
    response = api.client.post(BASE, json={"url": "https://s.example/", "description": "a\x00b"})
    assert response.status_code == 422


# --- changing -------------------------------------------------------------------------------


def test_a_change_keeps_what_it_does_not_name_and_is_audited(api: Api) -> None:
    created = api.create(event_types=[APPROVED])
    response = api.client.patch(f"{BASE}/{created['id']}", json={"url": "https://b.example/in"})
    assert response.status_code == 200, response.text
    changed = response.json()
    assert (changed["url"], changed["event_types"]) == ("https://b.example/in", [APPROVED])
    assert "secret" not in changed
    action, _, details = api.audit()[-1]
    assert action == "event_endpoint.changed"
    assert details == {"host": "b.example", "status": "active", "fields": ["url"]}


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({}, "body: Value error, name at least one of url, event_types, description"),
        ({"url": None}, "body: Value error, url: leave a field out to keep it, never null"),
        ({"url": "http://[::1]:8080/"}, "body.url.constrained-str: String should match pattern"),
        ({"url": "http://127.1:8080/"}, "body.url: url points at ledgerbridge's own API"),
    ],
)
def test_a_change_that_changes_nothing_or_to_the_api_is_refused(
    api: Api, body: dict[str, Any], said: str
) -> None:
    created = api.create()
    response = api.client.patch(f"{BASE}/{created['id']}", json=body)
    assert response.status_code == 422
    assert response.json()["error"].startswith(said), response.json()
    assert len(api.audit()) == 1  # the registration alone


def test_an_endpoint_nobody_registered_is_a_404_and_an_id_of_another_shape_a_422(
    api: Api,
) -> None:
    for method, path, body in [
        ("GET", "", None), ("PATCH", "", {"description": "x"}), ("POST", ":rotate-secret", None),
        ("POST", ":pause", None), ("POST", ":resume", None), ("GET", "/dead-letters", None),
        ("POST", "/dead-letters:replay", {"since": "2026-12-01T00:00:00Z"}),
    ]:  # fmt: skip
        response = api.client.request(method, f"{BASE}/{UNKNOWN_ID}{path}", json=body)
        assert response.status_code == 404, (method, path, response.text)
        assert response.json() == {"error": f"no event endpoint {UNKNOWN_ID}"}
        wrong = api.client.request(method, f"{BASE}/ep_NOT-HEX{path}", json=body)
        assert wrong.status_code == 422, (method, path, wrong.text)
    assert api.audit() == []


# --- secrets, pause and resume --------------------------------------------------------------


def test_a_rotation_answers_the_new_secret_and_keeps_the_old_one_signing_for_24_hours(
    api: Api,
) -> None:
    created = api.create()
    response = api.client.post(f"{BASE}/{created['id']}:rotate-secret")
    assert response.status_code == 200, response.text
    rotated = response.json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created["secret"]
    until = datetime.fromisoformat(rotated["previous_valid_until"])
    assert abs(until - (datetime.now(UTC) + timedelta(hours=24))) < timedelta(minutes=1)
    endpoint = api.endpoints.endpoint(created["id"])
    assert endpoint is not None
    assert endpoint.signing_secrets(datetime.now(UTC)) == [rotated["secret"], created["secret"]]
    shown = api.client.get(f"{BASE}/{created['id']}").json()
    assert shown["signing_secrets"] == 2 and shown["rotation_ends_at"] is not None
    assert api.audit()[-1][0] == "event_endpoint.secret_rotated"
    assert api.audit()[-1][2]["overlap_hours"] == 24
    assert rotated["secret"] not in str(api.audit())  # no secret in the audit trail

    at_once = api.client.post(f"{BASE}/{created['id']}:rotate-secret", json={"overlap_hours": 0})
    assert at_once.json()["previous_valid_until"] is None
    assert api.client.get(f"{BASE}/{created['id']}").json()["signing_secrets"] == 1
    too_long = api.client.post(f"{BASE}/{created['id']}:rotate-secret",
                               json={"overlap_hours": 24 * 30})  # fmt: skip
    assert too_long.status_code == 422


def test_pause_and_resume_are_audited_with_the_reason(api: Api) -> None:
    created = api.create()
    paused = api.client.post(f"{BASE}/{created['id']}:pause", json={"reason": "subscriber moving"})
    assert (paused.json()["status"], paused.json()["paused_reason"]) == (
        "paused", "subscriber moving")  # fmt: skip
    assert [e["id"] for e in api.client.get(BASE, params={"status": "paused"}).json()] == [
        created["id"]
    ]
    assert api.client.get(BASE, params={"status": "active"}).json() == []
    resumed = api.client.post(f"{BASE}/{created['id']}:resume")
    assert (resumed.json()["status"], resumed.json()["paused_reason"]) == ("active", None)
    assert [(a, d.get("reason")) for a, _, d in api.audit()[1:]] == [
        ("event_endpoint.paused", "subscriber moving"),
        ("event_endpoint.resumed", None),
    ]
    assert api.client.get(BASE, params={"status": "gone"}).status_code == 422


def test_a_deleted_endpoint_is_gone_with_its_dead_letters_and_audited(api: Api) -> None:
    created, kept = api.create(), api.create()
    for endpoint_id in (created["id"], kept["id"]):
        api.endpoints.add_dead_letter(
            endpoint_id=endpoint_id, event_id="e-1", event_type=APPROVED, subject="credit/1",
            body=b"{}", attempts=44, last_status=503, last_error="HTTP 503: down",
            first_attempt_at=datetime(2026, 12, 1, tzinfo=UTC),
        )  # fmt: skip
    assert api.client.delete(f"{BASE}/{created['id']}").status_code == 204
    assert api.client.get(f"{BASE}/{created['id']}").status_code == 404
    assert api.client.delete(f"{BASE}/{created['id']}").status_code == 404  # once
    assert [e["id"] for e in api.client.get(BASE).json()] == [kept["id"]]
    assert api.endpoints.dead_letters(created["id"]) == []
    assert len(api.endpoints.dead_letters(kept["id"])) == 1
    action, subject, details = api.audit()[-1]
    assert (action, subject) == ("event_endpoint.deleted", created["id"])
    assert "url" not in details


# --- dead letters ---------------------------------------------------------------------------


def test_dead_letters_are_listed_and_replayed_since_a_time(api: Api) -> None:
    created = api.create()
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    for n in range(3):
        api.endpoints.add_dead_letter(
            endpoint_id=created["id"], event_id=f"e-{n}", event_type=APPROVED,
            subject="credit/1", body=b"{}", attempts=44, last_status=503,
            last_error="HTTP 503: down", first_attempt_at=t0 - timedelta(days=3),
            dead_at=t0 + timedelta(days=n),
        )  # fmt: skip
    page = api.client.get(f"{BASE}/{created['id']}/dead-letters", params={"limit": 2}).json()
    assert [d["event_id"] for d in page["items"]] == ["e-0", "e-1"] and page["next_after_id"]
    rest = api.client.get(f"{BASE}/{created['id']}/dead-letters",
                          params={"after_id": page["next_after_id"]}).json()  # fmt: skip
    assert [d["event_id"] for d in rest["items"]] == ["e-2"] and rest["next_after_id"] is None
    since = api.client.get(f"{BASE}/{created['id']}/dead-letters",
                           params={"since": "2026-12-02T00:00:00+00:00"}).json()  # fmt: skip
    assert [d["event_id"] for d in since["items"]] == ["e-1", "e-2"]

    replay = f"{BASE}/{created['id']}/dead-letters:replay"
    response = api.client.post(replay, json={"since": "2026-12-02T01:00:00+01:00"})
    assert response.json() == {"endpoint_id": created["id"], "requested": 2}
    assert api.client.post(replay, json={"since": "2026-12-02"}).json()["requested"] == 0
    assert [d.event_id for d in api.endpoints.replay_requested(created["id"])] == ["e-1", "e-2"]
    assert api.audit()[-1][0] == "event_endpoint.replay_requested"
    assert api.audit()[-1][2]["requested"] == 0


@pytest.mark.parametrize(
    "since", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-05:00", "2026-12-31T23:59:60Z"]
)
def test_a_time_at_the_ends_of_the_calendar_is_held_there_not_a_crash(api: Api, since: str) -> None:
    created = api.create()
    response = api.client.post(f"{BASE}/{created['id']}/dead-letters:replay", json={"since": since})
    assert response.status_code == 200, response.text
    listed = api.client.get(f"{BASE}/{created['id']}/dead-letters", params={"since": since})
    assert listed.status_code == 200, listed.text


def test_a_replay_needs_a_time(api: Api) -> None:
    created = api.create()
    for body in ({}, {"since": 0}, {"since": "yesterday"}):
        response = api.client.post(f"{BASE}/{created['id']}/dead-letters:replay", json=body)
        assert response.status_code == 422, body


# --- who may ---------------------------------------------------------------------------------

OPERATIONS = [
    ("POST", "", {"url": "https://s.example/"}),
    ("GET", "", None),
    ("GET", "/{id}", None),
    ("PATCH", "/{id}", {"description": "x"}),
    ("POST", "/{id}:rotate-secret", None),
    ("POST", "/{id}:pause", None),
    ("POST", "/{id}:resume", None),
    ("GET", "/{id}/dead-letters", None),
    ("POST", "/{id}/dead-letters:replay", {"since": "2026-12-01T00:00:00Z"}),
]


@pytest.mark.parametrize(("method", "path", "body"), OPERATIONS)
def test_only_ops_may_touch_event_endpoints(
    tmp_path: Path, method: str, path: str, body: dict[str, Any] | None
) -> None:
    api = mount(tmp_path, caller=None)  # the real key check
    ops = {"Authorization": f"Bearer {KEYS['ops']}"}
    existing = api.client.post(BASE, json={"url": "https://s.example/"}, headers=ops).json()["id"]
    url = BASE + path.replace("{id}", existing)
    before = (api.endpoints.endpoints(), len(api.audit()))
    for role in ("support", "finance", "finance_admin"):
        refused = api.client.request(method, url, json=body,
                                     headers={"Authorization": f"Bearer {KEYS[role]}"})  # fmt: skip
        assert refused.status_code == 403, (role, refused.text)
    assert api.client.request(method, url, json=body).status_code == 401
    assert (api.endpoints.endpoints(), len(api.audit())) == before
    allowed = api.client.request(method, url, json=body, headers=ops)
    assert allowed.status_code in (200, 201), allowed.text  # the refusals were the role's
    api.store.dispose()
