"""The correlation id of each request: taken from `X-Correlation-Id` or made up, bound to the
log context, kept in `request.state.correlation_id` and echoed on the answer.

Plain ASGI rather than `@app.middleware("http")`: Starlette's BaseHTTPMiddleware runs the
app in a second task and re-streams the answer, which costs every webhook CPU for nothing.
"""

from __future__ import annotations

import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from adapters.logs import get_logger
from adapters.tracing import business_scope

CORRELATION_HEADER = "X-Correlation-Id"
_HEADER = CORRELATION_HEADER.lower().encode()
MAX_LENGTH = 128

log = get_logger("ledgerbridge.api")


class CorrelationMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope["headers"] if name == _HEADER), b"")
        correlation_id = given.decode("latin-1")[:MAX_LENGTH] or str(uuid.uuid4())
        scope.setdefault("state", {})["correlation_id"] = correlation_id
        echoed = (_HEADER, correlation_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), echoed]
            await send(message)

        structlog.contextvars.bind_contextvars(correlation_id=correlation_id)
        try:
            with business_scope(correlation_id=correlation_id):  # on this request's spans
                await self.app(scope, receive, send_with_id)
        except Exception:
            # The server answers 500 after this; the log line is what ties it to the request.
            log.exception("unhandled error", method=scope.get("method"), path=scope.get("path"))
            raise
        finally:
            structlog.contextvars.clear_contextvars()


__all__ = ["CORRELATION_HEADER", "CorrelationMiddleware"]
