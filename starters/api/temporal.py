"""The API's Temporal client: connected once, on first use or at start-up."""

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from fastapi import HTTPException
from temporalio.client import Client, WorkflowExecution, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from adapters.codec import codec_from_settings
from adapters.settings import Settings
from adapters.temporal import connect_temporal

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


QUERY_TIMEOUT = timedelta(seconds=3)
QUERIES_IN_FLIGHT = 10


async def open_runs(
    client: Client, visibility_query: str, query_name: str, result_type: type[T], limit: int
) -> list[tuple[WorkflowExecution, T | None]]:
    """Running workflows matching `visibility_query`, each with the answer to its query —
    asked side by side, each bounded, so one workflow whose worker is down cannot stall a
    list: its answer is None and the caller shows it as unreadable rather than hiding it."""
    try:
        executions = [e async for e in client.list_workflows(visibility_query, limit=limit)]
    except RPCError as err:
        raise TemporalUnavailable(str(err)) from err
    gate = asyncio.Semaphore(QUERIES_IN_FLIGHT)

    async def ask(execution: WorkflowExecution) -> T | None:
        async with gate:
            try:
                handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
                answer: T = await handle.query(
                    query_name, result_type=result_type, rpc_timeout=QUERY_TIMEOUT
                )
                return answer
            except RPCError:
                return None  # finished meanwhile, or no worker answered in time

    answers = await asyncio.gather(*(ask(e) for e in executions))
    return list(zip(executions, answers, strict=True))


def inbox_filters(
    customer_id: str | None, min_amount_minor: int | None, min_age_hours: float | None
) -> str:
    """The visibility-query conditions of an inbox's filters, each already validated to its
    shape (a customer id of billing's, numbers in range) before it is pasted here."""
    conditions = ""
    if customer_id:
        conditions += f" AND CustomerId = '{customer_id}'"
    if min_amount_minor is not None:
        conditions += f" AND AmountMinor >= {min_amount_minor}"
    if min_age_hours is not None:
        before = datetime.now(UTC) - timedelta(hours=min_age_hours)
        conditions += f" AND StartTime <= '{before.isoformat()}'"
    return conditions


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
