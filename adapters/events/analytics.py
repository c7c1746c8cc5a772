"""The analytics sink: every event on the stream appended once, by id, to the store's
`business_events` table, through the durable consumer `analytics` (so an outage of the store
or of this worker only delays rows: the consumer resumes where it was acked)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from adapters.events.broker import STREAM_SUBJECTS, DurableConsumer, JetStreamBroker
from adapters.logs import get_logger

if TYPE_CHECKING:
    from adapters.store import IntegrationStore

log = get_logger("ledgerbridge.events.analytics")

CONSUMER = "analytics"
BATCH = 100
RETRY_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)


async def feed_once(store: IntegrationStore, consumer: DurableConsumer, batch: int = BATCH) -> int:
    """One batch from the stream into the table, acked once it is stored; returns how many
    were delivered (a redelivered event adds no row: its id is there)."""
    deliveries = await consumer.fetch(batch)
    if not deliveries:
        return 0
    await asyncio.to_thread(store.append_business_events, [d.body for d in deliveries])
    for delivery in deliveries:
        await delivery.ack()
    return len(deliveries)


async def run_analytics(
    store: IntegrationStore, connect: Callable[[], Awaitable[JetStreamBroker]]
) -> None:
    """Until cancelled; failures are logged and retried with backoff."""
    failures = 0
    broker: JetStreamBroker | None = None
    try:
        while True:
            try:
                if broker is None:
                    broker = await connect()
                    consumer = await broker.durable_consumer(CONSUMER, STREAM_SUBJECTS)
                await feed_once(store, consumer)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as err:
                delay = RETRY_SECONDS[min(failures, len(RETRY_SECONDS) - 1)]
                failures += 1
                log.warning("analytics rows not written yet; retrying", error=str(err),
                            seconds=delay)  # fmt: skip
                if broker is not None:
                    with contextlib.suppress(Exception):
                        await broker.close()
                    broker = None
                await asyncio.sleep(delay)
    finally:
        if broker is not None:
            with contextlib.suppress(Exception):
                await broker.close()


@contextlib.asynccontextmanager
async def feeding_analytics(
    store: IntegrationStore, connect: Callable[[], Awaitable[JetStreamBroker]]
) -> AsyncIterator[None]:
    task = asyncio.create_task(run_analytics(store, connect))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
