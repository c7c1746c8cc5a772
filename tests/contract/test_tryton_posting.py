"""TrytonLedger posts billing documents to the real Tryton 8.2: once per reference, right.

One private server for the module: posted documents, closed periods and deliberate
duplicates stay out of the books the other tests (and reconciliations) read.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
import pytest_asyncio

from adapters.erp import TrytonLedger
from adapters.errors import ConflictError, NotFoundError, RejectedError
from canonical import Customer, LedgerLine, LedgerPosting, Money
from starters.local.tryton_bootstrap import PRODUCTS, SERVICE_PRODUCT_CODE
from tests.fixtures.tryton import TrytonServer

BILLING_DATE = dt.date(2026, 3, 9)
SUBSCRIPTION_REVENUE = PRODUCTS[SERVICE_PRODUCT_CODE][1]


@pytest_asyncio.fixture
async def ledger(tryton_module_server: TrytonServer) -> AsyncIterator[TrytonLedger]:
    async with tryton_module_server.ledger() as ledger:
        await ledger.login()
        yield ledger


@pytest_asyncio.fixture
async def admin(tryton_module_server: TrytonServer) -> AsyncIterator[TrytonLedger]:
    async with tryton_module_server.admin_ledger() as admin:
        yield admin


@pytest_asyncio.fixture
async def customer_id(ledger: TrytonLedger) -> str:
    customer = Customer(customer_id=f"cus_{uuid.uuid4().hex[:14]}", name="Posting Test Co")
    await ledger.ensure_party(customer)
    return customer.customer_id


def posting(
    customer_id: str,
    *,
    kind: str = "invoice",
    lines: list[tuple[str, str, str]] | None = None,
    total: str | None = None,
    currency: str = "USD",
    reference: str | None = None,
) -> LedgerPosting:
    """A posting whose total is its lines' sum unless `total` says otherwise."""
    lines = lines or [("Pro plan, March", "1", "49.00")]
    ledger_lines = [
        LedgerLine(
            description=text,
            quantity=Decimal(quantity),
            unit_price=Decimal(price),
            erp_product=SERVICE_PRODUCT_CODE,
            revenue_account=SUBSCRIPTION_REVENUE,
        )
        for text, quantity, price in lines
    ]
    computed = sum((line.quantity * line.unit_price for line in ledger_lines), Decimal(0))
    return LedgerPosting(
        reference=reference or f"in_{uuid.uuid4().hex[:16]}",
        kind=kind,  # type: ignore[arg-type]
        customer_id=customer_id,
        currency=currency,
        lines=ledger_lines,
        total=Money.of(total if total is not None else computed, currency),
        billing_date=BILLING_DATE,
        description=f"Subscription sub_test {kind}",
    )


async def erp_invoices(ledger: TrytonLedger, reference: str) -> list[dict[str, Any]]:
    return list(
        await ledger.call(
            "model.account.invoice.search_read",
            [("reference", "=", reference)],
            0,
            None,
            [("id", "ASC")],
            ["number", "state", "total_amount", "invoice_date", "description", "lines"],
        )
    )


async def erp_today(ledger: TrytonLedger) -> dt.date:
    today = await ledger.call("model.ir.date.today")
    assert isinstance(today, dt.date)
    return today


async def period_id(admin: TrytonLedger, on: dt.date) -> int:
    (found,) = await admin.call(
        "model.account.period.search",
        [("start_date", "<=", on), ("end_date", ">=", on), ("type", "=", "standard")],
    )
    return int(found)


async def reopen_period(admin: TrytonLedger, period: int) -> None:
    """What an accountant does: reopen the period and its journals (closing closed both)."""
    await admin.call("model.account.period.reopen", [period])
    journal_periods = await admin.call(
        "model.account.journal.period.search", [("period", "=", period)]
    )
    if journal_periods:
        await admin.call("model.account.journal.period.reopen", journal_periods)


# --- invoices and credit notes ----------------------------------------------------------


async def test_prorated_invoice_posts_with_its_net_total_and_an_invoice_number(
    ledger: TrytonLedger, customer_id: str
) -> None:
    upgrade = posting(
        customer_id,
        lines=[("Unused time on Basic", "1", "-12.34"), ("Remaining time on Pro", "1", "40.00")],
    )

    document = await ledger.post_document(upgrade)

    year = (await erp_today(ledger)).year
    assert document.created_now is True
    assert document.kind == "invoice"
    assert document.state == "posted"
    assert document.total == Money.of("27.66", "USD")
    assert document.erp_number is not None
    assert document.erp_number.startswith(f"INV-{year}-")
    (row,) = await erp_invoices(ledger, upgrade.reference)
    assert str(row["id"]) == document.erp_document_id
    assert row["number"] == document.erp_number
    assert row["total_amount"] == Decimal("27.66")
    # Posted with the ERP's today (strict sequence); the billing date stays readable.
    assert row["invoice_date"] == await erp_today(ledger)
    assert BILLING_DATE.isoformat() in row["description"]
    amounts = await ledger.call("model.account.invoice.line.read", row["lines"], ["amount"])
    assert sorted(line["amount"] for line in amounts) == [Decimal("-12.34"), Decimal("40.00")]


async def test_credit_note_takes_the_credit_note_sequence_and_a_negative_erp_total(
    ledger: TrytonLedger, customer_id: str
) -> None:
    credit = posting(customer_id, kind="credit_note", lines=[("Outage credit", "2", "15.50")])

    document = await ledger.post_document(credit)

    year = (await erp_today(ledger)).year
    assert document.kind == "credit_note"
    assert document.total == Money.of("31.00", "USD")
    assert document.erp_number is not None
    assert document.erp_number.startswith(f"CN-{year}-")
    (row,) = await erp_invoices(ledger, credit.reference)
    assert row["total_amount"] == Decimal("-31.00")
    assert row["state"] == "posted"


async def test_posting_the_same_reference_again_returns_the_first_document(
    ledger: TrytonLedger, customer_id: str
) -> None:
    invoice = posting(customer_id)
    first = await ledger.post_document(invoice)

    again = await ledger.post_document(invoice)

    assert again == first.model_copy(update={"created_now": False})
    assert len(await erp_invoices(ledger, invoice.reference)) == 1


async def test_concurrent_postings_of_one_reference_make_one_document(
    ledger: TrytonLedger, customer_id: str
) -> None:
    invoice = posting(customer_id)

    documents = await asyncio.gather(*(ledger.post_document(invoice) for _ in range(3)))

    assert len({document.erp_document_id for document in documents}) == 1
    assert sorted(document.created_now for document in documents) == [False, False, True]
    assert len(await erp_invoices(ledger, invoice.reference)) == 1


async def test_find_document_finds_a_posted_credit_note_and_nothing_for_an_unknown_reference(
    ledger: TrytonLedger, customer_id: str
) -> None:
    credit = posting(customer_id, kind="credit_note")
    posted = await ledger.post_document(credit)

    found = await ledger.find_document(credit.reference)

    assert found == posted.model_copy(update={"created_now": False})
    assert await ledger.find_document(f"in_unknown_{uuid.uuid4().hex[:8]}") is None


# --- what must be refused ---------------------------------------------------------------


async def test_unknown_party_is_not_found_and_nothing_is_created(ledger: TrytonLedger) -> None:
    orphan = posting(f"cus_never_synced_{uuid.uuid4().hex[:8]}")

    with pytest.raises(NotFoundError, match="sync the account first"):
        await ledger.post_document(orphan)

    assert await erp_invoices(ledger, orphan.reference) == []


async def test_currency_the_erp_does_not_have_is_rejected(
    ledger: TrytonLedger, customer_id: str
) -> None:
    in_euros = posting(customer_id, currency="SEK")

    with pytest.raises(RejectedError, match="no currency SEK") as raised:
        await ledger.post_document(in_euros)

    assert raised.value.retryable is False
    assert await erp_invoices(ledger, in_euros.reference) == []


async def test_total_that_disagrees_with_the_erp_is_rejected_and_nothing_is_posted(
    ledger: TrytonLedger, customer_id: str
) -> None:
    wrong = posting(customer_id, lines=[("Pro plan", "1", "49.00")], total="50.00")

    with pytest.raises(RejectedError, match=r"total 49\.00 instead of 50\.00") as raised:
        await ledger.post_document(wrong)

    assert raised.value.remote_code == "mismatch"
    # The draft never got a number, so withdrawing it leaves no hole in the sequence.
    assert await erp_invoices(ledger, wrong.reference) == []


async def test_per_line_rounding_that_changes_the_total_is_rejected(
    ledger: TrytonLedger, customer_id: str
) -> None:
    # Three thirds: 0.9999 rounds to 1.00 as a total, but each line rounds to 0.33 in the ERP.
    thirds = posting(customer_id, lines=[("A third", "1", "0.3333")] * 3, total="1.00")

    with pytest.raises(RejectedError, match=r"total 0\.99 instead of 1\.00"):
        await ledger.post_document(thirds)


async def test_two_documents_with_one_reference_are_a_conflict_not_a_pick(
    ledger: TrytonLedger, customer_id: str
) -> None:
    duplicated = posting(customer_id)
    ids = [
        await _create_draft(ledger, duplicated, quantity_sign=1, unit_price=Decimal("49.00"))
        for _ in range(2)
    ]

    with pytest.raises(ConflictError) as found:
        await ledger.find_document(duplicated.reference)
    with pytest.raises(ConflictError) as posted:
        await ledger.post_document(duplicated)

    for raised in (found, posted):
        assert str(sorted(ids)) in raised.value.message
    rows = await erp_invoices(ledger, duplicated.reference)
    assert [row["state"] for row in rows] == ["draft", "draft"]


async def test_existing_draft_that_differs_from_the_posting_is_rejected_not_posted(
    ledger: TrytonLedger, customer_id: str
) -> None:
    original = posting(customer_id, lines=[("Pro plan", "1", "49.00")])
    other_customer = Customer(customer_id=f"cus_{uuid.uuid4().hex[:14]}", name="Someone Else")
    await ledger.ensure_party(other_customer)
    # Someone keyed a draft by hand with our reference, for another party and amount.
    hand_made = posting(other_customer.customer_id, reference=original.reference)
    await _create_draft(ledger, hand_made, quantity_sign=1, unit_price=Decimal("10.00"))

    with pytest.raises(RejectedError, match="does not match the posting") as raised:
        await ledger.post_document(original)

    assert "party" in raised.value.message and "total" in raised.value.message
    (row,) = await erp_invoices(ledger, original.reference)
    assert row["state"] == "draft"


async def test_cancelled_document_for_the_reference_is_rejected_not_recreated(
    ledger: TrytonLedger, customer_id: str
) -> None:
    invoice = posting(customer_id)
    draft_id = await _create_draft(ledger, invoice, quantity_sign=1, unit_price=Decimal("49.00"))
    await ledger.call("model.account.invoice.cancel", [draft_id])

    with pytest.raises(RejectedError, match="cancelled"):
        await ledger.post_document(invoice)

    assert [row["state"] for row in await erp_invoices(ledger, invoice.reference)] == ["cancelled"]


async def _create_draft(
    ledger: TrytonLedger, posting: LedgerPosting, *, quantity_sign: int, unit_price: Decimal
) -> int:
    """A draft keyed like a human would, with the service product and the given price."""
    party = await ledger.find_party(posting.customer_id)
    assert party is not None
    party_id = int(party.external_id)
    (address,) = (await ledger.call("model.party.party.read", [party_id], ["addresses"]))[0][
        "addresses"
    ]
    (journal,) = await ledger.call("model.account.journal.search", [("type", "=", "revenue")])
    (receivable,) = await ledger.call(
        "model.account.account.search", [("type.receivable", "=", True)], 0, 1
    )
    (product,) = await ledger.call(
        "model.product.product.search_read",
        [("code", "=", "SUBSCRIPTION")],
        0,
        1,
        None,
        ["default_uom", "template.account_category.account_revenue"],
    )
    line = {
        "product": product["id"],
        "unit": product["default_uom"],
        "account": product["template."]["account_category."]["account_revenue"],
        "quantity": quantity_sign,
        "unit_price": unit_price,
        "description": "keyed by hand",
    }
    (invoice_id,) = await ledger.call(
        "model.account.invoice.create",
        [
            {
                "type": "out",
                "party": party_id,
                "invoice_address": address,
                "account": receivable,
                "journal": journal,
                "reference": posting.reference,
                "lines": [("create", [line])],
            }
        ],
    )
    return int(invoice_id)


# --- periods ----------------------------------------------------------------------------


async def test_period_of_today_is_open_and_a_date_outside_every_fiscal_year_is_not(
    ledger: TrytonLedger,
) -> None:
    assert await ledger.is_period_open(await erp_today(ledger)) is True
    assert await ledger.is_period_open(dt.date(2001, 1, 15)) is False


async def test_closed_period_is_not_open(ledger: TrytonLedger, admin: TrytonLedger) -> None:
    # Next year's June: inside the bootstrapped fiscal years, empty, so it can be closed.
    on = dt.date((await erp_today(ledger)).year + 1, 6, 15)
    period = await period_id(admin, on)
    await admin.call("model.account.period.close", [period])
    try:
        assert await ledger.is_period_open(on) is False
        assert await ledger.is_period_open(on.replace(month=7)) is True
    finally:
        await reopen_period(admin, period)
    assert await ledger.is_period_open(on) is True


async def test_posting_in_a_closed_period_is_rejected_and_the_draft_posts_once_reopened(
    ledger: TrytonLedger, admin: TrytonLedger, customer_id: str
) -> None:
    invoice = posting(customer_id)
    today = await erp_today(ledger)
    period = await period_id(admin, today)
    await admin.call("model.account.period.close", [period])
    try:
        with pytest.raises(RejectedError, match="reopen the period"):
            await ledger.post_document(invoice)
        left = await ledger.find_document(invoice.reference)
        assert left is not None and left.state == "draft" and left.erp_number is None
    finally:
        await reopen_period(admin, period)

    document = await ledger.post_document(invoice)

    assert document.erp_document_id == left.erp_document_id
    assert document.state == "posted"
    assert document.created_now is False
    assert len(await erp_invoices(ledger, invoice.reference)) == 1
