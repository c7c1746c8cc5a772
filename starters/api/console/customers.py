"""The console's customer view: one customer's ids in billing, the ERP and support (the
account links `GET /v1/accounts/{id}` shows), recent postings from the journal, credits,
open exceptions and the processes running for the customer.

Processes come from Temporal's visibility by the CustomerId search attribute (open or
closed, newest first); open exceptions through the API's own `open_exceptions`. When the
workflow engine does not answer, the page still shows what the store holds, and says so.
"""

# No `from __future__ import annotations`: FastAPI must see the Annotated dependencies.
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from temporalio.client import WorkflowExecution, WorkflowExecutionStatus
from temporalio.service import RPCError

from adapters import visibility
from adapters.store import IntegrationStore
from adapters.store.models import Posting
from starters.api import accounts, finance
from starters.api.console.pages import (
    READERS,
    ConsoleSession,
    render,
    signed_in,
    validated,
    web_ui_link,
)
from starters.api.console.security import PAGE_HEADERS
from starters.api.dependencies import KeyringDep, SettingsDep, StoreDep, TemporalDep
from starters.api.shapes import STRIPE_CUSTOMER_ID
from starters.api.temporal import TemporalConnection, TemporalUnavailable

POSTING_LIMIT = 50
PROCESS_LIMIT = 100

router = APIRouter(prefix="/console", include_in_schema=False)


class CustomerQuery(BaseModel):
    customer: str = Field(pattern=STRIPE_CUSTOMER_ID)


@dataclass(frozen=True)
class Process:
    workflow_id: str
    workflow_type: str
    process: str
    status: str  # the business status (ProcessStatus), else Temporal's
    running: bool
    started_at: datetime | None
    web_ui: str
    item_link: str | None  # the console's page of it, when there is one


@router.get("/customers")
async def find_customer(request: Request, keyring: KeyringDep) -> Response:
    session = signed_in(request, keyring, READERS)
    if "customer" not in request.query_params:
        return render("customer_find.html", session=session, title="Customers")
    query = validated(
        CustomerQuery, {"customer": request.query_params["customer"].strip()}, session
    )
    target = f"/console/customers/{quote(query.customer, safe='')}"
    return RedirectResponse(target, status_code=303, headers=PAGE_HEADERS)


@router.get("/customers/{customer_id}")
async def customer_page(
    customer_id: str,
    request: Request,
    keyring: KeyringDep,
    temporal: TemporalDep,
    store: StoreDep,
    settings: SettingsDep,
) -> Response:
    session = signed_in(request, keyring, READERS)
    customer_id = validated(CustomerQuery, {"customer": customer_id}, session).customer
    links = await _account_links(customer_id, session, store)
    postings = await run_in_threadpool(recent_postings, store, customer_id)
    note = None
    try:
        processes = await _processes(temporal, settings, customer_id)
        exceptions = (await finance.open_exceptions(temporal, None, customer_id, None)).items
    except TemporalUnavailable:
        processes, exceptions = [], []
        note = "The workflow engine did not answer: processes and exceptions are not shown."
    return render(
        "customer.html", session=session, title=f"Customer {customer_id}",
        customer_id=customer_id, links=links, postings=postings, note=note,
        exceptions=exceptions,
        credits=[p for p in processes if p.workflow_id.startswith("credit/")],
        running=[p for p in processes if p.running],
    )  # fmt: skip


async def _account_links(customer_id: str, session: ConsoleSession, store: Any) -> list[Any]:
    """What `GET /v1/accounts/{id}` shows; none when the customer was never synced."""
    try:
        view = await accounts.show_account(customer_id, session.principal, store)
    except HTTPException as err:
        if err.status_code == 404:
            return []
        raise
    return list(view.records)


def recent_postings(store: IntegrationStore, customer_id: str) -> list[Posting]:
    """The customer's newest journal entries (every ERP document ledgerbridge posted)."""
    query = (
        select(Posting)
        .where(Posting.customer_id == customer_id)
        .order_by(Posting.id.desc())
        .limit(POSTING_LIMIT)
    )
    with store.session() as session:
        rows = list(session.scalars(query))
        session.expunge_all()
        return rows


async def _processes(
    temporal: TemporalConnection, settings: Any, customer_id: str
) -> list[Process]:
    """The customer's workflows in visibility, newest first (the id is already held to
    billing's shape before it is put in the query)."""
    client = await temporal.client()
    # No ORDER BY: the dev server's SQLite visibility refuses it; sorted here instead.
    query = f"CustomerId = '{customer_id}'"
    try:
        found = [e async for e in client.list_workflows(query, limit=PROCESS_LIMIT)]
    except RPCError as err:
        raise TemporalUnavailable(str(err)) from err
    found.sort(key=lambda e: e.start_time or datetime.min.replace(tzinfo=UTC), reverse=True)
    return [_process(e, settings) for e in found]


def _process(execution: WorkflowExecution, settings: Any) -> Process:
    attributes = execution.typed_search_attributes
    running = execution.status == WorkflowExecutionStatus.RUNNING
    temporal_status = execution.status.name.lower() if execution.status else "unknown"
    business = attributes.get(visibility.PROCESS_STATUS)
    item = execution.id.startswith(("credit/", "exception/"))
    return Process(
        workflow_id=execution.id,
        workflow_type=execution.workflow_type,
        process=attributes.get(visibility.BUSINESS_PROCESS) or execution.workflow_type,
        status=business if business and running else temporal_status,
        running=running,
        started_at=execution.start_time,
        web_ui=web_ui_link(settings, execution.id, execution.run_id),
        item_link=f"/console/items/{execution.id}" if item else None,
    )
