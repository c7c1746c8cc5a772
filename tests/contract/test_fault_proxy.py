"""The fault proxy (sandbox.faults) on its own, and TrytonLedger posting through it.

The second half is the failure that makes duplicate postings elsewhere: the ERP commits,
the answer is lost, the caller retries. Through the proxy, against the real Tryton, the
retry must adopt the committed document: one per reference, never two.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapters import metrics
from adapters.billing import StripeBilling
from adapters.erp import TrytonLedger
from adapters.errors import NotFoundError, RateLimitedError, TransientError
from canonical import Customer, LedgerLine, LedgerPosting, Money, PostedDocument
from tests.fixtures.billing import BillingSandbox
from tests.fixtures.faults import FaultProxyHandle, serve_fault_proxy
from tests.fixtures.servers import free_port, serve_app
from tests.fixtures.tryton import TrytonServer, stop_process

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CREATE = "model.account.invoice.create"
POST = "model.account.invoice.post"


# --- an upstream that counts what reaches it --------------------------------------------


class EchoUpstream:
    def __init__(self) -> None:
        self.received: Counter[str] = Counter()

    def app(self) -> Starlette:
        async def echo(request: Request) -> Response:
            body = await request.body()
            self.received[request.url.path] += 1
            status = int(request.query_params.get("status", "200"))
            if status == 204:
                return Response(status_code=204)
            return JSONResponse(
                {
                    "method": request.method,
                    "path": request.url.path,
                    "query": request.url.query,
                    "body": body.decode(),
                    "x_caller": request.headers.get("x-caller"),
                },
                status_code=status,
                headers={"X-Upstream": "echo"},
            )

        methods = ["GET", "POST", "PUT", "DELETE", "PATCH"]
        return Starlette(routes=[Route("/{path:path}", echo, methods=methods)])


@pytest.fixture(scope="module")
def echo() -> Iterator[tuple[EchoUpstream, str]]:
    upstream = EchoUpstream()
    with serve_app(upstream.app()) as url:
        yield upstream, url


@pytest.fixture
def proxied_echo(
    echo: tuple[EchoUpstream, str], fault_proxy: Callable[..., FaultProxyHandle]
) -> tuple[EchoUpstream, FaultProxyHandle]:
    upstream, url = echo
    upstream.received.clear()
    return upstream, fault_proxy(url, seed=7)


# --- the proxy itself -------------------------------------------------------------------


def test_without_rules_requests_and_answers_pass_through_unchanged(
    proxied_echo: tuple[EchoUpstream, FaultProxyHandle],
) -> None:
    upstream, proxy = proxied_echo
    with httpx.Client(base_url=proxy.url) as client:
        answers = [
            client.post("/v1/things?status=201&a=b", content=b"name=x", headers={"X-Caller": "t"})
            for _ in range(3)  # one kept-alive connection carries them all
        ]

    for answer in answers:
        assert answer.status_code == 201
        assert answer.headers["x-upstream"] == "echo"
        assert answer.json() == {
            "method": "POST",
            "path": "/v1/things",
            "query": "status=201&a=b",
            "body": "name=x",
            "x_caller": "t",
        }
    assert upstream.received["/v1/things"] == 3
    assert proxy.stats()["forwarded"] == 3


def test_head_and_no_content_answers_pass_through_without_a_body(
    proxied_echo: tuple[EchoUpstream, FaultProxyHandle],
) -> None:
    _, proxy = proxied_echo
    with httpx.Client(base_url=proxy.url) as client:
        head = client.head("/v1/things")
        empty = client.delete("/v1/things?status=204")
        after = client.get("/v1/things")  # the connection is still in step

    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) > 0
    assert empty.status_code == 204 and empty.content == b""
    assert after.json()["method"] == "GET"


def test_refuse_resets_the_connection_and_nothing_reaches_the_upstream(
    proxied_echo: tuple[EchoUpstream, FaultProxyHandle],
) -> None:
    upstream, proxy = proxied_echo
    proxy.add_rule("refuse")

    with pytest.raises(httpx.TransportError):
        httpx.post(f"{proxy.url}/v1/things", content=b"x")

    assert upstream.received["/v1/things"] == 0
    stats = proxy.stats()
    assert stats["faults"]["refuse"] == 1
    assert stats["forwarded"] == 0


def test_unavailable_and_rate_limited_answer_without_forwarding(
    proxied_echo: tuple[EchoUpstream, FaultProxyHandle],
) -> None:
    upstream, proxy = proxied_echo
    proxy.add_rule("unavailable", count=1)
    proxy.add_rule("rate_limited", retry_after=7, count=1)

    unavailable = httpx.get(f"{proxy.url}/v1/things")
    limited = httpx.get(f"{proxy.url}/v1/things")
    passed = httpx.get(f"{proxy.url}/v1/things")

    assert unavailable.status_code == 503
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "7")
    assert passed.status_code == 200
    assert upstream.received["/v1/things"] == 1
    assert proxy.stats()["faults"] == {
        "refuse": 0, "unavailable": 1, "rate_limited": 1, "latency": 0, "drop": 0,
    }  # fmt: skip


def test_latency_delays_then_forwards(
    proxied_echo: tuple[EchoUpstream, FaultProxyHandle],
) -> None:
    upstream, proxy = proxied_echo
    proxy.add_rule("latency", delay=0.3, count=1)

    started = time.monotonic()
    slow = httpx.get(f"{proxy.url}/v1/slow")
    slow_seconds = time.monotonic() - started
    started = time.monotonic()
    httpx.get(f"{proxy.url}/v1/slow")
    fast_seconds = time.monotonic() - started

    assert slow.status_code == 200
    assert slow_seconds >= 0.3 > fast_seconds
    assert upstream.received["/v1/slow"] == 2


def test_drop_lets_the_upstream_do_the_work_and_the_caller_sees_a_transport_error(
    proxied_echo: tuple[EchoUpstream, FaultProxyHandle],
) -> None:
    upstream, proxy = proxied_echo
    proxy.add_rule("drop", count=1)

    with pytest.raises(httpx.TransportError):
        httpx.post(f"{proxy.url}/v1/charges", content=b"amount=1")

    assert upstream.received["/v1/charges"] == 1
    stats = proxy.stats()
    assert (stats["forwarded"], stats["faults"]["drop"]) == (1, 1)


def test_drop_with_hang_makes_the_caller_time_out(
    proxied_echo: tuple[EchoUpstream, FaultProxyHandle],
) -> None:
    upstream, proxy = proxied_echo
    proxy.add_rule("drop", hang=30, count=1)

    started = time.monotonic()
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{proxy.url}/v1/charges", content=b"amount=1", timeout=0.5)

    assert time.monotonic() - started < 5
    assert upstream.received["/v1/charges"] == 1


def test_filters_pick_requests_by_path_method_and_body(
    proxied_echo: tuple[EchoUpstream, FaultProxyHandle],
) -> None:
    _, proxy = proxied_echo
    proxy.add_rule("unavailable", path="/v1/invoices*", method="POST", body_contains="finalize")

    def status(method: str, path: str, body: bytes = b"") -> int:
        return httpx.request(method, f"{proxy.url}{path}", content=body).status_code

    assert status("POST", "/v1/invoices/in_1", b"action=finalize") == 503
    assert status("POST", "/v1/invoices/in_1", b"action=void") == 200
    assert status("GET", "/v1/invoices/in_1", b"action=finalize") == 200
    assert status("POST", "/v1/customers", b"action=finalize") == 200


def test_count_stops_a_rule_after_n_faults_and_the_listing_says_so(
    proxied_echo: tuple[EchoUpstream, FaultProxyHandle],
) -> None:
    _, proxy = proxied_echo
    rule = proxy.add_rule("unavailable", count=2)

    statuses = [httpx.get(f"{proxy.url}/v1/x").status_code for _ in range(4)]

    assert statuses == [503, 503, 200, 200]
    (listed,) = proxy.rules()
    assert (listed["id"], listed["fired"], listed["remaining"]) == (rule["id"], 2, 0)


def test_probability_follows_the_seed_reproducibly(
    proxied_echo: tuple[EchoUpstream, FaultProxyHandle],
) -> None:
    _, proxy = proxied_echo

    def outcomes(seed: int) -> list[int]:
        proxy.set_rules([{"mode": "unavailable", "probability": 0.5}], seed=seed)
        with httpx.Client(base_url=proxy.url) as client:
            return [client.get("/v1/x").status_code for _ in range(40)]

    first, again, other = outcomes(11), outcomes(11), outcomes(12)

    assert first == again
    assert first != other
    assert 8 <= first.count(503) <= 32
    proxy.set_rules([{"mode": "unavailable", "probability": 0.0}])
    assert {httpx.get(f"{proxy.url}/v1/x").status_code for _ in range(10)} == {200}


def test_control_api_replaces_adds_clears_and_refuses_bad_rules(
    proxied_echo: tuple[EchoUpstream, FaultProxyHandle],
) -> None:
    _, proxy = proxied_echo
    proxy.set_rules([{"mode": "refuse"}, {"mode": "latency", "delay": 0.1}])
    proxy.add_rule("drop", count=1)
    assert [rule["mode"] for rule in proxy.rules()] == ["refuse", "latency", "drop"]

    proxy.set_rules([{"mode": "unavailable", "status": 502}])
    assert [(r["mode"], r["status"]) for r in proxy.rules()] == [("unavailable", 502)]
    assert httpx.get(f"{proxy.url}/v1/x").status_code == 502

    proxy.clear()
    assert proxy.rules() == []
    assert httpx.get(f"{proxy.url}/v1/x").status_code == 200
    for bad in ({"mode": "explode"}, {"mode": "latency"}, {"mode": "drop", "probability": 2}):
        answer = httpx.post(f"{proxy.url}/_faults/rules", json=bad)
        assert answer.status_code == 400, bad
    assert httpx.get(f"{proxy.url}/_faults/nothing").status_code == 404


def test_unreachable_upstream_is_a_502() -> None:
    with serve_fault_proxy(f"http://127.0.0.1:{free_port()}") as proxy:
        answer = httpx.get(f"{proxy.url}/v1/x")
        assert answer.status_code == 502
        assert proxy.stats()["upstream_errors"] == 1


def test_command_line_proxy_logs_where_it_listens_and_forwards(
    echo: tuple[EchoUpstream, str],
) -> None:
    upstream, url = echo
    upstream.received.clear()
    port = free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "sandbox.faults"),
            *("--listen-port", str(port), "--upstream", url, "--seed", "3"),
        ],
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"listening on http://127.0.0.1:{port} -> {url}" in line
        answer = httpx.put(f"http://127.0.0.1:{port}/_faults/rules", json=[{"mode": "refuse"}])
        assert answer.status_code == 200
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/v1/x")
        httpx.delete(f"http://127.0.0.1:{port}/_faults/rules").raise_for_status()
        assert httpx.get(f"http://127.0.0.1:{port}/v1/x").status_code == 200
    finally:
        stop_process(process)
    assert upstream.received["/v1/x"] == 1


# --- TrytonLedger through the proxy, against the real Tryton ----------------------------


@pytest.fixture(scope="module")
def erp_proxy(tryton_module_server: TrytonServer) -> Iterator[FaultProxyHandle]:
    with serve_fault_proxy(tryton_module_server.url, seed=1) as proxy:
        yield proxy


@pytest_asyncio.fixture
async def ledger(
    tryton_module_server: TrytonServer, erp_proxy: FaultProxyHandle
) -> AsyncIterator[TrytonLedger]:
    """A ledger whose every call crosses the proxy (logged in before any rule is set)."""
    erp_proxy.clear()
    erp_proxy.reset_stats()
    async with tryton_module_server.ledger(url=erp_proxy.url, timeout=5.0) as ledger:
        await ledger.login()
        yield ledger
    erp_proxy.clear()


@pytest_asyncio.fixture
async def direct(tryton_module_server: TrytonServer) -> AsyncIterator[TrytonLedger]:
    """A ledger straight to the ERP: what Tryton really holds, whatever the proxy does."""
    async with tryton_module_server.ledger() as ledger:
        yield ledger


@pytest_asyncio.fixture
async def upgrade(direct: TrytonLedger) -> LedgerPosting:
    customer = Customer(customer_id=f"cus_{uuid.uuid4().hex[:14]}", name="Fault Test Co")
    await direct.ensure_party(customer)
    return LedgerPosting(
        reference=f"in_{uuid.uuid4().hex[:16]}",
        kind="invoice",
        customer_id=customer.customer_id,
        currency="USD",
        lines=[
            LedgerLine(description="Unused Basic", quantity=Decimal(1), unit_price=Decimal("-5"),
                       erp_product="SUBSCRIPTION", revenue_account="4000"),
            LedgerLine(description="Remaining Pro", quantity=Decimal(1), unit_price=Decimal(25),
                       erp_product="SUBSCRIPTION", revenue_account="4000"),
        ],
        total=Money.of("20.00", "USD"),
        billing_date=dt.date(2026, 3, 9),
        description="Upgrade of sub_fault",
    )  # fmt: skip


async def documents_with(direct: TrytonLedger, reference: str) -> int:
    count = await direct.call("model.account.invoice.search_count", [("reference", "=", reference)])
    return int(count)


@pytest.mark.parametrize("outage", ["refuse", "unavailable"])
async def test_erp_down_is_transient_and_the_document_posts_once_when_it_is_back(
    ledger: TrytonLedger,
    direct: TrytonLedger,
    erp_proxy: FaultProxyHandle,
    upgrade: LedgerPosting,
    outage: str,
) -> None:
    erp_proxy.add_rule(outage)
    for _ in range(2):
        with pytest.raises(TransientError) as raised:
            await ledger.post_document(upgrade)
        assert raised.value.retryable is True
    assert await documents_with(direct, upgrade.reference) == 0

    erp_proxy.clear()
    document = await ledger.post_document(upgrade)

    assert document.created_now is True and document.state == "posted"
    assert await documents_with(direct, upgrade.reference) == 1
    assert erp_proxy.stats()["faults"][outage] >= 2


@pytest.mark.parametrize("lost", [CREATE, POST])
async def test_lost_answer_to_create_or_post_is_transient_and_the_retry_adopts_the_document(
    ledger: TrytonLedger,
    direct: TrytonLedger,
    erp_proxy: FaultProxyHandle,
    upgrade: LedgerPosting,
    lost: str,
) -> None:
    erp_proxy.add_rule("drop", body_contains=f'"{lost}"', count=1)

    with pytest.raises(TransientError):
        await ledger.post_document(upgrade)

    committed = await direct.find_document(upgrade.reference)
    assert committed is not None
    assert committed.state == ("draft" if lost == CREATE else "posted")

    retried = await ledger.post_document(upgrade)

    assert retried.erp_document_id == committed.erp_document_id
    assert retried.created_now is False
    assert retried.state == "posted" and retried.erp_number is not None
    assert retried.total == Money.of("20.00", "USD")
    assert await documents_with(direct, upgrade.reference) == 1
    assert erp_proxy.stats()["faults"]["drop"] == 1


async def test_answer_held_past_the_timeout_is_transient_and_the_retry_adopts_the_document(
    tryton_module_server: TrytonServer,
    direct: TrytonLedger,
    erp_proxy: FaultProxyHandle,
    upgrade: LedgerPosting,
) -> None:
    async with tryton_module_server.ledger(url=erp_proxy.url, timeout=1.0) as impatient:
        await impatient.login()
        erp_proxy.add_rule("drop", body_contains=f'"{POST}"', hang=30, count=1)
        try:
            with pytest.raises(TransientError, match="no answer in time"):
                await impatient.post_document(upgrade)
            retried = await impatient.post_document(upgrade)
        finally:
            erp_proxy.clear()

    assert retried.created_now is False and retried.state == "posted"
    assert await documents_with(direct, upgrade.reference) == 1


async def test_rate_limit_maps_to_rate_limited_error_with_retry_after(
    ledger: TrytonLedger, direct: TrytonLedger, erp_proxy: FaultProxyHandle, upgrade: LedgerPosting
) -> None:
    erp_proxy.add_rule("rate_limited", retry_after=7, count=1)

    with pytest.raises(RateLimitedError) as raised:
        await ledger.post_document(upgrade)

    assert raised.value.retry_after == 7.0
    assert raised.value.status == 429
    assert await documents_with(direct, upgrade.reference) == 0


async def test_two_workers_racing_on_one_reference_leave_one_document(
    tryton_module_server: TrytonServer,
    direct: TrytonLedger,
    erp_proxy: FaultProxyHandle,
    upgrade: LedgerPosting,
) -> None:
    # Two ledgers are two processes: no shared lock. Slowing every create makes both look
    # up (nothing), then both create: the re-check after create must keep it to one.
    erp_proxy.reset_stats()
    erp_proxy.add_rule("latency", delay=0.3, body_contains=f'"{CREATE}"')

    async def worker() -> PostedDocument:
        async with tryton_module_server.ledger(url=erp_proxy.url) as ledger:
            for _ in range(5):
                try:
                    return await ledger.post_document(upgrade)
                except TransientError:
                    await asyncio.sleep(0.1)
        raise AssertionError("never posted")

    try:
        documents = await asyncio.gather(worker(), worker())
    finally:
        erp_proxy.clear()

    # Both really created a draft (the race happened), and one document is left.
    assert erp_proxy.stats()["faults"]["latency"] >= 2
    assert documents[0].erp_document_id == documents[1].erp_document_id
    assert await documents_with(direct, upgrade.reference) == 1


# --- each adapter call counted by what the proxy made of it ------------------------------


def calls(system: str, operation: str, outcome: str) -> float:
    labels = {"system": system, "operation": operation, "outcome": outcome}
    return metrics.sample("ledgerbridge_adapter_calls_total", labels)


@pytest.mark.parametrize(
    ("rule", "outcome", "error"),
    [
        ({"mode": "rate_limited", "retry_after": 3}, "rate_limited", RateLimitedError),
        ({"mode": "unavailable"}, "unavailable", TransientError),
        ({"mode": "drop"}, "lost_answer", TransientError),
    ],
)
async def test_an_erp_call_is_counted_by_what_the_proxy_answered(
    ledger: TrytonLedger,
    erp_proxy: FaultProxyHandle,
    upgrade: LedgerPosting,
    rule: dict[str, Any],
    outcome: str,
    error: type[Exception],
) -> None:
    before, ok = calls("erp", CREATE, outcome), calls("erp", CREATE, "ok")
    erp_proxy.add_rule(**rule, body_contains=f'"{CREATE}"', count=1)

    with pytest.raises(error):
        await ledger.post_document(upgrade)
    assert calls("erp", CREATE, outcome) == before + 1
    assert calls("erp", CREATE, "ok") == ok

    await ledger.post_document(upgrade)  # the retry
    assert calls("erp", CREATE, "ok") == ok + (0 if outcome == "lost_answer" else 1)


async def test_an_erp_answer_held_past_the_timeout_counts_as_a_timeout(
    tryton_module_server: TrytonServer, erp_proxy: FaultProxyHandle, upgrade: LedgerPosting
) -> None:
    before = calls("erp", POST, "timeout")
    async with tryton_module_server.ledger(url=erp_proxy.url, timeout=1.0) as impatient:
        await impatient.login()
        erp_proxy.add_rule("drop", body_contains=f'"{POST}"', hang=30, count=1)
        try:
            with pytest.raises(TransientError):
                await impatient.post_document(upgrade)
        finally:
            erp_proxy.clear()
    assert calls("erp", POST, "timeout") == before + 1


@pytest.mark.parametrize(
    ("mode", "outcome"), [("rate_limited", "rate_limited"), ("unavailable", "unavailable")]
)
async def test_a_billing_call_through_the_stripe_sdk_is_counted_by_what_the_proxy_answered(
    billing_sandbox: BillingSandbox, mode: str, outcome: str
) -> None:
    with serve_fault_proxy(billing_sandbox.url) as proxy:
        async with StripeBilling(proxy.url, billing_sandbox.api_key) as billing:
            before = calls("billing", "get_customer", outcome)
            proxy.add_rule(mode, count=1)
            with pytest.raises(TransientError):
                await billing.get_customer("cus_metrics_unknown")
            assert calls("billing", "get_customer", outcome) == before + 1
            not_found = calls("billing", "get_customer", "not_found")
            with pytest.raises(NotFoundError):  # the proxy now forwards: billing answers
                await billing.get_customer("cus_metrics_unknown")
            assert calls("billing", "get_customer", "not_found") == not_found + 1
