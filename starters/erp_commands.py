"""`ledgerbridge erp entities|mode`: which ERP books which legal entity, and the controller's
steps moving an entity to its target ERP (legacy, shadow, cutover). Through the API: reading
with any finance key, a step with a finance_admin key (audited there)."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, date, datetime
from typing import Any

from adapters.settings import Settings
from starters.console import ApiCallFailed, call_api, echo, money, table

BASE = "/v1/erp/entities"
REPORT_WAIT_SECONDS = 15 * 60.0  # a day of many thousand records, read from both ERPs


def cmd_erp_routing(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "mode":
        return _change_mode(settings, args.entity, args.mode, args.effective_from, args.reason)
    if args.action == "shadow-report":
        return _shadow_report(settings, args.entity, args.day or datetime.now(UTC).date())
    return _entities(settings)


def _shadow_report(settings: Settings, entity: str, on: date) -> int:
    """Make the entity's shadow report for the day and print what differs; 1 when anything
    does (a script can wait for a clean one before the cutover)."""
    asked = datetime.now(UTC)
    answer = call_api(settings, "post", f"{BASE}/{entity}/shadow-reports", role="finance",
                      json={"day": on.isoformat()})  # fmt: skip
    report = answer.json() if answer.status_code == 200 else _made(settings, entity, on, asked)
    differences = report["differences"]
    echo(f"shadow report of {entity} for {on.isoformat()}: {report['compared']} compared "
         f"between {report['book_erp']} and {report['target_erp']}, "
         f"{len(differences)} differ")  # fmt: skip
    if differences:
        echo(table(
            ("reference", "kind", "problem", report["book_erp"], report["target_erp"]),
            [(d["reference"], d["kind"], d["problem"], money(d["book"]), money(d["target"]))
             for d in differences],
        ))  # fmt: skip
    return 1 if differences else 0


def _entities(settings: Settings) -> int:
    entities = call_api(settings, "get", BASE, role="finance").json()
    echo(table(
        ("entity", "mode today", "books today", "shadowed to", "legacy", "target", "steps"),
        [(e["name"], e["mode"], e["books_today"], e["shadowed_to"] or "-", e["legacy"],
          e["target"] or "-", _steps(e["steps"])) for e in entities],
    ))  # fmt: skip
    return 0


def _change_mode(settings: Settings, entity: str, mode: str, on: date, reason: str) -> int:
    body = {"mode": mode, "effective_from": on.isoformat(), "reason": reason}
    answer = call_api(settings, "post", f"{BASE}/{entity}/mode", role="finance_admin",
                      json=body).json()  # fmt: skip
    echo(f"{entity}: {mode} from {on.isoformat()} (today it is in {answer['mode']}, booked by "
         f"{answer['books_today']})")  # fmt: skip
    return 0


def _made(settings: Settings, entity: str, on: date, since: datetime) -> dict[str, Any]:
    """A report still being made (a long day): the entity's report of that day, once made."""
    echo(f"the shadow report of {entity} for {on.isoformat()} is being made; waiting for it")
    deadline = time.monotonic() + REPORT_WAIT_SECONDS
    while time.monotonic() < deadline:
        for report in call_api(settings, "get", f"{BASE}/{entity}/shadow-reports",
                               role="finance").json():  # fmt: skip
            if (
                report["day"] == on.isoformat()
                and datetime.fromisoformat(report["made_at"]) >= since
            ):
                return dict(report)
        time.sleep(2)
    raise ApiCallFailed(
        f"the shadow report of {entity} for {on.isoformat()} is not made after "
        f"{REPORT_WAIT_SECONDS:.0f} s; `ledgerbridge erp shadow-report` shows it once made"
    )


def _steps(steps: list[dict[str, Any]]) -> str:
    return ", ".join(f"{s['mode']} from {s['effective_from']}" for s in steps) or "-"


def day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected YYYY-MM-DD") from None


def add_routing_parsers(actions: Any) -> None:
    """`entities` and `mode` under `ledgerbridge erp`."""
    actions.add_parser("entities", help="each legal entity, the ERP that books it, its steps")
    mode = actions.add_parser(
        "mode", help="move an entity a step towards its target ERP (shadow, then cutover)"
    )
    mode.add_argument("entity", help="the legal entity, as the ERP routing names it")
    mode.add_argument("mode", choices=["shadow", "cutover"])
    mode.add_argument(
        "--from", dest="effective_from", type=day, required=True,
        help="the first document day it applies to: YYYY-MM-DD, today or later",
    )  # fmt: skip
    report = actions.add_parser(
        "shadow-report", help="compare an entity's shadow postings in both ERPs for a day"
    )
    report.add_argument("entity", help="the legal entity, as the ERP routing names it")
    report.add_argument("--day", type=day, default=None,
                        help="YYYY-MM-DD, the day they were sent (default: today)")  # fmt: skip
    mode.add_argument("--reason", default="moved by ledgerbridge erp mode",
                      help="why, for the audit trail")  # fmt: skip
