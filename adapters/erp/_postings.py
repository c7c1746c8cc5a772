"""What every Ledger adapter does the same way around a posting and a page request."""

from __future__ import annotations

import asyncio
import datetime as dt
import weakref

from adapters.errors import ValidationError
from canonical import LedgerPosting, PaymentPosting

SYSTEM = "erp"


class PostingLocks:
    """One posting per reference at a time in this process: a second call for the same
    reference waits for the first, then finds what it left."""

    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def of(self, reference: str) -> asyncio.Lock:
        lock = self._locks.get(reference)
        if lock is None:
            lock = self._locks[reference] = asyncio.Lock()
        return lock


def refuse_unmapped(posting: LedgerPosting | PaymentPosting, operation: str) -> None:
    """ValidationError naming what finance's mapping has not told the ERP's names of yet."""
    unmapped = posting.unmapped()
    if unmapped:
        raise ValidationError(
            f"{posting.reference} is not mapped to the ERP's books: {'; '.join(unmapped)}",
            system=SYSTEM,
            operation=operation,
        )


def check_limit(limit: int, operation: str) -> None:
    if limit < 1:
        raise ValidationError(
            f"page limit must be at least 1, not {limit}", system=SYSTEM, operation=operation
        )


def check_page(date_from: dt.date, date_to: dt.date, limit: int, operation: str) -> None:
    check_limit(limit, operation)
    if date_from > date_to:
        raise ValidationError(
            f"date range {date_from}..{date_to} is empty", system=SYSTEM, operation=operation
        )


def cursor_id(cursor: str | None, operation: str) -> int:
    """The last id a previous page returned (0 before the first page)."""
    if cursor is None:
        return 0
    try:
        return int(cursor)
    except ValueError:
        raise ValidationError(
            f"not an ERP document page cursor: {cursor!r}", system=SYSTEM, operation=operation
        ) from None


__all__ = ["PostingLocks", "check_limit", "check_page", "cursor_id", "refuse_unmapped"]
