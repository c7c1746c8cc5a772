"""`ledgerbridge`: the local stack, the demo, the worker, the API and operator commands."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import httpx

from adapters.settings import Settings


def _echo(line: str) -> None:
    print(line, flush=True)


def fail(message: str, code: int = 1) -> int:
    """One readable line on stderr, never a traceback."""
    print(f"ledgerbridge: {message}", file=sys.stderr, flush=True)
    return code


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    from starters.stack import LocalStack, StackError

    stop = _stop_flag()
    stack = LocalStack(settings, echo=_echo)
    try:
        with stack.running():
            _echo(_banner(settings))
            stack.supervise(lambda: stop["requested"])
            _echo("stopping the stack")
    except StackError as err:
        return fail(str(err))
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from adapters.logs import configure_logging
    from starters.demo import DemoFailed, play
    from starters.stack import LocalStack, StackError

    configure_logging("WARNING", "console")  # the demo's own lines are the story; logs are in files
    stop = _stop_flag()
    stack = LocalStack(settings, echo=_echo)
    try:
        with stack.running():
            try:
                asyncio.run(play(settings, echo=_echo))
            except DemoFailed as err:
                return fail(f"demo failed: {err}")
            keep_running = not args.exit and sys.stdin.isatty()
            if keep_running:
                _echo(_banner(settings))
                stack.supervise(lambda: stop["requested"])
            _echo("stopping the stack (state kept in .ledgerbridge/; `ledgerbridge up` resumes)")
    except StackError as err:
        return fail(str(err))
    return 0


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


def cmd_status(_args: argparse.Namespace, settings: Settings) -> int:
    from starters.stack import LocalStack

    rows = []
    healthy = True
    for component in LocalStack(settings).plan():
        ok = component.ready()
        healthy &= ok
        rows.append((component.name, "up" if ok else "DOWN", component.listens))
    _echo(_table(("component", "state", "where"), rows))
    return 0 if healthy else 1


def cmd_accounts(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "sync":
        response = _api(settings, "post", f"/v1/accounts/{args.customer_id}:sync", role="ops")
        body = response.json()
        _echo(f"{body['status']}: {body['workflow_id']}")
    else:
        response = _api(settings, "get", f"/v1/accounts/{args.customer_id}", role="ops")
        records = response.json()["records"]
        _echo(
            _table(
                ("system", "id", "name"),
                [(r["system"], r["external_id"], r["name"]) for r in records],
            )
        )
    return 0


def cmd_finance(args: argparse.Namespace, settings: Settings) -> int:
    """Finance's inbox, from the terminal, through the API with the user's key."""
    if args.action == "inbox":
        params = {"customer_id": args.customer, "process": args.process}
        items = _api(settings, "get", "/v1/exceptions", role="finance",
                     params={k: v for k, v in params.items() if v}).json()  # fmt: skip
        if not items:
            _echo("inbox is empty: nothing waits for finance")
            return 0
        rows = [
            (
                f"{item['age_hours']:.1f} h", item["process"], item["customer_id"] or "-",
                _money(item["amount"]), item["asked"], item["exception_id"],
            )
            for item in items
        ]  # fmt: skip
        _echo(_table(("age", "process", "customer", "amount", "asked", "id"), rows))
        return 0
    if args.action == "show":
        item = _api(settings, "get", f"/v1/exceptions/{args.id}", role="finance").json()
        context = item["context"]
        for label, value in (
            ("exception", item["exception_id"]), ("status", item["status"]),
            ("process", f"{item['process']} (step {item['step']})"),
            ("origin", item["origin_workflow_id"]), ("customer", item["customer_id"]),
            ("subscription", item["subscription_id"]), ("document", item["invoice_id"]),
            ("amount", _money(item["amount"])), ("error", item["error"]),
            ("remote answer", json.dumps(context["remote_answer"])),
            ("correlation id", context["correlation_id"]), ("opened", item["opened_at"]),
            ("asked", item["asked"]),
        ):  # fmt: skip
            _echo(f"{label:>15}  {value if value is not None else '-'}")
        if item["decision"]:
            decision = item["decision"]
            _echo(f"{'decided':>15}  {decision['decision']} by {decision['actor']}: "
                  f"{decision['reason']}")  # fmt: skip
        return 0
    decision = "reject" if args.action == "reject" else args.decision.replace("-", "_")
    body = {"decision": decision, "reason": args.reason, "manual_erp_number": args.erp_number}
    result = _api(
        settings, "post", f"/v1/exceptions/{args.id}:decide", role="finance", json=body
    ).json()
    _echo(f"{result['exception_id']}: {result['decision']} by {result['actor']} "
          f"({result['role']}), recorded in the audit trail")  # fmt: skip
    return 0


def _money(amount: dict[str, str] | None) -> str:
    return f"{amount['amount']} {amount['currency']}" if amount else "-"


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
    _echo(f"billing has {len(ids)} event(s) in {span}")
    counts: Counter[str] = Counter()
    for start in range(0, len(ids), REPLAY_BATCH):
        batch = ids[start : start + REPLAY_BATCH]
        response = _api(
            settings, "post", "/v1/billing/events:replay", role="ops", json={"event_ids": batch}
        )
        counts.update(outcome["status"] for outcome in response.json())
        _progress(start + len(batch), len(ids), counts)
    if ids:
        print(file=sys.stderr)
    rows = [(status, counts[status]) for status in ("accepted", "duplicate", "ignored", "unknown")]
    _echo(_table(("outcome", "events"), rows))
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
    _echo(f"store schema up to date ({store.engine.dialect.name})")
    return 0


def cmd_erp(args: argparse.Namespace, settings: Settings) -> int:
    """Bootstrap the Tryton database once, then serve it (the ERP container's command)."""
    from starters.stack import LocalStack

    stack = LocalStack(settings, echo=_echo)
    stack.prepare_erp(listen_host=args.host)
    command = stack.erp_command()
    os.execv(command[0], command)  # noqa: S606 - replace this process with trytond


def cmd_schemas(_args: argparse.Namespace, _settings: Settings) -> int:
    from canonical.schema_registry import export

    for path in export():
        _echo(f"wrote {path}")
    return 0


class ApiCallFailed(Exception):
    pass


def _api_key(settings: Settings, role: str) -> str:
    key = os.environ.get("LEDGERBRIDGE_API_KEY")
    if key:
        return key
    local = settings.home / "local-api-keys.json"
    if local.exists():
        return str(json.loads(local.read_text())[role])
    raise ApiCallFailed("no API key: set LEDGERBRIDGE_API_KEY")


def _api(settings: Settings, method: str, path: str, *, role: str, **kwargs: Any) -> httpx.Response:
    url = f"http://{settings.api_host}:{settings.api_port}{path}"
    headers = {"Authorization": f"Bearer {_api_key(settings, role)}"}
    try:
        response = httpx.request(method, url, headers=headers, timeout=10, **kwargs)
    except httpx.HTTPError as err:
        raise ApiCallFailed(f"API not reachable at {url}: {err}") from None
    if response.status_code >= 400:
        try:
            detail = response.json().get("error", response.text)
        except ValueError:
            detail = response.text
        raise ApiCallFailed(f"{response.status_code}: {detail}")
    return response


def _stop_flag() -> dict[str, bool]:
    flag = {"requested": False}

    def request_stop(_signum: int, _frame: object) -> None:
        flag["requested"] = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    return flag


def _banner(settings: Settings) -> str:
    host = settings.temporal_address.split(":")[0]
    api = f"http://{settings.api_host}:{settings.api_port}"
    return (
        f"\nledgerbridge is up.\n"
        f"  Temporal Web UI  http://{host}:{settings.temporal_ui_port}\n"
        f"  API and OpenAPI  {api}/docs\n"
        f"  logs             {settings.home}/logs/\n"
        f"Press Ctrl-C to stop.\n"
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(map(str, header)), *[list(map(str, r)) for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ledgerbridge",
        description="Billing, support and the ERP kept in agreement by durable workflows.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start the local stack and supervise it until Ctrl-C")
    demo = sub.add_parser("demo", help="start the local stack and play the demo scenario")
    demo.add_argument("--exit", action="store_true", help="stop the stack when the demo ends")
    sub.add_parser("worker", help="run the Temporal worker (all task queues)")
    sub.add_parser("api", help="serve the webhooks and the /v1 API")
    sub.add_parser("status", help="health of every component of the local stack")
    accounts = sub.add_parser("accounts", help="customer cross-references across systems")
    accounts.add_argument("action", choices=["sync", "show"])
    accounts.add_argument("customer_id")
    sub.add_parser("schemas", help="export the canonical JSON Schemas")
    sub.add_parser("migrate", help="bring the integration store schema up to date")
    finance = sub.add_parser("finance", help="the finance inbox: exceptions waiting for a decision")
    finance_actions = finance.add_subparsers(dest="action", required=True)
    inbox = finance_actions.add_parser("inbox", help="what waits for finance, oldest first")
    inbox.add_argument("--customer", help="only this customer id")
    inbox.add_argument("--process", help="only this process, e.g. amendment_to_erp")
    show = finance_actions.add_parser("show", help="one exception with its full context")
    show.add_argument("id")
    decide = finance_actions.add_parser("decide", help="decide an exception")
    decide.add_argument("id")
    decide.add_argument("decision", choices=["retry", "compensate", "resolve-manually", "reject"])
    decide.add_argument("--reason", required=True)
    decide.add_argument("--erp-number", help="the ERP document posted by hand (resolve-manually)")
    reject = finance_actions.add_parser("reject", help="decide `reject` (not to be posted)")
    reject.add_argument("id")
    reject.add_argument("--reason", required=True)
    reject.set_defaults(erp_number=None)
    replay = sub.add_parser(
        "replay", help="feed past billing events through the webhook path (backfill, outages)"
    )
    replay.add_argument("source", choices=["billing"])
    replay.add_argument("--since", type=date.fromisoformat, required=True, help="YYYY-MM-DD")
    replay.add_argument("--until", type=date.fromisoformat, help="YYYY-MM-DD, inclusive")
    erp = sub.add_parser("erp", help="bootstrap (once) and serve the Tryton ERP")
    erp.add_argument("action", choices=["serve"])
    erp.add_argument("--host", default="127.0.0.1", help="address to listen on")
    return parser


COMMANDS = {
    "up": cmd_up,
    "demo": cmd_demo,
    "worker": cmd_worker,
    "api": cmd_api,
    "status": cmd_status,
    "accounts": cmd_accounts,
    "schemas": cmd_schemas,
    "migrate": cmd_migrate,
    "finance": cmd_finance,
    "replay": cmd_replay,
    "erp": cmd_erp,
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
