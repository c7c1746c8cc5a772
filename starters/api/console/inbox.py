"""The console's inbox: credits waiting for approval and open exceptions as one list, read
through the same functions as `/v1/approvals` and `/v1/exceptions`, filtered, sorted and
counted for the page."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import urlencode

from pydantic import BaseModel, Field, field_validator

from canonical import Money
from canonical.ledger import LEDGER_PROCESS
from starters.api import credits, finance
from starters.api.shapes import STRIPE_CUSTOMER_ID
from starters.api.temporal import TemporalConnection

REMINDED_HOURS = 24
ESCALATED_HOURS = 72
CREDIT_PROCESS = "case_to_credit"
# The processes that wait for finance (each opens exceptions; credits also wait for approval).
PROCESSES = (LEDGER_PROCESS, CREDIT_PROCESS, "reconciliation")


class InboxFilters(BaseModel):
    """The inbox form, held to the API's own shapes (a billing customer id, ages and amounts
    in range) before any of it reaches a visibility query."""

    customer: str | None = Field(default=None, pattern=STRIPE_CUSTOMER_ID)
    process: str | None = Field(default=None, pattern=r"^[a-z_]{1,40}$")
    kind: Literal["approval", "exception"] | None = None
    # At most 100 years, as the API: further back than datetime.min is no filter.
    min_age_hours: float | None = Field(default=None, ge=0, le=876_000)
    min_amount: Decimal | None = Field(default=None, ge=0, le=Decimal("1e15"))
    sort: Literal["age", "amount", "customer", "process"] = "age"
    order: Literal["asc", "desc"] = "desc"

    @field_validator("customer", "process", "kind", "min_age_hours", "min_amount", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    def query_string(self) -> str:
        shown = {k: v for k, v in self.model_dump(mode="json").items() if v is not None}
        return urlencode(shown)


@dataclass(frozen=True)
class InboxRow:
    kind: str  # approval | exception
    item_id: str
    status: str
    process: str
    customer_id: str | None
    amount: Money | None
    asked: str
    why: str
    opened_at: datetime
    age_hours: float

    @property
    def age_class(self) -> str:
        if self.age_hours >= ESCALATED_HOURS:
            return "age-72"
        if self.age_hours >= REMINDED_HOURS:
            return "age-24"
        return ""


@dataclass(frozen=True)
class Inbox:
    rows: list[InboxRow]
    approvals: int
    exceptions: int
    over_24h: int
    over_72h: int


async def read_inbox(temporal: TemporalConnection, filters: InboxFilters) -> Inbox:
    want_approvals = filters.kind in (None, "approval") and filters.process in (
        None,
        CREDIT_PROCESS,
    )
    want_exceptions = filters.kind in (None, "exception")
    approvals, exceptions = await asyncio.gather(
        credits.pending_approvals(temporal, filters.customer, filters.min_age_hours)
        if want_approvals
        else _nothing_approvals(),
        finance.open_exceptions(temporal, filters.process, filters.customer, filters.min_age_hours)
        if want_exceptions
        else _nothing_exceptions(),
    )
    rows = [_approval_row(a) for a in approvals] + [_exception_row(e) for e in exceptions]
    if filters.min_amount is not None:
        floor = filters.min_amount
        rows = [r for r in rows if r.amount is not None and r.amount.amount >= floor]
    rows.sort(key=_sort_key(filters.sort), reverse=filters.order == "desc")
    return Inbox(
        rows=rows,
        approvals=sum(r.kind == "approval" for r in rows),
        exceptions=sum(r.kind == "exception" for r in rows),
        over_24h=sum(r.age_hours >= REMINDED_HOURS for r in rows),
        over_72h=sum(r.age_hours >= ESCALATED_HOURS for r in rows),
    )


async def _nothing_approvals() -> list[credits.ApprovalSummary]:
    return []


async def _nothing_exceptions() -> list[finance.ExceptionSummary]:
    return []


def _sort_key(sort: str) -> Callable[[InboxRow], tuple[Any, str]]:
    keys: dict[str, Callable[[InboxRow], Any]] = {
        "amount": lambda r: r.amount.amount if r.amount else Decimal(-1),
        "customer": lambda r: r.customer_id or "",
        "process": lambda r: r.process,
        "age": lambda r: r.age_hours,
    }
    key = keys[sort]
    return lambda row: (key(row), row.item_id)


def _approval_row(item: credits.ApprovalSummary) -> InboxRow:
    return InboxRow(
        kind="approval",
        item_id=item.credit_id,
        status=item.status,
        process=CREDIT_PROCESS,
        customer_id=item.customer_id,
        amount=item.amount,
        asked="approve | reject" if item.status != "unreadable" else "-",
        why="; ".join(item.why) if item.why else item.reason,
        opened_at=item.opened_at,
        age_hours=item.age_hours,
    )


def _exception_row(item: finance.ExceptionSummary) -> InboxRow:
    return InboxRow(
        kind="exception",
        item_id=item.exception_id,
        status=item.status,
        process=item.process,
        customer_id=item.customer_id,
        amount=item.amount,
        asked=item.asked,
        why=item.error,
        opened_at=item.opened_at,
        age_hours=item.age_hours,
    )
