"""Stripe webhook events -> the canonical BusinessEvent envelope."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from canonical import BusinessEvent, SubjectIds


class StripeEventPayload(BaseModel):
    """The parts of a Stripe event ledgerbridge relies on; anything else is carried along."""

    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, max_length=255)
    type: str = Field(min_length=1, max_length=120)
    created: int = Field(ge=0)
    data: dict[str, Any]


def subject_of(event_type: str, obj: dict[str, Any]) -> SubjectIds:
    """The business ids a Stripe object names, by the object's kind."""
    kind = obj.get("object") or event_type.split(".", 1)[0]
    oid = obj.get("id") if isinstance(obj.get("id"), str) else None
    customer = obj.get("customer") if isinstance(obj.get("customer"), str) else None
    if kind == "customer":
        return SubjectIds(customer_id=oid)
    if kind == "subscription":
        return SubjectIds(customer_id=customer, subscription_id=oid)
    if kind == "invoice":
        # Under parent.subscription_details since API version 2025-03-31.
        details = (obj.get("parent") or {}).get("subscription_details") or {}
        sub = details.get("subscription") if isinstance(details.get("subscription"), str) else None
        return SubjectIds(customer_id=customer, subscription_id=sub, invoice_id=oid)
    if kind == "credit_note":
        inv = obj.get("invoice") if isinstance(obj.get("invoice"), str) else None
        return SubjectIds(customer_id=customer, invoice_id=inv, credit_note_id=oid)
    return SubjectIds(customer_id=customer)


def to_business_event(payload: StripeEventPayload, correlation_id: str | None) -> BusinessEvent:
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
