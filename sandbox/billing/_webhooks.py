"""Signed webhook delivery: at least once, with exponential backoff, resumed after a restart.

Pending deliveries live in the store; the dispatcher is a background task of the server's
event loop that wakes when a delivery is scheduled or the next retry falls due. Deliveries
to one endpoint go one after another (so a healthy receiver sees billing order unless the
shuffle setting is on); different endpoints are served concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import defaultdict

import httpx

from sandbox.billing._engine import BillingEngine
from sandbox.billing._signature import stripe_signature
from sandbox.billing._store import Delivery

logger = logging.getLogger("sandbox.billing.webhooks")

USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
_IDLE_POLL_SECONDS = 1.0
RESPONSE_BODY_LIMIT = 2000


class WebhookDispatcher:
    def __init__(self, engine: BillingEngine) -> None:
        self.engine = engine
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        engine.on_delivery_scheduled(self.wake)

    def wake(self) -> None:
        """Safe from any thread: a test thread may schedule deliveries through the engine."""
        loop, event = self._loop, self._wake
        if loop is None or event is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            event.set()
        else:
            with contextlib.suppress(RuntimeError):  # loop closing: the next start resumes
                loop.call_soon_threadsafe(event.set)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        timeout = self.engine.settings.webhook_timeout_seconds
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            headers={"User-Agent": USER_AGENT},
        )
        self._task = asyncio.create_task(self._run(), name="billing-webhook-dispatcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self._loop = None

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            self._wake.clear()
            try:
                due = self.engine.store.due_deliveries(self.engine.clock())
                if due:
                    await self._deliver_batch(due)
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:
                # A bug here must not stop deliveries for the rest of the session.
                logger.exception("webhook dispatcher iteration failed")
            next_due = self.engine.store.next_due_at()
            wait = _IDLE_POLL_SECONDS
            if next_due is not None:
                wait = min(wait, max(0.0, next_due - self.engine.clock()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=wait)

    async def _deliver_batch(self, due: list[Delivery]) -> None:
        by_endpoint: dict[str, list[Delivery]] = defaultdict(list)
        if self.engine.delivery_mode.shuffle:
            self.engine.delivery_mode.rng.shuffle(due)
        for delivery in due:
            by_endpoint[delivery.endpoint_id].append(delivery)
        await asyncio.gather(*(self._deliver_in_turn(group) for group in by_endpoint.values()))

    async def _deliver_in_turn(self, deliveries: list[Delivery]) -> None:
        for delivery in deliveries:
            try:
                await self.attempt(delivery)
            except Exception:
                # Never leave a broken delivery due at once: that would spin the loop.
                logger.exception("webhook delivery %s failed unexpectedly", delivery.id)
                delivery.next_attempt_at = self.engine.clock() + self.backoff(
                    len(delivery.attempts) + 1
                )
                self.engine.store.save_delivery(delivery)

    async def attempt(self, delivery: Delivery) -> Delivery:
        """One signed POST of the event; records the attempt and schedules the next one."""
        assert self._client is not None
        engine = self.engine
        found = engine.store.get_object(delivery.endpoint_id)
        if found is None or found[1] or found[0].get("status") != "enabled":
            delivery.status = "cancelled"
            delivery.next_attempt_at = None
            engine.store.save_delivery(delivery)
            return delivery
        endpoint = found[0]
        stored = engine.store.get_event(delivery.event_id)
        if stored is None:
            delivery.status = "cancelled"
            delivery.next_attempt_at = None
            engine.store.save_delivery(delivery)
            return delivery
        event = engine.render_events([stored])[0]
        body = json.dumps(event, indent=2).encode("utf-8")
        timestamp = int(engine.clock())
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": stripe_signature(body, endpoint["secret"], timestamp),
        }
        started = time.monotonic()
        status_code: int | None = None
        error: str | None = None
        response_body: str | None = None
        try:
            response = await self._client.post(endpoint["url"], content=body, headers=headers)
            status_code = response.status_code
            # Kept short, as Stripe's dashboard does: enough to see what the receiver said.
            response_body = response.text[:RESPONSE_BODY_LIMIT]
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        attempted_at = engine.clock()
        delivery.attempts.append(
            {
                "at": attempted_at,
                "status_code": status_code,
                "error": error,
                "response_body": response_body,
                "duration_ms": round((time.monotonic() - started) * 1000, 1),
                "signature_timestamp": timestamp,
            }
        )
        if status_code is not None and 200 <= status_code < 300:
            delivery.status = "succeeded"
            delivery.next_attempt_at = None
        elif attempted_at - delivery.created >= engine.settings.webhook_give_up_after_seconds:
            delivery.status = "failed"
            delivery.next_attempt_at = None
        else:
            delivery.next_attempt_at = attempted_at + self.backoff(len(delivery.attempts))
        engine.store.save_delivery(delivery)
        logger.info(
            "webhook %s event=%s type=%s endpoint=%s attempt=%d status=%s",
            delivery.status,
            delivery.event_id,
            event["type"],
            delivery.endpoint_id,
            len(delivery.attempts),
            status_code if status_code is not None else error,
        )
        mode = engine.delivery_mode
        if (
            delivery.status == "succeeded"
            and delivery.reason != "duplicate"
            and mode.duplicate_rate > 0
            and mode.rng.random() < mode.duplicate_rate
        ):
            engine.duplicate_delivery(delivery)
        return delivery

    def backoff(self, attempts: int) -> float:
        settings = self.engine.settings
        delay = settings.webhook_initial_backoff_seconds * 2 ** max(0, attempts - 1)
        return float(min(settings.webhook_max_backoff_seconds, delay))
