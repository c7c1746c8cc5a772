"""Events out: the broker the outbox relay publishes business events to (NATS JetStream)."""

from adapters.events.broker import (
    DEFAULT_DUPLICATE_WINDOW_SECONDS,
    MSG_ID_HEADER,
    STREAM,
    STREAM_SUBJECTS,
    Delivery,
    DurableConsumer,
    JetStreamBroker,
    PublishResult,
    StreamOutcome,
    business_id_from_token,
    subject_for,
    subject_token,
)
from adapters.events.server import nats_server_binary, nats_server_command

__all__ = [
    "DEFAULT_DUPLICATE_WINDOW_SECONDS",
    "MSG_ID_HEADER",
    "STREAM",
    "STREAM_SUBJECTS",
    "Delivery",
    "DurableConsumer",
    "JetStreamBroker",
    "PublishResult",
    "StreamOutcome",
    "business_id_from_token",
    "nats_server_binary",
    "nats_server_command",
    "subject_for",
    "subject_token",
]
