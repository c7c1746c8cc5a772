"""Each external system's last success and last failure, as the workers see them, shared with
the API through the store (the API and the workers are different processes).

The workers already count every adapter call by system and outcome (adapters/metrics.py);
a recorder beside them reads those counters every few seconds and, when they moved, writes one
row per system. The hot path pays nothing, the store sees at most one small write per worker
every `RECORD_EVERY` seconds, and only while calls happen.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

from prometheus_client import Counter

from adapters.background import in_background
from adapters.logs import get_logger
from adapters.metrics import ADAPTER_CALLS, SYSTEMS

if TYPE_CHECKING:
    from adapters.store import IntegrationStore

log = get_logger("ledgerbridge.system_health")

RECORD_EVERY = 5.0  # seconds between reads of the counters
# Outcomes where the system answered, even if it said no: it is up.
ANSWERED = frozenset({"ok", "rejected", "not_found", "conflict"})

Totals = dict[tuple[str, str], float]


@dataclass(frozen=True)
class SystemObservation:
    """What one worker saw of one system since its last record."""

    system: str
    at: datetime
    answered: bool  # at least one call had an answer
    failure: str | None  # the outcome of a failed call, when there was one


class HealthRow(Protocol):
    system: str
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_failure: str | None
    failing_since: datetime | None


def call_totals(counter: Counter = ADAPTER_CALLS) -> Totals:
    """The process's adapter calls so far, by (system, outcome)."""
    totals: Totals = {}
    for family in counter.collect():
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            key = (sample.labels["system"], sample.labels["outcome"])
            totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def observations(previous: Totals, current: Totals, at: datetime) -> list[SystemObservation]:
    """What changed between two readings of the counters, per system that was called."""
    seen: list[SystemObservation] = []
    for system in SYSTEMS:
        moved = {
            outcome
            for (s, outcome), value in current.items()
            if s == system and value > previous.get((s, outcome), 0.0)
        }
        if not moved:
            continue
        failures = sorted(moved - ANSWERED)
        failure = failures[0] if failures else None
        seen.append(SystemObservation(system, at, bool(moved & ANSWERED), failure))
    return seen


def merge(row: HealthRow, seen: SystemObservation) -> None:
    """Fold one observation into the stored row. Any answer clears the failure; a failure
    starts one unless the system answered at or after it (another worker saw it up)."""
    if seen.failure is not None and _at_or_after(seen.at, row.last_failure_at):
        row.last_failure_at, row.last_failure = seen.at, seen.failure
    if seen.answered:
        if _at_or_after(seen.at, row.last_success_at):
            row.last_success_at = seen.at
            row.failing_since = None
    elif (
        seen.failure is not None
        and row.failing_since is None
        and (row.last_success_at is None or aware(row.last_success_at) < seen.at)
    ):
        row.failing_since = seen.at


def _at_or_after(moment: datetime, recorded: datetime | None) -> bool:
    return recorded is None or moment >= aware(recorded)


def aware(moment: datetime) -> datetime:
    """SQLite hands timestamps back naive; they were written in UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


async def record_system_health(store: IntegrationStore, every: float = RECORD_EVERY) -> None:
    """Until cancelled: every `every` seconds, record what the counters moved by. A failed
    write is retried with the next reading (nothing is lost, only dated later)."""
    previous = call_totals()
    try:
        while True:
            await asyncio.sleep(every)
            previous = await _record(store, previous)
    except asyncio.CancelledError:
        await _record(store, previous)  # what the last interval saw, before the worker stops
        raise


async def _record(store: IntegrationStore, previous: Totals) -> Totals:
    current = call_totals()
    seen = observations(previous, current, datetime.now(UTC))
    if not seen:
        return current
    try:
        await asyncio.to_thread(store.record_system_health, seen)
    except Exception as err:  # the store being down must not stop the worker
        log.warning("system health not recorded", error=str(err))
        return previous
    return current


def recording_system_health(
    store: IntegrationStore, every: float = RECORD_EVERY
) -> contextlib.AbstractAsyncContextManager[None]:
    return in_background(record_system_health(store, every))
