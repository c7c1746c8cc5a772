"""Starting reconciliation: on demand for a range, and nightly from Temporal Schedules; one
run per ERP of the routing (`recon/{period}` for the ERP on the `erp` queue, as before
routing; `recon/{erp}/{period}` for the others), or of the one ERP asked for."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from adapters import visibility
from adapters.routing_file import load_routing
from adapters.settings import Settings
from adapters.task_queues import task_queue
from canonical.erp_routing import ErpRouting
from canonical.reconciliation_erps import erp_on_home_queue
from starters.schedules import daily, upsert_schedule
from workflows.reconciliation import (
    PROCESS,
    ReconciliationInput,
    ReconciliationWorkflow,
    recon_workflow_id,
)

SCHEDULE_ID = "recon-daily"


class UnknownErp(ValueError):
    """The routing has no ERP of that name."""


def erps_to_reconcile(routing: ErpRouting, erp: str | None = None) -> list[tuple[str, str | None]]:
    """The ERP of each run to start, as (its name, the run's `erp`): the one named, or each
    ERP of the routing, the one on the `erp` queue first. That one runs as `erp` None, so its
    runs keep their `recon/{period}` id whether it is named or not."""
    home = erp_on_home_queue(routing)
    names = [erp] if erp is not None else sorted(routing.erps, key=lambda name: name != home)
    for name in names:
        if name not in routing.erps:
            raise UnknownErp(f"the ERP routing has no ERP {name!r} (it has "
                             f"{', '.join(routing.erps)})")  # fmt: skip
    return [(name, None if name == home else name) for name in names]


@dataclass(frozen=True)
class StartedRun:
    erp: str
    workflow_id: str
    already_running: bool = False  # a run of the same ERP and days was still going


def period(first: date, last: date) -> tuple[datetime, datetime]:
    """The UTC days `first` to `last`, both included, as [start, end)."""
    if last < first:
        raise ValueError(f"--to {last} is before --from {first}")
    if last == date.max:  # its end, the next midnight, is past what datetime can hold
        raise ValueError(f"--to {last} is past the last day a period can end on")
    return datetime.combine(first, time(), UTC), datetime.combine(last + timedelta(1), time(), UTC)


def recon_input(
    settings: Settings, start: datetime | None, end: datetime | None, erp: str | None = None
) -> ReconciliationInput:
    return ReconciliationInput(
        erp=erp,
        period_start=start,
        period_end=end,
        heal_limit=settings.recon_heal_limit,
        exception_limit=settings.recon_exception_limit,
        ledger_currencies=settings.ledger_currencies,
    )


async def start_reconciliation(
    client: Client, settings: Settings, first: date, last: date, erp: str | None = None
) -> str:
    """Start `recon/{period}` (`erp` None: the ERP on the `erp` queue) or
    `recon/{erp}/{period}`; a finished run of the same period may be run again, a running one
    may not (WorkflowAlreadyStartedError)."""
    start, end = period(first, last)
    workflow_id = recon_workflow_id(start, end, erp)
    await client.start_workflow(
        ReconciliationWorkflow.run,
        recon_input(settings, start, end, erp),
        id=workflow_id,
        task_queue=task_queue(settings.task_queue_prefix),
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=visibility.start_attributes(PROCESS, "loading"),
        static_summary=f"Reconciliation{f' of {erp}' if erp else ''} of {first} to {last}",
    )
    return workflow_id


async def start_reconciliations(
    client: Client, settings: Settings, routing: ErpRouting, first: date, last: date,
    erp: str | None = None,
) -> list[StartedRun]:  # fmt: skip
    """One run per ERP (`erp` None: each ERP of the routing), the days checked first. A run
    of the same ERP and days still going is left to go; WorkflowAlreadyStartedError when
    every run asked for is. UnknownErp when the routing has no such ERP."""
    period(first, last)
    started: list[StartedRun] = []
    for name, run_erp in erps_to_reconcile(routing, erp):
        try:
            workflow_id = await start_reconciliation(client, settings, first, last, run_erp)
            started.append(StartedRun(name, workflow_id))
        except WorkflowAlreadyStartedError:
            workflow_id = recon_workflow_id(*period(first, last), run_erp)
            started.append(StartedRun(name, workflow_id, already_running=True))
    if all(run.already_running for run in started):
        raise WorkflowAlreadyStartedError(started[0].workflow_id, "Reconciliation")
    return started


def schedule_id(settings: Settings, erp: str | None = None) -> str:
    """`recon-daily` for the ERP on the `erp` queue (as before routing), `recon-daily-{erp}`
    for the others."""
    return f"{settings.task_queue_prefix}{SCHEDULE_ID}" + (f"-{erp}" if erp else "")


def nightly_schedule(settings: Settings, erp: str | None = None) -> Schedule:
    """Every day at the configured local hour: the previous UTC day of one ERP (None: the
    one on the `erp` queue)."""
    action = ScheduleActionStartWorkflow(
        ReconciliationWorkflow.run,
        recon_input(settings, None, None, erp),
        # Temporal appends the scheduled time
        id=f"recon/{erp}/nightly" if erp else "recon/nightly",
        task_queue=task_queue(settings.task_queue_prefix),
        typed_search_attributes=visibility.start_attributes(PROCESS, "loading"),
    )
    of = f" of {erp}" if erp else ""
    return daily(action, settings.recon_hour, 0, settings.recon_timezone,
                 f"nightly reconciliation{of} of the previous day")  # fmt: skip


async def apply_schedule(client: Client, settings: Settings, erp: str | None = None) -> str:
    """Create the nightly schedule of one ERP (None: the one on the `erp` queue), or bring an
    existing one to the current settings."""
    return await upsert_schedule(
        client, schedule_id(settings, erp), nightly_schedule(settings, erp)
    )


async def apply_schedules(
    client: Client, settings: Settings, erp: str | None = None
) -> dict[str, str]:
    """The nightly schedule of each ERP of the routing (or of the one named), created or
    updated: schedule id -> what was done. A schedule of an ERP the routing no longer has is
    left as it is (its runs fail naming the ERP): delete it with the Temporal CLI."""
    routing = load_routing(settings.resolved_erp_routing())
    return {
        schedule_id(settings, run_erp): await apply_schedule(client, settings, run_erp)
        for _, run_erp in erps_to_reconcile(routing, erp)
    }
