"""The metrics module: every metric listed with its labels (Prometheus conventions, nothing
unbounded), each counting helper, and the waiting-work gauges' scrape-time cache."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from adapters import metrics
from adapters.errors import (
    AdapterError,
    AuthenticationError,
    ConflictError,
    NotFoundError,
    RateLimitedError,
    RejectedError,
    TransientError,
    ValidationError,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"

# Every metric ledgerbridge defines, with its type and labels: a new one is added here, to
# docs/operations.md, and passes the checks below.
EXPECTED = {
    "ledgerbridge_webhooks_received": ("counter", ("source",)),
    "ledgerbridge_webhooks_answered": ("counter", ("source", "outcome", "reason")),
    "ledgerbridge_webhook_acknowledgement_seconds": ("histogram", ("source", "outcome")),
    "ledgerbridge_replays": ("counter", ("origin", "outcome")),
    "ledgerbridge_erp_documents_posted": ("counter", ("process", "kind", "currency")),
    "ledgerbridge_billing_event_to_erp_posting_seconds": ("histogram", ("kind",)),
    "ledgerbridge_credits": ("counter", ("outcome",)),
    "ledgerbridge_adapter_calls": ("counter", ("system", "operation", "outcome")),
    "ledgerbridge_adapter_call_duration_seconds": ("histogram", ("system",)),
    "ledgerbridge_reconciliation_differences": ("counter", ("classification",)),
    "ledgerbridge_reconciliation_last_run_differences": ("gauge", ("classification",)),
    # read at scrape time from Temporal (WaitingWorkCollector)
    "ledgerbridge_waiting_work_read_ok": ("gauge", ()),
    "ledgerbridge_finance_exceptions_open": ("gauge", ("process",)),
    "ledgerbridge_finance_exceptions_open_oldest_age_seconds": ("gauge", ("process",)),
    "ledgerbridge_finance_exceptions_open_truncated": ("gauge", ()),
    "ledgerbridge_approvals_waiting": ("gauge", ("process",)),
    "ledgerbridge_approvals_waiting_oldest_age_seconds": ("gauge", ("process",)),
    "ledgerbridge_approvals_waiting_truncated": ("gauge", ()),
}
# What a label must never be named for: it would hold ids, people or free text.
UNBOUNDED_LABEL = re.compile(r"id$|_id|customer|email|name|user|workflow|reference|case|event")
SNAKE = re.compile(r"^[a-z][a-z0-9_]*$")


def _defined() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Every ledgerbridge metric of a scrape-ready registry, as declared (type, labels)."""

    async def nothing() -> metrics.WaitingSnapshot:
        return metrics.WaitingSnapshot(metrics.Waiting(), metrics.Waiting())

    registry = metrics.registry_with(metrics.WaitingWorkCollector(nothing))
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for family in registry.collect():
        if family.name.startswith(metrics.PREFIX):
            declared = getattr(family, "_labelnames", None)
            labels = tuple(declared) if declared is not None else ()
            if not labels and family.samples:
                labels = tuple(k for k in family.samples[0].labels if k != "le")
            found[family.name] = (family.type, labels)
    return found


def _declared_labels() -> dict[str, tuple[str, ...]]:
    """Labels of the metrics defined in the module (they show no sample before first use)."""
    defined = {}
    for value in vars(metrics).values():
        name = getattr(value, "_name", None)
        if isinstance(name, str) and name.startswith(metrics.PREFIX):
            defined[name] = tuple(value._labelnames)
    return defined


def test_every_metric_is_listed_with_its_labels_and_nothing_else_is_defined() -> None:
    found = _defined()
    declared = _declared_labels()
    assert set(found) == set(EXPECTED)
    for name, (kind, labels) in EXPECTED.items():
        assert found[name][0] == kind, name
        assert declared.get(name, found[name][1]) == labels, name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_metric_name_follows_prometheus_conventions(name: str) -> None:
    kind, labels = EXPECTED[name]
    assert name.startswith("ledgerbridge_") and SNAKE.match(name)
    assert not name.endswith("_total")  # the client adds it to counters' samples
    if kind == "histogram" or "age" in name:
        assert name.endswith("_seconds"), "durations in the base unit"
    for unit in ("_ms", "_milliseconds", "_minutes", "_hours"):
        assert unit not in name
    for label in labels:
        assert SNAKE.match(label) and not label.startswith("__")
        assert not UNBOUNDED_LABEL.search(label), f"{name}{{{label}}} would be unbounded"


def test_every_metric_is_documented_in_operations() -> None:
    text = DOCS.read_text()
    missing = [n for n in EXPECTED if n not in text]
    assert not missing


def test_counters_are_exposed_with_total_and_without_created_series() -> None:
    metrics.replayed("api", "accepted")
    text = metrics.exposition()[0].decode()
    assert 'ledgerbridge_replays_total{origin="api",outcome="accepted"}' in text
    assert "ledgerbridge_replays_created" not in text
    # and the exposition parses as Prometheus text
    names = {f.name for f in text_string_to_metric_families(text)}
    assert "ledgerbridge_replays" in names


@pytest.mark.parametrize(
    "value", ["jane@example.com", "Jane Doe", "cus_ABC123", "x" * 80, "", None, "a/b", "DROP"]
)
def test_free_text_never_becomes_a_label_value(value: str | None) -> None:
    assert metrics.code(value) == "other"
    assert metrics.bounded(value, metrics.SYSTEMS) == "other"
    assert metrics.currency(value) == "other"


def test_names_from_our_code_stay_label_values() -> None:
    assert metrics.code("model.account.invoice.create") == "model.account.invoice.create"
    assert metrics.code("create_credit_note") == "create_credit_note"
    assert metrics.currency("EUR") == "EUR"


@pytest.mark.parametrize(
    ("workflow_id", "process"),
    [
        ("subscription/sub_1", "amendment_to_erp"),
        ("customer-ledger/cus_1", "amendment_to_erp"),
        ("credit/42/goodwill-1", "case_to_credit"),
        ("account/cus_1", "account_sync"),
        ("recon/2026-11-26", "reconciliation"),
        ("exception/credit/42/x/1", "finance_exception"),
        ("jane@example.com", "other"),
        ("", "other"),
    ],
)
def test_the_process_of_a_workflow_id_is_its_business_key_prefix(
    workflow_id: str, process: str
) -> None:
    assert metrics.process_of(workflow_id) == process


def _err(cls: type[AdapterError], status: int | None = None, **kw: object) -> AdapterError:
    return cls("x", system="erp", operation="op", status=status, **kw)  # type: ignore[arg-type]


def _caused(cause: BaseException) -> AdapterError:
    try:
        try:
            raise cause
        except BaseException as err:
            raise TransientError("no answer", system="erp", operation="op") from err
    except TransientError as wrapped:
        return wrapped


REQUEST = httpx.Request("POST", "http://erp/rpc/")


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (RateLimitedError("x", retry_after=1, system="erp", operation="op"), "rate_limited"),
        (_err(TransientError, 503), "unavailable"),
        (_err(TransientError, 502), "server_error"),
        (_caused(httpx.ReadTimeout("slow", request=REQUEST)), "timeout"),
        (_caused(httpx.ConnectError("refused", request=REQUEST)), "unreachable"),
        (_caused(httpx.RemoteProtocolError("closed", request=REQUEST)), "lost_answer"),
        (_caused(httpx.ReadError("reset", request=REQUEST)), "lost_answer"),
        (_err(ValidationError, 400), "rejected"),
        (_err(RejectedError, 400), "rejected"),
        (_err(NotFoundError, 404), "not_found"),
        (_err(ConflictError, 409), "conflict"),
        (_err(AuthenticationError, 401), "unauthorized"),
        (_err(TransientError), "error"),
        (_err(AdapterError), "error"),
    ],
)  # fmt: skip
def test_a_failed_call_is_counted_by_what_went_wrong(error: AdapterError, outcome: str) -> None:
    assert metrics.call_outcome(error) == outcome
    assert outcome in metrics.CALL_OUTCOMES


def test_adapter_call_counts_ok_and_failures_and_lets_the_error_through() -> None:
    labels = {"system": "erp", "operation": "unit.metrics.op"}
    ok = metrics.sample("ledgerbridge_adapter_calls_total", {**labels, "outcome": "ok"})
    limited = metrics.sample(
        "ledgerbridge_adapter_calls_total", {**labels, "outcome": "rate_limited"}
    )
    with metrics.adapter_call("erp", "unit.metrics.op"):
        pass
    with (
        pytest.raises(RateLimitedError),
        metrics.adapter_call("erp", "unit.metrics.op"),
    ):
        raise RateLimitedError("slow down", retry_after=2, system="erp", operation="op", status=429)
    assert metrics.sample("ledgerbridge_adapter_calls_total", {**labels, "outcome": "ok"}) == ok + 1
    assert (
        metrics.sample("ledgerbridge_adapter_calls_total", {**labels, "outcome": "rate_limited"})
        == limited + 1
    )


def test_a_posted_document_is_counted_by_process_kind_and_currency_with_its_latency() -> None:
    labels = {"process": "case_to_credit", "kind": "credit_note", "currency": "JPY"}
    before = metrics.sample("ledgerbridge_erp_documents_posted_total", labels)
    latency = metrics.sample(
        "ledgerbridge_billing_event_to_erp_posting_seconds_count", {"kind": "credit_note"}
    )
    metrics.document_posted("credit/42/r1", "credit_note", "JPY", "17", int(time.time()) - 30)
    metrics.document_posted("credit/42/r1", "credit_note", "JPY", "rejected:exception/x/1", None)
    metrics.document_posted("credit/42/r1", "credit_note", "JPY", "manual:INV-9", None)
    assert metrics.sample("ledgerbridge_erp_documents_posted_total", labels) == before + 1
    assert (
        metrics.sample(
            "ledgerbridge_billing_event_to_erp_posting_seconds_count", {"kind": "credit_note"}
        )
        == latency + 1
    )


@pytest.mark.parametrize(
    ("tags", "outcome"),
    [
        (["credit_applied"], "applied"),
        (["credit_applied", "credit_resolved_manually"], "resolved_manually"),
        (["credit_rejected"], "rejected"),
        (["credit_exception"], "exception"),
        (["something_else"], "other"),
    ],
)
def test_a_credit_is_counted_by_the_outcome_its_ticket_tags_say(
    tags: list[str], outcome: str
) -> None:
    before = metrics.sample("ledgerbridge_credits_total", {"outcome": outcome})
    metrics.credit_outcome(tags)
    assert metrics.sample("ledgerbridge_credits_total", {"outcome": outcome}) == before + 1


def test_reconciliation_counts_differences_and_not_agreements() -> None:
    before = metrics.sample(
        "ledgerbridge_reconciliation_differences_total", {"classification": "missing_in_erp"}
    )
    metrics.reconciliation_classified({"matched": 40, "missing_in_erp": 2, "tax_differs": 0})
    assert (
        metrics.sample(
            "ledgerbridge_reconciliation_differences_total", {"classification": "missing_in_erp"}
        )
        == before + 2
    )
    assert (
        REGISTRY.get_sample_value(
            "ledgerbridge_reconciliation_differences_total", {"classification": "matched"}
        )
        is None
    )
    last = "ledgerbridge_reconciliation_last_run_differences"
    assert metrics.sample(last, {"classification": "missing_in_erp"}) == 2
    assert REGISTRY.get_sample_value(last, {"classification": "tax_differs"}) == 0
    metrics.reconciliation_classified({"matched": 42})
    assert metrics.sample(last, {"classification": "missing_in_erp"}) == 0


# --- waiting work ---------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _snapshot() -> metrics.WaitingSnapshot:
    exceptions, approvals = metrics.Waiting(), metrics.Waiting()
    exceptions.add("case_to_credit", time.time() - 7200)
    exceptions.add("case_to_credit", time.time() - 60)
    exceptions.add("amendment_to_erp", time.time() - 30)
    approvals.add("case_to_credit", time.time() - 600)
    return metrics.WaitingSnapshot(exceptions, approvals)


def _scraped(collector: metrics.WaitingWorkCollector) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("process", "")): s.value
        for family in collector.collect()
        for s in family.samples
    }


async def test_waiting_work_is_read_once_per_ttl_however_many_scrapes_arrive() -> None:
    reads = 0

    async def read() -> metrics.WaitingSnapshot:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.01)
        return _snapshot()

    clock = Clock()
    collector = metrics.WaitingWorkCollector(read, ttl=15, clock=clock)
    await asyncio.gather(*(collector.refresh() for _ in range(20)))
    assert reads == 1
    clock.now += 14
    await collector.refresh()
    assert reads == 1
    clock.now += 2
    await collector.refresh()
    assert reads == 2


async def test_waiting_work_gauges_count_by_process_with_the_oldest_age() -> None:
    async def read() -> metrics.WaitingSnapshot:
        return _snapshot()

    collector = metrics.WaitingWorkCollector(read)
    await collector.refresh()
    seen = _scraped(collector)
    assert seen[("ledgerbridge_waiting_work_read_ok", "")] == 1
    assert seen[("ledgerbridge_finance_exceptions_open", "case_to_credit")] == 2
    assert seen[("ledgerbridge_finance_exceptions_open", "amendment_to_erp")] == 1
    assert seen[("ledgerbridge_finance_exceptions_open", "reconciliation")] == 0
    oldest = seen[("ledgerbridge_finance_exceptions_open_oldest_age_seconds", "case_to_credit")]
    assert 7190 < oldest < 7300
    assert seen[("ledgerbridge_approvals_waiting", "case_to_credit")] == 1


async def test_a_failed_read_says_so_and_keeps_the_last_answer() -> None:
    answers: list[metrics.WaitingSnapshot | Exception] = [_snapshot(), RuntimeError("down")]

    async def read() -> metrics.WaitingSnapshot:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    clock = Clock()
    collector = metrics.WaitingWorkCollector(read, ttl=1, clock=clock)
    await collector.refresh()
    clock.now += 2
    await collector.refresh()
    seen = _scraped(collector)
    assert seen[("ledgerbridge_waiting_work_read_ok", "")] == 0
    assert seen[("ledgerbridge_finance_exceptions_open", "case_to_credit")] == 2
