"""The BusinessEvent envelope: how every trigger enters ledgerbridge."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

EventSource = Literal["billing", "support", "erp", "ledgerbridge"]


class SubjectIds(BaseModel):
    """The business ids an event is about; each optional, all searchable."""

    model_config = ConfigDict(frozen=True)

    customer_id: str | None = None
    subscription_id: str | None = None
    invoice_id: str | None = None
    credit_note_id: str | None = None
    case_id: str | None = None


class BusinessEvent(BaseModel):
    """A fact from one of the systems, normalised: who said what happened, when, about whom."""

    SCHEMA_VERSION: ClassVar[int] = 1
    model_config = ConfigDict(frozen=True)

    event_id: str = Field(min_length=1, max_length=255)
    type: str = Field(min_length=1, max_length=120, description="e.g. customer.updated")
    source: EventSource
    occurred_at: AwareDatetime
    correlation_id: str = Field(min_length=1, max_length=255)
    schema_version: int = Field(default=1, ge=1)
    subject: SubjectIds = Field(default_factory=SubjectIds)
    data: dict[str, Any] = Field(default_factory=dict)
