"""The relay over a real store with a publisher that fails on demand: nothing leaves the
outbox unacked, the order holds, a failed publish is retried from where it stopped."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from adapters.events.relay import relay_once, relaying
from adapters.store import IntegrationStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[IntegrationStore]:
    store = IntegrationStore(f"sqlite:///{tmp_path / 'store.sqlite'}")
    store.migrate()
    yield store
    store.dispose()


def journal(store: IntegrationStore, count: int) -> None:
    for n in range(count):
        store.record_posting(
            source_system="billing", source_document_id=f"in_{n}", document_type="invoice",
            customer_id="cus_1", erp_document_id=str(n), erp_number=None,
            amount=Decimal("1.00"), currency="USD", workflow_id="subscription/s",
            correlation_id=None,
        )  # fmt: skip


class Broker:
    """Stands in for the broker: keeps what it acked, by id, and fails when told to."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.fail_after = fail_after
        self.acked: dict[str, tuple[str, bytes]] = {}
        self.order: list[str] = []
        self.closed = 0

    async def publish(
        self, subject: str, body: bytes, msg_id: str, headers: dict[str, str] | None = None
    ) -> Any:
        if self.fail_after is not None and len(self.order) >= self.fail_after:
            raise ConnectionError("broker down")
        assert headers == {"Content-Type": "application/cloudevents+json"}
        if msg_id not in self.acked:  # the broker drops a republished id
            self.acked[msg_id] = (subject, body)
            self.order.append(msg_id)
        return None

    async def close(self) -> None:
        self.closed += 1


def subject_for(event_type: str, subject: str) -> str:
    return f"ledgerbridge.{event_type}.{subject}"


async def test_a_batch_is_published_in_order_and_marked(store: IntegrationStore) -> None:
    journal(store, 5)
    broker = Broker()
    assert await relay_once(store, broker, subject_for) == 5
    ids = [e.event_id for e in store.outbox_events()]
    assert broker.order == ids
    assert store.unpublished_events() == []
    assert await relay_once(store, broker, subject_for) == 0


async def test_a_broker_failing_mid_batch_keeps_the_rest_for_later(
    store: IntegrationStore,
) -> None:
    journal(store, 5)
    broker = Broker(fail_after=2)
    with pytest.raises(ConnectionError):
        await relay_once(store, broker, subject_for)
    assert [e.subject for e in store.unpublished_events()] == ["in_2", "in_3", "in_4"]
    broker.fail_after = None
    assert await relay_once(store, broker, subject_for) == 3
    assert broker.order == [e.event_id for e in store.outbox_events()]  # in order, each once


async def test_the_background_relay_reconnects_after_a_failure(store: IntegrationStore) -> None:
    journal(store, 3)
    broker = Broker(fail_after=1)
    connects = 0

    async def connect() -> Broker:
        nonlocal connects
        connects += 1
        if connects == 2:  # back on the second connection
            broker.fail_after = None
        return broker

    async with relaying(store, connect, subject_for, idle=0.01):
        for _ in range(500):
            if not store.unpublished_events():
                break
            await asyncio.sleep(0.01)
    assert store.unpublished_events() == []
    assert len(broker.order) == 3 and connects == 2 and broker.closed >= 1
