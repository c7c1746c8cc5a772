"""ReconciliationWorkflow with same-named activity doubles: paging across continue-as-new,
healing, finance exceptions, and a history that holds cursors and counts only."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.reconciliation import (
    FindingsInput,
    FinishInput,
    HealInput,
    HealOutcome,
    JournalSnapshotInput,
    LoadPageInput,
    OutcomeInput,
    PageLoaded,
    ReconCounts,
    ReconFinding,
    RunRef,
    StartRunInput,
)
from adapters.task_queues import task_queue
from workflows.finance_exception import FinanceExceptionWorkflow
from workflows.reconciliation import (
    ReconciliationInput,
    ReconciliationResult,
    ReconciliationWorkflow,
)

DAY = datetime(2026, 11, 26, tzinfo=UTC)
PAGES = {"invoices": 4, "credit_notes": 1, "balance_credits": 2, "erp": 4, "tickets": 1}


def finding(item_id: int, cls: str) -> ReconFinding:
    return ReconFinding(
        item_id=item_id, classification=cls, reference=f"in_{item_id}",
        billing_document_id=f"in_{item_id}", customer_id="cus_1", case_id=None,
        currency="USD", amount=Decimal("30.00"), detail=f"{cls} detail", remedy="remedy",
    )  # fmt: skip


class FakeStore:
    """The store and the systems, as the loaders and store steps see them."""

    def __init__(self) -> None:
        self.pages_read: list[tuple[str, str | None]] = []
        self.outcomes: dict[int, str] = {}
        self.finished: FinishInput | None = None
        self.healed: list[str] = []

    def activities(self) -> dict[str, list[Callable[..., Any]]]:
        @activity.defn(name="recon_start_run")
        async def start_run(_r: StartRunInput) -> None:
            return None

        @activity.defn(name="recon_load_billing_page")
        async def load_billing_page(request: LoadPageInput) -> PageLoaded:
            return self._page(request)

        @activity.defn(name="recon_load_erp_page")
        async def load_erp_page(request: LoadPageInput) -> PageLoaded:
            return self._page(request)

        @activity.defn(name="recon_load_ticket_page")
        async def load_ticket_page(request: LoadPageInput) -> PageLoaded:
            return self._page(request)

        @activity.defn(name="recon_snapshot_journal")
        async def snapshot_journal(_r: JournalSnapshotInput) -> PageLoaded:
            return PageLoaded(rows=7, next_cursor=None)

        @activity.defn(name="recon_classify")
        async def classify(_r: RunRef) -> ReconCounts:
            counts = {"matched": 38, "missing_in_erp": 1, "amount_mismatch": 1}
            return ReconCounts(counts=counts, loaded={})

        @activity.defn(name="recon_findings")
        async def findings(request: FindingsInput) -> list[ReconFinding]:
            found = [finding(1, "missing_in_erp"), finding(2, "amount_mismatch")]
            return [f for f in found if f.classification in request.classes
                    and f.item_id not in self.outcomes][: request.limit]  # fmt: skip

        @activity.defn(name="recon_heal_missing_posting")
        async def heal(request: HealInput) -> HealOutcome:
            self.healed.append(request.finding.billing_document_id or "")
            return HealOutcome(healed=True, workflow_id="customer-ledger/cus_1", detail="ok")

        @activity.defn(name="recon_mark_outcome")
        async def mark_outcome(request: OutcomeInput) -> None:
            self.outcomes[request.item_id] = request.outcome

        @activity.defn(name="recon_finish_run")
        async def finish_run(request: FinishInput) -> None:
            self.finished = request

        return {
            "": [start_run, snapshot_journal, classify, findings, mark_outcome, finish_run],
            "billing": [load_billing_page, heal],
            "erp": [load_erp_page],
            "support": [load_ticket_page],
        }

    def _page(self, request: LoadPageInput) -> PageLoaded:
        self.pages_read.append((request.source, request.cursor))
        n = int(request.cursor or 0) + 1
        last = n >= PAGES[request.source]
        return PageLoaded(rows=10, next_cursor=None if last else str(n))


@asynccontextmanager
async def running(client: Client, prefix: str, fake: FakeStore) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        for queue, activities in fake.activities().items():
            await stack.enter_async_context(
                Worker(
                    client,
                    task_queue=task_queue(prefix, queue) if queue else task_queue(prefix),
                    workflows=[ReconciliationWorkflow, FinanceExceptionWorkflow]
                    if not queue
                    else [],
                    activities=activities,
                )
            )
        yield


async def test_a_long_run_continues_as_new_between_pages_and_heals_and_reports(
    dev_server_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    client, fake = dev_server_env.client, FakeStore()
    workflow_id = f"recon/2026-11-26-{queue_prefix}"
    async with running(client, queue_prefix, fake):
        handle = await client.start_workflow(
            ReconciliationWorkflow.run,
            ReconciliationInput(
                period_start=DAY, period_end=DAY.replace(day=27), continue_after_events=25
            ),
            id=workflow_id,
            task_queue=task_queue(queue_prefix),
        )
        result: ReconciliationResult = await handle.result()
        first_run = client.get_workflow_handle(workflow_id, run_id=handle.first_execution_run_id)
        first_history = await first_run.fetch_history()
        exception = client.get_workflow_handle(f"exception/{workflow_id}/2")
        context = (await exception.query(FinanceExceptionWorkflow.state)).context
        await exception.terminate("test over")

    # every page read once, in order, whatever execution read it
    assert len(fake.pages_read) == sum(PAGES.values())
    assert len(set(fake.pages_read)) == len(fake.pages_read)
    assert first_history.events[-1].event_type == (
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    )
    assert result.loaded == {"invoices": 40, "credit_notes": 10, "balance_credits": 20,
                             "journal": 7, "erp": 40, "tickets": 10}  # fmt: skip
    assert (result.healed, result.in_agreement, result.unexplained) == (1, 38, 1)
    assert result.exceptions_opened == [f"exception/{workflow_id}/2"]
    assert fake.healed == ["in_1"] and fake.outcomes == {1: "healed", 2: "exception_opened"}
    assert fake.finished is not None and (fake.finished.healed, fake.finished.exceptions) == (1, 1)
    assert context.process == "reconciliation" and context.step == "amount_mismatch"
    assert "retry" in context.decision_effects
    assert result.run_id.startswith(workflow_id)
