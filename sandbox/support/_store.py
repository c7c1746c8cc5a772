"""SQLite state of the support sandbox: a generic object store plus idempotency and webhooks.

Every Zendesk resource (organization, ticket, comment…) is a JSON document under a kind,
so adding a resource is a router, not a migration. Ids come from one shared sequence, so
an organization id is never also a ticket id (mix-ups fail loudly in tests).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Zendesk ids are large integers; starting high keeps them from looking like list indexes.
FIRST_ID = 360_000_000_001

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sequence (name TEXT PRIMARY KEY, next_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL,
    id INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    subject TEXT NOT NULL,
    endpoint_url TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    created_at REAL NOT NULL,
    delivered_at REAL
);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (status, next_attempt_at);
CREATE TABLE IF NOT EXISTS delivery_attempts (
    delivery_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at REAL NOT NULL,
    status_code INTEGER,
    error TEXT,
    duration_ms INTEGER NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
"""


@dataclass(frozen=True)
class StoredResponse:
    fingerprint: str
    status: int
    body: str


@dataclass(frozen=True)
class Delivery:
    id: str
    event_id: str
    event_type: str
    subject: str
    endpoint_url: str
    payload: str
    status: str
    attempts: int
    next_attempt_at: float | None
    created_at: float
    delivered_at: float | None


class SupportStore:
    """One SQLite connection guarded by a lock; `path=None` keeps everything in memory."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        self._depth = 0

    # -- connection and transactions -------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            target = ":memory:"
            if self._path is not None:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                target = str(self._path)
            # The app's event loop runs in another thread than the one that built the app.
            conn = sqlite3.connect(target, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            if self._path is not None:
                conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            conn.execute(
                "INSERT OR IGNORE INTO sequence (name, next_id) VALUES ('id', ?)", (FIRST_ID,)
            )
            conn.commit()
            self._conn = conn
        return self._conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All writes inside commit together (an object change and its webhook deliveries)."""
        with self._lock:
            conn = self._connection()
            self._depth += 1
            try:
                yield conn
            except BaseException:
                if self._depth == 1:
                    conn.rollback()
                raise
            else:
                if self._depth == 1:
                    conn.commit()
            finally:
                self._depth -= 1

    def close(self) -> None:
        """Release the file; an in-memory store stays open or its state would vanish."""
        with self._lock:
            if self._conn is not None and self._path is not None:
                self._conn.close()
                self._conn = None

    # -- generic objects -------------------------------------------------------------

    def next_id(self) -> int:
        with self.transaction() as conn:
            row = conn.execute("SELECT next_id FROM sequence WHERE name = 'id'").fetchone()
            conn.execute("UPDATE sequence SET next_id = next_id + 1 WHERE name = 'id'")
            return int(row["next_id"])

    def insert(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        """Store a new object; assigns `id` unless the caller already did."""
        with self.transaction() as conn:
            if "id" not in data:
                data = {"id": self.next_id(), **data}
            conn.execute(
                "INSERT INTO objects (kind, id, data) VALUES (?, ?, ?)",
                (kind, data["id"], json.dumps(data)),
            )
            return data

    def get(self, kind: str, object_id: int) -> dict[str, Any] | None:
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT data FROM objects WHERE kind = ? AND id = ?", (kind, object_id)
            ).fetchone()
            return None if row is None else dict(json.loads(row["data"]))

    def replace(self, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        with self.transaction() as conn:
            conn.execute(
                "UPDATE objects SET data = ? WHERE kind = ? AND id = ?",
                (json.dumps(data), kind, data["id"]),
            )
            return data

    def delete(self, kind: str, object_id: int) -> bool:
        with self.transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM objects WHERE kind = ? AND id = ?", (kind, object_id)
            )
            return cursor.rowcount > 0

    def find(self, kind: str, **equals: Any) -> list[dict[str, Any]]:
        """Objects of a kind whose top-level fields equal the given values, by id."""
        clauses = ["kind = ?"]
        params: list[Any] = [kind]
        for field, value in equals.items():
            if not field.isidentifier():
                raise ValueError(f"not a field name: {field!r}")
            clauses.append(f"json_extract(data, '$.{field}') = ?")
            params.append(value)
        sql = f"SELECT data FROM objects WHERE {' AND '.join(clauses)} ORDER BY id"  # noqa: S608
        with self.transaction() as conn:
            return [dict(json.loads(row["data"])) for row in conn.execute(sql, params)]

    def page(
        self,
        kind: str,
        *,
        limit: int,
        after_id: int | None = None,
        before_id: int | None = None,
        offset: int = 0,
        newest_first: bool = False,
        **equals: Any,
    ) -> list[dict[str, Any]]:
        """Up to `limit` objects in id order (descending when `newest_first`) that come after
        `after_id` in that order, or just before `before_id`."""
        clauses = ["kind = ?"]
        params: list[Any] = [kind]
        for field, value in equals.items():
            if not field.isidentifier():
                raise ValueError(f"not a field name: {field!r}")
            clauses.append(f"json_extract(data, '$.{field}') = ?")
            params.append(value)
        later, earlier = (">", "<") if not newest_first else ("<", ">")
        order = "DESC" if newest_first else "ASC"
        if after_id is not None:
            clauses.append(f"id {later} ?")
            params.append(after_id)
        if before_id is not None:
            clauses.append(f"id {earlier} ?")
            params.append(before_id)
            # The page just before the cursor, put back in the listing order below.
            order = "ASC" if newest_first else "DESC"
        sql = (
            f"SELECT data FROM objects WHERE {' AND '.join(clauses)} "  # noqa: S608
            f"ORDER BY id {order} LIMIT ? OFFSET ?"
        )
        params.extend([limit, offset])
        with self.transaction() as conn:
            rows = [dict(json.loads(row["data"])) for row in conn.execute(sql, params)]
        return sorted(rows, key=lambda item: int(item["id"]), reverse=newest_first)

    def count(self, kind: str, **equals: Any) -> int:
        return len(self.find(kind, **equals))

    # -- idempotency -----------------------------------------------------------------

    def idempotent_lookup(self, key: str, ttl_seconds: float) -> StoredResponse | None:
        with self.transaction() as conn:
            conn.execute(
                "DELETE FROM idempotency WHERE created_at < ?", (time.time() - ttl_seconds,)
            )
            row = conn.execute(
                "SELECT fingerprint, status, body FROM idempotency WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                return None
            return StoredResponse(row["fingerprint"], int(row["status"]), row["body"])

    def idempotent_save(self, key: str, fingerprint: str, status: int, body: str) -> None:
        with self.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO idempotency (key, fingerprint, status, body, created_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (key, fingerprint, status, body, time.time()),
            )

    # -- webhook deliveries ----------------------------------------------------------

    def enqueue_delivery(
        self,
        *,
        delivery_id: str,
        event_id: str,
        event_type: str,
        subject: str,
        endpoint_url: str,
        payload: str,
    ) -> None:
        now = time.time()
        with self.transaction() as conn:
            seq = conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM deliveries").fetchone()[0]
            conn.execute(
                "INSERT INTO deliveries (id, seq, event_id, event_type, subject, endpoint_url,"
                " payload, status, attempts, next_attempt_at, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)",
                (delivery_id, seq, event_id, event_type, subject, endpoint_url, payload, now, now),
            )

    @staticmethod
    def _delivery(row: sqlite3.Row) -> Delivery:
        return Delivery(
            id=row["id"],
            event_id=row["event_id"],
            event_type=row["event_type"],
            subject=row["subject"],
            endpoint_url=row["endpoint_url"],
            payload=row["payload"],
            status=row["status"],
            attempts=int(row["attempts"]),
            next_attempt_at=row["next_attempt_at"],
            created_at=row["created_at"],
            delivered_at=row["delivered_at"],
        )

    def due_deliveries(self, now: float, limit: int = 50) -> list[Delivery]:
        with self.transaction() as conn:
            rows = conn.execute(
                "SELECT * FROM deliveries WHERE status = 'pending' AND next_attempt_at <= ?"
                " ORDER BY seq LIMIT ?",
                (now, limit),
            ).fetchall()
            return [self._delivery(row) for row in rows]

    def next_due_at(self) -> float | None:
        with self.transaction() as conn:
            row = conn.execute(
                "SELECT MIN(next_attempt_at) FROM deliveries WHERE status = 'pending'"
            ).fetchone()
            return None if row[0] is None else float(row[0])

    def record_attempt(
        self,
        delivery_id: str,
        *,
        status_code: int | None,
        error: str | None,
        duration_ms: int,
        outcome: str,
        next_attempt_at: float | None,
    ) -> None:
        """Log one attempt and move the delivery on (pending again, delivered or failed)."""
        now = time.time()
        with self.transaction() as conn:
            attempt = conn.execute(
                "SELECT attempts + 1 FROM deliveries WHERE id = ?", (delivery_id,)
            ).fetchone()[0]
            conn.execute(
                "INSERT INTO delivery_attempts (delivery_id, attempt, at, status_code, error,"
                " duration_ms) VALUES (?, ?, ?, ?, ?, ?)",
                (delivery_id, attempt, now, status_code, error, duration_ms),
            )
            conn.execute(
                "UPDATE deliveries SET attempts = ?, status = ?, next_attempt_at = ?,"
                " delivered_at = ? WHERE id = ?",
                (
                    attempt,
                    outcome,
                    next_attempt_at,
                    now if outcome == "delivered" else None,
                    delivery_id,
                ),
            )

    def list_deliveries(
        self, *, status: str | None = None, event_type: str | None = None
    ) -> list[tuple[Delivery, list[dict[str, Any]]]]:
        clauses, params = [], []
        if status:
            clauses.append("status = ?")
            params.append(status)
        if event_type:
            clauses.append("event_type = ?")
            params.append(event_type)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self.transaction() as conn:
            rows = conn.execute(
                f"SELECT * FROM deliveries {where} ORDER BY seq",  # noqa: S608
                params,
            ).fetchall()
            result = []
            for row in rows:
                attempts = [
                    dict(attempt)
                    for attempt in conn.execute(
                        "SELECT attempt, at, status_code, error, duration_ms"
                        " FROM delivery_attempts WHERE delivery_id = ? ORDER BY attempt",
                        (row["id"],),
                    )
                ]
                result.append((self._delivery(row), attempts))
            return result


__all__ = ["FIRST_ID", "Delivery", "StoredResponse", "SupportStore"]
