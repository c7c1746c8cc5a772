"""The integration store: cross-references, posting journal, audit trail, webhook receipts.

Synchronous SQLAlchemy 2.0; callers on an event loop use it from a thread (store activities
are sync activities, the API uses a threadpool). SQLite by default, PostgreSQL by URL.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from adapters.store import outbox
from adapters.store.models import (
    AccountLink,
    AuditEntry,
    BusinessEventRow,
    OutboxEvent,
    Posting,
    SystemHealth,
    WebhookReceipt,
    insert_for,
    utcnow,
)
from adapters.system_health import SystemObservation, merge
from canonical import AccountRecord
from canonical.ledger import REJECTED_POSTING_PREFIX

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Rows per multi-row INSERT: 5 columns each stays under SQLite's oldest limit of 999 variables.
_ROWS_PER_INSERT = 150


class DuplicatePostingError(RuntimeError):
    """Two different ERP documents for one source document: never papered over."""


class AppendOnlyError(RuntimeError):
    """An attempt to change or delete an audit record."""


def _refuse_audit_changes(session: Session, _context: Any, _instances: Any) -> None:
    for obj in (*session.dirty, *session.deleted):
        if isinstance(obj, AuditEntry):
            raise AppendOnlyError("audit_trail is append-only: entries cannot be changed")


class IntegrationStore:
    def __init__(self, url: str) -> None:
        self.url = url
        if url.startswith("sqlite"):
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        # A ping per checkout guards a network database against dropped connections; a local
        # SQLite file has none to drop, and the ping would cost every webhook a round trip.
        self.engine: Engine = create_engine(url, pool_pre_ping=not url.startswith("sqlite"))
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        event.listen(self._sessions, "before_flush", _refuse_audit_changes)

    def migrate(self) -> None:
        """Bring the schema to the newest revision (idempotent)."""
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["url"] = self.url
        command.upgrade(config, "head")

    def dispose(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    # --- cross-references -------------------------------------------------------------

    def record_account_links(
        self,
        customer_id: str,
        records: Sequence[AccountRecord],
        workflow_id: str | None,
        step: str | None = None,
    ) -> None:
        """The ids each system holds the customer under, and the `account.synced` event of
        this sync (`step` names it: the same on a retry)."""
        with self.session() as session:
            outbox.add_events(
                session, outbox.account_events(customer_id, records, workflow_id, step, utcnow())
            )
            for record in records:
                link = session.get(AccountLink, (customer_id, record.system))
                if link is None:
                    link = AccountLink(customer_id=customer_id, system=record.system)
                    session.add(link)
                link.external_id = record.external_id
                link.name = record.name
                link.workflow_id = workflow_id
                link.synced_at = utcnow()

    def account_links(self, customer_id: str) -> list[AccountRecord]:
        with self.session() as session:
            rows = session.scalars(
                select(AccountLink)
                .where(AccountLink.customer_id == customer_id)
                .order_by(AccountLink.system)
            )
            return [
                AccountRecord(
                    system=row.system,  # type: ignore[arg-type]
                    external_id=row.external_id,
                    customer_id=row.customer_id,
                    name=row.name,
                )
                for row in rows
            ]

    def customer_ids_page(self, after: str | None, limit: int) -> list[str]:
        """Customers known to ledgerbridge (synced at least once), in id order."""
        with self.session() as session:
            query = select(AccountLink.customer_id).distinct().order_by(AccountLink.customer_id)
            if after is not None:
                query = query.where(AccountLink.customer_id > after)
            return list(session.scalars(query.limit(limit)))

    # --- audit trail ------------------------------------------------------------------

    def append_audit(
        self,
        *,
        actor: str,
        role: str,
        action: str,
        subject: str,
        reason: str | None = None,
        amount: Decimal | None = None,
        currency: str | None = None,
        correlation_id: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> int:
        with self.session() as session:
            return add_audit(
                session, actor=actor, role=role, action=action, subject=subject, reason=reason,
                amount=amount, currency=currency, correlation_id=correlation_id, details=details,
            )  # fmt: skip

    def audit_entries(self, subject: str | None = None) -> list[AuditEntry]:
        with self.session() as session:
            query = select(AuditEntry).order_by(AuditEntry.id)
            if subject is not None:
                query = query.where(AuditEntry.subject == subject)
            return list(session.scalars(query))

    # --- webhook receipts -------------------------------------------------------------

    def webhook_receipt(self, source: str, event_id: str) -> WebhookReceipt | None:
        with self.session() as session:
            return session.get(WebhookReceipt, (source, event_id))

    def has_webhook_receipt(self, source: str, event_id: str) -> bool:
        """Whether this delivery was recorded."""
        return bool(self.webhook_receipts_among([(source, event_id)]))

    def webhook_receipts_among(self, deliveries: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Which of these (source, event_id) deliveries were recorded: the webhook path's
        lookup, the deliveries of a moment asked at once, indexed reads without the ORM
        session (every webhook pays for it)."""
        by_source: dict[str, list[str]] = {}
        for source, event_id in deliveries:
            by_source.setdefault(source, []).append(event_id)
        found: set[tuple[str, str]] = set()
        with self.engine.connect() as connection:
            for source, event_ids in by_source.items():
                for start in range(0, len(event_ids), _ROWS_PER_INSERT):
                    part = event_ids[start : start + _ROWS_PER_INSERT]
                    rows = connection.execute(
                        select(WebhookReceipt.event_id).where(
                            WebhookReceipt.source == source, WebhookReceipt.event_id.in_(part)
                        )
                    )
                    found.update((source, event_id) for (event_id,) in rows)
        return found

    def record_webhook_receipt(
        self, source: str, event_id: str, event_type: str, workflow_id: str
    ) -> bool:
        """True when this delivery is new; False when it was already recorded."""
        return self.record_webhook_receipts([(source, event_id, event_type, workflow_id)]) == 1

    def record_webhook_receipts(self, receipts: Sequence[tuple[str, str, str, str]]) -> int:
        """Record (source, event_id, event_type, workflow_id) rows in one transaction, skipping
        those already recorded; returns how many were new."""
        if not receipts:
            return 0
        now = utcnow()
        rows = [  # in key order: concurrent writers of overlapping keys lock alike, no deadlock
            {"source": s, "event_id": e, "event_type": t, "workflow_id": w, "received_at": now}
            for s, e, t, w in sorted(receipts)
        ]
        insert = insert_for(self.engine.dialect.name)
        new = 0
        with self.engine.begin() as connection:
            for start in range(0, len(rows), _ROWS_PER_INSERT):
                statement = (
                    insert(WebhookReceipt)
                    .values(rows[start : start + _ROWS_PER_INSERT])
                    .on_conflict_do_nothing(index_elements=["source", "event_id"])
                    .returning(WebhookReceipt.event_id)
                )
                new += len(connection.execute(statement).all())
        return new

    # --- posting journal --------------------------------------------------------------

    def record_posting(
        self,
        *,
        source_system: str,
        source_document_id: str,
        document_type: str,
        customer_id: str,
        erp_document_id: str,
        erp_number: str | None,
        amount: Decimal,
        currency: str,
        workflow_id: str,
        correlation_id: str | None,
        erp: str | None = None,
        entity: str | None = None,
    ) -> Posting:
        """Journal one ERP document; recording the same one again is a no-op, recording a
        different ERP document for the same source document is refused (a duplicate)."""
        existing = self.find_posting(source_system, source_document_id)
        if existing is None:
            try:
                with self.session() as session:
                    posting = Posting(
                        source_system=source_system,
                        source_document_id=source_document_id,
                        document_type=document_type,
                        customer_id=customer_id,
                        erp_document_id=erp_document_id,
                        erp_number=erp_number,
                        amount=amount,
                        currency=currency,
                        workflow_id=workflow_id,
                        correlation_id=correlation_id,
                        posted_at=utcnow(),
                        erp=erp,
                        entity=entity,
                    )
                    session.add(posting)
                    session.flush()  # a duplicate is refused here, before its events
                    outbox.add_events(session, outbox.posting_events(posting))
                return posting
            except IntegrityError:
                existing = self.find_posting(source_system, source_document_id)
                assert existing is not None
        if existing.erp_document_id != erp_document_id:
            raise DuplicatePostingError(
                f"{source_document_id} is journaled as ERP document {existing.erp_document_id}, "
                f"not {erp_document_id}"
            )
        return existing

    def postings(self, customer_id: str | None = None) -> list[Posting]:
        with self.session() as session:
            query = select(Posting).order_by(Posting.id)
            if customer_id is not None:
                query = query.where(Posting.customer_id == customer_id)
            return list(session.scalars(query))

    def credited_since(self, customer_id: str, currency: str, since: datetime) -> Decimal:
        """Support credits journaled for the customer since `since` (the rolling cap); one
        finance rejected was never given (a hand-posted one was)."""
        with self.session() as session:
            total = session.scalar(
                select(func.coalesce(func.sum(Posting.amount), 0)).where(
                    Posting.customer_id == customer_id,
                    Posting.currency == currency,
                    Posting.document_type == "credit_note",
                    Posting.workflow_id.startswith("credit/"),
                    Posting.posted_at >= since,
                    ~Posting.erp_document_id.startswith(REJECTED_POSTING_PREFIX),
                )
            )
            return Decimal(total or 0)

    def find_posting(self, source_system: str, source_document_id: str) -> Posting | None:
        with self.session() as session:
            return session.scalars(
                select(Posting).where(
                    Posting.source_system == source_system,
                    Posting.source_document_id == source_document_id,
                )
            ).first()

    # --- external systems' health -------------------------------------------------------

    def record_system_health(self, seen: Sequence[SystemObservation]) -> None:
        """Fold what a worker saw of each system into its row (read, merged, written in one
        transaction; the row is locked where the database can)."""
        with self.session() as session:
            for observation in seen:
                row = session.scalars(
                    select(SystemHealth)
                    .where(SystemHealth.system == observation.system)
                    .with_for_update()
                ).first()
                if row is None:
                    row = SystemHealth(system=observation.system)
                    session.add(row)
                merge(row, observation)

    # --- events out ----------------------------------------------------------------------

    def unpublished_events(self, limit: int = 100) -> list[outbox.PendingEvent]:
        with self.engine.connect() as connection:
            return outbox.unpublished(connection, limit)

    def mark_events_published(self, seqs: Sequence[int]) -> None:
        with self.engine.begin() as connection:
            outbox.mark_published(connection, seqs)

    def purge_published_events(self, before: datetime) -> int:
        with self.engine.begin() as connection:
            return outbox.purge_published(connection, before)

    def outbox_events(self) -> list[OutboxEvent]:
        with self.session() as session:
            return list(session.scalars(select(OutboxEvent).order_by(OutboxEvent.seq)))

    def append_business_events(self, bodies: Sequence[bytes]) -> int:
        """The analytics rows of these CloudEvents, each id once; returns how many were new."""
        with self.engine.begin() as connection:
            return outbox.append_business_events(connection, bodies)

    def business_events(self, customer_id: str | None = None) -> list[BusinessEventRow]:
        with self.session() as session:
            query = select(BusinessEventRow).order_by(BusinessEventRow.occurred_at)
            if customer_id is not None:
                query = query.where(BusinessEventRow.customer_id == customer_id)
            return list(session.scalars(query))

    def system_health(self) -> list[SystemHealth]:
        with self.session() as session:
            return list(session.scalars(select(SystemHealth).order_by(SystemHealth.system)))


def add_audit(
    session: Session,
    *,
    actor: str,
    role: str,
    action: str,
    subject: str,
    reason: str | None = None,
    amount: Decimal | None = None,
    currency: str | None = None,
    correlation_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> int:
    """One audit row, and its business event where it is one, in the caller's transaction."""
    entry = AuditEntry(
        actor=actor,
        role=role,
        action=action,
        subject=subject,
        reason=reason,
        amount=amount,
        currency=currency,
        correlation_id=correlation_id,
        details=details or {},
        occurred_at=utcnow(),
    )
    session.add(entry)
    session.flush()
    outbox.add_events(session, outbox.audit_events(
        actor=actor, role=role, action=action, subject=subject, reason=reason,
        amount=amount, currency=currency, correlation_id=correlation_id,
        details=entry.details, at=entry.occurred_at,
    ))  # fmt: skip
    return entry.id


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # A busy timeout instead of instant failure; WAL lets the API read while a worker writes.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA foreign_keys=ON")
    # "database is locked", at once and without the busy timeout, while another connection
    # holds the file (the API, the workers and a test opening it together). WAL is the
    # file's, not the connection's: the next connection sets it; this one works in the mode
    # it finds, only less concurrently.
    with suppress(sqlite3.OperationalError):
        cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()
