"""A billing webhook is routed by the fields of the pinned Stripe API version only."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.billing.events import (
    StripeEventPayload,
    UnreadableVersion,
    subject_of,
    to_business_event,
)
from adapters.billing.stripe import STRIPE_API_VERSION
from canonical import SubjectIds
from canonical.ledger import BillingEventRef
from starters.routing import route_billing_event


def invoice_finalized(invoice: dict[str, Any]) -> StripeEventPayload:
    return StripeEventPayload.model_validate(
        {
            "id": "evt_1NvXq2",
            "type": "invoice.finalized",
            "created": 1_790_000_000,
            "data": {"object": {"object": "invoice", "id": "in_1NvXq2", **invoice}},
        }
    )


def test_subscription_invoice_routes_to_its_subscription_by_parent_details() -> None:
    payload = invoice_finalized(
        {
            "customer": "cus_9",
            "parent": {
                "type": "subscription_details",
                "quote_details": None,
                "subscription_details": {"subscription": "sub_3", "metadata": {}},
            },
        }
    )

    starts = route_billing_event(to_business_event(payload, None), ["USD"])

    assert [start.workflow_id for start in starts] == ["subscription/sub_3"]


def test_invoice_without_a_parent_routes_to_the_customer_ledger() -> None:
    payload = invoice_finalized({"customer": "cus_9", "parent": None})

    starts = route_billing_event(to_business_event(payload, None), ["USD"])

    assert [start.workflow_id for start in starts] == ["customer-ledger/cus_9"]


def test_top_level_subscription_removed_from_the_api_is_not_read() -> None:
    # Stripe no longer sends it (2025-03-31); a payload carrying it must not be trusted for it.
    payload = invoice_finalized({"customer": "cus_9", "subscription": "sub_3", "parent": None})

    event = to_business_event(payload, None)

    assert event.subject.subscription_id is None


def test_an_event_of_another_api_version_is_refused_not_misrouted() -> None:
    """Stripe renders a webhook at its endpoint's version: an endpoint left at a version before
    2025-03-31 names an invoice's subscription at the top level, which this mapping never reads."""
    payload = StripeEventPayload.model_validate(
        {
            **invoice_finalized({"customer": "cus_9", "subscription": "sub_3"}).model_dump(),
            "api_version": "2024-06-20",
        }
    )

    with pytest.raises(UnreadableVersion, match="2024-06-20"):
        to_business_event(payload, None)


def test_an_event_of_the_pinned_version_is_read() -> None:
    payload = StripeEventPayload.model_validate(
        {**invoice_finalized({"customer": "cus_9"}).model_dump(), "api_version": STRIPE_API_VERSION}
    )

    assert to_business_event(payload, None).subject.customer_id == "cus_9"


def billing_event(event_type: str, obj: dict[str, Any], event_id: str = "evt_1Money") -> Any:
    payload = StripeEventPayload.model_validate(
        {"id": event_id, "type": event_type, "created": 1_790_000_100, "data": {"object": obj}}
    )
    return to_business_event(payload, None)


SUBSCRIPTION_INVOICE = {
    "object": "invoice",
    "id": "in_1Pay",
    "customer": "cus_9",
    "number": "ABC-0002",
    "parent": {"type": "subscription_details", "subscription_details": {"subscription": "sub_3"}},
}


@pytest.mark.parametrize(
    "event_type", ["invoice.paid", "invoice.payment_succeeded", "invoice.payment_failed"]
)
def test_invoice_payment_events_feed_the_subscription_ledger_as_invoice_events(
    event_type: str,
) -> None:
    start, *also = route_billing_event(billing_event(event_type, SUBSCRIPTION_INVOICE), ["USD"])

    assert start.workflow_id == "subscription/sub_3"
    # Paid and failed also refresh the customer's entitlements in support.
    assert [a.workflow_id for a in also] == (
        [] if event_type == "invoice.payment_succeeded" else ["account/cus_9"]
    )
    ref = start.signal_input
    assert isinstance(ref, BillingEventRef)
    assert (ref.object_kind, ref.object_id, ref.event_type) == ("invoice", "in_1Pay", event_type)
    assert ref.document_number == "ABC-0002"


def test_a_payment_applied_to_an_invoice_it_leaves_open_feeds_the_invoice_ledger() -> None:
    """A partial payment: billing updates the invoice's amount paid, and sends no invoice.paid."""
    paid_in_part = StripeEventPayload.model_validate(
        {
            "id": "evt_part",
            "type": "invoice.updated",
            "created": 1_790_000_000,
            "data": {
                "object": {**SUBSCRIPTION_INVOICE, "amount_paid": 4000, "amount_remaining": 5000},
                "previous_attributes": {"amount_paid": 0, "amount_remaining": 9000},
            },
        }
    )
    (start,) = route_billing_event(to_business_event(paid_in_part, None), ["USD"])
    assert start.workflow_id == "subscription/sub_3"
    ref = start.signal_input
    assert isinstance(ref, BillingEventRef)
    assert (ref.object_kind, ref.object_id) == ("invoice", "in_1Pay")

    renamed = paid_in_part.model_copy(
        update={"data": {"object": SUBSCRIPTION_INVOICE,
                         "previous_attributes": {"description": None}}}
    )  # fmt: skip
    assert route_billing_event(to_business_event(renamed, None), ["USD"]) == []


def test_charge_refunded_feeds_the_customer_ledger_as_a_charge_event() -> None:
    charge = {
        "object": "charge",
        "id": "ch_1Refunded",
        "customer": "cus_9",
        "payment_intent": "pi_1Paid",
        "amount_refunded": 1500,
    }

    [start] = route_billing_event(billing_event("charge.refunded", charge), ["USD", "EUR"])

    assert start.workflow_id == "customer-ledger/cus_9"
    assert start.input.subscription_id is None
    assert start.input.supported_currencies == ["USD", "EUR"]
    ref = start.signal_input
    assert isinstance(ref, BillingEventRef)
    assert (ref.object_kind, ref.object_id, ref.customer_id) == ("charge", "ch_1Refunded", "cus_9")


def test_charge_refunded_without_a_customer_is_not_routed() -> None:
    # A charge with no customer is no customer's money: there is no ledger to feed.
    charge = {"object": "charge", "id": "ch_1Guest", "customer": None}

    assert route_billing_event(billing_event("charge.refunded", charge), ["USD"]) == []


@pytest.mark.parametrize(
    ("event_type", "obj"),
    [
        (
            "payment_intent.succeeded",
            {"object": "payment_intent", "id": "pi_1", "customer": "cus_9"},
        ),
        (
            "payment_intent.payment_failed",
            {"object": "payment_intent", "id": "pi_1", "customer": "cus_9"},
        ),
        ("charge.succeeded", {"object": "charge", "id": "ch_1", "customer": "cus_9"}),
        ("charge.failed", {"object": "charge", "id": "ch_1", "customer": "cus_9"}),
        (
            "refund.created",
            {"object": "refund", "id": "re_1", "charge": "ch_1", "customer": "cus_9"},
        ),
        (
            "refund.updated",
            {"object": "refund", "id": "re_1", "charge": "ch_1", "customer": "cus_9"},
        ),
        (
            # A pending refund that moved on: the customer's ledger reads the charge again.
            "charge.refund.updated",
            {"object": "refund", "id": "re_1", "charge": "ch_1", "status": "succeeded"},
        ),
        (
            "invoice_payment.paid",
            {"object": "invoice_payment", "id": "inpay_1", "invoice": "in_1Pay"},
        ),
    ],
)
def test_other_money_events_are_acknowledged_and_start_nothing(
    event_type: str, obj: dict[str, Any]
) -> None:
    assert route_billing_event(billing_event(event_type, obj), ["USD"]) == []


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"object": "charge", "id": "ch_1", "customer": "cus_9", "invoice": "in_9"},
         SubjectIds(customer_id="cus_9")),
        ({"object": "refund", "id": "re_1", "charge": "ch_1", "customer": "cus_9"},
         SubjectIds(customer_id="cus_9")),
        ({"object": "payment_intent", "id": "pi_1", "customer": "cus_9", "invoice": "in_9"},
         SubjectIds(customer_id="cus_9")),
        ({"object": "invoice_payment", "id": "inpay_1", "invoice": "in_9"},
         SubjectIds(invoice_id="in_9")),
        ({"object": "charge", "id": "ch_1", "customer": {"id": "cus_9"}}, SubjectIds()),
    ],
)  # fmt: skip
def test_money_objects_name_their_customer_or_invoice(
    obj: dict[str, Any], expected: SubjectIds
) -> None:
    # A charge's or payment intent's top-level `invoice` left the API in 2025-03-31: not read.
    assert subject_of("x.y", obj) == expected


def event(kind: str, obj: dict[str, Any]) -> StripeEventPayload:
    return StripeEventPayload.model_validate(
        {"id": "evt_2Ab", "type": kind, "created": 1_790_000_000, "data": {"object": obj}}
    )


SUBSCRIPTION_PARENT = {
    "type": "subscription_details",
    "quote_details": None,
    "subscription_details": {"subscription": "sub_3", "metadata": {}},
}


def test_a_paid_invoice_feeds_its_ledger_and_asks_account_sync_for_entitlements() -> None:
    payload = event(
        "invoice.paid",
        {"object": "invoice", "id": "in_7", "customer": "cus_9", "parent": SUBSCRIPTION_PARENT},
    )

    starts = route_billing_event(to_business_event(payload, None), ["USD"])

    assert [start.workflow_id for start in starts] == ["subscription/sub_3", "account/cus_9"]
    sync = starts[1].signal_input
    assert sync is not None
    assert (sync.request_id, sync.reason, sync.subscription_id) == (  # type: ignore[attr-defined]
        "evt_2Ab",
        "invoice.paid",
        "sub_3",
    )


def test_a_failed_payment_asks_account_sync_even_where_no_ledger_takes_it() -> None:
    payload = event(
        "invoice.payment_failed",
        {"object": "invoice", "id": "in_7", "customer": "cus_9", "parent": SUBSCRIPTION_PARENT},
    )

    starts = route_billing_event(to_business_event(payload, None), ["USD"])

    assert "account/cus_9" in [start.workflow_id for start in starts]


@pytest.mark.parametrize("kind", ["customer.subscription.updated", "customer.subscription.deleted"])
def test_a_subscription_change_feeds_its_ledger_and_names_the_subscription_to_sync(
    kind: str,
) -> None:
    payload = event(kind, {"object": "subscription", "id": "sub_3", "customer": "cus_9"})

    starts = route_billing_event(to_business_event(payload, None), ["USD"])

    assert [start.workflow_id for start in starts] == ["subscription/sub_3", "account/cus_9"]
    assert starts[1].signal_input.subscription_id == "sub_3"  # type: ignore[union-attr]


def test_a_customer_update_starts_account_sync_only() -> None:
    payload = event("customer.updated", {"object": "customer", "id": "cus_9"})

    starts = route_billing_event(to_business_event(payload, None), ["USD"])

    assert [start.workflow_id for start in starts] == ["account/cus_9"]


def test_an_event_no_process_takes_routes_nowhere() -> None:
    payload = event("invoice.created", {"object": "invoice", "id": "in_7", "customer": "cus_9"})

    assert route_billing_event(to_business_event(payload, None), ["USD"]) == []
