"""Process health: per business process, what is in flight, done, failed and blocked, which
external system is failing, and what its outage holds up.

Everything comes from Temporal visibility (counts and one bounded list of waiting work, no
workflow is queried) and the store's per-system record the workers keep
(adapters/system_health.py). What an outage holds up is counted by process status: a
workflow whose ProcessStatus says it waits on a system (WAITS_ON) is held up by that system.
"""

# No `from __future__ import annotations`: FastAPI must see the Annotated dependencies.
import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from temporalio.client import Client
from temporalio.service import RPCError

from adapters import visibility
from adapters.system_health import HealthRow, aware
from starters.api.auth import ApiPrincipal
from starters.api.dependencies import StoreDep, TemporalDep, require_role
from starters.api.errors import error_answers
from starters.api.temporal import TemporalUnavailable

router = APIRouter(tags=["ops"])
health_readers = require_role("ops", "finance", "finance_admin")

WINDOW = timedelta(hours=24)
SYSTEMS = ("billing", "support", "erp")
FINANCE = "finance"
PROCESSES = ("amendment_to_erp", "case_to_credit", "finance_exception", "account_sync",
             "reconciliation")  # fmt: skip
# What a running workflow in each ProcessStatus waits on: a system, or finance. Statuses not
# listed (a ledger idle between events, an account in sync) wait on nothing.
WAITS_ON: dict[str, dict[str, tuple[str, ...]]] = {
    "amendment_to_erp": {
        "posting": ("erp",),  # retries its ERP posting until it lands
        "waiting_for_erp": ("erp",),
        "blocked": (FINANCE,),
    },
    "case_to_credit": {
        "checking": ("billing", "support"),  # entitlement and billing status
        "awaiting_approval": (FINANCE,),
        "reminded": (FINANCE,),
        "escalated": (FINANCE,),
        "applying": ("billing",),
        "posting": ("erp",),
        "blocked": (FINANCE,),
    },
    "finance_exception": {"open": (FINANCE,), "reminded": (FINANCE,), "escalated": (FINANCE,)},
    "account_sync": {"syncing": ("billing", "erp", "support")},
    "reconciliation": {"loading": ("billing", "erp", "support"), "healing": ("erp",)},
}
WAITING_STATUSES = sorted({status for waits in WAITS_ON.values() for status in waits})
WAITING_QUERY = (
    "ExecutionStatus = 'Running' AND ProcessStatus IN ("
    + ", ".join(f"'{status}'" for status in WAITING_STATUSES)
    + ")"
)
OPEN_EXCEPTIONS = "BusinessProcess = 'finance_exception' AND ExecutionStatus = 'Running'"
# Past this many waiting items the answer says it stopped counting (`truncated`).
WAITING_LIMIT = 2000
BLOCKED_LISTED = 50  # blocked items named per process; the count is always whole
OUTAGE_LISTED = 100  # held-up workflows named per outage

NOUNS = {
    "amendment_to_erp": ("amendment", "amendments"),
    "case_to_credit": ("credit", "credits"),
    "finance_exception": ("exception", "exceptions"),
    "account_sync": ("account sync", "account syncs"),
    "reconciliation": ("reconciliation run", "reconciliation runs"),
}
SYSTEM_NAMES = {"billing": "Billing", "support": "Support", "erp": "ERP"}
FAILURE_WORDS = {
    "unreachable": "unreachable",
    "unavailable": "unavailable (503)",
    "server_error": "failing (5xx)",
    "timeout": "timing out",
    "lost_answer": "dropping answers",
    "rate_limited": "throttling (429)",
    "unauthorized": "refusing our credentials",
}


# --- the answer ---------------------------------------------------------------------------


class WaitingItem(BaseModel):
    workflow_id: str
    status: str
    waits_on: list[str]
    started_at: datetime
    age_hours: float


class BlockedItem(BaseModel):
    workflow_id: str
    exception_ids: list[str] = Field(description="the open finance exceptions it waits for")


class ProcessState(BaseModel):
    process: str
    in_flight: int
    done_24h: int
    failed_24h: int = Field(description="failed, timed out or terminated in the last 24 h")
    blocked: int
    blocked_items: list[BlockedItem] = Field(description=f"the first {BLOCKED_LISTED}")
    waiting_on: dict[str, int] = Field(description="in flight, by the system (or finance) "
                                       "its status waits on")  # fmt: skip
    oldest_waiting: WaitingItem | None


class SystemState(BaseModel):
    system: str
    state: str = Field(description="ok | failing | unknown (no call recorded yet)")
    last_success_at: datetime | None
    last_failure_at: datetime | None
    last_failure: str | None = Field(description="the outcome of the last failed call")
    failing_since: datetime | None


class Outage(BaseModel):
    system: str
    since: datetime
    minutes: int
    holding_up: dict[str, int] = Field(description="waiting work by business process")
    waiting: list[str] = Field(description=f"the workflows it holds up, oldest first (the "
                               f"first {OUTAGE_LISTED})")  # fmt: skip
    summary: str


class ProcessHealth(BaseModel):
    as_of: datetime
    processes: list[ProcessState]
    systems: list[SystemState]
    outages: list[Outage]
    truncated: bool = Field(description=f"more than {WAITING_LIMIT} items waited; counts of "
                            "waiting work stop there")  # fmt: skip


# --- the summary (pure) -------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    in_flight: int
    done: int
    failed: int


@dataclass(frozen=True)
class Running:
    """A running workflow in a waiting status, as visibility lists it."""

    workflow_id: str
    process: str
    status: str
    started_at: datetime


def exception_origin(exception_id: str) -> str:
    """The workflow an exception was opened by: ids are `exception/{origin}/{n}`."""
    return exception_id.removeprefix("exception/").rsplit("/", 1)[0]


def system_state(system: str, row: HealthRow | None) -> SystemState:
    if row is None:
        return SystemState(system=system, state="unknown", last_success_at=None,
                           last_failure_at=None, last_failure=None, failing_since=None)  # fmt: skip
    return SystemState(
        system=system,
        state="failing" if row.failing_since is not None else "ok",
        last_success_at=_aware(row.last_success_at),
        last_failure_at=_aware(row.last_failure_at),
        last_failure=row.last_failure,
        failing_since=_aware(row.failing_since),
    )


def outage_summary(system: str, failure: str | None, minutes: int, held: dict[str, int]) -> str:
    """ "ERP unreachable for 12 min: 34 amendments and 3 credits waiting"."""
    words = FAILURE_WORDS.get(failure or "", "failing")
    parts = [
        f"{count} {NOUNS[process][count != 1]}"
        for process, count in held.items()
        if count and process in NOUNS
    ]
    if not parts:
        held_up = "nothing waiting on it"
    else:
        listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        held_up = f"{listed} waiting"
    return f"{SYSTEM_NAMES.get(system, system)} {words} for {minutes} min: {held_up}"


def summarize(
    counts: dict[str, Counts],
    waiting: Iterable[Running],
    open_exception_ids: Iterable[str],
    health_rows: dict[str, HealthRow],
    now: datetime,
    truncated: bool = False,
) -> ProcessHealth:
    exceptions_of: dict[str, list[str]] = {}
    for exception_id in sorted(open_exception_ids):
        exceptions_of.setdefault(exception_origin(exception_id), []).append(exception_id)
    by_process: dict[str, list[Running]] = {process: [] for process in PROCESSES}
    for item in waiting:
        if WAITS_ON.get(item.process, {}).get(item.status):
            by_process[item.process].append(item)

    processes = []
    for process in PROCESSES:
        items = sorted(by_process[process], key=lambda i: (i.started_at, i.workflow_id))
        waiting_on: dict[str, int] = {}
        for item in items:
            for target in WAITS_ON[process][item.status]:
                waiting_on[target] = waiting_on.get(target, 0) + 1
        blocked = [i for i in items if i.status == "blocked"]
        count = counts.get(process, Counts(0, 0, 0))
        processes.append(
            ProcessState(
                process=process,
                in_flight=count.in_flight,
                done_24h=count.done,
                failed_24h=count.failed,
                blocked=len(blocked),
                blocked_items=[
                    BlockedItem(
                        workflow_id=i.workflow_id,
                        exception_ids=exceptions_of.get(i.workflow_id, []),
                    )
                    for i in blocked[:BLOCKED_LISTED]
                ],
                waiting_on=waiting_on,
                oldest_waiting=_waiting_item(items[0], now) if items else None,
            )
        )

    systems = [system_state(system, health_rows.get(system)) for system in SYSTEMS]
    outages = []
    for state in systems:
        if state.failing_since is None:
            continue
        held = {p.process: p.waiting_on.get(state.system, 0) for p in processes}
        held = {process: n for process, n in held.items() if n}
        held_items = sorted(
            (i for items in by_process.values() for i in items
             if state.system in WAITS_ON[i.process][i.status]),
            key=lambda i: (i.started_at, i.workflow_id),
        )  # fmt: skip
        minutes = max(0, int((now - state.failing_since).total_seconds() // 60))
        outages.append(
            Outage(
                system=state.system,
                since=state.failing_since,
                minutes=minutes,
                holding_up=held,
                waiting=[i.workflow_id for i in held_items[:OUTAGE_LISTED]],
                summary=outage_summary(state.system, state.last_failure, minutes, held),
            )
        )
    return ProcessHealth(
        as_of=now, processes=processes, systems=systems, outages=outages, truncated=truncated
    )


def _waiting_item(item: Running, now: datetime) -> WaitingItem:
    started = _aware(item.started_at) or now
    return WaitingItem(
        workflow_id=item.workflow_id,
        status=item.status,
        waits_on=list(WAITS_ON[item.process][item.status]),
        started_at=started,
        age_hours=round((now - started).total_seconds() / 3600, 1),
    )


def _aware(moment: datetime | None) -> datetime | None:
    return None if moment is None else aware(moment)


# --- reading Temporal and the store -------------------------------------------------------


async def read_counts(client: Client, since: datetime) -> dict[str, Counts]:
    """In flight now, and done and failed since `since`, per process: three counts each."""
    closed_since = f"CloseTime >= '{since.isoformat()}'"
    failed = "ExecutionStatus IN ('Failed', 'TimedOut', 'Terminated')"

    async def count(query: str) -> int:
        return (await client.count_workflows(query)).count

    queries = [
        q
        for process in PROCESSES
        for q in (
            f"BusinessProcess = '{process}' AND ExecutionStatus = 'Running'",
            f"BusinessProcess = '{process}' AND ExecutionStatus = 'Completed' AND {closed_since}",
            f"BusinessProcess = '{process}' AND {failed} AND {closed_since}",
        )
    ]
    answers = await asyncio.gather(*(count(q) for q in queries))
    return {process: Counts(*answers[3 * i : 3 * i + 3]) for i, process in enumerate(PROCESSES)}


async def read_waiting(client: Client) -> tuple[list[Running], bool]:
    waiting: list[Running] = []
    async for execution in client.list_workflows(WAITING_QUERY, limit=WAITING_LIMIT + 1):
        if len(waiting) == WAITING_LIMIT:
            return waiting, True
        attributes = execution.typed_search_attributes
        waiting.append(
            Running(
                workflow_id=execution.id,
                process=attributes.get(visibility.BUSINESS_PROCESS) or "",
                status=attributes.get(visibility.PROCESS_STATUS) or "",
                started_at=execution.start_time,
            )
        )
    return waiting, False


async def read_open_exceptions(client: Client) -> list[str]:
    return [e.id async for e in client.list_workflows(OPEN_EXCEPTIONS, limit=WAITING_LIMIT)]


@router.get("/v1/health/processes", response_model=ProcessHealth,
            responses=error_answers(401, 403, 429, 503))  # fmt: skip
async def process_health(
    _principal: Annotated[ApiPrincipal, Depends(health_readers)],
    temporal: TemporalDep,
    store: StoreDep,
) -> ProcessHealth:
    """Per business process: in flight, done and failed in the last 24 h, blocked with the
    exceptions that block them, the oldest waiting item; each system's last success; and
    what a failing system holds up."""
    now = datetime.now(UTC)
    client = await temporal.client()
    try:
        counts, (waiting, truncated), exception_ids = await asyncio.gather(
            read_counts(client, now - WINDOW), read_waiting(client), read_open_exceptions(client)
        )
    except RPCError as err:
        raise TemporalUnavailable(str(err)) from err
    rows: Sequence[HealthRow] = await run_in_threadpool(store.system_health)
    health_rows = {row.system: row for row in rows}
    return summarize(counts, waiting, exception_ids, health_rows, now, truncated)


__all__ = ["router"]
