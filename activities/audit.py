"""Audit trail activities: every decision appended to the store (append-only)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._system import SystemActivities
from adapters.events.envelope import EventTooLarge
from adapters.store import IntegrationStore


class AuditRecordInput(BaseModel):
    actor: str
    role: str
    action: str
    subject: str
    reason: str | None = None
    amount: Decimal | None = None
    currency: str | None = None
    correlation_id: str | None = None
    details: dict[str, Any] = {}


class AuditActivities(SystemActivities):
    system = "store"

    def __init__(self, store: IntegrationStore) -> None:
        self._store = store

    @activity.defn(name="append_audit")
    def append_audit(self, record: AuditRecordInput) -> int:
        try:
            return self._store.append_audit(**record.model_dump())
        except EventTooLarge as err:  # its event would be truncated: nothing is recorded
            raise ApplicationError(str(err), type="EventTooLarge", non_retryable=True) from err
