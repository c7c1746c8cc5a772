"""Hostile input at every door: both signed webhooks and every operation of the OpenAPI
document, under property-based fuzzing (hypothesis, derandomized so CI sees the same examples).

What must hold, whatever arrives:
- No unhandled exception, i.e. no 500. An error is a deliberate 4xx, or a 502/503 when a
  counterpart cannot be reached (billing, support, the ERP and, in two of the recorder's
  modes, Temporal are unreachable here): those are clean refusals, not crashes, and like every
  error they come as one JSON line `{"error": ...}`; a 503 also says Retry-After.
- An unsigned, forged, stale or otherwise unverifiable webhook is a 4xx that touches neither
  Temporal nor the store; even a correctly signed one never starts a workflow without being
  answered `accepted`. The controls prove a correctly signed event IS accepted, so the gate
  tests can fail.
- /v1 without a valid, unexpired key is 401, with the wrong role 403; either touches neither
  Temporal nor the store. No refused request starts a workflow, sends a signal or an update,
  or writes a row; reads and `credits:validate` never start anything at all.

Requests for /v1 are generated from `app.openapi()` itself (path, query and header parameters
and bodies from their JSON schemas, some valid, some mutated, some garbage), so a new
operation is fuzzed as soon as it is in the document; its roles must be written down below.
"""

from __future__ import annotations

import base64
import json
import re
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import event as note_event
from hypothesis import strategies as st

from adapters.billing.webhook_signature import sign_stripe
from adapters.support.webhook_signature import sign_zendesk, zendesk_timestamp
from canonical.credit import CreditPolicy
from starters.routing import account_workflow_id
from tests.fixtures.support import (
    SupportSandbox,
    create_organization,
    create_ticket_with_credit,
)
from tests.fuzz.harness import (
    API_KEYS,
    BILLING_SECRET,
    EXPIRED_KEY,
    EXPIRED_ON,
    MODES,
    ROLES,
    SUPPORT_SECRET,
    Harness,
    fuzz_settings,
    serve_harness,
)
from workflows.credit_policy import approval_refusal

# Modest and derandomized: the whole module runs in well under a minute, the same way in CI.
# 150 examples per webhook property; 12 per operation and way of being refused; 60 per
# operation with an allowed key (about 2,000 requests in all).
FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TOLERANCE = 300  # seconds: Settings.webhook_tolerance_seconds
BODY_LIMIT = 256 * 1024  # bytes: Settings.webhook_max_bytes
RECEIPTS = "webhook_receipts"
AUDIT = "audit_trail"

# Who may call what, as docs/api.md and the routers say; None: no key needed.
ROLES_BY_OPERATION: dict[tuple[str, str], frozenset[str] | None] = {
    ("GET", "/healthz"): None,
    ("POST", "/v1/billing/events:replay"): frozenset({"ops", "finance_admin"}),
    ("POST", "/v1/accounts/{customer_id}:sync"): frozenset({"ops", "finance_admin"}),
    ("GET", "/v1/accounts/{customer_id}"): frozenset(ROLES),
    ("GET", "/v1/status"): frozenset(ROLES),
    ("POST", "/v1/ledgers:refresh"): frozenset({"ops", "finance_admin"}),
    ("GET", "/v1/health/processes"): frozenset({"ops", "finance", "finance_admin"}),
    ("GET", "/v1/exceptions"): frozenset({"finance", "finance_admin", "ops"}),
    ("GET", "/v1/exceptions/{exception_id}"): frozenset({"finance", "finance_admin", "ops"}),
    ("POST", "/v1/exceptions/{exception_id}:decide"): frozenset({"finance", "finance_admin"}),
    ("POST", "/v1/credits:validate"): frozenset({"support", "finance", "finance_admin"}),
    ("POST", "/v1/credits"): frozenset({"support"}),
    ("GET", "/v1/approvals"): frozenset(ROLES),
    ("GET", "/v1/credits/{credit_id}"): frozenset(ROLES),
    ("POST", "/v1/credits/{credit_id}:decide"): frozenset({"finance", "finance_admin"}),
    ("GET", "/v1/erp/entities"): frozenset({"finance", "finance_admin", "ops"}),
    ("POST", "/v1/erp/entities/{entity}/mode"): frozenset({"finance_admin"}),
    ("GET", "/v1/erp/entities/{entity}/shadow-reports"): frozenset(
        {"finance", "finance_admin", "ops"}
    ),
    ("POST", "/v1/erp/entities/{entity}/shadow-reports"): frozenset(
        {"finance", "finance_admin", "ops"}
    ),
    ("POST", "/v1/reconciliations"): frozenset({"ops", "finance", "finance_admin"}),
    ("GET", "/v1/reconciliations/runs/{run_id}"): frozenset({"ops", "finance", "finance_admin"}),
    ("GET", "/v1/reconciliations/{workflow_id}"): frozenset({"ops", "finance", "finance_admin"}),
    ("POST", "/codec/encode"): frozenset({"ops", "finance_admin"}),
    ("POST", "/codec/decode"): frozenset({"ops", "finance_admin"}),
    ("POST", "/v1/event-endpoints"): frozenset({"ops"}),
    ("GET", "/v1/event-endpoints"): frozenset({"ops"}),
    ("GET", "/v1/event-endpoints/{endpoint_id}"): frozenset({"ops"}),
    ("PATCH", "/v1/event-endpoints/{endpoint_id}"): frozenset({"ops"}),
    ("DELETE", "/v1/event-endpoints/{endpoint_id}"): frozenset({"ops"}),
    ("POST", "/v1/event-endpoints/{endpoint_id}:rotate-secret"): frozenset({"ops"}),
    ("POST", "/v1/event-endpoints/{endpoint_id}:pause"): frozenset({"ops"}),
    ("POST", "/v1/event-endpoints/{endpoint_id}:resume"): frozenset({"ops"}),
    ("GET", "/v1/event-endpoints/{endpoint_id}/dead-letters"): frozenset({"ops"}),
    ("POST", "/v1/event-endpoints/{endpoint_id}/dead-letters:replay"): frozenset({"ops"}),
}
# Operations documented to start nothing, whoever calls them and however Temporal answers.
STARTS_NOTHING = {
    ("POST", "/v1/credits:validate"),
    ("POST", "/codec/encode"),
    ("POST", "/codec/decode"),
}
# Fuzzed ids mostly miss the shape a route checks first; these prefixes let some get past it.
ID_SHAPES = {"credit_id": "credit/", "exception_id": "exception/", "workflow_id": "recon/",
             "endpoint_id": "ep_"}  # fmt: skip
PAYLOAD_KEY = "fuzz1:" + "A" * 43 + "="  # 32 zero bytes, base64: turns the /codec routes on


# --- the answers every door must give ------------------------------------------------------


def assert_clean_answer(response: httpx.Response, what: str) -> None:
    """No unhandled exception; an error is one JSON line; a 503 tells the sender when to retry."""
    status = response.status_code
    assert status < 500 or status in (502, 503), f"{what} -> {status} {response.text[:300]}"
    if status >= 400:
        answer = response.json()
        assert isinstance(answer, dict) and list(answer) == ["error"], f"{what} -> {answer}"
        assert isinstance(answer["error"], str) and "\n" not in answer["error"], what
    if status == 503:
        assert response.headers.get("retry-after"), f"{what} -> 503 without Retry-After"


def assert_nothing_happened(harness: Harness, before: Mapping[str, int], what: str) -> None:
    assert not harness.temporal.effective(), f"{what} -> started {harness.temporal.effective()}"
    assert harness.rows() == before, f"{what} -> the store changed"


# --- webhook bodies and signatures ---------------------------------------------------------

# Printable latin-1: what an HTTP header can carry (obs-text included, as h11 allows).
HEADER_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
    max_size=120,
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=30)
    | st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=2),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
# Far too deep for a recursive parser: a signed body that nests 10^5 arrays is still a body.
DEEP_JSON = st.integers(min_value=500, max_value=100_000).map(lambda n: b"[" * n + b"]" * n)


def stripe_event(event_type: str, obj: dict[str, Any], created: Any = None) -> dict[str, Any]:
    return {
        "id": f"evt_{uuid.uuid4().hex[:16]}",
        "object": "event",
        "type": event_type,
        "created": int(time.time()) if created is None else created,
        "data": {"object": obj},
    }


def zendesk_credit_event(ticket_id: str, amount: str = "120.00") -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "type": "zen:event-type:ticket.custom_field_changed",
        "subject": f"zen:ticket:{ticket_id}",
        "time": zendesk_timestamp(datetime.now(UTC)),
        "detail": {"id": ticket_id, "organization_id": None},
        "event": {
            "current": amount,
            "previous": None,
            "field": {"id": "1", "title": "Credit amount", "type": "decimal"},
        },
    }


IDS = st.from_regex(r"[A-Za-z0-9_]{1,24}", fullmatch=True)
# Events that would start a workflow if they were signed: only the signature stands in the way.
STARTING_EVENTS = st.one_of(
    IDS.map(lambda c: stripe_event("customer.created", {"id": f"cus_{c}", "object": "customer"})),
    st.tuples(IDS, IDS).map(
        lambda ids: stripe_event(
            "invoice.paid",
            {"id": f"in_{ids[0]}", "object": "invoice", "customer": f"cus_{ids[1]}"},
        )
    ),
    IDS.map(zendesk_credit_event),
)
# Well-formed on the outside, hostile inside: odd types, huge or negative numbers, odd nesting.
HOSTILE_EVENTS = st.builds(
    lambda event_type, obj, created, extra: {**stripe_event(event_type, obj, created), **extra},
    st.sampled_from(["customer.created", "invoice.paid", "credit_note.created", "x"]) | st.text(),
    st.dictionaries(
        st.sampled_from(["id", "object", "customer", "subscription", "invoice", "number"]),
        JSON_VALUES,
    ),
    st.integers() | st.floats() | st.text(max_size=8) | st.none(),
    st.dictionaries(st.sampled_from(["id", "type", "data", "detail", "event"]), JSON_VALUES),
)


def padded(event: dict[str, Any], size: int) -> bytes:
    """The event, whitespace-padded to `size` bytes: valid JSON, just too large."""
    body = json.dumps(event).encode()
    return body + b" " * max(0, size - len(body))


WEBHOOK_BODIES = st.one_of(
    STARTING_EVENTS.map(lambda e: json.dumps(e).encode()),
    HOSTILE_EVENTS.map(lambda e: json.dumps(e).encode()),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=512),
    st.just(b""),
    DEEP_JSON,
    st.tuples(STARTING_EVENTS, st.integers(BODY_LIMIT + 1, 2 * BODY_LIMIT)).map(
        lambda pair: padded(*pair)
    ),
)
CONTENT_TYPES = st.one_of(
    st.sampled_from(
        [
            None,
            "application/json",
            "application/json; charset=utf-8",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=fuzz",
        ]
    ),
    HEADER_TEXT,
)
# Secrets we do not hold for that endpoint (the other endpoint's secret among them).
WRONG_SECRETS = st.one_of(
    st.sampled_from(["", BILLING_SECRET.upper(), BILLING_SECRET + " ", SUPPORT_SECRET[:-1]]),
    st.text(min_size=1, max_size=40),
).filter(lambda s: s not in (BILLING_SECRET, SUPPORT_SECRET))
STALE = st.integers(TOLERANCE + 1, 10**9) | st.integers(-(10**9), -(TOLERANCE + 1))
# Stripe's own verify_header accepts a delivery signed ahead of our clock; only stale ones go.
STALE_PAST = st.integers(TOLERANCE + 1, 10**9)
# Timestamps no sane parser accepts: non-ASCII digits (latin-1 superscripts), absurd lengths.
ODD_TIMESTAMPS = st.one_of(
    st.from_regex(r"[0-9\u00b2\u00b3\u00b9]{1,12}", fullmatch=True),
    st.integers(4000, 6000).map(lambda n: "9" * n),
    st.sampled_from(["-1", "+1", " 1", "1e9", "0x10", ""]),
    HEADER_TEXT,
)


@dataclass(frozen=True)
class Delivery:
    endpoint: str
    body: bytes
    headers: dict[str, str | bytes]


def header_bytes(value: str) -> bytes:
    return value.encode("latin-1")


def stripe_v1(body: bytes, timestamp: int) -> str:
    """The v1 value alone, to pair with a timestamp it was not made for."""
    return sign_stripe(body, BILLING_SECRET, timestamp).partition(",v1=")[2]


@st.composite
def forged_stripe_headers(draw: st.DrawFn, body: bytes) -> dict[str, str | bytes]:
    now = int(time.time())
    other = draw(st.binary(max_size=64).filter(lambda b: b != body))
    header = draw(
        st.one_of(
            st.none(),  # missing
            HEADER_TEXT,
            (WRONG_SECRETS | st.just(SUPPORT_SECRET)).map(lambda k: sign_stripe(body, k, now)),
            st.just(sign_stripe(other, BILLING_SECRET, now)),  # signs another body
            STALE_PAST.map(lambda age: sign_stripe(body, BILLING_SECRET, now - age)),
            ODD_TIMESTAMPS.map(lambda t: f"t={t},v1={stripe_v1(body, now)}"),
            st.just(sign_stripe(body, BILLING_SECRET, now).replace("v1=", "v0=")),
            st.just(sign_stripe(body, BILLING_SECRET, now)[:-1]),  # one hex digit short
            st.just(sign_zendesk(body, BILLING_SECRET, zendesk_timestamp(datetime.now(UTC)))),
        )
    )
    return {} if header is None else {"Stripe-Signature": header_bytes(header)}


@st.composite
def forged_zendesk_headers(draw: st.DrawFn, body: bytes) -> dict[str, str | bytes]:
    now = datetime.now(UTC)
    fresh = zendesk_timestamp(now)
    other = draw(st.binary(max_size=64).filter(lambda b: b != body))
    stale = zendesk_timestamp(now - timedelta(seconds=draw(STALE)))
    signature, timestamp = draw(
        st.one_of(
            st.tuples(st.none() | HEADER_TEXT, st.none() | HEADER_TEXT),
            st.tuples(st.none(), st.just(fresh)),
            st.tuples(st.just(sign_zendesk(body, SUPPORT_SECRET, fresh)), st.none()),
            (WRONG_SECRETS | st.just(BILLING_SECRET)).map(
                lambda k: (sign_zendesk(body, k, fresh), fresh)
            ),
            st.just((sign_zendesk(other, SUPPORT_SECRET, fresh), fresh)),
            st.just((sign_zendesk(body, SUPPORT_SECRET, stale), stale)),
            # Signed for one moment, sent with another (a replayed signature, fresh timestamp).
            st.just((sign_zendesk(body, SUPPORT_SECRET, stale), fresh)),
            # Signed correctly, but with a timestamp that names no zone.
            st.just(fresh.removesuffix("Z")).map(
                lambda naive: (sign_zendesk(body, SUPPORT_SECRET, naive), naive)
            ),
            st.just((sign_stripe(body, SUPPORT_SECRET, int(now.timestamp())), fresh)),
        )
    )
    headers: dict[str, str | bytes] = {}
    if signature is not None:
        headers["X-Zendesk-Webhook-Signature"] = header_bytes(signature)
    if timestamp is not None:
        headers["X-Zendesk-Webhook-Signature-Timestamp"] = header_bytes(timestamp)
    return headers


def signed_headers(endpoint: str, body: bytes) -> dict[str, str | bytes]:
    if endpoint == "/webhooks/stripe":
        return {"Stripe-Signature": sign_stripe(body, BILLING_SECRET, int(time.time()))}
    fresh = zendesk_timestamp(datetime.now(UTC))
    return {
        "X-Zendesk-Webhook-Signature": sign_zendesk(body, SUPPORT_SECRET, fresh),
        "X-Zendesk-Webhook-Signature-Timestamp": fresh,
    }


@st.composite
def unverifiable_deliveries(draw: st.DrawFn) -> Delivery:
    endpoint = draw(st.sampled_from(["/webhooks/stripe", "/webhooks/zendesk"]))
    body = draw(WEBHOOK_BODIES)
    forge = forged_stripe_headers if endpoint.endswith("stripe") else forged_zendesk_headers
    headers = draw(forge(body))
    content_type = draw(CONTENT_TYPES)
    if content_type is not None:
        headers["Content-Type"] = header_bytes(content_type)
    return Delivery(endpoint, body, headers)


def post_delivery(harness: Harness, delivery: Delivery) -> httpx.Response:
    return harness.client.post(delivery.endpoint, content=delivery.body, headers=delivery.headers)


# --- webhook properties --------------------------------------------------------------------


@FUZZ
@given(delivery=unverifiable_deliveries())
@example(  # the sole obstacle is a v1 signature made with a secret we do not hold
    delivery=Delivery(
        "/webhooks/stripe",
        b'{"id":"evt_1","type":"customer.created","created":1,"data":{"object":{"id":"cus_1"}}}',
        {"Stripe-Signature": "t=" + str(int(time.time())) + ",v1=" + "0" * 64},
    )
)
def test_unsigned_forged_or_stale_webhooks_are_refused_and_start_nothing(
    harness: Harness, delivery: Delivery
) -> None:
    harness.temporal.reset("accepting")  # were anything to get through, it would start
    before = harness.rows()
    response = post_delivery(harness, delivery)
    shown = {name: str(value)[:100] for name, value in delivery.headers.items()}
    what = f"POST {delivery.endpoint} {shown} body[:80]={delivery.body[:80]!r}"
    assert_clean_answer(response, what)
    assert 400 <= response.status_code < 500, f"{what} -> {response.status_code}"
    assert harness.temporal.calls == [], f"{what} -> Temporal was called"
    assert_nothing_happened(harness, before, what)


SIGNED_BODIES = st.one_of(
    HOSTILE_EVENTS.map(lambda e: json.dumps(e).encode()),
    JSON_VALUES.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=512),
    DEEP_JSON,
    STARTING_EVENTS.map(lambda e: json.dumps(e).encode()),
)


@FUZZ
@given(
    endpoint=st.sampled_from(["/webhooks/stripe", "/webhooks/zendesk"]),
    body=SIGNED_BODIES,
    mode=st.sampled_from(MODES),
)
@example(endpoint="/webhooks/stripe", body=b"[" * 50_000 + b"]" * 50_000, mode="accepting")
@example(  # a creation time past what the platform's time_t holds (OverflowError)
    endpoint="/webhooks/stripe",
    body=json.dumps(stripe_event("customer.created", {"id": "cus_1"}, created=10**20)).encode(),
    mode="accepting",
)
def test_signed_but_malformed_webhooks_are_refused_cleanly_and_start_only_when_accepted(
    harness: Harness, endpoint: str, body: bytes, mode: Any
) -> None:
    harness.temporal.reset(mode)
    before = harness.rows()
    response = harness.client.post(endpoint, content=body, headers=signed_headers(endpoint, body))
    what = f"POST {endpoint} (signed, Temporal {mode}) body[:120]={body[:120]!r}"
    assert_clean_answer(response, what)
    if response.status_code >= 400 or response.json()["status"] != "accepted":
        assert_nothing_happened(harness, before, what)
        return
    assert response.status_code == 200, what
    started = harness.temporal.effective()
    answer = response.json()
    # One delivery may feed several processes (a paid invoice: its ledger and account sync).
    expected = [answer["workflow_id"], *answer.get("also_started", [])]
    assert [call.workflow_id for call in started] == expected, what
    assert harness.rows()[RECEIPTS] == before[RECEIPTS] + 1, what


def test_a_correctly_signed_stripe_event_is_accepted_once_and_refused_when_tampered(
    harness: Harness,
) -> None:
    """The control: without it, a gate that refused everything would pass the fuzzing."""
    harness.temporal.reset("accepting")
    before = harness.rows()
    event = stripe_event("customer.created", {"id": "cus_control", "object": "customer"})
    body = json.dumps(event).encode()
    headers = signed_headers("/webhooks/stripe", body)

    tampered = harness.client.post(
        "/webhooks/stripe", content=body.replace(b"cus_control", b"cus_attacker"), headers=headers
    )
    assert tampered.status_code == 400
    assert harness.temporal.calls == []

    accepted = harness.client.post("/webhooks/stripe", content=body, headers=headers)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["status"] == "accepted"
    assert [c.workflow_id for c in harness.temporal.effective()] == [
        account_workflow_id("cus_control")
    ]
    assert harness.rows()[RECEIPTS] == before[RECEIPTS] + 1

    harness.temporal.reset("accepting")
    again = harness.client.post("/webhooks/stripe", content=body, headers=headers)
    assert again.json()["status"] == "duplicate"
    assert harness.temporal.calls == []


def test_a_correctly_signed_stripe_event_is_answered_503_and_not_recorded_when_temporal_fails(
    harness: Harness,
) -> None:
    for mode in ("unavailable", "down"):
        harness.temporal.reset(mode)  # type: ignore[arg-type]
        before = harness.rows()
        body = json.dumps(stripe_event("customer.updated", {"id": "cus_later"})).encode()
        response = harness.client.post(
            "/webhooks/stripe", content=body, headers=signed_headers("/webhooks/stripe", body)
        )
        assert response.status_code == 503, (mode, response.text)
        assert_clean_answer(response, f"Temporal {mode}")
        assert_nothing_happened(harness, before, f"Temporal {mode}")


@pytest.mark.parametrize(
    ("event_id", "ticket_id"),
    [("e" * 129, "1042"), ("", "1042"), ("evt-1", "9" * 65)],
    ids=["long-event-id", "empty-event-id", "long-ticket-id"],
)
def test_a_signed_credit_event_with_ids_out_of_bounds_is_refused_before_anything(
    harness: Harness, event_id: str, ticket_id: str
) -> None:
    """Ids the receipts could not hold never reach support, Temporal or the store."""
    harness.temporal.reset("accepting")
    before = harness.rows()
    event = {**zendesk_credit_event(ticket_id), "id": event_id}
    body = json.dumps(event).encode()
    answer = harness.client.post(
        "/webhooks/zendesk", content=body, headers=signed_headers("/webhooks/zendesk", body)
    )
    assert answer.status_code == 400, answer.text
    assert_clean_answer(answer, "ids out of bounds")
    assert_nothing_happened(harness, before, "ids out of bounds")


def test_a_ticket_credit_names_its_agent_as_the_person_so_they_cannot_approve_it(
    support_sandbox: SupportSandbox, tmp_path: Path
) -> None:
    """Separation of duties across systems: the agent's Zendesk id maps to the name of the
    API key the same person holds, and the credit's requester is that name."""
    org = create_organization(support_sandbox, "Duties Ltd", external_id="cus_duties")
    ticket = create_ticket_with_credit(support_sandbox, organization_id=org["id"])
    assigned = httpx.put(
        f"{support_sandbox.url}/api/v2/tickets/{ticket['id']}.json",
        json={"ticket": {"assignee_id": 4242}},
        auth=(f"{support_sandbox.email}/token", support_sandbox.api_token),
        timeout=10,
    )
    assert assigned.status_code == 200, assigned.text
    for identities, requester in (({"4242": "alice"}, "alice"), ({}, "zendesk-agent:4242")):
        configured = fuzz_settings(
            tmp_path / requester.replace(":", "-"),
            support_url=support_sandbox.url,
            support_email=support_sandbox.email,
            support_api_token=support_sandbox.api_token,
            support_agent_identities=identities,
        )
        event = zendesk_credit_event(str(ticket["id"]))
        body = json.dumps(event).encode()
        with serve_harness(configured) as harness:
            accepted = harness.client.post(
                "/webhooks/zendesk", content=body, headers=signed_headers("/webhooks/zendesk", body)
            )
            assert accepted.json()["status"] == "accepted", accepted.text
            [start] = harness.temporal.effective()
        assert start.arg.request.requested_by == requester
        # The approval rule then refuses that person's own key.
        refusal = approval_refusal(start.arg.request, requester, "finance", CreditPolicy(), False)
        assert refusal == "the requester may not approve their own credit"


def test_a_correctly_signed_zendesk_credit_event_is_accepted_once_and_refused_when_forged(
    support_sandbox: SupportSandbox, tmp_path: Path
) -> None:
    """The control for Zendesk, against the support sandbox so the ticket can be read."""
    configured = fuzz_settings(
        tmp_path,
        support_url=support_sandbox.url,
        support_email=support_sandbox.email,
        support_api_token=support_sandbox.api_token,
    )
    org = create_organization(support_sandbox, "Fuzz Ltd", external_id="cus_fuzz")
    ticket = create_ticket_with_credit(support_sandbox, organization_id=org["id"])
    event = zendesk_credit_event(str(ticket["id"]))
    body = json.dumps(event).encode()
    with serve_harness(configured) as harness:
        before = harness.rows()
        fresh = zendesk_timestamp(datetime.now(UTC))
        forged = {
            "X-Zendesk-Webhook-Signature": sign_zendesk(body, "not-the-secret", fresh),
            "X-Zendesk-Webhook-Signature-Timestamp": fresh,
        }
        refused = harness.client.post("/webhooks/zendesk", content=body, headers=forged)
        assert refused.status_code == 400
        assert harness.temporal.calls == []

        headers = signed_headers("/webhooks/zendesk", body)
        accepted = harness.client.post("/webhooks/zendesk", content=body, headers=headers)
        assert accepted.status_code == 200, accepted.text
        assert accepted.json()["status"] == "accepted", accepted.json()
        assert [c.workflow_id for c in harness.temporal.effective()] == [
            f"credit/{ticket['id']}/{event['id']}"
        ]
        assert harness.rows()[RECEIPTS] == before[RECEIPTS] + 1

        harness.temporal.reset("accepting")
        again = harness.client.post("/webhooks/zendesk", content=body, headers=headers)
        assert again.json()["status"] == "duplicate"
        assert harness.temporal.calls == []


# --- /v1 from the OpenAPI document ---------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    parameters: tuple[dict[str, Any], ...]
    body: dict[str, Any] | None

    @property
    def key(self) -> tuple[str, str]:
        return (self.method, self.path)


def operations(document: dict[str, Any]) -> list[Operation]:
    found = []
    for path, methods in document["paths"].items():
        if path.startswith("/webhooks/"):
            continue  # fuzzed above, with their own signatures
        for method, spec in methods.items():
            content = spec.get("requestBody", {}).get("content", {})
            body = content.get("application/json", {}).get("schema")
            found.append(Operation(method.upper(), path, tuple(spec.get("parameters", ())), body))
    return found


class Schemas:
    """Hypothesis strategies from the JSON schemas FastAPI writes (the subset it uses)."""

    # Properties (by schema title) whose type alone would seldom get past the model: a bare
    # "string" is almost never a currency. Plausible values first, then the hostile ones.
    HINTS: Mapping[tuple[str, str], st.SearchStrategy[Any]] = {
        ("Money", "currency"): st.sampled_from(["USD", "EUR", "JPY", "KWD"])
        | st.sampled_from(["usd", "XXX", "", "US", "EURO"]),
        ("Money", "amount"): st.one_of(
            st.decimals(min_value=0, max_value=10**6, places=2).map(str),
            st.sampled_from(["0", "-1", "NaN", "Infinity", "-0", "1e999999", "1E-999999"]),
            st.floats(),
            st.integers(),
        ),
    }

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            name = schema["$ref"].removeprefix("#/components/schemas/")
            schema = self.document["components"]["schemas"][name]
        return schema

    def values(self, schema: dict[str, Any]) -> st.SearchStrategy[Any]:
        schema = self.resolve(schema)
        if "anyOf" in schema or "oneOf" in schema:
            return st.one_of([self.values(s) for s in schema.get("anyOf", schema.get("oneOf"))])
        if "enum" in schema:
            return st.sampled_from(schema["enum"])
        if "const" in schema:
            return st.just(schema["const"])
        kind = schema.get("type")
        if kind == "null":
            return st.none()
        if kind == "boolean":
            return st.booleans()
        if kind == "integer":
            low, high = schema.get("minimum"), schema.get("maximum")
            edges = [v for v in (low, high, -(2**63), 2**63, 10**30) if v is not None]
            return st.integers(low, high) | st.sampled_from(edges)
        if kind == "number":
            low, high = schema.get("minimum"), schema.get("maximum")
            edges = [v for v in (low, high, 1e308, float("inf"), -0.0) if v is not None]
            return st.floats(low, high, allow_nan=False) | st.sampled_from(edges)
        if kind == "string":
            return self.strings(schema)
        if kind == "array":
            low = schema.get("minItems", 0)
            return st.lists(self.values(schema.get("items", {})), min_size=low, max_size=low + 4)
        if kind == "object" or "properties" in schema:
            properties = schema.get("properties", {})
            required = set(schema.get("required", ()))
            title = schema.get("title", "")
            pick = {
                name: self.HINTS.get((title, name), self.values(s))
                for name, s in properties.items()
            }
            return st.fixed_dictionaries(
                {n: s for n, s in pick.items() if n in required},
                optional={n: s for n, s in pick.items() if n not in required},
            )
        return JSON_VALUES

    @staticmethod
    def strings(schema: dict[str, Any]) -> st.SearchStrategy[str]:
        # The edges of the calendar, where date and datetime arithmetic overflows.
        if schema.get("format") == "date":
            return (st.dates() | st.sampled_from([date.min, date.max])).map(str)
        if schema.get("format") == "date-time":
            edges = st.sampled_from([datetime.min, datetime.max]).map(
                lambda d: d.replace(tzinfo=UTC)
            )
            return (st.datetimes(timezones=st.just(UTC)) | edges).map(datetime.isoformat)
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        low = schema.get("minLength", 0)
        return st.text(min_size=low, max_size=min(schema.get("maxLength", 40), low + 40))

    def hostile(self, schema: dict[str, Any]) -> st.SearchStrategy[Any]:
        """Mostly schema-valid, often one field off, sometimes anything at all."""
        valid = self.values(schema)
        return st.one_of(valid, valid, valid.flatmap(mutated), JSON_VALUES)


def mutated(value: Any) -> st.SearchStrategy[Any]:
    if not isinstance(value, dict) or not value:
        return JSON_VALUES
    keys = sorted(value)
    return st.one_of(
        st.sampled_from(keys).map(lambda k: {n: v for n, v in value.items() if n != k}),
        st.tuples(st.sampled_from(keys), JSON_VALUES).map(lambda kv: {**value, kv[0]: kv[1]}),
        st.tuples(st.text(max_size=10), JSON_VALUES).map(lambda kv: {**value, kv[0]: kv[1]}),
    )


def as_query_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "" if value is None else str(value)


# Temporal's codec protocol (/codec/encode|decode reads the raw body): Payloads as protobuf
# JSON, with base64 fields that may or may not be base64, and data that was never encrypted.
BASE64ISH = st.binary(max_size=48).map(lambda b: base64.b64encode(b).decode()) | st.text(
    max_size=12
)
PAYLOADS = st.fixed_dictionaries(
    {
        "payloads": st.lists(
            st.fixed_dictionaries(
                {"data": BASE64ISH},
                optional={
                    "metadata": st.dictionaries(
                        st.sampled_from(["encoding", "encryption-key-id", "x"]), BASE64ISH
                    )
                },
            ),
            max_size=3,
        )
    }
)


@dataclass(frozen=True)
class Call:
    method: str
    url: str
    params: dict[str, str]
    headers: dict[str, str | bytes]
    content: bytes | None


def path_values(name: str) -> st.SearchStrategy[str]:
    safe = st.from_regex(r"[A-Za-z0-9_\-.:/]{1,60}", fullmatch=True)
    return st.one_of(
        safe.map(lambda s: ID_SHAPES.get(name, "") + s),
        st.text(max_size=80),
        st.sampled_from(["", "..", "../status", "%00", "a" * 300, "credit/x:decide", "runs/"]),
    )


@st.composite
def calls_to(draw: st.DrawFn, operation: Operation, schemas: Schemas) -> Call:
    url = operation.path
    params: dict[str, str] = {}
    headers: dict[str, str | bytes] = {}
    for parameter in operation.parameters:
        name, where = parameter["name"], parameter["in"]
        if where == "path":
            url = url.replace("{" + name + "}", quote(draw(path_values(name)), safe=""))
        elif where == "query" and draw(st.booleans()):
            values = schemas.values(parameter["schema"]).map(as_query_value)
            params[name] = draw(st.one_of(values, values, st.text(max_size=40)))
        elif where == "header" and name != "authorization" and draw(st.booleans()):
            values = schemas.values(parameter["schema"]).map(as_query_value)
            headers[name] = header_bytes(draw(st.one_of(values, values, HEADER_TEXT)))
    content = None
    if operation.body is not None:  # mostly JSON, mostly close to the schema
        as_json = schemas.hostile(operation.body).map(lambda v: json.dumps(v).encode())
        raw = st.one_of(st.binary(max_size=200), DEEP_JSON, st.none())
        content = draw(st.one_of(as_json, as_json, as_json, raw))
    elif operation.method == "POST":  # routes that read the raw body themselves, or none
        as_json = st.one_of(PAYLOADS, JSON_VALUES).map(lambda v: json.dumps(v).encode())
        content = draw(st.one_of(as_json, st.binary(max_size=200), DEEP_JSON, st.none()))
    if content is not None:
        json_type = st.just("application/json")
        content_type = draw(st.one_of(json_type, json_type, json_type, CONTENT_TYPES))
        if content_type is not None:
            headers["Content-Type"] = header_bytes(content_type)
    return Call(operation.method, url, params, headers, content)


# Who is knocking: no key, an unknown one, an expired one, a key sent the wrong way, or a role.
UNAUTHENTICATED = ("none", "unknown", "expired", "not-bearer", "garbage")


@st.composite
def authorizations(draw: st.DrawFn, credential: str) -> dict[str, str | bytes]:
    if credential == "none":
        return {}
    if credential == "unknown":
        key = draw(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1))
        header = f"Bearer {key}"
        assert key not in (*API_KEYS.values(), EXPIRED_KEY)
    elif credential == "expired":
        header = f"Bearer {EXPIRED_KEY}"
    elif credential == "not-bearer":
        key = draw(st.sampled_from([*API_KEYS.values(), EXPIRED_KEY]))
        header = draw(st.sampled_from([f"Basic {key}", key, f"Bearer{key}", f"Token {key}"]))
    elif credential == "garbage":
        header = draw(HEADER_TEXT)
    else:
        header = draw(st.sampled_from(["Bearer ", "bearer ", "BEARER "])) + API_KEYS[credential]
    return {"Authorization": header_bytes(header)}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """The harness with payload keys too, so the /codec routes are in the document."""
    configured = fuzz_settings(tmp_path_factory.mktemp("api"), payload_keys=[PAYLOAD_KEY])
    with serve_harness(configured) as served:
        yield served


def test_every_operation_in_the_openapi_document_has_its_roles_written_down(api: Harness) -> None:
    documented = {operation.key for operation in operations(api.app.openapi())}
    assert documented == set(ROLES_BY_OPERATION)
    assert len(documented) > 15  # the generator below really sees the API


# Refusals that come before the key is looked at, by what they say: the router's own (no such
# path, or not with that method), and FastAPI's for a body that is not JSON at all (it decodes
# the body before it runs the dependencies that check the key). None reaches a handler, so
# none can touch Temporal or the store; a handler's own 404 ("no credit …") does not count.
REFUSED_BEFORE_THE_KEY = {
    404: re.compile(r"Not Found$"),
    405: re.compile(r"Method Not Allowed$"),
    400: re.compile(r"There was an error parsing the body$"),
    422: re.compile(r"body(\.\d+)?: JSON decode error$"),
}


def expected_refusal(status: int, response: httpx.Response) -> bool:
    said = REFUSED_BEFORE_THE_KEY.get(status)
    return said is not None and said.match(response.json()["error"]) is not None


def send_fuzzed_call(
    api: Harness, operation: Operation, credential: str, data: st.DataObject
) -> tuple[httpx.Response, str]:
    """One request to `operation` generated from its part of the document, sent with the key of
    `credential`; checks what every answer must be, and returns it with a description."""
    mode = data.draw(st.sampled_from(MODES), label="temporal")
    call = data.draw(calls_to(operation, Schemas(api.app.openapi())), label="call")
    headers = {**call.headers, **data.draw(authorizations(credential), label="authorization")}

    api.temporal.reset(mode)
    before = api.rows()
    response = api.client.request(
        call.method, call.url, params=call.params, headers=headers, content=call.content
    )
    status = response.status_code
    what = f"{call.method} {call.url} {call.params} as {credential} (Temporal {mode})"
    what += f" -> {status} {response.text[:200]}"
    note_event(f"{credential} -> {status}")  # shown by --hypothesis-show-statistics
    assert not api.temporal.unmodelled, f"{what}: the recorder lacks {api.temporal.unmodelled}"
    assert_clean_answer(response, what)
    if status >= 400:
        assert_nothing_happened(api, before, what)
    if operation.method == "GET" or operation.key in STARTS_NOTHING:
        assert not api.temporal.effective(), what
        assert api.rows()[AUDIT] == before[AUDIT], what
    return response, what


@pytest.fixture(scope="module")
def documented(api: Harness) -> dict[tuple[str, str], Operation]:
    return {operation.key: operation for operation in operations(api.app.openapi())}


# Every operation gets its own examples, so a rarely drawn one is not left unfuzzed.
EACH_OPERATION = pytest.mark.parametrize(
    "key", sorted(ROLES_BY_OPERATION), ids=lambda key: f"{key[0]} {key[1]}"
)
# Each protected operation with each way of not being allowed in: no usable key (four forms),
# a key past its expiry, or a valid key of a role the operation does not admit.
REFUSALS = [
    pytest.param(key, refused, id=f"{key[0]} {key[1]} {'/'.join(refused)}")
    for key, allowed in sorted(ROLES_BY_OPERATION.items())
    if allowed is not None
    for refused in (
        tuple(u for u in UNAUTHENTICATED if u != "expired"),
        ("expired",),
        tuple(sorted(set(ROLES) - allowed)),
    )
    if refused
]


@pytest.mark.parametrize(("key", "refused"), REFUSALS)
@settings(FUZZ, max_examples=12)
@given(data=st.data())
def test_requests_without_a_valid_key_or_role_are_refused_and_touch_nothing(
    api: Harness,
    documented: dict[tuple[str, str], Operation],
    key: Any,
    refused: tuple[str, ...],
    data: st.DataObject,
) -> None:
    credential = data.draw(st.sampled_from(refused), label="key")
    response, what = send_fuzzed_call(api, documented[key], credential, data)
    status = response.status_code
    if credential in UNAUTHENTICATED:
        assert status == 401 or expected_refusal(status, response), what
        if status == 401 and credential == "expired":
            assert f"expired on {EXPIRED_ON}" in response.json()["error"], what
    else:
        assert status == 403 or expected_refusal(status, response), what
    assert api.temporal.calls == [], f"{what}: Temporal was called"


def test_every_protected_operation_is_fuzzed_with_each_role_it_refuses() -> None:
    wrong_roles = {(p.values[0], role) for p in REFUSALS for role in p.values[1] if role in ROLES}
    expected = {
        (key, role)
        for key, allowed in ROLES_BY_OPERATION.items()
        for role in ROLES
        if allowed is not None and role not in allowed
    }
    assert wrong_roles == expected and len(expected) > 10


@EACH_OPERATION
@settings(FUZZ, max_examples=60)
@given(data=st.data())
def test_authorised_hostile_requests_never_crash_and_refusals_change_nothing(
    api: Harness, documented: dict[tuple[str, str], Operation], key: Any, data: st.DataObject
) -> None:
    allowed = ROLES_BY_OPERATION[key]
    credential = data.draw(st.sampled_from(sorted(allowed or ROLES)), label="key")
    response, what = send_fuzzed_call(api, documented[key], credential, data)
    assert response.status_code not in (401, 403), what


# What the properties above found, kept as plain cases: each was a 500 before its fix.
FOUND_BY_FUZZING = [
    pytest.param("GET", "/v1/exceptions?min_age_hours=17758721", None, 422, id="age-overflow"),
    pytest.param("GET", "/v1/approvals?min_age_hours=inf", None, 422, id="age-infinite"),
    pytest.param(
        "POST", "/v1/reconciliations", b'{"period_from": "9999-12-31"}', 422, id="last-day"
    ),
    pytest.param("POST", "/v1/billing/events:replay", b'{"event_ids": [""]}', 422, id="empty-id"),
    pytest.param("POST", "/codec/decode", b"\x80", 400, id="codec-not-utf8"),
]


@pytest.mark.parametrize(("method", "url", "body", "status"), FOUND_BY_FUZZING)
def test_inputs_that_once_crashed_the_api_are_refused_cleanly(
    api: Harness, method: str, url: str, body: bytes | None, status: int
) -> None:
    api.temporal.reset("accepting")
    before = api.rows()
    headers = {"Authorization": f"Bearer {API_KEYS['finance_admin']}"}
    response = api.client.request(method, url, content=body, headers=headers)
    assert response.status_code == status, response.text
    assert_clean_answer(response, url)
    assert_nothing_happened(api, before, url)


@pytest.mark.parametrize(
    ("endpoint", "headers", "body"),
    [
        pytest.param("/webhooks/stripe", {"Stripe-Signature": b"t=\xb2,v1=00"}, b"{}", id="t=²"),
        pytest.param(
            "/webhooks/stripe", {"Stripe-Signature": "t=" + "9" * 4301 + ",v1=00"}, b"{}",
            id="t=4301-digits",
        ),
        pytest.param("/webhooks/stripe", None, b"[" * 100_000, id="stripe-deep-json"),
        pytest.param("/webhooks/zendesk", None, b"[" * 100_000, id="zendesk-deep-json"),
        pytest.param(
            "/webhooks/stripe", None,
            json.dumps(stripe_event("customer.created", {"id": "cus_1"}, 10**20)).encode(),
            id="created-past-time_t",
        ),
    ],
)  # fmt: skip
def test_webhooks_that_once_crashed_the_ingress_are_refused_with_400(
    harness: Harness, endpoint: str, headers: dict[str, str | bytes] | None, body: bytes
) -> None:
    harness.temporal.reset("accepting")
    before = harness.rows()
    sent = headers if headers is not None else signed_headers(endpoint, body)
    response = harness.client.post(endpoint, content=body, headers=sent)
    assert response.status_code == 400, response.text
    assert harness.temporal.calls == []
    assert_nothing_happened(harness, before, endpoint)


def test_the_fuzzed_api_can_also_say_yes(api: Harness) -> None:
    """A control for the property above: a well-formed, authorised request is accepted,
    starts its workflow and is audited — the refusals are the API's, not the harness's."""
    api.temporal.reset("accepting")
    before = api.rows()
    response = api.client.post(
        "/v1/accounts/cus_yes:sync", headers={"Authorization": f"Bearer {API_KEYS['ops']}"}
    )
    assert response.status_code == 202, response.text
    assert [c.workflow_id for c in api.temporal.effective()] == [account_workflow_id("cus_yes")]
    assert api.rows()[AUDIT] == before[AUDIT] + 1
