"""`ledgerbridge up`: the whole local stack as supervised child processes.

Temporal dev server, the NATS JetStream server events go out to, the real Tryton ERP, the
billing and support sandboxes, a fault proxy in front of each of those three (the worker and
the API call them through it), the worker and the API, each health-checked before the next
starts, each logging to .ledgerbridge/logs/; with `monitoring`, Debian's Prometheus scraping
them with the deployment's alert rules last. A component that fails to start or dies stops
the stack with a message naming it; Ctrl-C stops everything in reverse order. State lives
under .ledgerbridge/, so a restart resumes in-flight workflows and keeps undelivered events.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import httpx
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest

from adapters.bootstrap import build_store, build_support, connect_broker
from adapters.events.broker import STREAM
from adapters.events.server import nats_server_command
from adapters.routing_file import load_routing
from adapters.settings import ERP_ROUTING_FILE, Settings
from adapters.task_queues import read_queue, task_queue
from adapters.temporal import connect_for, connect_temporal
from adapters.visibility import search_attribute_flags
from canonical.erp_routing import ErpRouting
from starters.api.auth import ROLES, key_entry
from starters.local import monitoring as prometheus
from starters.local import tryton_bootstrap
from starters.local.catalog import LOCAL_CURRENCIES, CatalogError, ensure_local_catalog

BIN = Path(sys.executable).parent
# The local stack's ERP routing: the EU entity (an EU address, or billing in euros) is booked
# by Tryton and moves to the NetSuite sandbox with `ledgerbridge erp mode`; the rest stays.
LOCAL_ROUTING = """\
# Which ERP books which legal entity (docs/erp-coexistence.md); written once by `up`.
version = 1

[erps.tryton]
kind = "tryton"
queue = "erp"

[erps.netsuite]
kind = "netsuite"
queue = "erp-netsuite"

[[entities]]
name = "EU"
legacy = "tryton"
target = "netsuite"
match.countries = ["AT", "BE", "DE", "ES", "FI", "FR", "IE", "IT", "LU", "NL", "PT"]
match.currencies = ["EUR"]

[[entities]]
name = "US"
legacy = "tryton"
match = { default = true }
"""


class StackError(RuntimeError):
    """A component could not start or stopped; the message names it."""


@dataclass
class Component:
    name: str
    command: list[str]
    listens: str
    ready: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    port: int | None = None
    startup_seconds: float = 60.0
    # Components of one wave start side by side; a wave starts once the one before is ready.
    wave: int = 0
    process: subprocess.Popen[bytes] | None = None
    log_file: IO[bytes] | None = None
    started_at: float = 0.0


def _host_port(url_or_address: str) -> tuple[str, int]:
    if "://" not in url_or_address:
        url_or_address = f"tcp://{url_or_address}"
    parts = urlsplit(url_or_address)
    return parts.hostname or "127.0.0.1", int(parts.port or 80)


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def free_ports(count: int) -> list[int]:
    """Ports nobody listens on now, all different (bound together, then released)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def private_stack_settings(home: Path) -> dict[str, Any]:
    """The settings that make a local stack private: its own `home` and every port free, so
    it never meets an `up` (chaos runs, benchmarks, tests). `private_stack_env` gives them as
    the variables a child process reads."""
    (temporal, ui, nats, nats_monitor, erp, billing, support, api, erp_faults, billing_faults,
     support_faults, netsuite, netsuite_faults) = free_ports(13)  # fmt: skip
    return {
        "home": home,
        "temporal_address": f"127.0.0.1:{temporal}",
        "temporal_ui_port": ui,
        "nats_url": f"nats://127.0.0.1:{nats}",
        "nats_monitor_port": nats_monitor,
        "erp_url": f"http://127.0.0.1:{erp}",
        "billing_url": f"http://127.0.0.1:{billing}",
        "support_url": f"http://127.0.0.1:{support}",
        "api_port": api,
        "erp_proxy_port": erp_faults,
        "billing_proxy_port": billing_faults,
        "support_proxy_port": support_faults,
        "netsuite_url": f"http://127.0.0.1:{netsuite}",
        "netsuite_proxy_port": netsuite_faults,
        "ledger_currencies": list(LOCAL_CURRENCIES),
    }


def with_worker_metrics_ports(settings: Settings) -> Settings:
    """The worker's two metrics ports: free ones, unless they were set (0 keeps them off)."""
    ports = {"worker_metrics_port", "worker_sdk_metrics_port"}
    if ports & settings.model_fields_set:
        return settings
    ours, sdk = free_ports(2)
    return settings.model_copy(update={"worker_metrics_port": ours, "worker_sdk_metrics_port": sdk})


def metrics_endpoints(settings: Settings) -> list[str]:
    """Where the stack's `/metrics` answer: the API's, the worker's and the SDK's (when on)."""
    host = settings.worker_metrics_host
    found = [f"http://{settings.api_host}:{settings.api_port}/metrics"]
    for port in (settings.worker_metrics_port, settings.worker_sdk_metrics_port):
        if port:
            found.append(f"http://{host}:{port}/metrics")
    return found


def private_stack_env(home: Path) -> dict[str, str]:
    return {
        f"LEDGERBRIDGE_{name.upper()}": json.dumps(value) if isinstance(value, list) else str(value)
        for name, value in private_stack_settings(home).items()
    }


def _http_ok(url: str, *, json_rpc: dict[str, Any] | None = None) -> Callable[[], bool]:
    def check() -> bool:
        try:
            if json_rpc is not None:
                response = httpx.post(url, json=json_rpc, timeout=2)
            else:
                response = httpx.get(url, timeout=2)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    return check


class LocalStack:
    """Starts, watches and stops the local components in dependency order."""

    def __init__(
        self,
        settings: Settings,
        *,
        echo: Callable[[str], None] = print,
        fault_proxies: bool = True,
        monitoring: bool | None = False,
    ) -> None:
        """`fault_proxies=False` leaves the fault proxies out: the worker and the API call
        each counterpart directly, as in production (benchmarks). `monitoring=True` adds
        Prometheus (when installed); None: as the stack running in `home` (`status`)."""
        self.settings = with_worker_metrics_ports(settings)
        self.fault_proxies = fault_proxies
        self.home = settings.home.resolve()
        self.echo = echo
        self.components: list[Component] = []
        self._lock_handle: IO[str] | None = None
        if monitoring is None:
            monitoring = self.prometheus_port_file.exists()
        self.monitoring = monitoring
        self._prometheus_port: int | None = None

    # --- layout -------------------------------------------------------------------------

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def erp_dir(self) -> Path:
        return self.home / "erp"

    @property
    def nats_dir(self) -> Path:
        """JetStream's file store: what is published and not yet delivered survives a
        restart of the stack."""
        return self.home / "nats"

    @property
    def prometheus_dir(self) -> Path:
        return self.home / "prometheus"

    @property
    def prometheus_port_file(self) -> Path:
        """The port of the running stack's Prometheus; there only while it runs."""
        return self.home / "prometheus" / "listen-port"

    def local_api_keys(self) -> dict[str, str]:
        """Plain API keys of the local stack, one per role; made once, kept under home."""
        path = self.home / "local-api-keys.json"
        if path.exists():
            return dict(json.loads(path.read_text()))
        keys = {role: f"lb_{role}_{secrets.token_urlsafe(24)}" for role in sorted(ROLES)}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(json.dumps(keys, indent=2))
        return keys

    def child_env(self) -> dict[str, str]:
        env = {**os.environ, **self.settings.to_env()}
        env["LEDGERBRIDGE_HOME"] = str(self.home)
        if not self.settings.api_keys:
            entries = [key_entry(f"local-{r}", r, k) for r, k in self.local_api_keys().items()]
            env["LEDGERBRIDGE_API_KEYS"] = json.dumps(entries)
        env.setdefault("PYTHONUNBUFFERED", "1")
        # The local ERP books these (each has a rate there), and the local mapping maps them.
        if "ledger_currencies" not in self.settings.model_fields_set:
            env["LEDGERBRIDGE_LEDGER_CURRENCIES"] = json.dumps(list(LOCAL_CURRENCIES))
        # The worker and the API reach every counterpart through its fault proxy (demo, chaos
        # runs); the sandboxes' webhooks reach the API directly.
        if self.fault_proxies:
            env["LEDGERBRIDGE_ERP_URL"] = self.erp_proxy_url
            env["LEDGERBRIDGE_BILLING_URL"] = self.billing_proxy_url
            env["LEDGERBRIDGE_SUPPORT_URL"] = self.support_proxy_url
            env["LEDGERBRIDGE_NETSUITE_URL"] = self.netsuite_proxy_url
        return env

    @property
    def erp_proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.erp_proxy_port}"

    @property
    def billing_proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.billing_proxy_port}"

    @property
    def support_proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.support_proxy_port}"

    @property
    def netsuite_proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.netsuite_proxy_port}"

    # --- components ---------------------------------------------------------------------

    def plan(self) -> list[Component]:
        s = self.settings
        t_host, t_port = _host_port(s.temporal_address)
        _, erp_port = _host_port(s.erp_url)
        _, billing_port = _host_port(s.billing_url)
        _, support_port = _host_port(s.support_url)
        api_base = f"http://{s.api_host}:{s.api_port}"
        temporal_cmd = [
            str(BIN / "temporal"), "server", "start-dev",
            "--ip", t_host, "--port", str(t_port), "--ui-port", str(s.temporal_ui_port),
            "--db-filename", str(self.home / "temporal.sqlite"),
            "--namespace", s.temporal_namespace, "--log-level", "warn",
        ]  # fmt: skip
        for flag in search_attribute_flags():
            temporal_cmd += ["--search-attribute", flag]
        web_ui = f"Web UI http://{t_host}:{s.temporal_ui_port}"
        if s.payload_keys:  # the Web UI decrypts payloads through the API's codec endpoint
            temporal_cmd += ["--ui-codec-endpoint", f"{api_base}/codec"]
            web_ui += f"; to decrypt payloads there, sign in at {api_base}/codec/login"
        components = [
            Component(
                "temporal",
                temporal_cmd,
                f"{s.temporal_address} ({web_ui})",
                self._temporal_ready,
                port=t_port,
            ),
            self._nats(),
            Component(
                "erp",
                self.erp_command(),
                f"{s.erp_url}/{s.erp_database}/rpc/ (Tryton JSON-RPC)",
                _http_ok(
                    f"{s.erp_url}/rpc/",
                    json_rpc={"id": 0, "method": "common.server.version", "params": []},
                ),
                port=erp_port,
            ),
            self._fault_proxy("erp", s.erp_proxy_port, s.erp_url, "the ERP"),
            Component(
                "billing",
                self._sandbox_command(
                    "billing",
                    billing_port,
                    "--api-key",
                    s.billing_api_key.get_secret_value(),
                    "--webhook-url",
                    f"{api_base}/webhooks/stripe",
                    "--webhook-secret",
                    s.billing_webhook_secrets[0].get_secret_value(),
                ),
                f"{s.billing_url} (Stripe-compatible sandbox)",
                _http_ok(f"{s.billing_url}/_sandbox/health"),
                port=billing_port,
            ),
            self._fault_proxy("billing", s.billing_proxy_port, s.billing_url, "billing"),
            Component(
                "support",
                self._sandbox_command(
                    "support",
                    support_port,
                    "--email",
                    s.support_email,
                    "--token",
                    s.support_api_token.get_secret_value(),
                    "--webhook-url",
                    f"{api_base}/webhooks/zendesk",
                    "--webhook-secret",
                    s.support_webhook_secrets[0].get_secret_value(),
                ),
                f"{s.support_url} (Zendesk-compatible sandbox)",
                _http_ok(f"{s.support_url}/_sandbox/health"),
                port=support_port,
            ),
            self._fault_proxy("support", s.support_proxy_port, s.support_url, "support"),
            self._netsuite(),
            self._fault_proxy("netsuite", s.netsuite_proxy_port, s.netsuite_url, "NetSuite"),
            # Both need Temporal: the second wave.
            Component(
                "worker",
                [sys.executable, "-m", "workers"],
                f"task queues {', '.join(self._queues())}; metrics "
                + " and ".join(metrics_endpoints(s)[1:] or ["off"]),
                self._worker_ready,
                wave=1,
            ),
            Component(
                "api",
                [sys.executable, "-m", "starters.cli", "api"],
                f"{api_base} (webhooks, /v1, OpenAPI at {api_base}/docs)",
                _http_ok(f"{api_base}/healthz"),
                port=s.api_port,
                wave=1,
            ),
        ]
        if not self.fault_proxies:
            components = [c for c in components if not c.name.endswith("-faults")]
        if self.monitoring:
            components += self._prometheus()
        return components

    def _netsuite(self) -> Component:
        """`netsuite`: the NetSuite sandbox, the EU entity's target ERP in the local routing."""
        s = self.settings
        _, port = _host_port(s.netsuite_url)
        command = self._sandbox_command(
            "netsuite", port,
            "--account-id", s.netsuite_account_id,
            "--consumer-key", s.netsuite_consumer_key,
            "--consumer-secret", s.netsuite_consumer_secret.get_secret_value(),
            "--token-id", s.netsuite_token_id,
            "--token-secret", s.netsuite_token_secret.get_secret_value(),
        )  # fmt: skip
        return Component(
            "netsuite",
            command,
            f"{s.netsuite_url}/services/rest/ (NetSuite-compatible sandbox, account "
            f"{s.netsuite_account_id})",
            _http_ok(f"{s.netsuite_url}/_sandbox/health"),
            port=port,
        )

    def _nats(self) -> Component:
        """`nats`: one JetStream server on loopback, on the first address of `nats_url`."""
        s = self.settings
        host, port = _host_port(s.nats_url.split(",")[0])
        monitoring = f"http://127.0.0.1:{s.nats_monitor_port}"
        return Component(
            "nats",
            nats_server_command(port, self.nats_dir, monitor_port=s.nats_monitor_port, host=host),
            f"{s.nats_url} (NATS JetStream, stream {STREAM}; monitoring {monitoring})",
            # Plain /healthz is 200 once JetStream has recovered the streams on file.
            _http_ok(f"{monitoring}/healthz"),
            port=port,
        )

    def _prometheus(self) -> list[Component]:
        """Prometheus after the worker and the API (it scrapes them); none when it is not
        installed (`up` says how to install it)."""
        binary = prometheus.prometheus_binary()
        if binary is None:
            return []
        port = self.prometheus_port()
        url = f"http://127.0.0.1:{port}"
        config = self.prometheus_dir / "prometheus.yml"
        return [
            Component(
                "prometheus",
                prometheus.prometheus_command(binary, config, self.prometheus_dir / "data", port),
                f"{url} (alerts at {url}/alerts; rules {prometheus.RULES.name})",
                _http_ok(f"{url}/-/ready"),
                port=port,
                wave=2,
            )
        ]

    def prometheus_port(self) -> int:
        """The running stack's port when there is one, else a free one (kept)."""
        if self._prometheus_port is None:
            if self.prometheus_port_file.exists():
                self._prometheus_port = int(self.prometheus_port_file.read_text())
            else:
                [self._prometheus_port] = free_ports(1)
        return self._prometheus_port

    def _prepare_prometheus(self) -> None:
        if not any(c.name == "prometheus" for c in self.components):
            if self.monitoring:
                self.echo(prometheus.missing_line())
            return
        if not prometheus.RULES.exists():
            raise StackError(f"prometheus: no alert rules at {prometheus.RULES}")
        prometheus.write_config(self.prometheus_dir, prometheus.prometheus_config(self.settings))
        self.prometheus_port_file.write_text(str(self.prometheus_port()))

    def _fault_proxy(self, system: str, port: int, upstream: str, what: str) -> Component:
        """`{system}-faults`: the fault proxy the worker and the API reach `upstream` through."""
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "sandbox.faults", "--host", "127.0.0.1",
                   "--listen-port", str(port), "--upstream", upstream]  # fmt: skip
        return Component(
            f"{system}-faults",
            command,
            f"{url} (fault proxy in front of {what}, rules at /_faults/)",
            _http_ok(f"{url}/_faults/health"),
            port=port,
        )

    def _sandbox_command(self, system: str, port: int, *options: str) -> list[str]:
        state = str(self.home / f"{system}.sqlite")
        return [sys.executable, "-m", f"sandbox.{system}", "--host", "127.0.0.1",
                "--port", str(port), "--state", state, *options]  # fmt: skip

    def erp_command(self) -> list[str]:
        return tryton_bootstrap.server_command(
            self.erp_dir / "trytond.conf", self.settings.erp_database
        )

    def _queues(self) -> list[str]:
        prefix = self.settings.task_queue_prefix
        erps = [
            q for erp in self._routing().erps.values() for q in (erp.queue, read_queue(erp.queue))
        ]
        return [task_queue(prefix)] + [task_queue(prefix, q) for q in ("billing", "support", *erps)]

    @property
    def routing_path(self) -> Path:
        """The routing the stack's worker and API read: the one named, else the local one."""
        return self.settings.erp_routing or self.home / ERP_ROUTING_FILE

    def _routing(self) -> ErpRouting:
        """The routing the stack runs with (the local one before `up` has written it)."""
        if self.routing_path.exists() or self.settings.erp_routing is not None:
            return load_routing(self.routing_path)
        return ErpRouting.model_validate(tomllib.loads(LOCAL_ROUTING))

    def _ensure_routing(self) -> None:
        """The local routing, written once (an edited one is kept): the EU entity booked by
        Tryton with NetSuite as its target, every other customer by Tryton."""
        if self.settings.erp_routing is None and not self.routing_path.exists():
            self.routing_path.write_text(LOCAL_ROUTING)
        self.echo(f"routing: {self.routing_path} (`ledgerbridge erp entities` shows it)")

    def _temporal_ready(self) -> bool:
        async def check() -> bool:
            client = await connect_temporal(
                self.settings.temporal_address, self.settings.temporal_namespace
            )
            await client.count_workflows()
            return True

        try:
            return asyncio.run(check())
        except Exception:
            return False

    def _worker_ready(self, process: subprocess.Popen[bytes] | None = None) -> bool:
        """Ready when every queue of ours has a poller: the worker is connected and polling
        (with `process`: a poller of that process, whose identity starts with its pid)."""
        mine = f"{process.pid}@" if process is not None else ""

        async def check() -> bool:
            client = await connect_temporal(
                self.settings.temporal_address, self.settings.temporal_namespace
            )
            for name in self._queues():
                kind = (
                    TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW
                    if name == self._queues()[0]
                    else TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY
                )
                response = await client.workflow_service.describe_task_queue(
                    DescribeTaskQueueRequest(
                        namespace=client.namespace,
                        task_queue=TaskQueue(name=name),
                        task_queue_type=kind,
                    )
                )
                if not any(p.identity.startswith(mine) for p in response.pollers):
                    return False
            return True

        try:
            return asyncio.run(check())
        except Exception:
            return False

    # --- lifecycle ----------------------------------------------------------------------

    @contextlib.contextmanager
    def running(self) -> Iterator[LocalStack]:
        """The stack, started; stopped in reverse order however the block ends."""
        self._take_lock()
        try:
            self.start()
            yield self
        finally:
            self.stop()
            self._release_lock()

    def _take_lock(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        handle = (self.home / "up.lock").open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise StackError(
                f"another `ledgerbridge up` already runs with state in {self.home}"
            ) from None
        self._lock_handle = handle

    def _release_lock(self) -> None:
        if self._lock_handle is not None:
            fcntl.flock(self._lock_handle, fcntl.LOCK_UN)
            self._lock_handle.close()
            self._lock_handle = None

    def start(self) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.components = self.plan()
        for component in self.components:
            if component.port and port_in_use("127.0.0.1", component.port):
                raise StackError(
                    f"{component.name}: port {component.port} is already in use; stop what "
                    f"holds it or configure another port (see docs/operations.md, Configuration)"
                )
        self.prepare_erp()
        self._ensure_routing()
        self._migrate_store()
        self._prepare_prometheus()
        env = self.child_env()
        # The counterparts, their proxies and Temporal boot side by side, then the worker and
        # the API.
        for wave in sorted({c.wave for c in self.components}):
            members = [c for c in self.components if c.wave == wave]
            for component in members:
                self._spawn(component, env)
            self._wait_ready(*members)
            if wave == 0:  # billing is up and the worker not yet: the mapping precedes postings
                self._ensure_catalog()
                # NATS is up and the worker (whose relay would make it too) not yet.
                self._ensure_event_stream()
        self._apply_recon_schedule()
        self._define_entitlement_fields()

    def _ensure_event_stream(self) -> None:
        """The events stream exists from the first `up`, so subscribers can bind their
        durable consumers before the first event is published."""

        async def ensure() -> str:
            broker = await connect_broker(self.settings)
            try:
                return await broker.ensure_stream()
            finally:
                await broker.close()

        self.echo(f"events: stream {STREAM} {asyncio.run(ensure())}")

    def _define_entitlement_fields(self) -> None:
        """Agents see plan, status and paid-through on organizations from the first `up`
        (the adapter would define them at its first write; defining them never repeats)."""

        async def define() -> list[str]:
            support = build_support(self.settings)
            try:
                return await support.ensure_entitlement_fields()
            finally:
                await support.aclose()

        created = asyncio.run(define())
        self.echo(f"support: entitlement fields {'defined' if created else 'present'}")

    def _ensure_catalog(self) -> None:
        """Billing's products and tax rates and finance's mapping of them (catalog.py)."""
        settings = self.settings.model_copy(update={"home": self.home})
        try:
            asyncio.run(ensure_local_catalog(settings, self.echo))
        except (CatalogError, OSError) as err:
            raise StackError(f"catalog: {err}") from err

    def _apply_recon_schedule(self) -> None:
        """The nightly reconciliation (one per ERP) and the daily shadow report exist in the
        local Temporal after every `up`."""
        from starters.reconciliation import apply_schedules
        from starters.shadow_reports import apply_shadow_schedule

        async def apply() -> tuple[dict[str, str], str]:
            client = await connect_for(self.settings)
            recon = await apply_schedules(client, self.settings)
            return recon, await apply_shadow_schedule(client, self.settings)

        recon, shadow = asyncio.run(apply())
        for schedule, outcome in recon.items():  # one per ERP
            self.echo(
                f"schedule: nightly reconciliation {outcome} ({schedule}, "
                f"{self.settings.recon_hour:02d}:00 {self.settings.recon_timezone})"
            )
        self.echo(f"schedule: daily shadow report {shadow} ({self.settings.recon_hour:02d}:30 "
                  f"{self.settings.recon_timezone})")  # fmt: skip

    def prepare_erp(self, listen_host: str = "127.0.0.1") -> None:
        s = self.settings
        admin_password_file = self.erp_dir / "admin-password"
        if not admin_password_file.exists():
            self.erp_dir.mkdir(parents=True, exist_ok=True)
            admin_password_file.touch(mode=0o600)
            admin_password_file.write_text(secrets.token_urlsafe(18))
        _, port = _host_port(s.erp_url)
        tryton_bootstrap.write_config(self.erp_dir, port=port, host=listen_host)
        if tryton_bootstrap.is_bootstrapped(self.erp_dir, s.erp_database):
            self.echo(f"erp: reusing database {s.erp_database} in {self.erp_dir}")
            return
        started = time.monotonic()
        if s.erp_template_cache is not None:
            self.echo(
                f"erp: database {s.erp_database} from the template cache in "
                f"{s.erp_template_cache} (bootstrapped there first if absent, about 30 s)"
            )
            template = tryton_bootstrap.seed_from_template_cache(
                s.erp_template_cache,
                self.erp_dir,
                s.erp_database,
                s.erp_user,
                s.erp_password.get_secret_value(),
            )
            seconds = time.monotonic() - started
            self.echo(f"erp: ready in {seconds:.1f} s (template {template.name})")
            return
        self.echo(f"erp: bootstrapping database {s.erp_database} (once, about 30 s)")
        tryton_bootstrap.bootstrap_database(
            self.erp_dir,
            s.erp_database,
            admin_password_file.read_text().strip(),
            s.erp_user,
            s.erp_password.get_secret_value(),
        )
        self.echo(f"erp: bootstrapped in {time.monotonic() - started:.0f} s")

    def _migrate_store(self) -> None:
        store = build_store(self.settings)
        try:
            store.migrate()
        except Exception as err:
            raise StackError(f"store: migration failed: {err}") from err
        finally:
            store.dispose()

    def _start(self, component: Component, env: dict[str, str]) -> None:
        self._spawn(component, env)
        self._wait_ready(component)

    def _spawn(self, component: Component, env: dict[str, str]) -> None:
        log_path = self.logs_dir / f"{component.name}.log"
        component.log_file = log_path.open("ab")
        try:
            component.process = subprocess.Popen(
                component.command,
                stdout=component.log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**env, **component.env},
                cwd=self.home.parent,
                start_new_session=True,  # Ctrl-C reaches the supervisor, which stops in order
            )
        except OSError as err:
            raise StackError(f"{component.name}: could not start: {err}") from err
        component.started_at = time.monotonic()

    def _wait_ready(self, *components: Component) -> None:
        """Until every one is ready, in the order they become so; the first that dies or
        overruns its startup time stops the wait, whichever of them it is."""
        waiting = list(components)
        while waiting:
            for component in list(waiting):
                process = component.process
                assert process is not None, f"{component.name} was never spawned"
                if component.ready():
                    waiting.remove(component)
                    log_path = self.logs_dir / f"{component.name}.log"
                    self.echo(
                        f"{component.name}: ready, listening on {component.listens} (pid "
                        f"{process.pid}, log {log_path.relative_to(self.home.parent)})"
                    )
                elif process.poll() is not None:
                    raise StackError(
                        f"{component.name}: exited with code {process.returncode} while "
                        f"starting; last log lines:\n{self.tail(component.name)}"
                    )
                elif time.monotonic() > component.started_at + component.startup_seconds:
                    raise StackError(
                        f"{component.name}: not ready after {component.startup_seconds:.0f} s; "
                        f"last log lines:\n{self.tail(component.name)}"
                    )
            if waiting:
                time.sleep(0.1)

    def restart(self, name: str, sig: int = signal.SIGKILL, down_seconds: float = 0.0) -> int:
        """Stop one component with `sig` (SIGKILL: a crash; SIGTERM: an orderly stop), leave it
        down `down_seconds`, start it again with the same command and environment and wait
        until it is ready; returns the new pid. For chaos runs: `up` never calls it."""
        component = next((c for c in self.components if c.name == name), None)
        if component is None or component.process is None:
            raise StackError(f"{name}: not a running component of this stack")
        process = component.process
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        if component.log_file is not None:
            component.log_file.close()
            component.log_file = None
        time.sleep(down_seconds)
        if name == "worker":
            # Pollers of the killed worker stay listed for minutes: wait for this one's.
            component.ready = lambda: self._worker_ready(component.process)
        self._start(component, self.child_env())
        assert component.process is not None
        return component.process.pid

    def tail(self, name: str, lines: int = 8) -> str:
        path = self.logs_dir / f"{name}.log"
        if not path.exists():
            return "(no log)"
        text = path.read_bytes()[-8000:].decode(errors="replace").splitlines()
        return "\n".join(f"  | {line}" for line in text[-lines:])

    def failed_component(self) -> Component | None:
        for component in self.components:
            if component.process is not None and component.process.poll() is not None:
                return component
        return None

    def supervise(self, should_stop: Callable[[], bool]) -> None:
        """Block until asked to stop; raise StackError when a component dies on its own."""
        while not should_stop():
            failed = self.failed_component()
            if failed is not None:
                code = failed.process.returncode if failed.process else None
                raise StackError(
                    f"{failed.name}: stopped unexpectedly (exit code {code}); last log lines:\n"
                    f"{self.tail(failed.name)}"
                )
            time.sleep(0.5)

    def stop(self) -> None:
        for component in reversed(self.components):
            process = component.process
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
                self.echo(f"{component.name}: stopped")
            if component.log_file is not None:
                component.log_file.close()
                component.log_file = None
        self.components = []
        self.prometheus_port_file.unlink(missing_ok=True)
