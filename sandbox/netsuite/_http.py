"""NetSuite's error bodies and its JSON (amounts as JSON numbers, read and written exactly).

Error bodies follow "Error Handling in REST Web Services" (NetSuite Help Center,
section_156570709583): `{"type": <rfc2616 section url>, "title": <reason>, "status": N,
"o:errorDetails": [{"detail": ..., "o:errorCode": ..., "o:errorPath"?: ...}]}`.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from fastapi.responses import Response

_RFC2616 = "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html"
# The section anchor NetSuite's type URL names for each status (its own examples: 400 -> 10.4.1).
_SECTIONS = {400: "#sec10.4.1", 401: "", 403: "#sec10.4.4", 404: "#sec10.4.5",
             405: "#sec10.4.6", 429: "", 500: "#sec10.5.1", 503: "#sec10.5.4"}  # fmt: skip
_TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 415: "Unsupported Media Type",
           429: "Too Many Requests", 500: "Internal Server Error",
           502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}  # fmt: skip
# The detail NetSuite gives a refused login (its documented example, verbatim in meaning).
INVALID_LOGIN_DETAIL = (
    "Invalid login attempt. For more details, see the Login Audit Trail in the NetSuite UI at "
    "Setup > Users/Roles > User Management > View Login Audit Trail."
)


class NetSuiteError(Exception):
    """An error answer in NetSuite's REST shape."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        path: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.path = path
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        detail: dict[str, Any] = {"detail": self.detail, "o:errorCode": self.code}
        if self.path is not None:
            detail["o:errorPath"] = self.path
        return {
            "type": _RFC2616 + _SECTIONS.get(self.status, ""),
            "title": _TITLES.get(self.status, "Error"),
            "status": self.status,
            "o:errorDetails": [detail],
        }

    def response(self) -> Response:
        return json_response(self.status, self.body(), headers=self.headers)


def invalid_login() -> NetSuiteError:
    return NetSuiteError(401, "INVALID_LOGIN", INVALID_LOGIN_DETAIL)


def nonexistent(record_type: str, key: str) -> NetSuiteError:
    return NetSuiteError(
        404,
        "NONEXISTENT_ID",
        f"The record instance does not exist. Provide a valid record instance ID. "
        f"({record_type} {key})",
    )


def user_error(detail: str, *, path: str | None = None) -> NetSuiteError:
    """A business rule of the account refused the write (NetSuite's USER_ERROR)."""
    return NetSuiteError(400, "USER_ERROR", f"Error while accessing resource: {detail}", path=path)


def invalid_content(detail: str, *, path: str | None = None) -> NetSuiteError:
    """The request body names a value the record cannot take (NetSuite's INVALID_CONTENT)."""
    return NetSuiteError(
        400, "INVALID_CONTENT", f"Error while accessing resource: {detail}", path=path
    )


# --- JSON with exact numbers ------------------------------------------------------------------

_NUMBER_MARK = "\u0000num:"
_MARKED = re.compile(r'"\\u0000num:(-?[0-9]+(?:\.[0-9]+)?)"')


def _mark_numbers(value: Any) -> Any:
    if isinstance(value, Decimal):
        return _NUMBER_MARK + format(value, "f")
    if isinstance(value, dict):
        return {key: _mark_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_mark_numbers(item) for item in value]
    return value


def dumps(payload: Any) -> str:
    """JSON text with each Decimal written as the JSON number it is (never through float)."""
    return _MARKED.sub(r"\1", json.dumps(_mark_numbers(payload)))


def loads(raw: bytes) -> Any:
    """A request body, its JSON numbers read as Decimal (ints stay ints)."""
    return json.loads(raw, parse_float=Decimal)


def json_response(status: int, payload: Any, *, headers: dict[str, str] | None = None) -> Response:
    return Response(
        dumps(payload), status_code=status, media_type="application/json", headers=headers
    )


__all__ = [
    "INVALID_LOGIN_DETAIL",
    "NetSuiteError",
    "dumps",
    "invalid_content",
    "invalid_login",
    "json_response",
    "loads",
    "nonexistent",
    "user_error",
]
