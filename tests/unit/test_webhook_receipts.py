"""Webhook receipts written behind the answer: found at once, stored soon, never a backlog
that a bad row or a second event loop can wedge."""

import asyncio
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from adapters.store import IntegrationStore
from starters.api import receipts as receipts_module
from starters.api.receipts import WebhookReceipts


def store_in(tmp_path: Path) -> IntegrationStore:
    store = IntegrationStore(f"sqlite:///{tmp_path / 'store.sqlite'}")
    store.migrate()
    return store


async def settled(receipts: WebhookReceipts) -> None:
    for _ in range(200):
        if not receipts.queued:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{receipts.queued} receipts still queued")


def test_a_queued_receipt_is_seen_at_once_and_stored_soon(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    receipts = WebhookReceipts(store)

    async def deliver() -> None:
        await receipts.record("billing", "evt_1", "invoice.finalized", "subscription/sub_1")
        assert await receipts.seen("billing", "evt_1")  # before it is stored
        await settled(receipts)
        await receipts.close()

    asyncio.run(deliver())
    assert store.webhook_receipt("billing", "evt_1") is not None


def test_a_row_the_store_refuses_is_dropped_and_the_rest_stored(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    receipts = WebhookReceipts(store)

    async def deliver() -> None:
        await receipts.record("billing", "evt_bad", None, "x")  # type: ignore[arg-type]
        await receipts.record("billing", "evt_good", "invoice.finalized", "subscription/sub_1")
        await settled(receipts)
        await receipts.close()

    with capture_logs() as logs:
        asyncio.run(deliver())
    assert store.webhook_receipt("billing", "evt_good") is not None
    assert store.webhook_receipt("billing", "evt_bad") is None
    assert [e["event_id"] for e in logs if e["event"].startswith("receipt refused")] == ["evt_bad"]


def test_the_writer_follows_the_event_loop_it_is_used_from(tmp_path: Path) -> None:
    """A test client may run the app on a new loop each time: receipts keep being stored."""
    store = store_in(tmp_path)
    receipts = WebhookReceipts(store)

    async def deliver(event_id: str) -> None:
        await receipts.record("billing", event_id, "invoice.finalized", "subscription/sub_1")
        await settled(receipts)

    asyncio.run(deliver("evt_loop_1"))
    asyncio.run(deliver("evt_loop_2"))
    asyncio.run(receipts.close())  # the last writer belonged to a loop that is gone
    assert store.webhook_receipt("billing", "evt_loop_2") is not None


def test_past_the_backlog_limit_a_receipt_is_stored_before_the_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = store_in(tmp_path)
    receipts = WebhookReceipts(store)
    monkeypatch.setattr(receipts_module, "MAX_QUEUED", 1)

    async def deliver() -> None:
        # Queued, and the writer has not run yet: the backlog is full for the second one.
        await receipts.record("billing", "evt_1", "invoice.finalized", "subscription/sub_1")
        await receipts.record("billing", "evt_2", "invoice.finalized", "subscription/sub_2")
        assert store.webhook_receipt("billing", "evt_2") is not None  # stored before returning
        await receipts.close()

    with capture_logs() as logs:
        asyncio.run(deliver())
    assert [e["event"] for e in logs if "backlog" in e["event"]] == [
        "receipts backlog full; storing this one now"
    ]
    assert store.webhook_receipt("billing", "evt_1") is not None


def test_lookups_asked_at_once_are_answered_in_one_read_each_rightly(tmp_path: Path) -> None:
    store = store_in(tmp_path)
    store.record_webhook_receipts([("billing", f"evt_{n}", "invoice.paid", "x") for n in (1, 3)])
    reads: list[list[tuple[str, str]]] = []
    among = store.webhook_receipts_among

    def counted(deliveries: list[tuple[str, str]]) -> set[tuple[str, str]]:
        reads.append(sorted(deliveries))
        return among(deliveries)

    store.webhook_receipts_among = counted  # type: ignore[method-assign]
    receipts = WebhookReceipts(store)

    async def ask() -> list[bool]:
        asked = [("billing", f"evt_{n}") for n in range(5)] + [("support", "evt_1")]
        answers = await asyncio.gather(*(receipts.seen(s, e) for s, e in asked))
        await receipts.close()
        return answers

    assert asyncio.run(ask()) == [False, True, False, True, False, False]
    assert len(reads) == 1
    assert len(reads[0]) == 6


def test_a_lookup_the_store_cannot_answer_fails_its_askers_and_the_next_is_asked_anew(
    tmp_path: Path,
) -> None:
    store = store_in(tmp_path)
    store.record_webhook_receipts([("billing", "evt_1", "invoice.paid", "x")])
    among = store.webhook_receipts_among
    failures = [ConnectionError("the database is away")]

    def flaky(deliveries: list[tuple[str, str]]) -> set[tuple[str, str]]:
        if failures:
            raise failures.pop()
        return among(deliveries)

    store.webhook_receipts_among = flaky  # type: ignore[method-assign]
    receipts = WebhookReceipts(store)

    async def ask() -> bool:
        with pytest.raises(ConnectionError):
            await receipts.seen("billing", "evt_1")
        seen = await receipts.seen("billing", "evt_1")
        await receipts.close()
        return seen

    assert asyncio.run(ask())
