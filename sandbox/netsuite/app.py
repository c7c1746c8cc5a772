"""The NetSuite-compatible sandbox as a FastAPI app.

`/services/rest/record/v1/...` and `/services/rest/query/v1/suiteql` speak the SuiteTalk REST
subset ledgerbridge uses (`_records.py`, `_suiteql.py`), every call signed with token-based
authentication (`_auth.py`) and counted against the account's concurrency limit.
`/_sandbox/...` is test control without authentication: health, accounting periods, injected
faults, latency, and the concurrency limit (with counters of the requests served, refused,
the peak in flight and the seconds requests held a slot).

The concurrency limit: NetSuite governs REST web services with one limit per account, the
combined count of requests in flight (Help Center, "Concurrency Governance and Session
Management", "Web Services and RESTlet Concurrency Governance"); the base limit of the
standard (formerly shared) service tier, and of every developer account, is 5. A request past
it is refused at once, here as HTTP 429 with `o:errorCode` CONCURRENCY_LIMIT_EXCEEDED.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from sandbox.netsuite._auth import Credentials, TokenAuthentication
from sandbox.netsuite._books import open_books
from sandbox.netsuite._http import NetSuiteError, invalid_login, json_response, loads
from sandbox.netsuite._records import RECORD_TYPES, Books
from sandbox.netsuite._suiteql import MAX_LIMIT, register_functions, run_suiteql

API_PREFIX = "/services/rest/"
RECORD_PREFIX = "/services/rest/record/v1"
SUITEQL_PATH = "/services/rest/query/v1/suiteql"
# The base concurrency limit of NetSuite's standard service tier and of developer accounts.
DEFAULT_CONCURRENCY_LIMIT = 5


class _Faults:
    """Answers queued by `POST /_sandbox/faults`, one per API call: before the account looks
    at it, or (`afterCommit`) in place of the answer of a call the account carried out, as a
    gateway that timed out would (the write is committed, the caller never hears of it)."""

    def __init__(self) -> None:
        self._queue: collections.deque[tuple[int, bool, str | None]] = collections.deque()

    def add(self, status: int, count: int, after_commit: bool, method: str | None) -> None:
        self._queue.extend([(status, after_commit, method)] * count)

    def clear(self) -> None:
        self._queue.clear()

    def __len__(self) -> int:
        return len(self._queue)

    def take(self, after_commit: bool, method: str) -> NetSuiteError | None:
        """The next fault when it is for this phase and this HTTP method (or any method)."""
        if not self._queue or self._queue[0][1] != after_commit:
            return None
        if self._queue[0][2] not in (None, method):
            return None
        status, _, _ = self._queue.popleft()
        if status == 429:
            return _concurrency_refusal()
        return NetSuiteError(status, "UNEXPECTED_ERROR",
                             "An unexpected error occurred (injected).")  # fmt: skip


def _concurrency_refusal() -> NetSuiteError:
    return NetSuiteError(
        429,
        "CONCURRENCY_LIMIT_EXCEEDED",
        "Concurrent request limit exceeded. Request blocked.",
    )


class _Governance:
    """The account's requests in flight, against its concurrency limit; how many it served and
    for how long they held a slot (what a benchmark needs to say whether the limit binds)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0
        self.refused = 0
        self.peak = 0
        self.served = 0
        self.busy_seconds = 0.0
        self.latency = 0.0


def _query_int(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise NetSuiteError(400, "INVALID_PARAMETER",
                            f"The value of {name} must be an integer.") from None  # fmt: skip


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = loads(await request.body() or b"null")
    except ValueError:
        raise NetSuiteError(400, "INVALID_CONTENT", "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise NetSuiteError(400, "INVALID_CONTENT", "The request body must be a JSON object.")
    return body


def _record_type(record: str) -> str:
    if record not in RECORD_TYPES:
        raise NetSuiteError(
            404,
            "INVALID_RECORD_TYPE",
            f"Record type '{record}' does not exist or is not supported by this sandbox.",
        )
    return record


def create_app(
    state_path: Path | None,
    credentials: Credentials,
    *,
    concurrency_limit: int = DEFAULT_CONCURRENCY_LIMIT,
    today: dt.date | None = None,
) -> FastAPI:
    """A NetSuite sandbox keeping its books in SQLite at `state_path` (memory when None),
    answering only requests signed with `credentials`."""
    db = open_books(state_path, today or dt.date.today())
    register_functions(db)
    books = Books(db)
    authentication = TokenAuthentication(credentials)
    faults = _Faults()
    governance = _Governance(concurrency_limit)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            db.close()

    app = FastAPI(title="ledgerbridge NetSuite sandbox (SuiteTalk REST subset)",
                  lifespan=lifespan)  # fmt: skip
    app.state.books = books
    app.state.governance = governance

    def refusal(request: Request) -> NetSuiteError | None:
        """Why NetSuite would turn this API call away before reading it, if it would: an
        injected fault, a request not signed by the account's token, the account's
        concurrency limit reached."""
        fault = faults.take(after_commit=False, method=request.method)
        if fault is not None:
            return fault
        headers = {key.lower(): value for key, value in request.headers.items()}
        if not authentication.verify(str(request.url), request.method, headers):
            return invalid_login()
        if governance.in_flight >= governance.limit:
            governance.refused += 1
            return _concurrency_refusal()
        return None

    @app.middleware("http")
    async def governed(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        refused = refusal(request) if request.url.path.startswith(API_PREFIX) else None
        if refused is not None:
            return refused.response()
        if not request.url.path.startswith(API_PREFIX):
            return await call_next(request)
        governance.in_flight += 1
        governance.peak = max(governance.peak, governance.in_flight)
        admitted = time.monotonic()
        try:
            books.base_url = str(request.base_url).rstrip("/")
            if governance.latency:
                await asyncio.sleep(governance.latency)
            response = await call_next(request)
            lost = faults.take(after_commit=True, method=request.method)
            return response if lost is None else lost.response()
        finally:
            governance.in_flight -= 1
            governance.served += 1
            governance.busy_seconds += time.monotonic() - admitted

    @app.exception_handler(NetSuiteError)
    async def netsuite_error(_: Request, exc: NetSuiteError) -> Response:
        return exc.response()

    @app.exception_handler(StarletteHTTPException)
    async def unknown_endpoint(_: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 405:
            return NetSuiteError(405, "INVALID_METHOD", "The HTTP method is not supported "
                                 "for this resource.").response()  # fmt: skip
        return NetSuiteError(exc.status_code, "INVALID_URL",
                             f"The URL is not valid: {exc.detail}").response()  # fmt: skip

    def created(record: str, record_id: int) -> Response:
        location = f"{books.base_url}{RECORD_PREFIX}/{record}/{record_id}"
        return Response(status_code=204, headers={"Location": location})

    @app.post(RECORD_PREFIX + "/{record}")
    async def create_record(record: str, request: Request) -> Response:
        record = _record_type(record)
        return created(record, books.create(record, await _json_body(request)))

    @app.get(RECORD_PREFIX + "/{record}/{key}")
    async def get_record(record: str, key: str, request: Request) -> Response:
        record = _record_type(record)
        expand = request.query_params.get("expandSubResources", "false").lower() == "true"
        return json_response(200, books.render(record, books.require(record, key), expand=expand))

    @app.get(RECORD_PREFIX + "/{record}/{key}/{sublist}")
    async def get_sublist(record: str, key: str, sublist: str) -> Response:
        record = _record_type(record)
        return json_response(200, books.render_sublist(record, books.require(record, key),
                                                       sublist))  # fmt: skip

    @app.put(RECORD_PREFIX + "/{record}/{key}")
    async def upsert_record(record: str, key: str, request: Request) -> Response:
        record = _record_type(record)
        return created(record, books.upsert(record, key, await _json_body(request)))

    @app.patch(RECORD_PREFIX + "/{record}/{key}")
    async def update_record(record: str, key: str, request: Request) -> Response:
        record = _record_type(record)
        replace = {name for name in request.query_params.get("replace", "").split(",") if name}
        return created(record, books.update(record, key, await _json_body(request), replace))

    @app.post(SUITEQL_PATH)
    async def suiteql(request: Request) -> Response:
        if "transient" not in request.headers.get("prefer", "").lower():
            raise NetSuiteError(
                400,
                "INVALID_HEADER",
                "Invalid Prefer header: a SuiteQL query needs the header 'Prefer: transient'.",
            )
        body = await _json_body(request)
        limit = _query_int(request, "limit", MAX_LIMIT)
        offset = _query_int(request, "offset", 0)
        self_url = f"{str(request.base_url).rstrip('/')}{SUITEQL_PATH}"
        return json_response(200, run_suiteql(db, body.get("q"), limit, offset, self_url))

    # --- test control ---------------------------------------------------------------------

    @app.get("/_sandbox/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "persistent": state_path is not None,
                "account": credentials.account_id}  # fmt: skip

    @app.post("/_sandbox/periods/{on}/close")
    async def close_period(on: str) -> Response:
        return json_response(200, books.set_period_state(_admin_date(on), closed=True))

    @app.post("/_sandbox/periods/{on}/open")
    async def open_period(on: str) -> Response:
        return json_response(200, books.set_period_state(_admin_date(on), closed=False))

    @app.post("/_sandbox/faults")
    async def inject_faults(request: Request) -> Response:
        spec = await _json_body(request)
        status, count = spec.get("status"), spec.get("count", 1)
        after_commit = spec.get("afterCommit", False) is True
        method = spec.get("method")
        if not isinstance(status, int) or not isinstance(count, int) or count < 1 or not (
                status == 429 or 500 <= status <= 599):  # fmt: skip
            raise NetSuiteError(400, "INVALID_PARAMETER",
                                'Expected {"status": 429|5xx, "count": N >= 1, '
                                '"afterCommit": bool, "method": "PUT"...}')  # fmt: skip
        faults.add(status, count, after_commit, method if isinstance(method, str) else None)
        return json_response(200, {"pendingFaults": len(faults)})

    @app.delete("/_sandbox/faults")
    async def clear_faults() -> Response:
        faults.clear()
        return json_response(200, {"pendingFaults": 0})

    @app.get("/_sandbox/governance")
    async def read_governance() -> Response:
        return json_response(200, _governance_view(governance))

    @app.put("/_sandbox/governance")
    async def set_governance(request: Request) -> Response:
        spec = await _json_body(request)
        limit = spec.get("concurrencyLimit", governance.limit)
        # JSON numbers arrive as int or Decimal; the current latency (a float) stays as it is.
        latency = spec.get("latencySeconds", Decimal(str(governance.latency)))
        if not isinstance(limit, int) or limit < 1 or not isinstance(latency, int | Decimal) \
                or not 0 <= latency <= 30:  # fmt: skip
            raise NetSuiteError(400, "INVALID_PARAMETER", 'Expected {"concurrencyLimit": N >= 1, '
                                '"latencySeconds": 0..30}')  # fmt: skip
        governance.limit, governance.latency = limit, float(latency)
        if spec.get("resetCounters"):
            governance.refused = governance.peak = governance.served = 0
            governance.busy_seconds = 0.0
        return json_response(200, _governance_view(governance))

    return app


def _admin_date(on: str) -> dt.date:
    try:
        return dt.date.fromisoformat(on)
    except ValueError:
        raise NetSuiteError(400, "INVALID_PARAMETER", f"Not a date: {on!r}") from None


def _governance_view(governance: _Governance) -> dict[str, Any]:
    return {"concurrencyLimit": governance.limit, "inFlight": governance.in_flight,
            "peak": governance.peak, "refused": governance.refused,
            "served": governance.served, "busySeconds": round(governance.busy_seconds, 6),
            "latencySeconds": governance.latency}  # fmt: skip


__all__ = ["DEFAULT_CONCURRENCY_LIMIT", "create_app"]
