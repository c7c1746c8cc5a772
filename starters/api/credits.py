"""Support credits over HTTP: check one live, request one, see it, and finance's approvals.

`POST /v1/credits:validate` answers at once what the policy would decide, reading support,
billing, the ERP and the posting journal live, and starts nothing. `POST /v1/credits` runs
the same check, refuses what can never be granted (4xx, noted on the ticket) and otherwise
starts `credit/{case_id}/{request_id}` once, however often it is sent. Finance lists the
credits waiting for approval and decides them through the workflow's validated Update.
"""

# No `from __future__ import annotations`: FastAPI must see the Annotated dependencies.
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from temporalio.client import WorkflowExecution
from temporalio.service import RPCError

from activities.credits import CreditFactsInput, gather_credit_facts
from adapters import visibility
from adapters.errors import AdapterError, NotFoundError, ValidationError
from adapters.logs import get_logger
from adapters.ports import BillingSystem, Ledger, SupportDesk
from adapters.store import IntegrationStore
from canonical import Money
from canonical.credit import CreditAssessment, CreditFacts, CreditPolicy, CreditRequest
from starters.api.auth import ApiPrincipal
from starters.api.dependencies import (
    BillingDep,
    CorrelationIdDep,
    IntakeDep,
    LedgerDep,
    PolicyDep,
    StoreDep,
    SupportDep,
    TemporalDep,
    credit_checkers,
    credit_readers,
    credit_requesters,
    finance_deciders,
)
from starters.api.errors import V1_ERRORS, counterpart_unavailable, error_answers
from starters.api.shapes import (
    STRIPE_CUSTOMER_ID,
    STRIPE_INVOICE_ID,
    ZENDESK_TICKET_ID,
    MoneyIn,
    StrictBody,
)
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
from starters.routing import credit_start
from workflows.case_to_credit import CaseToCreditWorkflow, CreditApproval, CreditState
from workflows.credit_policy import assess, eligibility_problems

log = get_logger("ledgerbridge.api.credits")
SAFE_ID = r"^[A-Za-z0-9_\-.:]{1,64}$"
WAITING = ("awaiting_approval", "reminded", "escalated")
CREDIT_PROCESS = "case_to_credit"


class CreditBody(StrictBody):
    case_id: str = Field(pattern=ZENDESK_TICKET_ID, description="the support ticket's number")
    amount: MoneyIn
    reason: str = Field(min_length=1, max_length=500)
    invoice_id: str | None = Field(
        default=None,
        pattern=STRIPE_INVOICE_ID,
        description="credit this open invoice (in_...); none: the next one",
    )
    incident_reference: str | None = Field(default=None, max_length=128)
    request_id: str | None = Field(
        default=None,
        pattern=SAFE_ID,
        description="unique per request on the ticket (or send an Idempotency-Key header)",
    )


class CreditCheck(BaseModel):
    """What the policy would decide now, and the live facts it decided on."""

    outcome: Literal["auto_approve", "needs_approval", "reject", "ineligible"]
    reasons: list[str]
    warnings: list[str] = Field(description="what would send the credit to finance later")
    case_id: str
    organization_id: str | None
    customer_id: str | None
    subscription_id: str | None
    monthly_recurring: Money | None
    credited_last_90_days: Money | None
    erp_party: str | None
    erp_period_open: bool | None


class CreditAccepted(BaseModel):
    status: Literal["accepted", "duplicate"]
    workflow_id: str
    check: CreditCheck


class ApprovalSummary(BaseModel):
    credit_id: str
    status: str = Field(description="awaiting_approval | reminded | escalated | unreadable")
    case_id: str
    customer_id: str | None
    amount: Money | None
    amount_minor: int | None = Field(default=None, description="when only visibility answered")
    requested_by: str
    reason: str
    invoice_id: str | None
    why: list[str] = Field(description="why the policy asks finance")
    opened_at: datetime
    age_hours: float


class ApprovalBody(StrictBody):
    approve: bool
    reason: str = Field(min_length=1, max_length=2000)


async def check(
    body: CreditBody,
    requested_by: str,
    support: SupportDesk,
    billing: BillingSystem,
    ledger: Ledger,
    store: IntegrationStore,
    policy: CreditPolicy,
) -> tuple[CreditCheck, CreditRequest]:
    """The facts the credit policy needs, gathered once as the workflow gathers them, and what
    the policy decides on them now."""
    try:
        facts = await gather_credit_facts(
            CreditFactsInput(
                case_id=body.case_id, currency=body.amount.currency, as_of=datetime.now(UTC)
            ),
            support,
            billing,
            ledger,
            store,
        )
    except NotFoundError as err:
        if err.system != "support":
            raise counterpart_unavailable("billing or the ERP", err) from None
        raise HTTPException(404, f"no support ticket {body.case_id}") from None
    except ValidationError as err:
        if err.system != "support":
            raise counterpart_unavailable("billing or the ERP", err) from None
        raise HTTPException(422, f"ticket {body.case_id}: {err}") from None
    except AdapterError as err:
        system = "support" if err.system == "support" else "billing or the ERP"
        raise counterpart_unavailable(system, err) from None
    request = CreditRequest(
        case_id=body.case_id,
        request_id=body.request_id or "check",
        organization_id=facts.case.organization_id or "none",
        requested_by=requested_by,
        amount=body.amount,
        reason=body.reason,
        incident_reference=body.incident_reference,
        invoice_id=body.invoice_id,
    )
    return live_check(facts, request, policy), request


def live_check(facts: CreditFacts, request: CreditRequest, policy: CreditPolicy) -> CreditCheck:
    case, subscription = facts.case, facts.subscription
    customer_id = case.customer_id
    answer = CreditCheck(
        outcome="ineligible",
        reasons=[],
        warnings=[],
        case_id=case.case_id,
        organization_id=case.organization_id,
        customer_id=customer_id,
        subscription_id=subscription.subscription_id if subscription else None,
        monthly_recurring=None,
        credited_last_90_days=None,
        erp_party=facts.erp_party,
        erp_period_open=facts.erp_period_open,
    )
    if customer_id is None:
        answer.reasons.extend(eligibility_problems(request, None, None))
        return answer
    if facts.erp_unreadable is not None:
        answer.warnings.append(f"the ERP could not be read ({facts.erp_unreadable}): posting waits")
    elif facts.erp_party is None:
        answer.warnings.append(f"customer {customer_id} has no ERP party yet (account sync)")
    if facts.erp_period_open is False:
        answer.warnings.append("the ERP period is closed: posting would go to finance")
    if facts.entitlements_source == "billing":
        answer.warnings.append(
            "the support organization shows no entitlements yet (account sync): read billing"
        )
    problems = eligibility_problems(request, subscription, customer_id, facts.entitlements)
    if problems or subscription is None or facts.credited_last_90_days is None:
        answer.reasons.extend(problems)
        return answer
    assessment: CreditAssessment = assess(
        request, subscription, facts.credited_last_90_days, policy, facts.entitlements
    )
    answer.outcome = assessment.outcome
    answer.reasons.extend(assessment.reasons)
    answer.monthly_recurring = assessment.monthly_recurring
    answer.credited_last_90_days = assessment.credited_last_90_days
    return answer


router = APIRouter(prefix="/v1", tags=["credits"], responses=V1_ERRORS)


@router.post("/credits:validate", response_model=CreditCheck, responses=error_answers(404))
async def validate_credit(
    body: CreditBody,
    principal: Annotated[ApiPrincipal, Depends(credit_checkers)],
    support: SupportDep,
    billing: BillingDep,
    ledger: LedgerDep,
    store: StoreDep,
    policy: PolicyDep,
) -> CreditCheck:
    """What the policy would decide for this credit now; starts nothing."""
    facts, _request = await check(body, principal.name, support, billing, ledger, store, policy)
    return facts


@router.post(
    "/credits", response_model=CreditAccepted, status_code=202, responses=error_answers(404)
)
async def request_credit(
    body: CreditBody,
    principal: Annotated[ApiPrincipal, Depends(credit_requesters)],
    intake: IntakeDep,
    support: SupportDep,
    billing: BillingDep,
    ledger: LedgerDep,
    store: StoreDep,
    policy: PolicyDep,
    correlation_id: CorrelationIdDep,
    idempotency_key: Annotated[str | None, Header(pattern=SAFE_ID)] = None,
) -> CreditAccepted:
    """Request a credit on a ticket; the same request id twice starts one process."""
    request_id = body.request_id or idempotency_key
    if not request_id:
        raise HTTPException(
            422, "request_id (or an Idempotency-Key header) is required, so a retry "
            "cannot credit twice",
        )  # fmt: skip
    body = body.model_copy(update={"request_id": request_id})
    facts, credit = await check(body, principal.name, support, billing, ledger, store, policy)
    if facts.outcome in ("ineligible", "reject"):
        refusal = "; ".join(facts.reasons)
        await _note_refusal(support, credit, principal.name, refusal)
        raise HTTPException(422, f"credit refused: {refusal}")
    start = credit_start(credit, policy, correlation_id, facts.customer_id)
    started = await intake.hand_to_temporal(start)
    if started:
        await run_in_threadpool(
            store.append_audit,
            actor=principal.name,
            role=principal.role,
            action="credit.requested",
            subject=start.workflow_id,
            reason=credit.reason,
            amount=credit.amount.amount,
            currency=credit.amount.currency,
            correlation_id=correlation_id,
            details={"case_id": credit.case_id, "outcome": facts.outcome},
        )
    log.info("credit request", workflow_id=start.workflow_id, started=started)
    status: Literal["accepted", "duplicate"] = "accepted" if started else "duplicate"
    return CreditAccepted(status=status, workflow_id=start.workflow_id, check=facts)


@router.get("/approvals", response_model=list[ApprovalSummary], tags=["finance"])
async def list_pending_approvals(
    _principal: Annotated[ApiPrincipal, Depends(credit_readers)],
    temporal: TemporalDep,
    request: Request,
    response: Response,
    customer_id: Annotated[str | None, Query(pattern=STRIPE_CUSTOMER_ID)] = None,
    # At most 100 years: further back than datetime.min is an OverflowError, not a filter.
    min_age_hours: Annotated[float | None, Query(ge=0, le=876_000)] = None,
    min_amount_minor: Annotated[int | None, Query(ge=0)] = None,
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = PAGE_SIZE,
    page_token: Annotated[str | None, Query(max_length=2000, pattern=BASE64URL)] = None,
) -> list[ApprovalSummary]:
    """Credits waiting for finance, a page at a time (newest page first, oldest first within
    it); `X-Total-Count` counts all, `Link: rel="next"` continues."""
    page = await pending_approvals(
        temporal, customer_id, min_age_hours, min_amount_minor,
        page_size=page_size, page_token=page_token,
    )  # fmt: skip
    page_headers(request, response, page.total, page.next_token)
    return page.items


def approvals_query(
    customer_id: str | None = None,
    min_age_hours: float | None = None,
    min_amount_minor: int | None = None,
    min_amount: Decimal | None = None,
) -> str:
    """The visibility query of the credits waiting for finance; filters validated before."""
    statuses = ", ".join(f"'{s}'" for s in WAITING)
    query = (
        f"BusinessProcess = '{CREDIT_PROCESS}' AND ExecutionStatus = 'Running' "
        f"AND ProcessStatus IN ({statuses})"
    )
    return query + inbox_filters(customer_id, min_amount_minor, min_age_hours, min_amount)


async def pending_approvals(
    temporal: TemporalConnection,
    customer_id: str | None = None,
    min_age_hours: float | None = None,
    min_amount_minor: int | None = None,
    *,
    min_amount: Decimal | None = None,
    page_size: int = PAGE_SIZE,
    page_token: str | None = None,
) -> ItemsPage[ApprovalSummary]:
    """A page of the credits waiting for finance, oldest first within it, read from
    visibility alone; the filters are validated by the caller."""
    query = approvals_query(customer_id, min_age_hours, min_amount_minor, min_amount)
    return await read_page(
        temporal, query, approval_row, lambda a: a.opened_at, page_size, page_token
    )


async def count_approvals(
    temporal: TemporalConnection,
    customer_id: str | None = None,
    min_age_hours: float | None = None,
    min_amount: Decimal | None = None,
) -> int:
    """How many credits wait for finance under these filters (one visibility count)."""
    query = approvals_query(customer_id, min_age_hours, None, min_amount)
    return await count_runs(await temporal.client(), query)


@router.get("/credits/{credit_id:path}", response_model=CreditState, responses=error_answers(404))
async def show_credit(
    credit_id: str,
    _principal: Annotated[ApiPrincipal, Depends(credit_readers)],
    temporal: TemporalDep,
) -> CreditState:
    """A credit's state, decision, amounts and ids in billing, the ERP and finance."""
    return await credit_state(temporal, credit_id)


async def credit_state(temporal: TemporalConnection, credit_id: str) -> CreditState:
    client = await temporal.client()
    handle = client.get_workflow_handle(_credit_id(credit_id))
    try:
        return await handle.query(CaseToCreditWorkflow.state)
    except RPCError as err:
        raise not_found_or_unavailable(err, f"no credit {credit_id}") from err


@router.post(
    "/credits/{credit_id:path}:decide",
    response_model=CreditApproval,
    tags=["finance"],
    responses=error_answers(404, 409),
)
async def decide_credit(
    credit_id: str,
    body: ApprovalBody,
    principal: Annotated[ApiPrincipal, Depends(finance_deciders)],
    temporal: TemporalDep,
) -> CreditApproval:
    """Approve or reject a credit waiting for finance; the workflow validates and audits."""
    return await decide_approval(temporal, credit_id, body, principal)


async def decide_approval(
    temporal: TemporalConnection, credit_id: str, body: ApprovalBody, principal: ApiPrincipal
) -> CreditApproval:
    """Hands the approval of `principal` (whose role the caller has admitted) to the credit's
    validated Update: 409 when refused (over the approver's limit, own request, decided)."""
    client = await temporal.client()
    handle = client.get_workflow_handle(_credit_id(credit_id))
    approval = CreditApproval(
        approve=body.approve, reason=body.reason, approver=principal.name, role=principal.role
    )
    return await decide_through_update(
        handle,
        approval,
        CreditApproval,
        missing=f"no credit {credit_id}",
        closed=f"{credit_id} is no longer waiting",
        rpc_timeout=timedelta(seconds=10),
    )


async def _note_refusal(
    support: SupportDesk, credit: CreditRequest, requester: str, refusal: str
) -> None:
    """The ticket keeps the answer too; a failure to write it does not hide the 4xx."""
    try:
        await support.add_internal_note(
            credit.case_id,
            f"Credit of {credit.amount} requested by {requester} refused: {refusal}",
            f"credit-refused/{credit.case_id}/{credit.request_id}",
        )
    except AdapterError as err:
        log.warning("refusal not noted on the ticket", case_id=credit.case_id, error=str(err))


def _credit_id(credit_id: str) -> str:
    if not credit_id.startswith("credit/") or not re.fullmatch(
        r"[A-Za-z0-9_\-.:/]{1,200}", credit_id
    ):
        raise HTTPException(404, f"no credit {credit_id[:80]}")
    return credit_id


def approval_row(execution: WorkflowExecution) -> ApprovalSummary:
    """A credit waiting for finance as its search attributes tell it; who asked and why in
    their words stay on its page (`GET /v1/credits/{id}`): visibility is not encrypted."""
    attributes = execution.typed_search_attributes
    summary = visibility.read_inbox_summary(attributes.get(visibility.INBOX_SUMMARY))
    return ApprovalSummary(
        credit_id=execution.id,
        status=attributes.get(visibility.PROCESS_STATUS) or "awaiting_approval",
        case_id=attributes.get(visibility.CASE_ID) or "?",
        customer_id=attributes.get(visibility.CUSTOMER_ID),
        amount=visibility.amount_of(attributes),
        amount_minor=attributes.get(visibility.AMOUNT_MINOR),
        requested_by="-",
        reason="-",
        invoice_id=attributes.get(visibility.INVOICE_ID),
        why=list(summary.get("why") or []),
        **opened_and_age(execution.start_time),
    )


__all__ = [
    "ApprovalBody",
    "ApprovalSummary",
    "approval_row",
    "approvals_query",
    "check",
    "count_approvals",
    "credit_state",
    "decide_approval",
    "live_check",
    "pending_approvals",
    "router",
]
