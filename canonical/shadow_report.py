"""The shadow report: while an entity is in shadow, what its book of record (the legacy ERP)
holds against what the target ERP holds, for the documents, payments and refunds the
journal booked for the entity on one day. Every document or total that differs is listed;
an entity goes to cutover only on a clean report (starters/api/erp_routing.py).

Pure: the shadow report workflow compares with it, the API and the CLI show its result.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from canonical.money import Money

# A shadow posting the target refused or never answered: its ERP document id starts with this.
SHADOW_FAILED_PREFIX = "failed:"
RecordKind = Literal["invoice", "credit_note", "payment", "refund"]
Problem = Literal["missing_in_target", "missing_in_book", "total_differs", "kind_differs"]


class ErpRecord(BaseModel):
    """A document, payment or refund as one ERP holds it (None where it holds nothing)."""

    model_config = ConfigDict(frozen=True)

    reference: str
    kind: RecordKind
    total: Money
    erp_number: str | None = None


class RecordToCompare(BaseModel):
    """What the journal booked for the entity: the reference and its kind."""

    model_config = ConfigDict(frozen=True)

    reference: str
    kind: RecordKind


class ShadowDifference(BaseModel):
    model_config = ConfigDict(frozen=True)

    reference: str
    kind: RecordKind
    problem: Problem
    book: Money | None
    target: Money | None


class ShadowReport(BaseModel):
    entity: str
    day: date
    book_erp: str
    target_erp: str
    compared: int = Field(description="documents, payments and refunds compared")
    differences: list[ShadowDifference]
    made_at: datetime

    @property
    def clean(self) -> bool:
        return not self.differences


def shadow_differences(
    booked: list[RecordToCompare], book: dict[str, ErpRecord], target: dict[str, ErpRecord]
) -> list[ShadowDifference]:
    """Each record the journal booked, as the book and the target hold it: missing from
    either, of another kind, or of another total (to the minor unit, in its currency)."""
    differences = []
    for record in booked:
        in_book, in_target = book.get(record.reference), target.get(record.reference)
        problem: Problem | None = None
        if in_book is None:
            problem = "missing_in_book"
        elif in_target is None:
            problem = "missing_in_target"
        elif in_book.kind != in_target.kind:
            problem = "kind_differs"
        elif in_book.total != in_target.total:
            problem = "total_differs"
        if problem is not None:
            differences.append(ShadowDifference(
                reference=record.reference, kind=record.kind, problem=problem,
                book=in_book.total if in_book else None,
                target=in_target.total if in_target else None,
            ))  # fmt: skip
    return differences


class ShadowScope(BaseModel):
    """What one entity's report compares: the records it sent to its target on the day, and
    the queues of its two ERPs."""

    entity: str
    day: date
    book_erp: str
    book_queue: str
    target_erp: str
    target_queue: str
    records: list[RecordToCompare]


class ShadowReportInput(BaseModel):
    """What the shadow report workflow starts with (here, not in the workflow's module, so
    the sandbox does not build the model again for every run it holds)."""

    entity: str | None = None  # None: each entity in shadow
    day: date | None = None  # None: the UTC day before the run starts (the schedule's case)


class ShadowReportResult(BaseModel):
    reports: list[ShadowReport]
