"""Ingress: signed webhooks accepted per second through /webhooks/stripe, against a bare loop.

    .venv/bin/python -m bench.ingress [--events 2000] [--clients 8] [--store sqlite|postgresql|auto]
                                      [--breakdown auto|always|never]

One Temporal dev server (private, in memory), no worker (the workflows just queue), in one run:
- ours: the real API (`starters.api.create_app`, under uvicorn in its own process, configured
  as `ledgerbridge api` runs it, with the real store) receives N signed Stripe
  `invoice.finalized` events (the first invoice of N subscriptions, ten per customer) from
  `--clients` concurrent HTTP clients on keep-alive connections: it verifies the signature,
  maps the event, routes it, looks the webhook receipt up (the lookups of a moment in one
  read), signals-with-start the subscription ledger, queues the receipt and answers 200 (the
  receipts are stored in batches, behind the answer). Acknowledgement latency is each POST's
  round trip as its client saw it.
- baseline: the same number of `signal_with_start` calls with the same ProcessStarts (made
  of events of the same shape by the same mapping, before the clock starts), from this script,
  with the same concurrency and a client connected like the API's.
Both sides are warmed up first (200 untimed each), use their own task-queue prefix and ids,
and run in two rounds of N/2 in the order ours, baseline, baseline, ours.
When the p99 misses its target (or with --breakdown always), a second API process with
timers around each step serves half the load again and the time per request is broken down:
signature check, JSON, pydantic, mapping, routing, the store's receipt lookup (and the thread
hop to it), the Temporal call, the rest of the app, and HTTP outside the app; the batched
receipt writes behind the answer are shown per batch.
Figures are printed and merged into bench/results.json. Nothing asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Final, TypeVar

import httpx
import uvloop
from pydantic import SecretStr
from temporalio.client import Client

from adapters.billing.events import StripeEventPayload, to_business_event
from adapters.billing.webhook_signature import sign_stripe
from adapters.settings import Settings
from adapters.store import IntegrationStore
from adapters.temporal import connect_temporal
from bench._common import (
    cpu_seconds,
    dev_server,
    dev_server_pid,
    free_port,
    helper_process,
    machine_cpu_seconds,
    percentile,
    print_table,
    record,
    stripe_invoice_event,
)
from bench.ingress_telemetry import (
    TELEMETRY_RATIO,
    add_telemetry_options,
    discarding_otlp_sink,
    on_off_rounds,
    scraping,
)
from bench.reconciliation import database
from starters.routing import ProcessStart, route_billing_event, signal_with_start

TARGET_RATIO: Final = 0.8  # issue 19: >= 0.8x a bare signal-with-start
TARGET_P99_MS: Final = 50.0  # issue 19, at the same 8 clients
SECRET: Final = "whsec_bench_ingress"  # noqa: S105 - a throw-away secret of this run only
SUBSCRIPTIONS_PER_CUSTOMER: Final = 10
WARM_UP: Final = 200
CURRENCIES: Final = ["USD"]
WHOLE: Final = "app, whole request"
T = TypeVar("T")


# --- the events ---------------------------------------------------------------------------


def event_body(tag: str, n: int, created: int) -> bytes:
    """Invoice n of run `tag`, as billing would POST it (compact JSON, ~2 kB)."""
    event = stripe_invoice_event(
        event_id=f"evt_{tag}_{n:06d}",
        invoice_id=f"in_{tag}_{n:06d}",
        customer_id=f"cus_{n // SUBSCRIPTIONS_PER_CUSTOMER:05d}",
        subscription_id=f"sub_{tag}_{n:06d}",
        amount_minor=1_000 + (n * 7_919) % 90_000,
        created=created,
        number=f"BENCH-{n:06d}-0001",
    )
    return json.dumps(event, separators=(",", ":")).encode()


def signed_requests(tag: str, count: int) -> list[tuple[bytes, dict[str, str]]]:
    now = int(time.time())
    requests = []
    for n in range(count):
        body = event_body(tag, n, now)
        signature = sign_stripe(body, SECRET, now)
        headers = {"Content-Type": "application/json", "Stripe-Signature": signature}
        requests.append((body, headers))
    return requests


def process_starts(tag: str, count: int) -> list[ProcessStart]:
    """What the API would make of the same events: the baseline's input, built untimed."""
    starts = []
    for n in range(count):
        payload = StripeEventPayload.model_validate(
            json.loads(event_body(tag, n, int(time.time())))
        )
        routed = route_billing_event(to_business_event(payload, None), CURRENCIES)
        assert routed, "the bench's events each feed a process"
        starts.extend(routed)
    return starts


# --- the API, in its own process -------------------------------------------------------------


def api_settings(args: argparse.Namespace) -> Settings:
    return Settings(
        otel_exporter_otlp_endpoint=args.otlp,
        home=Path(args.home),
        temporal_address=args.temporal,
        task_queue_prefix=args.prefix,
        store_url=args.store_url,
        billing_webhook_secrets=[SecretStr(SECRET)],
        api_keys=[],
        log_level="WARNING",
        log_format="json",
    )


class Timings:
    """Per step, milliseconds of wall time and (for steps that run in one thread) of that
    thread's CPU; filled by the instrumented API, the thread pool's threads too."""

    def __init__(self) -> None:
        self.wall: dict[str, list[float]] = defaultdict(list)
        self.cpu: dict[str, list[float]] = defaultdict(list)

    def sync(self, name: str, fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> T:
            began, began_cpu = time.perf_counter(), time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.cpu[name].append((time.thread_time() - began_cpu) * 1000)
                self.wall[name].append((time.perf_counter() - began) * 1000)

        return timed

    def coroutine(self, name: str, fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        @functools.wraps(fn)
        async def timed(*args: Any, **kwargs: Any) -> T:
            began = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.wall[name].append((time.perf_counter() - began) * 1000)

        return timed


def instrument(store: IntegrationStore, timings: Timings) -> None:
    """Timers around each step of the webhook path, put in the names its modules look up."""
    import starters.api.intake as intake_module
    import starters.api.receipts as receipts_module
    import starters.api.webhooks as webhooks_module

    wrapped: dict[str, Any] = {
        "verify_stripe": timings.sync("verify signature", webhooks_module.verify_stripe),
        "json": SimpleNamespace(loads=timings.sync("json.loads", json.loads)),
        "StripeEventPayload": SimpleNamespace(
            model_validate=timings.sync(
                "pydantic StripeEventPayload", StripeEventPayload.model_validate
            )
        ),
        "to_business_event": timings.sync("to_business_event", to_business_event),
        "route_billing_event": timings.sync("route_billing_event", route_billing_event),
    }
    run_in_threadpool = receipts_module.run_in_threadpool

    async def hop(fn: Callable[..., T], *args: Any) -> T:  # the thread pool: wait + hop + work
        name = f"thread pool: {getattr(fn, '__name__', 'call')} (wait + hop + work)"
        return await timings.coroutine(name, run_in_threadpool)(fn, *args)

    for name, timed in wrapped.items():  # looked up by name at each request
        setattr(webhooks_module, name, timed)
    intake_module.signal_with_start = timings.coroutine(  # type: ignore[assignment]
        "Temporal signal_with_start", signal_with_start
    )
    receipts_module.run_in_threadpool = hop  # type: ignore[assignment]
    store.webhook_receipts_among = timings.sync(  # type: ignore[method-assign]
        "store: receipt lookups, batched (in thread)",
        store.webhook_receipts_among,
    )
    store.record_webhook_receipts = timings.sync(  # type: ignore[method-assign]
        "store: receipts write, batched behind the answer (in thread)",
        store.record_webhook_receipts,
    )


def timed_asgi(app: Any, timings: Timings) -> Any:
    """The app with its whole-request time measured, and /_bench/timings to read it."""

    async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/_bench/timings":
            if scope["method"] == "DELETE":
                timings.wall.clear()
                timings.cpu.clear()
            body = json.dumps({"wall": timings.wall, "cpu": timings.cpu}).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})  # fmt: skip
            await send({"type": "http.response.body", "body": body})
            return
        began = time.perf_counter()
        try:
            await app(scope, receive, send)
        finally:
            if scope["type"] == "http":
                timings.wall[WHOLE].append((time.perf_counter() - began) * 1000)

    return asgi


async def serve_api(args: argparse.Namespace) -> None:
    import uvicorn

    from adapters.logs import configure_logging
    from starters.api import create_app

    settings = api_settings(args)
    configure_logging(settings.log_level, settings.log_format)
    store = IntegrationStore(args.store_url)
    app: Any = create_app(settings, store)
    if args.instrument:
        timings = Timings()
        instrument(store, timings)
        app = timed_asgi(app, timings)
    # As `ledgerbridge api` runs it: one process, no access log.
    config = uvicorn.Config(app, host="127.0.0.1", port=args.port, log_config=None,
                            access_log=False, lifespan="on")  # fmt: skip
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving  # raises what stopped it
            return
        await asyncio.sleep(0.05)
    await asyncio.sleep(1)  # the lifespan's Temporal connection is warm by now
    print("ready", flush=True)
    await serving


def api_args(
    address: str, store_url: str, port: int, prefix: str, home: str, otlp: str | None = None
) -> list[str]:
    args = ["-m", "bench.ingress", "--serve-api", "--temporal", address, "--store-url",
            store_url, "--port", str(port), "--prefix", prefix, "--home", home]  # fmt: skip
    return [*args, "--otlp", otlp] if otlp else args


# --- the two sides ---------------------------------------------------------------------------


@dataclass
class Side:
    label: str
    count: int
    seconds: float
    latencies_ms: list[float]
    failures: dict[str, int]
    cpu: dict[str, float]

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def cpu_ms(self, *processes: str) -> float:
        """CPU milliseconds per request the named processes used while it ran."""
        return sum(self.cpu.get(p, 0.0) for p in processes) * self.seconds * 1000 / self.count

    def p(self, q: float) -> float:
        return percentile(self.latencies_ms, q)


def merged(sides: list[Side]) -> Side:
    """Rounds of one side as one: counts and seconds add up, CPU shares weighed by time."""
    seconds = sum(s.seconds for s in sides)
    failures: dict[str, int] = defaultdict(int)
    for side in sides:
        for kind, n in side.failures.items():
            failures[kind] += n
    cpu = {name: sum(s.cpu[name] * s.seconds for s in sides) / seconds for name in sides[0].cpu}
    latencies = [ms for s in sides for ms in s.latencies_ms]
    return Side(sides[0].label, len(latencies), seconds, latencies, dict(failures), cpu)


async def closed_loop(
    items: Iterable[T], clients: int, call: Callable[[T], Awaitable[str | None]]
) -> tuple[float, list[float], dict[str, int]]:
    """`clients` callers, each taking the next item when its previous call returned: seconds,
    latency per call (ms), failures by kind (a call returning a string failed)."""
    pending = iter(items)
    latencies: list[float] = []
    failures: dict[str, int] = defaultdict(int)

    async def caller() -> None:
        for item in pending:
            began = time.perf_counter()
            failure = await call(item)
            latencies.append((time.perf_counter() - began) * 1000)
            if failure:
                failures[failure] += 1

    began = time.monotonic()
    await asyncio.gather(*(caller() for _ in range(clients)))
    return time.monotonic() - began, latencies, dict(failures)


Outcome = tuple[float, list[float], dict[str, int]]  # seconds, latencies (ms), failures


async def measured(label: str, pids: dict[str, int], run: Callable[[], Awaitable[Outcome]]) -> Side:
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    machine_before = machine_cpu_seconds()
    seconds, latencies, failures = await run()
    cpu = {name: (cpu_seconds(pid) - before[name]) / seconds for name, pid in pids.items()}
    others = (machine_cpu_seconds() - machine_before) / seconds - sum(cpu.values())
    cpu["others"] = max(0.0, others)  # the two clocks differ a little
    return Side(label, len(latencies), seconds, latencies, failures, cpu)


async def post_all(
    url: str, requests: list[tuple[bytes, dict[str, str]]], clients: int
) -> tuple[float, list[float], dict[str, int]]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:

        async def post(request: tuple[bytes, dict[str, str]]) -> str | None:
            response = await http.post("/webhooks/stripe", content=request[0], headers=request[1])
            if response.status_code != 200:
                return f"HTTP {response.status_code}"
            status = response.json().get("status")
            return None if status == "accepted" else f"status {status}"

        return await closed_loop(requests, clients, post)


async def signal_all(
    client: Client, starts: list[ProcessStart], prefix: str, clients: int
) -> tuple[float, list[float], dict[str, int]]:
    async def call(start: ProcessStart) -> str | None:
        await signal_with_start(client, start, prefix)
        return None

    return await closed_loop(starts, clients, call)


# --- the breakdown ---------------------------------------------------------------------------


@dataclass
class Breakdown:
    side: Side
    wall: dict[str, list[float]]  # ms per step
    cpu: dict[str, list[float]]  # ms of the step's thread's CPU, for steps in one thread


async def breakdown(
    address: str, store_url: str, home: str, count: int, clients: int, logs: Path
) -> Breakdown:
    """Half the load again, through an API with timers around each step."""
    port, prefix = free_port(), f"timed-{uuid.uuid4().hex[:6]}."
    args = [*api_args(address, store_url, port, prefix, home), "--instrument"]
    async with helper_process(args, logs / "api-timed.log") as api:
        url = f"http://127.0.0.1:{port}"
        await post_all(url, signed_requests(uuid.uuid4().hex[:6], WARM_UP), clients)
        httpx.delete(f"{url}/_bench/timings", timeout=10)
        requests = signed_requests(uuid.uuid4().hex[:6], count // 2)
        side = await measured("ours, timed", {"api": api.pid},
                              lambda: post_all(url, requests, clients))  # fmt: skip
        timings = httpx.get(f"{url}/_bench/timings", timeout=10).json()
    return Breakdown(side, timings["wall"], timings["cpu"])


LOOKUP = IntegrationStore.webhook_receipts_among.__name__


def breakdown_lines(b: Breakdown) -> list[str]:
    n = b.side.count
    lines = [
        f"where an acknowledgement's time goes (a second API with timers around each step, "
        f"{n} webhooks at {b.side.rate:.0f}/s; p50 {b.side.p(50):.1f} ms, "
        f"p99 {b.side.p(99):.1f} ms as the clients saw it), ms per request:",
        f"  {'step':<58} {'mean':>7} {'p50':>7} {'p99':>7} {'CPU':>6}",
    ]
    parts = sorted(((k, v) for k, v in b.wall.items() if k != WHOLE), key=lambda kv: -sum(kv[1]))
    for name, values in [*parts, (WHOLE, b.wall.get(WHOLE, []))]:
        if values:
            p50, p99 = percentile(values, 50), percentile(values, 99)
            cpu = f"{sum(b.cpu[name]) / n:6.2f}" if name in b.cpu else f"{'':>6}"
            lines.append(f"  {name:<58} {sum(values) / n:7.2f} {p50:7.2f} {p99:7.2f} {cpu}")
    outside = sum(b.side.latencies_ms) / n - sum(b.wall.get(WHOLE, [])) / n
    lines.append(f"  {'outside the app (HTTP client, uvicorn, loop)':<58} {outside:7.2f}")
    whole_ms = sum(b.wall.get(WHOLE, [])) / n
    temporal_ms = sum(b.wall.get("Temporal signal_with_start", [])) / n
    lookup_ms = sum(b.wall.get(f"thread pool: {LOOKUP} (wait + hop + work)", [])) / n
    if whole_ms:
        lines.append(
            f"  of the app's {whole_ms:.1f} ms, the Temporal call is {temporal_ms / whole_ms:.0%} "
            f"and the receipt lookups through the thread pool {lookup_ms / whole_ms:.0%} (the "
            f"receipt writes are behind the answer; both batched, amortised per request); with a "
            f"fixed number of senders (rate = senders / latency) that caps ours near "
            f"{temporal_ms / whole_ms:.2f} x a bare loop at the same concurrency"
        )
    steps_cpu = sum(sum(v) for v in b.cpu.values()) / n
    lines.append(
        f"  CPU: the API process used {b.side.cpu_ms('api'):.2f} ms per request, "
        f"{steps_cpu:.2f} ms of it in the steps above that run in one thread; the rest is "
        f"uvicorn, FastAPI/Starlette, the Temporal client and the event loop"
    )
    return lines


# --- the report -------------------------------------------------------------------------------


async def bench(args: argparse.Namespace) -> None:
    with (
        database(args.store) as (store_url, store_label),
        tempfile.TemporaryDirectory(prefix="ledgerbridge-bench-") as home,
    ):
        logs = Path(home)
        store = IntegrationStore(store_url)
        store.migrate()
        store.dispose()
        async with dev_server() as env:
            address = env.client.service_client.config.target_host
            client = await connect_temporal(address, "default")
            server = dev_server_pid()
            port, prefix = free_port(), f"api-{uuid.uuid4().hex[:6]}."
            on_port, on_prefix = free_port(), f"api-on-{uuid.uuid4().hex[:6]}."
            async with (
                discarding_otlp_sink() as sink,
                helper_process(api_args(address, store_url, port, prefix, home),
                               logs / "api.log") as api,
                helper_process(api_args(address, store_url, on_port, on_prefix, home, sink.url),
                               logs / "api-telemetry.log") as api_on,
            ):  # fmt: skip
                url = f"http://127.0.0.1:{port}"
                on_url = f"http://127.0.0.1:{on_port}"
                pids = {"api": api.pid, "bench": os.getpid()}
                on_pids = {"api": api_on.pid, "bench": os.getpid()}
                if server:
                    pids["temporal"] = on_pids["temporal"] = server
                base_prefix = f"bare-{uuid.uuid4().hex[:6]}."
                # Untimed first: connections, caches, the server's first workflows.
                await post_all(url, signed_requests(uuid.uuid4().hex[:6], WARM_UP), args.clients)
                await post_all(on_url, signed_requests(uuid.uuid4().hex[:6], WARM_UP),
                               args.clients)  # fmt: skip
                await signal_all(client, process_starts(uuid.uuid4().hex[:6], WARM_UP),
                                 base_prefix, args.clients)  # fmt: skip
                # ABBA, half the events a round: drift (the server filling up, other people's
                # load coming and going) falls on both sides alike.
                half = args.events // 2
                batches = [signed_requests(uuid.uuid4().hex[:6], half) for _ in range(2)]
                bare = [process_starts(uuid.uuid4().hex[:6], half) for _ in range(2)]

                async def ours_round(
                    requests: list[tuple[bytes, dict[str, str]]], side: str = "ours"
                ) -> Side:
                    return await measured(
                        f"{side}: POST /webhooks/stripe", pids,
                        lambda: post_all(url, requests, args.clients),
                    )  # fmt: skip

                async def baseline_round(starts: list[ProcessStart]) -> Side:
                    return await measured(
                        "baseline: signal_with_start", pids,
                        lambda: signal_all(client, starts, base_prefix, args.clients),
                    )  # fmt: skip

                first = await ours_round(batches[0])
                baseline = merged([await baseline_round(bare[0]), await baseline_round(bare[1])])
                ours = merged([first, await ours_round(batches[1])])
                # Telemetry off and on, ABBA again: the same API, one with traces exported and
                # /metrics scraped (as the shipped Prometheus does, unless --scrape-every), the
                # other as configured by default.
                cycles = args.telemetry_cycles
                on_batches = [
                    signed_requests(uuid.uuid4().hex[:6], half) for _ in range(2 * cycles)
                ]

                async def telemetry_round(requests: list[tuple[bytes, dict[str, str]]]) -> Side:
                    async with scraping(f"{on_url}/metrics", every=args.scrape_every):
                        return await measured(
                            "telemetry on: POST /webhooks/stripe", on_pids,
                            lambda: post_all(on_url, requests, args.clients),
                        )  # fmt: skip

                off_batches = [
                    signed_requests(uuid.uuid4().hex[:6], half) for _ in range(2 * cycles)
                ]
                off_left, on_left = iter(off_batches), iter(on_batches)
                off_rounds, on_rounds = await on_off_rounds(
                    cycles,
                    lambda: ours_round(next(off_left), "telemetry off"),
                    lambda: telemetry_round(next(on_left)),
                )
                on, off = merged(on_rounds), merged(off_rounds)
                spans = sink.requests
            timed: Breakdown | None = None
            if args.breakdown == "always" or (
                args.breakdown == "auto" and ours.p(99) >= TARGET_P99_MS
            ):
                timed = await breakdown(address, store_url, home, args.events, args.clients, logs)
    report(args, store_label, ours, baseline, timed)
    report_telemetry(args, store_label, off, on, spans)


def report(
    args: argparse.Namespace,
    store_label: str,
    ours: Side,
    baseline: Side,
    timed: Breakdown | None,
) -> None:
    ratio = ours.rate / baseline.rate
    figures = [
        {
            "name": "ingress_webhooks_per_second", "ours": round(ours.rate, 1),
            "baseline": round(baseline.rate, 1), "ratio": round(ratio, 3),
            "target": f">= {TARGET_RATIO}", "met": ratio >= TARGET_RATIO,
        },
        {
            "name": "ingress_ack_p50_ms", "ours": round(ours.p(50), 1),
            "baseline": round(baseline.p(50), 1), "ratio": None, "target": "reported",
            "met": None,
        },
        {
            "name": "ingress_ack_p99_ms", "ours": round(ours.p(99), 1),
            "baseline": round(baseline.p(99), 1), "ratio": None,
            "target": f"< {TARGET_P99_MS:g}", "met": ours.p(99) < TARGET_P99_MS,
        },
        {
            "name": "ingress_failed_requests", "ours": sum(ours.failures.values()),
            "baseline": sum(baseline.failures.values()), "ratio": None, "target": "== 0",
            "met": not ours.failures and not baseline.failures,
        },
    ]  # fmt: skip
    for f in figures:
        f["events"] = args.events
        f["clients"] = args.clients
        f["store"] = store_label
    record(figures)
    print_table(figures)
    print()
    print(f"{args.events} signed invoice.finalized events a side (one per subscription), in "
          f"two rounds (ours, baseline, baseline, ours), {args.clients} concurrent clients, "
          f"{WARM_UP} untimed first; API in its own process "
          f"(uvicorn, one process, no access log, log level WARNING); store {store_label}; "
          f"Temporal dev server in memory; no worker: the workflows queue")  # fmt: skip
    cores = os.cpu_count() or 1
    for side in (ours, baseline):
        slowest = ", ".join(f"{v:.0f}" for v in sorted(side.latencies_ms)[-5:])
        busy = sum(side.cpu.values())
        print(f"{side.label}: {side.count} in {side.seconds:.1f} s = {side.rate:.0f}/s; latency "
              f"p50 {side.p(50):.1f} ms, p90 {side.p(90):.1f}, p99 {side.p(99):.1f}, slowest "
              f"{slowest} ms; failures {side.failures or 'none'}")  # fmt: skip
        print("  CPU while it ran, share of one core: "
              + ", ".join(f"{name} {share:.0%}" for name, share in side.cpu.items())
              + f" (machine {busy:.0%} of {cores * 100}%); CPU per request: api "
              f"{side.cpu_ms('api'):.1f} ms, temporal {side.cpu_ms('temporal'):.1f} ms, this "
              f"script {side.cpu_ms('bench'):.1f} ms")  # fmt: skip
    print(f"closed loop: each of the {args.clients} clients sends its next webhook when the "
          f"last is answered, so latency ~ clients / rate = "
          f"{args.clients / ours.rate * 1000:.0f} ms at ours' rate")  # fmt: skip
    ours_cpu, base_cpu = (
        ours.cpu_ms("api", "temporal", "bench"),
        baseline.cpu_ms("temporal", "bench"),
    )
    busy = sum(ours.cpu.values()) / cores
    print(f"bounds: while ours ran the machine was {busy:.0%} busy ({ours.cpu['others']:.0%} of "
          f"a core by other processes{'' if busy >= 0.95 else '; not saturated'}). A webhook cost "
          f"{ours_cpu:.1f} ms of CPU on this machine (API {ours.cpu_ms('api'):.1f}, dev server "
          f"{ours.cpu_ms('temporal'):.1f}, HTTP client {ours.cpu_ms('bench'):.1f}), a bare call "
          f"{base_cpu:.1f} ms (dev server {baseline.cpu_ms('temporal'):.1f}, its client "
          f"{baseline.cpu_ms('bench'):.1f}); where CPU is short, throughput follows it: "
          f"{base_cpu / ours_cpu:.2f} (measured {ours.rate / baseline.rate:.2f}).")  # fmt: skip
    print(f"  an acknowledgement waits for two steps one after the other: the receipt lookup "
          f"(batched, thread pool), then signal-with-start; the bare call alone has p99 "
          f"{baseline.p(99):.0f} ms at {baseline.rate:.0f}/s.")  # fmt: skip
    if timed:
        print()
        print("\n".join(breakdown_lines(timed)))


def report_telemetry(
    args: argparse.Namespace, store_label: str, off: Side, on: Side, exports: int
) -> None:
    ratio = on.rate / off.rate
    figures = [
        {
            "name": "ingress_telemetry_on_off_rate", "ours": round(on.rate, 1),
            "baseline": round(off.rate, 1), "ratio": round(ratio, 3),
            "target": f">= {TELEMETRY_RATIO}", "met": ratio >= TELEMETRY_RATIO,
        },
        {
            "name": "ingress_telemetry_on_off_p99_ms", "ours": round(on.p(99), 1),
            "baseline": round(off.p(99), 1), "ratio": round(on.p(99) / off.p(99), 3),
            "target": "reported", "met": None,
        },
        {
            "name": "ingress_telemetry_cpu_ms_per_webhook", "ours": round(on.cpu_ms("api"), 2),
            "baseline": round(off.cpu_ms("api"), 2),
            "ratio": round(on.cpu_ms("api") / off.cpu_ms("api"), 3), "target": "reported",
            "met": None,
        },
    ]  # fmt: skip
    for f in figures:
        f["events"] = args.events
        f["clients"] = args.clients
        f["store"] = store_label
        f["trace_sample"] = args.trace_sample
    record(figures)
    print()
    print_table(figures)
    traced = (
        "every webhook traced" if args.trace_sample == 1
        else f"{args.trace_sample:.0%} of webhooks traced (parentbased_traceidratio)"
    )  # fmt: skip
    print(f"telemetry on: {traced}, traces exported by OTLP/HTTP to a local sink that discards "
          f"them ({exports} export requests), /metrics scraped every {args.scrape_every:g} s; "
          f"off: the same API without an endpoint, unscraped (its counters still count: they "
          f"cannot be turned off). Rounds off, on, on, off ({args.telemetry_cycles} x), "
          f"{args.events // 2} events each.")  # fmt: skip
    for side in (off, on):
        print(
            f"{side.label}: {side.count} in {side.seconds:.1f} s = {side.rate:.0f}/s; p50 "
            f"{side.p(50):.1f} ms, p99 {side.p(99):.1f} ms; failures {side.failures or 'none'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000, help="webhooks a side (>= 100)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--store", choices=("auto", "postgresql", "sqlite"), default="sqlite")
    parser.add_argument("--breakdown", choices=("auto", "always", "never"), default="auto")
    add_telemetry_options(parser, "webhooks")
    parser.add_argument(
        "--trace-sample", type=float, default=1.0, metavar="RATIO",
        help="share of webhooks the telemetry-on API traces (OpenTelemetry's standard "
        "parentbased_traceidratio sampler); 1 traces every one",
    )  # fmt: skip
    # The API subprocess this script starts.
    parser.add_argument("--serve-api", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--temporal", help=argparse.SUPPRESS)
    parser.add_argument("--store-url", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--instrument", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--otlp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.serve_api and args.events < 100:
        parser.error("--events must be at least 100")
    if not 0 < args.trace_sample <= 1:
        parser.error("--trace-sample is a ratio in (0, 1]")
    if args.trace_sample < 1:  # read by the SDK of the API processes this run starts
        os.environ["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
        os.environ["OTEL_TRACES_SAMPLER_ARG"] = str(args.trace_sample)
    if args.serve_api:
        # uvicorn's loop "auto", as `ledgerbridge api` runs it, is uvloop's.
        uvloop.run(serve_api(args))
    else:
        asyncio.run(bench(args))


if __name__ == "__main__":
    main()
