"""The pending-refund watch carried across continue-as-new: each refund's own start, and
watches written before it knew one still load."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from canonical.ledger import PendingRefundWatch, SubscriptionLedgerInput

FIRST = datetime(2026, 10, 1, tzinfo=UTC)
NOW = FIRST + timedelta(days=40)


def test_a_watch_from_before_per_refund_starts_loads_and_counts_its_refunds_from_since() -> None:
    carried = {
        "subscription_id": None, "customer_id": "cus_1", "supported_currencies": ["USD"],
        "pending_refunds": [{
            "charge_id": "ch_1", "customer_id": "cus_1", "correlation_id": "c-1",
            "refund_ids": ["re_1"], "since": FIRST.isoformat(),
            "next_look": NOW.isoformat(), "delay_seconds": 86400, "looks": 12,
        }],
    }  # fmt: skip
    [watch] = SubscriptionLedgerInput.model_validate(carried).pending_refunds
    assert watch.refund_since == {}
    assert watch.pending_since("re_1", NOW) == FIRST  # watched before: from the charge's start
    assert watch.pending_since("re_2", NOW) == NOW  # new: from now


def test_a_refund_keeps_its_own_start_across_continue_as_new() -> None:
    watch = PendingRefundWatch(
        charge_id="ch_1", customer_id="cus_1", correlation_id="c-1", refund_ids=["re_1", "re_2"],
        since=FIRST, next_look=NOW, delay_seconds=86400,
        refund_since={"re_1": FIRST, "re_2": FIRST + timedelta(days=39)},
    )  # fmt: skip
    again = PendingRefundWatch.model_validate_json(watch.model_dump_json())
    assert again.pending_since("re_2", NOW) == FIRST + timedelta(days=39)
    assert again.pending_since("re_1", NOW) == FIRST
