"""Accounts over HTTP: ask for a customer's account to be synced, and see where it landed."""

# No `from __future__ import annotations`: FastAPI must see the Annotated dependencies.
import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, HTTPException, Path
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from canonical import AccountRecord
from starters.api.auth import ApiPrincipal
from starters.api.dependencies import (
    CorrelationIdDep,
    IntakeDep,
    StoreDep,
    any_role,
    operators,
)
from starters.api.errors import V1_ERRORS, error_answers
from starters.api.intake import Accepted
from starters.api.shapes import STRIPE_CUSTOMER_ID
from starters.routing import account_sync_start

router = APIRouter(prefix="/v1/accounts", tags=["accounts"], responses=V1_ERRORS)
CustomerId = Annotated[
    str, Path(pattern=STRIPE_CUSTOMER_ID, description="billing's customer id (cus_...)")
]


class AccountView(BaseModel):
    customer_id: str
    records: list[AccountRecord]


@router.post("/{customer_id}:sync", response_model=Accepted, status_code=202)
async def sync_account(
    customer_id: CustomerId,
    principal: Annotated[ApiPrincipal, Depends(operators)],
    intake: IntakeDep,
    store: StoreDep,
    correlation_id: CorrelationIdDep,
    idempotency_key: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Accepted:
    request_id = idempotency_key or str(uuid.uuid4())
    start = account_sync_start(customer_id, f"api:{request_id}", "api", correlation_id)
    await intake.hand_to_temporal(start)
    await run_in_threadpool(
        store.append_audit,
        actor=principal.name,
        role=principal.role,
        action="account.sync_requested",
        subject=start.workflow_id,
        correlation_id=correlation_id,
        details={"request_id": request_id},
    )
    return Accepted(status="accepted", workflow_id=start.workflow_id)


@router.get("/{customer_id}", response_model=AccountView, responses=error_answers(404))
async def show_account(
    customer_id: CustomerId,
    _principal: Annotated[ApiPrincipal, Depends(any_role)],
    store: StoreDep,
) -> AccountView:
    records = await run_in_threadpool(store.account_links, customer_id)
    if not records:
        raise HTTPException(404, f"customer {customer_id} has not been synced")
    return AccountView(customer_id=customer_id, records=records)


__all__ = ["router"]
