"""Signed webhooks out through a real NATS JetStream server: a subscriber that fails for a
while receives every event once per id, in order, when it answers again; one that says 410
is paused and gets the waiting event when resumed; signatures checked by standardwebhooks."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from standardwebhooks import Webhook

from adapters.events.broker import JetStreamBroker, subject_for
from adapters.events.relay import relay_once
from adapters.events.subscriptions import ACTIVE, PAUSED, EventEndpoint
from adapters.events.webhook_consumers import (
    consumer_name,
    drop_consumers_of_deleted,
    endpoint_consumer,
    serve_endpoint,
)
from adapters.events.webhooks_out import DeliveryOutcome
from adapters.store import IntegrationStore
from adapters.store.event_endpoints import EventEndpointStore
from tests.fixtures.servers import free_port


@dataclass
class Subscriber:
    """Answers each POST with the next of `answers` (then 200), recording what came."""

    port: int
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes, int]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"


@pytest.fixture
def subscriber() -> Iterator[Subscriber]:
    served = Subscriber(free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status, extra = served.answers.pop(0) if served.answers else (200, {})
            served.received.append(({k.lower(): v for k, v in self.headers.items()}, body,
                                    status))  # fmt: skip
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", served.port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield served
    server.shutdown()
    server.server_close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[IntegrationStore]:
    store = IntegrationStore(f"sqlite:///{tmp_path / 'store.sqlite'}")
    store.migrate()
    yield store
    store.dispose()


def journal(store: IntegrationStore, references: list[str]) -> None:
    for reference in references:
        store.record_posting(
            source_system="billing", source_document_id=reference, document_type="invoice",
            customer_id="cus_1", erp_document_id=f"erp-{reference}", erp_number=None,
            amount=Decimal("3.00"), currency="USD", workflow_id="subscription/s",
            correlation_id=None,
        )  # fmt: skip


async def no_alert(_endpoint: EventEndpoint, _outcome: DeliveryOutcome) -> None:
    raise AssertionError("no endpoint fails for a day here")


async def until(predicate: object, within: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "not within the time"
        await asyncio.sleep(0.05)


async def test_a_subscriber_down_for_a_while_receives_each_event_once_in_order(
    store: IntegrationStore, nats_url: str, subscriber: Subscriber
) -> None:
    endpoints = EventEndpointStore(store)
    endpoint = endpoints.create_endpoint(url=subscriber.url, event_types=[], description=None,
                                         created_by="test")  # fmt: skip
    secret = endpoint.secrets[0].secret
    journal(store, ["in_1", "in_2", "in_3"])
    # Down for two attempts (the schedule waits 5 s, then 10 s, each within ±20 %).
    subscriber.answers = [(503, {"Retry-After": "1"})] * 2
    broker = await JetStreamBroker.connect(nats_url)
    await broker.ensure_stream()
    async with httpx.AsyncClient() as http:
        await relay_once(store, broker, subject_for)
        task = asyncio.create_task(serve_endpoint(endpoints, broker, endpoint, http, no_alert))
        try:
            await until(lambda: sum(s == 200 for _, _, s in subscriber.received) == 3, 40)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    await broker.close()

    published = [e.event_id for e in store.outbox_events()]
    delivered = [h["webhook-id"] for h, _, status in subscriber.received if status == 200]
    assert delivered == published  # each once, in order
    attempts = [h["webhook-id"] for h, _, _ in subscriber.received]
    assert attempts[:3] == [published[0]] * 3  # the first held the rest back until it went
    for headers, body, _ in subscriber.received:
        Webhook(secret).verify(body, headers)  # raises on a bad signature
        assert json.loads(body)["id"] == headers["webhook-id"]
    state = endpoints.endpoint(endpoint.id)
    assert state is not None and state.status == ACTIVE and state.failing_since is None


async def test_a_gone_endpoint_is_paused_and_gets_the_waiting_event_when_resumed(
    store: IntegrationStore, nats_url: str, subscriber: Subscriber
) -> None:
    endpoints = EventEndpointStore(store)
    endpoint = endpoints.create_endpoint(url=subscriber.url, event_types=[], description=None,
                                         created_by="test")  # fmt: skip
    journal(store, ["in_g"])
    subscriber.answers = [(410, {})]
    broker = await JetStreamBroker.connect(nats_url)
    await broker.ensure_stream()
    async with httpx.AsyncClient() as http:
        await relay_once(store, broker, subject_for)
        await asyncio.wait_for(serve_endpoint(endpoints, broker, endpoint, http, no_alert), 20)
        paused = endpoints.endpoint(endpoint.id)
        assert paused is not None and paused.status == PAUSED
        assert [s for _, _, s in subscriber.received] == [410]

        resumed = endpoints.resume_endpoint(endpoint.id)
        task = asyncio.create_task(serve_endpoint(endpoints, broker, resumed, http, no_alert))
        try:
            await until(lambda: [s for _, _, s in subscriber.received] == [410, 200])
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    await broker.close()
    [(_, first, _), (_, again, _)] = subscriber.received
    assert first == again  # the same event, held while paused


async def test_a_deleted_endpoint_loses_its_consumer_and_a_paused_one_keeps_it(
    store: IntegrationStore, nats_url: str, subscriber: Subscriber
) -> None:
    endpoints = EventEndpointStore(store)
    gone, paused = (
        endpoints.create_endpoint(url=subscriber.url, event_types=[], description=None,
                                  created_by="test")
        for _ in range(2)
    )  # fmt: skip
    broker = await JetStreamBroker.connect(nats_url)
    try:
        await broker.ensure_stream()
        for endpoint in (gone, paused):
            await (await endpoint_consumer(broker, endpoint)).close()
        endpoints.pause_endpoint(paused.id, "moving")
        endpoints.delete_endpoint(gone.id)
        await drop_consumers_of_deleted(broker, {e.id for e in endpoints.endpoints()})
        assert await broker.consumer_names("webhook-") == [consumer_name(paused.id)]
    finally:
        await broker.close()
