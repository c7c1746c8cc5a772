"""`ledgerbridge demo` and `ledgerbridge up` as a user runs them: real processes, real ports.

Ports are picked free so the test never collides with a stack a developer has running.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.servers import free_port

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent


def stack_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGERBRIDGE_")}
    env.update(
        LEDGERBRIDGE_HOME=str(home),
        LEDGERBRIDGE_TEMPORAL_ADDRESS=f"127.0.0.1:{free_port()}",
        LEDGERBRIDGE_TEMPORAL_UI_PORT=str(free_port()),
        LEDGERBRIDGE_ERP_URL=f"http://127.0.0.1:{free_port()}",
        LEDGERBRIDGE_BILLING_URL=f"http://127.0.0.1:{free_port()}",
        LEDGERBRIDGE_SUPPORT_URL=f"http://127.0.0.1:{free_port()}",
        LEDGERBRIDGE_API_PORT=str(free_port()),
    )
    return env


def run_up_until_ready(env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Start `ledgerbridge up`, wait for its banner, Ctrl-C it; exit code and output."""
    process = subprocess.Popen(
        [str(BIN / "ledgerbridge"), "up"], env=env, cwd=cwd, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    deadline = time.monotonic() + 240
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        if "ledgerbridge is up" in line or time.monotonic() > deadline:
            break
    process.send_signal(signal.SIGINT)
    rest, _ = process.communicate(timeout=90)
    return process.returncode, "".join(lines) + rest


def test_demo_then_up_again_reuses_the_erp_and_stops_cleanly(tmp_path: Path) -> None:
    env = stack_env(tmp_path / ".ledgerbridge")

    demo = subprocess.run(
        [str(BIN / "ledgerbridge"), "demo", "--exit"], env=env, cwd=tmp_path,
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "erp: bootstrapping database" in demo.stdout
    assert "Demo complete: account sync end to end." in demo.stdout
    for component in ("temporal", "erp", "billing", "support", "worker", "api"):
        assert f"{component}: ready, listening on" in demo.stdout
        assert f"{component}: stopped" in demo.stdout

    code, output = run_up_until_ready(env, tmp_path)
    assert code == 0, output
    assert "erp: reusing database" in output
    assert "ledgerbridge is up" in output
    assert "api: stopped" in output and "temporal: stopped" in output
    assert (tmp_path / ".ledgerbridge" / "temporal.sqlite").exists()


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
