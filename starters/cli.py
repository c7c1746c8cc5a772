"""`ledgerbridge`: the local stack, the demo, the worker, the API and operator commands."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from adapters.settings import Settings
from starters.console import ApiCallFailed, call_api, echo, fail, table
from starters.erp_commands import add_routing_parsers, cmd_erp_routing
from starters.event_commands import add_parsers as add_event_parsers
from starters.event_commands import cmd_events
from starters.inbox import add_parsers, cmd_credits, cmd_finance
from starters.mapping_commands import add_parsers as add_mapping_parsers
from starters.mapping_commands import cmd_mapping
from starters.recon_commands import add_parsers as add_recon_parsers
from starters.recon_commands import cmd_recon


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from starters.local.stack import LocalStack, StackError

    stop = _stop_flag()
    stack = LocalStack(settings, echo=echo, monitoring=args.monitoring)
    try:
        with stack.running():
            echo(_banner(stack.settings))
            stack.supervise(lambda: stop["requested"])
            echo("stopping the stack")
    except StackError as err:
        return fail(str(err))
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from adapters.logs import configure_logging
    from starters.local.demo import DemoFailed, play
    from starters.local.stack import LocalStack, StackError

    configure_logging("WARNING", "console")  # the demo's own lines are the story; logs are in files
    stop = _stop_flag()
    stack = LocalStack(settings, echo=echo)
    try:
        with stack.running():
            try:
                asyncio.run(play(stack.settings, echo=echo))  # with the worker's ports
            except DemoFailed as err:
                return fail(f"demo failed: {err}")
            keep_running = not args.exit and sys.stdin.isatty()
            if keep_running:
                echo(_banner(stack.settings))
                stack.supervise(lambda: stop["requested"])
            echo("stopping the stack (state kept in .ledgerbridge/; `ledgerbridge up` resumes)")
    except StackError as err:
        return fail(str(err))
    return 0


def cmd_chaos(args: argparse.Namespace, _settings: Settings) -> int:
    from adapters.logs import configure_logging
    from starters.local.chaos import ChaosOptions, run_chaos

    configure_logging("WARNING", "console")  # the run's own lines are the story
    options = ChaosOptions(
        events=args.events, seed=args.seed, kills=args.kills, keep_home=args.keep_home
    )
    return run_chaos(options, echo=echo)


def cmd_worker(_args: argparse.Namespace, _settings: Settings) -> int:
    from workers.main import main

    main()
    return 0


def cmd_api(_args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from adapters.logs import configure_logging
    from starters.api import create_app

    configure_logging(settings.log_level, settings.log_format)
    uvicorn.run(
        create_app(settings),
        host=settings.api_host,
        port=settings.api_port,
        log_config=None,
        access_log=False,
    )
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from starters.local.stack import LocalStack

    if args.processes:
        body = call_api(settings, "get", "/v1/health/processes", role="ops").json()
        echo("\n".join(process_health_lines(body)))
        return 1 if body["outages"] else 0

    rows = []
    healthy = True
    for component in LocalStack(settings, monitoring=None).plan():
        ok = component.ready()
        healthy &= ok
        rows.append((component.name, "up" if ok else "DOWN", component.listens))
    echo(table(("component", "state", "where"), rows))
    return 0 if healthy else 1


def process_health_lines(body: dict[str, Any]) -> list[str]:
    """`GET /v1/health/processes` as tables: processes, what blocks them, systems, outages."""
    rows = []
    for p in body["processes"]:
        oldest = p["oldest_waiting"]
        waiting = (
            f"{oldest['workflow_id']} ({oldest['status']}, {oldest['age_hours']} h)"
            if oldest
            else "-"
        )
        on = ", ".join(f"{n} on {target}" for target, n in sorted(p["waiting_on"].items()))
        rows.append((p["process"], p["in_flight"], p["done_24h"], p["failed_24h"], p["blocked"],
                     on or "-", waiting))  # fmt: skip
    header = ("process", "in flight", "done 24h", "failed 24h", "blocked", "waiting", "oldest")
    lines = [table(header, rows)]
    for p in body["processes"]:
        for item in p["blocked_items"]:
            by = ", ".join(item["exception_ids"]) or "an exception no longer open"
            lines.append(f"blocked: {item['workflow_id']} by {by}")
    lines.append("")
    lines.append(
        table(
            ("system", "state", "last success", "last failure"),
            [
                (
                    s["system"],
                    s["state"],
                    s["last_success_at"] or "-",
                    f"{s['last_failure']} at {s['last_failure_at']}"
                    if s["last_failure_at"]
                    else "-",
                )
                for s in body["systems"]
            ],
        )
    )
    lines.extend(outage["summary"] for outage in body["outages"])
    if body["truncated"]:
        lines.append("(more work waits than was counted: the waiting counts stop there)")
    return lines


def cmd_accounts(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "sync":
        response = call_api(settings, "post", f"/v1/accounts/{args.customer_id}:sync", role="ops")
        body = response.json()
        echo(f"{body['status']}: {body['workflow_id']}")
    else:
        response = call_api(settings, "get", f"/v1/accounts/{args.customer_id}", role="ops")
        records = response.json()["records"]
        echo(
            table(
                ("system", "id", "name"),
                [(r["system"], r["external_id"], r["name"]) for r in records],
            )
        )
    return 0


def cmd_ledgers(_args: argparse.Namespace, settings: Settings) -> int:
    """After a deployment: every running ledger continues as new on the code deployed now."""
    body = call_api(settings, "post", "/v1/ledgers:refresh", role="ops").json()
    echo(f"{body['signalled']} running ledger(s) asked to continue as new once idle")
    return 0


def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    """Billing events of a date range fed through the webhook path again, via the API."""
    from adapters.bootstrap import build_billing

    since = datetime.combine(args.since, time(), UTC)
    until = datetime.combine(args.until + timedelta(days=1), time(), UTC) if args.until else None

    async def event_ids() -> list[str]:
        billing = build_billing(settings)
        try:
            return [
                str(e["id"])
                async for e in billing.list_events(created_from=since, created_until=until)
            ]
        finally:
            await billing.aclose()

    ids = asyncio.run(event_ids())
    span = f"{args.since}..{args.until or 'now'}"
    echo(f"billing has {len(ids)} event(s) in {span}")
    counts: Counter[str] = Counter()
    for start in range(0, len(ids), REPLAY_BATCH):
        batch = ids[start : start + REPLAY_BATCH]
        response = call_api(
            settings, "post", "/v1/billing/events:replay", role="ops", json={"event_ids": batch}
        )
        counts.update(outcome["status"] for outcome in response.json())
        _progress(start + len(batch), len(ids), counts)
    if ids:
        print(file=sys.stderr)
    rows = [(status, counts[status]) for status in ("accepted", "duplicate", "ignored", "unknown")]
    echo(table(("outcome", "events"), rows))
    return 0


REPLAY_BATCH = 100


def _progress(done: int, total: int, counts: Any) -> None:
    width = 30
    filled = int(width * done / total) if total else width
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}  {summary}",
          end="", file=sys.stderr, flush=True)  # fmt: skip


def cmd_migrate(_args: argparse.Namespace, settings: Settings) -> int:
    from adapters.bootstrap import build_store

    store = build_store(settings)
    try:
        store.migrate()
    finally:
        store.dispose()
    echo(f"store schema up to date ({store.engine.dialect.name})")
    return 0


def cmd_erp(args: argparse.Namespace, settings: Settings) -> int:
    """Bootstrap the Tryton database once, then serve it (the ERP container's command); or
    the ERP routing's entities and their steps."""
    if args.action != "serve":
        return cmd_erp_routing(args, settings)
    from starters.local.stack import LocalStack

    stack = LocalStack(settings, echo=echo)
    stack.prepare_erp(listen_host=args.host)
    command = stack.erp_command()
    os.execv(command[0], command)  # noqa: S606 - replace this process with trytond


def cmd_bench(args: argparse.Namespace, _settings: Settings) -> int:
    """The benchmarks (bench/, in the source tree only), one after the other, then a table."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if not (root / "bench" / "__main__.py").exists():
        return fail(f"no benchmarks in {root}: they live in a source checkout (bench/)")
    only = ["--only", *args.only] if args.only else []
    quick = ["--quick"] if args.quick else []
    return subprocess.call([sys.executable, "-m", "bench", *only, *quick], cwd=root)


def cmd_schemas(_args: argparse.Namespace, _settings: Settings) -> int:
    from canonical.schema_registry import export

    for path in export():
        echo(f"wrote {path}")
    return 0


def _stop_flag() -> dict[str, bool]:
    flag = {"requested": False}

    def request_stop(_signum: int, _frame: object) -> None:
        flag["requested"] = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    return flag


def _banner(settings: Settings) -> str:
    from starters.local.stack import metrics_endpoints

    host = settings.temporal_address.split(":")[0]
    api = f"http://{settings.api_host}:{settings.api_port}"
    return (
        f"\nledgerbridge is up.\n"
        f"  Temporal Web UI  http://{host}:{settings.temporal_ui_port}\n"
        f"  API and OpenAPI  {api}/docs\n"
        f"  Finance console  {api}/console (sign in with a key from "
        f"{settings.home}/local-api-keys.json)\n"
        f"  Metrics          {', '.join(metrics_endpoints(settings))}\n"
        f"  Events (NATS)    {settings.nats_url}, stream LEDGERBRIDGE\n"
        f"  logs             {settings.home}/logs/\n"
        f"Press Ctrl-C to stop.\n"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ledgerbridge",
        description="Billing, support and the ERP kept in agreement by durable workflows.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start the local stack and supervise it until Ctrl-C")
    up.add_argument(
        "--monitoring",
        action="store_true",
        help="also run Prometheus (Debian's package) scraping the stack with the alert rules",
    )
    demo = sub.add_parser("demo", help="start the local stack and play the demo scenario")
    demo.add_argument("--exit", action="store_true", help="stop the stack when the demo ends")
    chaos = sub.add_parser(
        "chaos", help="drive business through a private stack while it fails; check the books"
    )
    chaos.add_argument("--events", type=int, default=200, help="business events to drive")
    chaos.add_argument("--seed", type=int, default=1, help="seed of the mix and the faults")
    chaos.add_argument("--kills", type=int, default=3, help="times the worker is SIGKILLed")
    chaos.add_argument("--keep-home", action="store_true", help="keep the private stack's state")
    sub.add_parser("worker", help="run the Temporal worker (all task queues)")
    sub.add_parser("api", help="serve the webhooks and the /v1 API")
    status = sub.add_parser("status", help="health of every component of the local stack")
    status.add_argument("--processes", action="store_true",
                        help="per business process: in flight, done, failed, blocked, and "
                        "what a failing system holds up (through the API)")  # fmt: skip
    accounts = sub.add_parser("accounts", help="customer cross-references across systems")
    accounts.add_argument("action", choices=["sync", "show"])
    accounts.add_argument("customer_id")
    ledgers = sub.add_parser(
        "ledgers", help="the amendment-to-ERP ledgers (refresh: take up a new deployment)"
    )
    ledgers.add_argument("action", choices=["refresh"])
    sub.add_parser("schemas", help="export the canonical JSON Schemas")
    sub.add_parser("migrate", help="bring the integration store schema up to date")
    add_parsers(sub)
    add_recon_parsers(sub)
    add_mapping_parsers(sub)
    add_event_parsers(sub)
    replay = sub.add_parser(
        "replay", help="feed past billing events through the webhook path (backfill, outages)"
    )
    replay.add_argument("source", choices=["billing"])
    replay.add_argument("--since", type=date.fromisoformat, required=True, help="YYYY-MM-DD")
    replay.add_argument("--until", type=date.fromisoformat, help="YYYY-MM-DD, inclusive")
    bench = sub.add_parser("bench", help="run the benchmarks, then print all their figures")
    bench.add_argument("--only", nargs="+", action="extend", metavar="NAME",
                       help="only these benchmarks (e.g. footprint reconciliation)")  # fmt: skip
    bench.add_argument("--quick", action="store_true", help="smaller sizes: a smoke run")
    erp = sub.add_parser("erp", help="the ERPs: serve the local Tryton, route entities")
    erp_actions = erp.add_subparsers(dest="action", required=True)
    serve = erp_actions.add_parser("serve", help="bootstrap (once) and serve the Tryton ERP")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    add_routing_parsers(erp_actions)
    return parser


COMMANDS = {
    "up": cmd_up,
    "demo": cmd_demo,
    "chaos": cmd_chaos,
    "worker": cmd_worker,
    "api": cmd_api,
    "status": cmd_status,
    "accounts": cmd_accounts,
    "ledgers": cmd_ledgers,
    "schemas": cmd_schemas,
    "migrate": cmd_migrate,
    "finance": cmd_finance,
    "credits": cmd_credits,
    "recon": cmd_recon,
    "mapping": cmd_mapping,
    "events": cmd_events,
    "replay": cmd_replay,
    "erp": cmd_erp,
    "bench": cmd_bench,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    try:
        return COMMANDS[args.command](args, settings)
    except ApiCallFailed as err:
        return fail(str(err))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
