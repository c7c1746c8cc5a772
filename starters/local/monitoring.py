"""`ledgerbridge up --monitoring`: Debian's Prometheus beside the local stack.

It scrapes the stack's API and worker `/metrics` (ours and the Temporal SDK's) with the job
names of `deploy/prometheus/prometheus.yml` and evaluates the same alert rules,
`deploy/prometheus/alerts.yml`. Its data and generated configuration live under
`<home>/prometheus/`; the port it listens on is written there while it runs, so
`ledgerbridge status` finds it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from adapters.settings import Settings

PROMETHEUS = Path("/usr/bin/prometheus")
RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"
INSTALL_HINT = "apt-get install prometheus"


def prometheus_binary() -> Path | None:
    """Debian's `prometheus`, else one on PATH; None when neither is there."""
    if PROMETHEUS.exists():
        return PROMETHEUS
    found = shutil.which("prometheus")
    return Path(found) if found else None


def missing_line() -> str:
    """What `up --monitoring` says, in one line, when there is no Prometheus to run."""
    return f"prometheus: not installed, monitoring off (install it: {INSTALL_HINT})"


def scrape_targets(settings: Settings) -> dict[str, str]:
    """Job name to `host:port` of each `/metrics` of the stack that is on (0 means off)."""
    targets = {"ledgerbridge-api": f"{settings.api_host}:{settings.api_port}"}
    host = settings.worker_metrics_host
    if settings.worker_metrics_port:
        targets["ledgerbridge-worker"] = f"{host}:{settings.worker_metrics_port}"
    if settings.worker_sdk_metrics_port:
        targets["temporal-sdk"] = f"{host}:{settings.worker_sdk_metrics_port}"
    return targets


def prometheus_config(
    settings: Settings, rule_files: list[Path] | None = None, interval: str = "15s"
) -> dict[str, Any]:
    """The configuration: every target of the stack, every `interval`, with `rule_files`
    (the deployment's rules unless given)."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(path) for path in (rule_files or [RULES])],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]}
            for job, target in scrape_targets(settings).items()
        ],
    }


def write_config(directory: Path, config: dict[str, Any]) -> Path:
    """The configuration as a file Prometheus reads (JSON is YAML)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "prometheus.yml"
    path.write_text(json.dumps(config, indent=2) + "\n")
    return path


def prometheus_command(binary: Path, config: Path, data: Path, port: int) -> list[str]:
    """Prometheus on loopback only, its data in `data`, kept a week."""
    return [
        str(binary),
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        "--storage.tsdb.retention.time=7d",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
