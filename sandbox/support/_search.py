"""Export Search Results (`GET /api/v2/search/export`): tickets or organizations matching a
query, cursor paged.

Zendesk's cursor-paginated sibling of `/api/v2/search.json` (no 1,000-result cap):
`filter[type]` is required, `page[size]` sets the page (1-1000, default 100) and
`page[after]` takes `meta.after_cursor` of the page before. The answer is shaped as Zendesk's:

    {"results": [{...ticket..., "result_type": "ticket"}], "facets": null,
     "meta": {"has_more": true, "after_cursor": "...", "before_cursor": "..."},
     "links": {"next": "...?page[after]=...", "prev": null}}

The sandbox supports this subset of Zendesk's search query syntax: terms separated by
spaces, every one of which must hold. The type goes in `filter[type]` only: the export
refuses `type:` in the query, as Zendesk does.

    tags:<tag> / tag:<tag>    the ticket carries the tag (at most one such term)
    status:<status>           the ticket's status is exactly this one
    updated<op><time>         the ticket's updated_at compared with <time>; likewise created
        <op>    one of  >  >=  <  <=
        <time>  an ISO 8601 date-time with Z or an offset (2026-03-01T12:00:00Z) or a date
                (2026-03-01, midnight UTC; Zendesk reads a bare date in the account's zone)

With `filter[type]=organization` the terms are `tags:`, `created`/`updated` as above, and
`<field key>:<value>` for an organization field (Zendesk searches custom fields by key): the
organization's value equals it, case-insensitively (a date field's value is its date).

Any other term (free text, quoted phrases, negation, wildcards, other properties) is refused
with a 400 rather than silently ignored, so a test can never pass on a filter the sandbox
did not apply. Results come in ticket id order and the cursor is the last id given: a
ticket changed while a client pages keeps its place (it is listed at most once, and only if
it still matches when its page is read). Unlike Zendesk, the sandbox searches the live
store (Zendesk indexes with a delay of minutes) and its cursors do not expire (Zendesk's
do after an hour).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response

from sandbox.support._http import (
    ZendeskError,
    api_url,
    decode_cursor,
    encode_cursor,
    int_param,
    json_response,
)
from sandbox.support._organization_fields import defined_fields, rendered_values
from sandbox.support._store import SupportStore
from sandbox.support._tickets import TICKET, render_ticket

ORGANIZATION = "organization"

MAX_EXPORT_PAGE_SIZE = 1000
DEFAULT_EXPORT_PAGE_SIZE = 100

_TERM = re.compile(r"^(?P<name>[a-z_]+)(?P<op>>=|<=|:|<|>)(?P<value>\S+)$", re.IGNORECASE)
_COMPARE: dict[str, Callable[[datetime, datetime], bool]] = {
    ">": lambda left, right: left > right,
    ">=": lambda left, right: left >= right,
    "<": lambda left, right: left < right,
    "<=": lambda left, right: left <= right,
}

Predicate = Callable[[dict[str, Any]], bool]


def _invalid(message: str) -> ZendeskError:
    return ZendeskError(400, "InvalidSearchQuery", message)


def _moment(text: str, term: str) -> datetime:
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _invalid(f"{term!r}: {text!r} is not a date or an ISO 8601 date-time") from None
    if moment.tzinfo is None:
        raise _invalid(f"{term!r}: give the time zone (Z or an offset)")
    return moment


def _has_tag(tag: str) -> Predicate:
    return lambda ticket: tag in ticket["tags"]


def _has_status(status: str) -> Predicate:
    return lambda ticket: ticket["status"] == status


def _stamp_compares(
    field: str, compare: Callable[[datetime, datetime], bool], bound: datetime
) -> Predicate:
    return lambda ticket: compare(datetime.fromisoformat(str(ticket[field])), bound)


def parse_ticket_query(query: str) -> list[Predicate]:
    """The query's terms as predicates over stored tickets; 400 for what is unsupported."""
    predicates: list[Predicate] = []
    tag_terms = 0
    for term in query.split():
        match = _TERM.match(term)
        if match is None:
            raise _invalid(f"the sandbox does not support the search term {term!r}")
        name, op, value = match["name"].lower(), match["op"], match["value"]
        if name == "type":
            raise _invalid("the export takes the type in filter[type], not in the query")
        if name in ("tags", "tag") and op == ":":
            tag_terms += 1
            if tag_terms > 1:
                raise _invalid("the sandbox supports one tags: term per query")
            predicates.append(_has_tag(value.lower()))
        elif name == "status" and op == ":":
            predicates.append(_has_status(value.lower()))
        elif name in ("updated", "created") and op in _COMPARE:
            predicates.append(_stamp_compares(f"{name}_at", _COMPARE[op], _moment(value, term)))
        else:
            raise _invalid(f"the sandbox does not support the search term {term!r}")
    return predicates


def _field_equals(key: str, wanted: str) -> Predicate:
    def matches(org: dict[str, Any]) -> bool:
        value = org["organization_fields"].get(key)
        return value is not None and str(value).casefold() == wanted.casefold()

    return matches


def parse_organization_query(store: SupportStore, query: str) -> list[Predicate]:
    """An organization query's terms as predicates over stored organizations; 400 for what
    is unsupported."""
    keys = {field["key"] for field in defined_fields(store)}
    predicates: list[Predicate] = []
    for term in query.split():
        match = _TERM.match(term)
        if match is None:
            raise _invalid(f"the sandbox does not support the search term {term!r}")
        name, op, value = match["name"].lower(), match["op"], match["value"]
        if name == "type":
            raise _invalid("the export takes the type in filter[type], not in the query")
        if name in ("tags", "tag") and op == ":":
            predicates.append(_has_tag(value.lower()))
        elif name in ("updated", "created") and op in _COMPARE:
            predicates.append(_stamp_compares(f"{name}_at", _COMPARE[op], _moment(value, term)))
        elif match["name"] in keys and op == ":":
            predicates.append(_field_equals(match["name"], value))
        else:
            raise _invalid(f"the sandbox does not support the search term {term!r}")
    return predicates


def search_router(store: SupportStore) -> APIRouter:
    router = APIRouter(prefix="/api/v2")

    async def export(request: Request) -> Response:
        query = request.query_params.get("query")
        if not query or not query.strip():
            raise ZendeskError(400, "InvalidParameter", "query is required")
        kind = request.query_params.get("filter[type]")
        if kind not in (TICKET, ORGANIZATION):
            raise ZendeskError(
                400,
                "InvalidParameter",
                "filter[type] is required; the sandbox exports ticket or organization",
            )
        predicates = (
            parse_ticket_query(query) if kind == TICKET else parse_organization_query(store, query)
        )

        def render(row: dict[str, Any]) -> dict[str, Any]:
            if kind == TICKET:
                return render_ticket(store, request, row)
            url = api_url(request, f"/api/v2/organizations/{row['id']}.json")
            fields = rendered_values(store, row["organization_fields"])
            return {"url": url, **row, "organization_fields": fields}

        size = int_param(request, "page[size]", DEFAULT_EXPORT_PAGE_SIZE, MAX_EXPORT_PAGE_SIZE)
        after = request.query_params.get("page[after]")
        after_id = decode_cursor(after) if after else None
        matching = (
            row
            for row in store.find(kind)
            if (after_id is None or int(row["id"]) > after_id)
            and all(predicate(row) for predicate in predicates)
        )
        rows: list[dict[str, Any]] = []
        for row in matching:
            rows.append(row)
            if len(rows) > size:  # one more than the page tells that another follows
                break
        has_more = len(rows) > size
        rows = rows[:size]
        after_cursor = encode_cursor(int(rows[-1]["id"])) if rows else None
        before_cursor = encode_cursor(int(rows[0]["id"])) if rows else None
        base = api_url(request, request.url.path)
        next_query = {"query": query, "filter[type]": kind, "page[size]": size}
        return json_response(
            200,
            {
                "results": [{**render(row), "result_type": kind} for row in rows],
                "facets": None,
                "meta": {
                    "has_more": has_more,
                    "after_cursor": after_cursor,
                    "before_cursor": before_cursor,
                },
                "links": {
                    "next": (
                        f"{base}?{urlencode({**next_query, 'page[after]': after_cursor})}"
                        if has_more and after_cursor
                        else None
                    ),
                    "prev": None,
                },
            },
        )

    router.add_api_route("/search/export", export, methods=["GET"])
    return router


__all__ = ["parse_organization_query", "parse_ticket_query", "search_router"]
