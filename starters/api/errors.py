"""Every refusal of the API is one JSON line `{"error": "..."}`, whatever refused it; the
OpenAPI document declares these answers, so generated clients and fuzzers expect them."""

# No `from __future__ import annotations`: FastAPI reads ErrorBody's annotations.
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters.logs import get_logger
from starters.api.temporal import TemporalUnavailable

log = get_logger("ledgerbridge.api")
RETRY_AFTER_SECONDS = 5


class ErrorBody(BaseModel):
    error: str


_RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before trying again",
        "schema": {"type": "string"},
    }
}
_MEANINGS = {
    400: "malformed input: a body that is not JSON, a webhook that is unsigned or unverifiable",
    401: "missing, unknown or expired API key",
    403: "the key's role may not do this",
    404: "no such resource",
    409: "conflicts with the resource's state",
    413: "body too large",
    422: "invalid input",
    429: "the key's rate limit is spent",
    503: "a system behind the API (the workflow engine, billing, support, the ERP) cannot be "
    "reached; retry later",
}


def error_answers(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of an operation that may refuse with these statuses."""
    answers: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        answer: dict[str, Any] = {"model": ErrorBody, "description": _MEANINGS[status]}
        if status in (429, 503):
            answer["headers"] = _RETRY_AFTER
        answers[status] = answer
    return answers


# What any /v1 operation may answer: no or a wrong key, its rate limit, bad input, and the
# workflow engine or a counterpart out of reach.
V1_ERRORS = error_answers(400, 401, 403, 422, 429, 503)


def counterpart_unavailable(what: str, err: Exception) -> HTTPException:
    """A system behind the API could not be read: 503, so the caller retries."""
    return HTTPException(
        503,
        f"{what} could not be read, retry later: {err}",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)  # also the router's own 404 and 405
    async def one_line_errors(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def one_line_validation_errors(
        _request: Request, exc: RequestValidationError
    ) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(_shown(part) for part in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, status_code=422)

    @app.exception_handler(TemporalUnavailable)
    async def temporal_down(_request: Request, exc: TemporalUnavailable) -> JSONResponse:
        log.warning("temporal unreachable; asking the sender to retry")
        return JSONResponse(
            {"error": "workflow engine unavailable, retry later"},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )


def _shown(part: object) -> str:
    """A part of an error's location; a field name sent by the caller (an extra field) is
    quoted when it holds a line break or another control character, so the error stays one line."""
    text = str(part)
    return text[:80] if text.isprintable() else repr(text)[:80]


def first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


__all__ = [
    "V1_ERRORS",
    "ErrorBody",
    "counterpart_unavailable",
    "error_answers",
    "first_line",
    "install_error_handlers",
]
