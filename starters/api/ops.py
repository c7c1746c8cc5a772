"""Health and status for operators."""

# No `from __future__ import annotations`: FastAPI must see the Annotated dependencies.
import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel
from temporalio.service import RPCError, RPCStatusCode

from canonical.ledger import LEDGER_WORKFLOW, REFRESH_SIGNAL
from starters.api.auth import ApiPrincipal
from starters.api.dependencies import StoreDep, TemporalDep, any_role, operators
from starters.api.errors import error_answers, first_line
from starters.api.temporal import TemporalUnavailable

router = APIRouter(tags=["ops"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/v1/status", responses=error_answers(401, 429))
async def status(
    _principal: Annotated[ApiPrincipal, Depends(any_role)], temporal: TemporalDep, store: StoreDep
) -> dict[str, Any]:
    try:
        client = await temporal.client()
        await client.service_client.check_health()
        temporal_state = "ok"
    except (TemporalUnavailable, RPCError) as err:
        temporal_state = f"unreachable: {first_line(err)}"
    return {"temporal": temporal_state, "store": store.engine.dialect.name}


class LedgersRefreshed(BaseModel):
    signalled: int
    already_closed: int  # listed as running, closed before the ask reached them
    workflow_ids: list[str]  # the first REFRESH_LISTED of those signalled


RUNNING_LEDGERS = f"WorkflowType = '{LEDGER_WORKFLOW}' AND ExecutionStatus = 'Running'"
REFRESH_BATCH = 50
REFRESH_LISTED = 100


@router.post("/v1/ledgers:refresh", response_model=LedgersRefreshed,
             responses=error_answers(401, 403, 429, 503))  # fmt: skip
async def refresh_ledgers(
    _principal: Annotated[ApiPrincipal, Depends(operators)], temporal: TemporalDep
) -> LedgersRefreshed:
    """Ask every running ledger to continue as new once idle, so that it takes up the
    behaviour of the code deployed now (a run keeps the old behaviour of what it has already
    decided until it continues as new). Safe to repeat: a ledger asked twice continues as new
    once per ask, carrying over what it has not done."""
    signalled: list[str] = []
    closed = 0
    try:
        client = await temporal.client()
        ids = [execution.id async for execution in client.list_workflows(RUNNING_LEDGERS)]
        for start in range(0, len(ids), REFRESH_BATCH):
            batch = ids[start : start + REFRESH_BATCH]
            answers = await asyncio.gather(
                *(client.get_workflow_handle(wid).signal(REFRESH_SIGNAL) for wid in batch),
                return_exceptions=True,
            )
            for workflow_id, answer in zip(batch, answers, strict=True):
                if isinstance(answer, RPCError) and answer.status == RPCStatusCode.NOT_FOUND:
                    closed += 1  # it ended between the listing and the ask: nothing to do
                elif isinstance(answer, BaseException):
                    raise answer
                else:
                    signalled.append(workflow_id)
    except RPCError as err:  # the engine's own answer: the handler makes it a 503
        raise TemporalUnavailable(str(err)) from err
    return LedgersRefreshed(
        signalled=len(signalled), already_closed=closed, workflow_ids=signalled[:REFRESH_LISTED]
    )


__all__ = ["router"]
