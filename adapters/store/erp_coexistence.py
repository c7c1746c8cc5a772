"""The store of a move between ERPs: each legal entity's steps (`ledgerbridge erp mode`,
audited in the same transaction), the postings an entity in shadow also sent to its target
ERP, and the journal's postings per entity and day for the shadow report."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from adapters.store.models import (
    ErpModeChangeRow,
    Posting,
    ShadowPosting,
    ShadowReportRow,
    insert_for,
    utcnow,
)
from adapters.store.store import IntegrationStore, add_audit
from canonical.erp_routing import ModeChange
from canonical.shadow_report import SHADOW_FAILED_PREFIX, ShadowReport

MODE_CHANGED = "erp.mode_changed"


class ShadowEntry(Protocol):
    """What a shadow posting records (the journal's entry, naming the target ERP)."""

    reference: str
    document_type: str
    customer_id: str
    erp_document_id: str
    erp_number: str | None
    amount: Decimal
    currency: str
    workflow_id: str
    erp: str | None
    entity: str | None


class ModeChangeRefused(ValueError):
    """The step may not be taken (the message says why, in one line)."""


class ErpCoexistenceStore:
    def __init__(self, store: IntegrationStore) -> None:
        self._store = store

    def mode_changes(self, entity: str | None = None) -> list[ModeChange]:
        with self._store.session() as session:
            query = select(ErpModeChangeRow).order_by(ErpModeChangeRow.id)
            if entity is not None:
                query = query.where(ErpModeChangeRow.entity == entity)
            return [_change(row) for row in session.scalars(query)]

    def change_mode(
        self,
        *,
        entity: str,
        mode: str,
        effective_from: date,
        actor: str,
        role: str,
        reason: str | None,
        refusal: Callable[[list[ModeChange]], str | None],
    ) -> ModeChange:
        """Record the step and its audit row in one transaction, after `refusal` (given the
        entity's steps so far, read in that transaction) found nothing against it. Two
        people taking the same step at once: the second is refused by the unique key."""
        try:
            with self._store.session() as session:
                rows = session.scalars(
                    select(ErpModeChangeRow).where(ErpModeChangeRow.entity == entity)
                ).all()
                why = refusal([_change(row) for row in rows])
                if why is not None:
                    raise ModeChangeRefused(why)
                row = ErpModeChangeRow(
                    entity=entity, mode=mode, effective_from=effective_from,
                    changed_by=actor, changed_at=utcnow(), reason=reason,
                )  # fmt: skip
                session.add(row)
                session.flush()
                add_audit(
                    session, actor=actor, role=role, action=MODE_CHANGED,
                    subject=f"erp/entity/{entity}", reason=reason,
                    details={"entity": entity, "mode": mode,
                             "effective_from": effective_from.isoformat()},
                )  # fmt: skip
                return _change(row)
        except IntegrityError:
            raise ModeChangeRefused(f"entity {entity} has already taken the {mode} step") from None

    def record_shadow_posting(self, entry: ShadowEntry) -> None:
        """Idempotent: the same document sent again to the same ERP keeps the first row, but
        a success replaces a failure recorded before it (SHADOW_FAILED_PREFIX)."""
        if entry.erp is None or entry.entity is None:
            raise ValueError(f"the shadow posting of {entry.reference} names no ERP or entity")
        values = {
            "source_document_id": entry.reference, "erp": entry.erp, "entity": entry.entity,
            "document_type": entry.document_type, "customer_id": entry.customer_id,
            "erp_document_id": entry.erp_document_id, "erp_number": entry.erp_number,
            "amount": entry.amount, "currency": entry.currency, "workflow_id": entry.workflow_id,
            "posted_at": utcnow(),
        }  # fmt: skip
        insert = insert_for(self._store.engine.dialect.name)
        statement = insert(ShadowPosting).values(values)
        failed = ShadowPosting.erp_document_id.startswith(SHADOW_FAILED_PREFIX)
        with self._store.engine.begin() as connection:
            connection.execute(statement.on_conflict_do_update(
                index_elements=["source_document_id", "erp"], set_=values, where=failed,
            ))  # fmt: skip

    def shadowed_on(self, entity: str, day: date) -> list[ShadowPosting]:
        """What the entity sent to its target on `day` (UTC), failures included, in order."""
        start, end = _day_bounds(day)
        with self._store.session() as session:
            return list(session.scalars(
                select(ShadowPosting).where(
                    ShadowPosting.entity == entity, ShadowPosting.posted_at >= start,
                    ShadowPosting.posted_at < end,
                ).order_by(ShadowPosting.id)
            ))  # fmt: skip

    def book_postings(self, entity: str, day: date) -> list[Posting]:
        """The journal's postings for the entity on `day` (UTC), in the order they were made."""
        start, end = _day_bounds(day)
        with self._store.session() as session:
            return list(session.scalars(
                select(Posting).where(Posting.entity == entity, Posting.posted_at >= start,
                                      Posting.posted_at < end).order_by(Posting.id)
            ))  # fmt: skip

    def record_shadow_report(self, report: ShadowReport) -> None:
        """Keep the report (one per entity and day: a later run replaces it)."""
        values = {"entity": report.entity, "day": report.day, "made_at": report.made_at,
                  "clean": report.clean, "report": report.model_dump(mode="json")}  # fmt: skip
        insert = insert_for(self._store.engine.dialect.name)
        with self._store.engine.begin() as connection:
            connection.execute(insert(ShadowReportRow).values(values).on_conflict_do_update(
                index_elements=["entity", "day"], set_=values,
            ))  # fmt: skip

    def shadow_reports(self, entity: str, limit: int = 30) -> list[ShadowReport]:
        """The entity's reports, newest day first."""
        with self._store.session() as session:
            rows = session.scalars(
                select(ShadowReportRow).where(ShadowReportRow.entity == entity)
                .order_by(ShadowReportRow.day.desc()).limit(limit)
            )  # fmt: skip
            return [ShadowReport.model_validate(row.report) for row in rows]

    def shadow_postings(self, entity: str, references: list[str]) -> dict[str, ShadowPosting]:
        """The shadow postings of these source documents, by source document id."""
        with self._store.session() as session:
            rows = session.scalars(
                select(ShadowPosting).where(
                    ShadowPosting.entity == entity,
                    ShadowPosting.source_document_id.in_(references),
                )
            )
            return {row.source_document_id: row for row in rows}


def _change(row: ErpModeChangeRow) -> ModeChange:
    return ModeChange(
        entity=row.entity,
        mode=row.mode,  # type: ignore[arg-type]
        effective_from=row.effective_from,
        changed_by=row.changed_by,
        changed_at=row.changed_at,
        reason=row.reason,
    )


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time(), UTC)
    return start, start + timedelta(days=1)
