"""The shadow report (`shadow-report/{entity or all}/{day}`): for each entity in shadow, what
its book of record holds against what its target ERP holds, for what the entity sent to the
target that day (canonical/shadow_report.py). Run daily by a Temporal Schedule for the day
before, and on demand by `ledgerbridge erp shadow-report`."""

from __future__ import annotations

from datetime import date, timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.erp_routing import (
        ErpShadowActivities,
        ReadRecordsInput,
        ShadowJournalActivities,
        ShadowScopeInput,
    )
    from canonical.shadow_report import (
        ErpRecord,
        RecordToCompare,
        ShadowReport,
        ShadowReportInput,
        ShadowReportResult,
        shadow_differences,
    )
    from workflows.activity_options import run_activity

SHADOW_REPORT_WORKFLOW = "ShadowReport"
# References read per activity: the history holds each answer, so a day is read in slices
# small enough to be read well within the ERP call's 30 s (NetSuite: ~0.2 s a read, 5 at once).
RECORDS_PER_READ = 50


def shadow_report_workflow_id(entity: str | None, day: date) -> str:
    return f"shadow-report/{entity or 'all'}/{day.isoformat()}"


@workflow.defn(name=SHADOW_REPORT_WORKFLOW)
class ShadowReportWorkflow:
    @workflow.run
    async def run(self, request: ShadowReportInput) -> ShadowReportResult:
        day = request.day or workflow.now().date() - timedelta(days=1)
        scopes = await run_activity(
            ShadowJournalActivities.shadow_report_scopes,
            ShadowScopeInput(entity=request.entity, day=day),
        )
        reports = []
        for scope in scopes:
            book = await _read(scope.records, scope.book_queue)
            target = await _read(scope.records, scope.target_queue)
            report = ShadowReport(
                entity=scope.entity, day=day, book_erp=scope.book_erp,
                target_erp=scope.target_erp, compared=len(scope.records),
                differences=shadow_differences(scope.records, book, target),
                made_at=workflow.now(),
            )  # fmt: skip
            await run_activity(ShadowJournalActivities.record_shadow_report, report)
            workflow.logger.info(
                "shadow report of %s for %s: %d compared, %d differ",
                scope.entity, day, report.compared, len(report.differences),
            )  # fmt: skip
            reports.append(report)
        return ShadowReportResult(reports=reports)


async def _read(records: list[RecordToCompare], queue: str) -> dict[str, ErpRecord]:
    """What the ERP on `queue` holds of these records, by reference."""
    found: dict[str, ErpRecord] = {}
    for start in range(0, len(records), RECORDS_PER_READ):
        chunk = records[start : start + RECORDS_PER_READ]
        for record in await run_activity(
            ErpShadowActivities.read_erp_records, ReadRecordsInput(records=chunk), queue=queue
        ):
            found[record.reference] = record
    return found
