"""Which process a business event starts or feeds: one place, read by every entry point."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from canonical import BusinessEvent
from workflows import visibility
from workflows.account_sync import PROCESS as ACCOUNT_SYNC
from workflows.account_sync import (
    AccountSyncInput,
    AccountSyncWorkflow,
    SyncRequest,
    account_workflow_id,
)
from workflows.activity_options import task_queue

ACCOUNT_EVENTS = frozenset({"customer.created", "customer.updated", "customer.deleted"})


@dataclass(frozen=True)
class ProcessStart:
    """A signal-with-start of one business process."""

    workflow: Any
    workflow_id: str
    input: Any
    signal: str
    signal_input: Any
    search_attributes: visibility.TypedSearchAttributes
    summary: str


def account_sync_start(
    customer_id: str, request_id: str, reason: str, correlation_id: str
) -> ProcessStart:
    return ProcessStart(
        workflow=AccountSyncWorkflow.run,
        workflow_id=account_workflow_id(customer_id),
        input=AccountSyncInput(customer_id=customer_id),
        signal="sync_requested",
        signal_input=SyncRequest(
            request_id=request_id, reason=reason, correlation_id=correlation_id
        ),
        search_attributes=visibility.start_attributes(
            ACCOUNT_SYNC, "queued", customer_id=customer_id, correlation_id=correlation_id
        ),
        summary=f"Account sync of customer {customer_id} ({reason})",
    )


def route_billing_event(event: BusinessEvent) -> ProcessStart | None:
    """The process a billing event belongs to; None for events no process handles yet."""
    if event.type in ACCOUNT_EVENTS and event.subject.customer_id:
        return account_sync_start(
            event.subject.customer_id, event.event_id, event.type, event.correlation_id
        )
    return None


async def signal_with_start(
    client: Client, start: ProcessStart, prefix: str, rpc_timeout_seconds: float = 5.0
) -> str:
    """Hand the work to Temporal; returns the run id once the server has durably accepted it."""
    handle = await client.start_workflow(
        start.workflow,
        start.input,
        id=start.workflow_id,
        task_queue=task_queue(prefix),
        start_signal=start.signal,
        start_signal_args=[start.signal_input],
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        search_attributes=start.search_attributes,
        static_summary=start.summary,
        rpc_timeout=timedelta(seconds=rpc_timeout_seconds),
    )
    return handle.result_run_id or ""
