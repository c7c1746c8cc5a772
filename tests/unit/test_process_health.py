"""Process health: what the workers record of each system, and the summary the API answers."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, Counter

from adapters.system_health import (
    SystemObservation,
    call_totals,
    merge,
    observations,
)
from starters.api.health import (
    Counts,
    Running,
    exception_origin,
    outage_summary,
    summarize,
)
from starters.cli import process_health_lines

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@dataclass
class Row:
    system: str
    last_success_at: datetime | None = None
    last_failure_at: datetime | None = None
    last_failure: str | None = None
    failing_since: datetime | None = None


def ago(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


# --- what the workers record ---------------------------------------------------------------


def test_call_totals_sum_the_counter_by_system_and_outcome() -> None:
    counter = Counter("calls", "", ["system", "operation", "outcome"], registry=CollectorRegistry())
    counter.labels("erp", "create", "ok").inc(2)
    counter.labels("erp", "read", "ok").inc()
    counter.labels("erp", "read", "unreachable").inc()
    assert call_totals(counter) == {("erp", "ok"): 3.0, ("erp", "unreachable"): 1.0}


def test_only_systems_whose_counts_moved_are_observed() -> None:
    before = {("erp", "ok"): 3.0, ("billing", "ok"): 1.0}
    after = {("erp", "ok"): 3.0, ("erp", "unreachable"): 2.0, ("billing", "ok"): 2.0}
    assert observations(before, after, NOW) == [
        SystemObservation("billing", NOW, answered=True, failure=None),
        SystemObservation("erp", NOW, answered=False, failure="unreachable"),
    ]


def test_a_refusal_is_an_answer_not_a_failure() -> None:
    seen = observations({}, {("billing", "rejected"): 1.0}, NOW)
    assert seen == [SystemObservation("billing", NOW, answered=True, failure=None)]


def test_a_failure_starts_an_outage_and_an_answer_ends_it() -> None:
    row = Row("erp", last_success_at=ago(30))
    merge(row, SystemObservation("erp", ago(12), answered=False, failure="unreachable"))
    merge(row, SystemObservation("erp", ago(5), answered=False, failure="timeout"))
    assert (row.failing_since, row.last_failure_at, row.last_failure) == (
        ago(12),
        ago(5),
        "timeout",
    )
    merge(row, SystemObservation("erp", NOW, answered=True, failure=None))
    assert (row.failing_since, row.last_success_at) == (None, NOW)


def test_a_late_failure_report_does_not_reopen_an_outage_another_worker_saw_end() -> None:
    row = Row("erp", last_success_at=ago(1))
    merge(row, SystemObservation("erp", ago(2), answered=False, failure="unreachable"))
    assert row.failing_since is None
    assert row.last_failure_at == ago(2)


def test_naive_timestamps_from_sqlite_are_read_as_utc() -> None:
    row = Row("erp", last_success_at=ago(1).replace(tzinfo=None))
    merge(row, SystemObservation("erp", NOW, answered=False, failure="unreachable"))
    assert row.failing_since == NOW


# --- the summary ---------------------------------------------------------------------------


def test_an_outage_says_what_it_holds_up_by_process() -> None:
    waiting = [
        *(
            Running(f"subscription/sub_{i}", "amendment_to_erp", "posting", ago(20))
            for i in range(2)
        ),
        Running("subscription/sub_9", "amendment_to_erp", "waiting_for_erp", ago(40)),
        Running("credit/c1/r1", "case_to_credit", "posting", ago(15)),
        Running("credit/c2/r1", "case_to_credit", "applying", ago(15)),  # billing, not the ERP
        Running("subscription/sub_5", "amendment_to_erp", "waiting", ago(90)),  # idle: not counted
    ]
    rows = {"erp": Row("erp", ago(30), ago(1), "unreachable", ago(12))}
    health = summarize({}, waiting, [], rows, NOW)
    (outage,) = health.outages
    assert outage.holding_up == {"amendment_to_erp": 3, "case_to_credit": 1}
    assert outage.summary == "ERP unreachable for 12 min: 3 amendments and 1 credit waiting"
    states = {s.system: s.state for s in health.systems}
    assert states == {"billing": "unknown", "support": "unknown", "erp": "failing"}
    amendments = health.processes[0]
    assert amendments.process == "amendment_to_erp"
    assert amendments.waiting_on == {"erp": 3}
    assert amendments.oldest_waiting is not None
    assert amendments.oldest_waiting.workflow_id == "subscription/sub_9"


def test_blocked_work_is_named_with_the_exceptions_that_block_it() -> None:
    waiting = [
        Running("subscription/sub_1", "amendment_to_erp", "blocked", ago(60)),
        Running("exception/subscription/sub_1/2", "finance_exception", "open", ago(60)),
    ]
    exceptions = ["exception/subscription/sub_1/2", "exception/credit/c9/r1/1"]
    health = summarize({}, waiting, exceptions, {}, NOW)
    amendments = health.processes[0]
    assert amendments.blocked == 1
    assert amendments.blocked_items[0].exception_ids == ["exception/subscription/sub_1/2"]
    exceptions_state = next(p for p in health.processes if p.process == "finance_exception")
    assert exceptions_state.waiting_on == {"finance": 1}
    assert health.outages == []


def test_counts_are_reported_per_process_and_missing_ones_are_zero() -> None:
    health = summarize({"case_to_credit": Counts(4, 10, 1)}, [], [], {}, NOW)
    credits = next(p for p in health.processes if p.process == "case_to_credit")
    assert (credits.in_flight, credits.done_24h, credits.failed_24h) == (4, 10, 1)
    recon = next(p for p in health.processes if p.process == "reconciliation")
    assert (recon.in_flight, recon.done_24h, recon.failed_24h, recon.oldest_waiting) == (
        0,
        0,
        0,
        None,
    )


def test_an_answering_system_is_ok_and_holds_nothing_up() -> None:
    rows = {"billing": Row("billing", ago(1), ago(50), "rate_limited", None)}
    waiting = [Running("credit/c2/r1", "case_to_credit", "applying", ago(15))]
    health = summarize({}, waiting, [], rows, NOW)
    assert health.systems[0].state == "ok"
    assert health.outages == []


def test_outage_summary_wording() -> None:
    assert outage_summary("billing", "rate_limited", 5, {}) == (
        "Billing throttling (429) for 5 min: nothing waiting on it"
    )
    assert outage_summary("support", None, 1, {"case_to_credit": 1, "account_sync": 2}) == (
        "Support failing for 1 min: 1 credit and 2 account syncs waiting"
    )


def test_exception_ids_name_the_workflow_that_opened_them() -> None:
    assert exception_origin("exception/credit/c1/r1/3") == "credit/c1/r1"


def test_the_cli_table_names_blocked_work_and_the_outage() -> None:
    waiting = [
        Running("subscription/sub_1", "amendment_to_erp", "blocked", ago(60)),
        Running("subscription/sub_2", "amendment_to_erp", "posting", ago(3)),
    ]
    rows = {"erp": Row("erp", ago(30), ago(1), "unavailable", ago(4))}
    body = summarize({}, waiting, ["exception/subscription/sub_1/1"], rows, NOW).model_dump(
        mode="json"
    )
    text = "\n".join(process_health_lines(body))
    assert "blocked: subscription/sub_1 by exception/subscription/sub_1/1" in text
    assert "ERP unavailable (503) for 4 min: 1 amendment waiting" in text
    assert "1 on erp, 1 on finance" in text


def test_an_outage_names_the_work_it_holds_up_oldest_first() -> None:
    waiting = [
        Running("subscription/new", "amendment_to_erp", "posting", ago(1)),
        Running("credit/old/r1", "case_to_credit", "posting", ago(30)),
        Running("credit/c3/r1", "case_to_credit", "applying", ago(50)),  # billing's
    ]
    rows = {"erp": Row("erp", None, ago(1), "timeout", ago(2))}
    (outage,) = summarize({}, waiting, [], rows, NOW).outages
    assert outage.waiting == ["credit/old/r1", "subscription/new"]
    assert outage.summary == "ERP timing out for 2 min: 1 amendment and 1 credit waiting"
