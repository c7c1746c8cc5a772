"""The alert rules of deploy/prometheus: valid for promtool, unit-tested with `promtool test
rules` (each alert fires and stays quiet), and each summary names the process it blocks."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.settings import Settings
from canonical.reconciliation import EXPLAINED, HEALABLE
from starters.local import monitoring
from tests.fixtures.system_tools import prometheus_tool

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
PROCESS_WORDS = ("amendment-to-ERP", "case-to-credit", "account sync", "month-end", "finance")


def promtool(*args: str, cwd: Path = DEPLOY) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [prometheus_tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_checks_the_rules() -> None:
    done = promtool("check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


def test_promtool_unit_tests_pass() -> None:
    done = promtool("test", "rules", "alerts.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    tests = yaml.safe_load((DEPLOY / "alerts.test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    for rule in rules():
        mine = [c for c in cases if c["alertname"] == rule["alert"]]
        assert any(c.get("exp_alerts") for c in mine), f"{rule['alert']} never fires"
        assert any(not c.get("exp_alerts") for c in mine), f"{rule['alert']} never stays quiet"


def test_the_required_alerts_are_there_each_naming_a_business_process() -> None:
    found = {rule["alert"]: rule for rule in rules()}
    assert {
        "FinanceExceptionOlderThan24h",
        "PostingLatencyP95Above10m",
        "WebhookRefusalsRising",
        "ErpFailing",
        "BillingFailing",
        "SupportFailing",
        "ReconciliationUnexplained",
        "WorkflowTaskFailures",
    } <= set(found)
    for name, rule in found.items():
        summary = rule["annotations"]["summary"]
        assert any(w in summary for w in PROCESS_WORDS) or "process" in summary, name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name


def test_reconciliation_alert_leaves_out_exactly_what_is_healed_or_explained() -> None:
    [rule] = [r for r in rules() if r["alert"] == "ReconciliationUnexplained"]
    excluded = re.search(r'classification!~"([^"]+)"', rule["expr"])
    assert excluded is not None
    assert set(excluded.group(1).split("|")) == set(HEALABLE | EXPLAINED)


def test_the_workflow_task_alert_reads_the_sdks_counter_by_its_real_name() -> None:
    # As the SDK's exporter names it (seen in a scrape of a worker whose workflow raised).
    [rule] = [r for r in rules() if r["alert"] == "WorkflowTaskFailures"]
    assert "temporal_workflow_task_execution_failed_total" in rule["expr"]


def test_the_compose_scrape_config_is_valid() -> None:
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_local_stacks_generated_config_is_valid(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, worker_metrics_port=19464, worker_sdk_metrics_port=19465)
    config = monitoring.prometheus_config(settings)
    path = monitoring.write_config(tmp_path / "prometheus", config)
    done = promtool("check", "config", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 8 rules found" in done.stdout
    jobs = {
        job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
    }
    assert jobs == {
        "ledgerbridge-api": ["127.0.0.1:8080"],
        "ledgerbridge-worker": ["127.0.0.1:19464"],
        "temporal-sdk": ["127.0.0.1:19465"],
    }
    compose = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    assert {job["job_name"] for job in compose["scrape_configs"]} == set(jobs)


@pytest.mark.parametrize("off", ["worker_metrics_port", "worker_sdk_metrics_port"])
def test_a_worker_port_that_is_off_is_not_scraped(tmp_path: Path, off: str) -> None:
    ports = {"worker_metrics_port": 19464, "worker_sdk_metrics_port": 19465, off: 0}
    targets = monitoring.scrape_targets(Settings(home=tmp_path, **ports))  # type: ignore[arg-type]
    assert len(targets) == 2
    assert not any(t.endswith(":0") for t in targets.values())
