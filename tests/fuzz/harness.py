"""The app under hostile input: built by `create_app(Settings(...))` as the e2e stack builds it,
but with Temporal replaced by a recorder and billing, support and the ERP on a port where
nothing listens, so every door can be knocked on without a server behind it.

The recorder answers as its `mode` says (`accepting`, `unavailable`: every RPC fails,
`down`: no connection at all) and notes each call, and whether it took effect: a workflow
started, a signal or an update delivered. "No workflow started" is then a plain assertion.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import func, select
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from adapters.settings import Settings
from adapters.store import IntegrationStore
from adapters.store.models import Base
from starters.api import create_app
from starters.api.auth import key_entry
from starters.api.temporal import TemporalUnavailable
from tests.fixtures.servers import free_port

ROLES = ("support", "finance", "finance_admin", "ops")
API_KEYS = {role: f"lb_fuzz_{role}_key" for role in ROLES}
# The most powerful role, so an expired key that still worked could do nearly anything.
EXPIRED_KEY = "lb_fuzz_expired_key"
EXPIRED_ON = "2020-01-01"
BILLING_SECRET = "whsec_fuzz_billing"
SUPPORT_SECRET = "zdsec_fuzz_support"

Mode = Literal["accepting", "unavailable", "down"]
MODES: tuple[Mode, ...] = ("accepting", "unavailable", "down")


@dataclass(frozen=True)
class TemporalCall:
    method: str
    workflow_id: str | None
    took_effect: bool  # the server would now hold a new workflow, signal or update
    arg: Any = None  # what a start was given


@dataclass
class RecordingTemporal:
    """Stands in for `temporalio.client.Client` behind `TemporalConnection.client()`."""

    mode: Mode = "accepting"
    calls: list[TemporalCall] = field(default_factory=list)
    started: set[str] = field(default_factory=set)  # workflows "running", across examples
    unmodelled: list[str] = field(default_factory=list)

    def reset(self, mode: Mode = "accepting") -> None:
        self.mode = mode
        self.calls.clear()
        self.unmodelled.clear()

    def effective(self) -> list[TemporalCall]:
        return [call for call in self.calls if call.took_effect]

    async def connect(self) -> RecordingTemporal:
        """Replaces `TemporalConnection.client`."""
        if self.mode == "down":
            raise TemporalUnavailable("fuzz: no connection to the workflow engine")
        return self

    def note(
        self, method: str, workflow_id: str | None, took_effect: bool = False, arg: Any = None
    ) -> None:
        self.calls.append(TemporalCall(method, workflow_id, took_effect, arg))

    def fail_if_unavailable(self) -> None:
        if self.mode == "unavailable":
            raise RPCError("fuzz: unavailable", RPCStatusCode.UNAVAILABLE, b"")

    # -- the part of Client the API uses -------------------------------------------------

    async def start_workflow(
        self, workflow: Any, arg: Any = None, *, id: str, **options: Any
    ) -> Any:
        if self.mode == "unavailable":
            self.note("start_workflow", id)
            self.fail_if_unavailable()
        fail_on_conflict = options.get("id_conflict_policy") == WorkflowIDConflictPolicy.FAIL
        if fail_on_conflict and id in self.started:
            self.note("start_workflow", id)
            raise WorkflowAlreadyStartedError(id, "fuzz")
        self.started.add(id)
        self.note("start_workflow", id, took_effect=True, arg=arg)
        return _Handle(self, id, "fuzz-run")

    def get_workflow_handle(self, workflow_id: str, *, run_id: str | None = None, **_: Any) -> Any:
        return _Handle(self, workflow_id, run_id)

    def list_workflows(self, query: str = "", **_: Any) -> _Listing:
        self.note("list_workflows", None)
        return _Listing(self)

    async def count_workflows(self, query: str = "", **_: Any) -> Any:
        self.note("count_workflows", None)
        self.fail_if_unavailable()
        return SimpleNamespace(count=0)  # no workflow matches, like the listing

    @property
    def service_client(self) -> RecordingTemporal:
        return self

    async def check_health(self, **_: Any) -> bool:
        self.note("check_health", None)
        self.fail_if_unavailable()
        return True

    def __getattr__(self, name: str) -> Any:
        # An API path using more of Client than modelled here must fail loudly, not as a 500.
        if name.startswith("_"):  # Python's and hypothesis' own probes (_repr_pretty_)
            raise AttributeError(name)
        self.unmodelled.append(name)
        raise AttributeError(f"RecordingTemporal does not model Client.{name}")


@dataclass
class _Listing:
    """No workflow matches a fuzzed filter; with every RPC failing, the listing fails."""

    temporal: RecordingTemporal
    current_page: list[Any] = field(default_factory=list)
    next_page_token: bytes | None = None

    def __aiter__(self) -> _Listing:
        return self

    async def fetch_next_page(self, **_: Any) -> None:
        self.temporal.fail_if_unavailable()

    async def __anext__(self) -> Any:
        self.temporal.fail_if_unavailable()
        raise StopAsyncIteration


@dataclass
class _Handle:
    temporal: RecordingTemporal
    id: str
    result_run_id: str | None

    async def _missing(self, method: str) -> Any:
        # Fuzzed ids name no workflow: NOT_FOUND, unless every RPC fails.
        self.temporal.note(method, self.id)
        self.temporal.fail_if_unavailable()
        raise RPCError(f"workflow not found for ID: {self.id}", RPCStatusCode.NOT_FOUND, b"")

    async def query(self, *_: Any, **__: Any) -> Any:
        return await self._missing("query")

    async def describe(self, **_: Any) -> Any:
        return await self._missing("describe")

    async def result(self, **_: Any) -> Any:
        return await self._missing("result")

    async def execute_update(self, *_: Any, **__: Any) -> Any:
        return await self._missing("execute_update")

    async def signal(self, *_: Any, **__: Any) -> Any:
        return await self._missing("signal")


@dataclass(repr=False)  # hypothesis prints fixtures of a failing example: keep it short
class Harness:
    app: FastAPI
    client: TestClient
    temporal: RecordingTemporal
    store: IntegrationStore
    settings: Settings

    def __repr__(self) -> str:
        return f"Harness(temporal={self.temporal!r})"

    def _repr_pretty_(self, printer: Any, _cycle: bool) -> None:
        printer.text(repr(self))

    def rows(self) -> dict[str, int]:
        """Row count of every table of the store: what a rejected request must not change.
        Webhook receipts are stored just behind the answer: counted once they are."""
        deadline = time.monotonic() + 5
        while self.app.state.receipts.queued and time.monotonic() < deadline:
            time.sleep(0.005)
        with self.store.engine.connect() as connection:
            return {
                table.name: connection.execute(select(func.count()).select_from(table)).scalar_one()
                for table in Base.metadata.sorted_tables
            }


def fuzz_settings(home: Path, **overrides: Any) -> Settings:
    """Settings as the e2e stack makes them; every counterpart on a port nobody listens on."""
    nowhere = f"127.0.0.1:{free_port()}"
    values: dict[str, Any] = {
        "home": home,
        "temporal_address": nowhere,
        "task_queue_prefix": "fuzz",
        "store_url": f"sqlite:///{home / 'store.sqlite'}",
        "billing_url": f"http://{nowhere}",
        "billing_webhook_secrets": [SecretStr(BILLING_SECRET)],
        "support_url": f"http://{nowhere}",
        "support_webhook_secrets": [SecretStr(SUPPORT_SECRET)],
        "erp_url": f"http://{nowhere}",
        "api_keys": [
            *(key_entry(f"fuzz-{role}", role, key) for role, key in API_KEYS.items()),
            f"{key_entry('fuzz-expired', 'finance_admin', EXPIRED_KEY)}:{EXPIRED_ON}",
        ],
        # Rate limiting has its own tests; here it would only hide the routes behind 429s.
        "api_rate_limit_per_second": 1e6,
        "api_rate_burst": 10**6,
    }
    return Settings(**{**values, **overrides})


@contextmanager
def serve_harness(settings: Settings) -> Iterator[Harness]:
    app = create_app(settings)
    temporal = RecordingTemporal()
    # Every route reaches Temporal through this one TemporalConnection (app.state.temporal).
    app.state.temporal.client = temporal.connect
    # A 500 must come back as a response the properties can see, not as a test-side raise.
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Harness(app, client, temporal, app.state.store, settings)
