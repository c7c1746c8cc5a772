"""The analytics sink: every event on the stream appended once, by id, to the store's
`business_events` table, through the durable consumer `analytics` (so an outage of the store
or of this worker only delays rows: the consumer resumes where it was acked)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from adapters.background import in_background, keep_connected
from adapters.events.broker import STREAM_SUBJECTS, DurableConsumer, JetStreamBroker
from adapters.events.envelope import read_event
from adapters.logs import get_logger

if TYPE_CHECKING:
    from adapters.store import IntegrationStore

log = get_logger("ledgerbridge.events.analytics")

CONSUMER = "analytics"
BATCH = 100


async def feed_once(store: IntegrationStore, consumer: DurableConsumer, batch: int = BATCH) -> int:
    """One batch from the stream into the table, acked once it is stored; returns how many
    were delivered (a redelivered event adds no row: its id is there)."""
    deliveries = await consumer.fetch(batch)
    if not deliveries:
        return 0
    events = []
    for delivery in deliveries:
        try:
            read_event(delivery.body)
            events.append(delivery.body)
        except ValueError as err:  # not one of our CloudEvents: no row, ever; acked below
            log.error("a message on the stream is not an event; skipped", error=str(err),
                      stream_sequence=delivery.stream_sequence)  # fmt: skip
    await asyncio.to_thread(store.append_business_events, events)
    for delivery in deliveries:
        await delivery.ack()
    return len(deliveries)


async def run_analytics(
    store: IntegrationStore, connect: Callable[[], Awaitable[JetStreamBroker]]
) -> None:
    """Until cancelled; failures are logged and retried with backoff."""

    async def feed(broker: JetStreamBroker) -> None:
        consumer = await broker.durable_consumer(CONSUMER, STREAM_SUBJECTS)
        while True:
            await feed_once(store, consumer)

    await keep_connected(connect, feed, "analytics rows written")


def feeding_analytics(
    store: IntegrationStore, connect: Callable[[], Awaitable[JetStreamBroker]]
) -> contextlib.AbstractAsyncContextManager[None]:
    return in_background(run_analytics(store, connect))
