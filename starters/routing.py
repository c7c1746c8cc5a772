"""Which process a business event starts or feeds: one place, read by every entry point."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from temporalio.client import Client
from temporalio.common import (
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError

from canonical import BusinessEvent
from canonical.credit import CreditPolicy, CreditRequest
from workflows import visibility
from workflows.account_sync import PROCESS as ACCOUNT_SYNC
from workflows.account_sync import (
    AccountSyncInput,
    AccountSyncWorkflow,
    SyncRequest,
    account_workflow_id,
)
from workflows.activity_options import task_queue
from workflows.case_to_credit import PROCESS as CREDIT_PROCESS
from workflows.case_to_credit import CaseToCreditInput, CaseToCreditWorkflow, credit_workflow_id
from workflows.subscription_ledger import PROCESS as LEDGER_PROCESS
from workflows.subscription_ledger import (
    BillingEventRef,
    SubscriptionLedgerInput,
    SubscriptionLedgerWorkflow,
    ledger_workflow_id,
)

ACCOUNT_EVENTS = frozenset({"customer.created", "customer.updated", "customer.deleted"})
# Events whose document may change what the ERP must hold; drafts (invoice.created) never do.
LEDGER_EVENTS: dict[str, Literal["invoice", "credit_note", "subscription"]] = {
    "invoice.finalized": "invoice",
    "invoice.paid": "invoice",
    "invoice.voided": "invoice",
    "invoice.marked_uncollectible": "invoice",
    "credit_note.created": "credit_note",
    "credit_note.voided": "credit_note",
    "customer.subscription.created": "subscription",
    "customer.subscription.updated": "subscription",
    "customer.subscription.deleted": "subscription",
}


@dataclass(frozen=True)
class ProcessStart:
    """The start of one business process: with a signal for long-lived processes that are
    fed events (signal-with-start), without one for a process that runs once per request."""

    workflow: Any
    workflow_id: str
    input: Any
    search_attributes: TypedSearchAttributes
    summary: str
    signal: str | None = None
    signal_input: Any = None


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


def ledger_start(event: BusinessEvent, ledger_currencies: list[str]) -> ProcessStart | None:
    kind = LEDGER_EVENTS.get(event.type)
    customer_id = event.subject.customer_id
    obj = event.data.get("object", {})
    object_id = obj.get("id") if isinstance(obj, dict) else None
    if kind is None or not customer_id or not isinstance(object_id, str):
        return None
    subscription_id = event.subject.subscription_id
    workflow_id = ledger_workflow_id(subscription_id, customer_id)
    attributes = visibility.start_attributes(
        LEDGER_PROCESS,
        "waiting",
        customer_id=customer_id,
        correlation_id=event.correlation_id,
        subscription_id=subscription_id,
    )
    return ProcessStart(
        workflow=SubscriptionLedgerWorkflow.run,
        workflow_id=workflow_id,
        input=SubscriptionLedgerInput(
            subscription_id=subscription_id,
            customer_id=customer_id,
            supported_currencies=ledger_currencies,
        ),
        signal="billing_event",
        signal_input=BillingEventRef(
            event_id=event.event_id,
            event_type=event.type,
            created=int(event.occurred_at.timestamp()),
            object_kind=kind,
            object_id=object_id,
            customer_id=customer_id,
            correlation_id=event.correlation_id,
            document_number=obj.get("number") if isinstance(obj.get("number"), str) else None,
        ),
        search_attributes=attributes,
        summary=(
            f"Billing documents of subscription {subscription_id} to the ERP"
            if subscription_id
            else f"Billing documents of customer {customer_id} (no subscription) to the ERP"
        ),
    )


def credit_start(
    request: CreditRequest,
    policy: CreditPolicy,
    correlation_id: str,
    customer_id: str | None = None,
) -> ProcessStart:
    return ProcessStart(
        workflow=CaseToCreditWorkflow.run,
        workflow_id=credit_workflow_id(request.case_id, request.request_id),
        input=CaseToCreditInput(request=request, policy=policy),
        search_attributes=visibility.start_attributes(
            CREDIT_PROCESS,
            "checking",
            customer_id=customer_id,
            case_id=request.case_id,
            invoice_id=request.invoice_id,
            amount_minor=request.amount.to_minor(),
            correlation_id=correlation_id,
        ),
        summary=f"Credit of {request.amount} on case {request.case_id} ({request.reason})",
    )


def route_billing_event(event: BusinessEvent, ledger_currencies: list[str]) -> ProcessStart | None:
    """The process a billing event belongs to; None for events no process handles."""
    if event.type in ACCOUNT_EVENTS and event.subject.customer_id:
        return account_sync_start(
            event.subject.customer_id, event.event_id, event.type, event.correlation_id
        )
    return ledger_start(event, ledger_currencies)


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
