"""Handing work to Temporal: start a process once per id, or feed a long-lived one by
signal-with-start. Workflows are named by type, not imported, so webhook routing and
reconciliation's healing (an activity) feed the ledger the same way."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.common import (
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from adapters import visibility
from adapters.task_queues import task_queue
from canonical.ledger import (
    BILLING_EVENT_SIGNAL,
    LEDGER_PROCESS,
    LEDGER_WORKFLOW,
    BillingEventRef,
    SubscriptionLedgerInput,
    ledger_workflow_id,
)


@dataclass(frozen=True)
class ProcessStart:
    """The start of one business process: with a signal for long-lived processes that are
    fed events (signal-with-start), without one for a process that runs once per request."""

    workflow: Any  # the workflow's run method or its type name
    workflow_id: str
    input: Any
    search_attributes: TypedSearchAttributes
    summary: str
    signal: str | None = None
    signal_input: Any = None


def ledger_feed(
    event: BillingEventRef, subscription_id: str | None, ledger_currencies: list[str]
) -> ProcessStart:
    """A billing event for the ledger of its subscription (or of its customer, for
    documents without one)."""
    customer_id = event.customer_id
    return ProcessStart(
        workflow=LEDGER_WORKFLOW,
        workflow_id=ledger_workflow_id(subscription_id, customer_id),
        input=SubscriptionLedgerInput(
            subscription_id=subscription_id,
            customer_id=customer_id,
            supported_currencies=ledger_currencies,
        ),
        signal=BILLING_EVENT_SIGNAL,
        signal_input=event,
        search_attributes=visibility.start_attributes(
            LEDGER_PROCESS,
            "waiting",
            customer_id=customer_id,
            correlation_id=event.correlation_id,
            subscription_id=subscription_id,
        ),
        summary=(
            f"Billing documents of subscription {subscription_id} to the ERP"
            if subscription_id
            else f"Billing documents of customer {customer_id} (no subscription) to the ERP"
        ),
    )


async def feed_ledger(
    client: Client,
    event: BillingEventRef,
    subscription_id: str | None,
    ledger_currencies: list[str],
    prefix: str,
    rpc_timeout_seconds: float = 5.0,
) -> str:
    """Signal the event to its ledger workflow, starting it if it is not running; returns
    the run id once the server has durably accepted it."""
    start = ledger_feed(event, subscription_id, ledger_currencies)
    return await signal_with_start(client, start, prefix, rpc_timeout_seconds)


async def signal_with_start(
    client: Client, start: ProcessStart, prefix: str, rpc_timeout_seconds: float = 5.0
) -> str:
    """Hand the work to Temporal; returns the run id once the server has durably accepted it."""
    assert start.signal is not None, f"{start.workflow_id} is not fed by signals"
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


async def start_once(
    client: Client, start: ProcessStart, prefix: str, rpc_timeout_seconds: float = 5.0
) -> bool:
    """Start a process that runs once per id; False when that id has already been started
    (running or finished), so the same request twice starts one process."""
    try:
        await client.start_workflow(
            start.workflow,
            start.input,
            id=start.workflow_id,
            task_queue=task_queue(prefix),
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=start.search_attributes,
            static_summary=start.summary,
            rpc_timeout=timedelta(seconds=rpc_timeout_seconds),
        )
    except WorkflowAlreadyStartedError:
        return False
    return True
