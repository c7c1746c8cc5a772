"""Reconciliation end to end: one difference of each class seeded in the real billing
sandbox, Tryton, the support sandbox and the posting journal; the run finds exactly those,
heals the missing posting through the normal path and opens finance exceptions for the rest.

Tryton is private to this module: the run reads every ERP document of the day, and other
tests' documents would be orphans here.
"""

from __future__ import annotations

import asyncio
import csv
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from adapters.billing.stripe import StripeBilling
from adapters.erp.tryton import TrytonLedger
from canonical import BillingDocument, LedgerPosting, Money, PostedDocument
from canonical.ledger import required_postings
from canonical.mapping import map_document
from starters.local.catalog import local_mapping
from tests.e2e.conftest import API_KEYS, SOLD_PRODUCT, Stack, eventually
from tests.fixtures.support import create_ticket_with_credit
from tests.fixtures.tryton import TrytonServer

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def tryton_server(tryton_module_server: TrytonServer) -> Iterator[TrytonServer]:
    yield tryton_module_server


async def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **stack.settings.to_env(), "LEDGERBRIDGE_API_KEY": API_KEYS["ops"]}
    return await asyncio.to_thread(
        subprocess.run, [str(BIN / "ledgerbridge"), *args], env=env,
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip


async def invoice(stack: Stack, customer_id: str, amount: str, key: str) -> BillingDocument:
    """An open invoice of `amount` USD, as the billing port reads it."""
    minor = Money.of(amount, "USD").to_minor()
    created = await stack.driver.charge_once(
        customer_id, minor, "usd", f"Service {key}", key=key, product_id=SOLD_PRODUCT
    )
    return await stack.adapters.billing.get_invoice(str(created.id))


def posting(document: BillingDocument, total: str | None = None) -> LedgerPosting:
    """The ERP document the ledger would post, mapped by the local catalogue's mapping."""
    [main] = required_postings(document)
    main = map_document(main, local_mapping({}))
    if total is None:
        return main
    line = main.lines[0].model_copy(update={"unit_price": Decimal(total)})
    return main.model_copy(update={"lines": [line], "total": Money.of(total, "USD")})


def journal(stack: Stack, customer_id: str, reference: str, erp_id: str, amount: str) -> None:
    """What our posting journal says, seeded as if ledgerbridge had posted it."""
    stack.adapters.store.record_posting(
        source_system="billing", source_document_id=reference, document_type="invoice",
        customer_id=customer_id, erp_document_id=erp_id, erp_number=None,
        amount=Decimal(amount), currency="USD", workflow_id="seeded-by-test", correlation_id=None,
    )  # fmt: skip


async def test_a_run_finds_each_difference_heals_the_missing_posting_and_reports_the_rest(
    stack: Stack, in_process_worker: None, tmp_path: Path
) -> None:
    billing: StripeBilling = stack.adapters.billing  # type: ignore[assignment]
    ledger: TrytonLedger = stack.adapters.ledger  # type: ignore[assignment]
    run = uuid.uuid4().hex[:6]
    today = datetime.now(UTC).date()
    customer = await stack.driver.create_customer(f"Recon Co {run}", idempotency_key=f"{run}/c")
    cid = customer.id

    async def synced() -> str | None:
        org = await stack.adapters.support.find_organization(cid)
        party = await ledger.find_party(cid)
        return org.external_id if org and party else None

    org_id = await eventually(synced, "account sync", 90)

    # matched: an invoice that flows through the webhooks and the normal posting path
    matched = await invoice(stack, cid, "10.00", f"{run}/a")

    async def journaled() -> bool:
        return stack.adapters.store.find_posting("billing", matched.document_id) is not None

    await eventually(journaled, "the first invoice posted", 90)

    # From here on billing's webhooks stop reaching us: what happens next, we seed by hand.
    for endpoint in stack.billing._call("GET", "/v1/webhook_endpoints")["data"]:
        stack.billing._call("POST", f"/v1/webhook_endpoints/{endpoint['id']}",
                            data={"disabled": "true"})  # fmt: skip
    missing = await invoice(stack, cid, "20.00", f"{run}/b")
    mismatched = await invoice(stack, cid, "30.00", f"{run}/c")
    duplicated = await invoice(stack, cid, "40.00", f"{run}/d")
    absent = await invoice(stack, cid, "50.00", f"{run}/f")

    posted_c = await ledger.post_document(posting(mismatched, "25.00"))
    journal(stack, cid, mismatched.document_id, posted_c.erp_document_id, "25.00")
    posted_d = await ledger.post_document(posting(duplicated))
    # a second ERP document for the same billing invoice, copied by hand in the ERP
    await ledger.call("model.account.invoice.copy", [int(posted_d.erp_document_id)],
                      {"reference": duplicated.document_id, "invoice_date": today})  # fmt: skip
    journal(stack, cid, duplicated.document_id, posted_d.erp_document_id, "40.00")
    orphan = posting(mismatched, "7.00").model_copy(update={"reference": f"in_orphan_{run}"})
    await ledger.post_document(orphan)
    journal(stack, cid, absent.document_id, "999999", "50.00")
    # a credit granted in billing, without a support case, posted and journaled
    granted = await billing.create_balance_credit(
        cid, Money.of("5.00", "USD"), "goodwill by the billing team", f"{run}/credit"
    )
    credit_posting = orphan.model_copy(update={
        "reference": granted.transaction_id, "kind": "credit_note",
        "total": Money.of("5.00", "USD"),
        "lines": [orphan.lines[0].model_copy(update={"unit_price": Decimal("5.00")})],
    })  # fmt: skip
    posted_credit = await ledger.post_document(credit_posting)
    journal(stack, cid, granted.transaction_id, posted_credit.erp_document_id, "5.00")
    # a ticket telling the customer a credit was given, which billing never saw
    ticket = create_ticket_with_credit(stack.support, organization_id=int(org_id),
                                       amount="12.00", currency="USD",
                                       tags=["credit_applied"])  # fmt: skip

    ran = await cli(stack, "recon", "run", "--from", str(today))
    assert ran.returncode == 0, ran.stderr
    run_id = ran.stdout.strip().splitlines()[-1].split()[-1]
    report = await cli(stack, "recon", "report", run_id, "--csv", str(tmp_path / "r.csv"))
    assert report.returncode == 0, report.stderr
    with (tmp_path / "r.csv").open() as out:
        items = list(csv.DictReader(out))
    # What the customer owes is compared as a whole: the seeded differences make it differ.
    owed = [i for i in items if i["classification"] == "receivable_differs"]
    assert [i["customer_id"] for i in owed if i["customer_id"] == cid] == [cid], report.stdout
    found = sorted(
        (i["classification"], i["reference"] or i["case_id"]) for i in items if i not in owed
    )
    assert found == sorted([
        ("matched", matched.document_id),
        ("matched", granted.transaction_id),
        ("missing_in_erp", missing.document_id),
        ("amount_mismatch", mismatched.document_id),
        ("duplicate_in_erp", duplicated.document_id),
        ("orphan_in_erp", f"in_orphan_{run}"),
        ("posted_but_absent", absent.document_id),
        ("credit_without_ticket", granted.transaction_id),
        ("ticket_credit_without_billing", str(ticket["id"])),
    ]), report.stdout  # fmt: skip
    outcomes = {i["classification"]: i["outcome"] for i in items}
    assert outcomes["missing_in_erp"] == "healed"
    assert all(
        outcome == "exception_opened"
        for cls, outcome in outcomes.items()
        if cls not in ("matched", "missing_in_erp")
    )

    async def healed() -> PostedDocument | None:
        return await ledger.find_document(missing.document_id)

    posted_b = await eventually(healed, "the missing invoice posted by the normal path", 90)
    assert posted_b.total == Money.of("20.00", "USD")
    inbox = await cli(stack, "finance", "inbox", "--process", "reconciliation", "--customer", cid)
    assert inbox.stdout.count("reconciliation") >= 6, inbox.stdout
