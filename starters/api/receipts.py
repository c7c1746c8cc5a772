"""Webhook receipts, written behind the answer.

A webhook is answered 2xx once Temporal has durably accepted its work; that, not the
receipt, is what makes accepted input safe. The receipt is how a redelivery is recognised
without asking Temporal again, so it need not be on the answer's path: `record` queues it
and answers at once, and one writer task stores what has queued in one transaction, in the
background. Until it is stored, `seen` finds it in memory, so a redelivery right behind the
first is still recognised.

Lookups are batched the same way: the deliveries that ask while one lookup is in the store
are asked together in the next, one thread hop for all of them.

If the API dies with receipts still queued, a later redelivery of those events reaches
Temporal again, where it changes nothing: a subscription or account workflow drops an event
id it has seen, and a credit's workflow id is started once (`start_once`).

Bounds: at most `MAX_QUEUED` receipts wait in memory; past that (the database has been
refusing writes for a while) `record` stores the receipt itself before the answer, so a
request fails rather than memory growing. A row the database refuses for good (a constraint,
a value it cannot hold) is logged and dropped, never left blocking the rows behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars

from sqlalchemy.exc import DataError, IntegrityError
from starlette.concurrency import run_in_threadpool

from adapters.logs import get_logger
from adapters.store import IntegrationStore

log = get_logger("ledgerbridge.api.receipts")

Receipt = tuple[str, str, str, str]  # source, event_id, event_type, workflow_id
# Writes that fail (the database is away) are tried again after this long, oldest kept first.
RETRY_SECONDS = 1.0
MAX_QUEUED = 10_000
MAX_BATCH = 1_000


class WebhookReceipts:
    """The receipts of one API process: the store's, plus those queued for it."""

    def __init__(self, store: IntegrationStore) -> None:
        self.store = store
        self._queued: dict[tuple[str, str], Receipt] = {}
        self._wake: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        # Lookups waiting for the next batch, and the task that asks the store for them.
        self._asked: dict[tuple[str, str], list[asyncio.Future[bool]]] = {}
        self._looker: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        """Receipts accepted but not stored yet."""
        return len(self._queued)

    async def seen(self, source: str, event_id: str) -> bool:
        key = (source, event_id)
        if key in self._queued:
            return True
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bool] = loop.create_future()
        self._asked.setdefault(key, []).append(answer)
        looker = self._looker
        if looker is None or looker.done() or looker.get_loop() is not loop:
            # A context of its own: not the correlation id of the request that started it.
            self._looker = loop.create_task(
                self._look_up_asked(), name="webhook-receipt-lookups", context=contextvars.Context()
            )
        return await answer

    async def _look_up_asked(self) -> None:
        """Until nothing is asked: everything asked so far in one read of the store."""
        while self._asked:
            asked, self._asked = self._asked, {}
            try:
                found = await run_in_threadpool(self.store.webhook_receipts_among, list(asked))
            except Exception as err:  # the database is away: each asker decides
                _fail(asked, err)
                continue
            for key, answers in asked.items():
                for answer in answers:
                    if not answer.done():
                        answer.set_result(key in found)

    async def record(self, source: str, event_id: str, event_type: str, workflow_id: str) -> None:
        """Queue the receipt of a delivery Temporal has accepted; stored shortly after (or
        now, when too many wait already)."""
        receipt = (source, event_id, event_type, workflow_id)
        if len(self._queued) >= MAX_QUEUED:
            log.warning("receipts backlog full; storing this one now", queued=len(self._queued))
            await run_in_threadpool(self.store.record_webhook_receipts, [receipt])
            return
        self._queued.setdefault((source, event_id), receipt)
        self._ensure_writer().set()

    async def flush(self) -> None:
        """Store everything queued now (at shutdown; tests)."""
        while self._queued:
            await self._write_batch()

    async def close(self) -> None:
        if self._looker is not None:
            self._looker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._looker
            self._looker = None
        _fail(self._asked, RuntimeError("the API is shutting down"))
        self._asked = {}
        if self._writer is not None:
            self._writer.cancel()
            # Cancelled, or already ended on another event loop (a test client's).
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._writer
            self._writer = None
        with contextlib.suppress(Exception):  # the database is away: nothing more to do
            await self.flush()
        if self._queued:
            log.warning("receipts not stored at shutdown", count=len(self._queued))

    def _ensure_writer(self) -> asyncio.Event:
        """The writer of the running event loop, started on first use; its wake-up event."""
        loop = asyncio.get_running_loop()
        writer = self._writer
        if writer is None or writer.done() or writer.get_loop() is not loop or not self._wake:
            self._wake = asyncio.Event()
            # A context of its own: not the correlation id of the request that started it.
            self._writer = loop.create_task(
                self._write_queued(self._wake),
                name="webhook-receipts",
                context=contextvars.Context(),
            )
        return self._wake

    async def _write_queued(self, wake: asyncio.Event) -> None:
        while True:
            await wake.wait()
            wake.clear()
            try:
                await self._write_batch()
            except Exception as err:  # the database is away: keep them, try again
                log.warning("receipts not stored yet", count=len(self._queued), error=str(err))
                await asyncio.sleep(RETRY_SECONDS)
            if self._queued:
                wake.set()

    async def _write_batch(self) -> None:
        batch = dict(list(self._queued.items())[:MAX_BATCH])
        if not batch:
            return
        try:
            await run_in_threadpool(self.store.record_webhook_receipts, list(batch.values()))
        except (DataError, IntegrityError):
            await self._write_one_by_one(batch)
        for key in batch:  # only now: until stored, `seen` must find them here
            self._queued.pop(key, None)

    async def _write_one_by_one(self, batch: dict[tuple[str, str], Receipt]) -> None:
        for receipt in batch.values():
            try:
                await run_in_threadpool(self.store.record_webhook_receipts, [receipt])
            except (DataError, IntegrityError) as err:
                source, event_id, event_type, workflow_id = (str(part) for part in receipt)
                log.error(
                    "receipt refused by the store; dropped (the process is in Temporal)",
                    source=source,
                    event_id=event_id[:100],
                    event_type=event_type[:100],
                    workflow_id=workflow_id[:200],
                    error=str(err).splitlines()[0][:300],
                )


def _fail(asked: dict[tuple[str, str], list[asyncio.Future[bool]]], err: BaseException) -> None:
    """Every lookup still waiting in `asked` gets `err`."""
    for answers in asked.values():
        for answer in answers:
            if not answer.done():
                answer.set_exception(err)


__all__ = ["MAX_QUEUED", "WebhookReceipts"]
