"""Stripe webhook events -> the canonical BusinessEvent envelope."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from adapters.billing.stripe import STRIPE_API_VERSION, invoice_subscription_id
from canonical import BusinessEvent, SubjectIds


class StripeEventPayload(BaseModel):
    """The parts of a Stripe event ledgerbridge relies on; anything else is carried along."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, max_length=255)
    type: str = Field(min_length=1, max_length=120)
    created: int = Field(ge=0)
    data: dict[str, Any]
    # Stripe renders an event at its endpoint's (or the account's) version, not the caller's.
    api_version: str | None = Field(default=None, max_length=64)


def subject_of(event_type: str, obj: dict[str, Any]) -> SubjectIds:
    """The business ids a Stripe object names, by the object's kind (fields of the pinned
    API version only: an invoice names its subscription under `parent`)."""
    kind = obj.get("object") or event_type.split(".", 1)[0]
    oid = obj.get("id") if isinstance(obj.get("id"), str) else None
    customer = obj.get("customer") if isinstance(obj.get("customer"), str) else None
    if kind == "customer":
        return SubjectIds(customer_id=oid)
    if kind == "subscription":
        return SubjectIds(customer_id=customer, subscription_id=oid)
    if kind == "invoice":
        return SubjectIds(
            customer_id=customer, subscription_id=invoice_subscription_id(obj), invoice_id=oid
        )
    if kind == "credit_note":
        inv = obj.get("invoice") if isinstance(obj.get("invoice"), str) else None
        return SubjectIds(customer_id=customer, invoice_id=inv, credit_note_id=oid)
    if kind == "invoice_payment":
        # It names its invoice, not its customer (the invoice does).
        inv = obj.get("invoice") if isinstance(obj.get("invoice"), str) else None
        return SubjectIds(invoice_id=inv)
    # A charge, refund or payment intent names its customer only; the invoice it paid left
    # charges and payment intents in 2025-03-31 (invoice payments link them now).
    return SubjectIds(customer_id=customer)


class UnreadableVersion(ValueError):
    """An event rendered at another API version than the one the mapping reads."""


def to_business_event(payload: StripeEventPayload, correlation_id: str | None) -> BusinessEvent:
    """The canonical envelope; UnreadableVersion for an event of another API version, whose
    fields (e.g. where an invoice names its subscription) would be misread."""
    if payload.api_version is not None and payload.api_version != STRIPE_API_VERSION:
        raise UnreadableVersion(
            f"event rendered at Stripe API version {payload.api_version}; ledgerbridge reads "
            f"{STRIPE_API_VERSION}: create the webhook endpoint with that api_version"
        )
    obj = payload.data.get("object")
    if not isinstance(obj, dict):
        raise ValueError("event data.object must be an object")
    return BusinessEvent(
        event_id=payload.id,
        type=payload.type,
        source="billing",
        occurred_at=datetime.fromtimestamp(payload.created, UTC),
        correlation_id=correlation_id or payload.id,
        subject=subject_of(payload.type, obj),
        data=payload.data,
    )
