"""The console's inbox: credits waiting for approval and open exceptions as one list, read
through the same functions as `/v1/approvals` and `/v1/exceptions`, filtered, sorted and
counted for the page."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
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
from starters.api.temporal import ItemsPage, TemporalConnection

REMINDED_HOURS = 24
ESCALATED_HOURS = 72
CREDIT_PROCESS = "case_to_credit"
# The processes that wait for finance (each opens exceptions; credits also wait for approval).
PROCESSES = (LEDGER_PROCESS, CREDIT_PROCESS, "reconciliation")
PAGE_SIZE = 100  # of each list: a page shows up to 100 approvals and 100 exceptions


LIST_PAGE = r"^([A-Za-z0-9_\-=]{1,2000}|end)$"
END = "end"  # a list read to its end: the following pages show none of it


class InboxFilters(BaseModel):
    """The inbox form, held to the API's own shapes (a billing customer id, ages and amounts
    in range) before any of it reaches a visibility query, and where the page stands."""

    customer: str | None = Field(default=None, pattern=STRIPE_CUSTOMER_ID)
    process: str | None = Field(default=None, pattern=r"^[a-z_]{1,40}$")
    kind: Literal["approval", "exception"] | None = None
    # At most 100 years, as the API: further back than datetime.min is no filter.
    min_age_hours: float | None = Field(default=None, ge=0, le=876_000)
    min_amount: Decimal | None = Field(default=None, ge=0, le=Decimal("1e15"))
    sort: Literal["age", "amount", "customer", "process"] = "age"
    order: Literal["asc", "desc"] = "desc"
    # Visibility's page tokens of each list, and the pages before this one (for "previous").
    approvals_page: str | None = Field(default=None, pattern=LIST_PAGE)
    exceptions_page: str | None = Field(default=None, pattern=LIST_PAGE)
    back: str | None = Field(default=None, max_length=40_000, pattern=r"^[A-Za-z0-9_\-=~.]+$")

    @field_validator(
        "customer", "process", "kind", "min_age_hours", "min_amount", "approvals_page",
        "exceptions_page", "back", mode="before",
    )  # fmt: skip
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    def query_string(self, **page: str | None) -> str:
        """The filters (and this page, or the one given) as a query string."""
        shown = self.model_dump(mode="json") | page
        return urlencode({k: v for k, v in shown.items() if v is not None})

    def next_query(self, inbox: Inbox) -> str | None:
        if not (inbox.approvals_next or inbox.exceptions_next):
            return None
        here = f"{self.approvals_page or ''}~{self.exceptions_page or ''}"
        return self.query_string(
            approvals_page=inbox.approvals_next or END,
            exceptions_page=inbox.exceptions_next or END,
            back=f"{self.back}.{here}" if self.back else here,
        )

    def previous_query(self) -> str | None:
        if not self.back:
            return None
        *earlier, last = self.back.split(".")
        approvals, _, exceptions = last.partition("~")
        return self.query_string(
            approvals_page=approvals or None,
            exceptions_page=exceptions or None,
            back=".".join(earlier) or None,
        )


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
    """One page of rows; the counts are of every item under the filters, not the page's."""

    rows: list[InboxRow]
    approvals: int
    exceptions: int
    over_24h: int
    over_72h: int
    approvals_next: str | None = None
    exceptions_next: str | None = None

    @property
    def total(self) -> int:
        return self.approvals + self.exceptions


async def read_inbox(temporal: TemporalConnection, filters: InboxFilters) -> Inbox:
    """A page of each list (visibility alone, through the API's own read functions), with
    the counts of all: the page's rows sorted by the form's sort."""
    want_approvals = filters.kind in (None, "approval") and filters.process in (
        None,
        CREDIT_PROCESS,
    )
    want_exceptions = filters.kind in (None, "exception")
    customer, amount, age = filters.customer, filters.min_amount, filters.min_age_hours
    nothing = ItemsPage[Any]([], None, 0), [0, 0]
    approvals = (
        _list_and_count(
            filters,
            filters.approvals_page,
            lambda token: credits.pending_approvals(
                temporal, customer, age, min_amount=amount, page_size=PAGE_SIZE, page_token=token
            ),
            lambda hours: credits.count_approvals(temporal, customer, hours, amount),
        )
        if want_approvals
        else _nothing(nothing)
    )
    exceptions = (
        _list_and_count(
            filters,
            filters.exceptions_page,
            lambda token: finance.open_exceptions(
                temporal,
                filters.process,
                customer,
                age,
                min_amount=amount,
                page_size=PAGE_SIZE,
                page_token=token,
            ),
            lambda hours: finance.count_exceptions(
                temporal, filters.process, customer, hours, amount
            ),
        )
        if want_exceptions
        else _nothing(nothing)
    )
    (approval_page, approvals_older), (exception_page, exceptions_older) = await asyncio.gather(
        approvals, exceptions
    )
    rows = [_approval_row(a) for a in approval_page.items]
    rows += [_exception_row(e) for e in exception_page.items]
    rows.sort(key=_sort_key(filters.sort), reverse=filters.order == "desc")
    return Inbox(
        rows=rows,
        approvals=approval_page.total,
        exceptions=exception_page.total,
        over_24h=approvals_older[0] + exceptions_older[0],
        over_72h=approvals_older[1] + exceptions_older[1],
        approvals_next=approval_page.next_token,
        exceptions_next=exception_page.next_token,
    )


async def _list_and_count(
    filters: InboxFilters,
    page_token: str | None,
    read_page: Callable[[str | None], Awaitable[ItemsPage[Any]]],
    count: Callable[[float | None], Awaitable[int]],
) -> tuple[ItemsPage[Any], list[int]]:
    """A page of one list and its counts over 24 h and 72 h, side by side; a list already
    read to its end is counted, not listed."""
    if page_token == END:
        total, older = await asyncio.gather(count(filters.min_age_hours), _older(filters, count))
        return ItemsPage([], None, total), older
    return await asyncio.gather(read_page(page_token), _older(filters, count))


async def _nothing(
    nothing: tuple[ItemsPage[Any], list[int]],
) -> tuple[ItemsPage[Any], list[int]]:
    return nothing


async def _older(
    filters: InboxFilters, count: Callable[[float | None], Awaitable[int]]
) -> list[int]:
    """The counts over 24 h and over 72 h under the filters (an age filter may ask more)."""
    floor = filters.min_age_hours or 0
    return list(
        await asyncio.gather(*(count(max(h, floor)) for h in (REMINDED_HOURS, ESCALATED_HOURS)))
    )


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
