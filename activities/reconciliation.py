"""Activities of reconciliation: each loads one page of one system into the store's staging
tables and returns only a count and the next cursor, so the workflow's history never holds a
document; classification, the report and healing decisions read the store."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel
from temporalio import activity

from activities._errors import adapter_errors_as_application_errors
from activities._system import SystemActivities
from activities.credits import CASE_ID, REVERSES
from adapters.ports import BillingSystem, Ledger, SupportDesk
from adapters.store import IntegrationStore
from adapters.store.reconciliation import (
    ErpDocument,
    ExpectedPosting,
    ReconciliationStore,
    SupportCredit,
)
from adapters.task_queues import WORKFLOW_QUEUE
from adapters.workflow_starts import feed_ledger
from canonical import BalanceTransaction, BillingDocument
from canonical.ledger import BillingEventRef, ledger_workflow_id, required_postings


class ReconPeriod(BaseModel):
    run_id: str
    period_start: datetime
    period_end: datetime  # exclusive


class StartRunInput(ReconPeriod):
    pass


class LoadPageInput(ReconPeriod):
    source: Literal["invoices", "credit_notes", "balance_credits", "erp", "tickets"]
    cursor: str | None = None
    page_size: int = 200


class PageLoaded(BaseModel):
    rows: int
    next_cursor: str | None


class RunRef(BaseModel):
    run_id: str


class JournalSnapshotInput(ReconPeriod):
    pass


class ReconCounts(BaseModel):
    counts: dict[str, int]
    loaded: dict[str, int]


class HealableInput(BaseModel):
    run_id: str
    limit: int


class ReconFinding(BaseModel):
    """One finding as the workflow needs it to heal or to open an exception."""

    item_id: int
    classification: str
    reference: str | None
    billing_document_id: str | None
    customer_id: str | None
    case_id: str | None
    currency: str
    amount: Decimal
    detail: str | None
    remedy: str


class FindingsInput(BaseModel):
    run_id: str
    classes: list[str]
    limit: int


class HealInput(BaseModel):
    finding: ReconFinding
    task_queue: str
    ledger_currencies: list[str]
    correlation_id: str


class HealOutcome(BaseModel):
    healed: bool
    workflow_id: str | None = None
    detail: str


class OutcomeInput(BaseModel):
    item_id: int
    outcome: Literal["healed", "exception_opened", "healing_skipped"]
    ref: str | None = None


class FinishInput(BaseModel):
    run_id: str
    status: Literal["done", "failed"]
    healed: int
    exceptions: int


def expected_postings(document: BillingDocument) -> list[ExpectedPosting]:
    """What the ERP must hold for a billing document: the posting path's own rules."""
    is_credit = document.kind == "credit_note"
    return [
        ExpectedPosting(
            reference=posting.reference,
            kind=posting.kind,
            customer_id=document.customer_id,
            currency=posting.total.currency,
            amount=abs(posting.total.amount),
            billing_document_id=document.document_id,
            billing_kind=document.kind,
            is_credit=is_credit,
            case_id=document.metadata.get(CASE_ID) if is_credit else None,
        )
        for posting in required_postings(document)
    ]


def granted_credits(adjustments: list[BalanceTransaction]) -> list[ExpectedPosting]:
    """Balance credits granted and not taken back: each needs an ERP credit note."""
    reversed_ids = {t.metadata[REVERSES] for t in adjustments if REVERSES in t.metadata}
    return [
        ExpectedPosting(
            reference=t.transaction_id,
            kind="credit_note",
            customer_id=t.customer_id,
            currency=t.amount.currency,
            amount=-t.amount.amount,
            billing_document_id=t.transaction_id,
            billing_kind="balance_credit",
            is_credit=True,
            case_id=t.metadata.get(CASE_ID),
        )
        for t in adjustments
        if t.kind in (None, "adjustment")
        and t.amount.amount < 0
        and REVERSES not in t.metadata
        and t.transaction_id not in reversed_ids
    ]


class _ReconciliationStep:
    """What every reconciliation activity shares: the run's tables in the store."""

    def __init__(self, store: IntegrationStore) -> None:
        self._store = store
        self._recon_store: ReconciliationStore | None = None

    @property
    def _recon(self) -> ReconciliationStore:
        if self._recon_store is None:
            self._recon_store = ReconciliationStore(self._store)
        return self._recon_store


class ReconciliationStoreActivities(_ReconciliationStep, SystemActivities):
    """The run's steps in the store: start, journal snapshot, classify, findings, finish."""

    system = "store"

    @activity.defn(name="recon_start_run")
    def start_run(self, request: StartRunInput) -> None:
        if self._recon.run(request.run_id) is None:  # a retry finds the run it made
            self._recon.start_run(request.run_id, request.period_start, request.period_end)

    @activity.defn(name="recon_snapshot_journal")
    def snapshot_journal(self, request: JournalSnapshotInput) -> PageLoaded:
        rows = self._recon.snapshot_journal(
            request.run_id, request.period_start, request.period_end
        )
        return PageLoaded(rows=rows, next_cursor=None)

    @activity.defn(name="recon_classify")
    def classify(self, request: RunRef) -> ReconCounts:
        run = self._recon.classify(request.run_id)
        return ReconCounts(counts=run.counts, loaded=run.loaded)

    @activity.defn(name="recon_findings")
    def findings(self, request: FindingsInput) -> list[ReconFinding]:
        """Findings of the given classes that nothing was done about yet (bounded)."""
        found: list[ReconFinding] = []
        for cls in request.classes:
            after = None
            while len(found) < request.limit:
                page = self._recon.items(request.run_id, cls, after_id=after, limit=200)  # type: ignore[arg-type]
                if not page:
                    break
                after = page[-1].id
                found.extend(
                    ReconFinding(
                        item_id=item.id,
                        classification=item.classification,
                        reference=item.reference,
                        billing_document_id=item.billing_document_id,
                        customer_id=item.customer_id,
                        case_id=item.case_id,
                        currency=item.currency,
                        amount=item.amount,
                        detail=item.detail,
                        remedy=item.remedy,
                    )
                    for item in page
                    if item.outcome is None
                )
        return found[: request.limit]

    @activity.defn(name="recon_mark_outcome")
    def mark_outcome(self, request: OutcomeInput) -> None:
        self._recon.mark_outcome(request.item_id, request.outcome, request.ref)

    @activity.defn(name="recon_finish_run")
    def finish_run(self, request: FinishInput) -> None:
        self._recon.finish_run(request.run_id, request.status, request.healed, request.exceptions)
        self._recon.delete_staging(request.run_id)


class BillingReconciliationActivities(_ReconciliationStep, SystemActivities):
    """Billing's pages, and healing (it reads the document before handing it on)."""

    system = "billing"

    def __init__(self, store: IntegrationStore, billing: BillingSystem) -> None:
        super().__init__(store)
        self._billing = billing

    @activity.defn(name="recon_load_billing_page")
    async def load_billing_page(self, request: LoadPageInput) -> PageLoaded:
        """Invoices or credit notes created in the period, or the balance credits of a page
        of the customers ledgerbridge knows (the cursor walks customers then)."""
        with adapter_errors_as_application_errors():
            if request.source == "balance_credits":
                return await self._load_balance_credits(request)
            page_of = (
                self._billing.invoice_page
                if request.source == "invoices"
                else self._billing.credit_note_page
            )
            page = await page_of(
                request.period_start, request.period_end, request.cursor, request.page_size
            )
        rows = [row for document in page.documents for row in expected_postings(document)]
        self._recon.add_expected(request.run_id, rows)
        return PageLoaded(rows=len(page.documents), next_cursor=page.next_cursor)

    async def _load_balance_credits(self, request: LoadPageInput) -> PageLoaded:
        # Billing lists balance adjustments per customer: a page is a handful of customers.
        batch = max(1, request.page_size // 20)
        customers = self._store.customer_ids_page(request.cursor, batch)
        granted: list[ExpectedPosting] = []
        for customer_id in customers:
            adjustments: list[BalanceTransaction] = []
            cursor = None
            while True:
                page = await self._billing.balance_credit_page(
                    customer_id, request.period_start, request.period_end, cursor, 100
                )
                adjustments.extend(page.transactions)
                activity.heartbeat(customer_id)
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
            granted.extend(granted_credits(adjustments))
        self._recon.add_expected(request.run_id, granted)
        next_cursor = customers[-1] if len(customers) == batch else None
        return PageLoaded(rows=len(granted), next_cursor=next_cursor)

    @activity.defn(name="recon_heal_missing_posting")
    async def heal_missing_posting(self, request: HealInput) -> HealOutcome:
        """Replay the normal posting path for a document the ERP lacks: the subscription's
        ledger workflow refetches it, checks policy and posts it (lookup before create)."""
        finding = request.finding
        document_id = finding.billing_document_id or ""
        if not document_id.startswith(("in_", "cn_")):
            return HealOutcome(healed=False, detail="only invoices and credit notes replay")
        with adapter_errors_as_application_errors():
            document = (
                await self._billing.get_invoice(document_id)
                if document_id.startswith("in_")
                else await self._billing.get_credit_note(document_id)
            )
        ref = BillingEventRef(
            event_id=f"recon:{request.correlation_id}:{document_id}",
            event_type="invoice.finalized" if document.kind == "invoice" else "credit_note.created",
            created=int((document.finalized_at or document.created_at).timestamp()),
            object_kind=document.kind,
            object_id=document_id,
            customer_id=document.customer_id,
            correlation_id=request.correlation_id,
            document_number=document.number,
        )
        prefix = request.task_queue.removesuffix(WORKFLOW_QUEUE)
        await feed_ledger(
            activity.client(), ref, document.subscription_id, request.ledger_currencies, prefix
        )
        workflow_id = ledger_workflow_id(document.subscription_id, document.customer_id)
        return HealOutcome(
            healed=True, workflow_id=workflow_id, detail=f"replayed to {workflow_id}"
        )


class ErpReconciliationActivities(_ReconciliationStep, SystemActivities):
    """The ERP's documents of the period."""

    system = "erp"

    def __init__(self, store: IntegrationStore, ledger: Ledger) -> None:
        super().__init__(store)
        self._ledger = ledger

    @activity.defn(name="recon_load_erp_page")
    async def load_erp_page(self, request: LoadPageInput) -> PageLoaded:
        """ERP documents dated in the period (the period's last day included)."""
        last_day: date = (request.period_end - timedelta(microseconds=1)).date()
        with adapter_errors_as_application_errors():
            page = await self._ledger.document_page(
                request.period_start.date(), last_day, request.cursor, request.page_size
            )
        self._recon.add_erp(
            request.run_id,
            [
                ErpDocument(
                    erp_document_id=d.erp_document_id,
                    reference=d.reference,
                    kind=d.kind,
                    number=d.number,
                    currency=d.total.currency,
                    amount=d.total.amount,
                    state=d.state,
                    customer_id=d.customer_id,
                )
                for d in page.documents
            ],
        )
        return PageLoaded(rows=len(page.documents), next_cursor=page.next_cursor)


class SupportReconciliationActivities(_ReconciliationStep, SystemActivities):
    """The tickets that told a customer a credit was given."""

    system = "support"

    def __init__(self, store: IntegrationStore, support: SupportDesk) -> None:
        super().__init__(store)
        self._support = support

    @activity.defn(name="recon_load_ticket_page")
    async def load_ticket_page(self, request: LoadPageInput) -> PageLoaded:
        """Tickets on which support told the customer a credit was given."""
        with adapter_errors_as_application_errors():
            page = await self._support.credit_ticket_page(
                request.period_start, request.period_end, request.cursor, request.page_size
            )
        credits = [
            SupportCredit(
                case_id=t.case_id,
                request_id="ticket",
                customer_id=t.customer_id or "",
                currency=t.amount.currency,
                amount=t.amount.amount,
            )
            for t in page.tickets
            if t.amount is not None
        ]
        self._recon.add_support_credits(request.run_id, credits)
        return PageLoaded(rows=len(credits), next_cursor=page.next_cursor)
