"""Console inbox: how fast `GET /console/inbox` answers with 1,000 items open.

    .venv/bin/python -m bench.console_inbox [--items 1000] [--requests 40]

Where the inbox reads its items decides what is measured. It holds nothing of its own: it
reads one page of the open credit and exception workflows from Temporal's visibility (the
same functions as `GET /v1/approvals` and `GET /v1/exceptions`) with the counts of all
(`count_workflows`); each row is made of the search attributes the workflows upsert, so no
workflow is queried and the worker is not on the read path. The real path: a private
Temporal dev server (the command `ledgerbridge up` runs, in memory), the real worker in its
own process (bench.footprint's, billing and support in memory), N CaseToCredit workflows
started the way the API starts them, each above the auto-approval threshold so each waits
for finance, and the real API (`create_app`, under uvicorn in a thread of this process) with
a finance session signed in through the console's own form.

Figures: p50 and p95 of the page over sequential requests after three warm-up requests
(target p95 < 300 ms); the baseline is `GET /v1/approvals`, the API's JSON of the same read,
so the ratio is what the page adds. Reported too: the rows the first page shows, the count
it gives, and how many distinct items following its "Next page" links reaches (untimed),
so "all of them reachable" is measured, not assumed. Nothing here asserts: it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import html
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from pydantic import SecretStr

from adapters.settings import Settings
from adapters.store import IntegrationStore
from adapters.temporal import connect_temporal
from adapters.workflow_starts import start_once
from bench._common import free_port, percentile, print_table, private_settings, record
from bench.footprint import (
    count_waiting,
    credit_request,
    dev_server,
    worker_process,
)
from canonical.credit import CreditPolicy
from starters.api.auth import key_entry
from starters.routing import credit_start

TARGET_P95_MS = 300.0
FINANCE_KEY = "lb_bench_console_finance_7d1e"
COUNTED = re.compile(r"<strong>(\d+)</strong> waiting")
ITEM = re.compile(r'data-item="([^"]+)"')
NEXT = re.compile(r'<a rel="next" href="([^"]+)"')


@contextmanager
def api_served(settings: Settings) -> Iterator[str]:
    from starters.api import create_app

    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                            log_config=None, log_level="warning", lifespan="on")  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="bench-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


def signed_in(client: httpx.Client) -> None:
    """Through the console's own sign-in form, as a browser does."""
    form = client.get("/console/sign-in").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token, "no sign-in token"
    answer = client.post(
        "/console/sign-in", data={"api_key": FINANCE_KEY, "csrf_token": token.group(1)},
        headers={"Origin": str(client.base_url).rstrip("/")},
    )  # fmt: skip
    if answer.status_code != 303:
        raise RuntimeError(f"sign-in refused: {answer.status_code} {answer.text[:200]}")


def reachable(client: httpx.Client) -> tuple[int, int]:
    """Distinct items seen following the console's "Next page" links to the end, and pages."""
    seen: set[str] = set()
    path: str | None = "/console/inbox"
    pages = 0
    while path and pages < 1000:
        page = client.get(path).text
        seen.update(ITEM.findall(page))
        pages += 1
        following = NEXT.search(page)
        path = html.unescape(following.group(1)) if following else None
    return len(seen), pages


def timed(client: httpx.Client, path: str, requests: int, **options: Any) -> list[float]:
    for _ in range(3):  # warm-up: connections, the API's Temporal client, the worker's cache
        client.get(path, **options).raise_for_status()
    seconds = []
    for _ in range(requests):
        began = time.perf_counter()
        client.get(path, **options).raise_for_status()
        seconds.append(time.perf_counter() - began)
    return seconds


async def open_items(settings: Settings, items: int, prefix: str) -> float:
    """N credits waiting for finance; the seconds it took."""
    client = await connect_temporal(settings.temporal_address, "default", wait_seconds=30)
    gate = asyncio.Semaphore(50)
    began = time.monotonic()

    async def start(n: int) -> None:
        async with gate:
            begin = credit_start(credit_request(n), CreditPolicy(), f"bench-inbox-{n}")
            await start_once(client, begin, prefix, rpc_timeout_seconds=30)

    await asyncio.gather(*(start(n) for n in range(items)))
    while await count_waiting(client) < items:
        if time.monotonic() - began > 600:
            raise RuntimeError(f"{await count_waiting(client)}/{items} waiting after 600 s")
        await asyncio.sleep(0.5)
    return time.monotonic() - began


async def measure(settings: Settings, items: int, requests: int, logs: Path) -> dict[str, Any]:
    store = IntegrationStore(settings.resolved_store_url)
    store.migrate()
    store.dispose()
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    async with worker_process(settings.temporal_address, settings.resolved_store_url, prefix,
                              "sandboxed", logs, 1000):  # fmt: skip
        opened = await open_items(settings, items, prefix)
        print(f"{items} credits waiting for finance after {opened:.1f} s", flush=True)
        api_settings = settings.model_copy(update={
            "api_keys": [key_entry("bench-finance", "finance", FINANCE_KEY)],
            "console_session_secret": SecretStr("bench-console-session-secret-0123456789"),
        })  # fmt: skip

        def run() -> dict[str, Any]:
            with api_served(api_settings) as url, httpx.Client(base_url=url, timeout=60) as http:
                signed_in(http)
                page = http.get("/console/inbox").text
                counted = COUNTED.search(page)
                rows, reached = len(ITEM.findall(page)), reachable(http)
                inbox = timed(http, "/console/inbox", requests)
                bearer = {"Authorization": f"Bearer {FINANCE_KEY}"}
                api = timed(http, "/v1/approvals", requests, headers=bearer)
                return {
                    "inbox": inbox,
                    "api": api,
                    "rows": rows,
                    "reached": reached[0],
                    "pages": reached[1],
                    "counted": int(counted.group(1)) if counted else 0,
                }

        return await asyncio.to_thread(run)


def figures_of(run: dict[str, Any], items: int) -> list[dict[str, Any]]:
    inbox_p95 = percentile(run["inbox"], 95) * 1000
    inbox_p50 = percentile(run["inbox"], 50) * 1000
    api_p95 = percentile(run["api"], 95) * 1000
    api_p50 = percentile(run["api"], 50) * 1000
    return [
        {
            "name": "console_inbox_p95_ms", "ours": round(inbox_p95, 1),
            "baseline": round(api_p95, 1), "ratio": round(inbox_p95 / api_p95, 3),
            "target": f"< {TARGET_P95_MS:g} ms", "met": inbox_p95 < TARGET_P95_MS,
            "open_items": items, "rows_shown": run["rows"], "counted": run["counted"],
            "reachable": run["reached"],
        },
        {
            "name": "console_inbox_p50_ms", "ours": round(inbox_p50, 1),
            "baseline": round(api_p50, 1), "ratio": round(inbox_p50 / api_p50, 3),
            "target": "-", "met": None, "open_items": items, "rows_shown": run["rows"],
        },
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000, help="credits left open for finance")
    parser.add_argument("--requests", type=int, default=40, help="timed requests per path")
    args = parser.parse_args()
    if args.items < 1 or args.requests < 1:
        parser.error("--items and --requests must be at least 1")
    with tempfile.TemporaryDirectory(prefix="ledgerbridge-bench-") as tmp:
        root, logs = Path(tmp), Path(tmp) / "logs"
        logs.mkdir()
        settings = private_settings(root / "inbox" / ".ledgerbridge")
        with dev_server(settings, logs / "temporal.log", in_memory=True):
            run = asyncio.run(measure(settings, args.items, args.requests, logs))
    figures = figures_of(run, args.items)
    print(f"the first page showed {run['rows']} rows and counted {run['counted']} of "
          f"{args.items} open items; its Next links reached {run['reached']} distinct items "
          f"in {run['pages']} pages")  # fmt: skip
    record(figures)
    print_table(figures)


if __name__ == "__main__":
    main()
