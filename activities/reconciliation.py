"""Activities of reconciliation: each loads one page of one system into the store's staging
tables and returns only a count and the next cursor, so the workflow's history never holds a
document; classification, the report and healing decisions read the store."""

from __future__ import annotations

import asyncio
import functools
from collections import defaultdict
from collections.abc import Collection, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, TypeVar

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._errors import adapter_errors_as_application_errors
from activities._system import SystemActivities
from activities.amendments import FinanceMappingSource
from activities.credits import CASE_ID, REVERSES
from activities.erp_routing import CustomerEntities
from activities.reconciliation_erps import RunErps
from adapters import metrics
from adapters.mapping_file import MappingFileError
from adapters.ports import BillingSystem, Ledger, SupportDesk
from adapters.store import IntegrationStore
from adapters.store.erp_coexistence import ErpCoexistenceStore
from adapters.store.reconciliation import (
    CustomerReceivable,
    DocumentTax,
    ErpDocument,
    ErpPayment,
    ExpectedPayment,
    ExpectedPosting,
    ReconciliationStore,
    Side,
    SupportCredit,
)
from adapters.task_queues import WORKFLOW_QUEUE, read_queue
from adapters.workflow_starts import feed_ledger
from canonical import BalanceTransaction, BillingDocument, Payment, Refund
from canonical.erp_routing import ErpRouting, single_erp_routing
from canonical.ledger import (
    HEAL_EVENT_PREFIX,
    PAYOUT_SUFFIX,
    REJECTED_POSTING_PREFIX,
    BillingEventRef,
    ledger_workflow_id,
    linked_part,
    linked_payout_reference,
    out_of_band_payout,
    required_postings,
)
from canonical.mapping import FinanceMapping
from canonical.reconciliation import UNMAPPED_TAX_PREFIX, LedgerDocument, Receivable
from canonical.reconciliation_erps import HOME_QUEUE, erp_on_home_queue, home_erp

_ErpRow = TypeVar("_ErpRow", ErpDocument, ErpPayment)


class ReconPeriod(BaseModel):
    run_id: str
    period_start: datetime
    period_end: datetime  # exclusive
    # The ERP the run reconciles: only what it books is loaded. None: a run from before
    # routing, which loads everything.
    erp: str | None = None


class StartRunInput(ReconPeriod):
    pass


class RunErpInput(BaseModel):
    erp: str | None = None  # None: the ERP on the `erp` queue


class RunErp(BaseModel):
    """The ERP a run reconciles, its queue and the queue its pages are read on, and whether
    the run compares support's tickets with billing (one run does: the home ERP's)."""

    erp: str
    queue: str
    compares_tickets: bool
    # None in answers recorded before read queues: those runs read their pages on `queue`.
    read_queue: str | None = None


BillingSource = Literal[
    "invoices", "credit_notes", "balance_credits", "payments", "refunds", "receivables"
]
ErpSource = Literal["erp", "erp_payments", "erp_receivables"]


class LoadPageInput(ReconPeriod):
    source: BillingSource | ErpSource | Literal["tickets"]
    cursor: str | None = None
    page_size: int = 200


class PageLoaded(BaseModel):
    rows: int
    next_cursor: str | None
    # Customers of the page whose receivable no run compares: their documents are booked in
    # two ERPs (canonical.reconciliation_erps.receivable_compared).
    receivables_not_compared: int = 0


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
    kind: str | None = None  # invoice, credit_note, payment, refund, tax, receivable
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


def expected_payments(payments: list[Payment]) -> list[ExpectedPayment]:
    """Paid invoice payments: each must be in the ERP, applied to its invoice."""
    return [
        ExpectedPayment(
            reference=p.payment_id,
            kind="payment",
            customer_id=p.customer_id,
            currency=p.amount.currency,
            amount=p.amount.amount,
            applies_to=p.invoice_id,
            billing_document_id=p.invoice_id,
        )
        for p in payments
        if p.status == "paid" and p.amount.amount > 0
    ]


def expected_out_of_band(document: BillingDocument) -> list[ExpectedPayment]:
    """What a credit note gives back outside billing: paid out on the credit note's ERP
    document (`cn_…/out_of_band`), whoever posted the credit note itself."""
    payout = out_of_band_payout(document)
    if payout is None or document.status == "void":
        return []
    return [
        ExpectedPayment(
            reference=payout.reference,
            kind=payout.kind,
            customer_id=payout.customer_id,
            currency=payout.amount.currency,
            amount=payout.amount.amount,
            applies_to=document.document_id,
            billing_document_id=document.document_id,
        )
    ]


def expected_refunds(
    refunds: list[Refund],
    credited_first: Collection[str] = (),
    linked_parts: Mapping[str, Decimal] | None = None,
) -> tuple[list[ExpectedPayment], list[ExpectedPosting]]:
    """Succeeded refunds: the payment out (`re_…/payout`), applied to billing's credit note
    when one made the refund, else to the refund's own ERP credit note (reference: the
    refund id), which must exist too. A refund in `credited_first` had its own credit note
    posted before billing's credit note named it: that credit note stays (reversed under
    billing's), and the payment out is applied to it. A refund its credit note names only in
    part (`linked_parts`: refund id -> what of it the credit note names) is paid out on the
    credit note for that part (`re_…/paid-out-on/cn_…`) and on its own credit note, for the
    rest, by its `/payout`."""
    money_out: list[ExpectedPayment] = []
    credit_notes: list[ExpectedPosting] = []
    for r in refunds:
        if r.status != "succeeded" or r.amount.amount <= 0:
            continue
        own_credit_note = r.credit_note_id is None or r.refund_id in credited_first
        amount = r.amount.amount
        linked = (linked_parts or {}).get(r.refund_id, amount)
        if not own_credit_note and linked < amount:
            cn = str(r.credit_note_id)
            money_out.append(
                _refund_payout(r, linked_payout_reference(r.refund_id, cn), linked, cn)
            )
            own_credit_note, amount = True, amount - linked
        # the payout's own reference: the refund id names its credit note
        applies_to = r.refund_id if own_credit_note else str(r.credit_note_id)
        money_out.append(_refund_payout(r, r.refund_id + PAYOUT_SUFFIX, amount, applies_to))
        if own_credit_note:
            credit_notes.append(
                ExpectedPosting(
                    reference=r.refund_id,
                    kind="credit_note",
                    customer_id=r.customer_id,
                    currency=r.amount.currency,
                    amount=amount,
                    billing_document_id=r.refund_id,
                    billing_kind="refund",
                )
            )
    return money_out, credit_notes


def _refund_payout(r: Refund, reference: str, amount: Decimal, applies_to: str) -> ExpectedPayment:
    return ExpectedPayment(
        reference=reference,
        kind="refund",
        customer_id=r.customer_id,
        currency=r.amount.currency,
        amount=amount,
        applies_to=applies_to,
        billing_document_id=r.refund_id,
    )


def unmapped_tax_name(rate_id: str) -> str:
    """What a billing rate is compared under when finance's mapping does not name it: no
    ERP tax has this name, so its tax shows as a difference that names the rate."""
    return UNMAPPED_TAX_PREFIX + rate_id


def billing_taxes(document: BillingDocument, mapping: FinanceMapping | None) -> list[DocumentTax]:
    """Billing's tax per ERP tax name for each ERP document the billing document needs,
    signed as the ERP's effect (a credit note's tax negative); rates mapped to one ERP tax
    are summed."""
    summed: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    for posting in required_postings(document):
        sign = 1 if posting.kind == "invoice" else -1
        for tax in posting.taxes:
            target = mapping.tax_rates.get(tax.rate_id) if mapping else None
            name = target.erp_tax if target else unmapped_tax_name(tax.rate_id)
            summed[(posting.reference, name, posting.currency.upper())] += sign * tax.amount
    return [
        DocumentTax(side="billing", reference=reference, tax=name, currency=currency,
                    amount=amount)
        for (reference, name, currency), amount in summed.items()
    ]  # fmt: skip


def erp_taxes(documents: list[LedgerDocument]) -> list[DocumentTax]:
    """The ERP's tax per tax name of each referenced document; a credit note's negative."""
    summed: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    seen: set[str] = set()
    for d in documents:
        # A second document of one reference is a duplicate: not compared for tax.
        if d.reference is None or d.reference in seen:
            continue
        seen.add(d.reference)
        sign = 1 if d.kind == "invoice" else -1
        for name, amount in d.taxes.items():
            summed[(d.reference, name, amount.currency)] += sign * amount.amount
    return [
        DocumentTax(side="erp", reference=reference, tax=name, currency=currency, amount=amount)
        for (reference, name, currency), amount in summed.items()
    ]


def receivables(side: Side, owed: list[Receivable]) -> list[CustomerReceivable]:
    return [
        CustomerReceivable(side=side, customer_id=r.customer_id, currency=r.amount.currency,
                           amount=r.amount.amount)
        for r in owed
    ]  # fmt: skip


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
    """What every reconciliation activity shares: the run's tables in the store, and the
    ERP routing (which ERP books what)."""

    def __init__(self, store: IntegrationStore, routing: ErpRouting | None = None) -> None:
        self._store = store
        self._routing = routing or single_erp_routing()
        self._recon_store: ReconciliationStore | None = None

    @property
    def _recon(self) -> ReconciliationStore:
        if self._recon_store is None:
            self._recon_store = ReconciliationStore(self._store)
        return self._recon_store

    async def _stage(self, run_id: str, **rows: Any) -> None:
        """A page's rows into the run's staging tables in one transaction, off the event
        loop: the worker's other pages go on while the database writes."""
        await asyncio.to_thread(functools.partial(self._recon.add_page, run_id, **rows))


class ReconciliationStoreActivities(_ReconciliationStep, SystemActivities):
    """The run's steps in the store: start, journal snapshot, classify, findings, finish."""

    system = "store"

    @activity.defn(name="recon_erp_of_run")
    def erp_of_run(self, request: RunErpInput) -> RunErp:
        """The routing's ERP the run reconciles (None: the one on the `erp` queue); not
        retried when the routing has no such ERP."""
        name = request.erp or erp_on_home_queue(self._routing)
        erp = self._routing.erps.get(name) if name else None
        if name is None or erp is None:
            known = ", ".join(self._routing.erps)
            raise ApplicationError(
                f"the ERP routing has no ERP {request.erp!r} (it has {known})"
                if request.erp
                else f"the ERP routing has no ERP on the {HOME_QUEUE!r} queue: name the ERP "
                f"to reconcile ({known})",
                type="UnknownErp",
                non_retryable=True,
            )
        return RunErp(
            erp=name,
            queue=erp.queue,
            compares_tickets=name == home_erp(self._routing),
            read_queue=read_queue(erp.queue),
        )

    @activity.defn(name="recon_start_run")
    def start_run(self, request: StartRunInput) -> None:
        if self._recon.run(request.run_id) is None:  # a retry finds the run it made
            self._recon.start_run(
                request.run_id, request.period_start, request.period_end, request.erp
            )

    @activity.defn(name="recon_snapshot_journal")
    def snapshot_journal(self, request: JournalSnapshotInput) -> PageLoaded:
        """The journal's entries of the period and of billing's references; of a run's ERP,
        only those it booked (before routing: the home ERP)."""
        rows = self._recon.snapshot_journal(
            request.run_id, request.period_start, request.period_end,
            erp=request.erp, before_routing=request.erp == home_erp(self._routing),
        )  # fmt: skip
        return PageLoaded(rows=rows, next_cursor=None)

    @activity.defn(name="recon_classify")
    def classify(self, request: RunRef) -> ReconCounts:
        run = self._recon.classify(request.run_id)
        metrics.reconciliation_classified(run.counts)
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
                        kind=item.kind,
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

    def __init__(
        self,
        store: IntegrationStore,
        billing: BillingSystem,
        mapping: FinanceMappingSource | None = None,
        routing: ErpRouting | None = None,
    ) -> None:
        super().__init__(store, routing)
        self._billing = billing
        self._mapping = mapping
        self._run_erps: RunErps | None = None

    @property
    def _erps(self) -> RunErps:
        if self._run_erps is None:
            self._run_erps = RunErps(
                self._routing,
                self._recon,
                ErpCoexistenceStore(self._store),
                CustomerEntities(self._billing, self._routing),
            )
        return self._run_erps

    @activity.defn(name="recon_load_billing_page")
    async def load_billing_page(self, request: LoadPageInput) -> PageLoaded:
        """Invoices or credit notes created in the period (with their tax per rate, named
        by finance's mapping), payments and refunds of the period, what customers owe now,
        or the balance credits of a page of the customers ledgerbridge knows (the cursor
        walks customers then)."""
        if request.source == "payments":
            return await self._load_payments(request)
        if request.source == "refunds":
            return await self._load_refunds(request)
        if request.source == "receivables":
            return await self._load_receivables(request)
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
        money = [row for document in page.documents for row in expected_out_of_band(document)]
        mapping = self._current_mapping()
        taxes = [tax for document in page.documents for tax in billing_taxes(document, mapping)]
        if request.erp is not None:
            # Each posting and payout is routed by the date the posting path gives it.
            on = {p.reference: p.billing_date
                  for document in page.documents for p in required_postings(document)}  # fmt: skip
            on.update({payout.reference: payout.payment_date for document in page.documents
                       if (payout := out_of_band_payout(document)) is not None})  # fmt: skip
            own = await self._erps.own_rows(
                request.run_id, request.erp, [(row, on[row.reference]) for row in rows],
                [(row, on[row.reference]) for row in money],
            )  # fmt: skip
            rows, money = own.postings, own.money
            taxes = [tax for tax in taxes if own.erp_of[tax.reference] == request.erp]
        await self._stage(request.run_id, expected=rows, expected_payments=money, taxes=taxes)
        return PageLoaded(rows=len(page.documents), next_cursor=page.next_cursor)

    async def _load_payments(self, request: LoadPageInput) -> PageLoaded:
        with adapter_errors_as_application_errors():
            page = await self._billing.payment_page(
                request.period_start, request.period_end, request.cursor, request.page_size
            )
        money = expected_payments(page.payments)
        if request.erp is not None:
            paid_on = {p.payment_id: (p.paid_at or request.period_start).date()
                       for p in page.payments}  # fmt: skip
            own = await self._erps.own_rows(
                request.run_id, request.erp, [], [(m, paid_on[m.reference]) for m in money]
            )
            money = own.money
        await self._stage(request.run_id, expected_payments=money)
        return PageLoaded(rows=len(page.payments), next_cursor=page.next_cursor)

    async def _load_refunds(self, request: LoadPageInput) -> PageLoaded:
        with adapter_errors_as_application_errors():
            page = await self._billing.refund_page(
                request.period_start, request.period_end, request.cursor, request.page_size
            )
        credited_first = [
            r.refund_id for r in page.refunds
            if r.credit_note_id and self._own_credit_note_posted(r.refund_id)
            and not self._store.find_posting(
                "billing", linked_payout_reference(r.refund_id, r.credit_note_id))
        ]  # fmt: skip
        named = [r for r in page.refunds if r.credit_note_id and r.refund_id not in credited_first]
        linked_parts = await self._linked_parts([r for r in named if r.status == "succeeded"])
        money_out, credit_notes = expected_refunds(page.refunds, credited_first, linked_parts)
        if request.erp is not None:
            # A refund's credit note and its payouts are routed by the refund's date.
            on = {r.refund_id: r.created_at.date() for r in page.refunds}
            own = await self._erps.own_rows(
                request.run_id, request.erp,
                [(row, on[row.billing_document_id]) for row in credit_notes],
                [(row, on[row.billing_document_id]) for row in money_out],
            )  # fmt: skip
            credit_notes, money_out = own.postings, own.money
        await self._stage(request.run_id, expected_payments=money_out, expected=credit_notes)
        return PageLoaded(rows=len(page.refunds), next_cursor=page.next_cursor)

    async def _linked_parts(self, refunds: list[Refund]) -> dict[str, Decimal]:
        """What of each refund the credit note naming it names (billing read once per note)."""
        notes: dict[str, BillingDocument] = {}
        parts = {}
        with adapter_errors_as_application_errors():
            for r in refunds:
                cn = str(r.credit_note_id)
                if cn not in notes:
                    notes[cn] = await self._billing.get_credit_note(cn)
                parts[r.refund_id] = linked_part(r, notes[cn]).amount
        return parts

    def _own_credit_note_posted(self, refund_id: str) -> bool:
        """The refund's own credit note is journaled: it reached the ERP before a credit note
        of billing's named the refund (finance's rejection put nothing there)."""
        entry = self._store.find_posting("billing", refund_id)
        return (
            entry is not None
            and entry.document_type == "credit_note"
            and not entry.erp_document_id.startswith(REJECTED_POSTING_PREFIX)
        )

    async def _load_receivables(self, request: LoadPageInput) -> PageLoaded:
        """What customers owe now, whatever the period: a page of billing's customers."""
        with adapter_errors_as_application_errors():
            page = await self._billing.open_receivable_page(request.cursor, request.page_size)
        owed, split = page.receivables, 0
        if request.erp is not None:
            scope = await self._erps.receivables_compared(
                request.erp, {r.customer_id for r in owed}, route=True, on=datetime.now(UTC).date()
            )
            owed = [r for r in owed if scope[r.customer_id] == "compared"]
            split = sum(1 for compared in scope.values() if compared == "split")
        await self._stage(request.run_id, receivables=receivables("billing", owed))
        return PageLoaded(
            rows=len(owed), next_cursor=page.next_cursor, receivables_not_compared=split
        )

    def _current_mapping(self) -> FinanceMapping | None:
        """Finance's mapping now; without one every billing rate is compared as unmapped
        (nothing taxed can have been posted without it either)."""
        if self._mapping is None:
            return None
        try:
            return self._mapping.current()
        except MappingFileError as err:
            activity.logger.warning("tax compared unmapped: %s", err)
            return None

    async def _load_balance_credits(self, request: LoadPageInput) -> PageLoaded:
        # Billing lists balance adjustments per customer: a page is a handful of customers.
        batch = max(1, request.page_size // 20)
        customers = await asyncio.to_thread(self._store.customer_ids_page, request.cursor, batch)
        granted: list[ExpectedPosting] = []
        on: dict[str, date] = {}
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
            on.update({t.transaction_id: t.created_at.date() for t in adjustments})
        if request.erp is not None:
            granted = (
                await self._erps.own_rows(
                    request.run_id, request.erp, [(row, on[row.reference]) for row in granted]
                )
            ).postings
        await self._stage(request.run_id, expected=granted)
        next_cursor = customers[-1] if len(customers) == batch else None
        return PageLoaded(rows=len(granted), next_cursor=next_cursor)

    @activity.defn(name="recon_heal_missing_posting")
    async def heal_missing_posting(self, request: HealInput) -> HealOutcome:
        """Replay the normal posting path for a document, payment or refund the ERP lacks:
        its ledger workflow refetches it, checks policy and posts it (lookup before create).
        A payment is replayed as its invoice's payment event, a refund (and a refund's own
        credit note) as its charge's refund event."""
        outcome = await self._heal(request)
        metrics.replayed("reconciliation", "replayed" if outcome.healed else "skipped")
        return outcome

    async def _heal(self, request: HealInput) -> HealOutcome:
        finding = request.finding
        document_id = finding.billing_document_id or ""
        if finding.kind == "payment":
            return await self._replay_invoice_payments(request, document_id)
        if document_id.startswith("re_") or (
            finding.kind == "refund" and not document_id.startswith("cn_")
        ):
            return await self._replay_refund(request, document_id)
        # A credit note's out-of-band payout (a refund on the credit note) replays the credit note.
        if not document_id.startswith(("in_", "cn_")):
            return HealOutcome(healed=False, detail="only invoices and credit notes replay")
        with adapter_errors_as_application_errors():
            document = (
                await self._billing.get_invoice(document_id)
                if document_id.startswith("in_")
                else await self._billing.get_credit_note(document_id)
            )
        ref = BillingEventRef(
            event_id=f"{HEAL_EVENT_PREFIX}{request.correlation_id}:{document_id}",
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

    async def _replay_invoice_payments(self, request: HealInput, invoice_id: str) -> HealOutcome:
        """The ledger posts an invoice's paid payments not yet journaled on its payment
        event, after the invoice itself: the same event again posts the missing one."""
        if not invoice_id.startswith("in_"):
            return HealOutcome(healed=False, detail=f"payment names no invoice ({invoice_id!r})")
        with adapter_errors_as_application_errors():
            invoice = await self._billing.get_invoice(invoice_id)
        ref = BillingEventRef(
            # One event per invoice and run: it posts every unjournaled payment of it.
            event_id=f"{HEAL_EVENT_PREFIX}{request.correlation_id}:{invoice_id}:paid",
            event_type="invoice.paid",
            created=int(datetime.now(UTC).timestamp()),
            object_kind="invoice",
            object_id=invoice_id,
            customer_id=invoice.customer_id,
            correlation_id=request.correlation_id,
            document_number=invoice.number,
        )
        return await self._replay(request, ref, invoice.subscription_id)

    async def _replay_refund(self, request: HealInput, refund_id: str) -> HealOutcome:
        """Refunds are posted by the customer's ledger on their charge's refund event."""
        if not refund_id.startswith("re_"):
            return HealOutcome(healed=False, detail=f"not a refund id ({refund_id!r})")
        with adapter_errors_as_application_errors():
            refund = await self._billing.get_refund(refund_id)
        ref = BillingEventRef(
            event_id=f"{HEAL_EVENT_PREFIX}{request.correlation_id}:{refund_id}",
            event_type="charge.refunded",
            created=int(datetime.now(UTC).timestamp()),
            object_kind="charge",
            object_id=refund.charge_id,
            customer_id=refund.customer_id,
            correlation_id=request.correlation_id,
        )
        return await self._replay(request, ref, None)

    async def _replay(
        self, request: HealInput, ref: BillingEventRef, subscription_id: str | None
    ) -> HealOutcome:
        prefix = request.task_queue.removesuffix(WORKFLOW_QUEUE)
        await feed_ledger(
            activity.client(), ref, subscription_id, request.ledger_currencies, prefix
        )
        workflow_id = ledger_workflow_id(subscription_id, ref.customer_id)
        return HealOutcome(
            healed=True,
            workflow_id=workflow_id,
            detail=f"replayed {ref.event_type} to {workflow_id}",
        )


class ErpReconciliationActivities(_ReconciliationStep, SystemActivities):
    """The ERP's documents and payments of the period, and its receivables now."""

    system = "erp"

    def __init__(
        self, store: IntegrationStore, ledger: Ledger, routing: ErpRouting | None = None
    ) -> None:
        super().__init__(store, routing)
        self._ledger = ledger

    async def _not_shadows(self, request: LoadPageInput, rows: list[_ErpRow]) -> list[_ErpRow]:
        """Of a run's ERP, the rows it books: the shadow copies it holds of another ERP's
        book of record are the shadow report's, never this run's."""
        if request.erp is None:
            return rows
        shadows = await asyncio.to_thread(
            self._recon.shadowed_in, request.erp, [row.reference for row in rows if row.reference]
        )
        return [row for row in rows if row.reference not in shadows]

    @activity.defn(name="recon_load_erp_page")
    async def load_erp_page(self, request: LoadPageInput) -> PageLoaded:
        """ERP documents (with their taxes) or payments and refunds dated in the period (the
        period's last day included), or what each party owes now."""
        last_day: date = (request.period_end - timedelta(microseconds=1)).date()
        if request.source == "erp_payments":
            return await self._load_payments(request, last_day)
        if request.source == "erp_receivables":
            return await self._load_receivables(request)
        with adapter_errors_as_application_errors():
            page = await self._ledger.document_page(
                request.period_start.date(), last_day, request.cursor, request.page_size
            )
        await self._stage(
            request.run_id,
            erp=await self._not_shadows(request, [
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
            ]),
            taxes=erp_taxes(page.documents),
        )  # fmt: skip
        return PageLoaded(rows=len(page.documents), next_cursor=page.next_cursor)

    async def _load_payments(self, request: LoadPageInput, last_day: date) -> PageLoaded:
        with adapter_errors_as_application_errors():
            page = await self._ledger.payment_page(
                request.period_start.date(), last_day, request.cursor, request.page_size
            )
        await self._stage(
            request.run_id,
            erp_payments=await self._not_shadows(request, [
                ErpPayment(
                    erp_document_id=p.erp_document_id,
                    reference=p.reference,
                    kind=p.kind,
                    currency=p.amount.currency,
                    amount=p.amount.amount,
                    applies_to=p.applies_to,
                    state=p.state,
                    customer_id=p.customer_id,
                )
                for p in page.payments
            ]),
        )  # fmt: skip
        return PageLoaded(rows=len(page.payments), next_cursor=page.next_cursor)

    async def _load_receivables(self, request: LoadPageInput) -> PageLoaded:
        """What each party owes now, whatever the period."""
        with adapter_errors_as_application_errors():
            page = await self._ledger.open_receivable_page(request.cursor, request.page_size)
        owed = page.receivables
        if request.erp is not None:
            erps = RunErps(self._routing, self._recon, ErpCoexistenceStore(self._store))
            scope = await erps.receivables_compared(
                request.erp, {r.customer_id for r in owed}, route=False, on=datetime.now(UTC).date()
            )
            owed = [r for r in owed if scope[r.customer_id] == "compared"]
        await self._stage(request.run_id, receivables=receivables("erp", owed))
        return PageLoaded(rows=len(owed), next_cursor=page.next_cursor)


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
        await self._stage(request.run_id, support_credits=credits)
        return PageLoaded(rows=len(credits), next_cursor=page.next_cursor)
