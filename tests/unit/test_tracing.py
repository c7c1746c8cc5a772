"""Tracing's switch and its ids: off by default (nothing installed, nothing computed), on with
the endpoint setting (spans reach an OTLP receiver over HTTP), business ids and never names."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import nullcontext
from datetime import date
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio import worker as temporal_worker
from temporalio.contrib.opentelemetry import TracingInterceptor

from activities.accounts import EnsurePartyInput
from activities.amendments import PostDocumentInput
from adapters import tracing
from adapters.settings import Settings
from adapters.workflow_starts import ledger_feed
from canonical import Money
from canonical.billing import LedgerPosting
from canonical.customer import Customer
from canonical.ledger import BillingEventRef
from starters.api import create_app

STANDARD = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


@pytest.fixture(autouse=True)
def no_tracing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in (*STANDARD, "LEDGERBRIDGE_OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    tracing.shutdown_tracing()
    yield
    tracing.shutdown_tracing()


def settings(tmp_path: Path, **given: Any) -> Settings:
    return Settings(home=tmp_path, store_url=f"sqlite:///{tmp_path / 's.sqlite'}", **given)


def invoice_event() -> BillingEventRef:
    return BillingEventRef(
        event_id="evt_1", event_type="invoice.finalized", created=1, object_kind="invoice",
        object_id="in_1", customer_id="cus_1", correlation_id="corr-1",
    )  # fmt: skip


def test_tracing_is_off_by_default_and_installs_nothing(tmp_path: Path) -> None:
    off = settings(tmp_path)
    textmap = propagate.get_global_textmap()

    assert tracing.otlp_endpoint(off) is None
    assert tracing.configure_tracing(off, "worker") is False
    app = create_app(off)

    assert not tracing.tracing_enabled()
    assert tracing.temporal_interceptors() == []  # the Temporal clients get none
    assert not getattr(app, "_is_instrumented_by_opentelemetry", False)
    assert not HTTPXClientInstrumentor().is_instrumented_by_opentelemetry
    assert propagate.get_global_textmap() is textmap
    # The intake's hook computes nothing and sets nothing while off.
    start = ledger_feed(invoice_event(), "sub_1", ["USD"])
    assert isinstance(tracing.start_scope(start.search_attributes, start.signal_input), nullcontext)
    with tracing.business_scope(correlation_id="corr-1"):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
    assert "baggage" not in carrier


class OtlpReceiver(BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()
        self.wfile.write(b"")

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, list[tuple[str, str, bytes]]]]:
    received: list[tuple[str, str, bytes]] = []
    handler = type("Receiver", (OtlpReceiver,), {"received": received})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def test_the_endpoint_setting_turns_tracing_on_and_exports_spans_by_otlp(
    tmp_path: Path, otlp_receiver: tuple[str, list[tuple[str, str, bytes]]]
) -> None:
    endpoint, received = otlp_receiver
    on = settings(tmp_path, otel_exporter_otlp_endpoint=endpoint)

    assert tracing.configure_tracing(on, "worker") is True
    interceptors = tracing.temporal_interceptors()
    assert [type(i) for i in interceptors] == [TracingInterceptor, tracing.ActivityBusinessIds]
    assert HTTPXClientInstrumentor().is_instrumented_by_opentelemetry
    tracer = installed_tracer()
    with (
        tracing.business_scope(correlation_id="corr-7", customer_id="cus_7"),
        tracer.start_as_current_span("posting"),
    ):
        pass
    tracing.shutdown_tracing()  # exports what is pending

    [(path, content_type, body)] = received
    assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
    request = ExportTraceServiceRequest.FromString(body)
    [resource_spans] = request.resource_spans
    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert resource["service.name"] == "ledgerbridge-worker"
    [span] = resource_spans.scope_spans[0].spans
    attributes = {a.key: a.value.string_value for a in span.attributes}
    assert span.name == "posting"
    assert attributes[tracing.CORRELATION_ID] == "corr-7"
    assert attributes["ledgerbridge.customer_id"] == "cus_7"


@pytest.mark.parametrize("standard", STANDARD)
def test_the_standard_variable_also_turns_it_on_and_ours_comes_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, standard: str
) -> None:
    monkeypatch.setenv(standard, "http://collector:4318")
    assert tracing.otlp_endpoint(settings(tmp_path)) == "http://collector:4318"
    ours = settings(tmp_path, otel_exporter_otlp_endpoint="http://ours:4318")
    assert tracing.otlp_endpoint(ours) == "http://ours:4318"


def test_the_standard_sampler_variables_sample_a_share_of_the_traces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where tracing every webhook costs too much, OpenTelemetry's own variables sample:
    a trace is kept or dropped whole, at its root (the webhook's request)."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    exporter = InMemorySpanExporter()
    assert tracing.configure_tracing(settings(tmp_path), "api", exporter=exporter)
    tracer = installed_tracer()
    for _ in range(400):
        with tracer.start_as_current_span("webhook"), tracer.start_as_current_span("signal"):
            pass
    kept = exporter.get_finished_spans()
    roots = [s for s in kept if s.name == "webhook"]
    assert 40 <= len(roots) <= 160  # 100 expected; far outside this, the ratio is not applied
    assert len(kept) == 2 * len(roots)  # each kept root keeps its child: whole traces


def installed_tracer() -> trace.Tracer:
    """A tracer of the provider tracing installed."""
    assert tracing._active is not None
    return tracing._active.provider.get_tracer("test")


@pytest.fixture
def spans(tmp_path: Path) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert tracing.configure_tracing(settings(tmp_path), "test", exporter=exporter)
    yield exporter


def test_baggage_stays_in_the_process_over_http(spans: InMemorySpanExporter) -> None:
    with tracing.business_scope(correlation_id="corr-1", customer_id="cus_1"):
        carrier: dict[str, str] = {}
        propagate.inject(carrier)  # what an httpx call would send, what FastAPI reads
    assert set(carrier) == {"traceparent"} or carrier == {}
    assert "baggage" not in carrier


def test_spans_started_inside_a_scope_carry_its_ids_and_others_do_not(
    spans: InMemorySpanExporter,
) -> None:
    tracer = installed_tracer()
    with tracer.start_as_current_span("request"):
        with (
            tracing.business_scope(correlation_id="corr-1", case_id="42", invoice_id=None),
            tracer.start_as_current_span("inside"),
        ):
            pass
        with tracer.start_as_current_span("after"):
            pass
    found = {s.name: dict(s.attributes or {}) for s in spans.get_finished_spans()}
    assert found["request"] == {tracing.CORRELATION_ID: "corr-1", "ledgerbridge.case_id": "42"}
    assert found["inside"] == found["request"]
    assert found["after"] == {}


def posting(reference: str) -> LedgerPosting:
    return LedgerPosting(
        reference=reference, kind="invoice", customer_id="cus_9", currency="USD", lines=[],
        total=Money(amount=Decimal("1.00"), currency="USD"), billing_date=date(2026, 1, 1),
        description="Invoice",
    )  # fmt: skip


def test_business_ids_of_an_activity_input_are_ids_and_never_names() -> None:
    party = EnsurePartyInput(
        customer=Customer(customer_id="cus_9", name="Ada Lovelace", email="ada@example.com")
    )
    assert tracing.business_ids_of([party]) == {"customer_id": "cus_9"}
    reversal = PostDocumentInput(posting=posting("in_9/void"))
    assert tracing.business_ids_of([reversal]) == {"customer_id": "cus_9", "invoice_id": "in_9"}
    assert tracing.business_ids_of([invoice_event()]) == {
        "customer_id": "cus_1", "correlation_id": "corr-1", "invoice_id": "in_1",
    }  # fmt: skip
    assert tracing.business_ids_of(["cus_1", 3, None]) == {}


def test_a_start_carries_its_search_attributes_ids_and_its_invoice() -> None:
    start = ledger_feed(invoice_event(), "sub_1", ["USD"])
    assert tracing.ids_of_start(start.search_attributes, start.signal_input, start.input) == {
        "correlation_id": "corr-1", "customer_id": "cus_1", "subscription_id": "sub_1",
        "invoice_id": "in_1",
    }  # fmt: skip


class RecordingNext(temporal_worker.ActivityInboundInterceptor):
    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer

    async def execute_activity(self, input: temporal_worker.ExecuteActivityInput) -> Any:
        with self.tracer.start_as_current_span("ERP call"):
            return "posted"


async def test_an_activity_and_its_calls_carry_the_ids_of_its_input(
    spans: InMemorySpanExporter,
) -> None:
    tracer = installed_tracer()
    inbound = tracing.ActivityBusinessIds().intercept_activity(RecordingNext(tracer))
    given = temporal_worker.ExecuteActivityInput(
        fn=lambda _: None, args=[PostDocumentInput(posting=posting("in_5"))], executor=None,
        headers={},
    )  # fmt: skip
    with (
        tracing.business_scope(correlation_id="corr-from-the-start"),
        tracer.start_as_current_span("RunActivity:post_ledger_document"),
    ):
        assert await inbound.execute_activity(given) == "posted"
    found = {s.name: dict(s.attributes or {}) for s in spans.get_finished_spans()}
    for name in ("RunActivity:post_ledger_document", "ERP call"):
        assert found[name] == {
            tracing.CORRELATION_ID: "corr-from-the-start",
            "ledgerbridge.customer_id": "cus_9",
            "ledgerbridge.invoice_id": "in_5",
        }, name
