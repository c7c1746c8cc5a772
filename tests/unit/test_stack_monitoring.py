"""`ledgerbridge up --monitoring`: Prometheus joins the plan last, on a loopback port that
`status` finds while it runs; without Prometheus installed, `up` says how to install it."""

from __future__ import annotations

from pathlib import Path

import pytest

from starters.local import monitoring
from starters.local.stack import LocalStack
from tests.unit.test_stack_plan import settings


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> Path:
    binary = Path("/usr/bin/prometheus")
    monkeypatch.setattr(monitoring, "prometheus_binary", lambda: binary)
    return binary


def test_monitoring_adds_prometheus_after_the_worker_and_the_api(
    tmp_path: Path, installed: Path
) -> None:
    stack = LocalStack(settings(tmp_path), monitoring=True)
    plan = stack.plan()
    prometheus = plan[-1]
    assert prometheus.name == "prometheus"
    assert prometheus.wave > max(c.wave for c in plan if c.name in {"worker", "api"})
    port = stack.prometheus_port()
    assert prometheus.port == port
    assert prometheus.command[0] == str(installed)
    assert f"--web.listen-address=127.0.0.1:{port}" in prometheus.command
    assert f"--config.file={tmp_path / 'prometheus' / 'prometheus.yml'}" in prometheus.command
    assert stack.plan()[-1].port == port  # one port for the stack's life


def test_without_monitoring_there_is_no_prometheus(tmp_path: Path, installed: Path) -> None:
    names = [c.name for c in LocalStack(settings(tmp_path)).plan()]
    assert "prometheus" not in names


def test_prepare_writes_the_config_and_the_port_status_reads(
    tmp_path: Path, installed: Path
) -> None:
    stack = LocalStack(settings(tmp_path), monitoring=True)
    stack.components = stack.plan()
    stack._prepare_prometheus()
    config = (tmp_path / "prometheus" / "prometheus.yml").read_text()
    assert str(monitoring.RULES) in config
    assert '"127.0.0.1:8080"' in config  # the API

    status = LocalStack(settings(tmp_path), monitoring=None)  # what `ledgerbridge status` makes
    [listed] = [c for c in status.plan() if c.name == "prometheus"]
    assert listed.port == stack.prometheus_port()

    stack.stop()  # the port file goes with the stack
    assert "prometheus" not in [
        c.name for c in LocalStack(settings(tmp_path), monitoring=None).plan()
    ]


def test_without_prometheus_installed_up_says_in_one_line_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(monitoring, "prometheus_binary", lambda: None)
    said: list[str] = []
    stack = LocalStack(settings(tmp_path), monitoring=True, echo=said.append)
    stack.components = stack.plan()
    assert "prometheus" not in [c.name for c in stack.components]
    stack._prepare_prometheus()
    assert said == [
        "prometheus: not installed, monitoring off (install it: apt-get install prometheus)"
    ]
    assert not (tmp_path / "prometheus").exists()


def test_up_takes_the_monitoring_flag() -> None:
    from starters.cli import build_parser

    assert build_parser().parse_args(["up", "--monitoring"]).monitoring is True
    assert build_parser().parse_args(["up"]).monitoring is False
