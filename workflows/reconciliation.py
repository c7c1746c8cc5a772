"""Reconciliation: billing, the ERP and our posting journal compared for a period
(`recon/{period}`): documents, payments and refunds, tax per rate, and each customer's open
receivable. Differences are classified in SQL, the missing postings, payments and refunds
replayed through the normal posting path, everything else handed to finance.

A run reconciles one ERP of the routing (`recon/{erp}/{period}`; `recon/{period}` is the ERP
on the `erp` queue, as before routing): it reads that ERP's pages on that ERP's queue and
compares them with what that ERP books of billing and of the journal
(canonical/reconciliation_erps.py). Support's tickets are compared with the whole of billing
in one run only, the home ERP's. Runs started before routing reconcile as they always did
(`RECON_PER_ERP_PATCH`).

The history holds page cursors and counts, never documents: each loader activity writes its
page into the store's staging tables. Long ranges continue as new between pages, carrying
only where they were.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any, TypeVar

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities._system import system_of
    from activities.reconciliation import (
        BillingReconciliationActivities,
        ErpReconciliationActivities,
        FindingsInput,
        FinishInput,
        HealInput,
        JournalSnapshotInput,
        LoadPageInput,
        OutcomeInput,
        PageLoaded,
        ReconciliationStoreActivities,
        ReconFinding,
        RunErp,
        RunErpInput,
        RunRef,
        StartRunInput,
        SupportReconciliationActivities,
    )
    from adapters import visibility
    from canonical import Decision, ExceptionContext, Money
    from canonical.reconciliation import (
        EXCEPTIONS,
        HEALABLE,
        IN_AGREEMENT,
        ReconciliationInput,
        ReconciliationResult,
        ReconProgress,
    )
    from workflows.activity_options import SAAS_CALL, STORE_CALL, run_activity
    from workflows.finance_exception import open_finance_exception

A = TypeVar("A")
R = TypeVar("R")
PROCESS = "reconciliation"
# Where each source is read. The three systems are read side by side, each chain in its
# order: the journal snapshot needs billing's references (documents, payments, refunds), so
# it comes after them. What customers owe is read once every chain is done (RECEIVABLES).
SYSTEM_OF = {"invoices": "billing", "credit_notes": "billing", "balance_credits": "billing",
             "payments": "billing", "refunds": "billing", "journal": "",
             "receivables": "billing", "erp": "erp", "erp_payments": "erp",
             "erp_receivables": "erp", "tickets": "support"}  # fmt: skip
LOADER_OF: dict[str, Callable[[Any, LoadPageInput], Awaitable[PageLoaded]]] = {
    "billing": BillingReconciliationActivities.load_billing_page,
    "erp": ErpReconciliationActivities.load_erp_page,
    "support": SupportReconciliationActivities.load_ticket_page,
}
# Each chain is stages of sources, the sources of a stage read side by side: billing's
# documents together, then the money that settles them (a payment or refund is routed by the
# document an earlier page staged), then the journal snapshot (it needs every billing
# reference); the ERP's documents and payments together; the tickets.
Stages = tuple[tuple[str, ...], ...]
STAGED_CHAINS: tuple[Stages, ...] = (
    (("invoices", "credit_notes", "balance_credits"), ("payments", "refunds"), ("journal",)),
    (("erp", "erp_payments"),),
    (("tickets",),),
)
READS_SIDE_BY_SIDE_PATCH = "recon-reads-side-by-side"
# Billing's invoices, most of a period's documents, are read in parts of the period, each
# part on a cursor of its own, side by side (Stripe lists any `created` range): on one cursor
# every 100 invoices would wait for the round trip of the page before. `invoices#2` is the
# third part.
PART = "#"
# Runs started before read each chain one source at a time, in this order.
CHAINS: tuple[tuple[str, ...], ...] = (
    ("invoices", "credit_notes", "balance_credits", "payments", "refunds", "journal",
     "receivables"),
    ("erp", "erp_payments", "erp_receivables"),
    ("tickets",),
)  # fmt: skip
# Billing's receivables, then the ERP's, back to back after every other read. Read at the
# end of chains of different lengths, minutes could part them, and any payment made in
# between shows as a false receivable_differs. Billing first: money reaches the ERP only
# from billing, through the ledger, so a payment made after billing's read is seen by
# neither side unless the ledger posts it within the gap; read the other way round, every
# payment made in the gap is in billing and not in the ERP.
RECEIVABLES: tuple[str, ...] = ("receivables", "erp_receivables")
RECEIVABLES_PATCH = "recon-receivables-billing-then-erp"
CHAINS_BEFORE_RECEIVABLES = tuple(
    tuple(source for source in chain if source not in RECEIVABLES) for chain in CHAINS
)
# Runs started before the receivables were read together read them at each chain's end.
# Runs started before payments, refunds, tax and receivables were reconciled read these.
DOCUMENT_CHAINS: tuple[tuple[str, ...], ...] = (
    ("invoices", "credit_notes", "balance_credits", "journal"),
    ("erp",),
    ("tickets",),
)
MONEY_PATCH = "recon-payments-tax-receivables"
# Runs started before exception ids carried the run's start name them by item id alone.
EXCEPTION_ID_PATCH = "recon-exception-id-per-run"
# Runs started before reconciliation was per ERP read the ERP on the `erp` queue and compare
# it with everything billing and the journal hold.
RECON_PER_ERP_PATCH = "recon-per-erp"
TICKETS = "tickets"
# Customers whose receivable no run compared: their documents are in two ERPs.
NOT_COMPARED = "receivables_not_compared"
PAGE_CALL: dict[str, Any] = {**SAAS_CALL, "start_to_close_timeout": timedelta(minutes=5)}
# Classifying 100,000 rows takes seconds; a slow SQLite file may take longer.
RECON_STORE_CALL: dict[str, Any] = {**STORE_CALL, "start_to_close_timeout": timedelta(minutes=10)}
EXCEPTION_EFFECTS: dict[Decision, str] = {
    "retry": "nothing now: the next reconciliation checks the document again",
    "resolve_manually": "finance corrected the ERP by hand (give the ERP document number)",
    "reject": "the difference is accepted as it is; nothing will be posted",
}


def period_parts(start: datetime, end: datetime, parts: int) -> list[tuple[datetime, datetime]]:
    """[start, end) cut into up to `parts` consecutive ranges, cut on whole seconds (billing
    filters by the second)."""
    step = (end - start) / max(1, parts)
    cuts = [max(start, (start + step * i).replace(microsecond=0)) for i in range(1, parts)]
    bounds = [start, *cuts, end]
    return [(a, b) for a, b in itertools.pairwise(bounds) if a < b]


def _one_by_one(chain: tuple[str, ...]) -> Stages:
    """A chain read one source after the other: each source a stage of its own."""
    return tuple((source,) for source in chain)


def recon_workflow_id(period_start: datetime, period_end: datetime, erp: str | None = None) -> str:
    """`recon/2026-11-26` for one day, `recon/2026-11-01..2026-11-30` for a range, of the ERP
    on the `erp` queue; `recon/netsuite/2026-11-26` of another ERP."""
    first, last = period_start.date(), (period_end - timedelta(microseconds=1)).date()
    days = f"{first}" if first == last else f"{first}..{last}"
    return f"recon/{erp}/{days}" if erp else f"recon/{days}"


def erp_of_workflow_id(workflow_id: str) -> str | None:
    """The ERP a run's id names (`recon/{erp}/…`); None for the ERP on the `erp` queue."""
    parts = workflow_id.split("/")
    return parts[1] if len(parts) >= 3 and parts[0] == "recon" else None


def day_before(moment: datetime) -> tuple[datetime, datetime]:
    """The UTC day before `moment`: what the nightly schedule reconciles."""
    end = datetime.combine(moment.astimezone(UTC).date(), time(), UTC)
    return end - timedelta(days=1), end


@workflow.defn(name="Reconciliation")
class ReconciliationWorkflow:
    def __init__(self) -> None:
        self._progress: ReconProgress | None = None
        self._status = "loading"
        self._status_published = False
        self._counts: dict[str, int] = {}

    @workflow.run
    async def run(self, request: ReconciliationInput) -> ReconciliationResult:
        progress = request.progress or await self._start(request)
        self._progress = progress
        await self._load(request, progress)
        self._set_status("classifying", "Classifying the differences in the store")
        classified = await self._store_step(
            ReconciliationStoreActivities.classify, RunRef(run_id=progress.run_id)
        )
        self._counts = classified.counts
        healed, unhealed = await self._heal(request, progress)
        opened = await self._open_exceptions(request, progress, unhealed)
        unexplained = sum(n for cls, n in self._counts.items() if cls in EXCEPTIONS) + unhealed
        await self._store_step(
            ReconciliationStoreActivities.finish_run,
            FinishInput(run_id=progress.run_id, status="done", healed=healed,
                        exceptions=len(opened)),
        )  # fmt: skip
        verdict = "in agreement" if unexplained == 0 else f"{unexplained} unexplained"
        self._set_status("done", f"{progress.run_id}: {verdict}, {healed} healed")
        return ReconciliationResult(
            run_id=progress.run_id,
            period_start=progress.period_start,
            period_end=progress.period_end,
            loaded=progress.loaded,
            counts=self._counts,
            in_agreement=sum(n for cls, n in self._counts.items() if cls in IN_AGREEMENT),
            healed=healed,
            exceptions_opened=opened,
            unexplained=unexplained,
            erp=progress.erp,
        )

    @workflow.query(name="progress")
    def progress(self) -> dict[str, Any]:
        """What a terminal shows while the run is going: phase, rows per source, counts."""
        progress = self._progress
        return {
            "status": self._status,
            "run_id": progress.run_id if progress else None,
            "erp": progress.erp if progress else None,
            "done": progress.done if progress else [],
            "loaded": progress.loaded if progress else {},
            "counts": self._counts,
        }  # fmt: skip

    # --- steps ----------------------------------------------------------------------------

    async def _start(self, request: ReconciliationInput) -> ReconProgress:
        info = workflow.info()
        if request.period_start and request.period_end:
            start, end = request.period_start, request.period_end
        else:
            start, end = day_before(info.start_time)
        progress = ReconProgress(
            run_id=f"{info.workflow_id}@{info.start_time:%Y%m%dT%H%M%S}",
            period_start=start,
            period_end=end,
        )
        if workflow.patched(RECON_PER_ERP_PATCH):
            erp: RunErp = await self._store_step(
                ReconciliationStoreActivities.erp_of_run, RunErpInput(erp=request.erp)
            )
            progress.erp, progress.erp_queue = erp.erp, erp.queue
            progress.erp_read_queue = erp.read_queue
            progress.compares_tickets = erp.compares_tickets
        await self._store_step(
            ReconciliationStoreActivities.start_run,
            StartRunInput(run_id=progress.run_id, period_start=start, period_end=end,
                          erp=progress.erp),
        )  # fmt: skip
        return progress

    async def _load(self, request: ReconciliationInput, progress: ReconProgress) -> None:
        """Read every source; past the history budget, every chain stops after its page in
        flight and the run continues as new from the cursors."""
        self._set_status("loading", f"Loading billing, ERP and tickets for {progress.run_id}")
        chains, last = self._chains(request, progress)
        if not progress.compares_tickets:  # another ERP's run compares them
            chains = tuple(
                tuple(kept for stage in chain if (kept := tuple(s for s in stage if s != TICKETS)))
                for chain in chains
            )
        budget_spent = False

        async def read(source: str) -> None:
            nonlocal budget_spent
            while source not in progress.done and not budget_spent:
                cursor = progress.cursors.get(source)
                page = await self._load_page(request, progress, source, cursor)
                name = source.partition(PART)[0]  # a part's rows count as its source's
                progress.loaded[name] = progress.loaded.get(name, 0) + page.rows
                if page.receivables_not_compared:
                    progress.loaded[NOT_COMPARED] = (
                        progress.loaded.get(NOT_COMPARED, 0) + page.receivables_not_compared
                    )
                if page.next_cursor is None:
                    progress.done.append(source)
                    progress.cursors.pop(source, None)
                else:
                    progress.cursors[source] = page.next_cursor
                history = workflow.info().get_current_history_length()
                budget_spent = history > request.continue_after_events

        async def read_stages(stages: Stages) -> None:
            for stage in stages:
                if len(stage) == 1:
                    await read(stage[0])  # no task of its own, as runs before stages read
                else:
                    await asyncio.gather(*(read(source) for source in stage))

        await asyncio.gather(*(read_stages(chain) for chain in chains))
        await read_stages(last)  # reads nothing once the budget is spent
        sources = [s for chain in (*chains, last) for stage in chain for s in stage]
        unread = [s for s in sources if s not in progress.done]
        if budget_spent and unread:
            await workflow.wait_condition(workflow.all_handlers_finished)
            workflow.continue_as_new(request.model_copy(update={"progress": progress}))

    @staticmethod
    def _chains(
        request: ReconciliationInput, progress: ReconProgress
    ) -> tuple[tuple[Stages, ...], Stages]:
        """The chains read side by side, and the stages read after them, as the run's code
        version reads them."""
        if workflow.patched(READS_SIDE_BY_SIDE_PATCH):
            parts = period_parts(progress.period_start, progress.period_end, request.invoice_parts)
            invoices = tuple(f"invoices{PART}{i}" for i in range(len(parts)))
            (documents, *money), *others = STAGED_CHAINS
            billing = (tuple(s for s in documents if s != "invoices") + invoices, *money)
            return (billing, *others), _one_by_one(RECEIVABLES)
        if workflow.patched(RECEIVABLES_PATCH):
            chains, last = CHAINS_BEFORE_RECEIVABLES, RECEIVABLES
        else:
            chains, last = (CHAINS if workflow.patched(MONEY_PATCH) else DOCUMENT_CHAINS), ()
        return tuple(_one_by_one(chain) for chain in chains), _one_by_one(last)

    async def _load_page(
        self, request: ReconciliationInput, progress: ReconProgress, source: str, cursor: str | None
    ) -> PageLoaded:
        period = {"run_id": progress.run_id, "period_start": progress.period_start,
                  "period_end": progress.period_end, "erp": progress.erp}  # fmt: skip
        source, _, part = source.partition(PART)
        if part:
            parts = period_parts(progress.period_start, progress.period_end, request.invoice_parts)
            period["period_start"], period["period_end"] = parts[int(part)]
        if source == "journal":
            return await self._store_step(
                ReconciliationStoreActivities.snapshot_journal, JournalSnapshotInput(**period)
            )
        system = SYSTEM_OF[source]
        load_page = LOADER_OF[system]
        # The ERP's own options, on the reconciled ERP's read queue; the SaaS pages may take
        # longer than one quick call.
        on_erp = system_of(load_page) == "erp"
        options = {"queue": progress.erp_read_queue or progress.erp_queue} if on_erp else PAGE_CALL
        page_size = {"erp": request.erp_page_size, "support": request.support_page_size}
        return await run_activity(
            load_page,
            LoadPageInput(**period, source=source, cursor=cursor,  # type: ignore[arg-type]
                          page_size=page_size.get(system, request.page_size)),
            summary=f"{source}{f' part {part}' if part else ''} page after {cursor or 'the start'}",
            **options,
        )  # fmt: skip

    async def _heal(self, request: ReconciliationInput, progress: ReconProgress) -> tuple[int, int]:
        """Replay missing postings (bounded per run); returns (healed, left unhealed)."""
        missing = await self._findings(progress.run_id, sorted(HEALABLE), request.heal_limit)
        if not missing:
            return 0, 0
        self._set_status("healing", f"Replaying {len(missing)} missing posting(s) or payment(s)")
        healed = unhealed = 0
        for finding in missing:
            outcome = await run_activity(
                BillingReconciliationActivities.heal_missing_posting,
                HealInput(finding=finding, task_queue=workflow.info().task_queue,
                          ledger_currencies=request.ledger_currencies,
                          correlation_id=progress.run_id),
            )  # fmt: skip
            healed += outcome.healed
            unhealed += not outcome.healed
            await self._mark(finding, "healed" if outcome.healed else "healing_skipped",
                             outcome.workflow_id)  # fmt: skip
        return healed, unhealed

    async def _open_exceptions(
        self, request: ReconciliationInput, progress: ReconProgress, unhealed: int
    ) -> list[str]:
        """One finance exception per unexplained finding, up to the per-run limit."""
        classes = sorted(EXCEPTIONS) + (sorted(HEALABLE) if unhealed else [])
        findings = await self._findings(progress.run_id, classes, request.exception_limit)
        if findings:
            self._set_status("exceptions", f"Opening {len(findings)} finance exception(s)")
        opened = []
        for finding in findings:
            exception_id = self._exception_id(progress, finding)
            of_erp = f" of {progress.erp}" if progress.erp else ""
            await open_finance_exception(
                self._context(progress, finding),
                exception_id,
                f"Reconciliation{of_erp}: {finding.classification} "
                f"{finding.reference or finding.case_id or finding.customer_id}",
            )
            await self._mark(finding, "exception_opened", exception_id)
            opened.append(exception_id)
        return opened

    @staticmethod
    def _exception_id(progress: ReconProgress, finding: ReconFinding) -> str:
        """`exception/recon/2026-11-26/20261127T020000-7`: the run's start beside the item, as
        item ids alone are unique only within one store, and a period is run again."""
        workflow_id = workflow.info().workflow_id
        if not workflow.patched(EXCEPTION_ID_PATCH):
            return f"exception/{workflow_id}/{finding.item_id}"
        started = progress.run_id.rsplit("@", 1)[-1]
        return f"exception/{workflow_id}/{started}-{finding.item_id}"

    def _context(self, progress: ReconProgress, finding: ReconFinding) -> ExceptionContext:
        info = workflow.info()
        return ExceptionContext(
            process=PROCESS,
            origin_workflow_id=info.workflow_id,
            origin_run_id=info.run_id,
            step=finding.classification,
            customer_id=finding.customer_id,
            invoice_id=finding.billing_document_id,
            case_id=finding.case_id,
            amount=Money(amount=finding.amount, currency=finding.currency),
            error_type=finding.classification,
            error_message=f"{finding.detail or finding.classification}. {finding.remedy}",
            payload=finding.model_dump(mode="json"),
            correlation_id=progress.run_id,
            allowed_decisions=list(EXCEPTION_EFFECTS),
            decision_effects=EXCEPTION_EFFECTS,
        )

    # --- helpers -----------------------------------------------------------------------------

    async def _findings(self, run_id: str, classes: list[str], limit: int) -> list[ReconFinding]:
        if limit <= 0:
            return []
        return await self._store_step(
            ReconciliationStoreActivities.findings,
            FindingsInput(run_id=run_id, classes=classes, limit=limit),
        )

    async def _mark(self, finding: ReconFinding, outcome: str, ref: str | None) -> None:
        await self._store_step(
            ReconciliationStoreActivities.mark_outcome,
            OutcomeInput(item_id=finding.item_id, outcome=outcome, ref=ref),  # type: ignore[arg-type]
        )

    async def _store_step(self, method: Callable[[Any, A], R], arg: A) -> R:
        return await run_activity(method, arg, **RECON_STORE_CALL)

    def _set_status(self, status: str, details: str) -> None:
        # Only a change of status is an event in history; the details are free.
        if status != self._status or not self._status_published:
            workflow.upsert_search_attributes([visibility.PROCESS_STATUS.value_set(status)])
            self._status_published = True
        self._status = status
        workflow.set_current_details(details)
