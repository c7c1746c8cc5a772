"""Scale out: the amendment pipeline with 1, 2 and 4 worker processes against one server.

    .venv/bin/python -m bench.scale_out [--events 300] [--workers 1,2,4]
                                        [--limits unthrottled,production]

The pipeline of bench.orchestration (SubscriptionLedgerWorkflow fed by signal-with-start from
8 callers; the real `build_workers` in each worker process, billing and the ERP in memory, the
real store, SQLite by default), with N identical worker processes polling the same task
queues of one Temporal dev server, for each N and each set of limits:
- unthrottled: the queue limits lifted, so what binds is the machine and the server;
- production: QueueLimits as deployed. The ERP queue's rate (10/s) is the task queue's,
  enforced by the server for all workers together; its 2 in flight are each worker's.
Each run is N events after 20 untimed in each process (fresh processes each run), done when
the N journal entries exist. It prints workflows per second, the speed-up against one worker,
CPU per workflow (workers and dev server), each process's share of a core, and the ERP
activities' start rate; figures are merged into bench/results.json. Nothing asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from adapters.store import IntegrationStore
from bench._common import dev_server, helper_process, print_table, record
from bench.orchestration import (
    WARM_UP,
    Run,
    erp_rate,
    fetch_histories,
    journaled,
    ledger_starts,
    measure,
    pipeline_store,
)

WORKERS: Final = (1, 2, 4)
LIMITS: Final = ("unthrottled", "production")
BUSY: Final = 0.85  # share of the machine's cores past which CPU is what binds


async def run_with_workers(
    address: str, client: Any, store: IntegrationStore, events: int, limits: str,
    processes: int, logs: Path,
) -> Run:  # fmt: skip
    """One run: `processes` worker processes on one prefix, each warmed up by WARM_UP."""
    prefix = f"scale-{uuid.uuid4().hex[:6]}."
    args = ["-m", "bench.orchestration", "--serve-worker", "ours", "--temporal", address,
            "--store-url", store.url, "--prefix", prefix, "--limits", limits]  # fmt: skip

    def count(tag: str) -> Callable[[], Awaitable[int]]:
        async def counted() -> int:
            return await asyncio.to_thread(journaled, store, tag)

        return counted

    async with contextlib.AsyncExitStack() as stack:
        workers = [
            await stack.enter_async_context(helper_process(args, logs / f"worker-{prefix}{n}.log"))
            for n in range(processes)
        ]
        pids = [worker.pid for worker in workers]
        try:
            warm_tag = uuid.uuid4().hex[:6]
            warm = ledger_starts(warm_tag, WARM_UP * processes)
            await measure("warm-up", client, prefix, pids, warm, count(warm_tag))
            tag = uuid.uuid4().hex[:6]
            starts = ledger_starts(tag, events)
            seconds, feed_seconds, cpu = await measure(
                "scale-out", client, prefix, pids, starts, count(tag)
            )
            await asyncio.sleep(1)
            histories = await fetch_histories(client, [s.workflow_id for s in starts])
        except (RuntimeError, TimeoutError) as err:
            tails = "\n".join(worker.log_tail() for worker in workers)
            raise RuntimeError(f"{processes} workers: {err}\n{tails}") from err
    label = f"{processes} worker{'s' if processes > 1 else ''} ({limits} limits)"
    return Run(label, events, seconds, feed_seconds, histories, cpu)


async def bench(args: argparse.Namespace) -> None:
    runs: dict[tuple[str, int], Run] = {}
    most = max(args.events, WARM_UP * max(args.workers))
    with pipeline_store(args.store, most) as (store, store_label, logs):
        async with dev_server() as env:
            address = env.client.service_client.config.target_host
            for limits in args.limits:
                for processes in args.workers:
                    runs[(limits, processes)] = await run_with_workers(
                        address, env.client, store, args.events, limits, processes, logs
                    )
    report(args, store_label, runs)


def binds(run: Run, limits: str) -> str:
    """What held the run back, from the CPU it found: the machine when its cores were nearly
    all busy, else the queues' limits (production) or the round trips between the processes."""
    cores = os.cpu_count() or 1
    busy = sum(run.cpu.values()) / cores
    if busy >= BUSY:
        return f"binds: the machine's CPU ({busy:.0%} of {cores} cores busy)"
    waits = "the ERP queue's limits" if limits == "production" else "round trips"
    return f"binds: not CPU ({busy:.0%} of {cores} cores busy): {waits}"


def report(args: argparse.Namespace, store_label: str, runs: dict[tuple[str, int], Run]) -> None:
    figures: list[dict[str, Any]] = []
    lines = []
    for (limits, processes), run in runs.items():
        one = runs.get((limits, min(args.workers)), run)
        speed_up = run.rate / one.rate
        figures.append({
            "name": f"scale_out_{limits}_{processes}_workers_per_second",
            "ours": round(run.rate, 2), "baseline": round(one.rate, 2),
            "ratio": round(speed_up, 3), "target": "reported", "met": None,
        })  # fmt: skip
        shares = ", ".join(f"{name} {share:.0%}" for name, share in run.cpu.items())
        lines.append(
            f"{run.label}: {run.workflows} in {run.seconds:.1f} s = {run.rate:.2f}/s "
            f"({speed_up:.2f} x one worker); CPU per workflow: workers "
            f"{run.cpu_ms('worker'):.0f} ms, dev server {run.cpu_ms('temporal'):.0f} ms; "
            f"share of a core: {shares}; ERP activities started at {erp_rate(run):.1f}/s; "
            f"{binds(run, limits)}"
        )
    print_table(figures)
    print(
        f"\n{args.events} workflows a run, 8 signal-with-start callers, {WARM_UP} untimed per "
        f"worker process first; store {store_label}; one Temporal dev server in memory; each "
        f"worker process is the real build_workers (billing and the ERP in memory)"
    )
    for line in lines:
        print(line)
    for figure in figures:
        figure["workflows"], figure["store"] = args.events, store_label
    record(figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=300, help="workflows a run (>= 50)")
    parser.add_argument("--workers", default=",".join(map(str, WORKERS)),
                        help="worker processes per run, comma-separated")  # fmt: skip
    parser.add_argument("--limits", default=",".join(LIMITS),
                        help="unthrottled and/or production, comma-separated")  # fmt: skip
    parser.add_argument("--store", choices=("auto", "postgresql", "sqlite"), default="sqlite")
    args = parser.parse_args()
    args.workers = [int(n) for n in args.workers.split(",")]
    args.limits = args.limits.split(",")
    if args.events < 50 or any(n < 1 for n in args.workers):
        parser.error("--events must be at least 50 and each --workers at least 1")
    if any(limits not in LIMITS for limits in args.limits):
        parser.error(f"--limits takes {' and/or '.join(LIMITS)}")
    asyncio.run(bench(args))


if __name__ == "__main__":
    main()
