"""Events out through a real NATS JetStream server: the relay publishes the outbox once per
id, in order per subject, and loses nothing when the server dies between the write and the
publish; the analytics consumer appends each event once."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from adapters.errors import TransientError
from adapters.events.analytics import CONSUMER, feed_once
from adapters.events.broker import STREAM_SUBJECTS, JetStreamBroker, subject_for
from adapters.events.relay import relay_once
from adapters.store import IntegrationStore
from tests.fixtures.nats import NatsServer


@pytest.fixture
def store(tmp_path: Path) -> Iterator[IntegrationStore]:
    store = IntegrationStore(f"sqlite:///{tmp_path / 'store.sqlite'}")
    store.migrate()
    yield store
    store.dispose()


def journal(store: IntegrationStore, references: list[str], workflow: str = "s") -> None:
    for reference in references:
        store.record_posting(
            source_system="billing", source_document_id=reference, document_type="invoice",
            customer_id="cus_1", erp_document_id=f"erp-{reference}", erp_number=None,
            amount=Decimal("2.50"), currency="EUR", workflow_id=f"subscription/{workflow}",
            correlation_id="corr",
        )  # fmt: skip


async def connected(url: str) -> JetStreamBroker:
    broker = await JetStreamBroker.connect(url, connect_timeout=2.0)
    await broker.ensure_stream()
    return broker


async def test_published_once_per_id_in_outbox_order(
    store: IntegrationStore, nats_url: str
) -> None:
    journal(store, ["in_1", "in_2", "in_3"])
    broker = await connected(nats_url)
    try:
        assert await relay_once(store, broker, subject_for) == 3
        assert await broker.stream_message_count() == 3
        # The relay stopped after publishing, before marking: it publishes them again, and
        # the broker drops each copy by its Nats-Msg-Id.
        with store.engine.begin() as connection:
            connection.exec_driver_sql("UPDATE event_outbox SET published_at = NULL")
        assert await relay_once(store, broker, subject_for) == 3
        assert await broker.stream_message_count() == 3
        consumer = await broker.durable_consumer("order-check", STREAM_SUBJECTS)
        delivered = await consumer.fetch(10)
        assert [d.msg_id for d in delivered] == [e.event_id for e in store.outbox_events()]
        assert delivered[0].headers.get("Content-Type") == "application/cloudevents+json"
    finally:
        await broker.close()


async def test_a_server_killed_between_write_and_publish_loses_nothing(
    store: IntegrationStore, nats_server: NatsServer
) -> None:
    journal(store, ["in_a"])
    broker = await connected(nats_server.url)
    assert await relay_once(store, broker, subject_for) == 1
    journal(store, ["in_b", "in_c"])  # written while the broker is still up ...
    nats_server.stop()  # ... and it dies before the relay publishes them
    with pytest.raises(TransientError):
        await relay_once(store, broker, subject_for)
    await broker.close()
    assert [e.subject for e in store.unpublished_events()] == ["in_b", "in_c"]
    nats_server.restart()
    broker = await connected(nats_server.url)
    try:
        assert await relay_once(store, broker, subject_for) == 2
        assert store.unpublished_events() == []
        assert await broker.stream_message_count() == 3  # file storage kept the first one
    finally:
        await broker.close()


async def test_the_analytics_table_gets_each_event_once(
    store: IntegrationStore, nats_url: str
) -> None:
    journal(store, ["in_x", "in_y"])
    broker = await connected(nats_url)
    try:
        await relay_once(store, broker, subject_for)
        consumer = await broker.durable_consumer(CONSUMER, STREAM_SUBJECTS)
        assert await feed_once(store, consumer) == 2
        assert await feed_once(store, consumer) == 0  # acked: nothing delivered again
        rows = store.business_events("cus_1")
        assert [(r.subject, r.amount_minor, r.currency) for r in rows] == [
            ("in_x", 250, "EUR"), ("in_y", 250, "EUR"),
        ]  # fmt: skip
        # The same events offered again (a redelivery after a lost ack) add no row.
        assert store.append_business_events([e.body.encode() for e in store.outbox_events()]) == 0
    finally:
        await broker.close()
