"""The finance inbox over HTTP: open exceptions, their full context, and decisions.

Finance needs no Temporal credentials: the API reads Temporal's visibility and queries the
exception workflows, and hands decisions to their `decide` Update with the caller's verified
identity, so the workflow's validator judges them and the workflow audits them.
"""

# No `from __future__ import annotations`: FastAPI must see the Annotated dependencies.
import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field
from temporalio.client import WorkflowExecution
from temporalio.service import RPCError

from adapters import visibility
from canonical import Decision, DecisionRequest, ExceptionContext, FinanceDecision, Money
from starters.api.auth import ApiPrincipal
from starters.api.dependencies import TemporalDep, finance_deciders, finance_readers
from starters.api.errors import V1_ERRORS, error_answers
from starters.api.shapes import STRIPE_CUSTOMER_ID, StrictBody
from starters.api.temporal import (
    BASE64URL,
    MAX_PAGE_SIZE,
    PAGE_SIZE,
    ItemsPage,
    TemporalConnection,
    count_runs,
    decide_through_update,
    inbox_filters,
    not_found_or_unavailable,
    opened_and_age,
    page_headers,
    read_page,
)
from workflows.finance_exception import FinanceExceptionState, FinanceExceptionWorkflow

# Exception ids are checked to these characters before they name a workflow.
SAFE_VALUE = re.compile(r"^[A-Za-z0-9_\-./:]{1,200}$")
PROCESS_NAME = r"^[a-z_]{1,40}$"


class ExceptionSummary(BaseModel):
    exception_id: str
    status: str = Field(description="open | reminded | escalated | decided | unreadable")
    process: str
    step: str
    customer_id: str | None
    subscription_id: str | None
    invoice_id: str | None
    case_id: str | None
    amount: Money | None
    error: str
    asked: str = Field(description="what finance is asked to decide")
    opened_at: datetime
    age_hours: float


class ExceptionDetail(ExceptionSummary):
    context: ExceptionContext
    decision: FinanceDecision | None
    origin_workflow_id: str
    run_id: str | None = Field(default=None, description="the exception workflow's run")


class DecisionBody(StrictBody):
    decision: Decision
    reason: str = Field(min_length=1, max_length=2000)
    manual_erp_number: str | None = Field(default=None, max_length=64)


router = APIRouter(prefix="/v1/exceptions", tags=["finance"], responses=V1_ERRORS)


@router.get("", response_model=list[ExceptionSummary])
async def list_open_exceptions(
    _principal: Annotated[ApiPrincipal, Depends(finance_readers)],
    temporal: TemporalDep,
    request: Request,
    response: Response,
    process: Annotated[
        str | None, Query(pattern=PROCESS_NAME, description="e.g. amendment_to_erp")
    ] = None,
    customer_id: Annotated[str | None, Query(pattern=STRIPE_CUSTOMER_ID)] = None,
    # At most 100 years: further back than datetime.min is an OverflowError, not a filter.
    min_age_hours: Annotated[float | None, Query(ge=0, le=876_000)] = None,
    min_amount_minor: Annotated[int | None, Query(ge=0)] = None,
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = PAGE_SIZE,
    page_token: Annotated[str | None, Query(max_length=2000, pattern=BASE64URL)] = None,
) -> list[ExceptionSummary]:
    """Open exceptions, a page at a time (newest page first, oldest first within it);
    `X-Total-Count` counts all, `Link: rel="next"` continues."""
    page = await open_exceptions(
        temporal, process, customer_id, min_age_hours, min_amount_minor,
        page_size=page_size, page_token=page_token,
    )  # fmt: skip
    page_headers(request, response, page.total, page.next_token)
    return page.items


def exceptions_query(
    process: str | None = None,
    customer_id: str | None = None,
    min_age_hours: float | None = None,
    min_amount_minor: int | None = None,
    min_amount: Decimal | None = None,
) -> str:
    """The visibility query of the open exceptions; filters validated by the caller."""
    query = "BusinessProcess = 'finance_exception' AND ExecutionStatus = 'Running'"
    if process:
        query += f" AND OriginProcess = '{process}'"
    return query + inbox_filters(customer_id, min_amount_minor, min_age_hours, min_amount)


async def open_exceptions(
    temporal: TemporalConnection,
    process: str | None = None,
    customer_id: str | None = None,
    min_age_hours: float | None = None,
    min_amount_minor: int | None = None,
    *,
    min_amount: Decimal | None = None,
    page_size: int = PAGE_SIZE,
    page_token: str | None = None,
) -> ItemsPage[ExceptionSummary]:
    """A page of the open exceptions, oldest first within it, read from visibility alone;
    the filters are validated by the caller (the API's Query shapes, the console's form)."""
    query = exceptions_query(process, customer_id, min_age_hours, min_amount_minor, min_amount)
    return await read_page(
        temporal, query, exception_row, lambda s: s.opened_at, page_size, page_token
    )


async def count_exceptions(
    temporal: TemporalConnection,
    process: str | None = None,
    customer_id: str | None = None,
    min_age_hours: float | None = None,
    min_amount: Decimal | None = None,
) -> int:
    """How many exceptions are open under these filters (one visibility count)."""
    query = exceptions_query(process, customer_id, min_age_hours, None, min_amount)
    return await count_runs(await temporal.client(), query)


@router.get("/{exception_id:path}", response_model=ExceptionDetail, responses=error_answers(404))
async def show_exception(
    exception_id: str,
    _principal: Annotated[ApiPrincipal, Depends(finance_readers)],
    temporal: TemporalDep,
) -> ExceptionDetail:
    return await exception_detail(temporal, exception_id)


async def exception_detail(temporal: TemporalConnection, exception_id: str) -> ExceptionDetail:
    """One exception with its whole context; 404 for an id that names no exception."""
    client = await temporal.client()
    handle = client.get_workflow_handle(_exception_id(exception_id))
    try:
        description = await handle.describe()
    except RPCError as err:
        raise not_found_or_unavailable(err, f"no finance exception {exception_id}") from err
    if description.workflow_type != "FinanceException":
        raise HTTPException(404, f"no finance exception {exception_id}")
    state = await handle.query(FinanceExceptionWorkflow.state)
    summary = _summary(state, description.start_time)
    return ExceptionDetail(
        **summary.model_dump(),
        context=state.context,
        decision=state.decision,
        origin_workflow_id=state.context.origin_workflow_id,
        run_id=description.run_id,
    )


@router.post(
    "/{exception_id:path}:decide",
    response_model=FinanceDecision,
    responses=error_answers(404, 409),
)
async def decide_exception(
    exception_id: str,
    body: DecisionBody,
    principal: Annotated[ApiPrincipal, Depends(finance_deciders)],
    temporal: TemporalDep,
) -> FinanceDecision:
    return await decide(temporal, exception_id, body, principal)


async def decide(
    temporal: TemporalConnection, exception_id: str, body: DecisionBody, principal: ApiPrincipal
) -> FinanceDecision:
    """Hands the decision of `principal` (whose role the caller has admitted) to the
    exception's validated Update: 409 when refused, 404 for no such exception."""
    client = await temporal.client()
    handle = client.get_workflow_handle(_exception_id(exception_id))
    request = DecisionRequest(
        decision=body.decision,
        reason=body.reason,
        actor=principal.name,
        role=principal.role,
        manual_erp_number=body.manual_erp_number,
    )
    return await decide_through_update(
        handle,
        request,
        FinanceDecision,
        missing=f"no finance exception {exception_id}",
        closed=f"{exception_id} is already decided",
    )


def _safe(value: str) -> str:
    if not SAFE_VALUE.match(value):
        raise HTTPException(422, f"not a valid id: {value[:40]!r}")
    return value


def _exception_id(exception_id: str) -> str:
    if not exception_id.startswith("exception/"):
        raise HTTPException(404, f"no finance exception {exception_id}")
    return _safe(exception_id)


def exception_row(execution: WorkflowExecution) -> ExceptionSummary:
    """An open exception as its search attributes tell it: the error's type only (its
    message may carry remote data and stays on the item page: visibility is unencrypted)."""
    attributes = execution.typed_search_attributes
    summary = visibility.read_inbox_summary(attributes.get(visibility.INBOX_SUMMARY))
    asked = summary.get("asked") or []
    return ExceptionSummary(
        exception_id=execution.id,
        status=attributes.get(visibility.PROCESS_STATUS) or "open",
        process=attributes.get(visibility.ORIGIN_PROCESS) or "?",
        step=str(summary.get("step") or "?"),
        customer_id=attributes.get(visibility.CUSTOMER_ID),
        subscription_id=attributes.get(visibility.SUBSCRIPTION_ID),
        invoice_id=attributes.get(visibility.INVOICE_ID),
        case_id=attributes.get(visibility.CASE_ID),
        amount=visibility.amount_of(attributes),
        error=str(summary.get("error") or "see the exception's page"),
        asked=" | ".join(asked) if asked else "-",
        **opened_and_age(execution.start_time),
    )


def _summary(state: FinanceExceptionState, started: datetime) -> ExceptionSummary:
    context = state.context
    return ExceptionSummary(
        exception_id=state.exception_id,
        status=state.status,
        process=context.process,
        step=context.step,
        customer_id=context.customer_id,
        subscription_id=context.subscription_id,
        invoice_id=context.invoice_id,
        case_id=context.case_id,
        amount=context.amount,
        error=f"{context.error_type}: {context.error_message}",
        asked=" | ".join(context.allowed_decisions),
        **opened_and_age(started),
    )


__all__ = [
    "DecisionBody",
    "ExceptionDetail",
    "ExceptionSummary",
    "count_exceptions",
    "decide",
    "exception_detail",
    "exception_row",
    "exceptions_query",
    "open_exceptions",
    "router",
]
