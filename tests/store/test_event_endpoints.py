"""Endpoints of the webhooks out and their dead letters, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.exc import IntegrityError
from standardwebhooks import Webhook

from adapters.events.subscriptions import ENDPOINT_ID_PATTERN
from adapters.store import EventEndpointStore, IntegrationStore, UnknownEndpointError

APPROVED = "com.ledgerbridge.credit.approved.v1"


@pytest.fixture
def endpoints(store_url: str) -> Iterator[EventEndpointStore]:
    store = IntegrationStore(store_url)
    store.migrate()
    yield EventEndpointStore(store)
    store.dispose()


def create(endpoints: EventEndpointStore, **changes: object) -> str:
    values: dict[str, object] = {
        "url": "https://subscriber.example/hooks", "event_types": [APPROVED],
        "description": "finance data warehouse", "created_by": "ops-1",
    }  # fmt: skip
    return endpoints.create_endpoint(**{**values, **changes}).id  # type: ignore[arg-type]


def test_a_new_endpoint_is_active_with_one_secret_standard_webhooks_reads(
    endpoints: EventEndpointStore,
) -> None:
    endpoint_id = create(endpoints)
    endpoint = endpoints.endpoint(endpoint_id)
    assert endpoint is not None and re.fullmatch(ENDPOINT_ID_PATTERN, endpoint.id)
    assert (endpoint.status, endpoint.event_types, endpoint.created_by) == (
        "active", (APPROVED,), "ops-1")  # fmt: skip
    [secret] = endpoint.secrets
    assert secret.secret.startswith("whsec_") and secret.expires_at is None
    assert endpoint.created_at.tzinfo is not None
    Webhook(secret.secret)  # the library takes it as it is
    assert endpoints.endpoint("ep_" + "0" * 32) is None


def test_endpoints_are_listed_oldest_first_and_by_status(endpoints: EventEndpointStore) -> None:
    first, second = create(endpoints), create(endpoints, event_types=[])
    endpoints.pause_endpoint(first, "maintenance")
    assert [e.id for e in endpoints.endpoints()] == [first, second]
    assert [e.id for e in endpoints.endpoints("paused")] == [first]
    assert [e.id for e in endpoints.endpoints("active")] == [second]


def test_an_update_changes_only_what_is_given(endpoints: EventEndpointStore) -> None:
    endpoint_id = create(endpoints)
    before = endpoints.endpoint(endpoint_id)
    assert before is not None
    after = endpoints.update_endpoint(endpoint_id, url="https://elsewhere.example/in")
    assert (after.url, after.event_types, after.description) == (
        "https://elsewhere.example/in", (APPROVED,), "finance data warehouse")  # fmt: skip
    assert after.secrets == before.secrets and after.updated_at >= before.updated_at
    cleared = endpoints.update_endpoint(endpoint_id, event_types=[], description="")
    assert (cleared.event_types, cleared.description) == ((), None)
    with pytest.raises(UnknownEndpointError):
        endpoints.update_endpoint("ep_" + "1" * 32, url="https://x.example")


def test_a_rotation_keeps_the_old_secret_valid_for_the_overlap_only(
    endpoints: EventEndpointStore,
) -> None:
    endpoint_id = create(endpoints)
    old = endpoints.endpoint(endpoint_id).secrets[0].secret  # type: ignore[union-attr]
    rotated = endpoints.rotate_secret(endpoint_id)
    new, previous = rotated.secrets
    assert previous.secret == old and new.secret != old and new.expires_at is None
    assert previous.expires_at is not None
    assert (
        timedelta(hours=23, minutes=59)
        < previous.expires_at - new.created_at
        <= timedelta(hours=24)
    )
    now = datetime.now(UTC)
    assert rotated.signing_secrets(now) == [new.secret, old]
    assert rotated.signing_secrets(now + timedelta(hours=25)) == [new.secret]
    # A second rotation at once: three secrets, the first one's expiry not extended.
    again = endpoints.rotate_secret(endpoint_id, overlap=timedelta(hours=48))
    assert [s.secret for s in again.secrets][1:] == [new.secret, old]
    assert again.secrets[2].expires_at == previous.expires_at
    with pytest.raises(UnknownEndpointError):
        endpoints.rotate_secret("ep_" + "2" * 32)


def test_pause_and_resume_and_the_failing_clock(endpoints: EventEndpointStore) -> None:
    endpoint_id = create(endpoints)
    t0 = datetime(2026, 12, 1, 8, tzinfo=UTC)
    endpoints.record_delivery(endpoint_id, False, t0)
    endpoints.record_delivery(endpoint_id, False, t0 + timedelta(hours=1))  # still since t0
    assert endpoints.endpoint(endpoint_id).failing_since == t0  # type: ignore[union-attr]
    paused = endpoints.pause_endpoint(endpoint_id, "410 Gone")
    assert (paused.status, paused.paused_reason, paused.failing_since) == ("paused", "410 Gone", t0)
    resumed = endpoints.resume_endpoint(endpoint_id)
    assert (resumed.status, resumed.paused_reason, resumed.failing_since) == ("active", None, None)
    endpoints.record_delivery(endpoint_id, False, t0 + timedelta(hours=2))
    endpoints.record_delivery(endpoint_id, True, t0 + timedelta(hours=3))
    assert endpoints.endpoint(endpoint_id).failing_since is None  # type: ignore[union-attr]
    with pytest.raises(UnknownEndpointError):
        endpoints.pause_endpoint("ep_" + "3" * 32, "x")


def dead(endpoints: EventEndpointStore, endpoint_id: str, event_id: str, at: datetime) -> None:
    endpoints.add_dead_letter(
        endpoint_id=endpoint_id, event_id=event_id, event_type=APPROVED, subject="credit/1",
        body=b'{"id": "%s"}' % event_id.encode(), attempts=40, last_status=500,
        last_error="HTTP 500: boom", first_attempt_at=at - timedelta(days=3), dead_at=at,
    )  # fmt: skip


def test_dead_letters_are_kept_once_per_event_and_replayed_since_a_time(
    endpoints: EventEndpointStore,
) -> None:
    endpoint_id, other = create(endpoints), create(endpoints)
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    dead(endpoints, endpoint_id, "e-old", t0)
    dead(endpoints, endpoint_id, "e-1", t0 + timedelta(days=1))
    dead(endpoints, endpoint_id, "e-2", t0 + timedelta(days=2))
    dead(endpoints, other, "e-1", t0 + timedelta(days=2))
    letters = endpoints.dead_letters(endpoint_id)
    assert [d.event_id for d in letters] == ["e-old", "e-1", "e-2"]
    assert letters[1].body == b'{"id": "e-1"}' and letters[1].last_status == 500
    assert letters[1].dead_at == t0 + timedelta(days=1)
    since = t0 + timedelta(hours=12)
    assert [d.event_id for d in endpoints.dead_letters(endpoint_id, since=since)] == ["e-1", "e-2"]
    assert [d.event_id for d in endpoints.dead_letters(endpoint_id, after_id=letters[0].id,
                                                       limit=1)] == ["e-1"]  # fmt: skip

    assert endpoints.request_replay(endpoint_id, since) == 2
    assert endpoints.request_replay(endpoint_id, since) == 0  # already asked for
    waiting = endpoints.replay_requested(endpoint_id)
    assert [d.event_id for d in waiting] == ["e-1", "e-2"]
    assert endpoints.replay_requested(other) == []
    assert endpoints.mark_replayed([waiting[0].id]) == 1
    assert [d.event_id for d in endpoints.replay_requested(endpoint_id)] == ["e-2"]

    # Dead again after its replay: the same row, counted afresh, replayable again.
    dead(endpoints, endpoint_id, "e-1", t0 + timedelta(days=5))
    again = [d for d in endpoints.dead_letters(endpoint_id) if d.event_id == "e-1"]
    assert len(again) == 1 and again[0].id == waiting[0].id
    assert (again[0].replay_requested_at, again[0].replayed_at) == (None, None)
    assert endpoints.request_replay(endpoint_id, since) == 1


def test_a_dead_letter_needs_its_endpoint(endpoints: EventEndpointStore) -> None:
    with pytest.raises(IntegrityError):
        dead(endpoints, "ep_" + "4" * 32, "e-1", datetime(2026, 12, 1, tzinfo=UTC))
