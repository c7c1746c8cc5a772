"""The API's Temporal client: connected once, on first use or at start-up."""

import asyncio
import base64
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Generic, TypeVar

from fastapi import HTTPException, Request, Response
from temporalio.client import Client, WorkflowExecution, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from adapters.codec import codec_from_settings
from adapters.settings import Settings
from adapters.temporal import connect_temporal
from canonical.money import CURRENCY_EXPONENTS

T = TypeVar("T")


class TemporalUnavailable(Exception):
    pass


class TemporalConnection:
    """One client per app, connected on first use; a failed connect is retried next request."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        # Built now, so a malformed payload key stops start-up instead of failing requests.
        self._codec = codec_from_settings(settings)
        self._client: Client | None = None
        self._lock = asyncio.Lock()

    async def client(self) -> Client:
        async with self._lock:
            if self._client is None:
                try:
                    self._client = await asyncio.wait_for(
                        connect_temporal(
                            self._settings.temporal_address,
                            self._settings.temporal_namespace,
                            codec=self._codec,
                        ),
                        timeout=5,
                    )
                except (TimeoutError, RuntimeError, RPCError, OSError) as err:
                    raise TemporalUnavailable(str(err)) from err
            return self._client


PAGE_SIZE = 100
MAX_PAGE_SIZE = 500
# What `visibility_page` hands out: Temporal's opaque token, base64url with its padding.
# Documented, so anything else is refused by validation before Temporal is asked.
BASE64URL = r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2}==|[A-Za-z0-9_-]{3}=)?$"


@dataclass(frozen=True)
class ItemsPage(Generic[T]):
    """One page of an inbox list read from visibility alone, the token of the next page
    (None on the last) and how many items match in all."""

    items: list[T]
    next_token: str | None
    total: int


async def visibility_page(
    client: Client, visibility_query: str, page_size: int, page_token: str | None
) -> tuple[list[WorkflowExecution], str | None, int]:
    """One page of the runs matching `visibility_query` (the server's order: newest first;
    the dev server refuses ORDER BY), the next page's token and the count of all, in two
    calls side by side. Rows come from the search attributes: no workflow is queried."""
    token = _token_bytes(page_token) if page_token else None
    listing = client.list_workflows(visibility_query, page_size=page_size, next_page_token=token)
    try:
        _, counted = await asyncio.gather(
            listing.fetch_next_page(), client.count_workflows(visibility_query)
        )
    except RPCError as err:
        if err.status == RPCStatusCode.INVALID_ARGUMENT and token:
            raise HTTPException(422, "page_token does not continue this list") from None
        raise TemporalUnavailable(str(err)) from err
    following = listing.next_page_token
    next_token = base64.urlsafe_b64encode(following).decode() if following else None
    return list(listing.current_page or []), next_token, counted.count


async def read_page(
    temporal: TemporalConnection,
    visibility_query: str,
    row: Callable[[WorkflowExecution], T],
    opened_at: Callable[[T], datetime],
    page_size: int,
    page_token: str | None,
) -> ItemsPage[T]:
    """One page of an inbox list, each run made a row by `row`, oldest first within it."""
    client = await temporal.client()
    executions, next_token, total = await visibility_page(
        client, visibility_query, page_size, page_token
    )
    return ItemsPage(sorted(map(row, executions), key=opened_at), next_token, total)


async def count_runs(client: Client, visibility_query: str) -> int:
    try:
        return (await client.count_workflows(visibility_query)).count
    except RPCError as err:
        raise TemporalUnavailable(str(err)) from err


def _token_bytes(page_token: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(page_token.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise HTTPException(422, "page_token is not a token this API gave") from None


def page_headers(request: Request, response: Response, total: int, next_token: str | None) -> None:
    """A list API's paging, beside its unchanged JSON list: the count of all items and the
    next page as a `Link` (the same query and filters with the next `page_token`)."""
    response.headers["X-Total-Count"] = str(total)
    if next_token:
        following = request.url.include_query_params(page_token=next_token)
        response.headers["Link"] = f'<{following.path}?{following.query}>; rel="next"'


def inbox_filters(
    customer_id: str | None,
    min_amount_minor: int | None,
    min_age_hours: float | None,
    min_amount: Decimal | None = None,
) -> str:
    """The visibility-query conditions of an inbox's filters, each already validated to its
    shape (a customer id of billing's, numbers in range) before it is pasted here."""
    conditions = ""
    if customer_id:
        conditions += f" AND CustomerId = '{customer_id}'"
    if min_amount_minor is not None:
        conditions += f" AND AmountMinor >= {min_amount_minor}"
    if min_amount is not None:
        conditions += f" AND ({_at_least(min_amount)})"
    if min_age_hours is not None:
        before = datetime.now(UTC) - timedelta(hours=min_age_hours)
        conditions += f" AND StartTime <= '{before.isoformat()}'"
    return conditions


def _at_least(amount: Decimal) -> str:
    """`amount` or more in any currency, in minor units by each currency's exponent (a
    run without a Currency attribute, started before it existed, does not match)."""
    by_exponent: dict[int, list[str]] = {}
    for currency, exponent in sorted(CURRENCY_EXPONENTS.items()):
        by_exponent.setdefault(exponent, []).append(f"'{currency}'")
    return " OR ".join(
        f"(Currency IN ({', '.join(codes)}) AND AmountMinor >= "
        f"{math.ceil(amount.scaleb(exponent))})"
        for exponent, codes in sorted(by_exponent.items())
    )


def opened_and_age(started: datetime) -> dict[str, Any]:
    """`opened_at` (aware) and `age_hours` of an inbox item, from its workflow's start."""
    opened = started if started.tzinfo else started.replace(tzinfo=UTC)
    return {
        "opened_at": opened,
        "age_hours": round((datetime.now(UTC) - opened).total_seconds() / 3600, 1),
    }


def not_found_or_unavailable(err: RPCError, missing: str) -> Exception:
    """What a failed call on one workflow means to the caller: `missing` (404) when Temporal
    knows no such workflow, otherwise Temporal is unavailable (503)."""
    if err.status == RPCStatusCode.NOT_FOUND:
        return HTTPException(404, missing)
    return TemporalUnavailable(str(err))


async def decide_through_update(
    handle: WorkflowHandle[Any, Any],
    decision: Any,
    result_type: type[T],
    *,
    missing: str,
    closed: str,
    rpc_timeout: timedelta | None = None,
) -> T:
    """Hands `decision` to the workflow's `decide` Update, which validates and audits it:
    409 when its validator refuses or the workflow has ended (`closed`), 404 when Temporal
    knows no such workflow (`missing`), otherwise Temporal is unavailable (503)."""
    try:
        answer: T = await handle.execute_update(
            "decide", decision, result_type=result_type, rpc_timeout=rpc_timeout
        )
    except WorkflowUpdateFailedError as err:
        refusal = str(err.cause) if err.cause else "refused"
        raise HTTPException(409, f"decision refused: {refusal}") from None
    except RPCError as err:
        if "already completed" in str(err):
            raise HTTPException(409, closed) from None
        raise not_found_or_unavailable(err, missing) from err
    return answer
