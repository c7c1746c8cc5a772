"""Starting shadow reports: on demand for an entity and day, and daily from a Temporal
Schedule for the day before (every entity in shadow)."""

from __future__ import annotations

from datetime import date

from temporalio.client import Client, Schedule, ScheduleActionStartWorkflow
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from adapters.settings import Settings
from adapters.task_queues import task_queue
from starters.schedules import daily, upsert_schedule
from workflows.shadow_report import (
    ShadowReportInput,
    ShadowReportResult,
    ShadowReportWorkflow,
    shadow_report_workflow_id,
)

SHADOW_SCHEDULE_ID = "shadow-report-daily"


async def run_shadow_report(
    client: Client, settings: Settings, entity: str, day: date
) -> ShadowReportResult:
    """Run the entity's report for the day and wait for it (a day is read in seconds); one
    already running for the same entity and day is waited for instead of started twice."""
    handle = await client.start_workflow(
        ShadowReportWorkflow.run,
        ShadowReportInput(entity=entity, day=day),
        id=shadow_report_workflow_id(entity, day),
        task_queue=task_queue(settings.task_queue_prefix),
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        static_summary=f"Shadow report of {entity} for {day.isoformat()}",
    )
    return await handle.result()


def daily_shadow_schedule(settings: Settings) -> Schedule:
    """Every day half an hour after the reconciliation: the previous UTC day, each entity in
    shadow."""
    action = ScheduleActionStartWorkflow(
        ShadowReportWorkflow.run,
        ShadowReportInput(),
        id="shadow-report/daily",  # Temporal appends the scheduled time
        task_queue=task_queue(settings.task_queue_prefix),
    )
    return daily(action, settings.recon_hour, 30, settings.recon_timezone,
                 "daily shadow report of the previous day")  # fmt: skip


async def apply_shadow_schedule(client: Client, settings: Settings) -> str:
    """Create the daily schedule, or bring an existing one to the current settings."""
    schedule_id = f"{settings.task_queue_prefix}{SHADOW_SCHEDULE_ID}"
    return await upsert_schedule(client, schedule_id, daily_shadow_schedule(settings))
