"""OpenTelemetry traces: one trace from a webhook to each system's HTTP call.

Off by default. On when LEDGERBRIDGE_OTEL_EXPORTER_OTLP_ENDPOINT (or the standard
OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set: spans then go by
OTLP over HTTP (adapters/span_export.py), under the service name `ledgerbridge-<api|worker>`.

What makes the trace:
- the API's requests (FastAPI instrumentation), its Temporal client calls, the workflow runs
  and activities (the SDK's TracingInterceptor, which also keeps workflow code deterministic:
  it makes no span while replaying), and every httpx request (billing through the stripe SDK's
  HTTPX client, support, and Tryton's JSON-RPC, which is httpx too);
- the business ids (`ledgerbridge.correlation_id`, customer, subscription, invoice, case):
  set as OpenTelemetry baggage where they become known (the request's correlation id, the
  intake's start, an activity's input), carried to the workflow and its activities in
  Temporal's headers, and copied onto every span that starts under them. Only ids: never a
  name or an email. The baggage never leaves over HTTP: the global propagator is W3C trace
  context alone, so neither billing, support nor the ERP receive our ids, and a webhook sender
  cannot plant its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from opentelemetry import baggage, context, propagate, trace
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import BaseModel
from temporalio import client as temporal_client
from temporalio import worker as temporal_worker
from temporalio.common import TypedSearchAttributes
from temporalio.contrib.opentelemetry import TracingInterceptor

from adapters import visibility
from adapters.settings import Settings

PREFIX = "ledgerbridge."
CORRELATION_ID = f"{PREFIX}correlation_id"
# The business ids a span may carry, by the field name our models give them.
ID_FIELDS = ("correlation_id", "customer_id", "subscription_id", "invoice_id", "case_id")
STANDARD_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
# Liveness probes would drown the traces that matter.
UNTRACED_URLS = "healthz,metrics"
# How deep an activity's input is searched for ids (input -> posting -> its fields).
INPUT_DEPTH = 3


@dataclass(frozen=True)
class _Tracing:
    provider: TracerProvider
    service: str
    textmap: TextMapPropagator  # the global propagator before ours, put back at shutdown


_active: _Tracing | None = None


def otlp_endpoint(settings: Settings) -> str | None:
    """Where spans go: our setting, else the standard OpenTelemetry variables; None: off."""
    if settings.otel_exporter_otlp_endpoint:
        return settings.otel_exporter_otlp_endpoint
    return next((os.environ[n] for n in STANDARD_ENDPOINTS if os.environ.get(n)), None)


def configure_tracing(
    settings: Settings, service: str, exporter: SpanExporter | None = None
) -> bool:
    """Turn tracing on for this process when an endpoint is configured (or an `exporter` is
    given: tests pass an in-memory one); returns whether it is on. Once per process: a second
    call keeps the first set-up."""
    global _active
    if _active is not None:
        return True
    if exporter is None:
        endpoint = otlp_endpoint(settings)
        if endpoint is None:
            return False
        processor: SpanProcessor = BatchSpanProcessor(_otlp_exporter(settings, endpoint))
    else:
        processor = SimpleSpanProcessor(exporter)
    provider = TracerProvider(resource=Resource.create({"service.name": f"ledgerbridge-{service}"}))
    provider.add_span_processor(BusinessIdsProcessor())  # the ids onto each span as it starts
    provider.add_span_processor(processor)
    # Trace context only, in and out over HTTP: our baggage is for Temporal's headers.
    textmap = propagate.get_global_textmap()
    propagate.set_global_textmap(TraceContextTextMapPropagator())
    _httpx_instrumentor().instrument(tracer_provider=provider)
    _active = _Tracing(provider, service, textmap)
    return True


def _otlp_exporter(settings: Settings, endpoint: str) -> SpanExporter:
    # Imported only when exporting: the protobuf encoder costs start-up time otherwise.
    from adapters.span_export import InPlaceOTLPSpanExporter

    if settings.otel_exporter_otlp_endpoint:  # a base URL, as the standard variable is
        return InPlaceOTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")
    return InPlaceOTLPSpanExporter()  # reads the standard variables (endpoint, headers, TLS)


def _httpx_instrumentor() -> Any:
    # Imported only when tracing is on: it costs every process ~0.1 s of start-up otherwise.
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    return HTTPXClientInstrumentor()


def tracing_enabled() -> bool:
    return _active is not None


def shutdown_tracing() -> None:
    """Export what is pending and turn tracing off again (orderly exit, and tests)."""
    global _active
    if _active is None:
        return
    _httpx_instrumentor().uninstrument()
    propagate.set_global_textmap(_active.textmap)
    _active.provider.shutdown()
    _active = None


def instrument_api(app: Any, settings: Settings) -> None:
    """The API's hook: tracing on when configured, and then a server span per request."""
    if not configure_tracing(settings, "api") or _active is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(
        app,
        tracer_provider=_active.provider,
        excluded_urls=UNTRACED_URLS,
        exclude_spans=["receive", "send"],  # one span per request, not one per ASGI message
    )


def temporal_interceptors() -> list[temporal_client.Interceptor]:
    """For every Temporal client (and so its workers): none while tracing is off."""
    if _active is None:
        return []
    tracer = _active.provider.get_tracer("ledgerbridge.temporal")
    # Outermost first: the activity's span exists before its input's ids are put on it.
    return [TracingInterceptor(tracer), ActivityBusinessIds()]


@contextmanager
def business_scope(**ids: str | None) -> Iterator[None]:
    """Put the given business ids on the current span and on every span started inside
    (here, and in Temporal's workflows and activities started from here). Free when off."""
    given = {f"{PREFIX}{name}": value for name, value in ids.items() if value}
    if _active is None or not given:
        yield
        return
    trace.get_current_span().set_attributes(given)
    ctx = context.get_current()
    for key, value in given.items():
        ctx = baggage.set_baggage(key, value, ctx)
    token = context.attach(ctx)
    try:
        yield
    finally:
        context.detach(token)


# By the search attribute's name: a start's attributes are read in one pass (each
# `TypedSearchAttributes.get` walks them all).
SEARCH_ATTRIBUTE_IDS = {
    visibility.CORRELATION_ID.name: "correlation_id",
    visibility.CUSTOMER_ID.name: "customer_id",
    visibility.SUBSCRIPTION_ID.name: "subscription_id",
    visibility.INVOICE_ID.name: "invoice_id",
    visibility.CASE_ID.name: "case_id",
}


def ids_of_start(attributes: TypedSearchAttributes, *inputs: Any) -> dict[str, str]:
    """The business ids a process starts with: its search attributes', and those its inputs
    name besides (an invoice event's invoice)."""
    found = business_ids_of(inputs)
    for key, value in attributes:
        name = SEARCH_ATTRIBUTE_IDS.get(key.name)
        if name and value and isinstance(value, str):
            found[name] = value
    return found


def start_scope(attributes: TypedSearchAttributes, *inputs: Any) -> AbstractContextManager[None]:
    """`business_scope` of a process start (see `ids_of_start`); free when off."""
    return business_scope(**ids_of_start(attributes, *inputs)) if _active else nullcontext()


def business_ids_of(values: Sequence[Any], depth: int = INPUT_DEPTH) -> dict[str, str]:
    """The business ids in an activity's arguments (pydantic models): fields named like
    `ID_FIELDS`, and an invoice's own id where a model says it is about an invoice
    (`kind`/`object_kind` "invoice" with `document_id`, `object_id` or `reference`).
    The outermost wins; lists are not searched (their items are many)."""
    found: dict[str, str] = {}
    level = [v for v in values if isinstance(v, BaseModel)]
    for _ in range(depth):
        nested: list[BaseModel] = []
        for model in level:
            fields = vars(model)  # its declared fields, not copied (extras are not ids)
            for name, value in _ids_in(fields).items():
                found.setdefault(name, value)
            nested.extend(v for v in fields.values() if isinstance(v, BaseModel))
        level = nested
    return found


def _ids_in(fields: Mapping[str, Any]) -> dict[str, str]:
    ids = {n: fields[n] for n in ID_FIELDS if isinstance(fields.get(n), str) and fields[n]}
    if "invoice" in (fields.get("kind"), fields.get("object_kind")):
        own = fields.get("document_id") or fields.get("object_id") or fields.get("reference")
        if isinstance(own, str) and own:
            ids.setdefault("invoice_id", own.split("/")[0])  # a reversal is `<id>/void`
    return ids


class BusinessIdsProcessor(SpanProcessor):
    """Copies the business ids in the context's baggage onto each span as it starts."""

    def on_start(self, span: Span, parent_context: context.Context | None = None) -> None:
        ids = {
            key: value
            for key, value in baggage.get_all(parent_context).items()
            if key.startswith(PREFIX) and isinstance(value, str)
        }
        if ids:
            span.set_attributes(ids)  # one call, not one (and one lock) an id

    def on_end(self, span: ReadableSpan) -> None:
        pass


class ActivityBusinessIds(temporal_client.Interceptor, temporal_worker.Interceptor):
    """Each activity's span and the HTTP calls it makes carry the ids of its own input (a
    long-lived ledger's later activities serve events other than the one that started it)."""

    def intercept_activity(
        self, next: temporal_worker.ActivityInboundInterceptor
    ) -> temporal_worker.ActivityInboundInterceptor:
        return _ActivityBusinessIdsInbound(next)


class _ActivityBusinessIdsInbound(temporal_worker.ActivityInboundInterceptor):
    async def execute_activity(self, input: temporal_worker.ExecuteActivityInput) -> Any:
        with business_scope(**business_ids_of(input.args)):
            return await super().execute_activity(input)


__all__ = [
    "CORRELATION_ID",
    "ActivityBusinessIds",
    "BusinessIdsProcessor",
    "business_ids_of",
    "business_scope",
    "configure_tracing",
    "ids_of_start",
    "instrument_api",
    "otlp_endpoint",
    "shutdown_tracing",
    "start_scope",
    "temporal_interceptors",
    "tracing_enabled",
]
