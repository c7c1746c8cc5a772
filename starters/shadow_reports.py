"""Starting shadow reports: on demand for an entity and day, and daily from a Temporal
Schedule for the day before (every entity in shadow)."""

from __future__ import annotations

from datetime import date
from typing import Any

from temporalio.client import Client, Schedule, ScheduleActionStartWorkflow, WorkflowHandle
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


async def start_shadow_report(
    client: Client, settings: Settings, entity: str, day: date
) -> WorkflowHandle[Any, ShadowReportResult]:
    """Start the entity's report for the day; one already running for the same entity and
    day is joined instead of started twice."""
    return await client.start_workflow(
        ShadowReportWorkflow.run,
        ShadowReportInput(entity=entity, day=day),
        id=shadow_report_workflow_id(entity, day),
        task_queue=task_queue(settings.task_queue_prefix),
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        static_summary=f"Shadow report of {entity} for {day.isoformat()}",
    )


async def run_shadow_report(
    client: Client, settings: Settings, entity: str, day: date
) -> ShadowReportResult:
    """The entity's report for the day, made now (a day of thousands of records takes a
    while: both ERPs are read record by record)."""
    return await (await start_shadow_report(client, settings, entity, day)).result()


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
