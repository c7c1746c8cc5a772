"""Which ERP books which legal entity, and each entity's move to its target ERP
(canonical/erp_routing.py): every role may read it; the controller (finance_admin) takes a
step, which is audited in the same transaction and refused, in one line, when it goes
backwards, skips a step, is dated in the past or before the step it follows."""

# No `from __future__ import annotations`: FastAPI must see the Annotated dependencies.
import asyncio
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from temporalio.service import RPCError

from adapters.mapping_file import MappingFileError
from adapters.routing_file import load_routing
from adapters.store.erp_coexistence import ErpCoexistenceStore, ModeChangeRefused
from canonical.erp_routing import (
    ENTITY_NAME_PATTERN,
    ErpMode,
    ErpRouting,
    LegalEntity,
    ModeChange,
    mode_change_refusal,
    route_on,
)
from canonical.shadow_report import ShadowReport
from starters.api.auth import ApiPrincipal
from starters.api.dependencies import (
    SettingsDep,
    StoreDep,
    TemporalDep,
    erp_movers,
    finance_readers,
)
from starters.api.errors import V1_ERRORS, error_answers
from starters.api.shapes import IsoDate, StrictBody
from starters.api.temporal import TemporalUnavailable
from starters.shadow_reports import start_shadow_report

router = APIRouter(prefix="/v1/erp", tags=["erp"], responses=V1_ERRORS)

Reader = Annotated[ApiPrincipal, Depends(finance_readers)]
Mover = Annotated[ApiPrincipal, Depends(erp_movers)]
EntityName = Annotated[str, Path(pattern=ENTITY_NAME_PATTERN, description="the legal entity")]
# How long a request waits for a shadow report before answering 202 (it goes on being made).
REPORT_WAIT_SECONDS = 20.0


class ModeStep(BaseModel):
    mode: ErpMode
    effective_from: date
    changed_by: str
    changed_at: datetime
    reason: str | None


class EntityRoute(BaseModel):
    name: str
    legacy: str = Field(description="the ERP that books it until its cutover")
    target: str | None = Field(description="the ERP it moves to, if it moves")
    mode: ErpMode = Field(description="its mode for a document dated today")
    books_today: str = Field(description="the ERP that books a document dated today")
    shadowed_to: str | None = Field(description="the ERP a document dated today is copied to")
    steps: list[ModeStep]


class ModeChangeBody(StrictBody):
    mode: Literal["shadow", "cutover"]
    effective_from: IsoDate = Field(description="YYYY-MM-DD, today or later")
    reason: str = Field(min_length=3, max_length=500, pattern=r"^[^\x00-\x1f\x7f]*$")


def _routing(settings: SettingsDep) -> ErpRouting:
    try:
        return load_routing(settings.resolved_erp_routing())
    except MappingFileError as err:
        raise HTTPException(503, str(err)) from None


RoutingDep = Annotated[ErpRouting, Depends(_routing)]


@router.get("/entities", summary="Each legal entity, the ERP that books it and its steps")
async def list_entities(_: Reader, routing: RoutingDep, store: StoreDep) -> list[EntityRoute]:
    changes = await run_in_threadpool(ErpCoexistenceStore(store).mode_changes)
    return [_entity_route(routing, name, changes) for name in (e.name for e in routing.entities)]


@router.post(
    "/entities/{entity}/mode",
    summary="Take the entity's next step: shadow, then cutover, from a day on",
    responses=error_answers(404, 409, 422),
)
async def change_mode(
    entity: EntityName, body: ModeChangeBody, principal: Mover, routing: RoutingDep,
    store: StoreDep,
) -> EntityRoute:  # fmt: skip
    legal_entity = _known(routing, entity)
    effective_from = body.effective_from
    today = datetime.now(UTC).date()
    coexistence = ErpCoexistenceStore(store)
    reports = await run_in_threadpool(coexistence.shadow_reports, entity, 1)
    last_report = (reports[0].day, len(reports[0].differences)) if reports else None
    try:
        await run_in_threadpool(
            lambda: coexistence.change_mode(
                entity=entity, mode=body.mode, effective_from=effective_from,
                actor=principal.name, role=principal.role, reason=body.reason,
                refusal=lambda steps: mode_change_refusal(
                    legal_entity, steps, body.mode, effective_from, today, last_report
                ),
            )
        )  # fmt: skip
    except ModeChangeRefused as refused:
        raise HTTPException(409, str(refused)) from None
    changes = await run_in_threadpool(coexistence.mode_changes, entity)
    return _entity_route(routing, entity, changes)


def _known(routing: ErpRouting, entity: str) -> LegalEntity:
    found = routing.entity(entity)
    if found is None:
        raise HTTPException(
            404, f"no legal entity {entity} in ERP routing version {routing.version}"
        )
    return found


def _entity_route(routing: ErpRouting, name: str, changes: list[ModeChange]) -> EntityRoute:
    entity = routing.entity(name)
    assert entity is not None
    own = [c for c in changes if c.entity == name]
    today = route_on(routing, entity, own, datetime.now(UTC).date())
    return EntityRoute(
        name=name,
        legacy=entity.legacy,
        target=entity.target,
        mode=today.mode,
        books_today=today.book,
        shadowed_to=today.shadow,
        steps=[
            ModeStep(mode=c.mode, effective_from=c.effective_from, changed_by=c.changed_by,
                     changed_at=c.changed_at, reason=c.reason)
            for c in own
        ],
    )  # fmt: skip


class ShadowReportBody(StrictBody):
    day: IsoDate = Field(description="YYYY-MM-DD: the day postings were sent")


@router.get(
    "/entities/{entity}/shadow-reports",
    summary="The entity's latest shadow reports, newest day first",
    responses=error_answers(404),
)
async def list_shadow_reports(
    entity: EntityName, _: Reader, routing: RoutingDep, store: StoreDep
) -> list[ShadowReport]:
    _known(routing, entity)
    return await run_in_threadpool(ErpCoexistenceStore(store).shadow_reports, entity)


class ShadowReportRunning(BaseModel):
    workflow_id: str
    status: Literal["running"] = "running"
    detail: str = "the report is still being made; GET the entity's shadow-reports for it"


@router.post(
    "/entities/{entity}/shadow-reports",
    summary="Make the entity's shadow report for a day now (it is made daily for the day before)",
    responses={
        202: {"model": ShadowReportRunning, "description": "still being made after 20 s"},
        **error_answers(404, 409, 503),
    },
)
async def make_shadow_report(
    entity: EntityName, body: ShadowReportBody, _: Reader, routing: RoutingDep,
    temporal: TemporalDep, settings: SettingsDep,
) -> Any:  # fmt: skip
    """The report when it is made within REPORT_WAIT_SECONDS; else 202 with its workflow:
    a long day goes on being read, and lands in the entity's reports."""
    legal_entity = _known(routing, entity)
    if legal_entity.target is None:
        raise HTTPException(409, f"entity {entity} has no target ERP: nothing is shadowed")
    day = body.day
    try:
        handle = await start_shadow_report(await temporal.client(), settings, entity, day)
        try:
            result = await asyncio.wait_for(handle.result(), REPORT_WAIT_SECONDS)
        except TimeoutError:
            running = ShadowReportRunning(workflow_id=handle.id)
            return JSONResponse(running.model_dump(mode="json"), status_code=202)
    except RPCError as err:
        raise TemporalUnavailable(str(err)) from err
    return result.reports[0]
