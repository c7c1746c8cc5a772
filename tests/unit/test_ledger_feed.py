"""The ledger is fed by workflow type name: the name and signal must be the workflow's own."""

from __future__ import annotations

from temporalio import workflow

from adapters import visibility
from adapters.workflow_starts import ledger_feed
from canonical.ledger import BillingEventRef, SubscriptionLedgerInput
from workflows.subscription_ledger import SubscriptionLedgerWorkflow


def event(**changes: object) -> BillingEventRef:
    fields: dict[str, object] = {
        "event_id": "evt_1", "event_type": "invoice.finalized", "created": 1_700_000_000,
        "object_kind": "invoice", "object_id": "in_1", "customer_id": "cus_1",
        "correlation_id": "corr-1",
    }  # fmt: skip
    fields.update(changes)
    return BillingEventRef.model_validate(fields)


def test_the_feed_names_the_ledger_workflow_and_its_signal() -> None:
    definition = workflow._Definition.must_from_class(SubscriptionLedgerWorkflow)
    start = ledger_feed(event(), "sub_1", ["USD"])
    assert start.workflow == definition.name
    assert start.signal in definition.signals


def test_a_subscription_document_feeds_the_subscription_ledger() -> None:
    start = ledger_feed(event(), "sub_1", ["USD", "EUR"])
    assert start.workflow_id == "subscription/sub_1"
    assert start.input == SubscriptionLedgerInput(
        subscription_id="sub_1", customer_id="cus_1", supported_currencies=["USD", "EUR"]
    )
    assert start.signal_input == event()
    attributes = start.search_attributes
    assert attributes.get(visibility.BUSINESS_PROCESS) == "amendment_to_erp"
    assert attributes.get(visibility.PROCESS_STATUS) == "waiting"
    assert attributes.get(visibility.SUBSCRIPTION_ID) == "sub_1"
    assert attributes.get(visibility.CORRELATION_ID) == "corr-1"
    assert start.summary == "Billing documents of subscription sub_1 to the ERP"


def test_a_document_without_subscription_feeds_the_customer_ledger() -> None:
    start = ledger_feed(event(), None, ["USD"])
    assert start.workflow_id == "customer-ledger/cus_1"
    assert start.search_attributes.get(visibility.SUBSCRIPTION_ID) is None
    assert "customer cus_1 (no subscription)" in start.summary
