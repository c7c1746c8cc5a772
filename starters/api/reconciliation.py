"""Reconciliation over HTTP: start runs for a range (one per ERP of the routing, or of the ERP
asked for), follow one, read its stored report; each names the ERP it reconciled."""

# No `from __future__ import annotations`: FastAPI must see the Annotated dependencies.
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from adapters.store.reconciliation import ReconciliationStore
from canonical.erp_routing import ERP_NAME_PATTERN
from canonical.reconciliation import CLASSES
from canonical.reconciliation_erps import erp_on_home_queue
from starters.api.auth import ApiPrincipal
from starters.api.dependencies import (
    CorrelationIdDep,
    SettingsDep,
    StoreDep,
    TemporalDep,
    reconcilers,
)
from starters.api.erp_routing import RoutingDep
from starters.api.errors import V1_ERRORS, error_answers
from starters.api.shapes import IsoDate, StrictBody
from starters.api.temporal import (
    TemporalUnavailable,
    not_found_or_unavailable,
)
from starters.reconciliation import UnknownErp, start_reconciliations
from workflows.reconciliation import (
    ReconciliationResult,
    ReconciliationWorkflow,
    erp_of_workflow_id,
)


class ReconRequest(StrictBody):
    period_from: IsoDate = Field(description="first UTC day")
    period_to: IsoDate | None = Field(default=None, description="last UTC day, included")
    erp: str | None = Field(
        default=None,
        pattern=ERP_NAME_PATTERN,
        description="the routing's ERP to reconcile; omitted: each ERP of the routing, a run each",
    )


class ReconRunStarted(BaseModel):
    erp: str = Field(description="the ERP the run reconciles")
    workflow_id: str
    already_running: bool = Field(
        default=False, description="a run of this ERP and these days was still going: left to go"
    )


class ReconStarted(BaseModel):
    workflow_id: str = Field(description="the first run's (the ERP on the `erp` queue's)")
    runs: list[ReconRunStarted] = Field(default_factory=list, description="one per ERP")


class ReconProgressView(BaseModel):
    workflow_id: str
    erp: str | None = Field(default=None, description="the ERP the run reconciles")
    state: str = Field(description="running | completed | failed | …")
    progress: dict[str, Any]
    result: ReconciliationResult | None
    failure: str | None = Field(
        default=None, description="why a run that did not complete ended, as Temporal recorded it"
    )


class CurrencyFigure(BaseModel):
    count: int
    amount: Decimal


class ReconItemView(BaseModel):
    """A stored finding, read straight from the store's item (same field names)."""

    id: int
    classification: str
    kind: str | None = Field(
        default=None, description="invoice, credit_note, payment, refund, tax or receivable"
    )
    reference: str | None = Field(description="billing id; for a tax item the ERP tax's name")
    customer_id: str | None
    currency: str
    amount: Decimal
    billing_amount: Decimal | None
    erp_amount: Decimal | None
    journal_amount: Decimal | None = None
    billing_document_id: str | None = None
    erp_document_ids: list[str]
    case_id: str | None
    detail: str | None
    remedy: str
    outcome: str | None
    outcome_ref: str | None


class ReconReport(BaseModel):
    run_id: str
    erp: str | None = Field(
        default=None, description="the ERP reconciled; None for runs from before routing"
    )
    period_start: datetime
    period_end: datetime
    status: str
    loaded: dict[str, int]
    totals: dict[str, dict[str, CurrencyFigure]]
    totals_by_kind: dict[str, dict[str, dict[str, CurrencyFigure]]] = Field(
        default_factory=dict,
        description="per class, the totals split by kind of item (invoice, payment, tax, …)",
    )
    counts: dict[str, int]
    healed: int
    exceptions: int
    items: list[ReconItemView]
    next_after_id: int | None


router = APIRouter(prefix="/v1/reconciliations", tags=["reconciliation"], responses=V1_ERRORS)


@router.post("", response_model=ReconStarted, status_code=202, responses=error_answers(404, 409))
async def start_run(
    body: ReconRequest,
    principal: Annotated[ApiPrincipal, Depends(reconcilers)],
    settings: SettingsDep,
    temporal: TemporalDep,
    store: StoreDep,
    correlation_id: CorrelationIdDep,
    routing: RoutingDep,
) -> ReconStarted:
    """Reconcile billing, each ERP (or the one asked for) and the journal for the days given:
    one run per ERP. A run of the same ERP and days still going is left to go; 409 when every
    run asked for is; 404 for an ERP the routing does not have."""
    client = await temporal.client()
    try:
        runs = await start_reconciliations(
            client, settings, routing, body.period_from, body.period_to or body.period_from,
            body.erp,
        )  # fmt: skip
    except UnknownErp as err:  # like an entity the routing lacks: no such ERP to reconcile
        raise HTTPException(404, f"body.erp: {err}") from None
    except ValueError as err:
        raise HTTPException(422, str(err)) from None
    except WorkflowAlreadyStartedError:
        raise HTTPException(409, "a reconciliation of this period is running") from None
    except RPCError as err:
        raise TemporalUnavailable(str(err)) from err
    for run in runs:
        if not run.already_running:
            await run_in_threadpool(
                store.append_audit,
                actor=principal.name,
                role=principal.role,
                action="reconciliation.started",
                subject=run.workflow_id,
                correlation_id=correlation_id,
                details={"from": str(body.period_from), "to": str(body.period_to),
                         "erp": run.erp},
            )  # fmt: skip
    return ReconStarted(
        workflow_id=runs[0].workflow_id,
        runs=[ReconRunStarted(erp=r.erp, workflow_id=r.workflow_id,
                              already_running=r.already_running) for r in runs],
    )  # fmt: skip


@router.get("/runs/{run_id:path}", response_model=ReconReport, responses=error_answers(404))
async def report(
    run_id: str,
    _principal: Annotated[ApiPrincipal, Depends(reconcilers)],
    store: StoreDep,
    classification: Annotated[
        str | None, Query(alias="class", json_schema_extra={"enum": list(CLASSES)})
    ] = None,
    after_id: Annotated[int | None, Query(ge=0)] = None,
    limit: Annotated[int, Query(ge=1, le=5000)] = 500,
) -> ReconReport:
    """A stored run: totals per class and currency, and its items (keyset pages)."""
    if classification is not None and classification not in CLASSES:
        raise HTTPException(422, f"class must be one of {', '.join(CLASSES)}")
    recon = ReconciliationStore(store)
    run = await run_in_threadpool(recon.run, run_id)
    if run is None:
        raise HTTPException(404, f"no reconciliation run {run_id}")
    items = await run_in_threadpool(recon.items, run_id, classification, after_id, limit)  # type: ignore[arg-type]
    return ReconReport(
        run_id=run.run_id,
        erp=run.erp,
        period_start=run.period_start,
        period_end=run.period_end,
        status=run.status,
        loaded=run.loaded,
        totals={
            cls: {
                cur: CurrencyFigure(count=t.count, amount=t.amount)
                for cur, t in total.by_currency.items()
            }
            for cls, total in run.totals.items()
        },
        totals_by_kind={
            cls: {
                kind: {
                    cur: CurrencyFigure(count=t.count, amount=t.amount)
                    for cur, t in by_currency.items()
                }
                for kind, by_currency in total.by_kind.items()
            }
            for cls, total in run.totals.items()
        },
        counts=run.counts,
        healed=run.healed_count,
        exceptions=run.exception_count,
        items=[ReconItemView.model_validate(i, from_attributes=True) for i in items],
        next_after_id=items[-1].id if len(items) == limit else None,
    )


@router.get("/{workflow_id:path}", response_model=ReconProgressView, responses=error_answers(404))
async def follow(
    workflow_id: str,
    _principal: Annotated[ApiPrincipal, Depends(reconcilers)],
    temporal: TemporalDep,
    routing: RoutingDep,
) -> ReconProgressView:
    """Where a run is (sources loaded, phase), and its result once done."""
    if not workflow_id.startswith("recon/"):
        raise HTTPException(404, f"no reconciliation {workflow_id[:80]}")
    client = await temporal.client()
    handle = client.get_workflow_handle(workflow_id)
    try:
        description = await handle.describe()
        status = description.status
        result = None
        progress: dict[str, Any] = {}
        if status == WorkflowExecutionStatus.COMPLETED:
            result = ReconciliationResult.model_validate(await handle.result())
        elif status == WorkflowExecutionStatus.RUNNING:
            progress = await handle.query(ReconciliationWorkflow.progress)
        failure = await _failure_of(handle) if status in ENDED_WITHOUT_RESULT else None
    except RPCError as err:
        raise not_found_or_unavailable(err, f"no reconciliation {workflow_id}") from err
    state = status.name.lower() if status else "unknown"
    # What the run says it reconciles; else what its id names (no ERP: the `erp` queue's).
    erp = (result.erp if result else progress.get("erp")) or (
        erp_of_workflow_id(workflow_id) or erp_on_home_queue(routing)
    )
    return ReconProgressView(
        workflow_id=workflow_id, erp=erp, state=state, progress=progress, result=result,
        failure=failure,
    )  # fmt: skip


ENDED_WITHOUT_RESULT = frozenset({
    WorkflowExecutionStatus.FAILED, WorkflowExecutionStatus.TERMINATED,
    WorkflowExecutionStatus.TIMED_OUT, WorkflowExecutionStatus.CANCELED,
})  # fmt: skip


async def _failure_of(handle: WorkflowHandle[Any, Any]) -> str:
    """The failure chain of the run that ended, outermost first: "Activity task failed:
    RejectedError: ..." rather than only "failed"."""
    try:
        await handle.result(follow_runs=False)
    except WorkflowFailureError as err:
        causes: list[str] = []
        cause: BaseException | None = err.cause
        while cause is not None and len(causes) < 5:
            causes.append(str(cause))  # an ApplicationError reads "RejectedError: message"
            cause = cause.__cause__
        return ": ".join(causes)[:2000] or str(err)
    return "ended without a failure recorded"


__all__ = ["router"]
