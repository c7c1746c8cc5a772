"""The end-to-end stack for one test: dev server, real Tryton, both sandboxes, API, worker.

Everything talks over real HTTP and gRPC on loopback; only the processes are shared
(dev server and Tryton per session; sandboxes, API and worker per test with unique queues).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import pytest_asyncio
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from adapters import metrics
from adapters.billing.webhook_signature import sign_stripe
from adapters.bootstrap import Adapters, build_adapters
from adapters.mapping_file import MappingFile
from adapters.ports import Ledger
from adapters.settings import Settings
from adapters.system_health import recording_system_health
from sandbox.billing.driver import BillingDriver
from starters.api import create_app
from starters.api.auth import key_entry
from starters.local.catalog import ensure_local_catalog
from tests.fixtures.billing import BillingSandbox
from tests.fixtures.faults import FaultProxyHandle, serve_fault_proxy
from tests.fixtures.servers import free_port, serve_app
from tests.fixtures.support import SupportSandbox
from tests.fixtures.tryton import TrytonServer
from workers.main import build_workers, run_until_stopped

T = TypeVar("T")
# What e2e tests sell: a product of the local catalogue, which finance's mapping covers.
SOLD_PRODUCT = "prod_lb_platform"
API_KEYS = {role: f"lb_test_{role}_key" for role in ("support", "finance", "finance_admin", "ops")}


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str, within: float = 60) -> T:
    deadline = time.monotonic() + within
    while True:
        value = await probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within} s")
        await asyncio.sleep(0.2)


def scrape(url: str) -> metrics.Samples:
    """A Prometheus endpoint's samples, by name and labels."""
    answer = httpx.get(url, timeout=10)
    answer.raise_for_status()
    return metrics.parse_samples(answer.text)


metric = metrics.total


@dataclass
class Stack:
    settings: Settings
    client: Client
    adapters: Adapters
    billing: BillingSandbox
    support: SupportSandbox
    tryton: TrytonServer
    erp_faults: FaultProxyHandle
    api_url: str
    tmp_path: Path
    driver: BillingDriver  # acts as billing's customers and admins do

    def start_worker_process(self) -> subprocess.Popen[bytes]:
        log = (self.tmp_path / "worker.log").open("ab")
        return subprocess.Popen(
            [sys.executable, "-m", "workers"],
            env={**os.environ, **self.settings.to_env()},
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def deliver_billing(stack: Stack, body: bytes) -> httpx.Response:
    """`body` delivered to the API's billing webhook, signed as billing signs it."""
    secret = stack.settings.billing_webhook_secrets[0].get_secret_value()
    headers = {"Stripe-Signature": sign_stripe(body, secret, int(time.time()))}
    return httpx.post(f"{stack.api_url}/webhooks/stripe", content=body, headers=headers, timeout=30)


async def customer_updated(stack: Stack, name: str) -> bytes:
    """A new billing customer and billing's `customer.updated` event about it: account sync
    then calls support and the ERP."""
    customer = await stack.driver.create_customer(
        name, idempotency_key=f"{name.lower().replace(' ', '-')}/{uuid.uuid4().hex}"
    )
    return json.dumps(
        {
            "id": f"evt_{uuid.uuid4().hex[:16]}",
            "type": "customer.updated",
            "created": int(time.time()),
            "data": {"object": {"object": "customer", "id": customer.id}},
        }
    ).encode()


@contextlib.contextmanager
def _served(app: Any, port: int) -> Iterator[str]:
    with serve_app(app, port=port) as url:
        yield url


@pytest_asyncio.fixture
async def stack(
    request: pytest.FixtureRequest,
    dev_server_env: WorkflowEnvironment,
    tryton_server: TrytonServer,
    billing_sandbox: BillingSandbox,
    support_sandbox: SupportSandbox,
    queue_prefix: str,
    tmp_path: Path,
) -> AsyncIterator[Stack]:
    stack_resources = contextlib.ExitStack()
    api_port = free_port()
    # The ERP sits behind the fault proxy in every e2e test; tests add rules when they need.
    erp_faults = stack_resources.enter_context(serve_fault_proxy(tryton_server.url))
    endpoint = billing_sandbox.add_webhook_endpoint(f"http://127.0.0.1:{api_port}/webhooks/stripe")
    # The ingress acts on credit fields changing on a ticket, so that is what it subscribes to.
    support_secret = support_sandbox.add_webhook_endpoint(
        f"http://127.0.0.1:{api_port}/webhooks/zendesk",
        ["zen:event-type:ticket.custom_field_changed"],
    )
    settings = Settings(
        home=tmp_path / "home",
        temporal_address=dev_server_env.client.service_client.config.target_host,
        task_queue_prefix=queue_prefix,
        store_url=f"sqlite:///{tmp_path / 'store.sqlite'}",
        billing_url=billing_sandbox.url,
        billing_api_key=SecretStr(billing_sandbox.api_key),
        billing_webhook_secrets=[SecretStr(endpoint.secret)],
        support_url=support_sandbox.url,
        support_email=support_sandbox.email,
        support_api_token=SecretStr(support_sandbox.api_token),
        support_webhook_secrets=[SecretStr(support_secret)],
        erp_url=erp_faults.url,
        erp_database=tryton_server.database,
        erp_user=tryton_server.user,
        erp_password=SecretStr(tryton_server.password),
        api_port=api_port,
        api_keys=[key_entry(f"test-{role}", role, key) for role, key in API_KEYS.items()],
        # A test may change settings: @pytest.mark.parametrize("stack", [{...}], indirect=True)
        **_stack_settings(request, tmp_path),
    )
    adapters = build_adapters(settings)
    adapters.store.migrate()
    # Billing's catalogue and finance's mapping of it, as `ledgerbridge up` makes them.
    await ensure_local_catalog(settings, echo=lambda _: None)
    driver = billing_sandbox.driver()
    with _served(create_app(settings), api_port) as api_url:
        yield Stack(
            settings,
            dev_server_env.client,
            adapters,
            billing_sandbox,
            support_sandbox,
            tryton_server,
            erp_faults,
            api_url,
            tmp_path,
            driver,
        )
    await driver.aclose()
    await adapters.aclose()
    stack_resources.close()


def _stack_settings(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """The settings a test asks for; `erp_routing_text` is written as the stack's routing
    file, with the session's NetSuite sandbox as its `netsuite` ERP."""
    changes = dict(getattr(request, "param", {}))
    routing = changes.pop("erp_routing_text", None)
    if routing is not None:
        path = tmp_path / "erp-routing.toml"
        path.write_text(routing)
        netsuite = request.getfixturevalue("netsuite_server")
        c = netsuite.credentials
        changes.update(
            erp_routing=path, netsuite_url=netsuite.url, netsuite_account_id=c.account_id,
            netsuite_consumer_key=c.consumer_key,
            netsuite_consumer_secret=SecretStr(c.consumer_secret), netsuite_token_id=c.token_id,
            netsuite_token_secret=SecretStr(c.token_secret),
        )  # fmt: skip
    return changes


@contextlib.asynccontextmanager
async def worker_running(
    stack: Stack, client: Client, ledgers: dict[str, Ledger] | None = None
) -> AsyncIterator[None]:
    """The stack's workers, on `client`, in this process until the block ends; `ledgers`
    wire ERPs of the routing to adapters of their own (the settings name one ERP's URL),
    closed with the workers."""
    adapters = build_adapters(stack.settings)
    for name, ledger in (ledgers or {}).items():
        replaced = adapters.ledgers.get(name)
        if replaced is not None:
            await replaced.aclose()
        adapters.ledgers[name] = ledger
    workers = build_workers(
        client,
        adapters,
        stack.settings.task_queue_prefix,
        finance_mapping=MappingFile(stack.settings.resolved_finance_mapping()),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_until_stopped(workers, stop))
    try:
        async with recording_system_health(adapters.store, every=1.0):
            yield
    finally:
        stop.set()
        await task
        await adapters.aclose()


@pytest_asyncio.fixture
async def in_process_worker(stack: Stack) -> AsyncIterator[None]:
    async with worker_running(stack, stack.client):
        yield


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
