"""Our OTLP encoding of a span batch is the library's, field for field and byte for byte; the
exporter around it answers as the library's does (sent, refused, too large, shut down)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    Link,
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from adapters.span_export import InPlaceOTLPSpanExporter, encode_request


def finished_spans(
    resource: Resource, scope: str, version: str | None = None
) -> list[ReadableSpan]:
    """Spans of every shape the SDK makes: server and client, attributes of each type, an
    event, a link, an error status, a remote parent with trace state, nested children."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer(
        scope, version, schema_url="https://opentelemetry.io/schemas/1.21.0"
    )
    remote = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C, span_id=0x00F067AA0BA902B7, is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED), trace_state=TraceState([("vendor", "a1")]),
    )  # fmt: skip
    attributes = {
        "http.route": "/webhooks/stripe", "http.status_code": 200, "ratio": 0.25,
        "retried": False, "ids": ("in_1", "in_2"), "codes": [429, 503], "flags": [True, False],
        "empty": "",
    }  # fmt: skip
    with tracer.start_as_current_span(
        "POST /webhooks/stripe", context=set_span_in_context(NonRecordingSpan(remote)),
        kind=SpanKind.SERVER, attributes=attributes,
    ) as server:  # fmt: skip
        server.add_event("receipt queued", {"ledgerbridge.invoice_id": "in_1", "n": 3})
        with tracer.start_as_current_span(
            "SignalWithStartWorkflow:SubscriptionLedger", kind=SpanKind.CLIENT,
            links=[Link(remote, {"why": "retry"})],
        ) as client:  # fmt: skip
            client.set_status(Status(StatusCode.ERROR, "Temporal unavailable"))
        with tracer.start_as_current_span("bare"):
            pass
    return list(memory.get_finished_spans())


def batch() -> list[ReadableSpan]:
    api = Resource.create({"service.name": "ledgerbridge-api"}, schema_url="https://x/1")
    worker = Resource.create({"service.name": "ledgerbridge-worker", "host.cores": 2})
    # Equal to `api` but another object: grouped with it, as the library groups by equality.
    api_again = Resource.create({"service.name": "ledgerbridge-api"}, schema_url="https://x/1")
    # Two resources, two scopes under one of them, interleaved as a batch arrives.
    first = finished_spans(api, "opentelemetry.instrumentation.fastapi", "0.66b2")
    second = finished_spans(worker, "ledgerbridge.temporal")
    third = finished_spans(api_again, "ledgerbridge.temporal")
    return [first[0], second[0], third[0], first[1], second[1], *first[2:], *third[1:], second[2]]


def test_a_batch_encodes_as_the_library_encodes_it() -> None:
    spans = batch()

    ours, theirs = encode_request(spans), encode_spans(spans)

    assert ours == theirs
    assert ours.SerializeToString() == theirs.SerializeToString()
    assert [len(r.scope_spans) for r in ours.resource_spans] == [2, 1]
    assert sum(len(s.spans) for r in ours.resource_spans for s in r.scope_spans) == len(spans)


def test_values_of_every_type_and_those_protobuf_refuses_encode_as_the_library_does() -> None:
    [span, *_] = finished_spans(Resource.create({}), "s")
    # Set past the SDK's own checks: what an exporter may still be handed.
    span._attributes = {  # type: ignore[attr-defined]
        "too.big": 2**70,  # past int64: protobuf refuses it
        "surrogate": "\udcff",  # what json.loads makes of a lone escape: not UTF-8
        "raw": b"\x00\x01", "none": None, "empty": (), "nested": {"a": [1, "b"], "c": None},
        "after": "kept",
    }  # fmt: skip

    ours, theirs = encode_request([span]), encode_spans([span])

    assert ours == theirs
    assert ours.SerializeToString() == theirs.SerializeToString()
    keys = [a.key for a in ours.resource_spans[0].scope_spans[0].spans[0].attributes]
    assert keys == ["raw", "none", "empty", "nested", "after"]  # the span kept, less the two


def test_dropped_counts_are_carried_each_in_its_own_field() -> None:
    memory = InMemorySpanExporter()
    limits = SpanLimits(max_span_attributes=2, max_events=1, max_links=1)
    provider = TracerProvider(span_limits=limits)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    linked = SpanContext(trace_id=1, span_id=2, is_remote=True)
    with provider.get_tracer("s").start_as_current_span(
        "s", attributes={f"a{n}": n for n in range(5)}, links=[Link(linked)] * 4
    ) as span:  # fmt: skip
        for n in range(3):
            span.add_event(f"e{n}")
    spans = list(memory.get_finished_spans())

    [encoded] = encode_request(spans).resource_spans[0].scope_spans[0].spans
    assert (encoded.dropped_attributes_count, encoded.dropped_events_count,
            encoded.dropped_links_count) == (3, 2, 3)  # fmt: skip
    assert encode_request(spans) == encode_spans(spans)


def test_the_exporter_mirrors_the_pinned_library_version() -> None:
    # `InPlaceOTLPSpanExporter.export` takes the steps of this version's `export` and reads
    # its private fields: a new version must be read again before this pin moves.
    assert version("opentelemetry-exporter-otlp-proto-http") == "1.45.2"


def test_an_empty_batch_is_an_empty_request() -> None:
    assert encode_request([]) == encode_spans([]) == ExportTraceServiceRequest()


class Collector(BaseHTTPRequestHandler):
    answers: list[int]
    received: list[bytes]

    def do_POST(self) -> None:
        self.received.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(self.answers.pop(0) if self.answers else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[tuple[str, list[int], list[bytes]]]:
    answers: list[int] = []
    received: list[bytes] = []
    handler = type("Handler", (Collector,), {"answers": answers, "received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", answers, received
    server.shutdown()
    server.server_close()


def test_the_exporter_sends_the_request_and_answers_as_the_library(
    collector: tuple[str, list[int], list[bytes]],
) -> None:
    url, answers, received = collector
    spans = batch()
    exporter = InPlaceOTLPSpanExporter(endpoint=url, timeout=5)

    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert ExportTraceServiceRequest.FromString(received[0]) == encode_spans(spans)

    answers.append(400)  # refused (not retried: 400 is not a retryable answer)
    assert exporter.export(spans) is SpanExportResult.FAILURE

    small = InPlaceOTLPSpanExporter(endpoint=url, timeout=5, max_request_size=100)
    assert small.export(spans) is SpanExportResult.FAILURE  # too large: dropped, not sent
    assert len(received) == 2

    small.shutdown()
    exporter.shutdown()
    assert exporter.export(spans) is SpanExportResult.FAILURE
    assert len(received) == 2
