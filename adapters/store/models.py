"""Tables of the integration store: what Temporal's history should not hold."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


def insert_for(dialect: str) -> Any:
    """The INSERT of the store's database, the one with its ON CONFLICT clauses: PostgreSQL's
    by name, SQLite's otherwise."""
    return postgresql_insert if dialect == "postgresql" else sqlite_insert


class Base(DeclarativeBase):
    pass


class AccountLink(Base):
    """Cross-reference: how one system knows one canonical customer."""

    __tablename__ = "account_links"
    __table_args__ = (UniqueConstraint("system", "external_id", name="uq_account_links_external"),)

    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    system: Mapped[str] = mapped_column(String(16), primary_key=True)
    external_id: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(200))
    workflow_id: Mapped[str | None] = mapped_column(String(255))
    synced_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Posting(Base):
    """The posting journal: every ERP document ledgerbridge created, one per source document."""

    __tablename__ = "posting_journal"
    __table_args__ = (
        UniqueConstraint("source_system", "source_document_id", name="uq_posting_source"),
        Index("ix_posting_journal_entity", "entity", "posted_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source_system: Mapped[str] = mapped_column(String(16))
    source_document_id: Mapped[str] = mapped_column(String(128))
    document_type: Mapped[str] = mapped_column(String(32))
    customer_id: Mapped[str] = mapped_column(String(64), index=True)
    # An ERP id, or what a finance decision journals: manual:<number>, rejected:<exception>.
    erp_document_id: Mapped[str] = mapped_column(String(255))
    erp_number: Mapped[str | None] = mapped_column(String(64))
    amount: Mapped[Decimal] = mapped_column(Numeric(24, 6))
    currency: Mapped[str] = mapped_column(String(3))
    workflow_id: Mapped[str] = mapped_column(String(255))
    correlation_id: Mapped[str | None] = mapped_column(String(255))
    posted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The ERP that booked it and the legal entity it was booked for (canonical/erp_routing):
    # None for entries from before routing, all booked by the one ERP on the `erp` queue.
    erp: Mapped[str | None] = mapped_column(String(32))
    entity: Mapped[str | None] = mapped_column(String(32))


class ShadowPosting(Base):
    """A posting an entity in shadow also sent to its target ERP, to compare with the book
    of record (the shadow report). One per source document and ERP."""

    __tablename__ = "shadow_postings"
    __table_args__ = (UniqueConstraint("source_document_id", "erp", name="uq_shadow_posting"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source_document_id: Mapped[str] = mapped_column(String(128))
    erp: Mapped[str] = mapped_column(String(32))
    entity: Mapped[str] = mapped_column(String(32), index=True)
    document_type: Mapped[str] = mapped_column(String(32))
    customer_id: Mapped[str] = mapped_column(String(64))
    erp_document_id: Mapped[str] = mapped_column(String(255))
    erp_number: Mapped[str | None] = mapped_column(String(64))
    amount: Mapped[Decimal] = mapped_column(Numeric(24, 6))
    currency: Mapped[str] = mapped_column(String(3))
    workflow_id: Mapped[str] = mapped_column(String(255))
    posted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ShadowReportRow(Base):
    """The shadow report of an entity for one day (canonical/shadow_report.py), as made last."""

    __tablename__ = "shadow_reports"

    entity: Mapped[str] = mapped_column(String(32), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    made_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    clean: Mapped[bool] = mapped_column(Boolean)
    report: Mapped[dict[str, Any]] = mapped_column(JSON)


class ErpModeChangeRow(Base):
    """One step of a legal entity's move to its target ERP (`ledgerbridge erp mode`). Steps
    go forward only, so an entity takes each mode once: the unique key refuses a second."""

    __tablename__ = "erp_mode_changes"
    __table_args__ = (
        UniqueConstraint("entity", "mode", name="uq_erp_mode_change"),
        CheckConstraint("mode IN ('shadow', 'cutover')", name="ck_erp_mode_changes_mode"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    entity: Mapped[str] = mapped_column(String(32))
    mode: Mapped[str] = mapped_column(String(8))
    effective_from: Mapped[date] = mapped_column(Date)
    changed_by: Mapped[str] = mapped_column(String(128))
    changed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    reason: Mapped[str | None] = mapped_column(Text)


class AuditEntry(Base):
    """Append-only: who decided what, when and why. Updates and deletes are refused."""

    __tablename__ = "audit_trail"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(32))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(255), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    amount: Mapped[Decimal | None] = mapped_column(Numeric(24, 6))
    currency: Mapped[str | None] = mapped_column(String(3))
    correlation_id: Mapped[str | None] = mapped_column(String(255))
    details: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class WebhookReceipt(Base):
    """Each webhook delivery accepted into Temporal, so a redelivery is recognised."""

    __tablename__ = "webhook_receipts"

    source: Mapped[str] = mapped_column(String(16), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(120))
    workflow_id: Mapped[str] = mapped_column(String(255))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class SystemHealth(Base):
    """Per external system, when a worker last saw it answer and last saw it fail: written by
    the workers, read by the API's process health (they are different processes)."""

    __tablename__ = "system_health"

    system: Mapped[str] = mapped_column(String(16), primary_key=True)
    last_success_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_failure_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_failure: Mapped[str | None] = mapped_column(String(32))  # the call outcome
    failing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# --- events out ---------------------------------------------------------------------------


class OutboxEvent(Base):
    """Each business fact as its CloudEvent, written in the transaction that journals or
    audits it; the relay publishes them in `seq` order and stamps `published_at`."""

    __tablename__ = "event_outbox"
    __table_args__ = (Index("ix_event_outbox_unpublished", "published_at", "seq"),)

    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    event_type: Mapped[str] = mapped_column(String(120))
    subject: Mapped[str] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text)  # the structured CloudEvents JSON
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class BusinessEventRow(Base):
    """The analytics sink: every event once, by id, with the columns BI tools join on."""

    __tablename__ = "business_events"

    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(120), index=True)
    subject: Mapped[str] = mapped_column(String(255))
    customer_id: Mapped[str | None] = mapped_column(String(64), index=True)
    amount_minor: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(3))
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    correlation_id: Mapped[str | None] = mapped_column(String(255))
    data: Mapped[dict[str, Any]] = mapped_column(JSON)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class EventEndpointRow(Base):
    """A subscriber's endpoint for signed webhooks out (adapters/events/subscriptions.py)."""

    __tablename__ = "event_endpoints"
    __table_args__ = (
        CheckConstraint("status IN ('active', 'paused')", name="ck_event_endpoints_status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    url: Mapped[str] = mapped_column(String(2048))
    event_types: Mapped[list[str]] = mapped_column(JSON)  # types or `.*` prefixes; [] = all
    secrets: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # newest first
    description: Mapped[str | None] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(8))
    paused_reason: Mapped[str | None] = mapped_column(String(500))
    failing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(128))


class EventDeadLetterRow(Base):
    """An event an endpoint did not take within the retry window, kept for a replay; once
    per endpoint and event (dead again after a replay: the same row, updated)."""

    __tablename__ = "event_dead_letters"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id", name="uq_event_dead_letters_event"),
        Index("ix_event_dead_letters_endpoint", "endpoint_id", "dead_at"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    endpoint_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("event_endpoints.id", ondelete="CASCADE")
    )
    event_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(120))
    subject: Mapped[str] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text)  # the structured CloudEvents JSON, as sent
    attempts: Mapped[int] = mapped_column(Integer)
    last_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    first_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    dead_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    replay_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    replayed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# --- three-way reconciliation: billing vs ERP vs the posting journal --------------------
# Staging tables (expected, ERP, journal, support credits) hold one run's loaded documents
# until it is classified; runs and items are the lasting report.

_ROW_ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER only


def _run_fk() -> ForeignKey:
    return ForeignKey("recon_runs.run_id", ondelete="CASCADE")


class ReconRun(Base):
    """One reconciliation of a period: its status and the report's totals."""

    __tablename__ = "recon_runs"

    run_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    period_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    loaded: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    totals: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    healed_count: Mapped[int] = mapped_column(Integer, default=0)
    exception_count: Mapped[int] = mapped_column(Integer, default=0)
    # The ERP it reconciled (the routing's name); None for runs from before routing.
    erp: Mapped[str | None] = mapped_column(String(32))


class ReconExpected(Base):
    """What billing says the ERP must hold: one row per expected ERP posting."""

    __tablename__ = "recon_expected"
    __table_args__ = (
        CheckConstraint("amount > 0", name="ck_recon_expected_amount_positive"),
        Index("ix_recon_expected_billing_document", "run_id", "billing_document_id"),
        Index("ix_recon_expected_case", "run_id", "case_id"),
    )

    run_id: Mapped[str] = mapped_column(String(255), _run_fk(), primary_key=True)
    reference: Mapped[str] = mapped_column(String(160), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    customer_id: Mapped[str] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[Decimal] = mapped_column(Numeric(24, 6))
    billing_document_id: Mapped[str] = mapped_column(String(128))
    billing_kind: Mapped[str] = mapped_column(String(16))
    is_credit: Mapped[bool] = mapped_column(Boolean)
    case_id: Mapped[str | None] = mapped_column(String(64))
    # The ERP that books it when not the run's: kept only so that support's tickets are
    # matched against the whole of billing; NULL for the run's own ERP.
    other_erp: Mapped[str | None] = mapped_column(String(32))


class ReconErpDocument(Base):
    """A customer invoice or credit note the ERP holds for the period."""

    __tablename__ = "recon_erp"
    __table_args__ = (Index("ix_recon_erp_reference", "run_id", "reference"),)

    run_id: Mapped[str] = mapped_column(String(255), _run_fk(), primary_key=True)
    erp_document_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    reference: Mapped[str | None] = mapped_column(String(160))
    kind: Mapped[str] = mapped_column(String(16))
    number: Mapped[str | None] = mapped_column(String(64))
    customer_id: Mapped[str | None] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[Decimal] = mapped_column(Numeric(24, 6))
    state: Mapped[str] = mapped_column(String(16))


class ReconJournalEntry(Base):
    """A posting-journal entry copied into the run (what ledgerbridge says it posted)."""

    __tablename__ = "recon_journal"
    __table_args__ = (Index("ix_recon_journal_reference", "run_id", "reference"),)

    run_id: Mapped[str] = mapped_column(String(255), _run_fk(), primary_key=True)
    posting_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    reference: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    customer_id: Mapped[str] = mapped_column(String(64))
    erp_document_id: Mapped[str] = mapped_column(String(255))
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[Decimal] = mapped_column(Numeric(24, 6))


class ReconSupportCredit(Base):
    """A credit support requested on a case, and the billing document the ticket names."""

    __tablename__ = "recon_support_credits"
    __table_args__ = (
        Index("ix_recon_support_credits_billing_document", "run_id", "billing_document_id"),
    )

    run_id: Mapped[str] = mapped_column(String(255), _run_fk(), primary_key=True)
    case_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[Decimal] = mapped_column(Numeric(24, 6))
    billing_document_id: Mapped[str | None] = mapped_column(String(128))


class ReconExpectedPayment(Base):
    """A payment or refund billing holds for the period: the ERP must hold it, applied to
    the document `applies_to` names."""

    __tablename__ = "recon_expected_payments"
    __table_args__ = (
        CheckConstraint("amount > 0", name="ck_recon_expected_payments_amount_positive"),
    )

    run_id: Mapped[str] = mapped_column(String(255), _run_fk(), primary_key=True)
    reference: Mapped[str] = mapped_column(String(160), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    customer_id: Mapped[str] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[Decimal] = mapped_column(Numeric(24, 6))
    applies_to: Mapped[str] = mapped_column(String(160))
    billing_document_id: Mapped[str] = mapped_column(String(128))


class ReconErpPayment(Base):
    """A payment or refund the ERP holds for the period (its own ids: never an invoice's)."""

    __tablename__ = "recon_erp_payments"
    __table_args__ = (Index("ix_recon_erp_payments_reference", "run_id", "reference"),)

    run_id: Mapped[str] = mapped_column(String(255), _run_fk(), primary_key=True)
    erp_document_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    reference: Mapped[str | None] = mapped_column(String(160))
    kind: Mapped[str] = mapped_column(String(16))
    customer_id: Mapped[str | None] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[Decimal] = mapped_column(Numeric(24, 6))
    applies_to: Mapped[str | None] = mapped_column(String(160))
    state: Mapped[str] = mapped_column(String(16))


class ReconTax(Base):
    """Tax of one document under one ERP tax name, as one side holds it (billing's rates
    named through finance's mapping). Signed: a credit note's tax is negative."""

    __tablename__ = "recon_taxes"

    run_id: Mapped[str] = mapped_column(String(255), _run_fk(), primary_key=True)
    side: Mapped[str] = mapped_column(String(8), primary_key=True)
    reference: Mapped[str] = mapped_column(String(160), primary_key=True)
    tax: Mapped[str] = mapped_column(String(160), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    amount: Mapped[Decimal] = mapped_column(Numeric(24, 6))


class ReconReceivable(Base):
    """What one customer owes in one currency now, as one side holds it."""

    __tablename__ = "recon_receivables"

    run_id: Mapped[str] = mapped_column(String(255), _run_fk(), primary_key=True)
    side: Mapped[str] = mapped_column(String(8), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    amount: Mapped[Decimal] = mapped_column(Numeric(24, 6))


class ReconItem(Base):
    """One finding of a run: a class, the amounts each side holds, and what was done."""

    __tablename__ = "recon_items"
    __table_args__ = (
        Index("ix_recon_items_class", "run_id", "classification", "id"),
        Index("ix_recon_items_run", "run_id", "id"),
    )

    id: Mapped[int] = mapped_column(_ROW_ID, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(String(255), _run_fk())
    classification: Mapped[str] = mapped_column(String(32))
    reference: Mapped[str | None] = mapped_column(String(160))
    kind: Mapped[str | None] = mapped_column(String(16))
    customer_id: Mapped[str | None] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(3))
    amount: Mapped[Decimal] = mapped_column(Numeric(24, 6))
    billing_amount: Mapped[Decimal | None] = mapped_column(Numeric(24, 6))
    erp_amount: Mapped[Decimal | None] = mapped_column(Numeric(24, 6))
    journal_amount: Mapped[Decimal | None] = mapped_column(Numeric(24, 6))
    billing_document_id: Mapped[str | None] = mapped_column(String(128))
    erp_document_ids: Mapped[str | None] = mapped_column(Text)
    case_id: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(64))
    detail: Mapped[str | None] = mapped_column(Text)
    remedy: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str | None] = mapped_column(String(32))
    outcome_ref: Mapped[str | None] = mapped_column(String(255))
    outcome_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


# The journal snapshot of a run selects by posting time.
Index("ix_posting_journal_posted_at", Posting.posted_at)
