"""Orchestration overhead: the amendment pipeline against a no-op workflow with as many activities.

    .venv/bin/python -m bench.orchestration [--events 500] [--store sqlite|postgresql|auto]
                                            [--diagnose auto|always|never]

One Temporal dev server, the same worker settings, the same number of workflows, in one run:
- ours: N billing events (`invoice.finalized`, the first invoice of N subscriptions, ten per
  customer) are mapped as the webhook does (StripeEventPayload -> BusinessEvent ->
  `ledger_start`) and fed by `signal_with_start` into SubscriptionLedgerWorkflow. The real
  worker (`build_workers`, real QueueLimits, in its own process, posting on a finance
  mapping file that maps the events' price) runs it with billing bound
  to an in-memory BillingSystem that returns the invoice at once, the ERP bound to an
  in-memory Ledger (zero latency), support in memory, and the real store (SQLite file by
  default; the customers' account links seeded, as account sync would have left them).
  Done when the N journal entries are in the store.
- baseline: a no-op workflow fed by the same `signal_with_start` with the same signal, that
  runs exactly the activities one amendment ran (counted from a history of ours: the same
  number, in the same order, on the same task queues, with the same timeouts and retry
  policies), each a no-op; the workers have the same queues, rate limits, concurrency and
  store thread pool as `build_workers`. Done when the N workflows have completed (counted in
  visibility every 0.1 s, as ours' journal is counted every 0.1 s).
Each side runs in two rounds of N/2 in the order ours, baseline, baseline, ours (so drift
falls on both alike), each round with a fresh worker process warmed up by 20 untimed
workflows, and is fed by the same 8 concurrent callers.
It prints throughput (workflows per second) with the ratio, what one workflow's history holds
(activities, workflow tasks, timers, search-attribute upserts), where the time went (queued
and running per activity, from the histories), the rate the ERP queue let activities start,
and the CPU each process (and everything else on the machine) used. Unless --diagnose never,
it then measures both sides once more (one round of N/2) with the queue limits lifted, which
shows the orchestration's own cost; and where a ratio misses its target (or --diagnose
always), the no-op with the subscription workflow's 2 s reorder timer, which cannot be set
per input. Figures are merged into bench/results.json. Nothing asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, cast

from temporalio import activity, workflow

# The sandbox imports this module afresh for every baseline workflow: pass everything through.
with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel
    from sqlalchemy import func, insert, select
    from temporalio.api.enums.v1 import EventType
    from temporalio.client import Client, WorkflowHistory
    from temporalio.common import TypedSearchAttributes
    from temporalio.worker import Worker

    from adapters.billing.events import StripeEventPayload, to_business_event
    from adapters.bootstrap import Adapters
    from adapters.logs import configure_logging
    from adapters.ports import BillingSystem, Ledger, SupportDesk
    from adapters.settings import Settings
    from adapters.store import IntegrationStore
    from adapters.store.models import AccountLink, Posting
    from adapters.task_queues import WORKFLOW_QUEUE, System, task_queue
    from adapters.temporal import connect_temporal
    from adapters.tracing import configure_tracing
    from bench._common import (
        cpu_seconds,
        dev_server,
        dev_server_pid,
        finance_mapping_file,
        free_port,
        helper_process,
        machine_cpu_seconds,
        percentile,
        print_table,
        record,
        serve_workers,
        stripe_invoice_event,
    )
    from bench.ingress_telemetry import (
        TELEMETRY_RATIO,
        add_telemetry_options,
        discarding_otlp_sink,
        on_off_rounds,
        scraping,
    )
    from bench.reconciliation import database, time_by_step
    from canonical import (
        AccountRecord,
        BillingDocument,
        Customer,
        DocumentLine,
        LedgerPosting,
        Money,
        PostedDocument,
    )
    from canonical.ledger import BillingEventRef
    from canonical.mapping import FinanceMapping, ProductAccount
    from starters.routing import ProcessStart, ledger_start, signal_with_start
    from workers.main import QueueLimits, build_workers
    from workers.metrics import worker_metrics
    from workflows.activity_options import STORE_CALL, SYSTEM_OPTIONS, activity_queue
    from workflows.subscription_ledger import REORDER_WINDOW

TARGET_RATIO: Final = 0.8
# Issue 19, with the queue limits lifted: what the orchestration itself costs.
UNTHROTTLED_RATIO: Final = 0.9
UNTHROTTLED_CPU: Final = 1.15
SUBSCRIPTIONS_PER_CUSTOMER: Final = 10
WARM_UP: Final = 20
FEEDERS: Final = 8  # concurrent signal-with-start callers, both sides
CURRENCIES: Final = ["USD"]
INVOICE_DAY: Final = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


# Lifted limits (diagnostic only): what the workflows do without the ERP's protection.
def production_limits() -> QueueLimits:
    """The worker's limits as LEDGERBRIDGE_WORKER_* set them (the defaults unless given)."""
    return QueueLimits.from_settings(Settings())


def unthrottled_limits() -> QueueLimits:
    return dataclasses.replace(
        production_limits(), billing=10_000, support=10_000, erp=10_000, erp_concurrency=100
    )


# --- the billing events and the documents they name ------------------------------------------


def amount_minor(n: int) -> int:
    return 1_000 + (n * 7_919) % 90_000


def customer_of(n: int) -> str:
    return f"cus_{n // SUBSCRIPTIONS_PER_CUSTOMER:05d}"


def billing_event(tag: str, n: int) -> dict[str, Any]:
    """The Stripe event of invoice n of run `tag`: the first invoice of its subscription."""
    return stripe_invoice_event(
        event_id=f"evt_{tag}_{n:06d}",
        invoice_id=f"in_{tag}_{n:06d}",
        customer_id=customer_of(n),
        subscription_id=f"sub_{tag}_{n:06d}",
        amount_minor=amount_minor(n),
        created=int(INVOICE_DAY.timestamp()),
        number=f"BENCH-{n:06d}-0001",
    )


def invoice_document(invoice_id: str) -> BillingDocument:
    """What billing holds for `in_<tag>_<n>`: the same invoice the event carried."""
    tag, n_text = invoice_id.removeprefix("in_").rsplit("_", 1)
    n = int(n_text)
    total = Money(amount=Decimal(amount_minor(n)).scaleb(-2), currency="USD")
    line = DocumentLine(
        line_id=f"il_{invoice_id}", description="Pro plan", quantity=Decimal(1),
        unit_amount=total, amount=total, price_id="price_pro_monthly",
        period_start=INVOICE_DAY.date(), period_end=INVOICE_DAY.date() + timedelta(days=30),
    )  # fmt: skip
    return BillingDocument(
        document_id=invoice_id,
        kind="invoice",
        status="open",
        number=f"BENCH-{n:06d}-0001",
        customer_id=customer_of(n),
        subscription_id=f"sub_{tag}_{n:06d}",
        billing_reason="subscription_create",
        currency="USD",
        lines=[line],
        subtotal=total,
        tax=Money(amount=Decimal(0), currency="USD"),
        total=total,
        # Open, nothing paid yet (as the event says): no payments to read or post.
        amount_paid=Money(amount=Decimal(0), currency="USD"),
        amount_remaining=total,
        created_at=INVOICE_DAY,
        finalized_at=INVOICE_DAY,
    )


def bench_mapping() -> FinanceMapping:
    """Finance's mapping of what the bench's invoices sell (the price the events name)."""
    return FinanceMapping(
        version=1,
        currencies=CURRENCIES,
        products={
            "price_pro_monthly": ProductAccount(erp_product="SUBSCRIPTION", revenue_account="4000")
        },
    )


def ledger_starts(tag: str, count: int) -> list[ProcessStart]:
    """The starts the webhook would make of the events (same mapping, same routing)."""
    starts = []
    for n in range(count):
        event = to_business_event(StripeEventPayload.model_validate(billing_event(tag, n)), None)
        start = ledger_start(event, CURRENCIES)
        assert start is not None
        starts.append(start)
    return starts


# --- billing, the ERP and support in memory (the worker's ports) -----------------------------


class InMemoryBilling:
    """BillingSystem as far as posting a first invoice reads it: the invoice, at once."""

    async def get_invoice(self, invoice_id: str) -> BillingDocument:
        return invoice_document(invoice_id)

    async def get_customer(self, customer_id: str) -> Customer:
        return Customer(customer_id=customer_id, name=f"Bench customer {customer_id}")

    async def aclose(self) -> None:
        return None


class InMemoryLedger:
    """Ledger with zero latency: posts by reference, never twice."""

    def __init__(self) -> None:
        self._posted: dict[str, PostedDocument] = {}

    async def is_period_open(self, on: date) -> bool:
        return True

    async def post_document(self, posting: LedgerPosting) -> PostedDocument:
        if posting.reference not in self._posted:
            number = len(self._posted) + 1
            self._posted[posting.reference] = PostedDocument(
                reference=posting.reference, kind=posting.kind, erp_document_id=str(number),
                erp_number=f"INV/{number}", total=posting.total, state="posted",
                created_now=True,
            )  # fmt: skip
        return self._posted[posting.reference]

    async def ensure_party(self, customer: Customer) -> AccountRecord:
        return AccountRecord(system="erp", external_id=customer.customer_id,
                             customer_id=customer.customer_id, name="Bench")  # fmt: skip

    async def aclose(self) -> None:
        return None


class InMemorySupport:
    async def aclose(self) -> None:
        return None


def in_memory_adapters(store: IntegrationStore) -> Adapters:
    # Only what the amendment path calls exists: anything else fails with AttributeError.
    return Adapters(
        billing=cast(BillingSystem, InMemoryBilling()),
        support=cast(SupportDesk, InMemorySupport()),
        ledger=cast(Ledger, InMemoryLedger()),
        store=store,
    )


def seed_account_links(store: IntegrationStore, customers: int) -> None:
    """The ERP and support links account sync would have recorded for every customer."""
    rows = [
        {"customer_id": f"cus_{c:05d}", "system": system, "external_id": f"{system}-{c}",
         "name": f"Bench customer {c}", "workflow_id": None, "synced_at": INVOICE_DAY}
        for c in range(customers)
        for system in ("erp", "support")
    ]  # fmt: skip
    with store.engine.begin() as conn:
        conn.execute(insert(AccountLink), rows)


def journaled(store: IntegrationStore, tag: str) -> int:
    with store.session() as session:
        query = select(func.count()).select_from(Posting)
        prefix = f"in_{tag}_"
        return int(session.scalar(query.where(Posting.source_document_id.startswith(prefix))) or 0)


# --- the baseline: a no-op workflow with the same activities ----------------------------------


class NoopAmendmentInput(BaseModel):
    # The queue of each activity one amendment ran, in order ("" is the workflow queue).
    steps: list[str]
    sleep_seconds: float = 0.0  # diagnostic: the subscription workflow's reorder window


@workflow.defn(name="BenchNoopAmendment")
class NoopAmendmentWorkflow:
    def __init__(self) -> None:
        self._events: list[BillingEventRef] = []

    @workflow.run
    async def run(self, request: NoopAmendmentInput) -> int:
        await workflow.wait_condition(lambda: bool(self._events))
        if request.sleep_seconds:
            await workflow.sleep(timedelta(seconds=request.sleep_seconds))
        event = self._events[0]
        for system in request.steps:
            if system:  # an external system's queue, with its timeouts and retry policy
                queue = cast(System, system)
                await workflow.execute_activity(
                    f"noop_{system}", event, task_queue=activity_queue(queue),
                    **SYSTEM_OPTIONS[queue],
                )  # fmt: skip
            else:  # the store's activities run on the workflow queue
                await workflow.execute_activity(
                    "noop_store", event, task_queue=workflow.info().task_queue, **STORE_CALL
                )
        return len(request.steps)

    @workflow.signal(name="billing_event")
    def billing_event(self, event: BillingEventRef) -> None:
        self._events.append(event)


@activity.defn(name="noop_store")
def noop_store(_event: BillingEventRef) -> None:  # sync, like the store activities
    return None


@activity.defn(name="noop_billing")
async def noop_billing(_event: BillingEventRef) -> None:
    return None


@activity.defn(name="noop_erp")
async def noop_erp(_event: BillingEventRef) -> None:
    return None


@activity.defn(name="noop_support")
async def noop_support(_event: BillingEventRef) -> None:
    return None


def baseline_workers(client: Client, prefix: str, limits: QueueLimits) -> list[Worker]:
    """The four workers of `build_workers` (the same options per queue from the same limits,
    the store activities' thread pool of 8), running the no-op workflow and activities."""
    store_executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="store-activity")
    options = limits.worker_options()
    noop = {"billing": noop_billing, "support": noop_support, "erp": noop_erp}
    return [
        Worker(client, task_queue=task_queue(prefix), workflows=[NoopAmendmentWorkflow],
               activities=[noop_store], activity_executor=store_executor, **options[""]),
        *(Worker(client, task_queue=task_queue(prefix, queue), activities=[activity],
                 **options[queue]) for queue, activity in noop.items()),
    ]  # fmt: skip


def baseline_starts(tag: str, count: int, steps: list[str], sleep: float) -> list[ProcessStart]:
    """As many no-op workflows, started with the same signal the subscription ledger gets."""
    return [
        ProcessStart(
            workflow=NoopAmendmentWorkflow.run,
            workflow_id=f"noop/{start.workflow_id}",
            input=NoopAmendmentInput(steps=steps, sleep_seconds=sleep),
            search_attributes=TypedSearchAttributes.empty,
            summary="no-op amendment",
            signal="billing_event",
            signal_input=start.signal_input,
        )
        for start in ledger_starts(tag, count)
    ]


# --- the worker, in its own process -----------------------------------------------------------


async def serve_worker(args: argparse.Namespace) -> None:
    """The workers of one side until SIGTERM: the real ones on in-memory ports, or the no-op;
    with --otlp and the metrics ports, ours with traces exported and metrics served as
    `ledgerbridge worker` does when configured so."""
    if args.otlp:
        configure_logging("WARNING", "json")  # to stderr: stdout is for `ready`
        settings = Settings(
            otel_exporter_otlp_endpoint=args.otlp,
            worker_metrics_port=args.metrics_port,
            worker_sdk_metrics_port=args.sdk_metrics_port,
        )
        configure_tracing(settings, "worker")  # before the client: its interceptors need it
        with worker_metrics(settings) as runtime:
            client = await connect_temporal(
                args.temporal, "default", wait_seconds=30, runtime=runtime
            )
            await serve_sides_workers(args, client)
        return
    client = await connect_temporal(args.temporal, "default", wait_seconds=30)
    await serve_sides_workers(args, client)


async def serve_sides_workers(args: argparse.Namespace, client: Client) -> None:
    limits = unthrottled_limits() if args.limits == "unthrottled" else production_limits()
    store = IntegrationStore(args.store_url)
    adapters = in_memory_adapters(store)
    if args.serve_worker != "ours":
        await serve_workers(baseline_workers(client, args.prefix, limits), adapters.aclose)
        return
    # Ours posts on finance's mapping file, read (and re-read when it changes) as deployed.
    with tempfile.TemporaryDirectory(prefix="ledgerbridge-bench-mapping-") as folder:
        mapping = finance_mapping_file(Path(folder), bench_mapping())
        workers = build_workers(client, adapters, args.prefix, limits, mapping)
        await serve_workers(workers, adapters.aclose)


# --- one measured run -------------------------------------------------------------------------


@dataclass
class Run:
    label: str
    workflows: int
    seconds: float
    feed_seconds: float
    histories: list[WorkflowHistory] = field(repr=False)
    cpu: dict[str, float]  # share of one core per process during the timed part
    parts: list[Run] = field(default_factory=list, repr=False)  # its rounds, when merged

    @property
    def rounds(self) -> list[Run]:
        return self.parts or [self]

    @property
    def rate(self) -> float:
        return self.workflows / self.seconds

    def cpu_ms(self, *processes: str) -> float:
        """CPU milliseconds per workflow the named processes used during the timed part."""
        return sum(self.cpu[p] for p in processes) * self.seconds * 1000 / self.workflows


def merged(runs: list[Run]) -> Run:
    """Rounds of one side as one run: workflows and seconds add up, CPU shares by time."""
    seconds = sum(r.seconds for r in runs)
    cpu = {name: sum(r.cpu[name] * r.seconds for r in runs) / seconds for name in runs[0].cpu}
    return Run(
        runs[0].label,
        sum(r.workflows for r in runs),
        seconds,
        sum(r.feed_seconds for r in runs),
        [h for r in runs for h in r.histories],
        cpu,
        parts=runs,
    )


async def feed(client: Client, starts: list[ProcessStart], prefix: str) -> float:
    """Signal-with-start every start with FEEDERS concurrent callers; seconds it took."""
    began = time.monotonic()
    pending = iter(starts)

    async def feeder() -> None:
        for start in pending:
            await signal_with_start(client, start, prefix)

    await asyncio.gather(*(feeder() for _ in range(FEEDERS)))
    return time.monotonic() - began


async def until_all(
    total: int, finished: Callable[[], Awaitable[int]], check: Callable[[], None]
) -> None:
    """Poll every 0.1 s until `total` have finished; `check` raises when something broke;
    fail when nothing more finishes for 120 s."""
    last, deadline = -1, time.monotonic() + 120
    while (count := await finished()) < total:
        check()
        if count != last:
            last, deadline = count, time.monotonic() + 120
        elif time.monotonic() > deadline:
            raise TimeoutError(f"{count} of {total} finished; none more for 120 s")
        await asyncio.sleep(0.1)


async def measure(
    label: str,
    client: Client,
    prefix: str,
    worker_pids: int | list[int],
    starts: list[ProcessStart],
    finished: Callable[[], Awaitable[int]],
) -> tuple[float, float, dict[str, float]]:
    """(seconds from the first start to the last finish, feeding seconds, CPU shares; the
    worker's is the sum of every worker process's)."""
    workers = [worker_pids] if isinstance(worker_pids, int) else worker_pids
    server = dev_server_pid()
    pids = {"bench": os.getpid(), **({"temporal": server} if server else {})}
    pids |= {f"worker {n}": pid for n, pid in enumerate(workers)}
    cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    machine_before = machine_cpu_seconds()
    began = time.monotonic()
    feeding = asyncio.create_task(feed(client, starts, prefix))

    def check() -> None:
        if feeding.done() and feeding.exception() is not None:
            raise RuntimeError(f"{label}: feeding failed") from feeding.exception()
        if not all(Path(f"/proc/{pid}").exists() for pid in workers):
            raise RuntimeError(f"{label}: a worker exited")

    await until_all(len(starts), finished, check)
    seconds = time.monotonic() - began
    cpu = {name: (cpu_seconds(pid) - cpu_before[name]) / seconds for name, pid in pids.items()}
    cpu["worker"] = sum(cpu.pop(f"worker {n}") for n in range(len(workers)))
    # Whatever else runs on the machine meanwhile (other people's tests, benchmarks).
    others = (machine_cpu_seconds() - machine_before) / seconds - sum(cpu.values())
    cpu["others"] = max(0.0, others)  # the two clocks differ a little
    return seconds, await feeding, cpu


async def fetch_histories(client: Client, workflow_ids: list[str]) -> list[WorkflowHistory]:
    gate = asyncio.Semaphore(16)

    async def one(workflow_id: str) -> WorkflowHistory:
        async with gate:
            return await client.get_workflow_handle(workflow_id).fetch_history()

    return list(await asyncio.gather(*(one(w) for w in workflow_ids)))


async def run_ours(
    client: Client, address: str, store: IntegrationStore, events: int, limits: str, logs: Path,
    otlp: str | None = None, scrape_every: float = 0.0,
) -> Run:  # fmt: skip
    """A round of ours; telemetry on when `otlp` is given (then scraped every `scrape_every` s,
    which must then be given)."""
    prefix = f"ours-{uuid.uuid4().hex[:6]}."
    warm_tag, tag = uuid.uuid4().hex[:6], uuid.uuid4().hex[:6]
    args = ["-m", "bench.orchestration", "--serve-worker", "ours", "--temporal", address,
            "--store-url", store.url, "--prefix", prefix, "--limits", limits]  # fmt: skip
    metrics_urls: list[str] = []
    if otlp:  # telemetry on: traces to the sink, both metrics ports served and scraped
        ports = free_port(), free_port()
        args += ["--otlp", otlp, "--metrics-port", str(ports[0]),
                 "--sdk-metrics-port", str(ports[1])]  # fmt: skip
        metrics_urls = [f"http://127.0.0.1:{port}/metrics" for port in ports]
    async with (
        helper_process(args, logs / f"worker-{prefix}log") as worker,
        scraping(*metrics_urls, every=scrape_every) if metrics_urls else contextlib.nullcontext(),
    ):

        def count(run_tag: str) -> Callable[[], Awaitable[int]]:
            async def counted() -> int:
                return await asyncio.to_thread(journaled, store, run_tag)

            return counted

        try:
            await measure("warm-up", client, prefix, worker.pid,
                          ledger_starts(warm_tag, WARM_UP), count(warm_tag))  # fmt: skip
            starts = ledger_starts(tag, events)
            seconds, feed_seconds, cpu = await measure(
                "ours", client, prefix, worker.pid, starts, count(tag)
            )
            await asyncio.sleep(1)  # the workflow task after the journal entry completes
            histories = await fetch_histories(client, [s.workflow_id for s in starts])
        except (RuntimeError, TimeoutError) as err:
            raise RuntimeError(f"ours: {err}\n{worker.log_tail()}") from err
    telemetry = ", telemetry on" if otlp else ""
    return Run(f"ours ({limits} limits{telemetry})", events, seconds, feed_seconds, histories, cpu)


async def run_baseline(
    client: Client, address: str, store: IntegrationStore, events: int, limits: str,
    steps: list[str], sleep: float, logs: Path,
) -> Run:  # fmt: skip
    prefix = f"base-{uuid.uuid4().hex[:6]}."
    warm_tag, tag = uuid.uuid4().hex[:6], uuid.uuid4().hex[:6]
    args = ["-m", "bench.orchestration", "--serve-worker", "baseline", "--temporal", address,
            "--store-url", store.url, "--prefix", prefix, "--limits", limits]  # fmt: skip
    async with helper_process(args, logs / f"worker-{prefix}log") as worker:
        # Polled like ours' journal: one count every 0.1 s (visibility, not a long-poll per
        # workflow, which would cost the server CPU that ours does not pay).
        query = f"TaskQueue = '{task_queue(prefix)}' AND ExecutionStatus = 'Completed'"
        done_before = 0

        async def completed() -> int:
            return (await client.count_workflows(query)).count - done_before

        try:
            warm = baseline_starts(warm_tag, WARM_UP, steps, sleep)
            await measure("warm-up", client, prefix, worker.pid, warm, completed)
            done_before = (await client.count_workflows(query)).count
            starts = baseline_starts(tag, events, steps, sleep)
            seconds, feed_seconds, cpu = await measure(
                "baseline", client, prefix, worker.pid, starts, completed
            )
            histories = await fetch_histories(client, [s.workflow_id for s in starts])
        except (RuntimeError, TimeoutError) as err:
            raise RuntimeError(f"baseline: {err}\n{worker.log_tail()}") from err
    label = f"no-op ({limits} limits{f', {sleep:g} s timer' if sleep else ''})"
    return Run(label, events, seconds, feed_seconds, histories, cpu)


# --- what the histories hold ------------------------------------------------------------------


@dataclass
class Shape:
    """One workflow's history, averaged over a run's workflows."""

    activities: float
    workflow_tasks: float
    timers: Counter[float]  # seconds -> timers started per workflow
    upserts: float
    events: float
    steps: list[str]  # the queue of each activity of the first workflow, in order
    names: list[str]  # the activity types of the first workflow, in order
    latencies: list[float]  # seconds from the first event to the last, per workflow


def _queue_kind(queue: str) -> str:
    """The system of an activity queue; "" for the workflow queue."""
    name = queue.rsplit(".", 1)[-1]
    return "" if name == WORKFLOW_QUEUE else name


def shape(histories: list[WorkflowHistory]) -> Shape:
    per = len(histories)
    types: Counter[int] = Counter()
    timers: Counter[float] = Counter()
    latencies = []
    for history in histories:
        types.update(e.event_type for e in history.events)
        for e in history.events:
            if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED:
                timeout = e.timer_started_event_attributes.start_to_fire_timeout
                timers[timeout.ToTimedelta().total_seconds()] += 1
        first, last = history.events[0], history.events[-1]
        latencies.append((last.event_time.ToNanoseconds() - first.event_time.ToNanoseconds()) / 1e9)
    scheduled = [
        e.activity_task_scheduled_event_attributes
        for e in histories[0].events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    return Shape(
        activities=types[EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED] / per,
        workflow_tasks=types[EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED] / per,
        timers=Counter({seconds: n / per for seconds, n in timers.items()}),
        upserts=types[EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES] / per,
        events=sum(len(h.events) for h in histories) / per,
        steps=[_queue_kind(a.task_queue.name) for a in scheduled],
        names=[a.activity_type.name for a in scheduled],
        latencies=latencies,
    )


def describe(run: Run) -> list[str]:
    s = shape(run.histories)
    timers = ", ".join(f"{n:g} x {_duration(sec)}" for sec, n in sorted(s.timers.items())) or "none"
    machine = sum(run.cpu.values())
    backlog = run.workflows // len(run.rounds)
    lines = [
        f"{run.label}: {run.workflows} workflows in {run.seconds:.1f} s = {run.rate:.1f}/s "
        f"({len(run.rounds)} round(s) of {run.workflows // len(run.rounds)}, each all fed in "
        f"its first {run.feed_seconds / len(run.rounds):.1f} s; round by round "
        f"{', '.join(f'{r.rate:.2f}/s' for r in run.rounds)})",
        "  CPU while it ran, share of one core: "
        + ", ".join(f"{name} {share:.0%}" for name, share in run.cpu.items())
        + f" (machine {machine:.0%} of {(os.cpu_count() or 1) * 100}%); per workflow: worker "
        f"{run.cpu_ms('worker'):.0f} ms, temporal {run.cpu_ms('temporal'):.0f} ms",
        f"  history per workflow: {s.events:.3g} events, {s.activities:.3g} activities, "
        f"{s.workflow_tasks:.3g} workflow tasks, timers {timers}, {s.upserts:.3g} search-"
        f"attribute upserts; first event to last (a backlog of {backlog}): p50 "
        f"{percentile(s.latencies, 50):.1f} s, p99 {percentile(s.latencies, 99):.1f} s",
        "  per workflow, mean seconds queued / running (from the histories):",
    ]
    for name, (n, running, queued) in sorted(
        time_by_step(run.histories).items(), key=lambda item: -item[1][2]
    ):
        count = f"x{n / run.workflows:.3g}"
        lines.append(f"    {name:<24} {count:<6} {queued / run.workflows:7.3f} / "
                     f"{running / run.workflows:6.3f}")  # fmt: skip
    return lines


def _duration(seconds: float) -> str:
    return f"{seconds / 86_400:g} d" if seconds >= 86_400 else f"{seconds:g} s"


# --- the report -------------------------------------------------------------------------------


@contextlib.contextmanager
def pipeline_store(kind: str, subscriptions: int) -> Iterator[tuple[IntegrationStore, str, Path]]:
    """A migrated store (SQLite, or PostgreSQL: see `database`) holding the account links of
    the customers of `subscriptions` subscriptions, its label, and a folder for worker logs."""
    with (
        database(kind) as (store_url, store_label),
        tempfile.TemporaryDirectory(prefix="ledgerbridge-bench-") as logs,
    ):
        store = IntegrationStore(store_url)
        try:
            store.migrate()
            seed_account_links(store, -(-subscriptions // SUBSCRIPTIONS_PER_CUSTOMER))
            yield store, store_label, Path(logs)
        finally:
            store.dispose()


async def bench(args: argparse.Namespace) -> None:
    events = args.events
    with pipeline_store(args.store, max(events, WARM_UP)) as (store, store_label, logs):
        async with dev_server() as env:
            address = env.client.service_client.config.target_host
            client, logs_dir = env.client, logs
            half = events // 2

            async def ours_round(limits: str) -> Run:
                return await run_ours(client, address, store, half, limits, logs_dir)

            async def baseline_round(limits: str, sleep: float = 0.0) -> Run:
                return await run_baseline(
                    client, address, store, half, limits, steps, sleep, logs_dir
                )

            # ABBA, half the workflows a round: drift (the server filling up, other
            # people's load coming and going) falls on both sides alike.
            if args.parts != "telemetry":
                first = await ours_round("production")
                steps = shape(first.histories[:1]).steps
                base_rounds = [await baseline_round("production") for _ in range(2)]
                ours = merged([first, await ours_round("production")])
                baseline = merged(base_rounds)
            # Telemetry off and on (ours only), ABBA: traces exported to a sink that
            # discards them and both worker metrics ports scraped (as the shipped Prometheus
            # does, unless --scrape-every), or neither.
            # One round varies by several percent from the next on its own: --telemetry-cycles
            # repeats the off, on, on, off cycle to narrow what the ratio can resolve.
            async with discarding_otlp_sink() as sink:
                off_rounds, on_rounds = await on_off_rounds(
                    args.telemetry_cycles,
                    lambda: ours_round("production"),
                    lambda: run_ours(client, address, store, half, "production", logs_dir,
                                     sink.url, args.scrape_every),
                )  # fmt: skip
                telemetry_off, telemetry_on = merged(off_rounds), merged(on_rounds)
                exports = sink.requests
            if args.parts == "telemetry":
                report_telemetry(args, store_label, telemetry_off, telemetry_on, exports)
                return
            diagnostics: list[Run] = []
            if args.diagnose != "never":
                # Without the ERP queue's limits: what the orchestration itself costs.
                diagnostics += [await ours_round("unthrottled"),
                                await baseline_round("unthrottled")]  # fmt: skip
                # The reorder window cannot be set to 0 per input; instead the no-op
                # gets the same timer, where a ratio misses its target.
                window = REORDER_WINDOW.total_seconds()
                for limits, target, (ours_run, base_run) in (
                    ("production", TARGET_RATIO, (ours, baseline)),
                    ("unthrottled", UNTHROTTLED_RATIO, diagnostics[:2]),
                ):  # fmt: skip
                    missed = ours_run.rate / base_run.rate < target
                    if args.diagnose == "always" or missed:
                        diagnostics.append(await baseline_round(limits, window))
    report(args, store_label, ours, baseline, diagnostics)
    report_telemetry(args, store_label, telemetry_off, telemetry_on, exports)


def report_telemetry(
    args: argparse.Namespace, store_label: str, off: Run, on: Run, exports: int
) -> None:
    ratio = on.rate / off.rate
    off_cpu, on_cpu = off.cpu_ms("worker", "temporal"), on.cpu_ms("worker", "temporal")
    figures = [
        {
            "name": "orchestration_telemetry_on_off_rate", "ours": round(on.rate, 2),
            "baseline": round(off.rate, 2), "ratio": round(ratio, 3),
            "target": f">= {TELEMETRY_RATIO}", "met": ratio >= TELEMETRY_RATIO,
        },
        {
            "name": "orchestration_telemetry_cpu_ms_per_workflow", "ours": round(on_cpu, 1),
            "baseline": round(off_cpu, 1), "ratio": round(on_cpu / off_cpu, 3),
            "target": "reported", "met": None,
        },
    ]  # fmt: skip
    for f in figures:
        f["workflows"] = args.events * args.telemetry_cycles
        f["store"] = store_label
    record(figures)
    print()
    print_table(figures)
    print(f"telemetry on: the real worker with traces exported by OTLP/HTTP to a local sink "
          f"that discards them ({exports} export requests) and its two metrics ports (ours and "
          f"the SDK's) scraped every {args.scrape_every:g} s; off: the same worker as configured "
          f"by default (its counters still count). Production limits; rounds off, on, on, "
          f"off ({args.telemetry_cycles} x), {args.events // 2} workflows each.")  # fmt: skip
    for run in (off, on):
        print()
        print("\n".join(describe(run)))


def report(
    args: argparse.Namespace, store_label: str, ours: Run, baseline: Run, diagnostics: list[Run]
) -> None:
    ratio = ours.rate / baseline.rate
    ours_shape, base_shape = shape(ours.histories), shape(baseline.histories)
    ours_cpu, base_cpu = ours.cpu_ms("worker", "temporal"), baseline.cpu_ms("worker", "temporal")
    figures = [
        {
            "name": "orchestration_workflows_per_second", "ours": round(ours.rate, 2),
            "baseline": round(baseline.rate, 2), "ratio": round(ratio, 3),
            "target": f">= {TARGET_RATIO}", "met": ratio >= TARGET_RATIO,
        },
        {
            "name": "orchestration_activities_per_workflow", "ours": ours_shape.activities,
            "baseline": base_shape.activities, "ratio": None, "target": "equal",
            "met": ours_shape.activities == base_shape.activities,
        },
        {
            "name": "orchestration_cpu_ms_per_workflow", "ours": round(ours_cpu, 1),
            "baseline": round(base_cpu, 1), "ratio": round(ours_cpu / base_cpu, 3),
            "target": "diagnostic", "met": None,
        },
    ]  # fmt: skip
    free = [r for r in diagnostics if r.label.endswith("(unthrottled limits)")]
    if len(free) == 2:
        ours_free, base_free = free
        free_ratio = ours_free.rate / base_free.rate
        free_cpu = ours_free.cpu_ms("worker", "temporal") / base_free.cpu_ms("worker", "temporal")
        figures += [
            {
                "name": "orchestration_workflows_per_second_unthrottled",
                "ours": round(ours_free.rate, 2), "baseline": round(base_free.rate, 2),
                "ratio": round(free_ratio, 3), "target": f">= {UNTHROTTLED_RATIO}",
                "met": free_ratio >= UNTHROTTLED_RATIO,
            },
            {
                "name": "orchestration_cpu_ms_per_workflow_unthrottled",
                "ours": round(ours_free.cpu_ms("worker", "temporal"), 1),
                "baseline": round(base_free.cpu_ms("worker", "temporal"), 1),
                "ratio": round(free_cpu, 3), "target": f"<= {UNTHROTTLED_CPU}",
                "met": free_cpu <= UNTHROTTLED_CPU,
            },
        ]  # fmt: skip
    for f in figures:
        diagnostic = str(f["name"]).endswith("_unthrottled")  # one round of half
        f["workflows"] = args.events // 2 if diagnostic else args.events
        f["store"] = store_label
    record(figures)
    print_table(figures)
    print()
    print(
        f"{args.events} workflows a side in two rounds (ours, no-op, no-op, ours; diagnostics: "
        f"one round of {args.events // 2}), {FEEDERS} concurrent signal-with-start callers, "
        f"{WARM_UP} untimed first in each worker process; store {store_label}; Temporal dev "
        f"server in memory; CPU per workflow is the worker's plus the dev server's"
    )
    order = zip(ours_shape.names, ours_shape.steps, strict=True)
    print(
        f"one amendment's activities, in order: "
        f"{', '.join(f'{name}@{queue or WORKFLOW_QUEUE}' for name, queue in order)}"
    )
    limits, unthrottled = production_limits(), unthrottled_limits()
    print(
        f"worker settings, both sides: QueueLimits billing {limits.billing:g}/s, "
        f"erp {limits.erp:g}/s and {limits.erp_concurrency} in flight, support "
        f"{limits.support:g}/s; workflow task slots {limits.workflow_task_slots}, pollers "
        f"{limits.workflow_pollers} for workflow tasks and {limits.activity_pollers} per "
        f"activity queue, cache {limits.max_cached_workflows}; store activities on the "
        f"workflow queue, 8 threads; unthrottled: {unthrottled.erp:g}/s and "
        f"{unthrottled.erp_concurrency} in flight"
    )
    for run in (ours, baseline, *diagnostics):
        print()
        print("\n".join(describe(run)))
    print()
    print("\n".join(bounds(ours, baseline, diagnostics)))


def erp_rate(run: Run) -> float:
    """ERP activities started per second while the ERP queue was busy, over the rounds."""
    started, span = 0, 0.0
    for part in run.rounds:
        times = []
        for history in part.histories:
            erp = {
                e.event_id
                for e in history.events
                if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
                and _queue_kind(e.activity_task_scheduled_event_attributes.task_queue.name) == "erp"
            }
            times += [
                e.event_time.ToNanoseconds() / 1e9
                for e in history.events
                if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
                and e.activity_task_started_event_attributes.scheduled_event_id in erp
            ]
        if len(times) > 1:
            started += len(times) - 1
            span += max(times) - min(times)
    return started / span if span else 0.0


def bounds(ours: Run, baseline: Run, diagnostics: list[Run]) -> list[str]:
    """What the figures say about what bounds the throughput."""
    limits = production_limits()
    ours_shape, base_shape = shape(ours.histories), shape(baseline.histories)
    cores = os.cpu_count() or 1
    lines = [
        f"bounds: each workflow runs {ours_shape.steps.count('erp')} ERP activity; with "
        f"QueueLimits.erp {limits.erp:g}/s and {limits.erp_concurrency} in flight the ERP "
        f"queue started them at {erp_rate(ours):.1f}/s for ours and {erp_rate(baseline):.1f}/s "
        f"for the no-op, while the workflows completed at {ours.rate:.1f}/s and "
        f"{baseline.rate:.1f}/s.",
    ]
    runs = [ours, baseline, *diagnostics]

    def side(name: str, limits: str, timer: bool = False) -> Run | None:
        """The run of one side (`ours` or `no-op`) under `limits`, with the timer or not."""
        return next(
            (r for r in runs if r.label.startswith(f"{name} ({limits} limits")
             and ("timer" in r.label) == timer),
            None,
        )  # fmt: skip

    for run in runs:
        busy = sum(run.cpu.values())
        kind = "unthrottled" if "unthrottled" in run.label else "production"
        noop = side("no-op", kind) or baseline
        lines.append(
            f"  {run.label}: {run.rate:.1f}/s ({run.rate / noop.rate:.2f} x the no-op with the "
            f"same limits); machine {busy / cores:.0%} busy ({run.cpu['others']:.0%} of a core "
            f"by other processes); worker + dev server {run.cpu_ms('worker', 'temporal'):.0f} ms "
            f"CPU per workflow; ERP activities started at {erp_rate(run):.1f}/s"
        )
    for kind in ("production", "unthrottled"):
        ours_run, timed = side("ours", kind), side("no-op", kind, timer=True)
        if ours_run and timed:
            cpu = ours_run.cpu_ms("worker", "temporal") / timed.cpu_ms("worker", "temporal")
            lines.append(
                f"  against the no-op with the same {REORDER_WINDOW.total_seconds():g} s timer "
                f"({kind} limits): ours {ours_run.rate / timed.rate:.2f} x its rate, "
                f"{cpu:.2f} x its CPU per workflow: what the reorder window costs"
            )
    lines += [
        f"  ours does more per workflow than the no-op: {ours_shape.events:.3g} history events "
        f"vs {base_shape.events:.3g}, {ours_shape.workflow_tasks:.3g} workflow tasks vs "
        f"{base_shape.workflow_tasks:.3g} (the timer's), {ours_shape.upserts:.3g} search-"
        f"attribute upserts (visibility writes) vs {base_shape.upserts:.3g}, a start with 5 "
        f"search attributes, and real work in its activities (store queries, documents "
        f"through pydantic); where CPU is what is short, throughput follows CPU per workflow.",
        f"  the reorder window: every subscription workflow sleeps "
        f"{REORDER_WINDOW.total_seconds():g} s after its first event "
        f"(workflows.subscription_ledger.REORDER_WINDOW, a module constant: it cannot be set "
        f"per input, so ours ran with it only); it delays each workflow by "
        f"{REORDER_WINDOW.total_seconds():g} s but holds no worker slot.",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=500, help="workflows a side (>= 100)")
    parser.add_argument("--store", choices=("auto", "postgresql", "sqlite"), default="sqlite")
    parser.add_argument("--diagnose", choices=("auto", "always", "never"), default="auto")
    parser.add_argument(
        "--parts", choices=("all", "telemetry"), default="all",
        help="telemetry: only the telemetry on/off rounds (issue 16's figure)",
    )  # fmt: skip
    add_telemetry_options(parser, "workflows")
    # The worker subprocess this script starts.
    parser.add_argument("--serve-worker", choices=("ours", "baseline"), help=argparse.SUPPRESS)
    parser.add_argument("--temporal", help=argparse.SUPPRESS)
    parser.add_argument("--store-url", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--limits", choices=("production", "unthrottled"), help=argparse.SUPPRESS)
    parser.add_argument("--otlp", help=argparse.SUPPRESS)
    parser.add_argument("--metrics-port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--sdk-metrics-port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.serve_worker and args.events < 100:
        parser.error("--events must be at least 100")
    asyncio.run(serve_worker(args) if args.serve_worker else bench(args))


if __name__ == "__main__":
    main()
