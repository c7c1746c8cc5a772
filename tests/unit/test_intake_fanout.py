"""One billing delivery may feed two processes: it is acknowledged only once Temporal has
accepted both, so a failure between them makes the sender redeliver, not lose the second."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from structlog.testing import capture_logs

from adapters.billing.events import StripeEventPayload, to_business_event
from starters.api.intake import SLOW_ANSWER_MS, Intake
from starters.api.temporal import TemporalUnavailable
from starters.routing import ProcessStart, route_billing_event


@dataclass
class Receipts:
    recorded: dict[tuple[str, str], str] = field(default_factory=dict)

    async def seen(self, source: str, event_id: str) -> bool:
        return (source, event_id) in self.recorded

    async def record(self, source: str, event_id: str, event_type: str, workflow_id: str) -> None:
        self.recorded[(source, event_id)] = workflow_id


@dataclass(frozen=True)
class FlakyIntake(Intake):
    """Temporal refuses the start of `refused` workflow ids (as if unreachable)."""

    handed: list[str] = field(default_factory=list)
    refused: set[str] = field(default_factory=set)

    async def hand_to_temporal(self, start: ProcessStart) -> bool:
        if start.workflow_id in self.refused:
            raise TemporalUnavailable("connection refused")
        self.handed.append(start.workflow_id)
        return True


def paid_invoice_starts() -> list[ProcessStart]:
    payload: dict[str, Any] = {
        "id": "evt_9Pq",
        "type": "invoice.paid",
        "created": 1_790_000_000,
        "data": {"object": {"object": "invoice", "id": "in_4", "customer": "cus_9",
                            "parent": {"type": "subscription_details", "quote_details": None,
                                       "subscription_details": {"subscription": "sub_3"}}}},
    }  # fmt: skip
    event = to_business_event(StripeEventPayload.model_validate(payload), None)
    return route_billing_event(event, ["USD"])


async def test_a_delivery_is_acknowledged_only_after_every_process_was_accepted() -> None:
    starts = paid_invoice_starts()
    receipts = Receipts()
    down = FlakyIntake(None, receipts, "t", refused={"account/cus_9"})  # type: ignore[arg-type]

    with pytest.raises(TemporalUnavailable):
        await down.start_processes(starts, "billing", "evt_9Pq", "invoice.paid")
    assert receipts.recorded == {}  # not acknowledged: the sender redelivers

    up = FlakyIntake(None, receipts, "t")  # type: ignore[arg-type]
    accepted = await up.start_processes(starts, "billing", "evt_9Pq", "invoice.paid")

    assert up.handed == ["subscription/sub_3", "account/cus_9"]
    assert (accepted.status, accepted.workflow_id, accepted.also_started) == (
        "accepted", "subscription/sub_3", ["account/cus_9"],
    )  # fmt: skip
    assert receipts.recorded == {("billing", "evt_9Pq"): "subscription/sub_3"}


async def test_a_redelivered_event_starts_nothing_again() -> None:
    starts = paid_invoice_starts()
    receipts = Receipts()
    intake = FlakyIntake(None, receipts, "t")  # type: ignore[arg-type]
    await intake.start_processes(starts, "billing", "evt_9Pq", "invoice.paid")

    again = await intake.start_processes(starts, "billing", "evt_9Pq", "invoice.paid")

    assert again.status == "duplicate"
    assert intake.handed == ["subscription/sub_3", "account/cus_9"]


async def test_a_redelivery_while_temporal_is_away_is_still_answered_duplicate() -> None:
    starts = paid_invoice_starts()
    receipts = Receipts({("billing", "evt_9Pq"): "subscription/sub_3"})
    away = FlakyIntake(None, receipts, "t", refused={"subscription/sub_3"})  # type: ignore[arg-type]

    again = await away.start_processes(starts, "billing", "evt_9Pq", "invoice.paid")

    assert again.status == "duplicate"


@dataclass
class BrokenReceipts(Receipts):
    async def seen(self, source: str, event_id: str) -> bool:
        raise ConnectionError("the database is away")


async def test_a_receipt_lookup_that_fails_does_not_fail_a_delivery_temporal_accepted() -> None:
    starts = paid_invoice_starts()
    receipts = BrokenReceipts()
    intake = FlakyIntake(None, receipts, "t")  # type: ignore[arg-type]

    accepted = await intake.start_processes(starts, "billing", "evt_9Pq", "invoice.paid")

    assert accepted.status == "accepted"
    assert receipts.recorded == {("billing", "evt_9Pq"): "subscription/sub_3"}


async def test_a_receipt_lookup_that_fails_leaves_an_unaccepted_delivery_refused() -> None:
    starts = paid_invoice_starts()
    away = FlakyIntake(None, BrokenReceipts(), "t", refused={"account/cus_9"})  # type: ignore[arg-type]

    with pytest.raises(TemporalUnavailable):
        await away.start_processes(starts, "billing", "evt_9Pq", "invoice.paid")


@dataclass(frozen=True)
class SlowIntake(Intake):
    """Temporal takes `seconds` to accept each start."""

    seconds: float = 0.0

    async def hand_to_temporal(self, start: ProcessStart) -> bool:
        await asyncio.sleep(self.seconds)
        return True


async def test_a_slow_answer_is_logged_with_the_time_temporal_took_to_accept() -> None:
    starts = paid_invoice_starts()
    slow = SlowIntake(None, Receipts(), "t", seconds=SLOW_ANSWER_MS / 1000 * 1.2)  # type: ignore[arg-type]
    fast = SlowIntake(None, Receipts(), "t")  # type: ignore[arg-type]

    with capture_logs() as logs:
        await fast.start_processes(starts, "billing", "evt_fast", "invoice.paid")
        await slow.start_processes(starts, "billing", "evt_slow", "invoice.paid")

    (warning,) = [line for line in logs if line["log_level"] == "warning"]
    assert (warning["event"], warning["event_id"], warning["starts"]) == (
        "slow webhook answer", "evt_slow", 2,
    )  # fmt: skip
    # Side by side: two starts cost Temporal's time for one, not the sum.
    assert SLOW_ANSWER_MS < warning["temporal_ms"] < 2 * SLOW_ANSWER_MS
    assert warning["lookup_ms"] < SLOW_ANSWER_MS
