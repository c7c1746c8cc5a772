"""The audit trail as finance searches it: by actor, action, customer and date, newest first,
and the same rows as CSV.

Audit rows name their subject (a workflow id), not always the customer, so a customer's rows
are those whose subject is one of the customer's workflows in Temporal's visibility (credits,
exceptions, account syncs carry the CustomerId search attribute, open or closed) or whose
subject or details name the customer id.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from pydantic import BaseModel, Field, field_validator
from sqlalchemy import String, cast, or_, select
from temporalio.service import RPCError

from adapters.store import IntegrationStore
from adapters.store.models import AuditEntry
from starters.api.shapes import STRIPE_CUSTOMER_ID
from starters.api.temporal import TemporalConnection, TemporalUnavailable

_NUMBER = re.compile(r"^-?[0-9]+(\.[0-9]+)?$")
ROW_LIMIT = 500
WORKFLOW_LIMIT = 1000
CSV_COLUMNS = (
    "id", "occurred_at", "actor", "role", "action", "subject", "reason", "amount", "currency",
    "correlation_id", "details",
)  # fmt: skip


class AuditFilters(BaseModel):
    actor: str | None = Field(default=None, max_length=128)
    action: str | None = Field(default=None, pattern=r"^[a-z_.]{1,64}$")
    customer: str | None = Field(default=None, pattern=STRIPE_CUSTOMER_ID)
    since: date | None = None
    until: date | None = None

    @field_validator("actor", "action", "customer", "since", "until", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip()
            return value or None
        return value


async def customer_subjects(temporal: TemporalConnection, customer_id: str) -> list[str]:
    """Ids of the workflows Temporal's visibility ties to `customer_id` (the id is already
    checked to billing's shape before it is pasted into the query)."""
    client = await temporal.client()
    query = f"CustomerId = '{customer_id}'"
    try:
        return [e.id async for e in client.list_workflows(query, limit=WORKFLOW_LIMIT)]
    except RPCError as err:
        raise TemporalUnavailable(str(err)) from err


def search(
    store: IntegrationStore, filters: AuditFilters, subjects: Sequence[str] = ()
) -> list[AuditEntry]:
    """Audit rows matching `filters`, newest first; `subjects`: the customer's workflows."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(ROW_LIMIT)
    if filters.actor:
        query = query.where(AuditEntry.actor == filters.actor)
    if filters.action:
        # "exception." finds every exception decision; "exception.reject" one kind.
        if filters.action.endswith("."):
            query = query.where(AuditEntry.action.startswith(filters.action, autoescape=True))
        else:
            query = query.where(AuditEntry.action == filters.action)
    if filters.customer:
        mentions = [
            AuditEntry.subject.contains(filters.customer, autoescape=True),
            cast(AuditEntry.details, String).contains(filters.customer, autoescape=True),
        ]
        if subjects:
            mentions.append(AuditEntry.subject.in_(list(subjects)))
        query = query.where(or_(*mentions))
    if filters.since:
        query = query.where(AuditEntry.occurred_at >= _start_of(filters.since))
    if filters.until:
        query = query.where(AuditEntry.occurred_at < _start_of(filters.until + timedelta(days=1)))
    with store.session() as session:
        rows = list(session.scalars(query))
        session.expunge_all()
        return rows


def entries_of(store: IntegrationStore, subjects: Sequence[str]) -> list[AuditEntry]:
    """The audit rows of one case (its workflow and the one it came from), oldest first."""
    query = select(AuditEntry).where(AuditEntry.subject.in_(list(subjects))).order_by(AuditEntry.id)
    with store.session() as session:
        rows = list(session.scalars(query))
        session.expunge_all()
        return rows


def as_csv(entries: Sequence[AuditEntry]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for entry in entries:
        writer.writerow([_cell(value) for value in _values(entry)])
    return out.getvalue()


def _values(entry: AuditEntry) -> list[Any]:
    return [
        entry.id, entry.occurred_at.isoformat(), entry.actor, entry.role, entry.action,
        entry.subject, entry.reason or "", "" if entry.amount is None else str(entry.amount),
        entry.currency or "", entry.correlation_id or "",
        json.dumps(entry.details or {}, sort_keys=True),
    ]  # fmt: skip


def _cell(value: Any) -> str:
    """A cell a spreadsheet shows as text: one starting with = + - @ (a formula) is quoted."""
    text = str(value)
    if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _NUMBER.match(text):
        return f"'{text}"
    return text


def _start_of(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)
