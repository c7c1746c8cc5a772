"""The local stack's plan: which components `up` starts and where the worker and API call."""

import os
import sys
import time
from pathlib import Path

import pytest

from adapters.events.server import nats_server_binary
from adapters.settings import Settings
from starters.local.stack import Component, LocalStack, StackError, private_stack_settings


def settings(home: Path, **overrides: object) -> Settings:
    return Settings(
        home=home,
        erp_url="http://127.0.0.1:18000",
        billing_url="http://127.0.0.1:18001",
        support_url="http://127.0.0.1:18002",
        erp_proxy_port=18009,
        billing_proxy_port=18010,
        support_proxy_port=18011,
        api_keys=["ops-1:ops:" + "0" * 64],
        **overrides,  # type: ignore[arg-type]
    )


def test_up_puts_a_fault_proxy_in_front_of_each_counterpart(tmp_path: Path) -> None:
    stack = LocalStack(settings(tmp_path))
    names = [c.name for c in stack.plan()]
    assert names == ["temporal", "nats", "erp", "erp-faults", "billing", "billing-faults",
                     "support", "support-faults", "netsuite", "netsuite-faults", "worker",
                     "api"]  # fmt: skip
    env = stack.child_env()
    assert env["LEDGERBRIDGE_ERP_URL"] == "http://127.0.0.1:18009"
    assert env["LEDGERBRIDGE_BILLING_URL"] == "http://127.0.0.1:18010"
    assert env["LEDGERBRIDGE_SUPPORT_URL"] == "http://127.0.0.1:18011"


def test_without_fault_proxies_the_worker_and_api_call_each_system_directly(
    tmp_path: Path,
) -> None:
    stack = LocalStack(settings(tmp_path), fault_proxies=False)
    names = [c.name for c in stack.plan()]
    assert names == ["temporal", "nats", "erp", "billing", "support", "netsuite", "worker", "api"]
    env = stack.child_env()
    assert env["LEDGERBRIDGE_ERP_URL"] == "http://127.0.0.1:18000"
    assert env["LEDGERBRIDGE_BILLING_URL"] == "http://127.0.0.1:18001"
    assert env["LEDGERBRIDGE_SUPPORT_URL"] == "http://127.0.0.1:18002"


def test_nats_runs_from_the_wheel_on_loopback_with_its_store_under_home_before_the_worker(
    tmp_path: Path,
) -> None:
    plan = LocalStack(
        settings(tmp_path, nats_url="nats://127.0.0.1:18222", nats_monitor_port=18223)
    ).plan()
    [nats] = [c for c in plan if c.name == "nats"]
    assert nats.command == [str(nats_server_binary()), "-js", "-a", "127.0.0.1", "-p", "18222",
                            "-sd", str(tmp_path / "nats"), "-m", "18223"]  # fmt: skip
    assert nats_server_binary().exists()
    assert nats.port == 18222
    assert nats.wave < min(c.wave for c in plan if c.name in {"worker", "api"})
    assert "nats://127.0.0.1:18222" in nats.listens and "http://127.0.0.1:18223" in nats.listens
    assert nats.ready() is False  # nothing answers /healthz on that port


def test_a_private_stack_gets_free_ports_of_its_own_for_nats(tmp_path: Path) -> None:
    private = private_stack_settings(tmp_path)
    stack = Settings(**private)
    nats_port = int(stack.nats_url.rsplit(":", 1)[1])
    ports = [
        int(stack.temporal_address.rsplit(":", 1)[1]), stack.temporal_ui_port, nats_port,
        stack.nats_monitor_port, stack.api_port, stack.erp_proxy_port, stack.billing_proxy_port,
        stack.support_proxy_port,
        *(int(url.rsplit(":", 1)[1]) for url in (stack.erp_url, stack.billing_url,
                                                 stack.support_url)),
    ]  # fmt: skip
    assert len(set(ports)) == len(ports) == 11
    assert nats_port != 4322 and stack.nats_monitor_port != 8322


def test_with_payload_keys_up_names_the_codec_sign_in(tmp_path: Path) -> None:
    key = "k1:" + "A" * 43 + "="
    [temporal, *_] = LocalStack(settings(tmp_path, payload_keys=[key])).plan()
    assert "--ui-codec-endpoint" in temporal.command
    assert "sign in at http://127.0.0.1:8080/codec/login" in temporal.listens


def test_the_erp_template_cache_defaults_to_the_user_cache_and_none_turns_it_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert Settings().erp_template_cache == tmp_path / "xdg" / "ledgerbridge"
    monkeypatch.setenv("LEDGERBRIDGE_ERP_TEMPLATE_CACHE", "none")
    assert Settings().erp_template_cache is None
    monkeypatch.setenv("LEDGERBRIDGE_ERP_TEMPLATE_CACHE", str(tmp_path / "mine"))
    assert Settings().erp_template_cache == tmp_path / "mine"


def test_a_cache_turned_off_stays_off_in_child_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = settings(tmp_path, erp_template_cache="none").to_env()
    assert env["LEDGERBRIDGE_ERP_TEMPLATE_CACHE"] == "none"
    monkeypatch.setenv("LEDGERBRIDGE_ERP_TEMPLATE_CACHE", env["LEDGERBRIDGE_ERP_TEMPLATE_CACHE"])
    assert Settings().erp_template_cache is None


def test_a_component_that_dies_while_its_wave_boots_stops_the_wait_at_once(
    tmp_path: Path,
) -> None:
    stack = LocalStack(settings(tmp_path), echo=lambda _line: None)
    stack.logs_dir.mkdir(parents=True)
    slow = Component("slow", [sys.executable, "-c", "import time; time.sleep(30)"], "-",
                     lambda: False, startup_seconds=60)  # fmt: skip
    dying = Component("dying", [sys.executable, "-c", "raise SystemExit(3)"], "-", lambda: False)
    stack.components = [slow, dying]
    try:
        for component in stack.components:
            stack._spawn(component, dict(os.environ))
        began = time.monotonic()
        with pytest.raises(StackError, match="dying: exited with code 3 while starting"):
            stack._wait_ready(slow, dying)
        assert time.monotonic() - began < 10  # not after slow's 60 s
    finally:
        stack.stop()
