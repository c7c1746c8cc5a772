"""Support cases as ledgerbridge understands them (a Zendesk ticket)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from canonical.money import Money


class CreditAsk(BaseModel):
    """The credit an agent filled in on the ticket's custom fields."""

    model_config = ConfigDict(frozen=True)

    amount: Money
    reason: str
    incident_reference: str | None = None


class SupportCase(BaseModel):
    SCHEMA_VERSION: ClassVar[int] = 1
    model_config = ConfigDict(frozen=True)

    case_id: str
    organization_id: str | None = Field(description="the requester's organization in support")
    customer_id: str | None = Field(
        default=None, description="the organization's external id: the canonical customer id"
    )
    subject: str
    status: str
    priority: str | None = None
    tags: list[str] = []
    assignee_id: str | None = None
    credit: CreditAsk | None = None
    updated_at: AwareDatetime
