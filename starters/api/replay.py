"""Billing events fed through the webhook path again (backfill, missed webhooks)."""

# No `from __future__ import annotations`: FastAPI must see the Annotated dependencies.
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from adapters import metrics
from adapters.billing.events import StripeEventPayload, UnreadableVersion, to_business_event
from adapters.errors import AdapterError, NotFoundError
from starters.api.auth import ApiPrincipal
from starters.api.dependencies import (
    BillingDep,
    CorrelationIdDep,
    IntakeDep,
    SettingsDep,
    StoreDep,
    operators,
)
from starters.api.errors import V1_ERRORS, counterpart_unavailable
from starters.api.shapes import STRIPE_EVENT_ID, StrictBody
from starters.routing import route_billing_event

router = APIRouter(prefix="/v1/billing", tags=["billing"], responses=V1_ERRORS)


class ReplayRequest(StrictBody):
    # Billing's own event ids only: each one becomes a path of billing's API.
    event_ids: list[Annotated[str, Field(pattern=STRIPE_EVENT_ID)]] = Field(
        min_length=1, max_length=200
    )


class ReplayOutcome(BaseModel):
    event_id: str
    status: str  # accepted | duplicate | ignored | unknown | refused
    workflow_id: str | None = None
    detail: str | None = None


@router.post("/events:replay", response_model=list[ReplayOutcome])
async def replay_billing_events(
    body: ReplayRequest,
    principal: Annotated[ApiPrincipal, Depends(operators)],
    billing: BillingDep,
    intake: IntakeDep,
    settings: SettingsDep,
    store: StoreDep,
    correlation_id: CorrelationIdDep,
) -> list[ReplayOutcome]:
    """Feed billing events through the webhook path again (backfill, missed webhooks).

    Only ids are taken: each event is read from billing itself, so nothing can be forged
    here; events already accepted are recognised as duplicates and start nothing.
    """
    outcomes = []
    for event_id in body.event_ids:
        try:
            raw = await billing.get_event(event_id)
        except NotFoundError:
            outcome = ReplayOutcome(
                event_id=event_id, status="unknown", detail="billing has no such event"
            )
            outcomes.append(outcome)
            continue
        except AdapterError as err:
            raise counterpart_unavailable("billing", err) from None
        payload = StripeEventPayload.model_validate(raw)
        try:
            event = to_business_event(payload, correlation_id)
        except UnreadableVersion as err:
            outcomes.append(ReplayOutcome(event_id=event_id, status="refused", detail=str(err)))
            continue
        starts = route_billing_event(event, settings.ledger_currencies)
        if not starts:
            outcome = ReplayOutcome(
                event_id=event_id, status="ignored", detail=f"no process handles {event.type}"
            )
            outcomes.append(outcome)
            continue
        accepted = await intake.start_processes(starts, "billing", event.event_id, event.type)
        outcomes.append(
            ReplayOutcome(
                event_id=event_id, status=accepted.status, workflow_id=accepted.workflow_id
            )
        )
    for outcome in outcomes:
        metrics.replayed("api", outcome.status)
    await run_in_threadpool(
        store.append_audit,
        actor=principal.name,
        role=principal.role,
        action="billing.events_replayed",
        subject="billing/events",
        correlation_id=correlation_id,
        details={
            "events": len(outcomes),
            "accepted": sum(o.status == "accepted" for o in outcomes),
        },
    )
    return outcomes


__all__ = ["router"]
