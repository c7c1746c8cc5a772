"""Every business metric ledgerbridge exposes, defined here and only here (prometheus-client).

Names follow Prometheus conventions: the `ledgerbridge_` prefix, counters end in `_total`,
durations in `_seconds`. Label values are bounded: systems, operations, outcomes, processes,
kinds, currencies and classes, never ids, names or emails (each free-form value passes
through `bounded` or `code`, and tests/unit/test_metrics.py lists every metric and label).

Counted where the work happens: the webhook route (starters/api), each adapter's one HTTP
funnel (`adapter_call`), the activities (postings, credits, reconciliation) — never in
workflow code, which replays. The Temporal SDK's own metrics are the SDK's (see workers/).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from temporalio.client import Client

from adapters.errors import (
    AdapterError,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    RateLimitedError,
    RejectedError,
)
from canonical.ledger import MANUAL_POSTING_PREFIX, REJECTED_POSTING_PREFIX
from canonical.reconciliation import CLASSES, MATCHED, MATCHED_TO_JOURNAL

# A `_created` series per counter doubles what is scraped and says nothing we use.
disable_created_metrics()

PREFIX = "ledgerbridge_"
OTHER = "other"
_CODE = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")

# --- ingress ------------------------------------------------------------------------------

WEBHOOK_SOURCES = ("billing", "support")
WEBHOOK_OUTCOMES = ("accepted", "duplicate", "ignored", "refused", "unavailable", "error")
WEBHOOK_REASONS = (
    "none",  # accepted, duplicate, ignored
    "signature",
    "malformed",
    "api_version",
    "too_large",
    "temporal",  # unavailable: Temporal did not accept the work (the sender retries)
    "support",  # unavailable: support's ticket could not be read
    OTHER,
)

WEBHOOKS_RECEIVED = Counter(
    "ledgerbridge_webhooks_received",
    "Webhook deliveries received, by source (billing, support).",
    ["source"],
)
WEBHOOKS_ANSWERED = Counter(
    "ledgerbridge_webhooks_answered",
    "Webhook deliveries answered, by source, outcome (accepted, duplicate, ignored, refused, "
    "unavailable, error) and reason (why refused or unavailable; none otherwise).",
    ["source", "outcome", "reason"],
)
WEBHOOK_ACK_SECONDS = Histogram(
    "ledgerbridge_webhook_acknowledgement_seconds",
    "From a webhook delivery's arrival to its answer (2xx only once Temporal accepted it).",
    ["source", "outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
REPLAY_ORIGINS = ("api", "reconciliation")
REPLAYS = Counter(
    "ledgerbridge_replays",
    "Billing events or postings fed through the normal path again, by origin (api: "
    "/v1/events:replay; reconciliation: healing a missing posting) and outcome.",
    ["origin", "outcome"],
)

# --- postings and credits -----------------------------------------------------------------

PROCESSES = (
    "amendment_to_erp",
    "case_to_credit",
    "account_sync",
    "reconciliation",
    "finance_exception",
    OTHER,
)
_PROCESS_OF_PREFIX = {
    "subscription": "amendment_to_erp",
    "customer-ledger": "amendment_to_erp",
    "credit": "case_to_credit",
    "account": "account_sync",
    "recon": "reconciliation",
    "exception": "finance_exception",
}
DOCUMENT_KINDS = ("invoice", "credit_note", "payment", "refund", OTHER)

DOCUMENTS_POSTED = Counter(
    "ledgerbridge_erp_documents_posted",
    "ERP documents posted and journaled, by business process, kind and currency.",
    ["process", "kind", "currency"],
)
BILLING_TO_ERP_SECONDS = Histogram(
    "ledgerbridge_billing_event_to_erp_posting_seconds",
    "From billing's event time to the ERP document being journaled, by kind.",
    ["kind"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600, 24 * 3600),
)
CREDIT_OUTCOMES = ("applied", "resolved_manually", "rejected", "exception", OTHER)
_CREDIT_OUTCOME_OF_TAG = {
    # The first tag found wins: a manually resolved credit is also tagged credit_applied.
    "credit_resolved_manually": "resolved_manually",
    "credit_applied": "applied",
    "credit_rejected": "rejected",
    "credit_exception": "exception",
}
CREDITS = Counter(
    "ledgerbridge_credits",
    "Support credits whose outcome was written back on the ticket, by outcome.",
    ["outcome"],
)

# --- external systems ---------------------------------------------------------------------

SYSTEMS = ("billing", "support", "erp")
CALL_OUTCOMES = (
    "ok",
    "rate_limited",  # 429
    "unavailable",  # 503
    "server_error",  # other 5xx
    "timeout",  # no answer in time
    "lost_answer",  # the request went out, the connection closed before an answer
    "unreachable",  # no connection
    "rejected",  # business rule or malformed request (4xx)
    "not_found",
    "conflict",
    "unauthorized",
    "error",  # anything else (an answer we could not read)
)
ADAPTER_CALLS = Counter(
    "ledgerbridge_adapter_calls",
    "Calls to external systems, by system, operation and outcome; a timeout or a lost answer "
    "is retried by the activity (writes look up before they write again).",
    ["system", "operation", "outcome"],
)
ADAPTER_CALL_SECONDS = Histogram(
    "ledgerbridge_adapter_call_duration_seconds",
    "Duration of calls to external systems, by system.",
    ["system"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)

# --- reconciliation -----------------------------------------------------------------------

AGREEMENT_CLASSES: tuple[str, ...] = (MATCHED, MATCHED_TO_JOURNAL)
DIFFERENCE_CLASSES: tuple[str, ...] = tuple(c for c in CLASSES if c not in AGREEMENT_CLASSES)
RECON_DIFFERENCES = Counter(
    "ledgerbridge_reconciliation_differences",
    "Differences found by reconciliation runs, by classification.",
    ["classification"],
)
RECON_LAST_RUN_DIFFERENCES = Gauge(
    "ledgerbridge_reconciliation_last_run_differences",
    "Differences the last reconciliation run classified in this process, by classification.",
    ["classification"],
)


# --- bounded label values -----------------------------------------------------------------


def bounded(value: str | None, allowed: Iterable[str]) -> str:
    """`value` when it is one of `allowed`, else `other`: no label can grow without bound."""
    return value if value is not None and value in allowed else OTHER


def code(value: str | None) -> str:
    """A name from our code (an operation, a classification): lower-case, short, no spaces or
    `@`; anything else (an id, an email) becomes `other`."""
    return value if value is not None and _CODE.match(value) else OTHER


def currency(value: str | None) -> str:
    return value if value is not None and _CURRENCY.match(value) else OTHER


def process_of(workflow_id: str | None) -> str:
    """The business process a workflow id belongs to (ids are business keys: `credit/…`)."""
    prefix = (workflow_id or "").split("/", 1)[0]
    return _PROCESS_OF_PREFIX.get(prefix, OTHER)


# --- counting -----------------------------------------------------------------------------


def webhook_answered(source: str, outcome: str, reason: str, seconds: float) -> None:
    source, outcome = bounded(source, WEBHOOK_SOURCES), bounded(outcome, WEBHOOK_OUTCOMES)
    WEBHOOKS_ANSWERED.labels(source, outcome, bounded(reason, WEBHOOK_REASONS)).inc()
    WEBHOOK_ACK_SECONDS.labels(source, outcome).observe(seconds)


def call_outcome(error: BaseException) -> str:
    """The outcome of a failed call, from the adapter error taxonomy and its cause."""
    if isinstance(error, RateLimitedError) or getattr(error, "status", None) == 429:
        return "rate_limited"
    status = getattr(error, "status", None)
    if status == 503:
        return "unavailable"
    if isinstance(status, int) and status >= 500:
        return "server_error"
    transport = _transport_cause(error)
    if isinstance(transport, httpx.TimeoutException):
        return "timeout"
    if isinstance(transport, httpx.ConnectError):
        return "unreachable"
    if transport is not None:
        return "lost_answer"
    for kind, outcome in (
        (NotFoundError, "not_found"),
        (ConflictError, "conflict"),
        (AuthenticationError, "unauthorized"),
        (RejectedError, "rejected"),
    ):
        if isinstance(error, kind):
            return outcome
    return "error"


def _transport_cause(error: BaseException) -> httpx.TransportError | None:
    """The httpx transport error behind an adapter error (through the stripe SDK's too)."""
    seen: BaseException | None = error
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, httpx.TransportError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


@contextmanager
def adapter_call(system: str, operation: str) -> Iterator[None]:
    """Count one call to an external system by its outcome, and time it."""
    system, operation = bounded(system, SYSTEMS), code(operation)
    started = time.perf_counter()
    try:
        yield
    except BaseException as err:
        if isinstance(err, AdapterError | httpx.HTTPError | OSError):
            ADAPTER_CALLS.labels(system, operation, call_outcome(err)).inc()
        raise
    else:
        ADAPTER_CALLS.labels(system, operation, "ok").inc()
    finally:
        ADAPTER_CALL_SECONDS.labels(system).observe(time.perf_counter() - started)


def document_posted(
    workflow_id: str,
    kind: str,
    currency_code: str,
    erp_document_id: str,
    billing_event_created: int | None,
) -> None:
    """A journaled ERP document; what finance rejected or posted by hand is journaled too
    (under `rejected:`/`manual:`) but was not posted by us, so it is not counted."""
    if erp_document_id.startswith((REJECTED_POSTING_PREFIX, MANUAL_POSTING_PREFIX)):
        return
    kind = bounded(kind, DOCUMENT_KINDS)
    DOCUMENTS_POSTED.labels(process_of(workflow_id), kind, currency(currency_code)).inc()
    if billing_event_created is not None:
        BILLING_TO_ERP_SECONDS.labels(kind).observe(max(0.0, time.time() - billing_event_created))


def credit_outcome(tags: Iterable[str]) -> None:
    tags = set(tags)
    outcome = next((o for tag, o in _CREDIT_OUTCOME_OF_TAG.items() if tag in tags), OTHER)
    CREDITS.labels(outcome).inc()


def replayed(origin: str, outcome: str) -> None:
    REPLAYS.labels(bounded(origin, REPLAY_ORIGINS), code(outcome)).inc()


def reconciliation_classified(counts: dict[str, int]) -> None:
    """A classified run's differences: every class but the two that say "in agreement"."""
    RECON_LAST_RUN_DIFFERENCES.clear()
    for classification in DIFFERENCE_CLASSES:
        RECON_LAST_RUN_DIFFERENCES.labels(classification).set(counts.get(classification, 0))
    for classification, count in counts.items():
        label = bounded(classification, DIFFERENCE_CLASSES)
        if count and classification not in AGREEMENT_CLASSES:
            RECON_DIFFERENCES.labels(label).inc(count)


# --- work waiting on finance, read at scrape time -----------------------------------------

# ProcessStatus of a credit waiting for finance's approval (workflows/case_to_credit.py).
APPROVAL_STATUSES = ("awaiting_approval", "reminded", "escalated")
OPEN_EXCEPTIONS = "BusinessProcess = 'finance_exception' AND ExecutionStatus = 'Running'"
WAITING_APPROVALS = (
    "BusinessProcess = 'case_to_credit' AND ExecutionStatus = 'Running' AND ProcessStatus IN ("
    + ", ".join(f"'{s}'" for s in APPROVAL_STATUSES)
    + ")"
)
# Past this many open items per kind the gauges say so (`…_truncated`) rather than page on.
WAITING_LIMIT = 2000


@dataclass
class Waiting:
    """Per process: how many items wait and the oldest one's start (unix seconds)."""

    count: dict[str, int] = field(default_factory=dict)
    oldest: dict[str, float] = field(default_factory=dict)
    truncated: bool = False

    def add(self, process: str, started: float) -> None:
        self.count[process] = self.count.get(process, 0) + 1
        self.oldest[process] = min(self.oldest.get(process, started), started)


@dataclass
class WaitingSnapshot:
    exceptions: Waiting
    approvals: Waiting


async def read_waiting_work(client: Client) -> WaitingSnapshot:
    """Open finance exceptions by the process that opened them (their ids name it:
    `exception/{origin}/{n}`) and credits waiting for approval, from Temporal visibility
    alone: no workflow is queried, so a scrape costs two list calls."""
    exceptions, approvals = Waiting(), Waiting()
    for query, waiting, origin in (
        (OPEN_EXCEPTIONS, exceptions, lambda wid: process_of(wid.split("/", 1)[-1])),
        (WAITING_APPROVALS, approvals, process_of),
    ):
        seen = 0
        async for execution in client.list_workflows(query, limit=WAITING_LIMIT + 1):
            seen += 1
            if seen > WAITING_LIMIT:
                waiting.truncated = True
                break
            waiting.add(origin(execution.id), execution.start_time.timestamp())
    return WaitingSnapshot(exceptions, approvals)


class WaitingWorkCollector(Collector):
    """Gauges of the work waiting on finance, read when scraped; `refresh` (awaited before a
    scrape) reads at most once per `ttl` seconds, so a scrape storm cannot hammer Temporal."""

    def __init__(
        self,
        read: Callable[[], Awaitable[WaitingSnapshot]],
        ttl: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self._ttl = ttl
        self._clock = clock
        self._lock = asyncio.Lock()
        self._snapshot: WaitingSnapshot | None = None
        self._read_at: float | None = None
        self._up = 0.0
        self.reads = 0

    async def refresh(self) -> None:
        if self._fresh():
            return
        async with self._lock:
            if self._fresh():  # another scrape read it while this one waited
                return
            self.reads += 1
            try:
                self._snapshot = await self._read()
                self._up = 1.0
            except Exception:
                self._up = 0.0
            self._read_at = self._clock()

    def _fresh(self) -> bool:
        return self._read_at is not None and self._clock() - self._read_at < self._ttl

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "ledgerbridge_waiting_work_read_ok",
            "1 when the last read of waiting work from Temporal succeeded.",
            value=self._up,
        )
        yield up
        snapshot = self._snapshot
        now = time.time()
        kinds: list[tuple[str, str, Waiting | None]] = [
            ("finance_exceptions_open", "Open finance exceptions", None),
            ("approvals_waiting", "Credits waiting for finance's approval", None),
        ]
        if snapshot is not None:
            kinds = [
                (n, w, s)
                for (n, w, _), s in zip(
                    kinds, (snapshot.exceptions, snapshot.approvals), strict=True
                )
            ]
        for name, what, waiting in kinds:
            count = GaugeMetricFamily(
                f"{PREFIX}{name}", f"{what}, by business process.", labels=["process"]
            )
            oldest = GaugeMetricFamily(
                f"{PREFIX}{name}_oldest_age_seconds",
                f"{what}: age of the oldest, by business process.",
                labels=["process"],
            )
            truncated = GaugeMetricFamily(
                f"{PREFIX}{name}_truncated",
                f"1 when more than {WAITING_LIMIT} were open and the counts stop there.",
                value=float(bool(waiting and waiting.truncated)),
            )
            for process in PROCESSES:
                n = waiting.count.get(process, 0) if waiting else 0
                count.add_metric([process], n)
                started = waiting.oldest.get(process) if waiting else None
                oldest.add_metric([process], max(0.0, now - started) if started else 0.0)
            yield from (count, oldest, truncated)


# --- exposition ---------------------------------------------------------------------------


class _Forward(Collector):
    """Everything of the process-wide registry, inside a registry of one exposition."""

    def __init__(self, source: CollectorRegistry) -> None:
        self._source = source

    def collect(self) -> Iterator[Metric]:
        yield from self._source.collect()


def registry_with(*collectors: Collector) -> CollectorRegistry:
    """A registry of the process's metrics plus `collectors` (one app's scrape-time gauges),
    so two apps in one process (tests) never register the same collector twice."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Forward(REGISTRY))
    for collector in collectors:
        registry.register(collector)
    return registry


def exposition(registry: CollectorRegistry = REGISTRY) -> tuple[bytes, str]:
    """The text exposition and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_samples(text: str) -> Samples:
    """A scraped exposition's samples, by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples that carry `labels` (0 when none)."""
    wanted = set(labels.items())
    return sum(v for (n, found), v in samples.items() if n == name and wanted <= found)


def sample(name: str, labels: dict[str, str] | None = None) -> float:
    """A sample's current value in this process (0 when never counted): what tests read."""
    value: Any = REGISTRY.get_sample_value(name, labels or {})
    return float(value or 0.0)


__all__ = [
    "ADAPTER_CALLS",
    "CALL_OUTCOMES",
    "WaitingSnapshot",
    "WaitingWorkCollector",
    "adapter_call",
    "bounded",
    "call_outcome",
    "code",
    "credit_outcome",
    "document_posted",
    "exposition",
    "parse_samples",
    "process_of",
    "read_waiting_work",
    "reconciliation_classified",
    "registry_with",
    "replayed",
    "sample",
    "total",
    "webhook_answered",
]
