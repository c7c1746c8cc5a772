"""The AsyncAPI 3.0 document of the events out, generated from the canonical facts (the same
models whose JSON Schemas are checked in and held to the compatibility test), served by the
API at `/asyncapi.json`.

One channel per fact type on the JetStream stream, one `send` operation each (ledgerbridge
publishes; subscribers receive), one message each: the CloudEvents envelope whose `type` is
the fact's and whose `data` is the fact's canonical model.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from adapters.events.broker import SUBJECT_ROOT
from adapters.events.envelope import CORRELATION_EXTENSION, MAX_EVENT_BYTES
from canonical.facts import FACTS, Fact

ASYNCAPI_VERSION = "3.0.0"
DOCUMENT_VERSION = "1.0.0"
CONTENT_TYPE = "application/cloudevents+json"
REF = "#/components/schemas/{model}"

CLOUD_EVENT: dict[str, Any] = {
    "type": "object",
    "description": "CloudEvents 1.0, structured JSON mode.",
    "required": ["specversion", "id", "source", "type", "subject", "time", "data"],
    "properties": {
        "specversion": {"const": "1.0"},
        "id": {"type": "string", "description": "the same for the same fact: drop a copy"},
        "source": {"type": "string", "description": "/ledgerbridge/<domain>"},
        "type": {"type": "string"},
        "subject": {"type": "string", "description": "the business id; order is kept per id"},
        "time": {"type": "string", "format": "date-time"},
        "datacontenttype": {"const": "application/json"},
        CORRELATION_EXTENSION: {
            "type": "string",
            "description": "the correlation id of the work that recorded the fact",
        },
        "data": {"type": "object"},
    },
}


def stream_address(event_type: str) -> str:
    """A fact's subjects on the stream (adapters/events/broker.py `subject_for`): the type's
    tokens, then the business id as one token (letters, digits, `-`, `_` kept; any other
    byte written `=XX`)."""
    return f"{SUBJECT_ROOT}.{event_type}.{{subject}}"


def channel_name(fact: type[Fact]) -> str:
    return f"{fact.DOMAIN}.{fact.FACT}.v{fact.SCHEMA_VERSION}"


def asyncapi_document(
    address_of: Any, servers: dict[str, dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The document; `address_of(event_type)` gives a channel's address with `{subject}`
    where the encoded business id goes (the broker's subject rule)."""
    schemas: dict[str, Any] = {"CloudEvent": CLOUD_EVENT}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for fact in FACTS:
        name, event_type = fact.__name__, fact.event_type()
        schemas.update(_schemas_of(fact))
        messages[name] = {
            "name": event_type,
            "title": name,
            "summary": (fact.__doc__ or name).strip().splitlines()[0],
            "contentType": CONTENT_TYPE,
            "headers": {
                "type": "object",
                "properties": {
                    "Nats-Msg-Id": {"type": "string", "description": "the event id"},
                    "Content-Type": {"const": CONTENT_TYPE},
                },
            },
            "payload": {
                "allOf": [
                    {"$ref": "#/components/schemas/CloudEvent"},
                    {
                        "type": "object",
                        "properties": {
                            "type": {"const": event_type},
                            "data": {"$ref": REF.format(model=name)},
                        },
                    },
                ]
            },
        }
        channel = channel_name(fact)
        channels[channel] = {
            "address": address_of(event_type),
            "title": event_type,
            "parameters": {"subject": {"description": "the business id the fact is about"}},
            "messages": {name: {"$ref": f"#/components/messages/{name}"}},
        }
        operations[f"send{name}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel}"},
            "messages": [{"$ref": f"#/channels/{channel}/messages/{name}"}],
        }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "ledgerbridge business events",
            "version": DOCUMENT_VERSION,
            "description": (
                "Every business fact ledgerbridge records, published once per id to NATS "
                "JetStream (stream LEDGERBRIDGE) and delivered to subscribers as signed "
                f"webhooks. An event is at most {MAX_EVENT_BYTES} bytes; a type's version "
                "changes when its data changes incompatibly."
            ),
        },
        "defaultContentType": CONTENT_TYPE,
        "servers": servers or {},
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }


def _schemas_of(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema and its nested models, each a component, refs rewritten."""
    schema = model.model_json_schema(ref_template=REF, mode="serialization")
    nested = schema.pop("$defs", {})
    return {model.__name__: schema, **nested}
