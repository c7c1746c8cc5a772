"""The console's reconciliation pages: the runs (latest first, each with the ERP it
reconciled), one run's totals per class and currency and its items with their remedy (filtered
by class, paged, CSV), and the form that starts runs for a period (each ERP, or one).

Every operation is the API's (starters/api/reconciliation.py): `report` reads a run as
`GET /v1/reconciliations/runs/{id}` does, `start_run` starts one as `POST
/v1/reconciliations` does (its checks, its audit row); the roles are the API's reconcilers.
"""

# No `from __future__ import annotations`: FastAPI must see the Annotated dependencies.
import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field, StringConstraints, field_validator
from starlette.concurrency import run_in_threadpool

from adapters.store.reconciliation import ReconciliationStore
from canonical.reconciliation import CLASSES, IN_AGREEMENT
from starters.api import reconciliation as recon_api
from starters.api.console.audit import _cell
from starters.api.console.pages import (
    ConsoleRefusal,
    ConsoleSession,
    checked_post,
    render,
    signed_in,
    through_api,
    validated,
)
from starters.api.console.security import PAGE_HEADERS
from starters.api.dependencies import KeyringDep, SettingsDep, StoreDep, TemporalDep
from starters.api.erp_routing import RoutingDep

# As the API's `reconcilers` (starters/api/dependencies.py).
RECONCILERS = ("ops", "finance", "finance_admin")
RUN_LIMIT = 50
ITEM_PAGE = 200
CSV_PAGE = 5000
STARTED = r"^recon/[A-Za-z0-9_.:\-/]{1,120}$"
CSV_COLUMNS = (
    "id", "class", "kind", "reference", "customer_id", "currency", "amount", "remedy",
    "outcome", "outcome_ref",
)  # fmt: skip

router = APIRouter(prefix="/console", include_in_schema=False)


class RunsQuery(BaseModel):
    started: list[Annotated[str, StringConstraints(pattern=STARTED)]] = Field(
        default_factory=list, max_length=20
    )


class ItemsQuery(BaseModel):
    """A run's page: one class or all, and the keyset page after an item id."""

    cls: str | None = Field(default=None, alias="class")
    after_id: int | None = Field(default=None, ge=0)

    @field_validator("cls", "after_id", mode="before")
    @classmethod
    def _blank_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("cls")
    @classmethod
    def _known_class(cls, value: str | None) -> str | None:
        if value is not None and value not in CLASSES:
            raise ValueError("not a reconciliation class")
        return value


def _reconciler(request: Request, keyring: Any) -> ConsoleSession:
    return signed_in(request, keyring, RECONCILERS)


async def _runs_page(
    request: Request, session: ConsoleSession, store: Any, erps: list[str], status: int = 200,
    **values: Any,
) -> Response:  # fmt: skip
    latest = await run_in_threadpool(ReconciliationStore(store).latest_runs, RUN_LIMIT)
    # Each run with how many of its items are not in agreement.
    runs = [
        (run, sum(n for cls, n in run.counts.items() if cls not in IN_AGREEMENT)) for run in latest
    ]
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date()
    return render(
        "reconciliations.html", status, session=session, title="Reconciliation", runs=runs,
        classes=CLASSES, yesterday=yesterday, erps=erps, **values,
    )  # fmt: skip


@router.get("/reconciliations")
async def runs_page(
    request: Request, keyring: KeyringDep, store: StoreDep, routing: RoutingDep
) -> Response:
    session = _reconciler(request, keyring)
    query = validated(RunsQuery, {"started": request.query_params.getlist("started")}, session)
    notice = None
    if query.started:
        notice = (
            f"Started {', '.join(query.started)}; each run is listed here once it has begun "
            "loading."
        )
    return await _runs_page(request, session, store, routing.erp_names(), notice=notice)


@router.post("/reconciliations")
async def start_run(
    request: Request,
    keyring: KeyringDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    store: StoreDep,
    routing: RoutingDep,
) -> Response:
    session = await checked_post(request, keyring, RECONCILERS)
    form = request.state.console_form
    fields = {"period_from": form.get("period_from", "").strip() or None,
              "period_to": form.get("period_to", "").strip() or None,
              "erp": form.get("erp", "").strip() or None}  # fmt: skip
    try:
        body = validated(recon_api.ReconRequest, fields, session)
        started = await through_api(
            recon_api.start_run(
                body, session.principal, settings, temporal, store,
                request.state.correlation_id, routing,
            ),
            session,
        )  # fmt: skip
    except ConsoleRefusal as refusal:
        if refusal.status in (401, 403):
            raise
        return await _runs_page(
            request, session, store, routing.erp_names(), refusal.status,
            problem=refusal.message, form=fields,
        )  # fmt: skip
    ids = [run.workflow_id for run in started.runs] or [started.workflow_id]
    target = "/console/reconciliations?" + urlencode({"started": ids}, doseq=True)
    return RedirectResponse(target, status_code=303, headers=PAGE_HEADERS)


async def _report(
    run_id: str, session: ConsoleSession, store: Any, cls: str | None, after_id: int | None,
    limit: int,
) -> recon_api.ReconReport:  # fmt: skip
    return await through_api(  # type: ignore[no-any-return]
        recon_api.report(run_id, session.principal, store, cls, after_id, limit), session
    )


@router.get("/reconciliations/runs/{run_id:path}")
async def run_page(run_id: str, request: Request, keyring: KeyringDep, store: StoreDep) -> Response:
    session = _reconciler(request, keyring)
    query = validated(ItemsQuery, dict(request.query_params), session)
    report = await _report(run_id, session, store, query.cls, query.after_id, ITEM_PAGE)
    shown = {"class": query.cls} if query.cls else {}
    next_link = None
    if report.next_after_id is not None:
        next_link = "?" + urlencode({**shown, "after_id": report.next_after_id})
    return render(
        "reconciliation_run.html", session=session, title=f"Reconciliation {run_id}",
        report=report, classes=CLASSES, query=query, next_link=next_link,
        csv_link=f"/console/reconciliations/csv/{quote(run_id)}?{urlencode(shown)}",
    )  # fmt: skip


@router.get("/reconciliations/csv/{run_id:path}")
async def run_csv(run_id: str, request: Request, keyring: KeyringDep, store: StoreDep) -> Response:
    """Every item of the run (of one class, if asked), read page by page."""
    session = _reconciler(request, keyring)
    query = validated(ItemsQuery, dict(request.query_params), session)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    after_id = query.after_id
    while True:
        report = await _report(run_id, session, store, query.cls, after_id, CSV_PAGE)
        for item in report.items:
            writer.writerow([_cell("" if value is None else value) for value in (
                item.id, item.classification, item.kind, item.reference, item.customer_id,
                item.currency, item.amount, item.remedy, item.outcome, item.outcome_ref,
            )])  # fmt: skip
        if report.next_after_id is None:
            break
        after_id = report.next_after_id
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)[:120]
    headers = {
        **PAGE_HEADERS,
        "Content-Disposition": f'attachment; filename="ledgerbridge-{name}.csv"',
    }
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)
