"""Billing-period and proration arithmetic, pure: no clock, no I/O, integer minor units.

Rounding rule: each proration line is rounded on its own from the exact rational amount
`unit_amount * quantity * remaining_seconds / period_seconds`, half to even (banker's
rounding, as `canonical.Money.quantized`). A credit is the negated charge for the same
item and span, so crediting and re-charging the same terms always cancel to the minor unit.
Amounts are minor units of any currency: JPY's minor unit is the yen itself, so nothing
here depends on the currency's exponent.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from typing import Literal

Interval = Literal["day", "week", "month", "year"]
INTERVALS: tuple[Interval, ...] = ("day", "week", "month", "year")
_DAY = 24 * 3600


def prorated_amount(
    unit_amount: int, quantity: int, remaining_seconds: int, period_seconds: int
) -> int:
    """round_half_even(unit_amount * quantity * remaining / period), in minor units."""
    if period_seconds <= 0:
        raise ValueError("a billing period must last at least one second")
    if not 0 <= remaining_seconds <= period_seconds:
        raise ValueError("the remaining time must lie within the period")
    if quantity < 0 or unit_amount < 0:
        raise ValueError("unit amount and quantity must not be negative")
    # round() of a Fraction rounds half to even, exactly (no float anywhere).
    return round(Fraction(unit_amount * quantity * remaining_seconds, period_seconds))


@dataclass(frozen=True)
class ItemTerms:
    """What a subscription item charges per period: price and quantity."""

    price_id: str
    unit_amount: int
    quantity: int


@dataclass(frozen=True)
class ProrationLine:
    """One proration: a credit (negative) for unused time or a charge for remaining time."""

    kind: Literal["unused", "remaining"]
    terms: ItemTerms
    amount: int
    start: int
    end: int


def prorate_change(
    old: ItemTerms | None,
    new: ItemTerms | None,
    *,
    period_start: int,
    period_end: int,
    proration_date: int,
) -> list[ProrationLine]:
    """Stripe's prorations for changing an item from `old` to `new` at `proration_date`.

    None means the item is added (no old) or removed (no new). The credit for the unused
    time on the old terms comes first, then the charge for the remaining time on the new.
    Nothing is left to prorate at the very end of the period, or when nothing changed.
    """
    if period_end <= period_start:
        raise ValueError("a billing period must last at least one second")
    if not period_start <= proration_date <= period_end:
        raise ValueError("the proration date must lie within the current period")
    remaining = period_end - proration_date
    if remaining == 0 or old == new:
        return []
    period = period_end - period_start
    lines: list[ProrationLine] = []
    if old is not None and old.quantity > 0:
        credit = prorated_amount(old.unit_amount, old.quantity, remaining, period)
        lines.append(ProrationLine("unused", old, -credit, proration_date, period_end))
    if new is not None and new.quantity > 0:
        charge = prorated_amount(new.unit_amount, new.quantity, remaining, period)
        lines.append(ProrationLine("remaining", new, charge, proration_date, period_end))
    return lines


def add_intervals(anchor: int, interval: Interval, interval_count: int, periods: int) -> int:
    """The instant `periods` billing intervals after `anchor` (unix seconds, UTC).

    Months and years count from the anchor, keeping its day of month and clamping to the
    month's last day (anchor Jan 31: Feb 28 or 29, then Mar 31), so periods never drift.
    """
    if interval_count < 1 or periods < 0:
        raise ValueError("interval_count must be >= 1 and periods >= 0")
    steps = interval_count * periods
    if interval == "day":
        return anchor + steps * _DAY
    if interval == "week":
        return anchor + steps * 7 * _DAY
    if interval not in ("month", "year"):
        raise ValueError(f"unknown interval {interval!r}")
    months = steps * (12 if interval == "year" else 1)
    start = datetime.fromtimestamp(anchor, UTC)
    year, month_index = divmod(start.year * 12 + (start.month - 1) + months, 12)
    month = month_index + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return int(start.replace(year=year, month=month, day=day).timestamp())


def billing_period(
    anchor: int, interval: Interval, interval_count: int, cycle: int
) -> tuple[int, int]:
    """[start, end) of billing cycle number `cycle` (0 = the first) from the anchor."""
    return (
        add_intervals(anchor, interval, interval_count, cycle),
        add_intervals(anchor, interval, interval_count, cycle + 1),
    )


__all__ = [
    "INTERVALS",
    "Interval",
    "ItemTerms",
    "ProrationLine",
    "add_intervals",
    "billing_period",
    "prorate_change",
    "prorated_amount",
]
