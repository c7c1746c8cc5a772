"""Signed webhooks in: billing events and support's credit requests.

A webhook is answered 2xx only after Temporal has durably accepted the work; when Temporal
cannot be reached the answer is 503, so the sender retries and nothing is lost.
"""

# No `from __future__ import annotations`: FastAPI must see the Annotated dependencies.
import json
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import ValidationError

from adapters.billing.events import StripeEventPayload, UnreadableVersion, to_business_event
from adapters.billing.webhook_signature import SignatureError, verify_stripe
from adapters.errors import AdapterError, NotFoundError
from adapters.errors import ValidationError as InvalidInSystem
from adapters.logs import get_logger
from adapters.ports import SupportDesk
from adapters.settings import Settings
from adapters.support.webhook_signature import verify_zendesk
from canonical.credit import CreditRequest
from starters.api.dependencies import (
    CorrelationIdDep,
    IntakeDep,
    PolicyDep,
    ReceiptsDep,
    SettingsDep,
    SupportDep,
)
from starters.api.errors import error_answers, first_line
from starters.api.intake import Accepted
from starters.api.metrics import MeteredWebhookRoute
from starters.api.shapes import is_ticket_id
from starters.routing import credit_start, route_billing_event

log = get_logger("ledgerbridge.api")
CREDIT_FIELD_CHANGED = "zen:event-type:ticket.custom_field_changed"
CREDIT_AMOUNT_FIELD = "Credit amount"
MAX_EVENT_ID = 128
MAX_CASE_ID = 64

router = APIRouter(
    prefix="/webhooks",
    tags=["webhooks"],
    responses=error_answers(400, 413, 503),
    route_class=MeteredWebhookRoute,  # each delivery counted by outcome and timed
)


async def read_body(request: Request, settings: SettingsDep) -> bytes:
    """The raw body, for its signature; refused 413 past LEDGERBRIDGE_WEBHOOK_MAX_BYTES."""
    limit = settings.webhook_max_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"body larger than {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise HTTPException(413, f"body larger than {limit} bytes")
    return bytes(body)


BodyDep = Annotated[bytes, Depends(read_body)]


def signed_json(signature_headers: tuple[str, ...]) -> dict[str, Any]:
    """The OpenAPI of a webhook whose raw body the handler reads and verifies itself."""
    return {
        "parameters": [
            {"name": name, "in": "header", "required": True, "schema": {"type": "string"}}
            for name in signature_headers
        ],
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        },
    }


@router.post("/stripe", response_model=Accepted, openapi_extra=signed_json(("Stripe-Signature",)))
async def stripe_webhook(
    request: Request,
    body: BodyDep,
    settings: SettingsDep,
    intake: IntakeDep,
    correlation_id: CorrelationIdDep,
) -> Accepted:
    try:
        verify_stripe(
            body,
            request.headers.get("stripe-signature"),
            [s.get_secret_value() for s in settings.billing_webhook_secrets],
            settings.webhook_tolerance_seconds,
            int(time.time()),
        )
    except SignatureError as err:
        log.warning("stripe webhook refused", reason=str(err))
        raise HTTPException(400, f"signature refused: {err}") from None
    try:
        payload = StripeEventPayload.model_validate(json.loads(body))
        event = to_business_event(payload, correlation_id)
    except UnreadableVersion as err:
        # Refused loudly (Stripe retries and shows it): read at the wrong version it would misroute.
        log.error("stripe webhook of another API version refused", reason=str(err))
        raise HTTPException(400, f"event refused: {err}") from None
    # Also malformed: JSON nested past the parser's depth, `created` past any date.
    except (ValueError, ValidationError, RecursionError, OverflowError) as err:
        raise HTTPException(400, f"malformed event: {first_line(err)}") from None
    starts = route_billing_event(event, settings.ledger_currencies)
    if not starts:
        return Accepted(status="ignored", detail=f"no process handles {event.type}")
    return await intake.start_processes(starts, "billing", event.event_id, event.type)


@router.post(
    "/zendesk",
    response_model=Accepted,
    openapi_extra=signed_json(
        ("X-Zendesk-Webhook-Signature", "X-Zendesk-Webhook-Signature-Timestamp")
    ),
)
async def zendesk_webhook(
    request: Request,
    body: BodyDep,
    settings: SettingsDep,
    intake: IntakeDep,
    receipts: ReceiptsDep,
    support: SupportDep,
    policy: PolicyDep,
    correlation_id: CorrelationIdDep,
) -> Accepted:
    try:
        verify_zendesk(
            body,
            request.headers.get("x-zendesk-webhook-signature"),
            request.headers.get("x-zendesk-webhook-signature-timestamp"),
            [s.get_secret_value() for s in settings.support_webhook_secrets],
            settings.webhook_tolerance_seconds,
            datetime.now(UTC),
        )
    except SignatureError as err:
        log.warning("zendesk webhook refused", reason=str(err))
        raise HTTPException(400, f"signature refused: {err}") from None
    try:
        payload = json.loads(body)
        if not isinstance(payload, dict):
            raise ValueError("body must be a JSON object")
    except (ValueError, RecursionError) as err:  # JSON nested past the parser's depth
        raise HTTPException(400, f"malformed event: {first_line(err)}") from None
    kind = str(payload.get("type", "unknown"))
    event_id = payload.get("id")
    if not is_credit_request(payload) or not isinstance(event_id, str):
        return Accepted(status="ignored", detail=f"no process handles {kind[:120]}")
    case_id = ticket_of(payload, event_id)
    # Looked up before the ticket is read, so a redelivery costs no call to support.
    if await receipts.seen("support", event_id):
        return Accepted(status="duplicate", workflow_id=f"credit/{case_id}/{event_id}")
    credit = await credit_from_ticket(support, settings, case_id, event_id)
    if isinstance(credit, str):
        return Accepted(status="ignored", detail=credit)
    start = credit_start(credit, policy, correlation_id)
    return await intake.start_process(start, "support", event_id, "credit.requested", checked=True)


def ticket_of(payload: dict[str, Any], event_id: str) -> str:
    """The ticket a credit event is about; 400 when it or the event id is out of shape."""
    detail = payload.get("detail")
    case_id = str(detail.get("id", "")) if isinstance(detail, dict) else ""
    if not case_id:
        raise HTTPException(400, "malformed event: detail.id (the ticket) is missing")
    # As the receipts (and Zendesk's own ids) hold them; credit/{case}/{id} fits 255.
    if not 0 < len(event_id) <= MAX_EVENT_ID or len(case_id) > MAX_CASE_ID:
        raise HTTPException(
            400,
            f"malformed event: id must be 1-{MAX_EVENT_ID} characters and detail.id at "
            f"most {MAX_CASE_ID}",
        )
    if not is_ticket_id(case_id):  # it becomes a path of support's API
        raise HTTPException(400, "malformed event: detail.id must be a ticket number")
    return case_id


def agent_identity(settings: Settings, agent_id: str | None) -> str:
    """The person behind a support agent (LEDGERBRIDGE_SUPPORT_AGENT_IDENTITIES), as their
    API key is named, so they cannot approve what they asked for."""
    known = settings.support_agent_identities.get(str(agent_id)) if agent_id else None
    return known or f"zendesk-agent:{agent_id or 'unknown'}"


async def credit_from_ticket(
    support: SupportDesk, settings: Settings, case_id: str, event_id: str
) -> CreditRequest | str:
    """The credit asked on the ticket, read from the ticket itself (its fields may arrive
    as separate events, in any order); a string says why there is none."""
    try:
        case = await support.get_case(case_id)
    except NotFoundError:
        return f"ticket {case_id} no longer exists"
    except InvalidInSystem as err:
        await _note_on_ticket(support, case_id, f"Credit request not accepted: {err}",
                              f"credit-invalid/{event_id}")  # fmt: skip
        return f"credit fields on ticket {case_id} are invalid: {err}"
    except AdapterError as err:
        log.warning("support unreadable; asking the sender to retry", error=str(err))
        raise HTTPException(503, "support could not be read, retry later",
                            headers={"Retry-After": "5"}) from None  # fmt: skip
    if case.credit is None:
        return f"ticket {case_id} asks for no credit"
    return CreditRequest(
        case_id=case_id,
        request_id=event_id,
        organization_id=case.organization_id or "none",
        requested_by=agent_identity(settings, case.assignee_id),
        amount=case.credit.amount,
        reason=case.credit.reason,
        incident_reference=case.credit.incident_reference,
    )


def is_credit_request(payload: dict[str, Any]) -> bool:
    """A credit amount set on a ticket (Zendesk has no "credit requested" event)."""
    event = payload.get("event")
    if payload.get("type") != CREDIT_FIELD_CHANGED or not isinstance(event, dict):
        return False
    field = event.get("field")
    title = field.get("title") if isinstance(field, dict) else None
    return title == CREDIT_AMOUNT_FIELD and bool(str(event.get("current") or "").strip())


async def _note_on_ticket(support: SupportDesk, case_id: str, note: str, key: str) -> None:
    try:
        await support.add_internal_note(case_id, note, key)
    except AdapterError as err:
        log.warning("could not note on the ticket", case_id=case_id, error=str(err))


__all__ = ["router"]
