"""Input handed to Temporal: answered only once the server has durably accepted the work, and
recognised when it comes again (webhook receipts)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from pydantic import BaseModel, Field
from temporalio.service import RPCError

from adapters.logs import get_logger
from adapters.tracing import start_scope
from starters.api.receipts import WebhookReceipts
from starters.api.temporal import TemporalConnection, TemporalUnavailable
from starters.routing import ProcessStart, signal_with_start, start_once

log = get_logger("ledgerbridge.api")
# A webhook answer slower than this is logged as a warning with where its time went (the
# senders wait seconds; our target for the answer is a tenth of one).
SLOW_ANSWER_MS = 100.0


class Accepted(BaseModel):
    status: str  # accepted | duplicate | ignored
    workflow_id: str | None = None
    detail: str | None = None
    also_started: list[str] = Field(
        default_factory=list, description="further processes the same delivery fed"
    )


@dataclass(frozen=True)
class Intake:
    temporal: TemporalConnection
    receipts: WebhookReceipts
    task_queue_prefix: str

    async def hand_to_temporal(self, start: ProcessStart) -> bool:
        """Returns once the server has durably accepted the work (503 otherwise): False when
        a process started once per id already had been (a concurrent duplicate delivery)."""
        client = await self.temporal.client()
        try:
            # The ids go on the start's span, then the workflow's and its activities'.
            with start_scope(start.search_attributes, start.signal_input, start.input):
                if start.signal is None:
                    return await start_once(client, start, self.task_queue_prefix)
                await signal_with_start(client, start, self.task_queue_prefix)
        except RPCError as err:
            raise TemporalUnavailable(str(err)) from err
        return True

    async def start_process(
        self, start: ProcessStart, source: str, event_id: str, kind: str, *, checked: bool = False
    ) -> Accepted:
        """Hand a delivery to Temporal unless it was accepted before (`checked`: the caller
        has just looked)."""
        if not checked and await self.receipts.seen(source, event_id):
            log.info("duplicate delivery", event_id=event_id, workflow_id=start.workflow_id)
            return Accepted(status="duplicate", workflow_id=start.workflow_id)
        new = await self.hand_to_temporal(start)
        await self.receipts.record(source, event_id, kind, start.workflow_id)
        if not new:
            log.info("duplicate delivery", event_id=event_id, workflow_id=start.workflow_id)
            return Accepted(status="duplicate", workflow_id=start.workflow_id)
        log.info("accepted", event_id=event_id, event_type=kind, workflow_id=start.workflow_id)
        return Accepted(status="accepted", workflow_id=start.workflow_id)

    async def start_processes(
        self, starts: list[ProcessStart], source: str, event_id: str, kind: str
    ) -> Accepted:
        """Hand one delivery's processes to Temporal, all of them before the receipt is
        written: a failure part-way answers 503, the sender redelivers, and the ones already
        accepted recognise it (signal dedupe, start-once ids).

        The receipt is looked up first, so a redelivery starts nothing (a process that has
        ended is not started again); the lookups of a moment share one read of the store
        (`WebhookReceipts.seen`). A delivery seen before is answered `duplicate` even while
        Temporal is away; a lookup that fails decides nothing (the processes drop an event
        id they have seen)."""
        first = starts[0]
        began = time.perf_counter()
        if await self._seen(source, event_id):
            log.info("duplicate delivery", event_id=event_id, workflow_id=first.workflow_id)
            return Accepted(status="duplicate", workflow_id=first.workflow_id)
        looked = time.perf_counter()
        # Side by side: two processes (ledger and account sync) cost one round trip, not two.
        # Every start finishes before the answer; the first failure then answers 503.
        outcomes = await asyncio.gather(
            *(self.hand_to_temporal(start) for start in starts), return_exceptions=True
        )
        # Where an answer's time goes: the receipt lookup, and Temporal accepting the starts.
        timings = {
            "lookup_ms": _ms(looked - began),
            "temporal_ms": _ms(time.perf_counter() - looked),
        }
        if sum(timings.values()) > SLOW_ANSWER_MS:
            log.warning("slow webhook answer", event_id=event_id, event_type=kind,
                        starts=len(starts), **timings)  # fmt: skip
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        new = [bool(outcome) for outcome in outcomes]
        await self.receipts.record(source, event_id, kind, first.workflow_id)
        others = [start.workflow_id for start in starts[1:]]
        if not any(new):
            log.info("duplicate delivery", event_id=event_id, workflow_id=first.workflow_id,
                     **timings)  # fmt: skip
            return Accepted(status="duplicate", workflow_id=first.workflow_id, also_started=others)
        log.info("accepted", event_id=event_id, event_type=kind, workflow_id=first.workflow_id,
                 also_started=others, **timings)  # fmt: skip
        return Accepted(status="accepted", workflow_id=first.workflow_id, also_started=others)

    async def _seen(self, source: str, event_id: str) -> bool:
        """The receipt lookup: a store that cannot answer decides nothing (Temporal's
        acceptance is what makes the delivery safe)."""
        try:
            return await self.receipts.seen(source, event_id)
        except Exception as err:
            log.warning("receipt lookup failed; answering as Temporal does", error=str(err))
            return False


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


__all__ = ["Accepted", "Intake"]
