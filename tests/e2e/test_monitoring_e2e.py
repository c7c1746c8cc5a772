"""The ERP goes down behind its fault proxy: the worker's adapter calls count the failures and
the ERP-down alert fires in a real Prometheus (Debian's), evaluating the deployment's rules
with their windows shortened; the ERP comes back and the alert clears."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from starters.local import monitoring
from tests.e2e.conftest import Stack, customer_updated, deliver_billing, eventually, stop_process
from tests.fixtures.servers import free_port
from tests.fixtures.system_tools import prometheus_tool

pytestmark = pytest.mark.e2e
WORKER_PORTS = {"worker_metrics_port": free_port(), "worker_sdk_metrics_port": free_port()}


def shortened(rules: str) -> str:
    """The deployment's rules with the systems' 5 min windows and waits cut to seconds."""
    short = rules.replace("[5m]", "[1m]").replace("for: 5m", "for: 5s")
    assert short.count("[1m]") >= 2 and "for: 5s" in short, "the ERP rule's windows moved"
    return short


def alerts(base: str) -> list[dict[str, Any]]:
    """The active (pending or firing) alerts of a Prometheus."""
    answer = httpx.get(f"{base}/api/v1/alerts", timeout=5)
    answer.raise_for_status()
    return list(answer.json()["data"]["alerts"])


def erp_alert(found: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((a for a in found if a["labels"]["alertname"] == "ErpFailing"), None)


def start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


@pytest.mark.parametrize("stack", [WORKER_PORTS], indirect=True)
async def test_the_erp_down_alert_fires_in_prometheus_then_clears(
    stack: Stack, tmp_path: Path
) -> None:
    binary = Path(prometheus_tool("prometheus"))
    rules = tmp_path / "alerts.yml"
    rules.write_text(shortened(monitoring.RULES.read_text()))
    config = monitoring.write_config(
        tmp_path / "prometheus",
        monitoring.prometheus_config(stack.settings, [rules], interval="1s"),
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = monitoring.prometheus_command(binary, config, tmp_path / "prometheus" / "data", port)

    stack.erp_faults.add_rule("unavailable")  # every call to the ERP is answered 503
    worker = stack.start_worker_process()
    prometheus = start(command, tmp_path / "prometheus.log")
    try:
        # A customer changed in billing: account sync calls the ERP, which fails.
        answer = deliver_billing(stack, await customer_updated(stack, "Monitoring Co"))
        assert answer.json()["status"] == "accepted", answer.text

        async def firing() -> dict[str, Any] | None:
            try:
                alert = erp_alert(await asyncio.to_thread(alerts, base))
            except httpx.HTTPError:
                return None  # still starting
            return alert if alert and alert["state"] == "firing" else None

        alert = await eventually(firing, "the ERP-down alert firing", 120)
        assert alert["labels"]["system"] == "erp"
        assert "amendment-to-ERP" in alert["annotations"]["summary"]
        targets = httpx.get(f"{base}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]
        assert {t["labels"]["job"] for t in targets if t["health"] == "up"} >= {
            "ledgerbridge-api",
            "ledgerbridge-worker",
            "temporal-sdk",
        }

        stack.erp_faults.clear()  # the ERP is back: the activity's next retry succeeds

        async def cleared() -> bool:
            try:
                return erp_alert(await asyncio.to_thread(alerts, base)) is None
            except httpx.HTTPError:
                return False

        await eventually(cleared, "the ERP-down alert cleared", 150)
    finally:
        stop_process(prometheus)
        stop_process(worker)
