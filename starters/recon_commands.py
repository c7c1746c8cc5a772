"""`ledgerbridge recon`: run a reconciliation (one run per ERP of the routing, or of the ERP
named) and watch it, read a report, apply the nightly schedules (one per ERP). Runs and
reports go through the API; the schedules are a deployment step and talk to Temporal with the
deployment's own connection."""

from __future__ import annotations

import argparse
import asyncio
import csv
import time
from datetime import date
from pathlib import Path
from typing import Any

from adapters.settings import Settings
from canonical.reconciliation import EXPLAINED, IN_AGREEMENT
from starters.console import ApiCallFailed, call_api, echo, money, table

POLL_SECONDS = 1.0


def cmd_recon(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "schedule":
        return _apply_schedule(settings, args.erp)
    if args.action == "run":
        body = {
            "period_from": str(args.period_from),
            "period_to": str(args.period_to or args.period_from),
            **({"erp": args.erp} if args.erp else {}),
        }
        started = call_api(settings, "post", "/v1/reconciliations", role="ops", json=body).json()
        runs = started.get("runs") or [{"erp": None, "workflow_id": started["workflow_id"]}]
        for run in runs:
            still = " (already running: followed)" if run.get("already_running") else ""
            echo(f"started {run['workflow_id']}{still}")
        unexplained = 0
        deadline = time.monotonic() + args.timeout
        for run in runs:  # one after the other: each ERP's result and its report
            result = _follow(settings, run["workflow_id"], deadline - time.monotonic())
            echo(f"ERP {result.get('erp') or run['erp'] or '-'}: {run['workflow_id']}")
            _print_result(result)
            echo(f"report: ledgerbridge recon report {result['run_id']}")
            unexplained += result["unexplained"]
        return 0 if unexplained == 0 or not args.strict else 2
    return _report(settings, args.id, args.csv, args.cls)


def _follow(settings: Settings, workflow_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        view = call_api(settings, "get", f"/v1/reconciliations/{workflow_id}", role="ops").json()
        if view["result"] is not None:
            return dict(view["result"])
        if view["state"] not in ("running", "continued_as_new"):
            why = f": {view['failure']}" if view.get("failure") else ""
            raise ApiCallFailed(
                f"{workflow_id} ended {view['state']}{why}; see the Temporal Web UI"
            )
        progress = view["progress"]
        line = f"  {progress.get('status', '…')}: " + ", ".join(
            f"{source} {rows}" for source, rows in progress.get("loaded", {}).items()
        )
        if line != last and progress.get("loaded"):
            echo(line)
            last = line
        if time.monotonic() > deadline:
            raise ApiCallFailed(f"{workflow_id} still running after {timeout:.0f} s")
        time.sleep(POLL_SECONDS)


def _print_result(result: dict[str, Any]) -> None:
    rows = [(cls, n) for cls, n in result["counts"].items() if n]
    echo(table(("class", "items"), rows or [("(nothing loaded)", 0)]))
    explained = sum(n for cls, n in result["counts"].items() if cls in EXPLAINED)
    echo(
        f"{result['in_agreement']} in agreement, {result['healed']} healed, "
        f"{len(result['exceptions_opened'])} finance exception(s) opened, "
        f"{explained} explained by finance's decisions, {result['unexplained']} unexplained"
    )


def _report(settings: Settings, run_id: str, csv_path: str | None, cls: str | None) -> int:
    params: dict[str, Any] = {"limit": 5000}
    if cls:
        params["class"] = cls
    report = call_api(settings, "get", f"/v1/reconciliations/runs/{run_id}", role="ops",
                      params=params).json()  # fmt: skip
    echo(f"{report['run_id']}: ERP {report.get('erp') or '-'}, "
         f"{report['period_start'][:10]} to {report['period_end'][:10]}, {report['status']}; "
         f"loaded {report['loaded']}")  # fmt: skip
    # Per kind where the run kept it: a class holds documents, payments, taxes alike.
    by_kind = report.get("totals_by_kind") or {
        cls_name: {"-": by_currency} for cls_name, by_currency in report["totals"].items()
    }
    totals = [
        (cls_name, kind, currency, figure["count"], figure["amount"])
        for cls_name, kinds in by_kind.items()
        for kind, by_currency in kinds.items()
        for currency, figure in by_currency.items()
    ]
    echo(table(("class", "kind", "currency", "items", "amount"),
               totals or [("-", "-", "-", 0, "0")]))  # fmt: skip
    items = list(report["items"])
    after = report["next_after_id"]
    while csv_path and after is not None:  # the CSV holds every item, page after page
        params["after_id"] = after
        page = call_api(settings, "get", f"/v1/reconciliations/runs/{run_id}", role="ops",
                        params=params).json()  # fmt: skip
        items.extend(page["items"])
        after = page["next_after_id"]
    differences = [i for i in items if i["classification"] not in IN_AGREEMENT]
    if differences:
        echo(table(
            ("class", "kind", "reference", "customer", "amount", "ERP", "outcome", "detail"),
            [(i["classification"], i.get("kind") or "-", i["reference"] or i["case_id"] or "-",
              i["customer_id"] or "-", money(i), _erp_figure(i), i["outcome"] or "-",
              (i["detail"] or "")[:60])
             for i in differences[:50]],
        ))  # fmt: skip
    if csv_path:
        _write_csv(Path(csv_path), items)
        echo(f"wrote {len(items)} items to {csv_path}")
    return 0


def _erp_figure(item: dict[str, Any]) -> str:
    """What the ERP holds against billing's amount: how far apart a mismatch, a tax or a
    receivable is, at a glance."""
    erp = item.get("erp_amount")
    return "-" if erp is None else money({"amount": erp, "currency": item["currency"]})


def _write_csv(path: Path, items: list[dict[str, Any]]) -> None:
    columns = ["id", "classification", "kind", "reference", "customer_id", "currency", "amount",
               "billing_amount", "erp_amount", "journal_amount", "billing_document_id",
               "erp_document_ids", "case_id", "detail", "remedy", "outcome",
               "outcome_ref"]  # fmt: skip
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for item in items:
            writer.writerow({**item, "erp_document_ids": " ".join(item["erp_document_ids"])})


def _apply_schedule(settings: Settings, erp: str | None) -> int:
    from adapters.temporal import connect_for
    from starters.reconciliation import apply_schedules

    async def apply() -> dict[str, str]:
        client = await connect_for(settings)
        return await apply_schedules(client, settings, erp)

    for schedule, outcome in asyncio.run(apply()).items():
        echo(f"schedule {schedule} {outcome}: daily at {settings.recon_hour:02d}:00 "
             f"{settings.recon_timezone}, the previous UTC day, overlap skip, catch-up window "
             "1 day")  # fmt: skip
    return 0


def add_parsers(sub: Any) -> None:
    recon = sub.add_parser("recon", help="reconcile billing, the ERP and the posting journal")
    actions = recon.add_subparsers(dest="action", required=True)
    run = actions.add_parser("run", help="reconcile a range of days now and show progress")
    run.add_argument("--from", dest="period_from", type=date.fromisoformat, required=True,
                     help="first day, YYYY-MM-DD (UTC)")  # fmt: skip
    run.add_argument("--to", dest="period_to", type=date.fromisoformat,
                     help="last day, included (default: --from)")  # fmt: skip
    run.add_argument("--erp", help="only this ERP of the routing (default: each, a run each)")
    run.add_argument("--timeout", type=float, default=3600,
                     help="seconds to wait for the results")  # fmt: skip
    run.add_argument("--strict", action="store_true",
                     help="exit 2 when differences remain unexplained")  # fmt: skip
    report = actions.add_parser("report", help="a stored run as a table (and CSV)")
    report.add_argument("id", help="the run id printed by `recon run`")
    report.add_argument("--csv", help="write every item to this CSV file")
    report.add_argument("--class", dest="cls", help="only items of this class")
    schedule = actions.add_parser("schedule", help="the nightly Temporal Schedules, one per ERP")
    schedule.add_argument("apply", choices=["apply"], help="create or update them")
    schedule.add_argument("--erp", help="only this ERP's schedule (default: each ERP's)")
