"""The sandbox's state in SQLite: objects as JSON, events, idempotency keys, webhook deliveries.

One connection guarded by a lock: the server's event loop and a test thread may both use
it, and the volume of a local counterpart never needs more. In memory when no path is given.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    created INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS objects_by_type ON objects (type, seq);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    created INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    scope TEXT NOT NULL,
    key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    request_id TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    event_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL,
    next_attempt_at REAL,
    attempts TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS deliveries_due ON webhook_deliveries (status, next_attempt_at);
"""


@dataclass(frozen=True)
class Page:
    items: list[dict[str, Any]]
    has_more: bool


@dataclass(frozen=True)
class StoredResponse:
    fingerprint: str
    status: int
    body: str
    request_id: str


@dataclass
class Delivery:
    id: str
    event_id: str
    endpoint_id: str
    reason: str  # event | redelivery | duplicate
    status: str  # pending | succeeded | failed | cancelled
    created: float
    next_attempt_at: float | None
    attempts: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "sandbox.webhook_delivery",
            "event_id": self.event_id,
            "endpoint_id": self.endpoint_id,
            "reason": self.reason,
            "status": self.status,
            "created": self.created,
            "next_attempt_at": self.next_attempt_at,
            "attempt_count": len(self.attempts),
            "response_body": self.attempts[-1].get("response_body") if self.attempts else None,
            "attempts": self.attempts,
        }


class CursorNotFound(LookupError):
    pass


def _delivery(row: sqlite3.Row) -> Delivery:
    return Delivery(
        id=row["id"],
        event_id=row["event_id"],
        endpoint_id=row["endpoint_id"],
        reason=row["reason"],
        status=row["status"],
        created=row["created"],
        next_attempt_at=row["next_attempt_at"],
        attempts=json.loads(row["attempts"]),
    )


class BillingStore:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            str(path) if path is not None else ":memory:",
            check_same_thread=False,
            isolation_level=None,  # transactions are explicit, see transaction()
        )
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        self._depth = 0
        with self._lock:
            if path is not None:
                self._conn.execute("PRAGMA journal_mode=WAL")
                self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All-or-nothing; nests (only the outermost commits)."""
        with self._lock:
            if self._depth == 0:
                self._conn.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if self._depth == 0:
                    self._conn.execute("ROLLBACK")
                raise
            self._depth -= 1
            if self._depth == 0:
                self._conn.execute("COMMIT")

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def _execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        with self._lock:
            return self._conn.execute(sql, args).rowcount

    # objects -----------------------------------------------------------------------------

    def insert_object(self, obj: Mapping[str, Any]) -> None:
        self._execute(
            "INSERT INTO objects (id, type, created, deleted, data) VALUES (?, ?, ?, 0, ?)",
            (obj["id"], obj["object"], obj["created"], json.dumps(obj)),
        )

    def save_object(self, obj: Mapping[str, Any], *, deleted: bool = False) -> None:
        changed = self._execute(
            "UPDATE objects SET data = ?, deleted = ? WHERE id = ?",
            (json.dumps(obj), int(deleted), obj["id"]),
        )
        if changed != 1:
            raise KeyError(obj["id"])

    def get_object(self, object_id: str) -> tuple[dict[str, Any], bool] | None:
        """The object and whether it is deleted, or None."""
        rows = self._query("SELECT data, deleted FROM objects WHERE id = ?", (object_id,))
        if not rows:
            return None
        return json.loads(rows[0]["data"]), bool(rows[0]["deleted"])

    def all_objects(
        self, object_type: str, *, include_deleted: bool = False
    ) -> list[dict[str, Any]]:
        sql = "SELECT data FROM objects WHERE type = ?"
        if not include_deleted:
            sql += " AND deleted = 0"
        return [json.loads(r["data"]) for r in self._query(sql + " ORDER BY seq", (object_type,))]

    def list_objects(
        self,
        object_type: str,
        *,
        limit: int,
        starting_after: str | None = None,
        ending_before: str | None = None,
        equals: Mapping[str, Any] | None = None,
        excludes: Mapping[str, Any] | None = None,
        created: Mapping[str, int] | None = None,
    ) -> Page:
        """Newest first, Stripe cursor semantics; deleted objects are not listed."""
        where, args = self._field_filters(object_type, equals, excludes)
        return self._page("objects", where, args, limit, starting_after, ending_before, created)

    def find_objects(
        self, object_type: str, equals: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Every live object of a type whose fields equal `equals`, oldest first."""
        where, args = self._field_filters(object_type, equals, None)
        sql = f"SELECT data FROM objects WHERE {' AND '.join(where)} ORDER BY seq"  # noqa: S608
        return [json.loads(r["data"]) for r in self._query(sql, args)]

    @staticmethod
    def _field_filters(
        object_type: str,
        equals: Mapping[str, Any] | None,
        excludes: Mapping[str, Any] | None,
    ) -> tuple[list[str], list[Any]]:
        where = ["type = ?", "deleted = 0"]
        args: list[Any] = [object_type]
        for field, value in (equals or {}).items():
            if value is None:
                where.append("json_extract(data, ?) IS NULL")
                args.append(f"$.{field}")
            else:
                where.append("json_extract(data, ?) = ?")
                args.extend([f"$.{field}", value])
        for field, value in (excludes or {}).items():
            where.append("json_extract(data, ?) IS NOT ?")
            args.extend([f"$.{field}", value])
        return where, args

    # events ------------------------------------------------------------------------------

    def insert_event(self, event: Mapping[str, Any]) -> None:
        self._execute(
            "INSERT INTO events (id, type, created, data) VALUES (?, ?, ?, ?)",
            (event["id"], event["type"], event["created"], json.dumps(event)),
        )

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        rows = self._query("SELECT data FROM events WHERE id = ?", (event_id,))
        return json.loads(rows[0]["data"]) if rows else None

    def list_events(
        self,
        *,
        limit: int,
        starting_after: str | None = None,
        ending_before: str | None = None,
        types: Sequence[str] = (),
        created: Mapping[str, int] | None = None,
    ) -> Page:
        where: list[str] = []
        args: list[Any] = []
        if types:
            # Stripe allows one trailing wildcard: `customer.*`.
            clauses = []
            for event_type in types:
                if event_type.endswith("*"):
                    clauses.append("type LIKE ?")
                    args.append(event_type[:-1].replace("%", r"\%").replace("_", r"\_") + "%")
                    clauses[-1] += " ESCAPE '\\'"
                else:
                    clauses.append("type = ?")
                    args.append(event_type)
            where.append("(" + " OR ".join(clauses) + ")")
        return self._page("events", where, args, limit, starting_after, ending_before, created)

    def _page(
        self,
        table: str,
        where: list[str],
        args: list[Any],
        limit: int,
        starting_after: str | None,
        ending_before: str | None,
        created: Mapping[str, int] | None,
    ) -> Page:
        where = list(where)
        args = list(args)
        operators = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "eq": "="}
        for op, value in (created or {}).items():
            where.append(f"created {operators[op]} ?")
            args.append(value)
        newest_first = True
        if starting_after is not None or ending_before is not None:
            cursor = starting_after if starting_after is not None else ending_before
            rows = self._query(f"SELECT seq FROM {table} WHERE id = ?", (cursor,))  # noqa: S608
            if not rows:
                raise CursorNotFound(cursor)
            if starting_after is not None:
                where.append("seq < ?")
            else:
                where.append("seq > ?")
                newest_first = False  # walk towards newer items, then flip the page
            args.append(rows[0]["seq"])
        sql = f"SELECT data FROM {table}"  # noqa: S608 - table names are ours
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY seq {'DESC' if newest_first else 'ASC'} LIMIT ?"
        rows = self._query(sql, [*args, limit + 1])
        items = [json.loads(r["data"]) for r in rows[:limit]]
        if not newest_first:
            items.reverse()
        return Page(items=items, has_more=len(rows) > limit)

    # idempotency keys --------------------------------------------------------------------

    def get_idempotent(self, scope: str, key: str, not_before: float) -> StoredResponse | None:
        self._execute("DELETE FROM idempotency_keys WHERE created < ?", (not_before,))
        rows = self._query(
            "SELECT fingerprint, status, body, request_id FROM idempotency_keys "
            "WHERE scope = ? AND key = ?",
            (scope, key),
        )
        if not rows:
            return None
        row = rows[0]
        return StoredResponse(row["fingerprint"], row["status"], row["body"], row["request_id"])

    def save_idempotent(
        self, scope: str, key: str, response: StoredResponse, created: float
    ) -> None:
        self._execute(
            "INSERT OR REPLACE INTO idempotency_keys "
            "(scope, key, fingerprint, status, body, request_id, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                scope,
                key,
                response.fingerprint,
                response.status,
                response.body,
                response.request_id,
                created,
            ),
        )

    # webhook deliveries ------------------------------------------------------------------

    def insert_delivery(self, delivery: Delivery) -> None:
        self._execute(
            "INSERT INTO webhook_deliveries "
            "(id, event_id, endpoint_id, reason, status, created, next_attempt_at, attempts) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                delivery.id,
                delivery.event_id,
                delivery.endpoint_id,
                delivery.reason,
                delivery.status,
                delivery.created,
                delivery.next_attempt_at,
                json.dumps(delivery.attempts),
            ),
        )

    def save_delivery(self, delivery: Delivery) -> None:
        self._execute(
            "UPDATE webhook_deliveries SET status = ?, next_attempt_at = ?, attempts = ? "
            "WHERE id = ?",
            (delivery.status, delivery.next_attempt_at, json.dumps(delivery.attempts), delivery.id),
        )

    def get_delivery(self, delivery_id: str) -> Delivery | None:
        rows = self._query("SELECT * FROM webhook_deliveries WHERE id = ?", (delivery_id,))
        return _delivery(rows[0]) if rows else None

    def due_deliveries(self, now: float, limit: int = 100) -> list[Delivery]:
        rows = self._query(
            "SELECT * FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= ? "
            "ORDER BY next_attempt_at, seq LIMIT ?",
            (now, limit),
        )
        return [_delivery(r) for r in rows]

    def next_due_at(self) -> float | None:
        rows = self._query(
            "SELECT MIN(next_attempt_at) AS at FROM webhook_deliveries WHERE status = 'pending'"
        )
        return rows[0]["at"] if rows else None

    def list_deliveries(
        self,
        *,
        event_id: str | None = None,
        endpoint_id: str | None = None,
        status: str | None = None,
    ) -> list[Delivery]:
        where, args = [], []
        for column, value in (
            ("event_id", event_id),
            ("endpoint_id", endpoint_id),
            ("status", status),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        sql = "SELECT * FROM webhook_deliveries"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [_delivery(r) for r in self._query(sql + " ORDER BY seq", args)]

    def pending_webhooks(self, event_ids: Sequence[str]) -> dict[str, int]:
        if not event_ids:
            return {}
        marks = ",".join("?" * len(event_ids))
        rows = self._query(
            "SELECT event_id, COUNT(*) AS n FROM webhook_deliveries "  # noqa: S608
            f"WHERE status = 'pending' AND event_id IN ({marks}) GROUP BY event_id",
            list(event_ids),
        )
        return {r["event_id"]: r["n"] for r in rows}
