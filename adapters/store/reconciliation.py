"""Three-way reconciliation in the store: what billing expects, what the ERP holds, and what
our posting journal says we posted, for documents and apart for the money that moved
(payments and refund payouts); then two totals of both systems: tax per ERP tax and currency
over the documents both hold, and what each customer owes now.

A run loads each side into staging tables, classifies every difference in SQL
(INSERT … SELECT, so volume never passes through Python or workflow history) and keeps the
items and their totals as the report. The staging rows can be dropped once classified.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal
from itertools import islice
from typing import Any, Final, Literal, get_args

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Executable,
    Insert,
    Numeric,
    RowMapping,
    Select,
    SQLColumnExpression,
    String,
    and_,
    case,
    cast,
    delete,
    exists,
    func,
    insert,
    label,
    literal,
    literal_column,
    null,
    or_,
    select,
    text,
    true,
    union,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import aliased
from sqlalchemy.sql.selectable import Subquery

from adapters.store import outbox
from adapters.store.models import (
    Base,
    Posting,
    ReconErpDocument,
    ReconErpPayment,
    ReconExpected,
    ReconExpectedPayment,
    ReconItem,
    ReconJournalEntry,
    ReconReceivable,
    ReconRun,
    ReconSupportCredit,
    ReconTax,
    ShadowPosting,
    utcnow,
)
from adapters.store.store import IntegrationStore
from canonical.ledger import REJECTED_POSTING_PREFIX
from canonical.money import CURRENCY_EXPONENTS, CurrencyError
from canonical.reconciliation import (
    AMOUNT_MISMATCH,
    CLASSES,
    CREDIT_WITHOUT_TICKET,
    DUPLICATE_IN_ERP,
    HEALABLE,
    MATCHED,
    MATCHED_TO_JOURNAL,
    MISSING_IN_ERP,
    ORPHAN_IN_ERP,
    PAYMENT_AMOUNT_MISMATCH,
    PAYMENT_MISSING_IN_ERP,
    POSTED_BUT_ABSENT,
    RECEIVABLE_DIFFERS,
    REFUND_MISSING_IN_ERP,
    REJECTED_BY_FINANCE,
    REMEDIES,
    TAX_DIFFERS,
    TICKET_CREDIT_WITHOUT_BILLING,
    UNMAPPED_TAX_PREFIX,
    ReconClass,
)

_RUNS = ReconRun.__table__
_STAGING_TABLES: Final = (
    "recon_expected",
    "recon_erp",
    "recon_journal",
    "recon_support_credits",
    "recon_expected_payments",
    "recon_erp_payments",
    "recon_taxes",
    "recon_receivables",
)
_ITEMS = ReconItem.__table__

RunStatus = Literal["loading", "classified", "healing", "done", "failed"]
LOADING: Final = "loading"
CLASSIFIED: Final = "classified"
HEALING: Final = "healing"
DONE: Final = "done"
FAILED: Final = "failed"

Outcome = Literal["healed", "exception_opened", "healing_skipped"]
OUTCOMES: Final[tuple[Outcome, ...]] = get_args(Outcome)

ErpKind = Literal["invoice", "credit_note"]
# A refund made without a billing credit note is booked as its own ERP credit note.
BillingKind = Literal["invoice", "credit_note", "balance_credit", "refund"]
PaymentKind = Literal["payment", "refund"]
# The journal's kinds of money moved; its other entries are documents.
PAYMENT_KINDS: Final[tuple[PaymentKind, ...]] = get_args(PaymentKind)
Side = Literal["billing", "erp"]

# The kind the report's totals give items that have none (a ticket's credit).
NO_KIND: Final = "-"
# An ERP document in this state is not in the books, whatever its amount says.
CANCELLED: Final = "cancelled"
# Amounts are summed as integer millionths: exact on SQLite (REAL) as on PostgreSQL.
_MICROS: Final = 1_000_000
_BATCH_SIZE: Final = 5_000


class UnknownRunError(LookupError):
    """No reconciliation run has that id."""


class RunStateError(RuntimeError):
    """The run's status does not allow the step (e.g. loading into a classified run)."""


# --- rows loaded into a run --------------------------------------------------------------


def _check_amount(amount: Decimal, *, positive: bool) -> None:
    if not isinstance(amount, Decimal):  # money is never a float
        raise TypeError(f"amount must be a Decimal, not {type(amount).__name__}")
    if positive and not amount > 0:
        raise ValueError(f"amount must be positive, not {amount}")


def _check_currency(currency: str) -> None:
    # Compared as text in SQL, so one spelling: the upper-case ISO code canonical uses.
    if currency not in CURRENCY_EXPONENTS:
        raise CurrencyError(f"unsupported currency {currency!r} (upper-case ISO 4217 expected)")


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")


@dataclass(frozen=True, slots=True)
class ExpectedPosting:
    """An ERP posting billing says must exist (reference as the posting path computes it)."""

    reference: str
    kind: ErpKind
    customer_id: str
    currency: str
    amount: Decimal
    billing_document_id: str
    billing_kind: BillingKind
    is_credit: bool = False
    case_id: str | None = None
    # The ERP that books it when that is not the ERP the run reconciles: such a row is kept
    # only so support's tickets are matched against the whole of billing, never compared.
    other_erp: str | None = None

    def __post_init__(self) -> None:
        _check_choice("kind", self.kind, get_args(ErpKind))
        _check_choice("billing_kind", self.billing_kind, get_args(BillingKind))
        _check_currency(self.currency)
        _check_amount(self.amount, positive=True)


@dataclass(frozen=True, slots=True)
class ErpDocument:
    """A customer invoice or credit note as the ERP holds it (amount as a positive total)."""

    erp_document_id: str
    reference: str | None
    kind: ErpKind
    number: str | None
    currency: str
    amount: Decimal
    state: str
    customer_id: str | None = None

    def __post_init__(self) -> None:
        _check_choice("kind", self.kind, get_args(ErpKind))
        _check_currency(self.currency)
        _check_amount(self.amount, positive=False)


@dataclass(frozen=True, slots=True)
class SupportCredit:
    """A credit support requested on a case, and the billing document the ticket names."""

    case_id: str
    request_id: str
    customer_id: str
    currency: str
    amount: Decimal
    billing_document_id: str | None = None

    def __post_init__(self) -> None:
        _check_currency(self.currency)
        _check_amount(self.amount, positive=False)


@dataclass(frozen=True, slots=True)
class ExpectedPayment:
    """A payment or refund billing holds: the ERP must hold it under `reference`, applied to
    the ERP document `applies_to` names (the invoice; a refund's credit note)."""

    reference: str
    kind: PaymentKind
    customer_id: str
    currency: str
    amount: Decimal
    applies_to: str
    billing_document_id: str  # what healing refetches: the invoice paid, or the refund

    def __post_init__(self) -> None:
        _check_choice("kind", self.kind, PAYMENT_KINDS)
        _check_currency(self.currency)
        _check_amount(self.amount, positive=True)


@dataclass(frozen=True, slots=True)
class ErpPayment:
    """A payment received or a refund paid out, as the ERP holds it (amount positive)."""

    erp_document_id: str
    reference: str | None
    kind: PaymentKind
    currency: str
    amount: Decimal
    applies_to: str | None
    state: str
    customer_id: str | None = None

    def __post_init__(self) -> None:
        _check_choice("kind", self.kind, PAYMENT_KINDS)
        _check_currency(self.currency)
        _check_amount(self.amount, positive=False)


@dataclass(frozen=True, slots=True)
class DocumentTax:
    """One document's tax under one ERP tax name, as one side holds it; negative on a
    credit note. Billing's rates are named by finance's mapping before they get here."""

    side: Side
    reference: str
    tax: str
    currency: str
    amount: Decimal

    def __post_init__(self) -> None:
        _check_choice("side", self.side, get_args(Side))
        _check_currency(self.currency)
        _check_amount(self.amount, positive=False)


@dataclass(frozen=True, slots=True)
class CustomerReceivable:
    """What a customer owes now in one currency, as one side holds it (negative: owed to
    the customer)."""

    side: Side
    customer_id: str
    currency: str
    amount: Decimal

    def __post_init__(self) -> None:
        _check_choice("side", self.side, get_args(Side))
        _check_currency(self.currency)
        _check_amount(self.amount, positive=False)


StagedRow = (
    ExpectedPosting
    | ErpDocument
    | SupportCredit
    | ExpectedPayment
    | ErpPayment
    | DocumentTax
    | CustomerReceivable
)


def _staged(run_id: str, row: StagedRow) -> dict[str, Any]:
    """A row as its staging table holds it: the run, then the row's own fields."""
    return {"run_id": run_id, **{f.name: getattr(row, f.name) for f in fields(row)}}


# --- what a run reports ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CurrencyTotal:
    count: int
    amount: Decimal


@dataclass(frozen=True, slots=True)
class ClassTotal:
    count: int
    by_currency: dict[str, CurrencyTotal] = field(default_factory=dict)
    # The same split by what the items are (invoice, payment, tax, receivable, …): a class
    # holds documents and money moved alike. Empty for runs classified before it was kept.
    by_kind: dict[str, dict[str, CurrencyTotal]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReconciliationRun:
    """A run's status and report: item counts and amounts per class and currency."""

    run_id: str
    period_start: datetime
    period_end: datetime
    status: RunStatus
    started_at: datetime
    finished_at: datetime | None
    loaded: dict[str, int]
    totals: dict[str, ClassTotal]
    healed_count: int
    exception_count: int
    erp: str | None = None  # the ERP it reconciled; None for runs from before routing

    @property
    def counts(self) -> dict[str, int]:
        """Items per class (every class named, zero included, once classified)."""
        return {cls: total.count for cls, total in self.totals.items()}


@dataclass(frozen=True, slots=True)
class ReconciliationItem:
    """One finding: its class, what each side holds, and what was done about it."""

    id: int
    run_id: str
    classification: ReconClass
    reference: str | None
    kind: str | None
    customer_id: str | None
    currency: str
    amount: Decimal  # billing's amount, else the ERP's, else the journal's or the ticket's
    billing_amount: Decimal | None
    erp_amount: Decimal | None
    journal_amount: Decimal | None
    billing_document_id: str | None
    erp_document_ids: tuple[str, ...]
    case_id: str | None
    request_id: str | None
    detail: str | None
    remedy: str
    outcome: Outcome | None
    outcome_ref: str | None
    outcome_at: datetime | None


# --- the store ---------------------------------------------------------------------------


class ReconciliationStore:
    """Runs, bulk loading, SQL classification and the report of three-way reconciliation."""

    def __init__(self, store: IntegrationStore, batch_size: int = _BATCH_SIZE) -> None:
        self._engine = store.engine
        self._batch_size = batch_size

    # --- runs ----------------------------------------------------------------------------

    def start_run(
        self, run_id: str, period_start: datetime, period_end: datetime, erp: str | None = None
    ) -> ReconciliationRun:
        """Open a run of an ERP (None: a run from before routing) for a period; starting the
        same run again returns it unchanged."""
        start, end = _utc(period_start), _utc(period_end)
        if end <= start:
            raise ValueError(f"period_end {end} must be after period_start {start}")
        with self._engine.begin() as conn:
            insert_run = _insert_ignoring_duplicates(conn, ReconRun).values(
                run_id=run_id,
                period_start=start,
                period_end=end,
                status=LOADING,
                started_at=utcnow(),
                loaded={},
                totals={},
                healed_count=0,
                exception_count=0,
                erp=erp,
            )
            conn.execute(insert_run)
            run = self._read_run(conn, run_id)
        if (run.period_start, run.period_end, run.erp) != (start, end, erp):
            raise RunStateError(
                f"run {run_id} already covers {run.period_start} to {run.period_end}"
                f" of ERP {run.erp or '-'}"
            )
        return run

    def run(self, run_id: str) -> ReconciliationRun | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(_RUNS).where(ReconRun.run_id == run_id)).mappings().first()
        return _run_from(row) if row is not None else None

    def latest_runs(self, limit: int = 20) -> list[ReconciliationRun]:
        """The most recently started runs first."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(_RUNS)
                .order_by(ReconRun.started_at.desc(), ReconRun.run_id.desc())
                .limit(limit)
            )
            return [_run_from(row) for row in rows.mappings()]

    def begin_healing(self, run_id: str) -> None:
        """The classified run's healable items are being replayed."""
        with self._engine.begin() as conn:
            if _lock_run(conn, run_id) not in (CLASSIFIED, HEALING):
                raise RunStateError(f"run {run_id} is not classified: nothing to heal yet")
            conn.execute(update(ReconRun).where(ReconRun.run_id == run_id).values(status=HEALING))

    def finish_run(
        self, run_id: str, status: Literal["done", "failed"], healed: int, exceptions: int
    ) -> None:
        """Close the run with how many items were healed and how many exceptions opened."""
        _check_choice("status", status, (DONE, FAILED))
        with self._engine.begin() as conn:
            _lock_run(conn, run_id)
            conn.execute(
                update(ReconRun)
                .where(ReconRun.run_id == run_id)
                .values(
                    status=status,
                    healed_count=healed,
                    exception_count=exceptions,
                    finished_at=func.coalesce(ReconRun.finished_at, utcnow()),
                )
            )
            outbox.add_events(
                conn, outbox.reconciliation_events(run_id, status, healed, exceptions, utcnow())
            )

    # --- loading -------------------------------------------------------------------------
    # Loaders insert in batches (Core executemany). A row offered twice (an activity retried
    # after its page was stored) is kept once: natural keys and ON CONFLICT DO NOTHING.

    def add_expected(self, run_id: str, rows: Iterable[ExpectedPosting]) -> int:
        """Load billing's expected ERP postings; returns how many rows were offered."""
        return self._load(run_id, ReconExpected, (_staged(run_id, row) for row in rows))

    def add_erp(self, run_id: str, rows: Iterable[ErpDocument]) -> int:
        """Load the ERP's documents; returns how many rows were offered."""
        return self._load(run_id, ReconErpDocument, (_staged(run_id, row) for row in rows))

    def add_support_credits(self, run_id: str, rows: Iterable[SupportCredit]) -> int:
        """Load the credits support requested; returns how many rows were offered."""
        return self._load(run_id, ReconSupportCredit, (_staged(run_id, row) for row in rows))

    def add_expected_payments(self, run_id: str, rows: Iterable[ExpectedPayment]) -> int:
        """Load billing's payments and refunds; returns how many rows were offered."""
        return self._load(run_id, ReconExpectedPayment, (_staged(run_id, row) for row in rows))

    def add_erp_payments(self, run_id: str, rows: Iterable[ErpPayment]) -> int:
        """Load the ERP's payments and refunds; returns how many rows were offered."""
        return self._load(run_id, ReconErpPayment, (_staged(run_id, row) for row in rows))

    def add_taxes(self, run_id: str, rows: Iterable[DocumentTax]) -> int:
        """Load tax per document and ERP tax name, of either side. Rows of one document and
        tax name must come summed (a second row for the same key is dropped as a retry's)."""
        return self._load(run_id, ReconTax, (_staged(run_id, row) for row in rows))

    def add_receivables(self, run_id: str, rows: Iterable[CustomerReceivable]) -> int:
        """Load what customers owe now, of either side; returns how many rows were offered."""
        return self._load(run_id, ReconReceivable, (_staged(run_id, row) for row in rows))

    def snapshot_journal(
        self,
        run_id: str,
        posted_from: datetime,
        posted_to: datetime,
        references_from_expected: bool = True,
        *,
        erp: str | None = None,
        before_routing: bool = False,
    ) -> int:
        """Copy the journal entries posted in [posted_from, posted_to) and, unless told
        otherwise, those for any reference billing expects (documents, payments, refunds),
        whenever posted. Load the expected rows first. Taking the snapshot again replaces
        it. Returns the entry count.

        With `erp`, only the entries that ERP booked, and with `before_routing` those from
        before routing too (their `erp` is None: booked by the ERP on the `erp` queue)."""
        journal_columns = (
            literal(run_id, String(255)),
            Posting.id,
            Posting.source_document_id,
            Posting.document_type,
            Posting.customer_id,
            Posting.erp_document_id,
            Posting.currency,
            Posting.amount,
        )
        booked = _booked_by(erp, before_routing)
        in_window = select(*journal_columns).where(
            Posting.posted_at >= _utc(posted_from), Posting.posted_at < _utc(posted_to), booked
        )
        for_expected = (
            select(*journal_columns)
            .join(
                ReconExpected,
                and_(
                    ReconExpected.run_id == run_id,
                    ReconExpected.reference == Posting.source_document_id,
                    _own(ReconExpected),
                ),
            )
            .where(booked)
        )
        for_expected_payments = (
            select(*journal_columns)
            .join(
                ReconExpectedPayment,
                and_(
                    ReconExpectedPayment.run_id == run_id,
                    ReconExpectedPayment.reference == Posting.source_document_id,
                ),
            )
            .where(booked)
        )
        entries = (
            union(in_window, for_expected, for_expected_payments)
            if references_from_expected
            else in_window
        )
        copy = insert(ReconJournalEntry).from_select(
            [
                "run_id",
                "posting_id",
                "reference",
                "kind",
                "customer_id",
                "erp_document_id",
                "currency",
                "amount",
            ],
            entries,
        )
        with self._engine.begin() as conn:
            _lock_run(conn, run_id, allowed=(LOADING,))
            # Billing's rows were just loaded: without fresh statistics PostgreSQL takes the
            # tables for empty and joins them to the journal by nested loops (minutes).
            _analyze_staging(conn, ("recon_expected", "recon_expected_payments"))
            conn.execute(delete(ReconJournalEntry).where(ReconJournalEntry.run_id == run_id))
            conn.execute(copy)
            return _count(conn, ReconJournalEntry.run_id == run_id)

    # --- which ERP books what (a run of one ERP loads only that ERP's) ---------------------

    def journaled_erps(self, references: Iterable[str]) -> dict[str, str | None]:
        """The ERP the journal says booked each of these billing references that it holds
        (None: an entry from before routing)."""
        found: dict[str, str | None] = {}
        with self._engine.connect() as conn:
            for chunk in _chunks(references):
                rows = conn.execute(
                    select(Posting.source_document_id, Posting.erp).where(
                        Posting.source_system == "billing",
                        Posting.source_document_id.in_(chunk),
                    )
                )
                found.update({reference: erp for reference, erp in rows})
        return found

    def customer_journal_erps(self, customer_ids: Iterable[str]) -> dict[str, set[str | None]]:
        """For each of these customers the journal holds entries of, the ERPs that booked
        them (None: entries from before routing)."""
        found: dict[str, set[str | None]] = {}
        with self._engine.connect() as conn:
            for chunk in _chunks(customer_ids):
                rows = conn.execute(
                    select(Posting.customer_id, Posting.erp)
                    .where(Posting.customer_id.in_(chunk))
                    .group_by(Posting.customer_id, Posting.erp)
                )
                for customer_id, erp in rows:
                    found.setdefault(customer_id, set()).add(erp)
        return found

    def expected_erps(self, run_id: str, references: Iterable[str]) -> dict[str, str | None]:
        """The documents of these references the run expects, each with the other ERP that
        books it (None: the run's own ERP)."""
        found: dict[str, str | None] = {}
        with self._engine.connect() as conn:
            for chunk in _chunks(references):
                rows = conn.execute(
                    select(ReconExpected.reference, ReconExpected.other_erp).where(
                        ReconExpected.run_id == run_id, ReconExpected.reference.in_(chunk)
                    )
                )
                found.update({reference: other for reference, other in rows})
        return found

    def shadowed_in(self, erp: str, references: Iterable[str]) -> set[str]:
        """Which of these references `erp` holds as shadow copies of another ERP's book."""
        found: set[str] = set()
        with self._engine.connect() as conn:
            for chunk in _chunks(references):
                found.update(
                    conn.execute(
                        select(ShadowPosting.source_document_id).where(
                            ShadowPosting.erp == erp, ShadowPosting.source_document_id.in_(chunk)
                        )
                    ).scalars()
                )
        return found

    def add_page(
        self,
        run_id: str,
        *,
        expected: Iterable[ExpectedPosting] = (),
        expected_payments: Iterable[ExpectedPayment] = (),
        erp: Iterable[ErpDocument] = (),
        erp_payments: Iterable[ErpPayment] = (),
        support_credits: Iterable[SupportCredit] = (),
        taxes: Iterable[DocumentTax] = (),
        receivables: Iterable[CustomerReceivable] = (),
    ) -> int:
        """Load one page's rows of every kind in one transaction (as the `add_*` do one
        kind each); returns how many rows were offered."""
        tables: list[tuple[type[Base], Iterable[StagedRow]]] = [
            (ReconExpected, expected), (ReconExpectedPayment, expected_payments),
            (ReconErpDocument, erp), (ReconErpPayment, erp_payments),
            (ReconSupportCredit, support_credits), (ReconTax, taxes),
            (ReconReceivable, receivables),
        ]  # fmt: skip
        with self._engine.begin() as conn:
            # A shared lock: pages load side by side, classification waits for them.
            _lock_run(conn, run_id, allowed=(LOADING,), shared=True)
            return sum(
                self._insert(conn, model, (_staged(run_id, row) for row in rows))
                for model, rows in tables
            )

    def _load(self, run_id: str, model: type[Base], rows: Iterable[dict[str, Any]]) -> int:
        with self._engine.begin() as conn:
            # A shared lock: pages load side by side, classification waits for them.
            _lock_run(conn, run_id, allowed=(LOADING,), shared=True)
            return self._insert(conn, model, rows)

    def _insert(self, conn: Connection, model: type[Base], rows: Iterable[dict[str, Any]]) -> int:
        offered = 0
        statement = _insert_ignoring_duplicates(conn, model)
        for batch in _batches(rows, self._batch_size):
            conn.execute(statement, batch)
            offered += len(batch)
        return offered

    # --- classification ------------------------------------------------------------------

    def classify(self, run_id: str) -> ReconciliationRun:
        """Classify the loaded run into items and store its totals. Classifying a run
        that is already classified returns it unchanged (staging may be gone by then)."""
        with self._engine.begin() as conn:
            if _lock_run(conn, run_id) == LOADING:
                _analyze_staging(conn)
                conn.execute(delete(ReconItem).where(ReconItem.run_id == run_id))
                for statement in _classification(run_id):
                    conn.execute(statement)
                conn.execute(
                    update(ReconRun)
                    .where(ReconRun.run_id == run_id)
                    .values(
                        status=CLASSIFIED,
                        loaded=_loaded_counts(conn, run_id),
                        totals=_totals(conn, run_id),
                    )
                )
            return self._read_run(conn, run_id)

    def plain_sql_diff(self, run_id: str) -> dict[str, int]:
        """Counts per class by the plainest SQL over the loaded tables, writing nothing:
        the baseline classify is measured and checked against."""
        with self._engine.begin() as conn:
            _analyze_staging(conn)  # the same fresh statistics classify plans with
            return {
                cls: int(conn.execute(text(sql), {"run_id": run_id}).scalar_one())
                for cls, sql in PLAIN_SQL_DIFF.items()
            }

    def delete_staging(self, run_id: str) -> int:
        """Drop the run's loaded documents once classified; items and totals stay."""
        with self._engine.begin() as conn:
            if _lock_run(conn, run_id) == LOADING:
                raise RunStateError(f"run {run_id} is not classified: its staging is still needed")
            staging = (
                delete(ReconExpected).where(ReconExpected.run_id == run_id),
                delete(ReconErpDocument).where(ReconErpDocument.run_id == run_id),
                delete(ReconJournalEntry).where(ReconJournalEntry.run_id == run_id),
                delete(ReconSupportCredit).where(ReconSupportCredit.run_id == run_id),
                delete(ReconExpectedPayment).where(ReconExpectedPayment.run_id == run_id),
                delete(ReconErpPayment).where(ReconErpPayment.run_id == run_id),
                delete(ReconTax).where(ReconTax.run_id == run_id),
                delete(ReconReceivable).where(ReconReceivable.run_id == run_id),
            )
            return sum(conn.execute(statement).rowcount for statement in staging)

    # --- the report ----------------------------------------------------------------------

    def items(
        self,
        run_id: str,
        cls: ReconClass | None = None,
        after_id: int | None = None,
        limit: int = 500,
    ) -> list[ReconciliationItem]:
        """A page of the run's items in id order; pass the last id seen as `after_id`."""
        query = select(_ITEMS).where(ReconItem.run_id == run_id)
        if cls is not None:
            query = query.where(ReconItem.classification == cls)
        if after_id is not None:
            query = query.where(ReconItem.id > after_id)
        with self._engine.connect() as conn:
            rows = conn.execute(query.order_by(ReconItem.id).limit(limit))
            return [_item_from(row) for row in rows.mappings()]

    def healable(self, run_id: str, limit: int = 500) -> list[ReconciliationItem]:
        """Items the posting path may replay, not yet acted on, in id order."""
        query = (
            select(_ITEMS)
            .where(
                ReconItem.run_id == run_id,
                ReconItem.classification.in_(sorted(HEALABLE)),
                ReconItem.outcome.is_(None),
            )
            .order_by(ReconItem.id)
            .limit(limit)
        )
        with self._engine.connect() as conn:
            return [_item_from(row) for row in conn.execute(query).mappings()]

    def mark_outcome(self, item_id: int, outcome: Outcome, ref: str | None) -> None:
        """Record what was done about an item (healed, exception opened, skipped)."""
        _check_choice("outcome", outcome, OUTCOMES)
        with self._engine.begin() as conn:
            result = conn.execute(
                update(ReconItem)
                .where(ReconItem.id == item_id)
                .values(outcome=outcome, outcome_ref=ref, outcome_at=utcnow())
            )
            if result.rowcount != 1:
                raise LookupError(f"no reconciliation item {item_id}")

    def _read_run(self, conn: Connection, run_id: str) -> ReconciliationRun:
        row = conn.execute(select(_RUNS).where(ReconRun.run_id == run_id)).mappings().first()
        if row is None:
            raise UnknownRunError(run_id)
        return _run_from(row)


# --- classification SQL ------------------------------------------------------------------


def _classification(run_id: str) -> list[Executable]:
    """One INSERT … SELECT per side; each statement decides its rows' class in SQL.
    Documents and money moved are diffed apart (a refund's credit note and its payment out
    share the refund's id as reference); then the totals: tax per rate, receivables."""
    erp = _erp_by_reference(run_id)
    journal = _journal_by_reference(run_id, payments=False)
    erp_payments = _erp_by_reference(run_id, payments=True)
    payment_journal = _journal_by_reference(run_id, payments=True)
    return [
        _expected_findings(run_id, erp, journal),
        _erp_only_findings(run_id, erp, journal),
        _unreferenced_erp_findings(run_id),
        _journal_only_findings(run_id, journal),
        _credit_without_ticket(run_id),
        _ticket_credit_without_billing(run_id),
        _expected_findings(run_id, erp_payments, payment_journal, payments=True),
        _erp_only_findings(run_id, erp_payments, payment_journal, payments=True),
        _unreferenced_erp_findings(run_id, payments=True),
        _journal_only_findings(run_id, payment_journal, payments=True),
        _tax_findings(run_id),
        _receivable_findings(run_id),
    ]


def _erp_by_reference(run_id: str, *, payments: bool = False) -> Subquery:
    """The ERP's documents, or its payments and refunds (with what each is applied to), one
    row per reference."""
    erp: type[ReconErpDocument] | type[ReconErpPayment]
    erp, applied = (
        (ReconErpPayment, [func.min(ReconErpPayment.applies_to).label("applies_to")])
        if payments
        else (ReconErpDocument, [])
    )
    return (
        select(
            erp.reference,
            func.count().label("documents"),
            func.min(erp.kind).label("kind"),
            func.min(erp.currency).label("currency"),
            func.sum(erp.amount).label("amount"),
            func.min(erp.state).label("state"),
            func.min(erp.customer_id).label("customer_id"),
            *applied,
            func.aggregate_strings(erp.erp_document_id, ",").label("erp_document_ids"),
        )
        .where(erp.run_id == run_id, erp.reference.is_not(None))
        .group_by(erp.reference)
        .subquery("erp_payments" if payments else "erp")
    )  # fmt: skip


def _journal_by_reference(run_id: str, *, payments: bool) -> Subquery:
    """The journal's documents, or its payments and refunds, one row per reference (with
    how many of its entries record finance's rejection instead of a posting)."""
    entry = ReconJournalEntry
    of_kind = entry.kind.in_(PAYMENT_KINDS) if payments else entry.kind.not_in(PAYMENT_KINDS)
    rejection = entry.erp_document_id.startswith(REJECTED_POSTING_PREFIX, autoescape=True)
    return (
        select(
            entry.reference,
            func.count().label("entries"),
            func.count(case((rejection, 1))).label("rejections"),
            func.min(entry.kind).label("kind"),
            func.min(entry.currency).label("currency"),
            func.min(entry.amount).label("amount"),
            func.min(entry.customer_id).label("customer_id"),
            func.min(entry.erp_document_id).label("erp_document_id"),
        )
        .where(entry.run_id == run_id, of_kind)
        .group_by(entry.reference)
        .subquery("payment_journal" if payments else "journal")
    )


def _rejected_by_finance(journal: Subquery) -> ColumnElement[bool]:
    """Every journal entry of the reference records finance's rejection: nothing was posted
    and nothing is to be (a real or hand posting beside it keeps the reference unexplained)."""
    return journal.c.rejections == journal.c.entries


def _rejection_detail(journal: Subquery, *, then: str | SQLColumnExpression[str]) -> Any:
    """'Finance rejected its posting in exception exception/…; <then>'."""
    exception_id = func.substr(journal.c.erp_document_id, len(REJECTED_POSTING_PREFIX) + 1)
    return "Finance rejected its posting in exception " + exception_id + "; " + then


Branch = tuple[ColumnElement[bool], ReconClass, SQLColumnExpression[str] | str | None]


def _classified(
    branches: Sequence[Branch], otherwise: tuple[ReconClass, SQLColumnExpression[str] | str | None]
) -> dict[str, ColumnElement[Any]]:
    """The class, detail and remedy columns of one decision, first matching branch wins."""
    whens = [(condition, cls) for condition, cls, _ in branches]
    details = [(condition, _text(detail)) for condition, _, detail in branches]
    remedies = [(condition, REMEDIES[cls]) for condition, cls, _ in branches]
    return {
        "classification": case(*whens, else_=otherwise[0]),
        "detail": case(*details, else_=_text(otherwise[1])),
        "remedy": case(*remedies, else_=REMEDIES[otherwise[0]]),
    }


def _text(value: SQLColumnExpression[Any] | str | None) -> SQLColumnExpression[Any]:
    if value is None:
        return null()
    return literal(value, String) if isinstance(value, str) else value


def _differences(
    against: str,
    erp: Subquery,
    kind: SQLColumnExpression[str],
    currency: SQLColumnExpression[str],
    amount: SQLColumnExpression[Decimal],
    applies_to: SQLColumnExpression[str] | None = None,
    *,
    payments: bool = False,
) -> ColumnElement[str]:
    """'ERP document differs from billing in: kind (invoice vs credit_note), amount', or for
    money moved 'ERP refund differs from billing in: amount, applied to (re_1 vs cn_1)'."""
    pieces: list[ColumnElement[str]] = [
        case((kind != erp.c.kind, " kind (" + kind + " vs " + erp.c.kind + "),"), else_=""),
        case(
            (currency != erp.c.currency, " currency (" + currency + " vs " + erp.c.currency + "),"),
            else_="",
        ),
        case((amount != erp.c.amount, " amount,"), else_=""),
    ]
    if applies_to is not None:
        applied = func.coalesce(erp.c.applies_to, "(nothing)")
        pieces.append(
            case(
                (applied != applies_to, " applied to (" + applies_to + " vs " + applied + "),"),
                else_="",
            )
        )
    pieces.append(case((erp.c.state == CANCELLED, " state (cancelled),"), else_=""))
    what = erp.c.kind if payments else literal("document", String)
    sentence: ColumnElement[str] = "ERP " + what + f" differs from {against} in:"
    for piece in pieces:
        sentence = sentence + piece
    return func.rtrim(sentence, ",")


def _agrees(
    erp: Subquery,
    kind: SQLColumnExpression[str],
    currency: SQLColumnExpression[str],
    amount: SQLColumnExpression[Decimal],
) -> ColumnElement[bool]:
    return and_(
        erp.c.documents == 1,
        erp.c.kind == kind,
        erp.c.currency == currency,
        erp.c.amount == amount,
        erp.c.state != CANCELLED,
    )


def _agrees_with_journal(run_id: str, erp: Subquery) -> ColumnElement[bool]:
    entry = ReconJournalEntry
    return and_(
        erp.c.documents == 1,
        erp.c.state != CANCELLED,
        exists().where(
            entry.run_id == run_id,
            entry.reference == erp.c.reference,
            entry.kind == erp.c.kind,
            entry.currency == erp.c.currency,
            entry.amount == erp.c.amount,
        ),
    )


_ITEM_COLUMNS: Final = (
    "run_id",
    "classification",
    "reference",
    "kind",
    "customer_id",
    "currency",
    "amount",
    "billing_amount",
    "erp_amount",
    "journal_amount",
    "billing_document_id",
    "erp_document_ids",
    "case_id",
    "request_id",
    "detail",
    "remedy",
)


def _item_columns(
    run_id: str, **columns: SQLColumnExpression[Any] | str
) -> tuple[list[str], Select[Any]]:
    """The column names and the SELECT list of an INSERT INTO recon_items … SELECT."""
    values: dict[str, SQLColumnExpression[Any]] = {"run_id": literal(run_id, String(255))}
    values.update({name: _text(value) for name, value in columns.items()})
    names: list[str] = [name for name in _ITEM_COLUMNS if name in values]
    return names, select(*(label(name, values[name]) for name in names))


def _insert_items(names: list[str], query: Select[Any]) -> Insert:
    return insert(ReconItem).from_select(names, query)


def _expected_findings(
    run_id: str, erp: Subquery, journal: Subquery, *, payments: bool = False
) -> Insert:
    """Every reference billing expects, documents or (`payments`) payments and refunds:
    matched, differing, duplicated, rejected by finance, posted but absent, or missing (the
    posting path can replay a missing one)."""
    e: type[ReconExpected] | type[ReconExpectedPayment]
    what: SQLColumnExpression[str] | str
    applies_to: SQLColumnExpression[str] | None
    otherwise: tuple[ReconClass, str]
    missing: list[Branch] = []
    billing_only: dict[str, SQLColumnExpression[Any]] = {}
    own: ColumnElement[bool] = true()
    if payments:
        e, what, applies_to = (
            ReconExpectedPayment,
            ReconExpectedPayment.kind,
            ReconExpectedPayment.applies_to,
        )
        agrees = and_(_agrees(erp, e.kind, e.currency, e.amount), erp.c.applies_to == applies_to)
        missing.append(
            (
                e.kind == "refund",
                REFUND_MISSING_IN_ERP,
                "Neither the ERP nor the posting journal holds this refund",
            )
        )
        otherwise = (
            PAYMENT_MISSING_IN_ERP,
            "Neither the ERP nor the posting journal holds this payment",
        )
    else:
        e, what, applies_to = ReconExpected, "document", None
        agrees = _agrees(erp, e.kind, e.currency, e.amount)
        otherwise = (MISSING_IN_ERP, "Neither the ERP nor the posting journal holds this reference")
        billing_only["case_id"] = ReconExpected.case_id
        own = _own(ReconExpected)
    holds_none = "the ERP holds no " + what + " with this reference"
    decision = _classified(
        [
            (erp.c.documents >= 2, DUPLICATE_IN_ERP, _duplicates(erp, payments=payments)),
            (agrees, MATCHED, None),
            (erp.c.documents == 1, _mismatch(payments),
             _differences("billing", erp, e.kind, e.currency, e.amount, applies_to,
                          payments=payments)),
            (_rejected_by_finance(journal), REJECTED_BY_FINANCE,
             _rejection_detail(journal, then=holds_none)),
            (journal.c.entries.is_not(None), POSTED_BUT_ABSENT,
             "Journaled as ERP " + what + " " + journal.c.erp_document_id + "; " + holds_none),
            *missing,
        ],
        otherwise=otherwise,
    )  # fmt: skip
    names, query = _item_columns(
        run_id,
        reference=e.reference,
        kind=e.kind,
        customer_id=e.customer_id,
        currency=e.currency,
        amount=e.amount,
        billing_amount=e.amount,
        erp_amount=erp.c.amount,
        journal_amount=journal.c.amount,
        billing_document_id=e.billing_document_id,
        erp_document_ids=erp.c.erp_document_ids,
        **billing_only,
        **decision,
    )
    return _insert_items(
        names,
        query.select_from(e)
        .outerjoin(erp, erp.c.reference == e.reference)
        .outerjoin(journal, journal.c.reference == e.reference)
        .where(e.run_id == run_id, own),
    )


def _erp_only_findings(
    run_id: str, erp: Subquery, journal: Subquery, *, payments: bool = False
) -> Insert:
    """ERP references (documents, or payments and refunds) billing does not list for the
    period: duplicates, orphans, or journaled postings of a billing document or payment of
    another period (agreeing with the journal, or not)."""
    e: type[ReconExpected] | type[ReconExpectedPayment]
    own: ColumnElement[bool]
    booked_elsewhere: list[Branch] = []
    if payments:
        e, what, own = ReconExpectedPayment, "billing " + erp.c.kind, true()
    else:
        e, what, own = ReconExpected, literal("billing document", String), _own(ReconExpected)
        elsewhere = aliased(ReconExpected)  # not the outer query's own rows
        other = (
            select(elsewhere.other_erp)
            .where(elsewhere.run_id == run_id, elsewhere.reference == erp.c.reference)
            .scalar_subquery()
        )
        booked_elsewhere.append((
            and_(journal.c.entries.is_(None), other.is_not(None)),
            ORPHAN_IN_ERP,
            "Billing's document belongs to ERP " + other + " (journaled or routed there), "
            "not to this one",
        ))  # fmt: skip
    decision = _classified(
        [
            (erp.c.documents >= 2, DUPLICATE_IN_ERP, _duplicates(erp, payments=payments)),
            *booked_elsewhere,
            (
                journal.c.entries.is_(None),
                ORPHAN_IN_ERP,
                "The reference matches no " + what + " and no journal entry",
            ),
            (
                _agrees_with_journal(run_id, erp),
                MATCHED_TO_JOURNAL,
                "Billing does not list this reference for the period; the ERP agrees with "
                "the journal",
            ),
        ],
        otherwise=(
            _mismatch(payments),
            _differences("the journal", erp, journal.c.kind, journal.c.currency, journal.c.amount,
                         payments=payments),
        ),
    )  # fmt: skip
    names, query = _item_columns(
        run_id,
        reference=erp.c.reference,
        kind=erp.c.kind,
        customer_id=func.coalesce(journal.c.customer_id, erp.c.customer_id),
        currency=erp.c.currency,
        amount=erp.c.amount,
        erp_amount=erp.c.amount,
        journal_amount=journal.c.amount,
        erp_document_ids=erp.c.erp_document_ids,
        **decision,
    )
    return _insert_items(
        names,
        query.select_from(erp)
        .outerjoin(e, and_(e.run_id == run_id, e.reference == erp.c.reference, own))
        .outerjoin(journal, journal.c.reference == erp.c.reference)
        .where(e.reference.is_(None)),
    )


def _mismatch(payments: bool) -> ReconClass:
    return PAYMENT_AMOUNT_MISMATCH if payments else AMOUNT_MISMATCH


def _duplicates(erp: Subquery, *, payments: bool = False) -> ColumnElement[str]:
    what = "payments" if payments else "documents"
    return (
        cast(erp.c.documents, String)
        + f" ERP {what} carry this reference: "
        + erp.c.erp_document_ids
    )


def _unreferenced_erp_findings(run_id: str, *, payments: bool = False) -> Insert:
    """ERP documents (or payments and refunds) without a reference: orphans, one item each."""
    erp: type[ReconErpDocument] | type[ReconErpPayment]
    if payments:
        erp = ReconErpPayment
        detail = "ERP " + erp.kind + " " + erp.erp_document_id + " has no reference"
    else:
        erp = ReconErpDocument
        detail = "ERP document " + func.coalesce(erp.number, "(unnumbered)") + " has no reference"
    names, query = _item_columns(
        run_id,
        classification=ORPHAN_IN_ERP,
        kind=erp.kind,
        customer_id=erp.customer_id,
        currency=erp.currency,
        amount=erp.amount,
        erp_amount=erp.amount,
        erp_document_ids=erp.erp_document_id,
        detail=detail,
        remedy=REMEDIES[ORPHAN_IN_ERP],
    )
    return _insert_items(names, query.where(erp.run_id == run_id, erp.reference.is_(None)))


def _journal_only_findings(run_id: str, journal: Subquery, *, payments: bool = False) -> Insert:
    """Journal entries (documents, or payments and refunds) neither billing nor the ERP
    knows: posted but absent, or rejected by finance."""
    expected_model: type[ReconExpected] | type[ReconExpectedPayment]
    erp_model: type[ReconErpDocument] | type[ReconErpPayment]
    what: SQLColumnExpression[Any] | str
    if payments:
        expected_model, erp_model, what = ReconExpectedPayment, ReconErpPayment, journal.c.kind
    else:
        expected_model, erp_model, what = ReconExpected, ReconErpDocument, "document"
    expected = exists().where(
        expected_model.run_id == run_id,
        expected_model.reference == journal.c.reference,
        true() if payments else _own(ReconExpected),
    )
    in_erp = exists().where(erp_model.run_id == run_id, erp_model.reference == journal.c.reference)
    neither = "neither the ERP nor billing holds this reference"
    decision = _classified(
        [(_rejected_by_finance(journal), REJECTED_BY_FINANCE,
          _rejection_detail(journal, then=neither))],
        otherwise=(POSTED_BUT_ABSENT,
                   "Journaled as ERP " + what + " " + journal.c.erp_document_id + "; " + neither),
    )  # fmt: skip
    names, query = _item_columns(
        run_id,
        reference=journal.c.reference,
        kind=journal.c.kind,
        customer_id=journal.c.customer_id,
        currency=journal.c.currency,
        amount=journal.c.amount,
        journal_amount=journal.c.amount,
        **decision,
    )
    return _insert_items(names, query.select_from(journal).where(~expected, ~in_erp))


def _credit_without_ticket(run_id: str) -> Insert:
    """Credits granted in billing that no support case asked for."""
    e = ReconExpected
    requested = exists().where(
        ReconSupportCredit.run_id == run_id,
        ReconSupportCredit.billing_document_id == e.billing_document_id,
    )
    names, query = _item_columns(
        run_id,
        classification=CREDIT_WITHOUT_TICKET,
        reference=e.reference,
        kind=e.kind,
        customer_id=e.customer_id,
        currency=e.currency,
        amount=e.amount,
        billing_amount=e.amount,
        billing_document_id=e.billing_document_id,
        detail="Billing " + e.billing_kind + " " + e.billing_document_id + " names no support case",
        remedy=REMEDIES[CREDIT_WITHOUT_TICKET],
    )
    return _insert_items(
        names,
        query.where(
            e.run_id == run_id, _own(e), e.is_credit.is_(True), e.case_id.is_(None), ~requested
        ),
    )


def _ticket_credit_without_billing(run_id: str) -> Insert:
    """Credits support requested that billing does not hold."""
    s = ReconSupportCredit
    e = ReconExpected
    # Billing holds it when the document the ticket names is listed, or a billing credit
    # carries the ticket's case id (support credits are tagged with their case in billing),
    # whichever ERP books that credit: tickets are support's and billing's, not an ERP's.
    # Two NOT EXISTS, each on its own index: one with an OR makes PostgreSQL nest loops.
    names_listed = exists().where(
        e.run_id == run_id, e.billing_document_id == s.billing_document_id
    )
    case_credited = exists().where(
        e.run_id == run_id, e.is_credit.is_(True), e.case_id == s.case_id
    )
    names, query = _item_columns(
        run_id,
        classification=TICKET_CREDIT_WITHOUT_BILLING,
        reference=s.billing_document_id,
        customer_id=s.customer_id,
        currency=s.currency,
        amount=s.amount,
        billing_document_id=s.billing_document_id,
        case_id=s.case_id,
        request_id=s.request_id,
        detail=case(
            (s.billing_document_id.is_(None), "No billing credit carries the ticket's case"),
            else_="Billing does not list the document the ticket names",
        ),
        remedy=REMEDIES[TICKET_CREDIT_WITHOUT_BILLING],
    )
    return _insert_items(names, query.where(s.run_id == run_id, ~names_listed, ~case_credited))


# --- totals: tax per rate, open receivables ----------------------------------------------


def _micros(amount: SQLColumnExpression[Decimal]) -> ColumnElement[int]:
    """An amount as integer millionths: sums and comparisons exact on SQLite's REAL too."""
    return cast(func.round(amount * _MICROS), BigInteger)


def _from_micros(micros: SQLColumnExpression[int]) -> ColumnElement[Decimal]:
    # A numeric literal: PostgreSQL multiplies exactly, SQLite does not divide integers.
    return cast(micros * literal_column("0.000001"), Numeric(24, 6))


def _documents_both_hold(run_id: str) -> Select[Any]:
    """References billing expects and the ERP holds once, not cancelled: where tax is
    compared (a missing or doubled document is already a finding of its own)."""
    doc = ReconErpDocument
    expected = select(ReconExpected.reference).where(
        ReconExpected.run_id == run_id, _own(ReconExpected)
    )
    return (
        select(doc.reference)
        .where(doc.run_id == run_id, doc.reference.in_(expected))
        .group_by(doc.reference)
        .having(func.count() == 1, func.min(doc.state) != CANCELLED)
    )


def _tax_totals(run_id: str, side: Side) -> Subquery:
    tax = ReconTax
    return (
        select(
            tax.tax,
            tax.currency,
            func.count().label("documents"),
            func.sum(_micros(tax.amount)).label("micros"),
        )
        .where(
            tax.run_id == run_id,
            tax.side == side,
            tax.reference.in_(_documents_both_hold(run_id)),
        )
        .group_by(tax.tax, tax.currency)
        .subquery(f"{side}_tax")
    )


def _tax_findings(run_id: str) -> Insert:
    """Per ERP tax and currency, billing's tax against the ERP's over the documents both
    hold for the period: one item where the totals differ."""
    billing, erp = _tax_totals(run_id, "billing"), _tax_totals(run_id, "erp")
    keys = union(
        select(billing.c.tax, billing.c.currency), select(erp.c.tax, erp.c.currency)
    ).subquery("tax_keys")
    billing_micros = func.coalesce(billing.c.micros, 0)
    erp_micros = func.coalesce(erp.c.micros, 0)
    names, query = _item_columns(
        run_id,
        classification=TAX_DIFFERS,
        reference=keys.c.tax,
        kind="tax",
        currency=keys.c.currency,
        amount=_from_micros(billing_micros),
        billing_amount=_from_micros(billing_micros),
        erp_amount=_from_micros(erp_micros),
        detail=case(
            (
                keys.c.tax.startswith(UNMAPPED_TAX_PREFIX),
                "Finance's mapping names no ERP tax for billing's " + func.substr(keys.c.tax, 10),
            ),
            (billing.c.tax.is_(None), "Billing has no tax the mapping names " + keys.c.tax),
            (erp.c.tax.is_(None), "The ERP holds no tax " + keys.c.tax + " on these documents"),
            else_="Tax " + keys.c.tax + " differs between billing and the ERP",
        )
        + " (documents both hold for the period)",
        remedy=REMEDIES[TAX_DIFFERS],
    )
    return _insert_items(
        names,
        query.select_from(keys)
        .outerjoin(billing, and_(billing.c.tax == keys.c.tax,
                                 billing.c.currency == keys.c.currency))
        .outerjoin(erp, and_(erp.c.tax == keys.c.tax, erp.c.currency == keys.c.currency))
        .where(billing_micros != erp_micros),
    )  # fmt: skip


def _receivable_findings(run_id: str) -> Insert:
    """Per customer and currency, what billing says is owed (amount remaining plus balance)
    against the ERP's receivable: one item where they differ (absent counts as zero)."""
    r = ReconReceivable
    billing = select(r).where(r.run_id == run_id, r.side == "billing").subquery("billing_owed")
    erp = select(r).where(r.run_id == run_id, r.side == "erp").subquery("erp_owed")
    keys = union(
        select(billing.c.customer_id, billing.c.currency),
        select(erp.c.customer_id, erp.c.currency),
    ).subquery("owed_keys")
    billing_micros = func.coalesce(_micros(billing.c.amount), 0)
    erp_micros = func.coalesce(_micros(erp.c.amount), 0)
    names, query = _item_columns(
        run_id,
        classification=RECEIVABLE_DIFFERS,
        kind="receivable",
        customer_id=keys.c.customer_id,
        currency=keys.c.currency,
        amount=_from_micros(billing_micros),
        billing_amount=_from_micros(billing_micros),
        erp_amount=_from_micros(erp_micros),
        detail=case(
            (billing.c.customer_id.is_(None), "Billing has nothing open for the customer; "
             "the ERP's receivable is not zero"),
            (erp.c.customer_id.is_(None), "The ERP has no open receivable for the customer"),
            else_="Billing's amount remaining plus balance differs from the ERP's receivable",
        ),
        remedy=REMEDIES[RECEIVABLE_DIFFERS],
    )  # fmt: skip
    on = {"customer_id": keys.c.customer_id, "currency": keys.c.currency}
    return _insert_items(
        names,
        query.select_from(keys)
        .outerjoin(billing, and_(*(billing.c[k] == v for k, v in on.items())))
        .outerjoin(erp, and_(*(erp.c[k] == v for k, v in on.items())))
        .where(billing_micros != erp_micros),
    )


# The benchmark's baseline and classify's cross-check: one plain COUNT per class over the
# same staging tables, written out in full and independently of classify's statements.
PLAIN_SQL_DIFF: Final[dict[ReconClass, str]] = {
    MATCHED: """
        SELECT
          (SELECT count(*) FROM recon_expected e
           WHERE e.run_id = :run_id AND e.other_erp IS NULL
             AND (SELECT count(*) FROM recon_erp r
                  WHERE r.run_id = e.run_id AND r.reference = e.reference) = 1
             AND EXISTS (SELECT 1 FROM recon_erp r
                         WHERE r.run_id = e.run_id AND r.reference = e.reference
                           AND r.kind = e.kind AND r.currency = e.currency
                           AND r.amount = e.amount AND r.state <> 'cancelled'))
        + (SELECT count(*) FROM recon_expected_payments e
           WHERE e.run_id = :run_id
             AND (SELECT count(*) FROM recon_erp_payments r
                  WHERE r.run_id = e.run_id AND r.reference = e.reference) = 1
             AND EXISTS (SELECT 1 FROM recon_erp_payments r
                         WHERE r.run_id = e.run_id AND r.reference = e.reference
                           AND r.kind = e.kind AND r.currency = e.currency
                           AND r.amount = e.amount AND r.applies_to = e.applies_to
                           AND r.state <> 'cancelled'))
    """,
    MATCHED_TO_JOURNAL: """
        SELECT
          (SELECT count(*) FROM recon_erp r
           WHERE r.run_id = :run_id AND r.state <> 'cancelled'
             AND (SELECT count(*) FROM recon_erp r2
                  WHERE r2.run_id = r.run_id AND r2.reference = r.reference) = 1
             AND NOT EXISTS (SELECT 1 FROM recon_expected e
                             WHERE e.run_id = r.run_id
                               AND e.other_erp IS NULL AND e.reference = r.reference)
             AND EXISTS (SELECT 1 FROM recon_journal j
                         WHERE j.run_id = r.run_id AND j.reference = r.reference
                           AND j.kind = r.kind AND j.currency = r.currency
                           AND j.amount = r.amount))
        + (SELECT count(*) FROM recon_erp_payments r
           WHERE r.run_id = :run_id AND r.state <> 'cancelled'
             AND (SELECT count(*) FROM recon_erp_payments r2
                  WHERE r2.run_id = r.run_id AND r2.reference = r.reference) = 1
             AND NOT EXISTS (SELECT 1 FROM recon_expected_payments e
                             WHERE e.run_id = r.run_id AND e.reference = r.reference)
             AND EXISTS (SELECT 1 FROM recon_journal j
                         WHERE j.run_id = r.run_id AND j.reference = r.reference
                           AND j.kind = r.kind AND j.currency = r.currency
                           AND j.amount = r.amount))
    """,
    MISSING_IN_ERP: """
        SELECT count(*) FROM recon_expected e
        WHERE e.run_id = :run_id AND e.other_erp IS NULL
          AND NOT EXISTS (SELECT 1 FROM recon_erp r
                          WHERE r.run_id = e.run_id AND r.reference = e.reference)
          AND NOT EXISTS (SELECT 1 FROM recon_journal j
                          WHERE j.run_id = e.run_id AND j.reference = e.reference
                            AND j.kind NOT IN ('payment', 'refund'))
    """,
    POSTED_BUT_ABSENT: """
        SELECT
          (SELECT count(DISTINCT j.reference) FROM recon_journal j
           WHERE j.run_id = :run_id AND j.kind NOT IN ('payment', 'refund')
             AND j.erp_document_id NOT LIKE 'rejected:%'
             AND NOT EXISTS (SELECT 1 FROM recon_erp r
                             WHERE r.run_id = j.run_id AND r.reference = j.reference))
        + (SELECT count(DISTINCT j.reference) FROM recon_journal j
           WHERE j.run_id = :run_id AND j.kind IN ('payment', 'refund')
             AND j.erp_document_id NOT LIKE 'rejected:%'
             AND NOT EXISTS (SELECT 1 FROM recon_erp_payments r
                             WHERE r.run_id = j.run_id AND r.reference = j.reference))
    """,
    REJECTED_BY_FINANCE: """
        SELECT
          (SELECT count(DISTINCT j.reference) FROM recon_journal j
           WHERE j.run_id = :run_id AND j.kind NOT IN ('payment', 'refund')
             AND NOT EXISTS (SELECT 1 FROM recon_erp r
                             WHERE r.run_id = j.run_id AND r.reference = j.reference)
             AND NOT EXISTS (SELECT 1 FROM recon_journal j2
                             WHERE j2.run_id = j.run_id AND j2.reference = j.reference
                               AND j2.kind NOT IN ('payment', 'refund')
                               AND j2.erp_document_id NOT LIKE 'rejected:%'))
        + (SELECT count(DISTINCT j.reference) FROM recon_journal j
           WHERE j.run_id = :run_id AND j.kind IN ('payment', 'refund')
             AND NOT EXISTS (SELECT 1 FROM recon_erp_payments r
                             WHERE r.run_id = j.run_id AND r.reference = j.reference)
             AND NOT EXISTS (SELECT 1 FROM recon_journal j2
                             WHERE j2.run_id = j.run_id AND j2.reference = j.reference
                               AND j2.kind IN ('payment', 'refund')
                               AND j2.erp_document_id NOT LIKE 'rejected:%'))
    """,
    AMOUNT_MISMATCH: """
        SELECT
          (SELECT count(*) FROM recon_expected e
           WHERE e.run_id = :run_id AND e.other_erp IS NULL
             AND (SELECT count(*) FROM recon_erp r
                  WHERE r.run_id = e.run_id AND r.reference = e.reference) = 1
             AND NOT EXISTS (SELECT 1 FROM recon_erp r
                             WHERE r.run_id = e.run_id AND r.reference = e.reference
                               AND r.kind = e.kind AND r.currency = e.currency
                               AND r.amount = e.amount AND r.state <> 'cancelled'))
        + (SELECT count(*) FROM recon_erp r
           WHERE r.run_id = :run_id
             AND (SELECT count(*) FROM recon_erp r2
                  WHERE r2.run_id = r.run_id AND r2.reference = r.reference) = 1
             AND NOT EXISTS (SELECT 1 FROM recon_expected e
                             WHERE e.run_id = r.run_id
                               AND e.other_erp IS NULL AND e.reference = r.reference)
             AND EXISTS (SELECT 1 FROM recon_journal j
                         WHERE j.run_id = r.run_id AND j.reference = r.reference
                           AND j.kind NOT IN ('payment', 'refund'))
             AND NOT (r.state <> 'cancelled'
                      AND EXISTS (SELECT 1 FROM recon_journal j
                                  WHERE j.run_id = r.run_id AND j.reference = r.reference
                                    AND j.kind = r.kind AND j.currency = r.currency
                                    AND j.amount = r.amount)))
    """,
    DUPLICATE_IN_ERP: """
        SELECT
          (SELECT count(*) FROM (
             SELECT reference FROM recon_erp
             WHERE run_id = :run_id AND reference IS NOT NULL
             GROUP BY reference HAVING count(*) > 1
           ) duplicated)
        + (SELECT count(*) FROM (
             SELECT reference FROM recon_erp_payments
             WHERE run_id = :run_id AND reference IS NOT NULL
             GROUP BY reference HAVING count(*) > 1
           ) duplicated_payments)
    """,
    ORPHAN_IN_ERP: """
        SELECT
          (SELECT count(*) FROM recon_erp r
           WHERE r.run_id = :run_id
             AND (r.reference IS NULL
                  OR ((SELECT count(*) FROM recon_erp r2
                       WHERE r2.run_id = r.run_id AND r2.reference = r.reference) = 1
                      AND NOT EXISTS (SELECT 1 FROM recon_expected e
                                      WHERE e.run_id = r.run_id
                                        AND e.other_erp IS NULL AND e.reference = r.reference)
                      AND NOT EXISTS (SELECT 1 FROM recon_journal j
                                      WHERE j.run_id = r.run_id AND j.reference = r.reference
                                        AND j.kind NOT IN ('payment', 'refund')))))
        + (SELECT count(*) FROM recon_erp_payments r
           WHERE r.run_id = :run_id
             AND (r.reference IS NULL
                  OR ((SELECT count(*) FROM recon_erp_payments r2
                       WHERE r2.run_id = r.run_id AND r2.reference = r.reference) = 1
                      AND NOT EXISTS (SELECT 1 FROM recon_expected_payments e
                                      WHERE e.run_id = r.run_id AND e.reference = r.reference)
                      AND NOT EXISTS (SELECT 1 FROM recon_journal j
                                      WHERE j.run_id = r.run_id AND j.reference = r.reference
                                        AND j.kind IN ('payment', 'refund')))))
    """,
    CREDIT_WITHOUT_TICKET: """
        SELECT count(*) FROM recon_expected e
        WHERE e.run_id = :run_id AND e.other_erp IS NULL AND e.is_credit AND e.case_id IS NULL
          AND NOT EXISTS (SELECT 1 FROM recon_support_credits s
                          WHERE s.run_id = e.run_id
                            AND s.billing_document_id = e.billing_document_id)
    """,
    TICKET_CREDIT_WITHOUT_BILLING: """
        SELECT count(*) FROM recon_support_credits s
        WHERE s.run_id = :run_id
          AND NOT EXISTS (SELECT 1 FROM recon_expected e
                          WHERE e.run_id = s.run_id
                            AND e.billing_document_id = s.billing_document_id)
          AND NOT EXISTS (SELECT 1 FROM recon_expected e
                          WHERE e.run_id = s.run_id AND e.is_credit AND e.case_id = s.case_id)
    """,
    PAYMENT_MISSING_IN_ERP: """
        SELECT count(*) FROM recon_expected_payments e
        WHERE e.run_id = :run_id AND e.kind = 'payment'
          AND NOT EXISTS (SELECT 1 FROM recon_erp_payments r
                          WHERE r.run_id = e.run_id AND r.reference = e.reference)
          AND NOT EXISTS (SELECT 1 FROM recon_journal j
                          WHERE j.run_id = e.run_id AND j.reference = e.reference
                            AND j.kind IN ('payment', 'refund'))
    """,
    REFUND_MISSING_IN_ERP: """
        SELECT count(*) FROM recon_expected_payments e
        WHERE e.run_id = :run_id AND e.kind = 'refund'
          AND NOT EXISTS (SELECT 1 FROM recon_erp_payments r
                          WHERE r.run_id = e.run_id AND r.reference = e.reference)
          AND NOT EXISTS (SELECT 1 FROM recon_journal j
                          WHERE j.run_id = e.run_id AND j.reference = e.reference
                            AND j.kind IN ('payment', 'refund'))
    """,
    PAYMENT_AMOUNT_MISMATCH: """
        SELECT
          (SELECT count(*) FROM recon_expected_payments e
           WHERE e.run_id = :run_id
             AND (SELECT count(*) FROM recon_erp_payments r
                  WHERE r.run_id = e.run_id AND r.reference = e.reference) = 1
             AND NOT EXISTS (SELECT 1 FROM recon_erp_payments r
                             WHERE r.run_id = e.run_id AND r.reference = e.reference
                               AND r.kind = e.kind AND r.currency = e.currency
                               AND r.amount = e.amount AND r.applies_to = e.applies_to
                               AND r.state <> 'cancelled'))
        + (SELECT count(*) FROM recon_erp_payments r
           WHERE r.run_id = :run_id
             AND (SELECT count(*) FROM recon_erp_payments r2
                  WHERE r2.run_id = r.run_id AND r2.reference = r.reference) = 1
             AND NOT EXISTS (SELECT 1 FROM recon_expected_payments e
                             WHERE e.run_id = r.run_id AND e.reference = r.reference)
             AND EXISTS (SELECT 1 FROM recon_journal j
                         WHERE j.run_id = r.run_id AND j.reference = r.reference
                           AND j.kind IN ('payment', 'refund'))
             AND NOT (r.state <> 'cancelled'
                      AND EXISTS (SELECT 1 FROM recon_journal j
                                  WHERE j.run_id = r.run_id AND j.reference = r.reference
                                    AND j.kind = r.kind AND j.currency = r.currency
                                    AND j.amount = r.amount)))
    """,
    TAX_DIFFERS: """
        WITH b AS (
            SELECT t.tax, t.currency, sum(CAST(round(t.amount * 1000000) AS BIGINT)) AS micros
            FROM recon_taxes t
            WHERE t.run_id = :run_id AND t.side = 'billing'
              AND EXISTS (SELECT 1 FROM recon_expected e
                          WHERE e.run_id = t.run_id
                            AND e.other_erp IS NULL AND e.reference = t.reference)
              AND (SELECT count(*) FROM recon_erp r
                   WHERE r.run_id = t.run_id AND r.reference = t.reference) = 1
              AND NOT EXISTS (SELECT 1 FROM recon_erp r
                              WHERE r.run_id = t.run_id AND r.reference = t.reference
                                AND r.state = 'cancelled')
            GROUP BY t.tax, t.currency
        ), r AS (
            SELECT t.tax, t.currency, sum(CAST(round(t.amount * 1000000) AS BIGINT)) AS micros
            FROM recon_taxes t
            WHERE t.run_id = :run_id AND t.side = 'erp'
              AND EXISTS (SELECT 1 FROM recon_expected e
                          WHERE e.run_id = t.run_id
                            AND e.other_erp IS NULL AND e.reference = t.reference)
              AND (SELECT count(*) FROM recon_erp r
                   WHERE r.run_id = t.run_id AND r.reference = t.reference) = 1
              AND NOT EXISTS (SELECT 1 FROM recon_erp r
                              WHERE r.run_id = t.run_id AND r.reference = t.reference
                                AND r.state = 'cancelled')
            GROUP BY t.tax, t.currency
        )
        SELECT count(*) FROM (SELECT tax, currency FROM b UNION SELECT tax, currency FROM r) k
        WHERE coalesce((SELECT b.micros FROM b WHERE b.tax = k.tax AND b.currency = k.currency), 0)
           <> coalesce((SELECT r.micros FROM r WHERE r.tax = k.tax AND r.currency = k.currency), 0)
    """,
    RECEIVABLE_DIFFERS: """
        SELECT count(*) FROM (
          SELECT customer_id, currency FROM recon_receivables WHERE run_id = :run_id
          GROUP BY customer_id, currency
        ) k
        WHERE coalesce((SELECT CAST(round(b.amount * 1000000) AS BIGINT) FROM recon_receivables b
                        WHERE b.run_id = :run_id AND b.side = 'billing'
                          AND b.customer_id = k.customer_id AND b.currency = k.currency), 0)
           <> coalesce((SELECT CAST(round(r.amount * 1000000) AS BIGINT) FROM recon_receivables r
                        WHERE r.run_id = :run_id AND r.side = 'erp'
                          AND r.customer_id = k.customer_id AND r.currency = k.currency), 0)
    """,
}


# --- helpers -----------------------------------------------------------------------------


def _own(expected: type[ReconExpected]) -> ColumnElement[bool]:
    """A row of the ERP the run reconciles (a row another ERP books is kept for the tickets)."""
    return expected.other_erp.is_(None)


def _booked_by(erp: str | None, before_routing: bool) -> ColumnElement[bool]:
    """Journal entries of the ERP `erp` (any, when None); with `before_routing`, also the
    entries from before routing, which the ERP on the `erp` queue booked."""
    if erp is None:
        return true()
    if before_routing:
        return or_(Posting.erp == erp, Posting.erp.is_(None))
    return Posting.erp == erp


def _chunks(values: Iterable[str], size: int = 500) -> Iterator[list[str]]:
    iterator = iter(sorted(set(values)))
    while chunk := list(islice(iterator, size)):
        yield chunk


def _insert_ignoring_duplicates(conn: Connection, model: type[Base]) -> Insert:
    if conn.dialect.name == "postgresql":
        return postgresql.insert(model).on_conflict_do_nothing()
    if conn.dialect.name == "sqlite":
        return sqlite.insert(model).on_conflict_do_nothing()
    raise NotImplementedError(f"reconciliation needs SQLite or PostgreSQL, not {conn.dialect.name}")


def _lock_run(
    conn: Connection,
    run_id: str,
    allowed: tuple[RunStatus, ...] | None = None,
    shared: bool = False,
) -> RunStatus:
    """The run's status, its row locked for this transaction (PostgreSQL; SQLite locks the
    whole database on write anyway)."""
    status = conn.execute(
        select(ReconRun.status).where(ReconRun.run_id == run_id).with_for_update(read=shared)
    ).scalar_one_or_none()
    if status is None:
        raise UnknownRunError(run_id)
    if allowed is not None and status not in allowed:
        raise RunStateError(f"run {run_id} is {status}, not {' or '.join(allowed)}")
    return status  # type: ignore[return-value]


def _analyze_staging(conn: Connection, tables: Sequence[str] = _STAGING_TABLES) -> None:
    """Fresh statistics after a bulk load, or PostgreSQL plans the joins for empty tables
    (autovacuum, when on at all, analyzes them later than a run reads them)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text(f"ANALYZE {', '.join(tables)}"))


def _count(conn: Connection, *where: ColumnElement[bool]) -> int:
    return int(conn.execute(select(func.count()).where(*where)).scalar_one())


def _loaded_counts(conn: Connection, run_id: str) -> dict[str, int]:
    """Rows per staging table and side; billing's postings another ERP books apart (kept for
    the tickets), and only when there are some."""
    other_erps = _count(conn, ReconExpected.run_id == run_id, ReconExpected.other_erp.is_not(None))
    return {
        "expected": _count(conn, ReconExpected.run_id == run_id, _own(ReconExpected)),
        **({"expected_other_erps": other_erps} if other_erps else {}),
        "erp": _count(conn, ReconErpDocument.run_id == run_id),
        "journal": _count(conn, ReconJournalEntry.run_id == run_id),
        "support_credits": _count(conn, ReconSupportCredit.run_id == run_id),
        "expected_payments": _count(conn, ReconExpectedPayment.run_id == run_id),
        "erp_payments": _count(conn, ReconErpPayment.run_id == run_id),
        "billing_taxes": _count(conn, ReconTax.run_id == run_id, ReconTax.side == "billing"),
        "erp_taxes": _count(conn, ReconTax.run_id == run_id, ReconTax.side == "erp"),
        "billing_receivables": _count(
            conn, ReconReceivable.run_id == run_id, ReconReceivable.side == "billing"
        ),
        "erp_receivables": _count(
            conn, ReconReceivable.run_id == run_id, ReconReceivable.side == "erp"
        ),
    }


def _totals(conn: Connection, run_id: str) -> dict[str, Any]:
    """Per class: item count, per currency count and amount, and the same per kind of item
    (JSON, amounts as text; items without a kind, a ticket's, under "-")."""
    micros = cast(func.round(ReconItem.amount * _MICROS), BigInteger)
    kind = func.coalesce(ReconItem.kind, NO_KIND)
    rows = conn.execute(
        select(ReconItem.classification, kind, ReconItem.currency, func.count(), func.sum(micros))
        .where(ReconItem.run_id == run_id)
        .group_by(ReconItem.classification, kind, ReconItem.currency)
        .order_by(ReconItem.classification, kind, ReconItem.currency)
    )
    totals: dict[str, Any] = {
        cls: {"count": 0, "by_currency": {}, "by_kind": {}} for cls in CLASSES
    }
    for cls, item_kind, currency, count, amount in rows:
        total = totals[cls]
        total["count"] += count
        in_currency = total["by_currency"].setdefault(currency, {"count": 0, "micros": 0})
        in_currency["count"] += count
        in_currency["micros"] += int(amount)
        total["by_kind"].setdefault(item_kind, {})[currency] = {
            "count": count,
            "amount": _amount_text(Decimal(int(amount)).scaleb(-6), currency),
        }
    for total in totals.values():
        for currency, figure in total["by_currency"].items():
            figure["amount"] = _amount_text(Decimal(figure.pop("micros")).scaleb(-6), currency)
    return totals


def _amount_text(amount: Decimal, currency: str) -> str:
    """'12.50' for USD, '1200' for JPY; more places only when the amount has them."""
    exponent = CURRENCY_EXPONENTS.get(currency.upper())
    if exponent is not None:
        quantized = amount.quantize(Decimal(1).scaleb(-exponent))
        if quantized == amount:
            return str(quantized)
    return format(amount.normalize(), "f")


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{moment} has no timezone: periods are instants, give them in UTC")
    return moment.astimezone(UTC)


def _aware(moment: datetime) -> datetime:
    # SQLite hands back the UTC wall time without its zone.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _batches(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        yield batch


def _run_from(run: RowMapping) -> ReconciliationRun:
    return ReconciliationRun(
        run_id=run["run_id"],
        period_start=_aware(run["period_start"]),
        period_end=_aware(run["period_end"]),
        status=run["status"],
        started_at=_aware(run["started_at"]),
        finished_at=_aware(run["finished_at"]) if run["finished_at"] else None,
        loaded=dict(run["loaded"]),
        totals={
            cls: ClassTotal(
                count=total["count"],
                by_currency=_currency_totals(total["by_currency"]),
                by_kind={
                    kind: _currency_totals(by_currency)
                    for kind, by_currency in total.get("by_kind", {}).items()
                },
            )
            for cls, total in run["totals"].items()
        },
        healed_count=run["healed_count"],
        exception_count=run["exception_count"],
        erp=run["erp"],
    )


def _currency_totals(by_currency: dict[str, Any]) -> dict[str, CurrencyTotal]:
    return {
        currency: CurrencyTotal(count=sums["count"], amount=Decimal(sums["amount"]))
        for currency, sums in by_currency.items()
    }


def _item_from(item: RowMapping) -> ReconciliationItem:
    ids = item["erp_document_ids"]
    return ReconciliationItem(
        id=item["id"],
        run_id=item["run_id"],
        classification=item["classification"],
        reference=item["reference"],
        kind=item["kind"],
        customer_id=item["customer_id"],
        currency=item["currency"],
        amount=item["amount"],
        billing_amount=item["billing_amount"],
        erp_amount=item["erp_amount"],
        journal_amount=item["journal_amount"],
        billing_document_id=item["billing_document_id"],
        # Numeric ERP ids in numeric order, whatever order the database aggregated them in.
        erp_document_ids=tuple(sorted(ids.split(","), key=lambda i: (len(i), i))) if ids else (),
        case_id=item["case_id"],
        request_id=item["request_id"],
        detail=item["detail"],
        remedy=item["remedy"],
        outcome=item["outcome"],
        outcome_ref=item["outcome_ref"],
        outcome_at=_aware(item["outcome_at"]) if item["outcome_at"] else None,
    )
