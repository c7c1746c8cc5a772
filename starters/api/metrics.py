"""Prometheus on the API: `GET /metrics`, and the webhook route class that counts each
delivery by source, outcome and reason and times its acknowledgement.

`/metrics` needs no key: it answers on the address the API binds (loopback by default), like
the rest of the API; expose it no further than the API itself. Besides the process's counters
it reads the work waiting on finance from Temporal visibility when scraped (cached briefly,
see `adapters.metrics.WaitingWorkCollector`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from adapters import metrics
from starters.api.temporal import TemporalConnection, TemporalUnavailable

# The webhook paths' last segment names the sender's system as the receipts do.
SOURCE_OF_PATH = {"stripe": "billing", "zendesk": "support"}
# What a refusal's detail starts with (starters/api/webhooks.py) says why it was refused.
REFUSAL_REASONS = (
    ("signature refused", "signature"),
    ("event refused", "api_version"),
    ("malformed event", "malformed"),
    ("body larger than", "too_large"),
)


def refusal(err: HTTPException) -> tuple[str, str]:
    """Outcome and reason of a webhook answered with an HTTP error."""
    if err.status_code == 503:
        return "unavailable", "support"  # the only 503 a handler raises itself: the ticket
    detail = str(err.detail)
    reason = next((r for prefix, r in REFUSAL_REASONS if detail.startswith(prefix)), "other")
    return "refused", reason


def answered_status(response: Response) -> str:
    """accepted | duplicate | ignored, from the `Accepted` answer's body."""
    try:
        status = json.loads(bytes(response.body)).get("status")
    except (ValueError, AttributeError):
        return "error"
    return str(status)


class MeteredWebhookRoute(APIRoute):
    """Counts every delivery of its route: received, then answered with an outcome."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        source = SOURCE_OF_PATH.get(self.path.rstrip("/").rsplit("/", 1)[-1], "other")

        async def metered(request: Request) -> Response:
            metrics.WEBHOOKS_RECEIVED.labels(metrics.bounded(source, metrics.WEBHOOK_SOURCES)).inc()
            started = time.perf_counter()
            outcome, reason = "error", "other"
            try:
                response = await handle(request)
                outcome, reason = answered_status(response), "none"
                return response
            except HTTPException as err:
                outcome, reason = refusal(err)
                raise
            except TemporalUnavailable:
                outcome, reason = "unavailable", "temporal"
                raise
            finally:
                metrics.webhook_answered(source, outcome, reason, time.perf_counter() - started)

        return metered


def install(app: FastAPI, temporal: TemporalConnection) -> None:
    """`GET /metrics`: the process's metrics and the waiting work read from Temporal."""

    async def read() -> metrics.WaitingSnapshot:
        return await metrics.read_waiting_work(await temporal.client())

    waiting = metrics.WaitingWorkCollector(read)
    registry = metrics.registry_with(waiting)
    app.state.waiting_work = waiting

    @app.get("/metrics", include_in_schema=False)
    async def scrape() -> Response:
        await waiting.refresh()
        body, content_type = metrics.exposition(registry)
        return Response(body, media_type=content_type)


__all__ = ["MeteredWebhookRoute", "install"]
