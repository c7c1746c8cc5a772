"""One ASGI app: signed webhooks in, the /v1 business API, health.

A webhook is answered 2xx only after Temporal has durably accepted the work; when Temporal
cannot be reached the answer is 503, so the sender retries and nothing is lost.
"""

# No `from __future__ import annotations`: FastAPI must see the closures in Depends().
import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.service import RPCError

from adapters.billing.events import StripeEventPayload, to_business_event
from adapters.billing.webhook_signature import SignatureError, verify_stripe
from adapters.bootstrap import build_billing, build_ledger, build_store, build_support
from adapters.errors import AdapterError, NotFoundError
from adapters.errors import ValidationError as InvalidInSystem
from adapters.logs import get_logger
from adapters.settings import Settings
from adapters.store import IntegrationStore
from adapters.support.webhook_signature import verify_zendesk
from canonical import AccountRecord
from canonical.credit import CreditRequest
from starters.api.auth import ApiKeyring, ApiPrincipal, role_dependency
from starters.api.codec import codec_router
from starters.api.correlation import CorrelationMiddleware
from starters.api.credits import credits_router
from starters.api.finance import finance_router
from starters.api.receipts import WebhookReceipts
from starters.api.reconciliation import reconciliation_router
from starters.api.temporal import TemporalConnection, TemporalUnavailable
from starters.routing import (
    ProcessStart,
    account_sync_start,
    credit_start,
    route_billing_event,
    signal_with_start,
    start_once,
)

log = get_logger("ledgerbridge.api")
CREDIT_FIELD_CHANGED = "zen:event-type:ticket.custom_field_changed"
CREDIT_AMOUNT_FIELD = "Credit amount"
MAX_EVENT_ID = 128
MAX_CASE_ID = 64


class Accepted(BaseModel):
    status: str  # accepted | duplicate | ignored
    workflow_id: str | None = None
    detail: str | None = None


class ReplayRequest(BaseModel):
    # Each id as StripeEventPayload bounds it; an empty one is no path segment to ask billing.
    event_ids: list[Annotated[str, Field(min_length=1, max_length=255)]] = Field(
        min_length=1, max_length=200
    )


class ReplayOutcome(BaseModel):
    event_id: str
    status: str  # accepted | duplicate | ignored | unknown
    workflow_id: str | None = None
    detail: str | None = None


class AccountView(BaseModel):
    customer_id: str
    records: list[AccountRecord]


def create_app(settings: Settings | None = None, store: IntegrationStore | None = None) -> FastAPI:
    settings = settings or Settings()
    store = store or build_store(settings)
    keyring = ApiKeyring.from_settings(settings)
    temporal = TemporalConnection(settings)
    billing = build_billing(settings)
    support = build_support(settings)
    ledger = build_ledger(settings)
    policy = settings.credit_policy
    receipts = WebhookReceipts(store)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(store.migrate)
        # Connect now, so the first webhook does not pay for it; a failure here is retried
        # by the first request that needs Temporal (and answered 503 if it still fails).
        warm = asyncio.create_task(temporal.client())
        warm.add_done_callback(lambda task: task.cancelled() or task.exception())
        log.info("api ready", host=settings.api_host, port=settings.api_port)
        yield
        warm.cancel()
        await receipts.close()
        for system in (billing, support, ledger):
            await system.aclose()

    app = FastAPI(
        title="ledgerbridge",
        version="1",
        summary="Billing, support and ERP kept in agreement by durable workflows",
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.temporal = temporal
    app.state.receipts = receipts

    app.add_middleware(CorrelationMiddleware)

    @app.exception_handler(StarletteHTTPException)  # also the router's own 404 and 405
    async def one_line_errors(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def one_line_validation_errors(
        _request: Request, exc: RequestValidationError
    ) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid')}"}, status_code=422)

    @app.exception_handler(TemporalUnavailable)
    async def temporal_down(_request: Request, exc: TemporalUnavailable) -> JSONResponse:
        log.warning("temporal unreachable; asking the sender to retry")
        return JSONResponse(
            {"error": "workflow engine unavailable, retry later"},
            status_code=503,
            headers={"Retry-After": "5"},
        )

    async def read_body(request: Request) -> bytes:
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

    async def hand_to_temporal(start: ProcessStart) -> bool:
        """Returns once the server has durably accepted the work (503 otherwise): False when
        a process started once per id already had been (a concurrent duplicate delivery)."""
        client = await temporal.client()
        try:
            if start.signal is None:
                return await start_once(client, start, settings.task_queue_prefix)
            await signal_with_start(client, start, settings.task_queue_prefix)
        except RPCError as err:
            raise TemporalUnavailable(str(err)) from err
        return True

    async def start_process(
        start: ProcessStart, source: str, event_id: str, kind: str, *, checked: bool = False
    ) -> Accepted:
        """Hand a delivery to Temporal unless it was accepted before (`checked`: the caller
        has just looked)."""
        if not checked and await receipts.seen(source, event_id):
            log.info("duplicate delivery", event_id=event_id, workflow_id=start.workflow_id)
            return Accepted(status="duplicate", workflow_id=start.workflow_id)
        new = await hand_to_temporal(start)
        await receipts.record(source, event_id, kind, start.workflow_id)
        if not new:
            log.info("duplicate delivery", event_id=event_id, workflow_id=start.workflow_id)
            return Accepted(status="duplicate", workflow_id=start.workflow_id)
        log.info("accepted", event_id=event_id, event_type=kind, workflow_id=start.workflow_id)
        return Accepted(status="accepted", workflow_id=start.workflow_id)

    def authorised(*roles: str) -> Callable[..., ApiPrincipal]:
        return role_dependency(keyring, *roles)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/webhooks/stripe", tags=["webhooks"], response_model=Accepted)
    async def stripe_webhook(request: Request) -> Accepted:
        body = await read_body(request)
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
            event = to_business_event(payload, request.state.correlation_id)
        # Also malformed: JSON nested past the parser's depth, `created` past any date.
        except (ValueError, ValidationError, RecursionError, OverflowError) as err:
            raise HTTPException(400, f"malformed event: {_first_line(err)}") from None
        start = route_billing_event(event, settings.ledger_currencies)
        if start is None:
            return Accepted(status="ignored", detail=f"no process handles {event.type}")
        return await start_process(start, "billing", event.event_id, event.type)

    @app.post("/webhooks/zendesk", tags=["webhooks"], response_model=Accepted)
    async def zendesk_webhook(request: Request) -> Accepted:
        body = await read_body(request)
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
            raise HTTPException(400, f"malformed event: {_first_line(err)}") from None
        kind = str(payload.get("type", "unknown"))
        event_id = payload.get("id")
        if not _is_credit_request(payload) or not isinstance(event_id, str):
            return Accepted(status="ignored", detail=f"no process handles {kind[:120]}")
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
        # Looked up before the ticket is read, so a redelivery costs no call to support.
        if await receipts.seen("support", event_id):
            return Accepted(status="duplicate", workflow_id=f"credit/{case_id}/{event_id}")
        credit = await credit_from_ticket(case_id, event_id)
        if isinstance(credit, str):
            return Accepted(status="ignored", detail=credit)
        start = credit_start(credit, policy, request.state.correlation_id)
        return await start_process(start, "support", event_id, "credit.requested", checked=True)

    def agent_identity(agent_id: str | None) -> str:
        """The person behind a support agent (LEDGERBRIDGE_SUPPORT_AGENT_IDENTITIES), as their
        API key is named, so they cannot approve what they asked for."""
        known = settings.support_agent_identities.get(str(agent_id)) if agent_id else None
        return known or f"zendesk-agent:{agent_id or 'unknown'}"

    async def credit_from_ticket(case_id: str, event_id: str) -> CreditRequest | str:
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
            requested_by=agent_identity(case.assignee_id),
            amount=case.credit.amount,
            reason=case.credit.reason,
            incident_reference=case.credit.incident_reference,
        )

    @app.post("/v1/billing/events:replay", tags=["billing"], response_model=list[ReplayOutcome])
    async def replay_billing_events(
        body: ReplayRequest,
        request: Request,
        principal: Annotated[ApiPrincipal, Depends(authorised("ops", "finance_admin"))],
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
                raise HTTPException(502, f"billing could not be read: {err}") from None
            payload = StripeEventPayload.model_validate(raw)
            event = to_business_event(payload, request.state.correlation_id)
            start = route_billing_event(event, settings.ledger_currencies)
            if start is None:
                outcome = ReplayOutcome(
                    event_id=event_id, status="ignored", detail=f"no process handles {event.type}"
                )
                outcomes.append(outcome)
                continue
            accepted = await start_process(start, "billing", event.event_id, event.type)
            outcomes.append(
                ReplayOutcome(
                    event_id=event_id, status=accepted.status, workflow_id=accepted.workflow_id
                )
            )
        await run_in_threadpool(
            store.append_audit,
            actor=principal.name,
            role=principal.role,
            action="billing.events_replayed",
            subject="billing/events",
            correlation_id=request.state.correlation_id,
            details={
                "events": len(outcomes),
                "accepted": sum(o.status == "accepted" for o in outcomes),
            },
        )
        return outcomes

    @app.post(
        "/v1/accounts/{customer_id}:sync",
        tags=["accounts"],
        response_model=Accepted,
        status_code=202,
    )
    async def sync_account(
        customer_id: str,
        request: Request,
        principal: Annotated[ApiPrincipal, Depends(authorised("ops", "finance_admin"))],
    ) -> Accepted:
        request_id = request.headers.get("Idempotency-Key") or str(uuid.uuid4())
        start = account_sync_start(
            customer_id, f"api:{request_id}", "api", request.state.correlation_id
        )
        await hand_to_temporal(start)
        await run_in_threadpool(
            store.append_audit,
            actor=principal.name,
            role=principal.role,
            action="account.sync_requested",
            subject=start.workflow_id,
            correlation_id=request.state.correlation_id,
            details={"request_id": request_id},
        )
        return Accepted(status="accepted", workflow_id=start.workflow_id)

    @app.get("/v1/accounts/{customer_id}", tags=["accounts"], response_model=AccountView)
    async def show_account(
        customer_id: str, _principal: Annotated[ApiPrincipal, Depends(authorised())]
    ) -> AccountView:
        records = await run_in_threadpool(store.account_links, customer_id)
        if not records:
            raise HTTPException(404, f"customer {customer_id} has not been synced")
        return AccountView(customer_id=customer_id, records=records)

    @app.get("/v1/status", tags=["ops"])
    async def status(_principal: Annotated[ApiPrincipal, Depends(authorised())]) -> dict[str, Any]:
        try:
            client = await temporal.client()
            await client.service_client.check_health()
            temporal_state = "ok"
        except (TemporalUnavailable, RPCError) as err:
            temporal_state = f"unreachable: {_first_line(err)}"
        return {"temporal": temporal_state, "store": store.engine.dialect.name}

    app.include_router(finance_router(settings, temporal, keyring))
    app.include_router(
        credits_router(settings, temporal, keyring, (support, billing, ledger), store, policy)
    )
    app.include_router(reconciliation_router(settings, temporal, keyring, store))
    if settings.payload_keys:  # the Web UI shows decrypted payloads through /codec
        app.include_router(codec_router(settings, keyring, store))
    return app


def _is_credit_request(payload: dict[str, Any]) -> bool:
    """A credit amount set on a ticket (Zendesk has no "credit requested" event)."""
    event = payload.get("event")
    if payload.get("type") != CREDIT_FIELD_CHANGED or not isinstance(event, dict):
        return False
    field = event.get("field")
    title = field.get("title") if isinstance(field, dict) else None
    return title == CREDIT_AMOUNT_FIELD and bool(str(event.get("current") or "").strip())


async def _note_on_ticket(support: Any, case_id: str, note: str, key: str) -> None:
    try:
        await support.add_internal_note(case_id, note, key)
    except AdapterError as err:
        log.warning("could not note on the ticket", case_id=case_id, error=str(err))


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
