"""`ledgerbridge demo` and `ledgerbridge up` as a user runs them: real processes, real ports.

Ports are picked free so the test never collides with a stack a developer has running.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import ScheduleOverlapPolicy

from adapters.bootstrap import build_adapters
from adapters.settings import Settings
from adapters.temporal import connect_temporal
from sandbox.billing.driver import BillingDriver
from starters.local import monitoring
from starters.local.stack import private_stack_env
from starters.reconciliation import SCHEDULE_ID
from tests.e2e.conftest import eventually

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
COMPONENTS = ("temporal", "nats", "erp", "erp-faults", "billing", "billing-faults", "support",
              "support-faults", "worker", "api")  # fmt: skip


def stack_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGERBRIDGE_")}
    return {
        **env,
        **private_stack_env(home),
        # Empty at first: the first start bootstraps the ERP template, then copies it.
        "LEDGERBRIDGE_ERP_TEMPLATE_CACHE": str(home.parent / "erp-template-cache"),
    }


class RunningUp:
    """`ledgerbridge up` in the background, as a user starts it in a terminal."""

    def __init__(self, env: dict[str, str], cwd: Path, *options: str) -> None:
        self.process = subprocess.Popen(
            [str(BIN / "ledgerbridge"), "up", *options], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.output = ""
        assert self.process.stdout is not None
        deadline = time.monotonic() + 240
        for line in self.process.stdout:
            self.output += line
            if "ledgerbridge is up" in line or time.monotonic() > deadline:
                break
        assert "ledgerbridge is up" in self.output, self.output

    def interrupt(self) -> int:
        """Ctrl-C, as in a terminal; the exit code."""
        self.process.send_signal(signal.SIGINT)
        rest, _ = self.process.communicate(timeout=90)
        self.output += rest
        return self.process.returncode


def _settings(env: dict[str, str]) -> Settings:
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            if name.startswith("LEDGERBRIDGE_"):
                patch.setenv(name, value)
        return Settings()


async def test_demo_then_up_twice_resumes_in_flight_work(tmp_path: Path) -> None:
    env = stack_env(tmp_path / ".ledgerbridge")
    settings = _settings(env)

    demo = subprocess.run(
        [str(BIN / "ledgerbridge"), "demo", "--exit"], env=env, cwd=tmp_path,
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "erp: database ledgerbridge from the template cache" in demo.stdout
    [template] = (tmp_path / "erp-template-cache").glob("tryton-*")
    assert (template / "ledgerbridge.bootstrapped.json").exists()
    assert "events: stream LEDGERBRIDGE created" in demo.stdout
    assert "Demo complete: account sync, the mid-cycle upgrade" in demo.stdout
    assert "posted: equal to the billing invoice, once" in demo.stdout
    assert "approved by local-finance (finance)" in demo.stdout
    assert "exception/credit/" in demo.stdout and "compensate by local-finance" in demo.stdout
    assert " 0 unexplained" in demo.stdout
    # /metrics of the API and the worker, scraped before the stack stopped.
    shown = re.search(
        r"metrics: (\d+) ERP documents posted \((\d+) invoices, (\d+) credit notes\); "
        r"credits: (\d+) applied, (\d+) sent to finance as an exception",
        demo.stdout,
    )
    assert shown is not None, demo.stdout
    posted, invoices, credit_notes, applied, exceptions = map(int, shown.groups())
    assert invoices >= 1 and credit_notes >= 1 and posted >= invoices + credit_notes
    assert applied >= 2 and exceptions == 1  # the approved credit, the one after finance's decision
    assert re.search(r"scrape them: http://\S+/metrics, http://\S+/metrics", demo.stdout)
    # Events out: every fact since the subscriber registered reached it and the analytics table.
    events = re.search(r"events: (\d+) recorded since the subscriber registered; (\d+) delivered "
                       r"to it, each once, every signature verified by standardwebhooks \(0 "
                       r"refused\); (\d+) in the analytics table", demo.stdout)  # fmt: skip
    assert events is not None, demo.stdout
    recorded, delivered, analysed = map(int, events.groups())
    assert recorded >= 10 and recorded == delivered == analysed
    assert "[subscriber] com.ledgerbridge.finance.exception_decided.v1" in demo.stdout
    for component in COMPONENTS:
        assert f"{component}: ready, listening on" in demo.stdout
        assert f"{component}: stopped" in demo.stdout

    # Second start: a sync is stuck half-way (support is down) when the stack is stopped.
    up = RunningUp(env, tmp_path)
    assert "erp: reusing database" in up.output
    assert "events: stream LEDGERBRIDGE unchanged" in up.output  # kept on file under home
    assert "schedule: nightly reconciliation updated" in up.output
    temporal = await connect_temporal(settings.temporal_address, settings.temporal_namespace)
    schedule = await temporal.get_schedule_handle(
        f"{settings.task_queue_prefix}{SCHEDULE_ID}"
    ).describe()
    assert schedule.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
    adapters = build_adapters(settings)
    try:
        httpx.post(
            f"{settings.support_url}/_sandbox/faults", json={"status": 503, "count": 100_000}
        ).raise_for_status()
        key = settings.billing_api_key.get_secret_value()
        async with BillingDriver.connect(key, settings.billing_url) as driver:
            customer = await driver.create_customer(
                "Restarted Stack Co", idempotency_key="test/restart"
            )
        party = await eventually(lambda: adapters.ledger.find_party(customer.id), "ERP party", 90)
        # (support answers 503 to everyone now, the test too: ask the store instead)
        links = adapters.store.account_links(customer.id)
        assert [link.system for link in links] == []
        # The worker read the customer from billing and tried support through their proxies
        # (support after the ERP: its first call may come a moment after the party).
        for port in (settings.billing_proxy_port, settings.support_proxy_port):

            async def forwarded(port: int = port) -> dict[str, Any] | None:
                stats: dict[str, Any] = httpx.get(f"http://127.0.0.1:{port}/_faults/stats").json()
                return stats if stats["forwarded"] > 0 else None

            stats = await eventually(forwarded, f"a call through the proxy on {port}", 60)
            assert not any(stats["faults"].values()), stats
        assert up.interrupt() == 0, up.output
        assert "api: stopped" in up.output and "temporal: stopped" in up.output

        # Third start, with Prometheus: the sandbox's injected fault is gone; the same run
        # finishes the work.
        up = RunningUp(env, tmp_path, "--monitoring")
        watched = list(COMPONENTS)
        if monitoring.prometheus_binary() is None:  # `up` says how to install it, runs the rest
            assert os.environ.get("CI") != "true", "CI installs Debian's prometheus (.ci/run)"
            assert monitoring.missing_line() in up.output, up.output
        else:
            watched.append("prometheus")
            prometheus = re.search(
                r"prometheus: ready, listening on (http://127\.0\.0\.1:\d+)", up.output
            )
            assert prometheus is not None, up.output
            groups = httpx.get(f"{prometheus.group(1)}/api/v1/rules").json()["data"]["groups"]
            assert sum(len(g["rules"]) for g in groups) == 8
        org = await eventually(
            lambda: adapters.support.find_organization(customer.id), "support org", 120
        )
        assert org.name == "Restarted Stack Co"
        assert await adapters.ledger.find_party(customer.id) == party
        status = await asyncio.to_thread(
            subprocess.run, [str(BIN / "ledgerbridge"), "status"], env=env, cwd=tmp_path,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert status.returncode == 0, status.stdout
        for component in watched:
            assert re.search(rf"^{component}\s+up\s", status.stdout, re.MULTILINE), status.stdout
        assert up.interrupt() == 0, up.output
        assert all(f"{component}: stopped" in up.output for component in watched), up.output
    finally:
        if up.process.poll() is None:
            up.interrupt()
        await adapters.aclose()


def test_a_component_that_cannot_start_stops_the_stack_naming_it(tmp_path: Path) -> None:
    env = stack_env(tmp_path / ".ledgerbridge")
    billing_port = int(env["LEDGERBRIDGE_BILLING_URL"].rsplit(":", 1)[1])
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", billing_port))
        squatter.listen()
        result = subprocess.run(
            [str(BIN / "ledgerbridge"), "up"], env=env, cwd=tmp_path,
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 1
    assert f"billing: port {billing_port} is already in use" in result.stderr
    assert "Traceback" not in result.stderr
