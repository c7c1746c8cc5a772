"""The fault-injection proxy: a reverse proxy in front of one counterpart, misbehaving on cue.

Every request not under `/_faults/` is matched against the rules (see `_rules`) and then
forwarded to the upstream with httpx, answered with an injected 503/429, refused, or
forwarded and its answer dropped. The control API on the same port:

    GET    /_faults/rules    the rules, with how often each fired and how often it still will
    PUT    /_faults/rules    replace all: `[rule, ...]` or `{"rules": [...], "seed": S}`
    POST   /_faults/rules    add one rule (201 with its id)
    DELETE /_faults/rules    remove all rules
    GET    /_faults/stats    requests, forwarded, upstream errors, faults by mode
    DELETE /_faults/stats    zero the counters
    GET    /_faults/health   liveness and the upstream URL

"refuse" is emulated by reading the request and resetting the TCP connection (RST)
without forwarding or answering: the caller's httpx raises a `TransportError`
(`ReadError` / `RemoteProtocolError`), as for a server that went away. A caller that must
see a genuine ECONNREFUSED can be pointed at a port nobody listens on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

import httpx
import pydantic

from sandbox.faults._http import (
    HOP_BY_HOP,
    MAX_HEAD,
    BadRequest,
    Request,
    read_request,
    reset,
    write_response,
)
from sandbox.faults._rules import FaultRule, RuleBook

CONTROL_PREFIX = "/_faults/"
_RULE_LIST = pydantic.TypeAdapter(list[FaultRule])
# httpx adds these when absent; a transparent proxy must not invent them for the caller.
_CLIENT_DEFAULT_HEADERS = ("accept", "accept-encoding", "user-agent")

logger = logging.getLogger("sandbox.faults")


class FaultProxy:
    """One listening proxy in front of `upstream` (e.g. `http://127.0.0.1:8000`)."""

    def __init__(
        self,
        upstream: str,
        *,
        seed: int | None = None,
        upstream_timeout: float = 60.0,
        rules: list[FaultRule] | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.rules = RuleBook(seed=seed)
        if rules:
            self.rules.replace(rules)
        self._timeout = upstream_timeout
        self._client: httpx.AsyncClient | None = None
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the fault proxy is not listening")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
        self._server = await asyncio.start_server(
            self._serve_connection, host, port, limit=MAX_HEAD
        )

    async def serve_forever(self) -> None:
        if self._server is None:
            raise RuntimeError("start() the fault proxy first")
        await self._server.serve_forever()

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        if self._client is not None:
            await self._client.aclose()

    # --- connections ------------------------------------------------------------------

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            while True:
                try:
                    request = await read_request(reader, writer)
                except BadRequest as err:
                    await write_response(
                        writer, err.status, _json_headers(), _json({"error": err.reason}),
                        keep_alive=False,
                    )  # fmt: skip
                    break
                if request is None:
                    break
                if not await self._handle(request, reader, writer):
                    return  # the connection was reset on purpose
                if not request.keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # The proxy is closing; this task is the connection's top level, so end quietly
            # (a cancelled stream-server task is logged as an error by asyncio on 3.11).
            writer.transport.abort()
        finally:
            if task is not None:
                self._connections.discard(task)
            if not writer.transport.is_closing():
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    async def _handle(
        self, request: Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Answer or misbehave; False when the connection is gone (reset)."""
        if request.path.startswith(CONTROL_PREFIX):
            status, body = self._control(request)
            await write_response(
                writer, status, _json_headers(), body, keep_alive=request.keep_alive
            )
            return True
        decision = self.rules.decide(request.method, request.path, request.body)
        if decision.delay:
            await asyncio.sleep(decision.delay)
        fault = decision.fault
        where = f"{request.method} {request.path}"
        if fault is None:
            status, headers, body = await self._forward(request)
            await write_response(
                writer,
                status,
                headers,
                body,
                keep_alive=request.keep_alive,
                head=request.method == "HEAD",
            )
            return True
        logger.info("injecting %s on %s", fault.mode, where)
        if fault.mode == "refuse":
            reset(writer)
            return False
        if fault.mode == "unavailable":
            await write_response(
                writer,
                fault.status,
                _json_headers(),
                _json({"error": "service unavailable (injected by the fault proxy)"}),
                keep_alive=request.keep_alive,
            )
            return True
        if fault.mode == "rate_limited":
            await write_response(
                writer,
                429,
                [*_json_headers(), ("Retry-After", _seconds(fault.retry_after))],
                _json({"error": "too many requests (injected by the fault proxy)"}),
                keep_alive=request.keep_alive,
            )
            return True
        # drop: the upstream does the work and answers; the caller never hears of it.
        status, _, _ = await self._forward(request)
        logger.info("dropped the upstream's %d answer to %s", status, where)
        if fault.hang:
            with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
                # Until the caller gives up (closes) or the hang is over.
                await asyncio.wait_for(reader.read(), fault.hang)
        reset(writer)
        return False

    async def _forward(self, request: Request) -> tuple[int, list[tuple[str, str]], bytes]:
        assert self._client is not None
        url = self.upstream + request.path + (f"?{request.query}" if request.query else "")
        # The caller's Host goes through as it was: a middlebox that rewrote it would break
        # what the caller signed over its URL (OAuth 1.0a, as NetSuite's TBA) and the links
        # the upstream builds from it, which then lead the caller back through the proxy.
        headers = [
            (name, value)
            for name, value in request.headers
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length"
        ]
        outgoing = self._client.build_request(
            request.method, url, headers=headers, content=request.body or None
        )
        sent = {name.lower() for name, _ in headers}
        for name in _CLIENT_DEFAULT_HEADERS:
            if name not in sent and name in outgoing.headers:
                del outgoing.headers[name]
        try:
            response = await self._client.send(outgoing, stream=True)
            try:
                # Raw bytes: the caller decodes whatever Content-Encoding the upstream chose.
                body = b"".join([chunk async for chunk in response.aiter_raw()])
            finally:
                await response.aclose()
        except httpx.HTTPError as err:
            self.rules.upstream_errors += 1
            logger.warning("upstream %s failed: %s", self.upstream, type(err).__name__)
            return (
                502,
                _json_headers(),
                _json({"error": f"upstream unreachable ({type(err).__name__})"}),
            )
        self.rules.forwarded += 1
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw]
        return response.status_code, headers, body

    # --- control API --------------------------------------------------------------------

    def _control(self, request: Request) -> tuple[int, bytes]:
        route = (request.method, request.path.rstrip("/"))
        try:
            if route == ("GET", "/_faults/rules"):
                return 200, _json({"rules": self.rules.describe()})
            if route == ("PUT", "/_faults/rules"):
                payload = _load(request.body)
                if isinstance(payload, dict):
                    if "seed" in payload:
                        self.rules.reseed(payload["seed"])
                    payload = payload.get("rules", [])
                rules = self.rules.replace(_RULE_LIST.validate_python(payload))
                return 200, _json({"rules": rules})
            if route == ("POST", "/_faults/rules"):
                rule = self.rules.add(FaultRule.model_validate(_load(request.body)))
                return 201, _json(rule)
            if route == ("DELETE", "/_faults/rules"):
                self.rules.clear()
                return 200, _json({"rules": []})
            if route == ("GET", "/_faults/stats"):
                return 200, _json(self.rules.stats())
            if route == ("DELETE", "/_faults/stats"):
                self.rules.reset_stats()
                return 200, _json(self.rules.stats())
            if route == ("GET", "/_faults/health"):
                return 200, _json({"status": "ok", "upstream": self.upstream})
        except (ValueError, pydantic.ValidationError) as err:
            return 400, _json({"error": str(err)})
        return 404, _json({"error": f"no control route {request.method} {request.path}"})


def _load(body: bytes) -> Any:
    try:
        return json.loads(body or b"null")
    except json.JSONDecodeError as err:
        raise ValueError(f"the body is not JSON: {err}") from err


def _json(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def _json_headers() -> list[tuple[str, str]]:
    return [("Content-Type", "application/json")]


def _seconds(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


__all__ = ["CONTROL_PREFIX", "FaultProxy"]
