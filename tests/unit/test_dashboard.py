"""The Grafana dashboard of deploy/grafana: valid JSON, one row per business process, and
every metric it queries exists: ours in adapters/metrics.py, the SDK's in its documented list."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram

from adapters import metrics

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
ROWS = (
    "Amendment-to-ERP",
    "Case-to-credit",
    "Finance exceptions",
    "Account sync",
    "Reconciliation",
    "Systems",
)
METRIC = re.compile(r"\b((?:ledgerbridge|temporal)_[a-z0-9_]+)\b")


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return dict(json.loads((GRAFANA / "dashboards" / "ledgerbridge.json").read_text()))


def queries(dashboard: dict[str, Any]) -> list[str]:
    return [
        target["expr"]
        for panel in dashboard["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def our_series() -> set[str]:
    """Every series name adapters/metrics.py exposes (counters with `_total`)."""
    names: set[str] = set()
    for value in vars(metrics).values():
        if isinstance(value, Counter):
            names.add(f"{value._name}_total")
        elif isinstance(value, Histogram):
            names |= {f"{value._name}_{suffix}" for suffix in ("bucket", "sum", "count")}
        elif isinstance(value, Gauge):
            names.add(value._name)

    async def nothing() -> metrics.WaitingSnapshot:
        raise RuntimeError

    names |= {family.name for family in metrics.WaitingWorkCollector(nothing).collect()}
    return names


def sdk_series() -> set[str]:
    """The SDK's metrics as docs/operations.md lists them (histograms with `_bucket`)."""
    docs = (ROOT / "docs" / "operations.md").read_text()
    paragraph = docs[docs.index("**The SDK's**") : docs.index("**Ours.**")]
    listed = set(re.findall(r"`(temporal_[a-z_]+)`", paragraph))
    return listed | {f"{n}_bucket" for n in listed if n.endswith("_seconds")}


def test_one_row_per_business_process_in_order(dashboard: dict[str, Any]) -> None:
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert len(rows) == len(ROWS)
    for title, process in zip(rows, ROWS, strict=True):
        assert title.startswith(process), title


def test_every_panel_queries_the_provisioned_prometheus(dashboard: dict[str, Any]) -> None:
    sources = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    [source] = sources["datasources"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"], panel["title"]


def test_every_metric_queried_exists(dashboard: dict[str, Any]) -> None:
    known = our_series() | sdk_series()
    used = {name for expr in queries(dashboard) for name in METRIC.findall(expr)}
    assert used, "no metric found in the dashboard's queries"
    assert used - known == set()
    assert {n for n in used if n.startswith("temporal_")}, "the SDK's metrics are not shown"


def test_activity_and_workflow_types_queried_exist(dashboard: dict[str, Any]) -> None:
    text = " ".join(queries(dashboard))
    names = {n for group in re.findall(r'activity_type=~"([^"]+)"', text) for n in group.split("|")}
    assert names
    sources = " ".join(p.read_text() for p in (ROOT / "activities").glob("*.py"))
    defined = set(re.findall(r'@activity\.defn\(name="([a-z_]+)"\)', sources))
    assert names <= defined
    workflows = set(re.findall(r'workflow_type="([A-Za-z]+)"', text))
    for workflow in workflows:
        assert f"class {workflow}" in " ".join(
            p.read_text() for p in (ROOT / "workflows").glob("*.py")
        ), workflow


def test_grafana_provisioning_loads_the_dashboards_the_compose_file_mounts() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    providers = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "ledgerbridge.yml").read_text()
    )
    [provider] = providers["providers"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
