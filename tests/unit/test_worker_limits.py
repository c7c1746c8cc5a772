"""Worker tuning: LEDGERBRIDGE_WORKER_* settings become the options of each queue's Worker."""

import pytest

from adapters.settings import Settings
from canonical.erp_routing import (
    EntityMatch,
    ErpRouting,
    ErpTarget,
    LegalEntity,
    single_erp_routing,
)
from workers.main import QueueLimits


def test_the_defaults_are_the_settings_defaults() -> None:
    assert QueueLimits.from_settings(Settings()) == QueueLimits()


def test_settings_reach_the_options_of_each_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "ERP_CONCURRENCY": "3", "ERP_PER_SECOND": "4.5", "BILLING_PER_SECOND": "20",
        "SUPPORT_PER_SECOND": "2", "MAX_CACHED_WORKFLOWS": "250", "WORKFLOW_TASK_SLOTS": "40",
        "ERP_READ_PER_SECOND": "6", "ERP_READ_CONCURRENCY": "1",
        "WORKFLOW_POLLERS": "2", "ACTIVITY_POLLERS": "3",
    }.items():  # fmt: skip
        monkeypatch.setenv(f"LEDGERBRIDGE_WORKER_{name}", value)
    options = QueueLimits.from_settings(Settings()).worker_options()
    assert options[""] == {
        "max_cached_workflows": 250,
        "max_concurrent_workflow_tasks": 40,
        "max_concurrent_workflow_task_polls": 2,
        "max_concurrent_activity_task_polls": 3,
    }
    assert options["erp"] == {
        "max_task_queue_activities_per_second": 4.5,
        "max_concurrent_activities": 3,
        "max_concurrent_activity_task_polls": 3,
    }
    # reconciliation's ERP reads: a queue of their own, with limits of their own
    assert options["erp-read"] == {
        "max_task_queue_activities_per_second": 6,
        "max_concurrent_activities": 1,
        "max_concurrent_activity_task_polls": 3,
    }
    assert options["billing"]["max_task_queue_activities_per_second"] == 20
    assert options["support"]["max_task_queue_activities_per_second"] == 2


def test_sticky_polling_needs_two_workflow_pollers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGERBRIDGE_WORKER_WORKFLOW_POLLERS", "1")
    with pytest.raises(ValueError, match="worker_workflow_pollers"):
        Settings()


def test_a_cached_worker_needs_two_workflow_task_slots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGERBRIDGE_WORKER_WORKFLOW_TASK_SLOTS", "1")
    with pytest.raises(ValueError, match="worker_workflow_task_slots"):
        Settings()


def test_a_netsuite_posting_queue_runs_two_activities_for_each_slot_the_account_allows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LEDGERBRIDGE_WORKER_ERP_CONCURRENCY", "3")
    monkeypatch.setenv("LEDGERBRIDGE_NETSUITE_CONCURRENCY", "7")
    routing = ErpRouting(
        version=1,
        erps={
            "tryton": ErpTarget(kind="tryton", queue="erp"),
            "netsuite": ErpTarget(kind="netsuite", queue="erp-netsuite"),
        },
        entities=[LegalEntity(name="US", legacy="tryton", match=EntityMatch(default=True))],
    )
    limits = QueueLimits.from_settings(Settings())

    options = limits.queue_options(routing)

    assert options["erp"] == limits.worker_options()["erp"]
    assert options["erp"]["max_concurrent_activities"] == 3
    assert options["erp-read"] == limits.worker_options()["erp-read"]
    # NetSuite governs by requests in flight, not per second: no rate, and two activities for
    # each of the account's slots (the adapter holds the requests in flight to the limit)
    polls = {"max_concurrent_activity_task_polls": limits.activity_pollers}
    assert options["erp-netsuite"] == {**polls, "max_concurrent_activities": 14}
    # its reads (reconciliation's pages) one for each slot: the adapter holds reads and
    # postings together to the account's limit
    assert options["erp-netsuite-read"] == {**polls, "max_concurrent_activities": 7}
    assert set(options) == {
        "",
        "billing",
        "support",
        "erp",
        "erp-read",
        "erp-netsuite",
        "erp-netsuite-read",
    }


def test_without_a_routing_file_the_one_erp_queue_keeps_the_erp_limits() -> None:
    limits = QueueLimits(erp_concurrency=2, netsuite_concurrency=9)

    options = limits.queue_options(single_erp_routing())

    assert options == limits.worker_options()
