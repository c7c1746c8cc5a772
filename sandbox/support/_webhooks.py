"""Zendesk-style event webhooks: queued in SQLite with the change, delivered at least once.

A webhook receives the events it subscribes to: its `subscriptions` list event types
(`zen:event-type:organization.created`, ...); one connected to triggers and automations
(`conditional_ticket_events`) gets no events (the sandbox has no triggers). Endpoints
configured at start subscribe to every event type the sandbox emits (`EVENT_TYPES`).
An event is stored as one delivery per subscribed endpoint in the same transaction as the
change that caused it, so a crash never loses one; a background task posts due deliveries,
signed like Zendesk, and reschedules failures with backoff. A restart picks up whatever is pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from sandbox.support._signature import signature_headers, signature_timestamp
from sandbox.support._store import Delivery, SupportStore

logger = logging.getLogger("sandbox.support.webhooks")

EVENT_VERSION = "2022-11-06"
EVENT_TYPE_PREFIX = "zen:event-type:"
# A webhook with this subscription is invoked by triggers and automations, never by events.
TRIGGER_SUBSCRIPTION = "conditional_ticket_events"
# Every event type the sandbox emits, as a webhook subscribes to it.
EVENT_TYPES: frozenset[str] = frozenset(
    f"{EVENT_TYPE_PREFIX}{name}"
    for name in (
        "organization.created",
        "organization.deleted",
        "organization.name_changed",
        "organization.external_id_changed",
        "organization.group_changed",
        "organization.tags_changed",
        "organization.custom_field_changed",
        "ticket.created",
        "ticket.comment_added",
        "ticket.status_changed",
        "ticket.priority_changed",
        "ticket.subject_changed",
        "ticket.type_changed",
        "ticket.organization_changed",
        "ticket.group_assignment_changed",
        "ticket.agent_assignment_changed",
        "ticket.external_id_changed",
        "ticket.tags_changed",
        "ticket.custom_field_changed",
    )
)
# Local stacks are often down for minutes: retry for hours before giving up on a delivery.
DEFAULT_RETRY_DELAYS: tuple[float, ...] = (1, 2, 5, 10, 30, 60, 120, 300)
DEFAULT_MAX_ATTEMPTS = 50
ACCOUNT_ID = 1


def webhook_id(url: str) -> str:
    """A stable id per endpoint, sent as X-Zendesk-Webhook-Id like a registered webhook."""
    return "01" + hashlib.sha256(url.encode()).hexdigest()[:24].upper()


class WebhookDispatcher:
    def __init__(
        self,
        store: SupportStore,
        endpoints: Sequence[tuple[str, str]],
        *,
        retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        timeout: float = 10.0,
    ) -> None:
        if not retry_delays:
            raise ValueError("retry_delays needs at least one delay")
        self._store = store
        self._secrets = {url: secret for url, secret in endpoints}
        self._subscriptions: dict[str, frozenset[str]] = dict.fromkeys(self._secrets, EVENT_TYPES)
        self._retry_delays = tuple(retry_delays)
        self._max_attempts = max_attempts
        self._timeout = timeout
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None

    def add_endpoint(self, url: str, subscriptions: Sequence[str]) -> tuple[str, str]:
        """Register an endpoint at run time (Zendesk's `POST /api/v2/webhooks`); returns its
        webhook id and signing secret. Registering a known URL returns the same secret and
        replaces its subscriptions (one webhook per URL in the sandbox)."""
        secret = self._secrets.setdefault(url, "whsec_" + uuid.uuid4().hex)
        self._subscriptions[url] = frozenset(subscriptions)
        return webhook_id(url), secret

    def signing_secret(self, hook_id: str) -> str | None:
        for url, secret in self._secrets.items():
            if webhook_id(url) == hook_id:
                return secret
        return None

    # -- emitting (called by resource handlers inside their store transaction) ----------

    def emit(
        self,
        event_type: str,
        subject: str,
        detail: dict[str, Any],
        event: dict[str, Any] | None = None,
    ) -> str:
        """Queue `zen:event-type:{event_type}` for every endpoint subscribed to it; returns
        the event id."""
        event_id = str(uuid.uuid4())
        full_type = f"{EVENT_TYPE_PREFIX}{event_type}"
        if full_type not in EVENT_TYPES:
            raise ValueError(f"{full_type} is not an event type the sandbox knows")
        payload: dict[str, Any] = {
            "account_id": ACCOUNT_ID,
            "detail": detail,
            "event": event or {},
            "id": event_id,
            "subject": subject,
            "time": signature_timestamp(datetime.now(UTC)),
            "type": full_type,
            "zendesk_event_version": EVENT_VERSION,
        }
        body = json.dumps(payload, separators=(",", ":"))
        subscribed = [url for url in self._secrets if full_type in self._subscriptions[url]]
        for url in subscribed:
            self._store.enqueue_delivery(
                delivery_id=str(uuid.uuid4()),
                event_id=event_id,
                event_type=full_type,
                subject=subject,
                endpoint_url=url,
                payload=body,
            )
        if self._wake is not None and subscribed:
            self._wake.set()
        return event_id

    # -- delivering ------------------------------------------------------------------

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="support-webhook-dispatcher")

    async def stop(self) -> None:
        # A delivery cut off here stays pending and is sent again after a restart.
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._task = None
        self._wake = None

    async def _run(self) -> None:
        assert self._wake is not None
        async with httpx.AsyncClient(timeout=httpx.Timeout(self._timeout)) as client:
            while True:
                try:
                    due = self._store.due_deliveries(time.time())
                    if due:
                        await asyncio.gather(*(self._attempt(client, d) for d in due))
                        continue
                    next_at = self._store.next_due_at()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # The loop must outlive a bad row or a closed store; try again shortly.
                    logger.exception("webhook dispatcher iteration failed")
                    next_at = time.time() + 1.0
                wait = 1.0 if next_at is None else min(max(next_at - time.time(), 0.0), 1.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=wait)
                self._wake.clear()

    def _delay_after(self, attempts: int, retry_after: float | None) -> float:
        delay = self._retry_delays[min(attempts - 1, len(self._retry_delays) - 1)]
        if retry_after is not None:
            delay = max(delay, min(retry_after, 3600.0))
        return delay

    async def _attempt(self, client: httpx.AsyncClient, delivery: Delivery) -> None:
        secret = self._secrets.get(delivery.endpoint_url)
        if secret is None:
            self._store.record_attempt(
                delivery.id,
                status_code=None,
                error="endpoint no longer configured",
                duration_ms=0,
                outcome="failed",
                next_attempt_at=None,
            )
            return
        body = delivery.payload.encode()
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Zendesk Webhook",
            "X-Zendesk-Account-Id": str(ACCOUNT_ID),
            "X-Zendesk-Webhook-Id": webhook_id(delivery.endpoint_url),
            "X-Zendesk-Webhook-Invocation-Id": delivery.id,
            # Signed at send time, as Zendesk does, so a late retry is not rejected as stale.
            **signature_headers(body, secret, datetime.now(UTC)),
        }
        started = time.monotonic()
        status_code: int | None = None
        error: str | None = None
        retry_after: float | None = None
        try:
            response = await client.post(delivery.endpoint_url, content=body, headers=headers)
            status_code = response.status_code
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}"
                with contextlib.suppress(TypeError, ValueError):
                    retry_after = float(response.headers.get("retry-after"))
        except httpx.HTTPError as err:
            error = f"{type(err).__name__}: {err}"[:300]
        duration_ms = int((time.monotonic() - started) * 1000)
        attempts = delivery.attempts + 1
        if error is None:
            outcome, next_at = "delivered", None
        elif attempts >= self._max_attempts:
            outcome, next_at = "failed", None
        else:
            outcome, next_at = "pending", time.time() + self._delay_after(attempts, retry_after)
        self._store.record_attempt(
            delivery.id,
            status_code=status_code,
            error=error,
            duration_ms=duration_ms,
            outcome=outcome,
            next_attempt_at=next_at,
        )
        if outcome != "delivered":
            logger.warning(
                "webhook delivery %s (%s) attempt %d: %s -> %s",
                delivery.id,
                delivery.event_type,
                attempts,
                error,
                outcome,
            )

    def deliveries(
        self, *, status: str | None = None, event_type: str | None = None
    ) -> list[dict[str, Any]]:
        """What `GET /_sandbox/webhooks/deliveries` shows: each delivery and its attempts."""

        def iso(moment: float | None) -> str | None:
            if moment is None:
                return None
            return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds")

        if event_type and not event_type.startswith("zen:"):
            event_type = f"zen:event-type:{event_type}"
        listed = []
        for delivery, attempts in self._store.list_deliveries(status=status, event_type=event_type):
            listed.append(
                {
                    "id": delivery.id,
                    "event_id": delivery.event_id,
                    "event_type": delivery.event_type,
                    "subject": delivery.subject,
                    "endpoint_url": delivery.endpoint_url,
                    "status": delivery.status,
                    "attempt_count": delivery.attempts,
                    "created_at": iso(delivery.created_at),
                    "next_attempt_at": iso(delivery.next_attempt_at),
                    "delivered_at": iso(delivery.delivered_at),
                    "attempts": [
                        {
                            "attempt": attempt["attempt"],
                            "at": iso(attempt["at"]),
                            "status_code": attempt["status_code"],
                            "error": attempt["error"],
                            "duration_ms": attempt["duration_ms"],
                        }
                        for attempt in attempts
                    ],
                    "payload": json.loads(delivery.payload),
                }
            )
        return listed


__all__ = [
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_RETRY_DELAYS",
    "EVENT_TYPES",
    "EVENT_TYPE_PREFIX",
    "TRIGGER_SUBSCRIPTION",
    "WebhookDispatcher",
    "webhook_id",
]
