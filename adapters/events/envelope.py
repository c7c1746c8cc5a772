"""The envelope of an event out: CloudEvents 1.0, structured JSON, built by the `cloudevents`
package (its v1 model validates the attributes; we only choose them).

- `id`: deterministic from the workflow id and the step that recorded the fact, so an
  activity retried after its write commits writes the same id, and the outbox, the broker
  (`Nats-Msg-Id`) and every subscriber can drop the copy.
- `source`: `/ledgerbridge/<domain>`; `type`: the fact's `com.ledgerbridge.<domain>.<fact>.vN`;
  `subject`: the business id the fact is about (the order of events is kept per subject).
- `correlationid`: an extension attribute, the correlation id of the work that recorded it.
- `data`: the canonical model of the fact, as JSON.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from canonical.facts import Fact
from canonical.money import Money

# Ids are UUIDs derived from this namespace, the workflow id, the step and the type.
EVENT_ID_NAMESPACE = uuid.UUID("6f1f4d8e-3b0a-5c57-9d8e-2f4c1b7a9e10")
# Far above any fact's size (they hold ids, amounts and a reason); far below NATS' 1 MB
# default payload. An event past it is refused when written, never truncated.
MAX_EVENT_BYTES = 64 * 1024
CORRELATION_EXTENSION = "correlationid"
_FORMAT = JSONFormat()


class EventTooLarge(ValueError):
    """The event would exceed MAX_EVENT_BYTES: refused, so nothing is recorded with it."""


@dataclass(frozen=True)
class OutgoingEvent:
    """One event out, ready to store and publish: the envelope as bytes, and the columns the
    outbox and the analytics table keep beside it."""

    event_id: str
    event_type: str
    subject: str
    time: datetime
    body: bytes  # the structured CloudEvents JSON
    customer_id: str | None
    amount_minor: int | None
    currency: str | None
    correlation_id: str | None


def event_id(workflow_id: str, step: str, event_type: str) -> str:
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{workflow_id}\n{step}\n{event_type}"))


def envelope(
    fact: Fact,
    *,
    workflow_id: str,
    step: str,
    subject: str,
    time: datetime,
    correlation_id: str | None = None,
) -> OutgoingEvent:
    """The fact as a CloudEvent; EventTooLarge past MAX_EVENT_BYTES."""
    event_type = fact.event_type()
    attributes: dict[str, object] = {
        "id": event_id(workflow_id, step, event_type),
        "source": f"/ledgerbridge/{fact.DOMAIN}",
        "type": event_type,
        "subject": subject,
        "time": time,
        "datacontenttype": "application/json",
    }
    if correlation_id:
        attributes[CORRELATION_EXTENSION] = correlation_id
    data = json.loads(fact.model_dump_json())
    body = _FORMAT.write(CloudEvent(attributes, data))
    if len(body) > MAX_EVENT_BYTES:
        raise EventTooLarge(
            f"{event_type} about {subject} is {len(body)} bytes, over {MAX_EVENT_BYTES}"
        )
    amount = getattr(fact, "amount", None)
    return OutgoingEvent(
        event_id=str(attributes["id"]),
        event_type=event_type,
        subject=subject,
        time=time,
        body=body,
        customer_id=getattr(fact, "customer_id", None),
        amount_minor=amount.to_minor() if isinstance(amount, Money) else None,
        currency=amount.currency if isinstance(amount, Money) else None,
        correlation_id=correlation_id,
    )


def read_event(body: bytes) -> CloudEvent:
    """An event's envelope read back (subscribers, tests); ValueError when it is none."""
    try:
        event = _FORMAT.read(None, body)
    except BaseCloudEventException as err:
        raise ValueError(f"not a CloudEvent: {err}") from err
    if not isinstance(event, CloudEvent):
        raise ValueError("not a CloudEvents 1.0 event")
    return event
