"""Backfill: billing events the webhooks never delivered are fed through the same path."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import API_KEYS, Stack
from tests.e2e.test_amendments_e2e import invoices_of, posted, subscribe

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent


async def replay_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a thread, so the in-process worker keeps working meanwhile."""
    env = {**os.environ, **stack.settings.to_env(), "LEDGERBRIDGE_API_KEY": API_KEYS["ops"]}
    return await asyncio.to_thread(
        subprocess.run, [str(BIN / "ledgerbridge"), "replay", "billing", *args], env=env,
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip


async def test_replay_posts_what_webhooks_missed_and_recognises_what_was_done(
    stack: Stack, in_process_worker: None
) -> None:
    # A webhook outage: billing keeps its events, the endpoint is switched off.
    with stack.billing.http() as billing_api:
        endpoints = billing_api.get("/v1/webhook_endpoints").json()["data"]
        for endpoint in endpoints:
            billing_api.post(f"/v1/webhook_endpoints/{endpoint['id']}", data={"disabled": "true"})
    customer_id, subscription_id, _pro = await subscribe(stack, "Outage Backfill Co")
    [invoice] = await invoices_of(stack, subscription_id)
    assert stack.adapters.store.find_posting("billing", invoice.document_id) is None

    today = invoice.created_at.date().isoformat()
    first = await replay_cli(stack, "--since", today, "--until", today)
    assert first.returncode == 0, first.stderr
    assert _count(first.stdout, "accepted") >= 3  # customer, subscription, invoice events
    erp = await posted(stack, invoice.document_id)
    assert erp.total == invoice.total
    party = await stack.adapters.ledger.find_party(customer_id)
    assert party is not None  # account sync ran from the replayed customer.created

    again = await replay_cli(stack, "--since", today)
    assert again.returncode == 0, again.stderr
    assert _count(again.stdout, "accepted") == 0
    assert _count(again.stdout, "duplicate") == _count(first.stdout, "accepted")
    assert await _erp_count(stack, invoice.document_id) == 1


def _count(table: str, outcome: str) -> int:
    row = next(line for line in table.splitlines() if line.startswith(outcome))
    return int(row.split()[-1])


async def _erp_count(stack: Stack, reference: str) -> int:
    found = await stack.adapters.ledger.call(  # type: ignore[attr-defined]
        "model.account.invoice.search", [["reference", "=", reference]], 0, None, None
    )
    return len(found)


def test_replay_needs_an_ops_key_and_reads_events_from_billing_only(stack: Stack) -> None:
    url = f"{stack.api_url}/v1/billing/events:replay"
    denied = httpx.post(url, json={"event_ids": ["evt_1"]},
                        headers={"Authorization": f"Bearer {API_KEYS['support']}"})  # fmt: skip
    assert denied.status_code == 403
    unknown = httpx.post(url, json={"event_ids": ["evt_forged"]},
                         headers={"Authorization": f"Bearer {API_KEYS['ops']}"})  # fmt: skip
    assert unknown.status_code == 200
    [outcome] = unknown.json()
    assert (outcome["event_id"], outcome["status"]) == ("evt_forged", "unknown")
    assert outcome["detail"] == "billing has no such event"
