"""Starting reconciliation: on demand for a range, and nightly from a Temporal Schedule."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from adapters import visibility
from adapters.settings import Settings
from adapters.task_queues import task_queue
from starters.schedules import daily, upsert_schedule
from workflows.reconciliation import (
    PROCESS,
    ReconciliationInput,
    ReconciliationWorkflow,
    recon_workflow_id,
)

SCHEDULE_ID = "recon-daily"


def period(first: date, last: date) -> tuple[datetime, datetime]:
    """The UTC days `first` to `last`, both included, as [start, end)."""
    if last < first:
        raise ValueError(f"--to {last} is before --from {first}")
    if last == date.max:  # its end, the next midnight, is past what datetime can hold
        raise ValueError(f"--to {last} is past the last day a period can end on")
    return datetime.combine(first, time(), UTC), datetime.combine(last + timedelta(1), time(), UTC)


def recon_input(
    settings: Settings, start: datetime | None, end: datetime | None
) -> ReconciliationInput:
    return ReconciliationInput(
        period_start=start,
        period_end=end,
        heal_limit=settings.recon_heal_limit,
        exception_limit=settings.recon_exception_limit,
        ledger_currencies=settings.ledger_currencies,
    )


async def start_reconciliation(client: Client, settings: Settings, first: date, last: date) -> str:
    """Start `recon/{period}`; a finished run of the same period may be run again, a running
    one may not (WorkflowAlreadyStartedError)."""
    start, end = period(first, last)
    workflow_id = recon_workflow_id(start, end)
    await client.start_workflow(
        ReconciliationWorkflow.run,
        recon_input(settings, start, end),
        id=workflow_id,
        task_queue=task_queue(settings.task_queue_prefix),
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=visibility.start_attributes(PROCESS, "loading"),
        static_summary=f"Reconciliation of {first} to {last}",
    )
    return workflow_id


def nightly_schedule(settings: Settings) -> Schedule:
    """Every day at the configured local hour: the previous UTC day."""
    action = ScheduleActionStartWorkflow(
        ReconciliationWorkflow.run,
        recon_input(settings, None, None),
        id="recon/nightly",  # Temporal appends the scheduled time
        task_queue=task_queue(settings.task_queue_prefix),
        typed_search_attributes=visibility.start_attributes(PROCESS, "loading"),
    )
    return daily(action, settings.recon_hour, 0, settings.recon_timezone,
                 "nightly reconciliation of the previous day")  # fmt: skip


async def apply_schedule(client: Client, settings: Settings) -> str:
    """Create the nightly schedule, or bring an existing one to the current settings."""
    schedule_id = f"{settings.task_queue_prefix}{SCHEDULE_ID}"
    return await upsert_schedule(client, schedule_id, nightly_schedule(settings))
