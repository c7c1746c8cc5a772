"""What every terminal command shares: one-line output, tables, and calls to the /v1 API
with the user's key (never Temporal directly)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import httpx

from adapters.settings import Settings
from canonical.money import Money


def echo(line: str) -> None:
    print(line, flush=True)


def fail(message: str, code: int = 1) -> int:
    """One readable line on stderr, never a traceback."""
    print(f"ledgerbridge: {message}", file=sys.stderr, flush=True)
    return code


class ApiCallFailed(Exception):
    """An API call that failed, worded for one line on the terminal."""


def api_key(settings: Settings, role: str) -> str:
    key = os.environ.get("LEDGERBRIDGE_API_KEY")
    if key:
        return key
    local = settings.home / "local-api-keys.json"
    if local.exists():
        return str(json.loads(local.read_text())[role])
    raise ApiCallFailed("no API key: set LEDGERBRIDGE_API_KEY")


def call_api(
    settings: Settings, method: str, path: str, *, role: str, **kwargs: Any
) -> httpx.Response:
    url = f"http://{settings.api_host}:{settings.api_port}{path}"
    headers = {"Authorization": f"Bearer {api_key(settings, role)}"}
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


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(map(str, header)), *[list(map(str, r)) for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def money(amount: dict[str, str] | None) -> str:
    """An API amount as people read it: the currency's decimals (45.00 USD, 5 JPY), whatever
    precision the store kept it in."""
    if not amount:
        return "-"
    try:
        return str(Money.of(amount["amount"], amount["currency"]))
    except ValueError:  # a currency we do not know is shown as given
        return f"{amount['amount']} {amount['currency']}"
