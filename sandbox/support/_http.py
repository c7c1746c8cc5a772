"""HTTP pieces shared by every Zendesk resource: errors, bodies, pagination, idempotency."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from sandbox.support._store import SupportStore

MAX_PAGE_SIZE = 100
# Zendesk keeps an idempotency key and its response for two hours.
IDEMPOTENCY_TTL_SECONDS = 2 * 60 * 60


class ZendeskError(Exception):
    """An error answer in Zendesk's shape: `{"error": ..., "description": ..., "details"?}`."""

    def __init__(
        self,
        status: int,
        error: str,
        description: str | None = None,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {error}")
        self.status = status
        self.body: dict[str, Any] = {"error": error}
        if description is not None:
            self.body["description"] = description
        if details is not None:
            self.body["details"] = details
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body, status_code=self.status, headers=self.headers)


def not_found() -> ZendeskError:
    return ZendeskError(404, "RecordNotFound", "Not found")


def record_invalid(field: str, message: str, code: str) -> ZendeskError:
    """Zendesk's 422 for a field that fails validation (blank, taken, wrong type)."""
    label = field.replace("_", " ").capitalize()
    return ZendeskError(
        422,
        "RecordInvalid",
        "Record validation errors",
        details={field: [{"description": f"{label}: {message}", "error": code}]},
    )


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_body(raw: bytes, root: str) -> dict[str, Any]:
    """The `{root: {...}}` object of a JSON body, or Zendesk's 400."""
    try:
        body = json.loads(raw or b"null")
    except ValueError as err:
        raise ZendeskError(400, "InvalidJSON", "The request body is not valid JSON") from err
    if not isinstance(body, dict) or not isinstance(body.get(root), dict):
        raise ZendeskError(400, "InvalidParameter", f"The body must be an object under '{root}'")
    return dict(body[root])


def normalize_tags(value: Any, field: str = "tags") -> list[str]:
    """Zendesk tags are lowercase, space-free and unique; order of first appearance kept."""
    if value is None:
        return []
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise record_invalid(field, "must be a list of strings", "InvalidValue")
    tags: list[str] = []
    for tag in value:
        for part in tag.strip().lower().split():
            if part not in tags:
                tags.append(part)
    return tags


def api_url(request: Request, path: str) -> str:
    return f"{str(request.base_url).rstrip('/')}{path}"


# -- pagination ----------------------------------------------------------------------


def encode_cursor(object_id: int) -> str:
    return base64.urlsafe_b64encode(f"id:{object_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = text.partition(":")
        if prefix != "id":
            raise ValueError(cursor)
        return int(value)
    except (ValueError, binascii.Error, UnicodeDecodeError) as err:
        raise ZendeskError(
            400, "InvalidPaginationParameter", "page[after] or page[before] is not a valid cursor"
        ) from err


def int_param(request: Request, name: str, default: int, maximum: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as err:
        raise ZendeskError(400, "InvalidPaginationParameter", f"{name} must be an integer") from err
    if value < 1 or (maximum is not None and value > maximum):
        raise ZendeskError(
            400, "InvalidPaginationParameter", f"{name} must be between 1 and {maximum}"
        )
    return value


def _newest_first(request: Request, sortable: bool) -> bool:
    """Whether `sort` asks for newest first; refused where the endpoint has no such sort."""
    sort = request.query_params.get("sort")
    if sort is None:
        return False
    if not sortable or sort not in ("created_at", "-created_at"):
        raise ZendeskError(400, "InvalidParameter", f"sort {sort!r} is not supported here")
    return sort == "-created_at"


def paginate(
    request: Request,
    store: SupportStore,
    kind: str,
    key: str,
    render: Callable[[dict[str, Any]], dict[str, Any]],
    *,
    sortable: bool = False,
    **equals: Any,
) -> dict[str, Any]:
    """A list endpoint: cursor pagination when any `page[...]` is given, offset otherwise.
    `sortable` lists accept `sort=created_at|-created_at` (ids grow with creation time)."""
    query = request.query_params
    path = request.url.path
    descending = _newest_first(request, sortable)
    sort = f"&sort={query['sort']}" if "sort" in query else ""  # links keep the order asked
    if any(name in query for name in ("page[size]", "page[after]", "page[before]")):
        size = int_param(request, "page[size]", MAX_PAGE_SIZE, MAX_PAGE_SIZE)
        after = query.get("page[after]")
        before = query.get("page[before]")
        after_id = decode_cursor(after) if after else None
        before_id = decode_cursor(before) if before else None
        # One extra row tells whether another page follows without a count query.
        rows = store.page(
            kind,
            limit=size + 1,
            after_id=after_id,
            before_id=before_id,
            newest_first=descending,
            **equals,
        )
        has_more = len(rows) > size
        # Before a cursor, the rows nearest it end the list.
        rows = rows[-size:] if before_id is not None else rows[:size]
        after_cursor = encode_cursor(int(rows[-1]["id"])) if rows else None
        before_cursor = encode_cursor(int(rows[0]["id"])) if rows else None
        base = api_url(request, path)
        return {
            key: [render(row) for row in rows],
            "meta": {
                "has_more": has_more,
                "after_cursor": after_cursor,
                "before_cursor": before_cursor,
            },
            "links": {
                "next": (
                    f"{base}?page[size]={size}&page[after]={after_cursor}{sort}"
                    if has_more and after_cursor
                    else None
                ),
                "prev": (
                    f"{base}?page[size]={size}&page[before]={before_cursor}{sort}"
                    if before_cursor
                    else None
                ),
            },
        }
    per_page = int_param(request, "per_page", MAX_PAGE_SIZE, MAX_PAGE_SIZE)
    page_number = int_param(request, "page", 1)
    total = store.count(kind, **equals)
    rows = store.page(
        kind,
        limit=per_page,
        offset=(page_number - 1) * per_page,
        newest_first=descending,
        **equals,
    )
    base = api_url(request, path)
    return {
        key: [render(row) for row in rows],
        "next_page": (
            f"{base}?page={page_number + 1}&per_page={per_page}{sort}"
            if page_number * per_page < total
            else None
        ),
        "previous_page": (
            f"{base}?page={page_number - 1}&per_page={per_page}{sort}" if page_number > 1 else None
        ),
        "count": total,
    }


# -- idempotency ---------------------------------------------------------------------


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(body, status_code=status, headers=headers)


async def not_idempotent(
    request: Request, write: Callable[[bytes], tuple[int, dict[str, Any]]]
) -> Response:
    """Run a write Zendesk keeps no idempotency for: an `Idempotency-Key` is ignored, so the
    same request sent twice writes twice, as it does against Zendesk."""
    status, body = write(await request.body())
    return json_response(status, body)


async def idempotent(
    request: Request,
    store: SupportStore,
    create: Callable[[bytes], tuple[int, dict[str, Any]]],
) -> Response:
    """Run a create once per `Idempotency-Key`; replay its answer for the same request.
    Zendesk documents this for ticket creation (POST /api/v2/tickets) only.

    Only successful answers are kept: a rejected request changed nothing, so a retry with the
    same key is judged afresh (the conflicting record may be gone by then).
    """
    raw = await request.body()
    key = request.headers.get("idempotency-key")
    if not key:
        status, body = create(raw)
        return json_response(status, body)
    fingerprint = hashlib.sha256(
        request.method.encode() + b" " + request.url.path.encode() + b"\n" + raw
    ).hexdigest()
    # No await from here on: lookup, create and save happen without another request between.
    with store.transaction():
        stored = store.idempotent_lookup(key, IDEMPOTENCY_TTL_SECONDS)
        if stored is not None:
            if stored.fingerprint != fingerprint:
                raise ZendeskError(
                    400,
                    "IdempotentRequestError",
                    "Request parameters do not match the original request for this Idempotency-Key",
                )
            return json_response(
                stored.status, json.loads(stored.body), {"x-idempotency-lookup": "hit"}
            )
        status, body = create(raw)
        if 200 <= status < 300:
            store.idempotent_save(key, fingerprint, status, json.dumps(body))
    return json_response(status, body, {"x-idempotency-lookup": "miss"})


__all__ = [
    "MAX_PAGE_SIZE",
    "ZendeskError",
    "api_url",
    "decode_cursor",
    "encode_cursor",
    "idempotent",
    "int_param",
    "json_response",
    "normalize_tags",
    "not_found",
    "not_idempotent",
    "now_iso",
    "paginate",
    "parse_body",
    "record_invalid",
]
