"""Which process a business event starts or feeds: one place, read by every entry point."""

from __future__ import annotations

from typing import Literal

from adapters import visibility
from adapters.workflow_starts import ProcessStart, ledger_feed, signal_with_start, start_once
from canonical import BusinessEvent
from canonical.credit import CreditPolicy, CreditRequest
from canonical.ledger import BillingEventRef
from workflows.account_sync import PROCESS as ACCOUNT_SYNC
from workflows.account_sync import (
    AccountSyncInput,
    AccountSyncWorkflow,
    SyncRequest,
    account_workflow_id,
)
from workflows.case_to_credit import PROCESS as CREDIT_PROCESS
from workflows.case_to_credit import CaseToCreditInput, CaseToCreditWorkflow, credit_workflow_id

__all__ = [
    "ProcessStart",
    "account_sync_start",
    "credit_start",
    "ledger_start",
    "route_billing_event",
    "signal_with_start",
    "start_once",
]

ACCOUNT_EVENTS = frozenset({"customer.created", "customer.updated", "customer.deleted"})
# Events that change what a customer is entitled to: account sync carries it to support
# (besides the ledger, for those the ledger also takes).
ENTITLEMENT_EVENTS = frozenset(
    {
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "customer.subscription.paused",
        "customer.subscription.resumed",
        "invoice.paid",
        "invoice.payment_failed",
    }
)
# Events whose document may change what the ERP must hold; drafts (invoice.created) never do.
# An invoice's payment events feed its ledger as invoice events: the ledger then reads the
# invoice's payments from billing and posts each paid one after the invoice itself. A
# charge's refunds feed the customer's ledger (a charge names no subscription). The other
# money events (payment_intent.*, charge.succeeded, refund.*, invoice_payment.*) are
# acknowledged and start nothing: the invoice and charge events above, and an invoice update
# that changes what is paid (a partial payment, see `ledger_kind`), bring the same facts.
# So are `charge.refund.updated` and `refund.updated`, the news that a pending refund
# succeeded or failed: their object is a Refund, which names no customer, so no ledger can be
# named from it (and looking the charge up here would make ingress call billing). Instead the
# customer's ledger that saw the refund pending on `charge.refunded` reads the charge again
# on its own durable timer until billing says how it ended.
LEDGER_EVENTS: dict[str, Literal["invoice", "credit_note", "subscription", "charge"]] = {
    "invoice.finalized": "invoice",
    "invoice.paid": "invoice",
    "invoice.payment_succeeded": "invoice",
    "invoice.payment_failed": "invoice",
    "invoice.voided": "invoice",
    "invoice.marked_uncollectible": "invoice",
    "charge.refunded": "charge",
    "credit_note.created": "credit_note",
    "credit_note.voided": "credit_note",
    "customer.subscription.created": "subscription",
    "customer.subscription.updated": "subscription",
    "customer.subscription.deleted": "subscription",
}


def account_sync_start(
    customer_id: str,
    request_id: str,
    reason: str,
    correlation_id: str,
    subscription_id: str | None = None,
) -> ProcessStart:
    return ProcessStart(
        workflow=AccountSyncWorkflow.run,
        workflow_id=account_workflow_id(customer_id),
        input=AccountSyncInput(customer_id=customer_id),
        signal="sync_requested",
        signal_input=SyncRequest(
            request_id=request_id,
            reason=reason,
            correlation_id=correlation_id,
            subscription_id=subscription_id,
        ),
        search_attributes=visibility.start_attributes(
            ACCOUNT_SYNC, "queued", customer_id=customer_id, correlation_id=correlation_id
        ),
        summary=f"Account sync of customer {customer_id} ({reason})",
    )


# A payment that leaves something to pay on its invoice (a partial payment, attached to the
# invoice) changes the invoice without `invoice.paid`: billing tells it by `invoice.updated`
# with `amount_paid` among the previous attributes (and by `invoice_payment.paid`, which
# names neither customer nor subscription). That update feeds the invoice's ledger like a
# payment event, so the payment reaches the ERP without waiting for the rest.
PAYMENT_APPLIED_FIELD = "amount_paid"


def ledger_kind(
    event: BusinessEvent,
) -> Literal["invoice", "credit_note", "subscription", "charge"] | None:
    """What the ledger is fed by the event, if anything."""
    kind = LEDGER_EVENTS.get(event.type)
    if kind is None and event.type == "invoice.updated":
        previous = event.data.get("previous_attributes")
        if isinstance(previous, dict) and PAYMENT_APPLIED_FIELD in previous:
            return "invoice"
    return kind


def ledger_start(event: BusinessEvent, ledger_currencies: list[str]) -> ProcessStart | None:
    kind = ledger_kind(event)
    customer_id = event.subject.customer_id
    obj = event.data.get("object", {})
    object_id = obj.get("id") if isinstance(obj, dict) else None
    if kind is None or not customer_id or not isinstance(object_id, str):
        return None
    ref = BillingEventRef(
        event_id=event.event_id,
        event_type=event.type,
        created=int(event.occurred_at.timestamp()),
        object_kind=kind,
        object_id=object_id,
        customer_id=customer_id,
        correlation_id=event.correlation_id,
        document_number=obj.get("number") if isinstance(obj.get("number"), str) else None,
    )
    # A charge's refunds belong to no subscription: the customer's ledger posts them.
    subscription_id = None if kind == "charge" else event.subject.subscription_id
    return ledger_feed(ref, subscription_id, ledger_currencies)


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


def route_billing_event(event: BusinessEvent, ledger_currencies: list[str]) -> list[ProcessStart]:
    """The processes a billing event starts or feeds, the ledger first; empty for events no
    process handles. A subscription or payment event feeds its ledger and asks account sync
    to carry the customer's entitlements to support: the caller starts each and acknowledges
    the event only once Temporal has accepted them all."""
    customer_id = event.subject.customer_id
    if event.type in ACCOUNT_EVENTS and customer_id:
        return [account_sync_start(customer_id, event.event_id, event.type, event.correlation_id)]
    starts = []
    ledger = ledger_start(event, ledger_currencies)
    if ledger is not None:
        starts.append(ledger)
    if event.type in ENTITLEMENT_EVENTS and customer_id:
        subscription_id = event.subject.subscription_id
        if event.type.startswith("customer.subscription."):
            obj = event.data.get("object", {})
            subscription_id = subscription_id or (obj.get("id") if isinstance(obj, dict) else None)
        starts.append(
            account_sync_start(
                customer_id, event.event_id, event.type, event.correlation_id, subscription_id
            )
        )
    return starts
