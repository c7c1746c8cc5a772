"""The Zendesk-compatible support sandbox as a FastAPI app.

`/api/v2/...` speaks the Zendesk REST API subset we use (API-token basic auth, Zendesk
error bodies, cursor pagination, Idempotency-Key on ticket creation only, 429 + Retry-After),
each path with or without `.json`, as Zendesk answers both. `/_sandbox/...` is test control
with no auth: health, fault injection, webhook delivery log.
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import hmac
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox.support._http import ZendeskError, json_response
from sandbox.support._organization_fields import organization_fields_router
from sandbox.support._organizations import organizations_router
from sandbox.support._search import search_router
from sandbox.support._store import SupportStore
from sandbox.support._tickets import API_USER_ID, tickets_router
from sandbox.support._webhooks import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_RETRY_DELAYS,
    EVENT_TYPE_PREFIX,
    TRIGGER_SUBSCRIPTION,
    WebhookDispatcher,
)

API_PREFIX = "/api/v2/"


class _JsonSuffixOptional:
    """Routes `/api/v2/x.json` as `/api/v2/x`: Zendesk answers both spellings."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and path.startswith(API_PREFIX) and path.endswith(".json"):
            scope = {**scope, "path": path.removesuffix(".json")}
        await self.app(scope, receive, send)


def _webhook_subscriptions(webhook: dict[str, Any]) -> list[str]:
    """The validated `subscriptions` of a webhook being created, refused as Zendesk does."""
    subscriptions = webhook.get("subscriptions", [])
    if not isinstance(subscriptions, list) or not all(isinstance(s, str) for s in subscriptions):
        raise ZendeskError(400, "InvalidParameter", "webhook.subscriptions must be a list")
    events = [s for s in subscriptions if s != TRIGGER_SUBSCRIPTION]
    unknown = [s for s in events if not s.startswith(EVENT_TYPE_PREFIX)]
    if unknown:
        raise ZendeskError(400, "InvalidParameter", f"unknown subscriptions {unknown}")
    if events and len(events) != len(subscriptions):
        raise ZendeskError(
            400,
            "InvalidParameter",
            "a webhook subscribes to events or connects to triggers, not both",
        )
    if events and (webhook.get("http_method"), webhook.get("request_format")) != ("POST", "json"):
        raise ZendeskError(400, "InvalidParameter", "a webhook subscribed to events must POST json")
    return subscriptions


class _Faults:
    """Answers queued by `POST /_sandbox/faults`, consumed one per API call."""

    def __init__(self) -> None:
        self._queue: collections.deque[tuple[int, float | None]] = collections.deque()

    def add(self, status: int, count: int, retry_after: float | None) -> None:
        self._queue.extend([(status, retry_after)] * count)

    def clear(self) -> None:
        self._queue.clear()

    def __len__(self) -> int:
        return len(self._queue)

    def take(self) -> ZendeskError | None:
        if not self._queue:
            return None
        status, retry_after = self._queue.popleft()
        headers = {} if retry_after is None else {"Retry-After": str(math.ceil(retry_after))}
        if status == 429:
            return ZendeskError(
                429, "TooManyRequests", "Rate limit exceeded (injected)", headers=headers
            )
        return ZendeskError(
            status, "ServiceUnavailable", "Service unavailable (injected)", headers=headers
        )


class _RateLimiter:
    """A sliding one-minute window over API calls, as Zendesk's per-minute account limit."""

    def __init__(self, per_minute: int | None) -> None:
        self.per_minute = per_minute
        self._calls: collections.deque[float] = collections.deque()

    def check(self) -> ZendeskError | None:
        if self.per_minute is None:
            return None
        now = time.monotonic()
        while self._calls and self._calls[0] <= now - 60.0:
            self._calls.popleft()
        if len(self._calls) >= self.per_minute:
            retry_after = max(1, math.ceil(self._calls[0] + 60.0 - now))
            return ZendeskError(
                429,
                "TooManyRequests",
                f"Rate limit of {self.per_minute} requests per minute exceeded",
                headers={
                    "Retry-After": str(retry_after),
                    "X-Rate-Limit": str(self.per_minute),
                    "X-Rate-Limit-Remaining": "0",
                },
            )
        self._calls.append(now)
        return None

    def remaining(self) -> int | None:
        if self.per_minute is None:
            return None
        return max(0, self.per_minute - len(self._calls))


def _authenticated(header: str | None, email: str, api_token: str) -> bool:
    if not header or not header.lower().startswith("basic "):
        return False
    try:
        presented = base64.b64decode(header[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    expected = f"{email}/token:{api_token}".encode()
    return hmac.compare_digest(presented, expected)


def create_app(
    state_path: Path | None,
    email: str,
    api_token: str,
    webhook_endpoints: list[tuple[str, str]] | None = None,
    rate_limit_per_minute: int | None = None,
    *,
    webhook_retry_delays: Sequence[float] = DEFAULT_RETRY_DELAYS,
    webhook_max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    webhook_timeout: float = 10.0,
) -> FastAPI:
    """A support sandbox keeping its state in SQLite at `state_path` (memory when None).

    `webhook_endpoints` are (url, secret) pairs subscribed to every event type the sandbox
    emits; the retry keywords
    let tests shorten the backoff between delivery attempts.
    """
    store = SupportStore(state_path)
    webhooks = WebhookDispatcher(
        store,
        webhook_endpoints or [],
        retry_delays=webhook_retry_delays,
        max_attempts=webhook_max_attempts,
        timeout=webhook_timeout,
    )
    faults = _Faults()
    limiter = _RateLimiter(rate_limit_per_minute)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await webhooks.start()
        try:
            yield
        finally:
            await webhooks.stop()
            store.close()

    app = FastAPI(title="ledgerbridge support sandbox (Zendesk API v2 subset)", lifespan=lifespan)
    app.add_middleware(_JsonSuffixOptional)
    app.state.store = store
    app.state.webhooks = webhooks

    @app.middleware("http")
    async def zendesk_gate(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if not request.url.path.startswith(API_PREFIX):
            return await call_next(request)
        # Injected faults come first: they stand for the platform failing before it looks.
        fault = faults.take()
        if fault is not None:
            return fault.response()
        if not _authenticated(request.headers.get("authorization"), email, api_token):
            return JSONResponse({"error": "Couldn't authenticate you"}, status_code=401)
        limited = limiter.check()
        if limited is not None:
            return limited.response()
        response = await call_next(request)
        remaining = limiter.remaining()
        if remaining is not None:
            response.headers["X-Rate-Limit"] = str(limiter.per_minute)
            response.headers["X-Rate-Limit-Remaining"] = str(remaining)
        return response

    @app.exception_handler(ZendeskError)
    async def zendesk_error(_: Request, exc: ZendeskError) -> Response:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def unknown_endpoint(_: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return json_response(404, {"error": "InvalidEndpoint", "description": "Not found"})
        return json_response(
            exc.status_code, {"error": "InvalidEndpoint", "description": exc.detail}
        )

    app.include_router(organizations_router(store, webhooks))
    app.include_router(organization_fields_router(store))
    app.include_router(tickets_router(store, webhooks))
    app.include_router(search_router(store))

    @app.get("/api/v2/users/me")
    async def current_user(request: Request) -> Response:
        # The integration's own agent; tickets and comments default to it as author.
        return json_response(
            200,
            {
                "user": {
                    "url": f"{str(request.base_url).rstrip('/')}/api/v2/users/{API_USER_ID}.json",
                    "id": API_USER_ID,
                    "email": email,
                    "name": "ledgerbridge integration",
                    "role": "admin",
                    "active": True,
                }
            },
        )

    @app.post("/api/v2/webhooks")
    async def create_webhook(request: Request) -> Response:
        """Zendesk's webhook registration (the subset a test or the local stack needs): the
        webhook receives the event types it subscribes to, signed with the secret
        `signing_secret` returns."""
        try:
            webhook = (await request.json())["webhook"]
            if not isinstance(webhook, dict):
                raise TypeError("webhook")
        except (ValueError, KeyError, TypeError) as err:
            raise ZendeskError(400, "InvalidParameter", "the body needs a webhook object") from err
        for mandatory in ("name", "endpoint", "http_method", "request_format", "status"):
            if not isinstance(webhook.get(mandatory), str) or not webhook[mandatory].strip():
                raise ZendeskError(400, "InvalidParameter", f"webhook.{mandatory} is required")
        endpoint = webhook["endpoint"]
        if not endpoint.startswith(("http://", "https://")):
            raise ZendeskError(400, "InvalidParameter", "webhook.endpoint must be an http URL")
        subscriptions = _webhook_subscriptions(webhook)
        active = webhook["status"] == "active"
        hook_id, _secret = webhooks.add_endpoint(endpoint, subscriptions if active else [])
        return json_response(201, {"webhook": {
            "id": hook_id, "name": webhook["name"], "endpoint": endpoint,
            "status": webhook["status"], "http_method": webhook["http_method"],
            "request_format": webhook["request_format"], "subscriptions": subscriptions,
        }})  # fmt: skip

    @app.get("/api/v2/webhooks/{hook_id}/signing_secret")
    async def webhook_signing_secret(hook_id: str) -> Response:
        secret = webhooks.signing_secret(hook_id)
        if secret is None:
            raise ZendeskError(404, "RecordNotFound", "Not found")
        return json_response(200, {"signing_secret": {"algorithm": "SHA256", "secret": secret}})

    @app.get("/_sandbox/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "persistent": state_path is not None}

    @app.post("/_sandbox/faults")
    async def inject_faults(request: Request) -> Response:
        try:
            spec = await request.json()
            status = int(spec["status"])
            count = int(spec.get("count", 1))
            retry_after = spec.get("retry_after")
            retry_after = None if retry_after is None else float(retry_after)
        except (ValueError, KeyError, TypeError) as err:
            raise ZendeskError(
                400,
                "InvalidParameter",
                'Expected {"status": 429|5xx, "count": N, "retry_after": S}',
            ) from err
        if not (status == 429 or 500 <= status <= 599) or count < 1:
            raise ZendeskError(400, "InvalidParameter", "status must be 429 or 5xx, count >= 1")
        faults.add(status, count, retry_after)
        return json_response(200, {"pending_faults": len(faults)})

    @app.delete("/_sandbox/faults")
    async def clear_faults() -> Response:
        faults.clear()
        return json_response(200, {"pending_faults": 0})

    @app.get("/_sandbox/webhooks/deliveries")
    async def webhook_deliveries(
        status: str | None = None, event_type: str | None = None
    ) -> dict[str, Any]:
        return {"deliveries": webhooks.deliveries(status=status, event_type=event_type)}

    return app


__all__ = ["create_app"]
