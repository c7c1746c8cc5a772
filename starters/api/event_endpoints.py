"""Event endpoints over HTTP: who receives the events out as signed webhooks (ops only).

A secret is shown twice in its life: in the answer that created it (at registration, or at a
rotation), never in a listing. Every write is audited, naming the endpoint's host but not its
URL (a subscriber's URL may hold a token of its own).
"""

# No `from __future__ import annotations`: FastAPI must see the Annotated dependencies.
import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema, model_validator
from pydantic.json_schema import SkipJsonSchema
from starlette.concurrency import run_in_threadpool

from adapters.events.subscriptions import (
    ENDPOINT_ID_PATTERN,
    MAX_EVENT_TYPES,
    MAX_URL_LENGTH,
    SUBSCRIBABLE,
    EndpointUrlRefused,
    EventEndpoint,
    EventTypeUnknown,
    checked_event_types,
    checked_url,
)
from adapters.settings import Settings
from adapters.store.event_endpoints import DeadLetter, EventEndpointStore, UnknownEndpointError
from starters.api.auth import ApiPrincipal
from starters.api.dependencies import CorrelationIdDep, SettingsDep, StoreDep, event_operators
from starters.api.errors import V1_ERRORS, error_answers
from starters.api.shapes import StrictBody

router = APIRouter(prefix="/v1/event-endpoints", tags=["events"], responses=V1_ERRORS)

Principal = Annotated[ApiPrincipal, Depends(event_operators)]
EndpointId = Annotated[str, Path(pattern=ENDPOINT_ID_PATTERN, description="ep_ and 32 hex digits")]

# What the schema says a URL is, so a client (and a fuzzer) built from the document sends
# what is accepted: http(s), a host name or IPv4 address, a port, a path without #fragment.
_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
URL_PATTERN = rf'^https?://[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:{_PORT})?(/[!-"$-~]*)?$'
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"  # one line, no control character (PostgreSQL refuses NUL)

Url = Annotated[str, Field(max_length=MAX_URL_LENGTH, pattern=URL_PATTERN)]
EventType = Annotated[str, WithJsonSchema({"type": "string", "enum": list(SUBSCRIBABLE)})]
EventTypes = Annotated[
    list[EventType],
    Field(
        max_length=MAX_EVENT_TYPES,
        description="CloudEvents types, or prefixes ending with .*; empty: every event",
    ),
]
Description = Annotated[str, Field(max_length=500, pattern=PRINTABLE)]
_LEAP_SECOND = re.compile(r"(T\d{2}:\d{2}):60")


def _utc_instant(value: Any) -> Any:
    """An RFC 3339 time as an aware UTC datetime; one beyond what UTC can hold (year 1 with a
    positive offset, year 9999 with a negative one) is held at that end of time."""
    if isinstance(value, str):
        text = _LEAP_SECOND.sub(r"\1:59", value.strip().upper())
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError("expected a time as YYYY-MM-DDTHH:MM:SS±HH:MM") from None
    if not isinstance(value, datetime):
        raise ValueError("expected a time as YYYY-MM-DDTHH:MM:SS±HH:MM")
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        end = datetime.min if value.year == 1 else datetime.max
        return end.replace(tzinfo=UTC)


Instant = Annotated[
    datetime,
    BeforeValidator(_utc_instant),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


# --- shapes ---------------------------------------------------------------------------------


class EndpointRequest(StrictBody):
    url: Url
    event_types: EventTypes = []
    description: Description | None = None


class EndpointChange(StrictBody):
    """What to change; a field left out is unchanged, an empty description clears it."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1})

    # Absent, never null (the schema has no null; _something refuses one).
    url: Url | SkipJsonSchema[None] = None
    event_types: EventTypes | SkipJsonSchema[None] = None
    description: Description | SkipJsonSchema[None] = None

    @model_validator(mode="after")
    def _something(self) -> "EndpointChange":
        if not self.model_fields_set:
            raise ValueError("name at least one of url, event_types, description")
        nulls = sorted(f for f in self.model_fields_set if getattr(self, f) is None)
        if nulls:
            raise ValueError(f"{', '.join(nulls)}: leave a field out to keep it, never null")
        return self


class RotateRequest(StrictBody):
    overlap_hours: int = Field(
        default=24, ge=0, le=168, description="how long the replaced secret still signs"
    )


class PauseRequest(StrictBody):
    reason: str = Field(default="paused by an operator", min_length=1, max_length=500,
                        pattern=PRINTABLE)  # fmt: skip


class ReplayRequest(StrictBody):
    since: Instant = Field(description="dead letters dead at or after this time")


class EndpointView(BaseModel):
    id: str
    url: str
    event_types: list[str]
    description: str | None
    status: Literal["active", "paused"]
    paused_reason: str | None
    failing_since: datetime | None = Field(description="failing every delivery since then")
    signing_secrets: int = Field(description="secrets signing each delivery now (2+: rotating)")
    rotation_ends_at: datetime | None = Field(description="when the replaced secrets stop")
    created_at: datetime
    updated_at: datetime
    created_by: str


class EndpointCreated(EndpointView):
    secret: str = Field(description="the signing secret, shown this once: keep it")


class SecretRotated(BaseModel):
    endpoint_id: str
    secret: str = Field(description="the new signing secret, shown this once: keep it")
    previous_valid_until: datetime | None = Field(
        description="until when the replaced secret still signs (null: it no longer does)"
    )


class DeadLetterView(BaseModel):
    id: int
    event_id: str
    event_type: str
    subject: str
    attempts: int
    last_status: int | None
    last_error: str | None
    first_attempt_at: datetime
    dead_at: datetime
    replay_requested_at: datetime | None
    replayed_at: datetime | None


class DeadLetterPage(BaseModel):
    endpoint_id: str
    items: list[DeadLetterView]
    next_after_id: int | None


class ReplayRequested(BaseModel):
    endpoint_id: str
    requested: int = Field(description="dead letters marked for redelivery")


# --- handlers -------------------------------------------------------------------------------

NOT_FOUND = error_answers(404)


@router.post("", response_model=EndpointCreated, status_code=201)
async def create_endpoint(
    body: EndpointRequest,
    principal: Principal,
    settings: SettingsDep,
    store: StoreDep,
    correlation_id: CorrelationIdDep,
) -> EndpointCreated:
    """Register a subscriber's endpoint; the answer holds its signing secret, this once."""
    url, event_types = _checked(body.url, body.event_types, settings)
    assert url is not None and event_types is not None
    endpoint = await run_in_threadpool(
        EventEndpointStore(store).create_endpoint,
        url=url, event_types=event_types, description=body.description or None,
        created_by=principal.name,
    )  # fmt: skip
    await _audit(store, principal, "event_endpoint.created", endpoint, correlation_id,
                 event_types=list(event_types))  # fmt: skip
    return EndpointCreated(**_view(endpoint).model_dump(), secret=endpoint.secrets[0].secret)


@router.get("", response_model=list[EndpointView])
async def list_endpoints(
    _principal: Principal,
    store: StoreDep,
    status: Literal["active", "paused"] | None = None,
) -> list[EndpointView]:
    """Every endpoint, oldest first (no secret)."""
    endpoints = await run_in_threadpool(EventEndpointStore(store).endpoints, status)
    return [_view(e) for e in endpoints]


@router.get("/{endpoint_id}", response_model=EndpointView, responses=NOT_FOUND)
async def get_endpoint(
    endpoint_id: EndpointId, _principal: Principal, store: StoreDep
) -> EndpointView:
    endpoint = await run_in_threadpool(EventEndpointStore(store).endpoint, endpoint_id)
    if endpoint is None:
        raise _no_endpoint(endpoint_id)
    return _view(endpoint)


@router.patch("/{endpoint_id}", response_model=EndpointView, responses=NOT_FOUND)
async def change_endpoint(
    endpoint_id: EndpointId,
    body: EndpointChange,
    principal: Principal,
    settings: SettingsDep,
    store: StoreDep,
    correlation_id: CorrelationIdDep,
) -> EndpointView:
    """Change the URL, the event types or the description; the secrets stay."""
    url, event_types = _checked(body.url, body.event_types, settings)
    endpoint = await _write(
        EventEndpointStore(store).update_endpoint, endpoint_id,
        url=url, event_types=event_types, description=body.description,
    )  # fmt: skip
    await _audit(store, principal, "event_endpoint.changed", endpoint, correlation_id,
                 fields=sorted(body.model_fields_set))  # fmt: skip
    return _view(endpoint)


@router.post("/{endpoint_id}:rotate-secret", response_model=SecretRotated, responses=NOT_FOUND)
async def rotate_secret(
    endpoint_id: EndpointId,
    principal: Principal,
    store: StoreDep,
    correlation_id: CorrelationIdDep,
    body: RotateRequest | None = None,
) -> SecretRotated:
    """A new signing secret, shown this once; the replaced one still signs for the overlap
    (24 h unless said), so the subscriber can switch without losing a delivery."""
    overlap = (body or RotateRequest()).overlap_hours
    endpoint = await _write(
        EventEndpointStore(store).rotate_secret, endpoint_id, timedelta(hours=overlap)
    )
    await _audit(store, principal, "event_endpoint.secret_rotated", endpoint, correlation_id,
                 overlap_hours=overlap)  # fmt: skip
    return SecretRotated(
        endpoint_id=endpoint.id,
        secret=endpoint.secrets[0].secret,
        previous_valid_until=_rotation_end(endpoint),
    )


@router.post("/{endpoint_id}:pause", response_model=EndpointView, responses=NOT_FOUND)
async def pause_endpoint(
    endpoint_id: EndpointId,
    principal: Principal,
    store: StoreDep,
    correlation_id: CorrelationIdDep,
    body: PauseRequest | None = None,
) -> EndpointView:
    """No delivery goes out until it is resumed; its events wait, none is lost."""
    reason = (body or PauseRequest()).reason
    endpoint = await _write(EventEndpointStore(store).pause_endpoint, endpoint_id, reason)
    await _audit(store, principal, "event_endpoint.paused", endpoint, correlation_id,
                 reason=reason)  # fmt: skip
    return _view(endpoint)


@router.post("/{endpoint_id}:resume", response_model=EndpointView, responses=NOT_FOUND)
async def resume_endpoint(
    endpoint_id: EndpointId, principal: Principal, store: StoreDep, correlation_id: CorrelationIdDep
) -> EndpointView:
    """Deliveries go out again, the waiting events first; the 24 h of failures restart."""
    endpoint = await _write(EventEndpointStore(store).resume_endpoint, endpoint_id)
    await _audit(store, principal, "event_endpoint.resumed", endpoint, correlation_id)
    return _view(endpoint)


@router.delete("/{endpoint_id}", status_code=204, responses=NOT_FOUND)
async def delete_endpoint(
    endpoint_id: EndpointId, principal: Principal, store: StoreDep, correlation_id: CorrelationIdDep
) -> Response:
    """Removed, with its dead letters: nothing more goes to it, and the worker drops its
    consumer on the stream (its position with it)."""
    endpoint = await _write(EventEndpointStore(store).delete_endpoint, endpoint_id)
    await _audit(store, principal, "event_endpoint.deleted", endpoint, correlation_id)
    return Response(status_code=204)


@router.get("/{endpoint_id}/dead-letters", response_model=DeadLetterPage, responses=NOT_FOUND)
async def dead_letters(
    endpoint_id: EndpointId,
    _principal: Principal,
    store: StoreDep,
    since: Annotated[Instant | None, Query(description="dead at or after this time")] = None,
    after_id: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeadLetterPage:
    """The events the endpoint did not take within 3 days of retries, oldest first."""
    endpoints = EventEndpointStore(store)
    if await run_in_threadpool(endpoints.endpoint, endpoint_id) is None:
        raise _no_endpoint(endpoint_id)
    letters = await run_in_threadpool(
        lambda: endpoints.dead_letters(endpoint_id, since=since, after_id=after_id, limit=limit)
    )
    return DeadLetterPage(
        endpoint_id=endpoint_id,
        items=[_dead_letter_view(d) for d in letters],
        next_after_id=letters[-1].id if len(letters) == limit else None,
    )


@router.post(
    "/{endpoint_id}/dead-letters:replay", response_model=ReplayRequested, responses=NOT_FOUND
)
async def replay_dead_letters(
    endpoint_id: EndpointId,
    body: ReplayRequest,
    principal: Principal,
    store: StoreDep,
    correlation_id: CorrelationIdDep,
) -> ReplayRequested:
    """Mark the endpoint's dead letters since a time for redelivery (each once, until it is
    redelivered); the endpoint's delivery picks them up."""
    endpoints = EventEndpointStore(store)
    endpoint = await run_in_threadpool(endpoints.endpoint, endpoint_id)
    if endpoint is None:
        raise _no_endpoint(endpoint_id)
    requested = await run_in_threadpool(endpoints.request_replay, endpoint_id, body.since)
    await _audit(store, principal, "event_endpoint.replay_requested", endpoint, correlation_id,
                 since=body.since.isoformat(), requested=requested)  # fmt: skip
    return ReplayRequested(endpoint_id=endpoint_id, requested=requested)


# --- helpers --------------------------------------------------------------------------------


def _checked(
    url: str | None, event_types: list[str] | None, settings: Settings
) -> tuple[str | None, tuple[str, ...] | None]:
    """The URL and event types, checked; a refusal is a 422 that says why."""
    try:
        if url is not None:
            url = checked_url(url, settings.api_host, settings.api_port)
        types = checked_event_types(event_types) if event_types is not None else None
    except (EndpointUrlRefused, EventTypeUnknown) as err:
        field = "url" if isinstance(err, EndpointUrlRefused) else "event_types"
        raise HTTPException(422, f"body.{field}: {err}") from None
    return url, types


async def _write(change: Any, endpoint_id: str, *args: Any, **kwargs: Any) -> EventEndpoint:
    try:
        endpoint: EventEndpoint = await run_in_threadpool(change, endpoint_id, *args, **kwargs)
    except UnknownEndpointError:
        raise _no_endpoint(endpoint_id) from None
    return endpoint


def _no_endpoint(endpoint_id: str) -> HTTPException:
    return HTTPException(404, f"no event endpoint {endpoint_id}")


async def _audit(
    store: Any,
    principal: ApiPrincipal,
    action: str,
    endpoint: EventEndpoint,
    correlation_id: str,
    **details: Any,
) -> None:
    await run_in_threadpool(
        store.append_audit,
        actor=principal.name,
        role=principal.role,
        action=action,
        subject=endpoint.id,
        correlation_id=correlation_id,
        details={"host": urlsplit(endpoint.url).hostname, "status": endpoint.status, **details},
    )


def _rotation_end(endpoint: EventEndpoint) -> datetime | None:
    now = datetime.now(UTC)
    ends = [s.expires_at for s in endpoint.secrets[1:] if s.expires_at and s.valid_at(now)]
    return max(ends) if ends else None


def _view(endpoint: EventEndpoint) -> EndpointView:
    return EndpointView(
        id=endpoint.id,
        url=endpoint.url,
        event_types=list(endpoint.event_types),
        description=endpoint.description,
        status=endpoint.status,
        paused_reason=endpoint.paused_reason,
        failing_since=endpoint.failing_since,
        signing_secrets=len(endpoint.signing_secrets(datetime.now(UTC))),
        rotation_ends_at=_rotation_end(endpoint),
        created_at=endpoint.created_at,
        updated_at=endpoint.updated_at,
        created_by=endpoint.created_by,
    )


def _dead_letter_view(letter: DeadLetter) -> DeadLetterView:
    return DeadLetterView(
        id=letter.id, event_id=letter.event_id, event_type=letter.event_type,
        subject=letter.subject, attempts=letter.attempts, last_status=letter.last_status,
        last_error=letter.last_error, first_attempt_at=letter.first_attempt_at,
        dead_at=letter.dead_at, replay_requested_at=letter.replay_requested_at,
        replayed_at=letter.replayed_at,
    )  # fmt: skip


__all__ = ["router"]
