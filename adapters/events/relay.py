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
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from adapters.background import in_background, keep_connected

if TYPE_CHECKING:
    from adapters.store import IntegrationStore

BATCH = 500
IDLE_SECONDS = 0.5  # between reads of an empty outbox
KEEP = timedelta(days=30)  # published events kept in the outbox (Settings.events_outbox_keep_days)
PURGE_EVERY = 3600.0  # seconds between removals of what is older
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
    keep: timedelta = KEEP,
) -> None:
    """Until cancelled: publish whatever is unpublished, wait, again; once an hour, remove
    what was published more than `keep` ago. A broker (or store) failure is logged and
    retried with backoff; the events wait in the outbox."""
    loop = asyncio.get_running_loop()
    purged_at = -PURGE_EVERY

    async def publish_all(publisher: Publisher) -> None:
        nonlocal purged_at
        while True:
            if loop.time() - purged_at >= PURGE_EVERY:
                before = datetime.now(UTC) - keep
                await asyncio.to_thread(store.purge_published_events, before)
                purged_at = loop.time()
            if await relay_once(store, publisher, subject_for) < BATCH:
                await asyncio.sleep(idle)

    await keep_connected(connect, publish_all, "events published")


def relaying(
    store: IntegrationStore,
    connect: Callable[[], Awaitable[Publisher]],
    subject_for: SubjectFor,
    idle: float = IDLE_SECONDS,
    keep: timedelta = KEEP,
) -> contextlib.AbstractAsyncContextManager[None]:
    """The relay as a background task of the block (the worker's life)."""
    return in_background(run_relay(store, connect, subject_for, idle, keep))
