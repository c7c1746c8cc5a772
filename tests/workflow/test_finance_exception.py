"""FinanceExceptionWorkflow on the time-skipping server, its audit activity replaced by a
same-named double: what the exception shows once finance has decided."""

from __future__ import annotations

from temporalio import activity
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.audit import AuditRecordInput
from adapters import visibility
from adapters.task_queues import task_queue
from canonical import DecisionRequest, ExceptionContext, FinanceDecision, Money
from workflows.finance_exception import FinanceExceptionInput, FinanceExceptionWorkflow

CONTEXT = ExceptionContext(
    process="case_to_credit",
    origin_workflow_id="credit/360000000123/req-1",
    origin_run_id="run-1",
    step="post_ledger_document",
    case_id="360000000123",
    amount=Money.of("45.00", "USD"),
    error_type="ValidationError",
    error_message="the ERP refused the credit note",
    correlation_id="corr-1",
    allowed_decisions=["retry", "reject"],
)


async def current_details(env: WorkflowEnvironment, workflow_id: str) -> str:
    handle = env.client.get_workflow_handle(workflow_id)
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return metadata.current_details


async def test_a_decided_exception_says_what_was_decided_and_by_whom(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    audited: list[AuditRecordInput] = []

    @activity.defn(name="append_audit")
    async def append_audit(record: AuditRecordInput) -> None:
        audited.append(record)

    env = time_skipping_env
    queue = task_queue(queue_prefix)
    workflow_id = f"exception/{queue_prefix}credit/1"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[FinanceExceptionWorkflow],
        activities=[append_audit],
    ):
        handle = await env.client.start_workflow(
            FinanceExceptionWorkflow.run,
            FinanceExceptionInput(context=CONTEXT),
            id=workflow_id,
            task_queue=queue,
        )
        waiting = await current_details(env, workflow_id)
        request = DecisionRequest(
            decision="reject", reason="duplicate of case 122", actor="fiona", role="finance"
        )
        await handle.execute_update("decide", request, result_type=FinanceDecision)
        decided = await current_details(env, workflow_id)
        status = (await handle.describe()).typed_search_attributes.get(visibility.PROCESS_STATUS)
        await handle.result()

    assert waiting.startswith("Waiting for finance")
    assert decided.startswith("Decided: reject by fiona (finance) at ")
    assert decided.endswith("UTC: duplicate of case 122")
    assert "Waiting" not in decided
    assert status == "decided"
    assert [r.action for r in audited] == ["exception.opened", "exception.reject"]


async def test_an_opening_too_large_for_its_event_still_waits_for_finance(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    """The opening's event is refused (never truncated) when the error message is a whole
    page; the exception stays open for finance, and its decision is audited as usual."""
    audited: list[AuditRecordInput] = []

    @activity.defn(name="append_audit")
    async def append_audit(record: AuditRecordInput) -> None:
        if record.action == "exception.opened":
            raise ApplicationError("its event is over 64 KiB", type="EventTooLarge",
                                   non_retryable=True)  # fmt: skip
        audited.append(record)

    env = time_skipping_env
    workflow_id = f"exception/{queue_prefix}credit/2"
    huge = CONTEXT.model_copy(update={"error_message": "<html>" + "x" * 70_000})
    async with Worker(env.client, task_queue=task_queue(queue_prefix),
                      workflows=[FinanceExceptionWorkflow], activities=[append_audit]):  # fmt: skip
        handle = await env.client.start_workflow(
            FinanceExceptionWorkflow.run, FinanceExceptionInput(context=huge), id=workflow_id,
            task_queue=task_queue(queue_prefix),
        )  # fmt: skip
        # Opened (its first task run) before finance decides, as in the inbox.
        assert (await current_details(env, workflow_id)).startswith("Waiting for finance")
        request = DecisionRequest(decision="reject", reason="noise", actor="fiona", role="finance")
        await handle.execute_update("decide", request, result_type=FinanceDecision)
        decision = await handle.result()
    assert decision.decision == "reject"
    assert [r.action for r in audited] == ["exception.reject"]
