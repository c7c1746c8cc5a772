"""Webhook receipts, written behind the answer.

A webhook is answered 2xx once Temporal has durably accepted its work; that, not the
receipt, is what makes accepted input safe. The receipt is how a redelivery is recognised
without asking Temporal again, so it need not be on the answer's path: `record` queues it
and answers at once, and one writer task stores what has queued in one transaction, in the
background. Until it is stored, `seen` finds it in memory, so a redelivery right behind the
first is still recognised.

If the API dies with receipts still queued, a later redelivery of those events reaches
Temporal again, where it changes nothing: a subscription or account workflow drops an event
id it has seen, and a credit's workflow id is started once (`start_once`).
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.concurrency import run_in_threadpool

from adapters.logs import get_logger
from adapters.store import IntegrationStore

log = get_logger("ledgerbridge.api.receipts")

Receipt = tuple[str, str, str, str]  # source, event_id, event_type, workflow_id
# Writes that fail (the database is away) are tried again after this long, oldest kept first.
RETRY_SECONDS = 1.0


class WebhookReceipts:
    """The receipts of one API process: the store's, plus those queued for it."""

    def __init__(self, store: IntegrationStore) -> None:
        self.store = store
        self._queued: dict[tuple[str, str], Receipt] = {}
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    @property
    def queued(self) -> int:
        """Receipts accepted but not stored yet."""
        return len(self._queued)

    async def seen(self, source: str, event_id: str) -> bool:
        if (source, event_id) in self._queued:
            return True
        return await run_in_threadpool(self.store.webhook_receipt, source, event_id) is not None

    def record(self, source: str, event_id: str, event_type: str, workflow_id: str) -> None:
        """Queue the receipt of a delivery Temporal has accepted; stored shortly after."""
        self._queued.setdefault((source, event_id), (source, event_id, event_type, workflow_id))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued(), name="webhook-receipts")
        self._wake.set()

    async def flush(self) -> None:
        """Store everything queued now (at shutdown; tests)."""
        while self._queued:
            await self._write_batch()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        with contextlib.suppress(Exception):  # the database is away: nothing more to do
            await self.flush()
        if self._queued:
            log.warning("receipts not stored at shutdown", count=len(self._queued))

    async def _write_queued(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._write_batch()
            except Exception as err:  # the database is away: keep them, try again
                log.warning("receipts not stored yet", count=len(self._queued), error=str(err))
                await asyncio.sleep(RETRY_SECONDS)
                self._wake.set()

    async def _write_batch(self) -> None:
        batch = dict(self._queued)
        if not batch:
            return
        await run_in_threadpool(self.store.record_webhook_receipts, list(batch.values()))
        for key in batch:  # only now: until stored, `seen` must find them here
            self._queued.pop(key, None)


__all__ = ["WebhookReceipts"]
