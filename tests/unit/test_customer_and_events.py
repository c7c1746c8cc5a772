from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from adapters.billing.events import StripeEventPayload, to_business_event
from canonical import AccountRecord, BusinessEvent, Customer


def test_customer_id_must_look_like_an_id() -> None:
    with pytest.raises(ValidationError):
        Customer(customer_id="a b", name="x")
    with pytest.raises(ValidationError):
        Customer(customer_id="cus_1", name="")


def test_account_record_reports_drift_from_the_customer() -> None:
    customer = Customer(customer_id="cus_1", name="New Name", email="a@example.com")
    record = AccountRecord(system="erp", external_id="7", customer_id="cus_1", name="Old Name")
    assert record.differs_from(customer) == ["name"]
    assert record.model_copy(update={"name": "New Name"}).differs_from(customer) == []


def test_business_event_needs_an_aware_timestamp() -> None:
    with pytest.raises(ValidationError):
        BusinessEvent(
            event_id="e",
            type="t",
            source="billing",
            occurred_at=datetime(2026, 1, 1),
            correlation_id="c",
        )


def test_stripe_event_becomes_a_business_event_with_subject_ids() -> None:
    payload = StripeEventPayload.model_validate(
        {
            "id": "evt_1",
            "type": "invoice.finalized",
            "created": 1_790_000_000,
            "data": {
                "object": {
                    "object": "invoice",
                    "id": "in_1",
                    "customer": "cus_9",
                    "parent": {
                        "type": "subscription_details",
                        "subscription_details": {"subscription": "sub_3"},
                    },
                }
            },
        }
    )
    event = to_business_event(payload, correlation_id=None)
    assert event.source == "billing"
    assert event.correlation_id == "evt_1"
    assert event.occurred_at == datetime.fromtimestamp(1_790_000_000, UTC)
    assert (event.subject.customer_id, event.subject.subscription_id, event.subject.invoice_id) == (
        "cus_9",
        "sub_3",
        "in_1",
    )


def test_stripe_event_without_an_object_is_malformed() -> None:
    payload = StripeEventPayload.model_validate(
        {"id": "evt_1", "type": "customer.created", "created": 1, "data": {"object": "nope"}}
    )
    with pytest.raises(ValueError, match=r"data\.object"):
        to_business_event(payload, None)
