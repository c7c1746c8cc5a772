"""The relay: the outbox published to the broker, oldest first, each event acknowledged by the
broker before it is marked published.

Nothing is lost: an event leaves the outbox's unpublished rows only after the broker's ack,
so a broker down (or killed between the write and the publish) delays events, and the relay
publishes them when it is back. Nothing is doubled downstream: an event published but not
yet marked (the relay stopped in between) is published again with the same id, which the
broker drops (`Nats-Msg-Id` within its duplicate window). Order per subject holds because
one relay publishes one event at a time, in outbox order; a second relay (another worker)
publishes the same rows in the same order, and its copies are dropped the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from adapters.logs import get_logger

if TYPE_CHECKING:
    from adapters.store import IntegrationStore

log = get_logger("ledgerbridge.events.relay")

BATCH = 100
IDLE_SECONDS = 0.5  # between reads of an empty outbox
RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)  # after a failed publish, then every 30 s
CONTENT_TYPE = "application/cloudevents+json"


class Publisher(Protocol):
    async def publish(
        self, subject: str, body: bytes, msg_id: str, headers: dict[str, str] | None = None
    ) -> Any: ...

    async def close(self) -> None: ...


SubjectFor = Callable[[str, str], str]


async def relay_once(
    store: IntegrationStore, publisher: Publisher, subject_for: SubjectFor, batch: int = BATCH
) -> int:
    """Publish the oldest unpublished events, one at a time; returns how many were acked.
    A failed publish stops the batch there (the next run starts from that event) and raises."""
    pending = await asyncio.to_thread(store.unpublished_events, batch)
    acked: list[int] = []
    try:
        for event in pending:
            await publisher.publish(
                subject_for(event.event_type, event.subject), event.body, event.event_id,
                {"Content-Type": CONTENT_TYPE},
            )  # fmt: skip
            acked.append(event.seq)
    finally:
        await asyncio.to_thread(store.mark_events_published, acked)
    return len(acked)


async def run_relay(
    store: IntegrationStore,
    connect: Callable[[], Awaitable[Publisher]],
    subject_for: SubjectFor,
    idle: float = IDLE_SECONDS,
) -> None:
    """Until cancelled: connect, publish whatever is unpublished, wait, again. A broker (or
    store) failure is logged and retried with backoff; the events wait in the outbox."""
    failures = 0
    publisher: Publisher | None = None
    try:
        while True:
            try:
                if publisher is None:
                    publisher = await connect()
                sent = await relay_once(store, publisher, subject_for)
                failures = 0
                if sent < BATCH:
                    await asyncio.sleep(idle)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                log.warning("events not published yet; retrying", error=str(err), seconds=delay)
                if publisher is not None:
                    with contextlib.suppress(Exception):
                        await publisher.close()
                    publisher = None
                await asyncio.sleep(delay)
    finally:
        if publisher is not None:
            with contextlib.suppress(Exception):
                await publisher.close()


@contextlib.asynccontextmanager
async def relaying(
    store: IntegrationStore,
    connect: Callable[[], Awaitable[Publisher]],
    subject_for: SubjectFor,
    idle: float = IDLE_SECONDS,
) -> AsyncIterator[None]:
    """The relay as a background task of the block (the worker's life)."""
    task = asyncio.create_task(run_relay(store, connect, subject_for, idle))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
