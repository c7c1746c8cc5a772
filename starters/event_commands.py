"""`ledgerbridge events`: the endpoints receiving the events out as signed webhooks, and the
replay of what one of them did not take. Through the API, with an ops key."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime
from typing import Any

from adapters.events.subscriptions import ENDPOINT_ID_PATTERN
from adapters.settings import Settings
from starters.console import call_api, echo, table

BASE = "/v1/event-endpoints"


def cmd_events(args: argparse.Namespace, settings: Settings) -> int:
    if args.action == "replay":
        return _replay(settings, args.endpoint, args.since)
    return _list(settings)


def _list(settings: Settings) -> int:
    endpoints = call_api(settings, "get", BASE, role="ops").json()
    if not endpoints:
        echo("no event endpoint registered (POST /v1/event-endpoints registers one)")
        return 0
    echo(table(
        ("id", "status", "url", "events", "failing since", "secrets"),
        [(e["id"], _status(e), e["url"], ", ".join(e["event_types"]) or "all",
          _short(e["failing_since"]), e["signing_secrets"]) for e in endpoints],
    ))  # fmt: skip
    return 0


def _replay(settings: Settings, endpoint_id: str, since: datetime) -> int:
    body = {"since": since.isoformat()}
    answer = call_api(settings, "post", f"{BASE}/{endpoint_id}/dead-letters:replay",
                      role="ops", json=body).json()  # fmt: skip
    echo(f"{answer['requested']} dead letter(s) of {endpoint_id} since {since.isoformat()} "
         "marked for redelivery")  # fmt: skip
    return 0


def _status(endpoint: dict[str, Any]) -> str:
    reason = endpoint.get("paused_reason")
    return f"{endpoint['status']} ({reason[:40]})" if reason else str(endpoint["status"])


def _short(when: str | None) -> str:
    return when[:19].replace("T", " ") if when else "-"


def instant(text: str) -> datetime:
    """A day (YYYY-MM-DD, its start) or a time (YYYY-MM-DDTHH:MM[:SS][±HH:MM]); UTC unless
    it says otherwise."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][+HH:MM]"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def endpoint_id(text: str) -> str:
    if not re.fullmatch(ENDPOINT_ID_PATTERN, text):
        raise argparse.ArgumentTypeError(f"{text!r}: an endpoint id is ep_ and 32 hex digits")
    return text


def add_parsers(sub: Any) -> None:
    events = sub.add_parser("events", help="endpoints of the events out (signed webhooks)")
    actions = events.add_subparsers(dest="action", required=True)
    actions.add_parser("endpoints", help="the registered endpoints, their state and events")
    replay = actions.add_parser(
        "replay", help="redeliver an endpoint's dead letters (events it did not take in 3 days)"
    )
    replay.add_argument("--endpoint", type=endpoint_id, required=True, help="ep_...")
    replay.add_argument("--since", type=instant, required=True,
                        help="dead since this day or time (YYYY-MM-DD[THH:MM], UTC)")  # fmt: skip
