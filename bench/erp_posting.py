"""ERP-bound posting: taxed invoices and their payments, webhook -> ERP, against the ERP's rate.

    .venv/bin/python -m bench.erp_posting [--erp tryton|netsuite] [--documents N]

Starts a private local stack (free ports, a temporary home; no fault proxies, so the worker
and the API call Tryton and billing directly, as deployed; `ledgerbridge up`'s catalogue and
finance's mapping file in that home), then in the same run:
- ours: N subscriptions to the local catalogue's platform product (mapped to its ERP product
  and revenue account), taxed with the catalogue's NY sales tax (8.875 %, exclusive; mapped
  to its ERP tax) and charged automatically to `pm_card_visa`, so billing pays each first
  invoice at once. Each invoice travels as signed webhooks through the API, the
  SubscriptionLedgerWorkflow and the worker to Tryton (an invoice with its manual tax line),
  then its payment (a payment move applied to the invoice, which Tryton marks paid); both
  are journaled. Two postings per subscription.
- baseline: the same documents posted by this script in Tryton directly, one after the
  other: `TrytonLedger.post_document` then `post_payment` per invoice (the fastest path the
  ERP offers us), on postings built from an invoice of billing's by the workflow's own
  `required_postings` / `payment_postings` and mapped by `map_document` / `map_payment` on
  the same mapping file (same lines, same tax, same payment; only the references differ).
An untimed warm-up subscription goes first through our side: it checks the pipeline posts
(a gap in the mapping would stop it at a finance exception) and gives the baseline its
invoice and payment; the baseline then posts one pair untimed too (its session, the ERP's
setup read once).
Each side runs two rounds of N/2 invoices, in the order baseline, ours, ours, baseline, so
drift in what else the machine does weighs on both alike. Sustained throughput, the figure
with the target, is each side's postings (documents and payments) between the first and
the last posting of each round (postings after the first / span: the journal's `posted_at`
for ours, the direct calls' completions for the baseline). The end-to-end rate, from each
round's start to its last posting, is printed too: for ours it also holds the first
invoice's latency (the ledger workflow waits 2 s for out-of-order stragglers).
It checks zero duplicates (Tryton invoices per reference and payment moves per reference,
minus one) and that the books agree (every invoice paid in Tryton, its tax and total
billing's), reports the webhook acknowledgement latency (p50/p99) measured by billing's
deliveries during ours' rounds, while the ERP is the bottleneck, what one document and
one payment cost in the ERP (JSON-RPC calls and their time, measured on the baseline's
calls), and writes the figures to bench/results.json.

`--erp netsuite` runs the same against the NetSuite sandbox, booked through the real
pipeline: the private stack's routing file (`NETSUITE_ROUTING`) makes one entity, every
customer, booked by NetSuite on its own queue (Tryton stays on `erp`, where account sync
keeps making its parties; the ledger workflow ensures the NetSuite customer itself, so the
bench waits for no party). Real NetSuite takes hundreds of ms a request and limits the
requests an account has in flight; the sandbox answers in microseconds, which would measure
our overhead instead. So the sandbox's governance is set to the account's concurrency limit
(`netsuite_concurrency`, 5: the standard tier's) with `NETSUITE_LATENCY_SECONDS` a request,
the worker's NetSuite queue runs its activities as deployed (`QueueLimits.queue_options`:
two per slot, `NetSuiteLedger` holding the requests in flight to the limit), and the
baseline posts with that many posters in parallel, each one invoice then its payment,
through `NetSuiteLedger`: both sides run at the account's limit. Duplicates and
books come from NetSuite's own SuiteQL pages (`document_page` / `payment_page`: documents
and payments per reference; each invoice paid, its tax and total billing's, each payment
applied to its invoice). It also reports, per side, the sandbox's counters (requests per
invoice with its payment, by operation from ledgerbridge's own metrics; mean and peak in
flight; 429s) and the steady-state rate over the middle half of each round's postings,
since the first-to-last span does not see parallel posters' first postings completing
together. Its figures are named `erp_posting_netsuite_*` (and
`webhook_ack_p99_ms_while_netsuite_bound`).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from adapters.bootstrap import Adapters, build_adapters, build_netsuite_ledger
from adapters.erp.tryton import TrytonLedger
from adapters.logs import configure_logging
from adapters.mapping_file import MappingFile
from adapters.settings import Settings
from bench._common import (
    cpu_seconds,
    machine_cpu_seconds,
    percentile,
    print_table,
    private_settings,
    record,
)
from canonical import BillingDocument, LedgerPosting, Payment, PaymentPosting
from canonical.ledger import payment_postings, required_postings
from canonical.mapping import map_document, map_payment
from canonical.reconciliation import LedgerDocument, LedgerPayment
from sandbox.billing.driver import BillingDriver
from starters.api.intake import SLOW_ANSWER_MS
from starters.local.catalog import load_local_catalog
from starters.local.stack import LOCAL_ROUTING, LocalStack, metrics_endpoints

TARGET_RATIO = 0.9
TARGET_ACK_P99_MS = 100.0
PRODUCT = "prod_lb_platform"  # the local catalogue's, mapped to the ERP's SUBSCRIPTION
TAX_RATE = "us_ny_sales_8875"  # the local catalogue's key: 8.875 %, exclusive
PRICE_MINOR = 3000  # 30.00 USD a month; with tax 32.66
# Ours is done when the journal holds every posting; past this (plus a second per posting)
# something other than the ERP's pace holds it up, and the run says what.
JOURNAL_WAIT_SECONDS = 90.0
ERPS = ("tryton", "netsuite")
# Invoices a side by default: rounds of about 20 s on either ERP (Tryton posts about 2 a
# second, NetSuite at the account's limit about 5), long enough for a sustained rate. Ours'
# invoices arrive as billing delivers their webhooks, one after the other, over the first
# seconds of a round, while the baseline has all of its own at its start: in rounds of 8 s
# (40 NetSuite invoices a side) that arrival is a large part of a round (bench/README.md).
DEFAULT_DOCUMENTS = {"tryton": 40, "netsuite": 100}
# Each request to the NetSuite sandbox takes this long (its governance `latencySeconds`).
# NetSuite's Help Center publishes no response time for REST web services: what it governs
# is concurrency (one limit per account, the sum of web services and RESTlet requests in
# flight: 5 on the standard tier and on developer accounts, more with SuiteCloud Plus
# licences; past it, 429) and a 15-minute timeout. What integrators commonly observe is a
# few hundred ms for a record read or a small SuiteQL query and more for a transaction write
# (an invoice or a customer payment runs the account's validation, GL impact, scripts and
# workflows): 0.5 to 2 s is usual. 0.2 s, for every request alike, is the low end of that:
# far above the sandbox's own microseconds, so the account's slots bind both sides and not
# our CPU, and short enough for a run on a shared 2-core machine. Being uniform, it prices a
# read like a write: ours' extra requests are reads (the party lookup, the period checks),
# so the ratio it gives is, if anything, below what a real account's slower writes would give.
NETSUITE_LATENCY_SECONDS = 0.2
# `--erp netsuite`: `up`'s ERPs on their queues (Tryton on `erp`, where account sync makes
# parties; NetSuite on its own), and one entity instead of `up`'s two: every customer, booked
# by NetSuite (the ledger workflow ensures the NetSuite customer itself).
NETSUITE_ROUTING = (
    LOCAL_ROUTING.split("[[entities]]", 1)[0]
    + """[[entities]]
name = "BENCH"
legacy = "netsuite"
match = { default = true }
"""
)


@dataclass
class Rate:
    """One side's postings over its rounds: sustained (first to last posting of each round)
    and end to end (from each round's start)."""

    postings: int = 0
    gaps: int = 0  # postings after each round's first
    sustained_seconds: float = 0.0
    seconds: float = 0.0
    rounds: list[list[float]] = field(default_factory=list)

    def add(self, started: float, done: list[float]) -> None:
        self.rounds.append(sorted(done))
        self.postings += len(done)
        self.gaps += len(done) - 1
        self.sustained_seconds += max(done) - min(done)
        self.seconds += max(done) - started

    @property
    def sustained(self) -> float:
        return self.gaps / self.sustained_seconds

    @property
    def end_to_end(self) -> float:
        return self.postings / self.seconds

    @property
    def middle_half(self) -> float:
        """Postings between each round's first and third quartile posting, over that time:
        the steady state, without the filling and the draining of parallel posters (whose
        first postings complete together, which first-to-last does not see)."""
        gaps = [len(done) // 2 for done in self.rounds]
        spans = [
            done[len(done) // 4 + gap] - done[len(done) // 4]
            for done, gap in zip(self.rounds, gaps, strict=True)
        ]
        return sum(gaps) / sum(spans)


@dataclass
class ErpCost:
    """The ERP's time per kind of posting, from the baseline's JSON-RPC calls: what a
    document and a payment each cost Tryton (and so what binds both sides)."""

    kind: str = "setup"
    postings: Counter[str] = field(default_factory=Counter)
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    calls: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    method_seconds: dict[str, dict[str, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )

    def add_call(self, method: str, seconds: float) -> None:
        self.calls[self.kind][method] += 1
        self.method_seconds[self.kind][method] += seconds

    def summary(self, kind: str) -> str:
        count = self.postings[kind]
        if not count:
            return f"{kind}: none"
        calls = sum(self.calls[kind].values()) / count
        in_calls = sum(self.method_seconds[kind].values()) / count
        slowest = sorted(self.method_seconds[kind].items(), key=lambda kv: -kv[1])[:4]
        parts = ", ".join(
            f"{method.removeprefix('model.')} x{self.calls[kind][method] / count:g} "
            f"{seconds / count * 1000:.0f} ms"
            for method, seconds in slowest
        )
        return (
            f"{kind}: {self.seconds[kind] / count * 1000:.0f} ms a posting, {calls:g} calls "
            f"({in_calls * 1000:.0f} ms in them); most: {parts}"
        )


class TimedTrytonLedger(TrytonLedger):
    """The baseline's TrytonLedger, every JSON-RPC call timed (its methods call `call`)."""

    def __init__(self, settings: Settings, cost: ErpCost) -> None:
        super().__init__(
            settings.erp_url,
            settings.erp_database,
            settings.erp_user,
            settings.erp_password.get_secret_value(),
        )
        self.cost = cost

    async def call(
        self, model_method: str, *args: Any, context: Mapping[str, Any] | None = None
    ) -> Any:
        began = time.monotonic()
        try:
            return await super().call(model_method, *args, context=context)
        finally:
            self.cost.add_call(model_method, time.monotonic() - began)


@dataclass
class CpuMeter:
    """CPU seconds each process of the stack (and this script, the baseline's client) used
    during each side's rounds: whether the ERP is the bottleneck on both sides."""

    pids: dict[str, int]
    used: dict[str, dict[str, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )
    wall: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def snapshot(self) -> tuple[float, dict[str, float]]:
        cpu = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        # What else the machine ran meanwhile (other users' work included).
        cpu["everything else"] = machine_cpu_seconds() - sum(cpu.values())
        return time.monotonic(), cpu

    def add(self, side: str, since: tuple[float, dict[str, float]]) -> None:
        now, cpu = self.snapshot()
        self.wall[side] += now - since[0]
        for name, seconds in cpu.items():
            self.used[side][name] += seconds - since[1][name]

    def summary(self, side: str, postings: int) -> str:
        wall = self.wall[side]
        per_process = ", ".join(
            f"{name} {seconds / postings * 1000:.0f} ms ({seconds / wall:.0%})"
            for name, seconds in sorted(self.used[side].items(), key=lambda kv: -kv[1])
        )
        return f"{side}: {per_process}"


@dataclass(frozen=True)
class SameDocuments:
    """The baseline's postings: an invoice of billing's and its payment as our workflow
    builds them, under the bench's own references, mapped on the same mapping file."""

    document: LedgerPosting
    payment: PaymentPosting
    mapping: MappingFile

    @classmethod
    def of(
        cls, invoice: BillingDocument, payments: list[Payment], mapping: MappingFile
    ) -> SameDocuments:
        (document,) = required_postings(invoice)
        (payment,) = payment_postings(invoice, payments)
        return cls(document, payment, mapping)

    def posting(self, n: int) -> LedgerPosting:
        reference = f"bench-direct-{n}"
        return map_document(
            self.document.model_copy(
                update={"reference": reference, "description": f"bench direct {n}"}
            ),
            self.mapping.current(),
        )

    def payment_of(self, n: int) -> PaymentPosting:
        return map_payment(
            self.payment.model_copy(
                update={
                    "reference": f"bench-direct-{n}/payment",
                    "applies_to": f"bench-direct-{n}",
                    "description": f"bench direct payment {n}",
                }
            ),
            self.mapping.current(),
        )


async def direct_round(
    ledger: TrytonLedger, same: SameDocuments, numbers: range, rate: Rate, cost: ErpCost | None
) -> list[str]:
    """Tryton's own rate: each invoice created and posted, then its payment, one after the
    other. Without `cost` (the warm-up) its calls are not counted."""
    started, done, references = time.monotonic(), [], []
    for n in numbers:
        for kind in ("document", "payment"):
            if cost is not None:
                cost.kind = kind
            began = time.monotonic()
            if kind == "document":
                posted = await ledger.post_document(same.posting(n))
                references.append(posted.reference)
            else:
                await ledger.post_payment(same.payment_of(n))
            done.append(time.monotonic())
            if cost is not None:
                cost.postings[kind] += 1
                cost.seconds[kind] += done[-1] - began
                cost.kind = "setup"
    rate.add(started, done)
    return references


@dataclass(frozen=True)
class Customer:
    customer_id: str
    payment_method: str
    price_id: str
    tax_rate_id: str


async def subscribe_paid(
    adapters: Adapters, driver: BillingDriver, customer: Customer, numbers: range
) -> list[tuple[BillingDocument, list[Payment]]]:
    """N subscriptions charged at once; each first invoice with its payments, as billing
    holds them. Refuses an invoice that billing did not pay at once."""
    subscriptions = [
        await driver.subscribe(
            customer.customer_id,
            customer.price_id,
            idempotency_key=f"bench/s/{n}",
            payment_method=customer.payment_method,
            tax_rates=[customer.tax_rate_id],
        )
        for n in numbers
    ]
    invoices = []
    for subscription in subscriptions:
        async for invoice in adapters.billing.list_invoices(subscription_id=subscription.id):
            payments = await adapters.billing.invoice_payments(invoice.document_id)
            paid = [p for p in payments if p.status == "paid"]
            if invoice.status != "paid" or len(paid) != 1 or not invoice.tax_lines:
                raise RuntimeError(
                    f"invoice {invoice.document_id} is {invoice.status} with {len(paid)} paid "
                    f"payments and {len(invoice.tax_lines)} tax lines: the bench needs each "
                    "first invoice taxed and paid at once"
                )
            invoices.append((invoice, paid))
    return invoices


def references_of(invoices: list[tuple[BillingDocument, list[Payment]]]) -> list[str]:
    """What the journal holds once ours posted them: each invoice and its payment."""
    return [
        reference
        for invoice, payments in invoices
        for reference in (invoice.document_id, *(p.payment_id for p in payments))
    ]


async def journaled(adapters: Adapters, references: list[str], worker_log: Path) -> list[float]:
    """Wait until the journal holds every reference; their `posted_at`, on this script's
    monotonic clock."""
    deadline = time.monotonic() + JOURNAL_WAIT_SECONDS + len(references)
    missing = list(references)
    while True:
        # Mostly posted in order: one lookup per poll until the next one is there. The
        # journal's own times are what is measured, so a slow poll costs no precision, and
        # a busy one would take CPU from the ERP on a small machine.
        while missing and adapters.store.find_posting("billing", missing[0]) is not None:
            missing.pop(0)
        if not missing:
            break
        if time.monotonic() > deadline:
            log = await asyncio.to_thread(worker_log.read_text, errors="replace")
            tail = "\n".join(log.splitlines()[-20:])
            absent = [r for r in missing if adapters.store.find_posting("billing", r) is None]
            raise RuntimeError(
                f"{len(absent)} of {len(references)} postings not journaled after "
                f"{JOURNAL_WAIT_SECONDS + len(references):.0f} s (first: {absent[:4]}); "
                f"the worker's log ends:\n{tail}"
            )
        await asyncio.sleep(0.5)
    wall_now, now = datetime.now(UTC), time.monotonic()
    posted = [p.posted_at for r in references if (p := adapters.store.find_posting("billing", r))]
    return [now - (wall_now - _aware(at)).total_seconds() for at in posted]


async def pipeline_round(
    adapters: Adapters,
    driver: BillingDriver,
    customer: Customer,
    numbers: range,
    rate: Rate,
    worker_log: Path,
    feeding: list[tuple[float, float]],
) -> list[tuple[BillingDocument, list[Payment]]]:
    """Ours: subscriptions in billing, their first invoices and payments posted through
    webhooks. `feeding` gets the wall-clock span in which billing made the subscriptions."""
    started, began = time.monotonic(), time.time()
    invoices = await subscribe_paid(adapters, driver, customer, numbers)
    feeding.append((began, time.time()))
    rate.add(started, await journaled(adapters, references_of(invoices), worker_log))
    return invoices


async def _event_types(driver: BillingDriver) -> dict[str, str]:
    """Billing's events by id: what each acknowledged webhook was."""
    page = await driver.client.v1.events.list_async({"limit": 100})
    return {event.id: event.type async for event in page.auto_paging_iter()}


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Books:
    """What the ERP holds for a side's invoices: duplicates and documents that disagree
    with billing (not paid, another tax or total)."""

    duplicates: int
    differences: list[str]

    @classmethod
    def tally(
        cls,
        invoices: list[str],
        payments: list[str],
        held: Counter[str],
        paid: Counter[str],
        disagreeing: list[str],
    ) -> Books:
        """`held` / `paid`: the ERP's documents / payments per reference; `disagreeing`:
        what it holds for these invoices that is not billing's."""
        duplicates = sum(held[r] - 1 for r in invoices if held[r] > 1)
        duplicates += sum(paid[r] - 1 for r in payments if paid[r] > 1)
        differences = [f"{r}: not in the ERP" for r in invoices if not held[r]]
        differences += [f"payment {r}: not in the ERP" for r in payments if not paid[r]]
        return cls(duplicates, differences + disagreeing)


async def books(
    ledger: TrytonLedger, invoices: list[str], payments: list[str], tax: Decimal, total: Decimal
) -> Books:
    rows = await ledger.call(
        "model.account.invoice.search_read",
        [("reference", "in", invoices)],
        0,
        None,
        None,
        ["reference", "state", "tax_amount", "total_amount"],
    )
    moves = await ledger.call(
        "model.account.move.search_read",
        [("description", "in", payments)],
        0,
        None,
        None,
        ["description"],
    )
    disagreeing = [
        f"{row['reference']}: {row['state']}, tax {row['tax_amount']}, total {row['total_amount']}"
        for row in rows
        if (row["state"], Decimal(row["tax_amount"]), Decimal(row["total_amount"]))
        != ("paid", tax, total)
    ]
    return Books.tally(
        invoices,
        payments,
        Counter(row["reference"] for row in rows),
        Counter(row["description"] for row in moves),
        disagreeing,
    )


class ErpSide:
    """What differs with the ERP the bench posts to: how the baseline posts, how the books
    are read, what tells that the customer can be posted for, what is measured around each
    side's rounds and printed after them."""

    name = ""

    async def prepare(self) -> None:
        """Before anything is posted."""

    async def party_ready(self, adapters: Adapters, customer_id: str) -> None:
        """Returns once the ERP can take documents of the customer."""

    async def direct_round(
        self, same: SameDocuments, numbers: range, rate: Rate, timed: bool
    ) -> list[str]:
        """The baseline's postings of `numbers`, each invoice then its payment; their
        references. Untimed (the warm-up), its calls are not counted."""
        raise NotImplementedError

    async def books(
        self, invoices: list[str], payments: list[str], tax: Decimal, total: Decimal
    ) -> Books:
        raise NotImplementedError

    async def round_began(self, side: str) -> None:
        """Before a timed round of `side` ("ours" or "baseline")."""

    async def round_ended(self, side: str) -> None:
        """After it."""

    def summary(self, postings: tuple[int, int]) -> list[str]:
        """Lines on what the ERP did for each side (ours' postings, the baseline's)."""
        return []

    def figures(self, prefix: str, postings: tuple[int, int]) -> list[dict[str, Any]]:
        """Figures of this ERP's own, besides the rate, duplicates, books and acks."""
        return []

    def conditions(self) -> dict[str, Any]:
        """What the ERP was set to, recorded with each figure."""
        return {}

    async def aclose(self) -> None:
        raise NotImplementedError


class TrytonSide(ErpSide):
    """Tryton: the baseline posts one invoice after the other (writes are serial there), its
    JSON-RPC calls timed; the party comes from account sync."""

    name = "tryton"

    def __init__(self, settings: Settings) -> None:
        self.cost = ErpCost()
        self.ledger = TimedTrytonLedger(settings, self.cost)

    async def party_ready(self, adapters: Adapters, customer_id: str) -> None:
        deadline = time.monotonic() + 60
        while await adapters.ledger.find_party(customer_id) is None:  # account sync first
            if time.monotonic() > deadline:
                raise RuntimeError(f"account sync did not make {customer_id} an ERP party in 60 s")
            await asyncio.sleep(0.2)

    async def direct_round(
        self, same: SameDocuments, numbers: range, rate: Rate, timed: bool
    ) -> list[str]:
        return await direct_round(self.ledger, same, numbers, rate, self.cost if timed else None)

    async def books(
        self, invoices: list[str], payments: list[str], tax: Decimal, total: Decimal
    ) -> Books:
        return await books(self.ledger, invoices, payments, tax, total)

    def summary(self, postings: tuple[int, int]) -> list[str]:
        return [
            f"ERP cost, baseline calls: {self.cost.summary('document')}",
            f"ERP cost, baseline calls: {self.cost.summary('payment')}",
        ]

    async def aclose(self) -> None:
        await self.ledger.aclose()


def erp_requests(metrics: str) -> Counter[str]:
    """ERP requests by operation (every outcome) in a Prometheus exposition of ours."""
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(metrics):
        if family.name == "ledgerbridge_adapter_calls":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels.get("system") == "erp":
                    counts[sample.labels["operation"]] += int(sample.value)
    return counts


@dataclass
class Governance:
    """The NetSuite sandbox's account counters over one side's rounds (`/_sandbox/governance`,
    reset as each round begins): requests served and refused (429), the peak in flight, and
    the seconds requests held one of the account's slots; plus the ERP requests by operation
    that ledgerbridge's own metrics counted (the worker's for ours, this process' for the
    baseline)."""

    served: int = 0
    refused: int = 0
    peak: int = 0
    busy_seconds: float = 0.0
    wall_seconds: float = 0.0
    requests: Counter[str] = field(default_factory=Counter)

    def add(self, counters: Mapping[str, Any], wall: float, requests: Counter[str]) -> None:
        self.served += int(counters["served"])
        self.refused += int(counters["refused"])
        self.peak = max(self.peak, int(counters["peak"]))
        self.busy_seconds += float(counters["busySeconds"])
        self.wall_seconds += wall
        self.requests += requests

    def summary(self, side: str, invoices: int) -> str:
        def per_invoice(tryton: bool) -> str:
            return ", ".join(
                f"{operation} {count / invoices:g}"
                for operation, count in self.requests.most_common()
                if operation.startswith("model.") == tryton  # Tryton's are its RPC methods
            )

        tryton = per_invoice(tryton=True)
        return (
            f"{side}: {self.served / invoices:g} requests an invoice with its payment "
            f"({per_invoice(tryton=False)}); mean in flight "
            f"{self.busy_seconds / self.wall_seconds:.2f}, peak {self.peak}; refused (429) "
            f"{self.refused}" + (f"; meanwhile Tryton (account sync): {tryton}" if tryton else "")
        )


class NetSuiteSide(ErpSide):
    """The NetSuite sandbox at the account's concurrency limit, each request taking
    `NETSUITE_LATENCY_SECONDS`: the baseline posts with as many posters as the account allows,
    each one invoice then its payment; the workflow ensures the party in NetSuite itself."""

    name = "netsuite"

    def __init__(self, settings: Settings) -> None:
        self.ledger = build_netsuite_ledger(settings)
        self.posters = settings.netsuite_concurrency
        self.control = f"{settings.netsuite_url}/_sandbox/governance"
        ours = metrics_endpoints(settings)[1:2]  # the worker's (the stack gives it a port)
        self.worker_metrics = ours[0] if ours else None
        self.sides: dict[str, Governance] = defaultdict(Governance)
        self._began = (0.0, Counter[str]())

    async def prepare(self) -> None:
        """The account's limit is the worker's and the baseline's (`netsuite_concurrency`),
        each request `NETSUITE_LATENCY_SECONDS` long."""
        httpx.put(self.control, timeout=10, json={
            "concurrencyLimit": self.posters, "latencySeconds": NETSUITE_LATENCY_SECONDS,
        }).raise_for_status()  # fmt: skip

    def _requests(self, side: str) -> Counter[str]:
        if side == "baseline":
            return erp_requests(generate_latest(REGISTRY).decode())
        if self.worker_metrics is None:
            return Counter()
        return erp_requests(httpx.get(self.worker_metrics, timeout=10).text)

    async def round_began(self, side: str) -> None:
        httpx.put(self.control, json={"resetCounters": True}, timeout=10).raise_for_status()
        self._began = (time.monotonic(), self._requests(side))

    async def round_ended(self, side: str) -> None:
        began, requests = self._began
        counters = httpx.get(self.control, timeout=10).json()
        self.sides[side].add(counters, time.monotonic() - began, self._requests(side) - requests)

    async def direct_round(
        self, same: SameDocuments, numbers: range, rate: Rate, timed: bool
    ) -> list[str]:
        started, done, references = time.monotonic(), [], []
        pending = iter(numbers)

        async def poster() -> None:
            for n in pending:  # shared: each number goes to one poster
                posted = await self.ledger.post_document(same.posting(n))
                references.append(posted.reference)
                done.append(time.monotonic())
                await self.ledger.post_payment(same.payment_of(n))
                done.append(time.monotonic())

        await asyncio.gather(*(poster() for _ in range(self.posters)))
        rate.add(started, done)
        return references

    async def books(
        self, invoices: list[str], payments: list[str], tax: Decimal, total: Decimal
    ) -> Books:
        """Every document and payment dated in the last month (the sandbox is this run's),
        read with the reconciliation's own pages (SuiteQL)."""
        today = dt.date.today()
        start, end = today - dt.timedelta(days=31), today + dt.timedelta(days=1)
        documents: list[LedgerDocument] = []
        money: list[LedgerPayment] = []
        cursor: str | None = None
        while True:
            page = await self.ledger.document_page(start, end, cursor, 1000)
            documents += page.documents
            if (cursor := page.next_cursor) is None:
                break
        while True:
            paid = await self.ledger.payment_page(start, end, cursor, 1000)
            money += paid.payments
            if (cursor := paid.next_cursor) is None:
                break
        wanted, settles = set(invoices), dict(zip(payments, invoices, strict=True))
        disagreeing = [
            f"{d.reference}: {d.state}, tax {tax_of(d)}, total {d.total.amount}"
            for d in documents
            if d.reference in wanted
            and (d.state, tax_of(d), d.total.amount) != ("paid", tax, total)
        ]
        disagreeing += [
            f"payment {p.reference}: applied to {p.applies_to}, not {settles[p.reference]}"
            for p in money
            if p.reference in settles and p.applies_to != settles[p.reference]
        ]
        return Books.tally(
            invoices,
            payments,
            Counter(d.reference for d in documents if d.reference),
            Counter(p.reference for p in money if p.reference),
            disagreeing,
        )

    def figures(self, prefix: str, postings: tuple[int, int]) -> list[dict[str, Any]]:
        ours, baseline = self.sides["ours"], self.sides["baseline"]
        per_invoice = [side.served / (count // 2) for side, count in
                       zip((ours, baseline), postings, strict=True)]  # fmt: skip
        return [
            {
                "name": f"{prefix}_429s", "ours": ours.refused, "baseline": baseline.refused,
                "ratio": None, "target": "reported", "met": None,
            },
            {
                "name": f"{prefix}_requests_per_invoice", "ours": round(per_invoice[0], 2),
                "baseline": round(per_invoice[1], 2),
                "ratio": round(per_invoice[0] / per_invoice[1], 3), "target": "reported",
                "met": None,
            },
        ]  # fmt: skip

    def conditions(self) -> dict[str, Any]:
        return {"concurrency": self.posters, "latency_s": NETSUITE_LATENCY_SECONDS}

    def summary(self, postings: tuple[int, int]) -> list[str]:
        return [
            f"NetSuite sandbox: concurrency limit {self.posters}, {NETSUITE_LATENCY_SECONDS} s a "
            "request; during each side's rounds: "
            + "; ".join(
                self.sides[side].summary(side, count // 2)
                for side, count in zip(("ours", "baseline"), postings, strict=True)
            )
        ]

    async def aclose(self) -> None:
        await self.ledger.aclose()


def tax_of(document: LedgerDocument) -> Decimal:
    return sum((money.amount for money in document.taxes.values()), Decimal(0))


def slow_intake(api_log: Path, since: float, until: float) -> list[tuple[str, float, float]]:
    """The API's answers to webhooks that start work which took it over its slow mark
    (`Intake.start_processes` logs them with where the time went), accepted in [since,
    until]: (event type, receipt lookup ms, Temporal accepting the starts ms)."""
    slow = []
    for text in api_log.read_text().splitlines() if api_log.exists() else []:
        try:
            line = json.loads(text)
        except ValueError:
            continue
        if line.get("event") != "slow webhook answer":
            continue
        at = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00")).timestamp()
        if since <= at <= until:
            slow.append((str(line["event_type"]), line["lookup_ms"], line["temporal_ms"]))
    return slow


async def set_up_customer(
    adapters: Adapters, driver: BillingDriver, home: Path, erp: ErpSide
) -> Customer:
    """A customer the ERP can take documents of, paying by card, and the catalogue's
    product priced and its tax rate found."""
    catalog = load_local_catalog(home)
    customer = await driver.create_customer("Bench Co", idempotency_key="bench/customer")
    method = await driver.attach_payment_method(customer.id, idempotency_key="bench/pm")
    price = await driver.create_price(PRODUCT, PRICE_MINOR, "usd", idempotency_key="bench/price")
    await erp.party_ready(adapters, customer.id)
    return Customer(customer.id, str(method.id), price.id, catalog.tax_rates[TAX_RATE])


async def pipeline(
    settings: Settings, count: int, meter: CpuMeter, erp_name: str
) -> dict[str, Any]:
    adapters = build_adapters(settings)
    erp: ErpSide = TrytonSide(settings) if erp_name == "tryton" else NetSuiteSide(settings)
    driver = BillingDriver.connect(
        settings.billing_api_key.get_secret_value(), settings.billing_url
    )
    worker_log = settings.home / "logs" / "worker.log"
    try:
        await erp.prepare()
        customer = await set_up_customer(adapters, driver, settings.home, erp)
        # Untimed: our pipeline posts one invoice and its payment (or says why not); that
        # invoice, as billing holds it, is what the baseline posts again and again.
        (warm_up,) = await subscribe_paid(adapters, driver, customer, range(-1, 0))
        await journaled(adapters, references_of([warm_up]), worker_log)
        same = SameDocuments.of(*warm_up, MappingFile(settings.resolved_finance_mapping()))
        invoice = warm_up[0]
        # Untimed as well: the baseline's session and the ERP's setup read once, as ours.
        await erp.direct_round(same, range(count, count + 1), Rate(), timed=False)

        # Two rounds a side, in the order baseline, ours, ours, baseline.
        half = count // 2
        first, second = range(half), range(half, count)
        baseline, ours = Rate(), Rate()
        await erp.round_began("baseline")
        since = meter.snapshot()
        direct = await erp.direct_round(same, first, baseline, timed=True)
        meter.add("baseline", since)
        await erp.round_ended("baseline")
        await erp.round_began("ours")
        since = meter.snapshot()
        ours_from = time.time()  # billing records its webhook deliveries in wall-clock time
        feeding: list[tuple[float, float]] = []
        paid = await pipeline_round(adapters, driver, customer, first, ours, worker_log, feeding)
        paid += await pipeline_round(adapters, driver, customer, second, ours, worker_log, feeding)
        ours_until = time.time()
        meter.add("ours", since)
        await erp.round_ended("ours")
        await erp.round_began("baseline")
        since = meter.snapshot()
        direct += await erp.direct_round(same, second, baseline, timed=True)
        meter.add("baseline", since)
        await erp.round_ended("baseline")

        ours_books = await erp.books(
            [i.document_id for i, _ in paid],
            [p.payment_id for _, payments in paid for p in payments],
            invoice.tax.amount,
            invoice.total.amount,
        )
        baseline_books = await erp.books(
            direct,
            [f"{r}/payment" for r in direct],
            invoice.tax.amount,
            invoice.total.amount,
        )
        deliveries = httpx.get(
            f"{settings.billing_url}/_sandbox/webhooks/deliveries", timeout=10
        ).json()["data"]
        # The webhooks answered while ours' rounds kept the ERP busy (setup's are not).
        answered = [
            (delivery["event_id"], attempt["duration_ms"], attempt["at"])
            for delivery in deliveries
            for attempt in delivery["attempts"]
            if attempt["status_code"] == 200 and ours_from <= attempt["at"] <= ours_until
        ]
        acks = sorted(ms for _, ms, _ in answered)
        event_types = await _event_types(driver)
        by_type: dict[str, list[float]] = defaultdict(list)
        by_phase: dict[str, list[float]] = defaultdict(list)
        for event_id, ms, at in answered:
            by_type[event_types.get(event_id, "?")].append(ms)
            subscribing = any(began <= at <= ended for began, ended in feeding)
            by_phase["while subscribing" if subscribing else "after"].append(ms)
        return {
            "baseline": baseline.sustained,
            "ours": ours.sustained,
            "baseline_end_to_end": baseline.end_to_end,
            "ours_end_to_end": ours.end_to_end,
            "middle_half": (ours.middle_half, baseline.middle_half),
            "postings": (ours.postings, baseline.postings),
            "books": (ours_books, baseline_books),
            "invoice": f"{invoice.total.amount} {invoice.currency} (tax {invoice.tax.amount})",
            "erp": erp,
            "ack_p50": round(statistics.median(acks), 1),
            "ack_p99": acks[min(len(acks) - 1, int(len(acks) * 0.99))],
            "acks": len(acks),
            "slowest_acks": acks[-5:],
            "feeding_seconds": [round(ended - began, 1) for began, ended in feeding],
            "acks_by_phase": {
                phase: (len(ms), percentile(ms, 50), percentile(ms, 99))
                for phase, ms in sorted(by_phase.items())
            },
            "acks_by_type": {
                kind: (len(ms), percentile(ms, 50), percentile(ms, 99))
                for kind, ms in sorted(by_type.items(), key=lambda kv: -percentile(kv[1], 99))
            },
            "slow_intake": slow_intake(settings.home / "logs" / "api.log", ours_from, ours_until),
        }
    finally:
        await driver.aclose()
        await erp.aclose()
        await adapters.aclose()


def main() -> None:
    configure_logging("WARNING", "console")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--documents", type=int,
        help="invoices a side, each with its payment (default: "
        + ", ".join(f"{n} for {erp}" for erp, n in DEFAULT_DOCUMENTS.items()) + ")",
    )  # fmt: skip
    parser.add_argument(
        "--erp", choices=ERPS, default="tryton",
        help="the ERP both sides post to: Tryton, or the NetSuite sandbox at the account's "
        f"concurrency limit with {NETSUITE_LATENCY_SECONDS} s a request",
    )  # fmt: skip
    args = parser.parse_args()
    if args.documents is None:
        args.documents = DEFAULT_DOCUMENTS[args.erp]
    if args.documents < 4:
        parser.error("--documents must be at least 4 (two rounds a side, two invoices each)")
    with tempfile.TemporaryDirectory(prefix="ledgerbridge-bench-") as home:
        settings = private_settings(Path(home) / ".ledgerbridge")
        if args.erp == "netsuite":
            routing = Path(home) / "erp-routing.toml"
            routing.write_text(NETSUITE_ROUTING)
            settings = settings.model_copy(update={"erp_routing": routing})
        # As deployed: the worker and the API call the ERP and billing directly, no fault proxy.
        with LocalStack(settings, echo=lambda _line: None, fault_proxies=False).running() as stack:
            pids = {c.name: c.process.pid for c in stack.components if c.process is not None}
            meter = CpuMeter({**pids, "bench": os.getpid()})
            result = asyncio.run(pipeline(stack.settings, args.documents, meter, args.erp))
    ratio = result["ours"] / result["baseline"]
    end_to_end = result["ours_end_to_end"] / result["baseline_end_to_end"]
    ours_books, baseline_books = result["books"]
    erp: ErpSide = result["erp"]
    # Tryton's figures keep their names; another ERP's carry its name.
    prefix = "erp_posting" if erp.name == "tryton" else f"erp_posting_{erp.name}"
    bound = "erp" if erp.name == "tryton" else erp.name
    figures = [
        {
            "name": f"{prefix}_per_second", "ours": round(result["ours"], 3),
            "baseline": round(result["baseline"], 3), "ratio": round(ratio, 3),
            "target": f">= {TARGET_RATIO}", "met": ratio >= TARGET_RATIO,
        },
        {
            "name": f"{prefix}_per_second_end_to_end",
            "ours": round(result["ours_end_to_end"], 3),
            "baseline": round(result["baseline_end_to_end"], 3), "ratio": round(end_to_end, 3),
            "target": "reported", "met": None,
        },
        {
            "name": f"{prefix}_duplicates", "ours": ours_books.duplicates,
            "baseline": baseline_books.duplicates, "ratio": None, "target": "== 0",
            "met": ours_books.duplicates == 0,
        },
        {
            "name": f"{prefix}_books_differences", "ours": len(ours_books.differences),
            "baseline": len(baseline_books.differences), "ratio": None, "target": "== 0",
            "met": not ours_books.differences and not baseline_books.differences,
        },
        {
            "name": f"webhook_ack_p99_ms_while_{bound}_bound", "ours": result["ack_p99"],
            "baseline": None, "ratio": None, "target": f"< {TARGET_ACK_P99_MS}",
            "met": result["ack_p99"] < TARGET_ACK_P99_MS,
        },
    ]  # fmt: skip
    ours_postings, baseline_postings = result["postings"]
    figures += erp.figures(prefix, result["postings"])
    if erp.name != "tryton":  # what the run was, shown by `python -m bench`'s table
        for figure in figures:
            figure.update(documents=args.documents, **erp.conditions())
    record(figures)
    print_table(figures)
    print(f"({args.documents} invoices a side of {result['invoice']}, each with its payment: "
          f"{ours_postings} postings ours, {baseline_postings} baseline; webhook "
          f"acknowledgements: {result['acks']}, p50 {result['ack_p50']} ms, slowest "
          f"{result['slowest_acks']} ms)")  # fmt: skip
    print(f"webhook acknowledgements during ours' rounds (count, p50, p99 ms) while the bench "
          f"made the subscriptions (for {result['feeding_seconds']} s) and after: "
          + "; ".join(f"{phase} {n}, {p50}, {p99}"
                      for phase, (n, p50, p99) in result["acks_by_phase"].items()))  # fmt: skip
    print("webhook acknowledgements during ours' rounds by event type (count, p50, p99 ms): "
          + "; ".join(f"{kind} {n}, {p50}, {p99}"
                      for kind, (n, p50, p99) in result["acks_by_type"].items()))  # fmt: skip
    slow = result["slow_intake"]
    print(f"the API's answers over {SLOW_ANSWER_MS:g} ms during ours' rounds: {len(slow)}"
          + (f"; receipt lookup p50 {percentile([s[1] for s in slow], 50)} ms, max "
             f"{max(s[1] for s in slow)} ms; Temporal accepting the starts p50 "
             f"{percentile([s[2] for s in slow], 50)} ms, max {max(s[2] for s in slow)} ms; "
             + ", ".join(f"{kind} {n}" for kind, n in Counter(s[0] for s in slow).most_common())
             if slow else ""))  # fmt: skip
    print("CPU per posting (share of one core) during each side's rounds: "
          f"{meter.summary('ours', ours_postings)}; "
          f"{meter.summary('baseline', baseline_postings)}")  # fmt: skip
    if erp.name != "tryton":  # posters in parallel: see `Rate.middle_half`
        ours_steady, baseline_steady = result["middle_half"]
        print(f"steady state (middle half of each round's postings), postings/s: ours "
              f"{ours_steady:.3f}, baseline {baseline_steady:.3f}, ratio "
              f"{ours_steady / baseline_steady:.3f}")  # fmt: skip
    for line in erp.summary(result["postings"]):
        print(line)
    for side, found in (("ours", ours_books), ("baseline", baseline_books)):
        for difference in found.differences[:5]:
            print(f"books differ ({side}): {difference}")


if __name__ == "__main__":
    main()
