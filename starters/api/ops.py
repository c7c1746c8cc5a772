"""Health and status for operators."""

# No `from __future__ import annotations`: FastAPI must see the Annotated dependencies.
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from temporalio.service import RPCError

from starters.api.auth import ApiPrincipal
from starters.api.dependencies import StoreDep, TemporalDep, any_role
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


__all__ = ["router"]
