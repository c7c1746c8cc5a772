"""The store of webhooks out: the subscribers' endpoints (URL, event types, secrets, whether
deliveries go out) and the events an endpoint did not take within the retry window.

Endpoints are read back as `EventEndpoint` (adapters/events/subscriptions.py), never as rows,
so the delivery engine and the API hold a frozen value and no session. What is checked about
an endpoint's URL and event types is checked by the caller (it knows the API's own address);
here only what the tables guarantee is enforced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, RowMapping, delete, insert, select, update

from adapters.events.subscriptions import (
    ACTIVE,
    PAUSED,
    ROTATION_OVERLAP,
    EndpointSecret,
    EventEndpoint,
    new_endpoint_id,
    new_secret,
    rotated,
)
from adapters.store.models import EventDeadLetterRow, EventEndpointRow, insert_for, utcnow
from adapters.store.store import IntegrationStore

_ENDPOINTS = EventEndpointRow.__table__
_DEAD = EventDeadLetterRow.__table__
MAX_REASON = 500


class UnknownEndpointError(LookupError):
    """No event endpoint has that id."""


@dataclass(frozen=True)
class DeadLetter:
    """An event an endpoint never took, as stored."""

    id: int
    endpoint_id: str
    event_id: str
    event_type: str
    subject: str
    body: bytes
    attempts: int
    last_status: int | None
    last_error: str | None
    first_attempt_at: datetime
    dead_at: datetime
    replay_requested_at: datetime | None
    replayed_at: datetime | None


class EventEndpointStore:
    """Endpoints and dead letters, over the integration store's engine."""

    def __init__(self, store: IntegrationStore) -> None:
        self._engine = store.engine

    # --- endpoints -------------------------------------------------------------------------

    def create_endpoint(
        self,
        *,
        url: str,
        event_types: Sequence[str],
        description: str | None,
        created_by: str,
    ) -> EventEndpoint:
        """A new active endpoint with a new secret (the one place it is read back in clear,
        with the rotation's, to hand to the subscriber)."""
        now, endpoint_id = utcnow(), new_endpoint_id()
        secret = EndpointSecret(new_secret(), now)
        row = {
            "id": endpoint_id, "url": url, "event_types": list(event_types),
            "secrets": [secret.as_json()], "description": description, "status": ACTIVE,
            "paused_reason": None, "failing_since": None, "created_at": now, "updated_at": now,
            "created_by": created_by,
        }  # fmt: skip
        with self._engine.begin() as conn:
            conn.execute(insert(EventEndpointRow).values(row))
            return self._read(conn, endpoint_id)

    def endpoints(self, status: str | None = None) -> list[EventEndpoint]:
        """Every endpoint, oldest first; only those of `status` when given."""
        query = select(_ENDPOINTS).order_by(EventEndpointRow.created_at, EventEndpointRow.id)
        if status is not None:
            query = query.where(EventEndpointRow.status == status)
        with self._engine.connect() as conn:
            return [_endpoint_from(row) for row in conn.execute(query).mappings()]

    def endpoint(self, endpoint_id: str) -> EventEndpoint | None:
        with self._engine.connect() as conn:
            row = conn.execute(
                select(_ENDPOINTS).where(EventEndpointRow.id == endpoint_id)
            ).mappings().first()  # fmt: skip
        return _endpoint_from(row) if row is not None else None

    def update_endpoint(
        self,
        endpoint_id: str,
        *,
        url: str | None = None,
        event_types: Sequence[str] | None = None,
        description: str | None = None,
    ) -> EventEndpoint:
        """Change what is given (None: unchanged; an empty description clears it)."""
        values: dict[str, object] = {}
        if url is not None:
            values["url"] = url
        if event_types is not None:
            values["event_types"] = list(event_types)
        if description is not None:
            values["description"] = description or None
        return self._change(endpoint_id, values)

    def rotate_secret(
        self, endpoint_id: str, overlap: timedelta = ROTATION_OVERLAP
    ) -> EventEndpoint:
        """A new secret first; the ones still valid sign beside it until `overlap` is over.
        The row is locked while it is read and written, so two rotations do not lose one."""
        now = utcnow()
        with self._engine.begin() as conn:
            current = self._read(conn, endpoint_id, for_update=True)
            secrets = rotated(current.secrets, new_secret(), now, overlap)
            conn.execute(
                update(EventEndpointRow).where(EventEndpointRow.id == endpoint_id)
                .values(secrets=[s.as_json() for s in secrets], updated_at=now)
            )  # fmt: skip
            return self._read(conn, endpoint_id)

    def pause_endpoint(self, endpoint_id: str, reason: str) -> EventEndpoint:
        """No delivery goes out until it is resumed; events wait for it (they are not lost)."""
        return self._change(endpoint_id, {"status": PAUSED, "paused_reason": reason[:MAX_REASON]})

    def delete_endpoint(self, endpoint_id: str) -> EventEndpoint:
        """Remove the endpoint and its dead letters; returns what it was."""
        with self._engine.begin() as conn:
            endpoint = self._read(conn, endpoint_id, for_update=True)
            conn.execute(delete(EventDeadLetterRow)
                         .where(EventDeadLetterRow.endpoint_id == endpoint_id))  # fmt: skip
            conn.execute(delete(EventEndpointRow).where(EventEndpointRow.id == endpoint_id))
        return endpoint

    def resume_endpoint(self, endpoint_id: str) -> EventEndpoint:
        """Deliveries go out again; the 24 h of failures are counted afresh."""
        return self._change(
            endpoint_id, {"status": ACTIVE, "paused_reason": None, "failing_since": None}
        )

    def record_delivery(self, endpoint_id: str, delivered: bool, at: datetime) -> None:
        """A delivery's result on the endpoint: one that succeeds clears `failing_since`,
        one that fails sets it unless it was set already (the failures are continuous)."""
        where = EventEndpointRow.id == endpoint_id
        with self._engine.begin() as conn:
            if delivered:
                statement = update(EventEndpointRow).where(
                    where, EventEndpointRow.failing_since.is_not(None)
                )
                conn.execute(statement.values(failing_since=None))
            else:
                statement = update(EventEndpointRow).where(
                    where, EventEndpointRow.failing_since.is_(None)
                )
                conn.execute(statement.values(failing_since=at))

    def _change(self, endpoint_id: str, values: dict[str, object]) -> EventEndpoint:
        with self._engine.begin() as conn:
            if values:
                changed = conn.execute(
                    update(EventEndpointRow).where(EventEndpointRow.id == endpoint_id)
                    .values(**values, updated_at=utcnow())
                ).rowcount  # fmt: skip
                if changed == 0:
                    raise UnknownEndpointError(endpoint_id)
            return self._read(conn, endpoint_id)

    @staticmethod
    def _read(conn: Connection, endpoint_id: str, for_update: bool = False) -> EventEndpoint:
        query = select(_ENDPOINTS).where(EventEndpointRow.id == endpoint_id)
        row = conn.execute(query.with_for_update() if for_update else query).mappings().first()
        if row is None:
            raise UnknownEndpointError(endpoint_id)
        return _endpoint_from(row)

    # --- dead letters ----------------------------------------------------------------------

    def add_dead_letter(
        self,
        *,
        endpoint_id: str,
        event_id: str,
        event_type: str,
        subject: str,
        body: bytes,
        attempts: int,
        last_status: int | None,
        last_error: str | None,
        first_attempt_at: datetime,
        dead_at: datetime | None = None,
    ) -> DeadLetter:
        """Keep an event the endpoint did not take. The same event dead again (after a
        replay) updates its row: one row per endpoint and event, its replay marks cleared."""
        row = {
            "endpoint_id": endpoint_id, "event_id": event_id, "event_type": event_type,
            "subject": subject, "body": body.decode(), "attempts": attempts,
            "last_status": last_status, "last_error": last_error,
            "first_attempt_at": first_attempt_at, "dead_at": dead_at or utcnow(),
            "replay_requested_at": None, "replayed_at": None,
        }  # fmt: skip
        with self._engine.begin() as conn:
            upsert = insert_for(conn.dialect.name)
            statement = upsert(EventDeadLetterRow).values(row)
            kept = {k: v for k, v in row.items() if k not in ("endpoint_id", "event_id")}
            conn.execute(statement.on_conflict_do_update(
                index_elements=["endpoint_id", "event_id"], set_=kept))  # fmt: skip
            found = conn.execute(
                select(_DEAD).where(EventDeadLetterRow.endpoint_id == endpoint_id,
                                    EventDeadLetterRow.event_id == event_id)
            ).mappings().one()  # fmt: skip
        return _dead_letter_from(found)

    def dead_letters(
        self,
        endpoint_id: str,
        *,
        since: datetime | None = None,
        after_id: int | None = None,
        limit: int = 100,
    ) -> list[DeadLetter]:
        """An endpoint's dead letters, oldest first (keyset pages by id)."""
        query = select(_DEAD).where(EventDeadLetterRow.endpoint_id == endpoint_id)
        if since is not None:
            query = query.where(EventDeadLetterRow.dead_at >= since.astimezone(UTC))
        if after_id is not None:
            query = query.where(EventDeadLetterRow.id > after_id)
        with self._engine.connect() as conn:
            rows = conn.execute(query.order_by(EventDeadLetterRow.id).limit(limit)).mappings()
            return [_dead_letter_from(row) for row in rows]

    def request_replay(self, endpoint_id: str, since: datetime) -> int:
        """Mark for redelivery the endpoint's dead letters dead since `since` and not yet
        marked nor replayed; returns how many were marked (the consumer delivers them)."""
        with self._engine.begin() as conn:
            return conn.execute(
                update(EventDeadLetterRow).where(
                    EventDeadLetterRow.endpoint_id == endpoint_id,
                    EventDeadLetterRow.dead_at >= since.astimezone(UTC),
                    EventDeadLetterRow.replay_requested_at.is_(None),
                    EventDeadLetterRow.replayed_at.is_(None),
                ).values(replay_requested_at=utcnow())
            ).rowcount  # fmt: skip

    def replay_requested(self, endpoint_id: str, limit: int = 100) -> list[DeadLetter]:
        """What waits to be redelivered to the endpoint, oldest first."""
        query = (
            select(_DEAD)
            .where(EventDeadLetterRow.endpoint_id == endpoint_id,
                   EventDeadLetterRow.replay_requested_at.is_not(None),
                   EventDeadLetterRow.replayed_at.is_(None))
            .order_by(EventDeadLetterRow.id).limit(limit)
        )  # fmt: skip
        with self._engine.connect() as conn:
            return [_dead_letter_from(row) for row in conn.execute(query).mappings()]

    def mark_replayed(self, dead_letter_ids: Sequence[int], at: datetime | None = None) -> int:
        """Redelivered (handed back to the delivery engine); returns how many were marked."""
        if not dead_letter_ids:
            return 0
        with self._engine.begin() as conn:
            return conn.execute(
                update(EventDeadLetterRow).where(EventDeadLetterRow.id.in_(dead_letter_ids),
                                    EventDeadLetterRow.replayed_at.is_(None))
                .values(replayed_at=at or utcnow())
            ).rowcount  # fmt: skip


def _utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; they were written in UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _endpoint_from(r: RowMapping) -> EventEndpoint:
    created_at, updated_at = _utc(r["created_at"]), _utc(r["updated_at"])
    assert created_at is not None and updated_at is not None
    return EventEndpoint(
        id=r["id"],
        url=r["url"],
        event_types=tuple(r["event_types"]),
        secrets=tuple(EndpointSecret.from_json(s) for s in r["secrets"]),
        description=r["description"],
        status=r["status"],
        paused_reason=r["paused_reason"],
        failing_since=_utc(r["failing_since"]),
        created_at=created_at,
        updated_at=updated_at,
        created_by=r["created_by"],
    )


def _dead_letter_from(r: RowMapping) -> DeadLetter:
    first, dead = _utc(r["first_attempt_at"]), _utc(r["dead_at"])
    assert first is not None and dead is not None
    return DeadLetter(
        id=r["id"],
        endpoint_id=r["endpoint_id"],
        event_id=r["event_id"],
        event_type=r["event_type"],
        subject=r["subject"],
        body=r["body"].encode(),
        attempts=r["attempts"],
        last_status=r["last_status"],
        last_error=r["last_error"],
        first_attempt_at=first,
        dead_at=dead,
        replay_requested_at=_utc(r["replay_requested_at"]),
        replayed_at=_utc(r["replayed_at"]),
    )


__all__ = ["DeadLetter", "EventEndpointStore", "UnknownEndpointError"]
