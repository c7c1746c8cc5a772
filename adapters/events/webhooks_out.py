"""Signed webhooks out: one delivery of one event to one endpoint, and what to do next.

The input is what a broker's durable consumer per endpoint holds (the endpoint, the
CloudEvent's bytes, which attempt this is); the output is a decision it acts on:

    ack              delivered (any 2xx, whatever the body says), or not for this endpoint
    retry            after `retry_after` seconds: 429, 5xx, a timeout, no connection, or any
                     other answer (3xx, 4xx: the subscriber may be misconfigured for a while,
                     `subscriber_error` says so); exponential backoff with jitter
    dead_letter      still failing 3 days after the first attempt: keep it for a replay
    pause            410 Gone (the subscriber says the endpoint is gone), or already paused
    pause_and_alert  the endpoint has failed every delivery for 24 h: pause it and open a
                     finance/ops exception (the caller's job), `failing_since` says since when

Signing follows Standard Webhooks with its reference library: `webhook-id` is the event id
(a subscriber drops a redelivery by it), `webhook-timestamp` the Unix time of this attempt,
`webhook-signature` one `v1,<base64>` per valid secret, space-separated, so a subscriber
verifies with either secret while a rotation overlaps.

Redirects are not followed: a 3xx is an answer like any other, so the signed body never goes
to a host nobody registered.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

import httpx
from standardwebhooks import Webhook

from adapters.events.subscriptions import PAUSED, EventEndpoint

Decision = Literal["ack", "retry", "dead_letter", "pause", "pause_and_alert"]
CONTENT_TYPE: Final = "application/cloudevents+json"
USER_AGENT: Final = "ledgerbridge-webhooks/1"

TIMEOUT_SECONDS: Final = 10.0
FIRST_RETRY_SECONDS: Final = 5.0  # after the first failed attempt; doubling from there
MAX_RETRY_SECONDS: Final = 2 * 3600.0  # the longest wait between two attempts
JITTER: Final = 0.2  # each wait drawn within ±20 % of its nominal length
RETRY_WINDOW: Final = timedelta(days=3)  # from the first attempt, then dead-lettered
FAILING_LIMIT: Final = timedelta(hours=24)  # an endpoint failing this long is paused
_ERROR_CHARS: Final = 300


@dataclass(frozen=True)
class DeliveryOutcome:
    """What one attempt did, and what the consumer does next."""

    decision: Decision
    endpoint_id: str
    event_id: str
    attempt: int
    status_code: int | None = None  # the subscriber's answer; None when none came
    error: str | None = None  # why it was not delivered, one line
    retry_after: float | None = None  # seconds, when the decision is retry
    # Since when the endpoint fails every delivery (None once one succeeds): the consumer
    # records it on the endpoint, so the 24 h are counted across events and restarts.
    failing_since: datetime | None = None
    subscriber_error: bool = False  # retried, but the subscriber refused it (a 3xx or 4xx)
    sent: bool = True  # False when nothing was sent (paused, not subscribed)
    first_attempt_at: datetime | None = None  # when this event was first tried here
    elapsed_ms: float | None = None

    @property
    def delivered(self) -> bool:
        return self.decision == "ack" and self.sent


# --- the schedule ---------------------------------------------------------------------------


def retry_delay(attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt `attempt` (1-based): 5 s, 10 s, 20 s, ... up to
    2 h, each within ±20 % so that endpoints failing together do not retry together."""
    if attempt < 1:
        raise ValueError(f"attempts count from 1, not {attempt}")
    nominal = nominal_delay(attempt)
    spread = (rng or random).uniform(-JITTER, JITTER)
    return nominal * (1 + spread)


def nominal_delay(attempt: int) -> float:
    """The delay after failed attempt `attempt`, before jitter."""
    exponent = min(attempt - 1, 64)  # past the cap long before; keeps 2**n small
    return min(FIRST_RETRY_SECONDS * 2**exponent, MAX_RETRY_SECONDS)


def nominal_elapsed(attempt: int) -> timedelta:
    """When attempt `attempt` comes after the first one, by the schedule without jitter: the
    first attempt's time when the caller does not know it."""
    return timedelta(seconds=sum(nominal_delay(n) for n in range(1, attempt)))


def past_retry_window(first_attempt_at: datetime, now: datetime) -> bool:
    """Whether an event first tried at `first_attempt_at` has been retried long enough."""
    return now - first_attempt_at >= RETRY_WINDOW


def failing_too_long(failing_since: datetime | None, now: datetime) -> bool:
    return failing_since is not None and now - failing_since >= FAILING_LIMIT


# --- signing --------------------------------------------------------------------------------


def signed_headers(event_id: str, body: bytes, secrets: list[str], at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers of a delivery made at `at`, signed with every secret."""
    if not secrets:
        raise ValueError("an endpoint without a valid secret cannot be signed for")
    timestamp = datetime.fromtimestamp(math.floor(at.timestamp()), UTC)
    signatures = [Webhook(secret).sign(event_id, timestamp, body) for secret in secrets]
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(math.floor(at.timestamp())),
        "webhook-signature": " ".join(signatures),
    }


# --- one delivery ---------------------------------------------------------------------------


async def deliver(
    endpoint: EventEndpoint,
    event_body: bytes,
    attempt: int,
    http: httpx.AsyncClient,
    *,
    first_attempt_at: datetime | None = None,
    now: datetime | None = None,
    timeout_seconds: float = TIMEOUT_SECONDS,
    rng: random.Random | None = None,
) -> DeliveryOutcome:
    """POST the event to the endpoint, signed, and decide what comes next.

    `first_attempt_at` is when this event was first tried at this endpoint (the consumer
    knows it; by default it is reckoned from `attempt` along the schedule). `now` is for
    tests; the signature's timestamp is always the real time of sending.
    """
    if attempt < 1:
        raise ValueError(f"attempts count from 1, not {attempt}")
    event_id, event_type = _id_and_type(event_body)
    at = now or datetime.now(UTC)
    if endpoint.status == PAUSED:
        paused = "endpoint is paused"
        return DeliveryOutcome("pause", endpoint.id, event_id, attempt, sent=False,
                               error=paused, failing_since=endpoint.failing_since)  # fmt: skip
    if not endpoint.wants(event_type):
        return DeliveryOutcome("ack", endpoint.id, event_id, attempt, sent=False)

    sent_at = datetime.now(UTC)  # the signature's time is the real one, whatever `now` says
    headers = {
        "content-type": CONTENT_TYPE,
        "user-agent": USER_AGENT,
        **signed_headers(event_id, event_body, endpoint.signing_secrets(sent_at), sent_at),
    }
    started = time.perf_counter()
    status: int | None = None
    retry_after_header: float | None = None
    try:
        response = await http.post(
            endpoint.url, content=event_body, headers=headers, timeout=timeout_seconds,
            follow_redirects=False,
        )  # fmt: skip
        status = response.status_code
        retry_after_header = _retry_after(response.headers.get("retry-after"))
        error = None if 200 <= status < 300 else f"HTTP {status}: {_snippet(response.text)}"
    except httpx.TimeoutException:
        error = f"no answer within {timeout_seconds:g} s"
    except httpx.HTTPError as err:
        error = f"{type(err).__name__}: {_snippet(str(err)) or 'transport error'}"
    elapsed_ms = (time.perf_counter() - started) * 1000
    return classify(
        endpoint, event_id, attempt, status, error,
        first_attempt_at=first_attempt_at or at - nominal_elapsed(attempt),
        now=at, retry_after_header=retry_after_header, elapsed_ms=elapsed_ms, rng=rng,
    )  # fmt: skip


def classify(
    endpoint: EventEndpoint,
    event_id: str,
    attempt: int,
    status: int | None,
    error: str | None,
    *,
    first_attempt_at: datetime,
    now: datetime,
    retry_after_header: float | None = None,
    elapsed_ms: float | None = None,
    rng: random.Random | None = None,
) -> DeliveryOutcome:
    """The decision for an attempt answered `status` (None: no answer, `error` says why)."""
    answered = DeliveryOutcome(
        "ack", endpoint.id, event_id, attempt, status_code=status, elapsed_ms=elapsed_ms,
        first_attempt_at=first_attempt_at,
    )  # fmt: skip
    if status is not None and 200 <= status < 300:
        return answered
    failing_since = endpoint.failing_since or now
    if status == 410:
        why = "the endpoint answered 410 Gone: paused until it is resumed"
        return replace(answered, decision="pause", error=why, failing_since=failing_since)
    subscriber_error = status is not None and status != 429 and status < 500
    if subscriber_error:
        error = f"{error} (the subscriber refused it; retried in case it is fixed)"
    failed = replace(answered, error=error, failing_since=failing_since,
                     subscriber_error=subscriber_error)  # fmt: skip
    if failing_too_long(failing_since, now):
        return replace(failed, decision="pause_and_alert")
    if past_retry_window(first_attempt_at, now):
        return replace(failed, decision="dead_letter")
    delay = retry_delay(attempt, rng)
    if retry_after_header is not None:  # a subscriber asking for longer gets it, within reason
        delay = max(delay, min(retry_after_header, MAX_RETRY_SECONDS))
    # The last retry falls on the window's end, not after it.
    left = (first_attempt_at + RETRY_WINDOW - now).total_seconds()
    return replace(failed, decision="retry", retry_after=max(1.0, min(delay, left)))


def _id_and_type(body: bytes) -> tuple[str, str]:
    """The event's id and type, read from the structured CloudEvent without re-encoding it."""
    try:
        envelope = json.loads(body)
        event_id, event_type = envelope["id"], envelope["type"]
    except (ValueError, TypeError, KeyError) as err:
        raise ValueError(f"not a structured CloudEvent: {err}") from None
    if not isinstance(event_id, str) or not isinstance(event_type, str) or not event_id:
        raise ValueError("a CloudEvent's id and type are non-empty strings")
    return event_id, event_type


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (its HTTP-date form is rare from webhook receivers: ignored)."""
    if value is None or not value.strip().isdigit():
        return None
    return float(value.strip())


def _snippet(text: str) -> str:
    return " ".join(text.split())[:_ERROR_CHARS]


__all__ = [
    "CONTENT_TYPE",
    "FAILING_LIMIT",
    "RETRY_WINDOW",
    "TIMEOUT_SECONDS",
    "Decision",
    "DeliveryOutcome",
    "classify",
    "deliver",
    "failing_too_long",
    "nominal_delay",
    "nominal_elapsed",
    "past_retry_window",
    "retry_delay",
    "signed_headers",
]
