"""Reconciliation per ERP end to end, over a routing of two ERPs: the Tryton on the `erp`
queue, and a second, real Tryton on `erp-eu` that the EU entity has moved to (shadow, then
cutover, from today). `ledgerbridge recon run` starts one run per ERP; each reads its own
Tryton on its own queue and is clean; an EU invoice that reached no ERP is found by the EU
ERP's run only, healed through the normal posting path into the EU Tryton, and never shows in
the other run.

Both Trytons are private to this module: a run reads every ERP document of the day.
"""

from __future__ import annotations

import csv
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from adapters.erp.tryton import TrytonLedger
from adapters.store.erp_coexistence import ErpCoexistenceStore
from canonical import PostedDocument
from tests.e2e.conftest import API_KEYS, Stack, eventually, worker_running
from tests.e2e.test_reconciliation_e2e import cli, invoice
from tests.fixtures.tryton import TrytonServer
from workflows.reconciliation import erp_of_workflow_id

pytestmark = pytest.mark.e2e
ROUTING = Path(__file__).with_name("routing_two_trytons.toml")


@pytest.fixture(scope="module")
def tryton_server(tryton_module_server: TrytonServer) -> Iterator[TrytonServer]:
    yield tryton_module_server  # the ERP on the `erp` queue


@pytest.fixture(scope="module")
def eu_tryton(second_tryton_module_server: TrytonServer) -> Iterator[TrytonServer]:
    yield second_tryton_module_server  # the ERP the EU entity moves to: a Tryton of its own


@pytest_asyncio.fixture
async def two_erps(stack: Stack, eu_tryton: TrytonServer) -> AsyncIterator[TrytonLedger]:
    """EU in cutover from today, and the workers with the `eu` ERP wired to its own Tryton;
    yields a ledger on that Tryton for the test to look into."""
    today = datetime.now(UTC).date()
    moves = ErpCoexistenceStore(stack.adapters.store)
    for mode in ("shadow", "cutover"):
        moves.change_mode(
            entity="EU", mode=mode, effective_from=today, actor="controller",
            role="finance_admin", reason="moving EU", refusal=lambda _: None,
        )  # fmt: skip
    look = eu_tryton.ledger()
    async with worker_running(stack, stack.client, ledgers={"eu": eu_tryton.ledger()}):
        yield look
    await look.aclose()


async def reconcile(stack: Stack, tmp_path: Path, day: str) -> dict[str, list[dict[str, Any]]]:
    """`ledgerbridge recon run` for the day (a run per ERP), then each run's report as CSV:
    its items by the ERP the run reconciled."""
    ran = await cli(stack, "recon", "run", "--from", day)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    run_ids = [line.split()[-1] for line in ran.stdout.splitlines() if line.startswith("report:")]
    items: dict[str, list[dict[str, Any]]] = {}
    for run_id in run_ids:
        out = tmp_path / f"{uuid.uuid4().hex}.csv"
        report = await cli(stack, "recon", "report", run_id, "--csv", str(out))
        assert report.returncode == 0, report.stderr
        erp = erp_of_workflow_id(run_id.split("@")[0]) or "tryton"
        assert f"ERP {erp}," in report.stdout, report.stdout
        with out.open() as rows:
            items[erp] = list(csv.DictReader(rows))
    return items


def found(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((i["classification"], i["reference"] or i["customer_id"]) for i in items)


@pytest.mark.parametrize("stack", [{"erp_routing": ROUTING}], indirect=True)
async def test_each_erps_run_is_clean_and_a_document_missing_in_the_second_is_found_there_only(
    stack: Stack, two_erps: TrytonLedger, tmp_path: Path
) -> None:
    eu_books, home_books = two_erps, stack.adapters.ledger
    run, day = uuid.uuid4().hex[:6], str(datetime.now(UTC).date())
    us = await stack.driver.create_customer(f"US Co {run}", idempotency_key=f"{run}/us")
    eu = await stack.driver.create_customer(
        f"EU GmbH {run}", idempotency_key=f"{run}/eu", metadata={"legal_entity": "EU"}
    )

    async def synced() -> bool:
        return all([await home_books.find_party(us.id), await home_books.find_party(eu.id)])

    await eventually(synced, "account sync of both customers", 90)
    us_invoice = await invoice(stack, us.id, "10.00", f"{run}/us1")
    eu_invoice = await invoice(stack, eu.id, "20.00", f"{run}/eu1")

    async def booked() -> dict[str, str | None] | None:
        entries = [stack.adapters.store.find_posting("billing", d.document_id)
                   for d in (us_invoice, eu_invoice)]  # fmt: skip
        return {e.source_document_id: e.erp for e in entries if e} if all(entries) else None

    # the routing books US's invoice in the ERP on the `erp` queue, EU's in its own
    assert await eventually(booked, "both invoices posted", 120) == {
        us_invoice.document_id: "tryton", eu_invoice.document_id: "eu",
    }  # fmt: skip

    first = await reconcile(stack, tmp_path, day)
    assert found(first["tryton"]) == [("matched", us_invoice.document_id)]
    assert found(first["eu"]) == [("matched", eu_invoice.document_id)]

    # From here on billing's webhooks stop reaching us: an EU invoice reaches no ERP.
    for endpoint in stack.billing._call("GET", "/v1/webhook_endpoints")["data"]:
        stack.billing._call("POST", f"/v1/webhook_endpoints/{endpoint['id']}",
                            data={"disabled": "true"})  # fmt: skip
    missing = await invoice(stack, eu.id, "25.00", f"{run}/eu2")

    second = await reconcile(stack, tmp_path, day)
    assert found(second["tryton"]) == [("matched", us_invoice.document_id)]
    assert found(second["eu"]) == [
        ("matched", eu_invoice.document_id),
        ("missing_in_erp", missing.document_id),
        # what EU's customer owes in billing counts the missing invoice, its ERP does not
        ("receivable_differs", eu.id),
    ]
    outcomes = {i["classification"]: i["outcome"] for i in second["eu"]}
    assert outcomes["missing_in_erp"] == "healed"

    async def healed() -> PostedDocument | None:
        return await eu_books.find_document(missing.document_id)

    posted = await eventually(healed, "the missing invoice posted in the EU ERP", 120)
    assert str(posted.total.amount) == "25.00"
    assert await home_books.find_document(missing.document_id) is None
    view = httpx.get(
        f"{stack.api_url}/v1/reconciliations/recon/eu/{day}",
        headers={"Authorization": f"Bearer {API_KEYS['ops']}"}, timeout=30,
    ).json()  # fmt: skip
    assert (view["erp"], view["state"], view["result"]["erp"]) == ("eu", "completed", "eu")
