"""One signed billing webhook, one trace: the API's request, the signal-with-start, the ledger
workflow's run, its activities, down to the HTTP call that posts to the real Tryton, each
span carrying the request's correlation id (spans kept by the in-memory exporter)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from adapters.settings import Settings
from adapters.temporal import connect_for
from adapters.tracing import CORRELATION_ID, configure_tracing, shutdown_tracing
from canonical.ledger import LEDGER_WORKFLOW
from sandbox.billing._signature import stripe_signature
from tests.e2e.conftest import Stack, eventually, worker_running
from tests.e2e.test_amendments_e2e import posted, subscribe

pytestmark = pytest.mark.e2e

LEDGER = LEDGER_WORKFLOW  # the type name the workflow is registered under
CUSTOMER_NAME = "Traced Customer Co"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, into memory; requested before `stack`, so the API it builds is traced."""
    exporter = InMemorySpanExporter()
    assert configure_tracing(Settings(), "e2e", exporter=exporter)
    yield exporter
    shutdown_tracing()


@pytest_asyncio.fixture
async def traced_worker(spans: InMemorySpanExporter, stack: Stack) -> AsyncIterator[None]:
    """The worker as `python -m workers` builds it: its client, made while tracing is on,
    brings the tracing interceptors to every worker on it."""
    async with worker_running(stack, await connect_for(stack.settings)):
        yield


def quiet_billing_deliveries(stack: Stack) -> None:
    """Billing stops sending its own webhooks: the test sends the one it traces."""
    for endpoint in stack.billing._call("GET", "/v1/webhook_endpoints")["data"]:
        stack.billing._call("POST", f"/v1/webhook_endpoints/{endpoint['id']}",
                            data={"disabled": "true"})  # fmt: skip


async def send_signed(stack: Stack, event: dict[str, Any], correlation_id: str) -> httpx.Response:
    body = json.dumps(event).encode()
    secret = stack.settings.billing_webhook_secrets[0].get_secret_value()
    headers = {
        "Stripe-Signature": stripe_signature(body, secret, int(time.time())),
        "Content-Type": "application/json",
        "X-Correlation-Id": correlation_id,
    }
    # As billing sends it: with no trace of its own, so the API's request span is the root.
    with suppress_http_instrumentation():
        async with httpx.AsyncClient(base_url=stack.api_url, timeout=10) as http:
            return await http.post("/webhooks/stripe", content=body, headers=headers)


def child(spans: list[ReadableSpan], parent: ReadableSpan, name: str) -> ReadableSpan:
    found = [
        s for s in spans
        if s.name == name and s.parent is not None and s.parent.span_id == parent.context.span_id
    ]  # fmt: skip
    assert found, f"no {name!r} under {parent.name!r}; spans: {sorted({s.name for s in spans})}"
    return found[0]


def url_of(span: ReadableSpan) -> str:
    attributes = span.attributes or {}
    return str(attributes.get("url.full") or attributes.get("http.url") or "")


async def test_one_billing_webhook_is_one_trace_from_the_request_to_the_tryton_call(
    spans: InMemorySpanExporter, stack: Stack, traced_worker: None
) -> None:
    quiet_billing_deliveries(stack)
    customer_id, subscription_id, _pro = await subscribe(stack, CUSTOMER_NAME)
    [event] = [
        e for e in stack.billing.events("invoice.finalized")
        if e["data"]["object"]["customer"] == customer_id
    ]  # fmt: skip
    invoice_id = event["data"]["object"]["id"]
    correlation_id = f"trace-{uuid.uuid4()}"

    answer = await send_signed(stack, event, correlation_id)
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "accepted"
    await posted(stack, invoice_id)

    # The request's server span is the root of the trace.
    finished = list(spans.get_finished_spans())
    [request] = [
        s for s in finished
        if s.name == "POST /webhooks/stripe"
        and (s.attributes or {}).get(CORRELATION_ID) == correlation_id
    ]  # fmt: skip
    assert request.kind == SpanKind.SERVER
    assert request.parent is None
    trace_id = request.context.trace_id

    async def in_trace() -> list[ReadableSpan] | None:
        found = [s for s in spans.get_finished_spans() if s.context.trace_id == trace_id]
        posting_calls = [
            s for s in found
            if s.kind == SpanKind.CLIENT and url_of(s).startswith(stack.settings.erp_url)
        ]  # fmt: skip
        return found if posting_calls else None

    trace = await eventually(in_trace, "the ERP's HTTP calls in the webhook's trace", 30)

    # request -> signal-with-start -> the workflow's run -> activity -> Tryton's HTTP call.
    # The SDK's interceptor makes the workflow's spans (its run, its signal, each activity it
    # starts) as instants under the context the start carried, so they are siblings: the run
    # is tied to its activities by the workflow's run id.
    start = child(trace, request, f"SignalWithStartWorkflow:{LEDGER}")
    run = child(trace, start, f"RunWorkflow:{LEDGER}")
    run_id = (run.attributes or {})["temporalRunID"]
    post_started = child(trace, start, "StartActivity:post_ledger_document")
    assert (post_started.attributes or {})["temporalRunID"] == run_id
    post_ran = child(trace, post_started, "RunActivity:post_ledger_document")
    erp_calls = [
        s for s in trace
        if s.kind == SpanKind.CLIENT and s.parent is not None
        and s.parent.span_id == post_ran.context.span_id
        and url_of(s).startswith(stack.settings.erp_url)
    ]  # fmt: skip
    assert erp_calls, "the posting activity's calls to Tryton are not in the trace"
    # Billing's document is read through the stripe SDK's HTTPX client, in the same trace.
    fetch_started = child(trace, start, "StartActivity:fetch_billing_document")
    fetch_ran = child(trace, fetch_started, "RunActivity:fetch_billing_document")
    assert any(
        url_of(s).startswith(stack.settings.billing_url)
        for s in trace
        if s.parent is not None and s.parent.span_id == fetch_ran.context.span_id
    )

    # The correlation id on every span; the business ids where they are known; no names.
    unmarked = [s.name for s in trace if (s.attributes or {}).get(CORRELATION_ID) != correlation_id]
    assert not unmarked, f"spans without the correlation id: {unmarked}"
    for span in (request, start, run, post_ran, *erp_calls):
        attributes = span.attributes or {}
        assert attributes.get("ledgerbridge.customer_id") == customer_id, span.name
        assert attributes.get("ledgerbridge.subscription_id") == subscription_id, span.name
    for span in (post_ran, *erp_calls):
        assert (span.attributes or {}).get("ledgerbridge.invoice_id") == invoice_id, span.name
    values = [str(v) for s in trace for v in (s.attributes or {}).values()]
    assert not [v for v in values if CUSTOMER_NAME in v]
