"""Webhooks out, the consumer side: one durable JetStream consumer per active endpoint,
`webhook-<endpoint id>`, each event delivered by `webhooks_out.deliver` and its decision
carried out.

One event in flight per endpoint (`max_ack_pending=1`): a subscriber receives events in
stream order, so in order per subject, and an event being retried holds back the ones after
it, as the order requires. A retry is a `nak` with the schedule's delay (JetStream redelivers
it then, counting attempts); a pause leaves the event unacked, so it is the first delivered
when the endpoint is resumed; a dead letter is kept in the store and acked, and is sent again
by a replay. A new endpoint receives the events published from its registration on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import httpx

from adapters.background import in_background, keep_connected
from adapters.events.broker import STREAM_SUBJECTS, Delivery, DurableConsumer, JetStreamBroker
from adapters.events.envelope import read_event
from adapters.events.subscriptions import ACTIVE, EventEndpoint
from adapters.events.webhooks_out import DeliveryOutcome, deliver
from adapters.logs import get_logger
from adapters.store.event_endpoints import EventEndpointStore

if TYPE_CHECKING:
    from adapters.store import IntegrationStore

log = get_logger("ledgerbridge.events.webhooks")

CONSUMER_PREFIX = "webhook-"
ENDPOINTS_EVERY = 5.0  # seconds between reads of the registry (new, paused, resumed)
ACK_WAIT_SECONDS = 60.0  # longer than a delivery's timeout: no redelivery while it runs

# Told when an endpoint has failed for a day and is paused: opens the exception.
Alert = Callable[[EventEndpoint, DeliveryOutcome], Awaitable[None]]


def consumer_name(endpoint_id: str) -> str:
    return f"{CONSUMER_PREFIX}{endpoint_id}"


async def endpoint_consumer(broker: JetStreamBroker, endpoint: EventEndpoint) -> DurableConsumer:
    return await broker.durable_consumer(
        consumer_name(endpoint.id), STREAM_SUBJECTS, ack_wait_seconds=ACK_WAIT_SECONDS,
        max_ack_pending=1, start_time=endpoint.created_at,
    )  # fmt: skip


async def deliver_next(
    endpoints: EventEndpointStore,
    endpoint_id: str,
    consumer: DurableConsumer,
    http: httpx.AsyncClient,
    alert: Alert,
    wait_seconds: float = 1.0,
) -> DeliveryOutcome | None:
    """The endpoint's next event, delivered and settled; None when none was waiting."""
    deliveries = await consumer.fetch(1, wait_seconds)
    if not deliveries:
        return None
    [delivery] = deliveries
    endpoint = await asyncio.to_thread(endpoints.endpoint, endpoint_id)  # its latest secrets
    if endpoint is None:  # removed meanwhile: leave the event to nobody
        await delivery.nak()
        return None
    try:
        outcome = await deliver(endpoint, delivery.body, delivery.delivered_count, http)
    except ValueError as err:  # not one of our CloudEvents: nothing to deliver, ever
        log.error("a message on the stream is not an event; skipped", error=str(err),
                  stream_sequence=delivery.stream_sequence)  # fmt: skip
        await delivery.ack()
        return None
    await settle(endpoints, endpoint, delivery, outcome, alert)
    return outcome


async def settle(
    endpoints: EventEndpointStore,
    endpoint: EventEndpoint,
    delivery: Delivery,
    outcome: DeliveryOutcome,
    alert: Alert,
) -> None:
    """Carry out a delivery's decision: the store first, then the broker's ack or nak (a
    crash in between redelivers the event, which the subscriber drops by its id)."""
    now = datetime.now(UTC)
    if outcome.sent:
        await asyncio.to_thread(endpoints.record_delivery, endpoint.id, outcome.delivered, now)
    decision = outcome.decision
    if decision == "ack":
        await delivery.ack()
    elif decision == "retry":
        await delivery.nak(outcome.retry_after)
    elif decision == "dead_letter":
        event = read_event(delivery.body)
        await asyncio.to_thread(
            endpoints.add_dead_letter, endpoint_id=endpoint.id, event_id=outcome.event_id,
            event_type=event.get_type(), subject=event.get_subject() or "", body=delivery.body,
            attempts=outcome.attempt, last_status=outcome.status_code,
            last_error=outcome.error, first_attempt_at=outcome.first_attempt_at or now,
        )  # fmt: skip
        await delivery.ack()
    else:  # pause, pause_and_alert: the event waits, unacked, for the endpoint's resumption
        if endpoint.status == ACTIVE:
            reason = outcome.error or "paused"
            if decision == "pause_and_alert":
                reason = f"failing since {outcome.failing_since:%Y-%m-%d %H:%M} UTC: {reason}"
                # Before the pause: an alert that fails leaves the endpoint active, so the
                # next attempt alerts again (the exception's start is idempotent).
                await alert(endpoint, outcome)
            await asyncio.to_thread(endpoints.pause_endpoint, endpoint.id, reason[:500])
        await delivery.nak()


async def replay_dead_letters(
    endpoints: EventEndpointStore, endpoint: EventEndpoint, http: httpx.AsyncClient
) -> int:
    """Send again the dead letters ops asked to replay; returns how many were delivered. One
    not delivered is dead again (its row updated, its replay mark cleared)."""
    delivered = 0
    for letter in await asyncio.to_thread(endpoints.replay_requested, endpoint.id):
        body = letter.body
        outcome = await deliver(endpoint, body, 1, http)
        now = datetime.now(UTC)
        if outcome.sent:
            await asyncio.to_thread(endpoints.record_delivery, endpoint.id, outcome.delivered, now)
        if outcome.delivered:
            await asyncio.to_thread(endpoints.mark_replayed, [letter.id], now)
            delivered += 1
            continue
        if outcome.decision in ("pause", "pause_and_alert"):  # 410: gone, replay or not
            await asyncio.to_thread(endpoints.pause_endpoint, endpoint.id,
                                    (outcome.error or "gone")[:500])  # fmt: skip
            break
        await asyncio.to_thread(
            endpoints.add_dead_letter, endpoint_id=endpoint.id, event_id=letter.event_id,
            event_type=letter.event_type, subject=letter.subject, body=body,
            attempts=letter.attempts + 1, last_status=outcome.status_code,
            last_error=outcome.error, first_attempt_at=letter.first_attempt_at,
        )  # fmt: skip
        break  # the endpoint still fails: try the rest on the next round
    return delivered


async def serve_endpoint(
    endpoints: EventEndpointStore,
    broker: JetStreamBroker,
    endpoint: EventEndpoint,
    http: httpx.AsyncClient,
    alert: Alert,
) -> None:
    """Until cancelled (the endpoint paused or removed, or the worker stopping)."""
    consumer = await endpoint_consumer(broker, endpoint)
    try:
        while True:
            await replay_dead_letters(endpoints, endpoint, http)
            outcome = await deliver_next(endpoints, endpoint.id, consumer, http, alert)
            if outcome is not None and outcome.decision in ("pause", "pause_and_alert"):
                return
    finally:
        with contextlib.suppress(Exception):
            await consumer.close()


async def drop_consumers_of_deleted(broker: JetStreamBroker, registered: set[str]) -> None:
    """The consumers of endpoints no longer registered, removed (a paused one keeps its)."""
    for name in await broker.consumer_names(CONSUMER_PREFIX):
        if name.removeprefix(CONSUMER_PREFIX) not in registered:
            await broker.delete_consumer(name)


async def run_webhooks(
    store: IntegrationStore,
    connect: Callable[[], Awaitable[JetStreamBroker]],
    alert: Alert,
    every: float = ENDPOINTS_EVERY,
) -> None:
    """Until cancelled: a task per active endpoint, started and stopped as the registry
    changes; a broker or store failure restarts them all after a backoff."""
    endpoints = EventEndpointStore(store)

    async def serve_all(broker: JetStreamBroker) -> None:
        tasks: dict[str, asyncio.Task[None]] = {}
        try:
            async with httpx.AsyncClient() as http:
                while True:
                    registered = await asyncio.to_thread(endpoints.endpoints)
                    active = {e.id: e for e in registered if e.status == ACTIVE}
                    await drop_consumers_of_deleted(broker, {e.id for e in registered})
                    for endpoint_id in [i for i in tasks if i not in active or tasks[i].done()]:
                        task = tasks.pop(endpoint_id)
                        task.cancel()
                        try:
                            await task
                        except asyncio.CancelledError:
                            pass
                        except Exception as err:  # this endpoint only: started again below
                            log.warning("webhooks to one endpoint stopped; starting again",
                                        endpoint=endpoint_id, error=str(err))  # fmt: skip
                    for endpoint_id, endpoint in active.items():
                        if endpoint_id not in tasks:
                            tasks[endpoint_id] = asyncio.create_task(
                                serve_endpoint(endpoints, broker, endpoint, http, alert)
                            )
                    await asyncio.sleep(every)
        finally:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)

    await keep_connected(connect, serve_all, "webhooks sent")


def sending_webhooks(
    store: IntegrationStore,
    connect: Callable[[], Awaitable[JetStreamBroker]],
    alert: Alert,
    every: float = ENDPOINTS_EVERY,
) -> contextlib.AbstractAsyncContextManager[None]:
    return in_background(run_webhooks(store, connect, alert, every))
