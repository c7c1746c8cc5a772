"""Unit: the billing sandbox's proration and billing-period arithmetic (pure functions)."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from sandbox.billing._proration import (
    ItemTerms,
    add_intervals,
    billing_period,
    prorate_change,
    prorated_amount,
)

DAY = 24 * 3600


def ts(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp())  # type: ignore[misc]


def when(timestamp: int) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


PRO = ItemTerms("price_pro", 3000, 1)
TEAM = ItemTerms("price_team", 9000, 1)
JANUARY = billing_period(ts(2027, 1, 1), "month", 1, 0)  # 31 days


# prorated_amount --------------------------------------------------------------------------


def test_half_of_the_period_left_is_half_the_amount() -> None:
    assert prorated_amount(3000, 1, 15 * DAY, 30 * DAY) == 1500


def test_amount_scales_with_quantity_before_rounding() -> None:
    # 3 x 1000 x 1/3 is exactly 1000; rounding per unit (333 x 3 = 999) would lose a cent.
    assert prorated_amount(1000, 3, 10 * DAY, 30 * DAY) == 1000


@pytest.mark.parametrize(
    ("unit_amount", "remaining", "period", "expected"),
    [
        (1, 1, 2, 0),  # 0.5 rounds to the even 0
        (3, 1, 2, 2),  # 1.5 rounds to the even 2
        (5, 1, 2, 2),  # 2.5 rounds to the even 2
        (7, 1, 2, 4),  # 3.5 rounds to the even 4
        (1000, 1, 3, 333),  # 333.33 rounds down
        (2000, 1, 3, 667),  # 666.67 rounds up
    ],
)
def test_rounding_is_half_to_even_on_the_exact_fraction(
    unit_amount: int, remaining: int, period: int, expected: int
) -> None:
    assert prorated_amount(unit_amount, 1, remaining, period) == expected


def test_nothing_left_is_zero_and_everything_left_is_the_full_amount() -> None:
    assert prorated_amount(3000, 2, 0, 30 * DAY) == 0
    assert prorated_amount(3000, 2, 30 * DAY, 30 * DAY) == 6000


@pytest.mark.parametrize(
    ("unit_amount", "quantity", "remaining", "period"),
    [(100, 1, 1, 0), (100, 1, -1, 10), (100, 1, 11, 10), (-1, 1, 1, 10), (100, -1, 1, 10)],
)
def test_impossible_inputs_are_refused(
    unit_amount: int, quantity: int, remaining: int, period: int
) -> None:
    with pytest.raises(ValueError):
        prorated_amount(unit_amount, quantity, remaining, period)


# prorate_change ---------------------------------------------------------------------------


def test_mid_cycle_upgrade_credits_unused_time_and_charges_remaining_time() -> None:
    start, end = JANUARY
    on = ts(2027, 1, 16)  # 16 of 31 days left

    credit, charge = prorate_change(
        PRO, TEAM, period_start=start, period_end=end, proration_date=on
    )

    assert (credit.kind, credit.terms, credit.amount) == ("unused", PRO, -1548)  # 1548.39
    assert (charge.kind, charge.terms, charge.amount) == ("remaining", TEAM, 4645)  # 4645.16
    assert credit.start == charge.start == on and credit.end == charge.end == end


def test_downgrade_nets_to_a_credit() -> None:
    start, end = JANUARY
    lines = prorate_change(
        TEAM, PRO, period_start=start, period_end=end, proration_date=ts(2027, 1, 16)
    )

    assert sum(line.amount for line in lines) == -4645 + 1548


def test_change_at_the_first_second_prorates_the_whole_period() -> None:
    start, end = JANUARY
    credit, charge = prorate_change(
        PRO, TEAM, period_start=start, period_end=end, proration_date=start
    )

    assert (credit.amount, charge.amount) == (-3000, 9000)


def test_change_at_the_last_second_prorates_one_second() -> None:
    start, end = JANUARY
    credit, charge = prorate_change(
        PRO, TEAM, period_start=start, period_end=end, proration_date=end - 1
    )

    # 3000 / 2678400 s and 9000 / 2678400 s both round to nothing, but the lines remain.
    assert (credit.amount, charge.amount) == (0, 0)
    assert credit.start == end - 1


def test_change_at_the_period_end_prorates_nothing() -> None:
    start, end = JANUARY
    assert prorate_change(PRO, TEAM, period_start=start, period_end=end, proration_date=end) == []


def test_quantity_change_credits_old_quantity_and_charges_new_quantity() -> None:
    start, end = 0, 30 * DAY
    old, new = ItemTerms("price_seat", 1000, 2), ItemTerms("price_seat", 1000, 5)

    credit, charge = prorate_change(
        old, new, period_start=start, period_end=end, proration_date=20 * DAY
    )

    assert (credit.amount, charge.amount) == (-667, 1667)  # 666.67 and 1666.67
    assert (credit.terms.quantity, charge.terms.quantity) == (2, 5)


def test_unchanged_terms_prorate_nothing() -> None:
    assert prorate_change(PRO, PRO, period_start=0, period_end=10, proration_date=5) == []


def test_added_item_is_only_charged_and_removed_item_only_credited() -> None:
    [charge] = prorate_change(None, PRO, period_start=0, period_end=10, proration_date=5)
    [credit] = prorate_change(PRO, None, period_start=0, period_end=10, proration_date=5)

    assert (charge.kind, charge.amount) == ("remaining", 1500)
    assert (credit.kind, credit.amount) == ("unused", -1500)


def test_zero_quantity_makes_no_line() -> None:
    empty = ItemTerms("price_pro", 3000, 0)
    [charge] = prorate_change(empty, PRO, period_start=0, period_end=10, proration_date=5)

    assert charge.kind == "remaining"


def test_yen_is_prorated_in_whole_yen() -> None:
    # JPY has no decimals: minor units are yen, so 10 of 30 days of 1000 JPY is 333 JPY.
    start, end = 0, 30 * DAY
    old, new = ItemTerms("price_jp_basic", 1000, 1), ItemTerms("price_jp_plus", 2000, 1)

    credit, charge = prorate_change(
        old, new, period_start=start, period_end=end, proration_date=20 * DAY
    )

    assert (credit.amount, charge.amount) == (-333, 667)
    assert credit.amount + charge.amount == 334


def test_changing_and_changing_back_always_nets_to_zero() -> None:
    rng = random.Random(20261127)
    for _ in range(500):
        period = rng.randint(1, 366 * DAY)
        on = rng.randint(0, period)
        a = ItemTerms("price_a", rng.randint(0, 10**6), rng.randint(0, 50))
        b = ItemTerms("price_b", rng.randint(0, 10**6), rng.randint(0, 50))
        there = prorate_change(a, b, period_start=0, period_end=period, proration_date=on)
        back = prorate_change(b, a, period_start=0, period_end=period, proration_date=on)
        assert sum(line.amount for line in there + back) == 0


def test_proration_date_outside_the_period_is_refused() -> None:
    with pytest.raises(ValueError, match="within the current period"):
        prorate_change(PRO, TEAM, period_start=10, period_end=20, proration_date=9)
    with pytest.raises(ValueError, match="within the current period"):
        prorate_change(PRO, TEAM, period_start=10, period_end=20, proration_date=21)
    with pytest.raises(ValueError, match="at least one second"):
        prorate_change(PRO, TEAM, period_start=10, period_end=10, proration_date=10)


# billing periods --------------------------------------------------------------------------


def test_monthly_periods_keep_the_anchor_day_and_clamp_short_months() -> None:
    anchor = ts(2027, 1, 31, 9, 30)
    ends = [when(add_intervals(anchor, "month", 1, n)) for n in range(1, 4)]

    assert ends == [
        datetime(2027, 2, 28, 9, 30, tzinfo=UTC),
        datetime(2027, 3, 31, 9, 30, tzinfo=UTC),  # back to the 31st: no drift
        datetime(2027, 4, 30, 9, 30, tzinfo=UTC),
    ]
    assert when(add_intervals(ts(2028, 1, 31), "month", 1, 1)) == datetime(2028, 2, 29, tzinfo=UTC)


def test_yearly_quarterly_weekly_and_daily_intervals() -> None:
    leap_day = ts(2028, 2, 29)
    assert when(add_intervals(leap_day, "year", 1, 1)) == datetime(2029, 2, 28, tzinfo=UTC)
    assert when(add_intervals(leap_day, "year", 1, 4)) == datetime(2032, 2, 29, tzinfo=UTC)
    assert when(add_intervals(ts(2027, 11, 15), "month", 3, 1)) == datetime(2028, 2, 15, tzinfo=UTC)
    assert add_intervals(1000, "week", 2, 3) == 1000 + 6 * 7 * DAY
    assert add_intervals(1000, "day", 1, 0) == 1000


def test_consecutive_billing_periods_meet_without_gap() -> None:
    anchor = ts(2027, 1, 31)
    periods = [billing_period(anchor, "month", 1, cycle) for cycle in range(13)]

    assert all(periods[i][1] == periods[i + 1][0] for i in range(12))
    assert periods[0] == (anchor, ts(2027, 2, 28))
    assert periods[12][0] == ts(2028, 1, 31)


def test_unknown_interval_is_refused() -> None:
    with pytest.raises(ValueError):
        add_intervals(0, "fortnight", 1, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        add_intervals(0, "month", 0, 1)
