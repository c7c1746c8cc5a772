"""One contract for the Ledger port, held by every ERP adapter against its local counterpart:
TrytonLedger on the real Tryton 8.2, NetSuiteLedger on the NetSuite sandbox.

Each adapter runs on an account private to this module (the tests post, pay and close
periods); every test makes its own customer, so tests may run in any order and in parallel.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal

import pytest
import pytest_asyncio

from adapters.errors import (
    AdapterError,
    ConflictError,
    NotFoundError,
    RejectedError,
    ValidationError,
)
from adapters.ports import Ledger
from canonical import Customer, LedgerLine, LedgerPosting, LedgerTax, Money, PaymentPosting
from starters.local.catalog import ERP_BOOKS

TODAY = dt.date.today()
SUBSCRIPTION = ERP_BOOKS.revenue["subscriptions"]
REFUNDS = ERP_BOOKS.refunds


@dataclass
class Books:
    """An adapter under contract, and what an accountant of its ERP can do to it."""

    name: str
    ledger: Ledger
    close_period: Callable[[dt.date], Awaitable[None]]
    reopen_period: Callable[[dt.date], Awaitable[None]]


async def _tryton_books(request: pytest.FixtureRequest) -> AsyncIterator[Books]:
    server = request.getfixturevalue("tryton_module_server")
    async with server.ledger() as ledger, server.admin_ledger() as admin:
        await ledger.login()

        async def period(on: dt.date) -> int:
            (found,) = await admin.call(
                "model.account.period.search",
                [("start_date", "<=", on), ("end_date", ">=", on), ("type", "=", "standard")],
            )
            return int(found)

        async def close(on: dt.date) -> None:
            await admin.call("model.account.period.close", [await period(on)])

        async def reopen(on: dt.date) -> None:
            found = await period(on)
            await admin.call("model.account.period.reopen", [found])
            journals = await admin.call(
                "model.account.journal.period.search", [("period", "=", found)]
            )
            if journals:
                await admin.call("model.account.journal.period.reopen", journals)

        yield Books("tryton", ledger, close, reopen)


async def _netsuite_books(request: pytest.FixtureRequest) -> AsyncIterator[Books]:
    server = request.getfixturevalue("netsuite_module_server")
    async with server.ledger() as ledger:

        async def close(on: dt.date) -> None:
            await asyncio.to_thread(server.close_period, on)

        async def reopen(on: dt.date) -> None:
            await asyncio.to_thread(server.open_period, on)

        yield Books("netsuite", ledger, close, reopen)


@pytest_asyncio.fixture(params=["tryton", "netsuite"])
async def books(request: pytest.FixtureRequest) -> AsyncIterator[Books]:
    opened = _tryton_books(request) if request.param == "tryton" else _netsuite_books(request)
    async for each in opened:
        yield each


@pytest_asyncio.fixture
async def customer_id(books: Books) -> str:
    customer = Customer(customer_id=f"cus_{uuid.uuid4().hex[:14]}", name="Contract Test Co")
    await books.ledger.ensure_party(customer)
    return customer.customer_id


def document(
    customer_id: str,
    amount: str,
    *,
    kind: str = "invoice",
    currency: str = "USD",
    reference: str | None = None,
    applies_to: str | None = None,
    books: tuple[str, str] = SUBSCRIPTION,
    tax: tuple[str, str] | None = None,
) -> LedgerPosting:
    """A posting of one line of `amount` (and one tax of (ERP tax name, amount))."""
    lines = [
        LedgerLine(
            description="Pro plan",
            quantity=Decimal(1),
            unit_price=Decimal(amount),
            erp_product=books[0],
            revenue_account=books[1],
        )
    ]
    taxes = []
    if tax:
        taxes = [
            LedgerTax(
                rate_id="txr_contract",
                description=tax[0],
                base=Decimal(amount),
                amount=Decimal(tax[1]),
                erp_tax=tax[0],
            )
        ]
    total = Decimal(amount) + sum((t.amount for t in taxes), Decimal(0))
    return LedgerPosting(
        reference=reference or f"in_{uuid.uuid4().hex[:16]}",
        kind=kind,  # type: ignore[arg-type]
        customer_id=customer_id,
        currency=currency,
        lines=lines,
        taxes=taxes,
        total=Money.of(total, currency),
        billing_date=TODAY,
        description=f"Contract test {kind}",
        applies_to=applies_to,
    )


def money(posting: LedgerPosting, amount: str, *, kind: str = "payment") -> PaymentPosting:
    currency = posting.currency
    journal, clearing = ERP_BOOKS.card_journals[currency]
    return PaymentPosting(
        reference=f"{'inpay' if kind == 'payment' else 're'}_{uuid.uuid4().hex[:14]}",
        kind=kind,  # type: ignore[arg-type]
        customer_id=posting.customer_id,
        applies_to=posting.reference,
        amount=Money.of(amount, currency),
        payment_date=TODAY,
        method="card",
        journal=journal,
        clearing_account=clearing,
        description=f"Card {kind}",
    )


async def owed(ledger: Ledger, customer_id: str) -> dict[str, Money]:
    """What the customer owes per currency, read through every receivable page."""
    found: dict[str, Money] = {}
    cursor: str | None = None
    while True:
        page = await ledger.open_receivable_page(cursor, 50)
        for receivable in page.receivables:
            if receivable.customer_id == customer_id:
                found[receivable.amount.currency] = receivable.amount
        if page.next_cursor is None:
            return found
        cursor = page.next_cursor


# --- parties ---------------------------------------------------------------------------------


async def test_ensure_party_creates_the_party_once_and_renames_it(books: Books) -> None:
    customer = Customer(customer_id=f"cus_{uuid.uuid4().hex[:14]}", name="Old Name Ltd")
    assert await books.ledger.find_party(customer.customer_id) is None

    first = await books.ledger.ensure_party(customer)
    again = await books.ledger.ensure_party(customer)
    renamed = await books.ledger.ensure_party(customer.model_copy(update={"name": "New Name"}))

    assert first == again
    assert (first.system, first.customer_id, first.name) == (
        "erp",
        customer.customer_id,
        "Old Name Ltd",
    )
    assert renamed.external_id == first.external_id and renamed.name == "New Name"
    found = await books.ledger.find_party(customer.customer_id)
    assert found is not None and (found.external_id, found.name) == (first.external_id, "New Name")


async def test_concurrent_ensure_party_calls_leave_one_party(books: Books) -> None:
    customer = Customer(customer_id=f"cus_{uuid.uuid4().hex[:14]}", name="Race Co")

    records = await asyncio.gather(*(books.ledger.ensure_party(customer) for _ in range(3)))

    assert len({record.external_id for record in records}) == 1


# --- documents ------------------------------------------------------------------------------


async def test_posting_a_reference_twice_makes_one_document_with_one_id(
    books: Books, customer_id: str
) -> None:
    invoice = document(customer_id, "49.00", tax=("US sales tax 8.875%", "4.35"))

    first = await books.ledger.post_document(invoice)
    second = await books.ledger.post_document(invoice)

    assert first.created_now and not second.created_now
    assert second.erp_document_id == first.erp_document_id
    assert first.total == Money.of("53.35", "USD") and first.kind == "invoice"
    assert first.state == "posted"
    assert await books.ledger.find_document(invoice.reference) == second
    listed = [d for d in await all_documents(books.ledger) if d.reference == invoice.reference]
    assert len(listed) == 1
    assert listed[0].taxes == {"US sales tax 8.875%": Money.of("4.35", "USD")}
    assert listed[0].customer_id == customer_id and listed[0].document_date == TODAY


async def test_concurrent_posts_of_one_reference_make_one_document(
    books: Books, customer_id: str
) -> None:
    invoice = document(customer_id, "12.00")

    posted = await asyncio.gather(*(books.ledger.post_document(invoice) for _ in range(3)))

    assert len({p.erp_document_id for p in posted}) == 1
    assert sum(p.created_now for p in posted) == 1


async def test_a_reference_the_erp_does_not_hold_is_not_found(books: Books) -> None:
    assert await books.ledger.find_document(f"in_{uuid.uuid4().hex}") is None
    assert await books.ledger.find_payment(f"inpay_{uuid.uuid4().hex}") is None


async def test_the_same_reference_with_another_total_is_refused_never_overwritten(
    books: Books, customer_id: str
) -> None:
    invoice = document(customer_id, "30.00")
    posted = await books.ledger.post_document(invoice)
    other = document(customer_id, "31.00", reference=invoice.reference)

    with pytest.raises((RejectedError, ConflictError)) as refused:
        await books.ledger.post_document(other)

    assert not refused.value.retryable
    assert await books.ledger.find_document(invoice.reference) == posted.model_copy(
        update={"created_now": False}
    )


async def test_an_unmapped_posting_is_invalid_and_leaves_nothing(
    books: Books, customer_id: str
) -> None:
    invoice = document(customer_id, "10.00")
    unmapped = invoice.model_copy(
        update={
            "lines": [
                LedgerLine(description="Mystery", quantity=Decimal(1), unit_price=Decimal("10.00"))
            ]
        }
    )

    with pytest.raises(ValidationError, match="not mapped"):
        await books.ledger.post_document(unmapped)
    assert await books.ledger.find_document(invoice.reference) is None


async def test_a_credit_note_settles_part_of_its_invoice_and_a_payment_the_rest(
    books: Books, customer_id: str
) -> None:
    invoice = document(customer_id, "100.00")
    await books.ledger.post_document(invoice)
    credit = document(
        customer_id,
        "30.00",
        kind="credit_note",
        applies_to=invoice.reference,
        reference=f"cn_{uuid.uuid4().hex[:14]}",
    )

    posted_credit = await books.ledger.post_document(credit)
    assert posted_credit.kind == "credit_note" and posted_credit.total == Money.of("30.00", "USD")
    assert await owed(books.ledger, customer_id) == {"USD": Money.of("70.00", "USD")}
    paid = await books.ledger.post_payment(money(invoice, "70.00"))

    assert paid.applied_document_state == "paid"
    found = await books.ledger.find_document(invoice.reference)
    assert found is not None and found.state == "paid"
    assert await owed(books.ledger, customer_id) == {}


# --- payments and refunds ------------------------------------------------------------------


async def test_a_payment_of_the_whole_invoice_settles_it_once(
    books: Books, customer_id: str
) -> None:
    invoice = document(customer_id, "49.00")
    await books.ledger.post_document(invoice)
    payment = money(invoice, "49.00")

    posted = await books.ledger.post_payment(payment)
    again = await books.ledger.post_payment(payment)

    assert posted.created_now and posted.applied_document_state == "paid"
    assert (posted.kind, posted.amount, posted.applies_to) == (
        "payment",
        Money.of("49.00", "USD"),
        invoice.reference,
    )
    assert again.erp_document_id == posted.erp_document_id and not again.created_now
    assert await books.ledger.find_payment(payment.reference) == again
    found = await books.ledger.find_document(invoice.reference)
    assert found is not None and found.state == "paid"
    assert await owed(books.ledger, customer_id) == {}


async def test_a_partial_payment_leaves_the_invoice_open_for_the_rest(
    books: Books, customer_id: str
) -> None:
    invoice = document(customer_id, "100.00")
    await books.ledger.post_document(invoice)

    partial = await books.ledger.post_payment(money(invoice, "30.00"))

    assert partial.applied_document_state == "posted"
    assert await owed(books.ledger, customer_id) == {"USD": Money.of("70.00", "USD")}


async def test_an_overpayment_is_rejected_and_nothing_is_posted(
    books: Books, customer_id: str
) -> None:
    invoice = document(customer_id, "20.00")
    await books.ledger.post_document(invoice)
    too_much = money(invoice, "20.01")

    with pytest.raises(RejectedError) as refused:
        await books.ledger.post_payment(too_much)

    assert refused.value.remote_code == "overpayment"
    assert await books.ledger.find_payment(too_much.reference) is None
    assert await owed(books.ledger, customer_id) == {"USD": Money.of("20.00", "USD")}


async def test_a_payment_for_a_document_the_erp_does_not_hold_is_not_found(
    books: Books, customer_id: str
) -> None:
    never_posted = document(customer_id, "20.00")

    with pytest.raises(NotFoundError):
        await books.ledger.post_payment(money(never_posted, "20.00"))


async def test_a_refund_is_paid_out_on_its_credit_note(books: Books, customer_id: str) -> None:
    invoice = document(customer_id, "50.00")
    await books.ledger.post_document(invoice)
    await books.ledger.post_payment(money(invoice, "50.00"))
    refund_id = f"re_{uuid.uuid4().hex[:14]}"
    credit = document(customer_id, "15.00", kind="credit_note", reference=refund_id, books=REFUNDS)
    await books.ledger.post_document(credit)
    assert await owed(books.ledger, customer_id) == {"USD": Money.of("-15.00", "USD")}

    out = await books.ledger.post_payment(money(credit, "15.00", kind="refund"))

    assert (out.kind, out.amount, out.applies_to) == ("refund", Money.of("15.00", "USD"), refund_id)
    assert out.applied_document_state == "paid"
    assert await owed(books.ledger, customer_id) == {}


async def test_open_receivables_are_per_customer_in_the_document_currency(
    books: Books, customer_id: str
) -> None:
    in_dollars = document(customer_id, "40.00")
    in_euros = document(customer_id, "92.00", currency="EUR")
    await books.ledger.post_document(in_dollars)
    await books.ledger.post_document(in_euros)
    await books.ledger.post_payment(money(in_euros, "30.00"))

    assert await owed(books.ledger, customer_id) == {
        "USD": Money.of("40.00", "USD"),
        "EUR": Money.of("62.00", "EUR"),
    }


# --- reconciliation pages --------------------------------------------------------------------


async def all_documents(ledger: Ledger, limit: int = 500) -> list:  # type: ignore[type-arg]
    listed, cursor, pages = [], None, 0
    while True:
        page = await ledger.document_page(TODAY, TODAY, cursor, limit)
        listed += page.documents
        pages += 1
        if page.next_cursor is None:
            return listed
        assert pages < 1000, "document pages never end"
        cursor = page.next_cursor


async def test_document_pages_list_every_document_once_in_a_stable_order(
    books: Books, customer_id: str
) -> None:
    postings = [document(customer_id, f"{n}.00") for n in (11, 12, 13)]
    for posting in postings:
        await books.ledger.post_document(posting)

    small_pages = await all_documents(books.ledger, limit=2)
    one_page = await all_documents(books.ledger)

    assert [d.erp_document_id for d in small_pages] == [d.erp_document_id for d in one_page]
    assert len({d.erp_document_id for d in small_pages}) == len(small_pages)
    ours = [d.reference for d in small_pages if d.customer_id == customer_id]
    assert ours == [p.reference for p in postings]


async def test_payment_pages_list_every_payment_once_in_a_stable_order(
    books: Books, customer_id: str
) -> None:
    invoice = document(customer_id, "90.00")
    await books.ledger.post_document(invoice)
    payments = [money(invoice, "30.00") for _ in range(3)]
    for payment in payments:
        await books.ledger.post_payment(payment)

    async def every(limit: int) -> list:  # type: ignore[type-arg]
        listed, cursor = [], None
        while True:
            page = await books.ledger.payment_page(TODAY, TODAY, cursor, limit)
            listed += page.payments
            if page.next_cursor is None:
                return listed
            cursor = page.next_cursor

    small_pages, one_page = await every(2), await every(500)

    assert [p.erp_document_id for p in small_pages] == [p.erp_document_id for p in one_page]
    ours = [p for p in small_pages if p.customer_id == customer_id]
    assert [p.reference for p in ours] == [p.reference for p in payments]
    assert {(p.kind, p.amount, p.applies_to) for p in ours} == {
        ("payment", Money.of("30.00", "USD"), invoice.reference)
    }


async def test_a_malformed_page_request_is_refused(books: Books) -> None:
    with pytest.raises(ValidationError):
        await books.ledger.document_page(TODAY, TODAY, None, 0)
    with pytest.raises(ValidationError):
        await books.ledger.payment_page(TODAY, TODAY - dt.timedelta(days=1), None, 10)
    with pytest.raises(ValidationError):
        await books.ledger.document_page(TODAY, TODAY, "not-a-cursor", 10)


# --- periods and the catalogue ---------------------------------------------------------------


async def test_a_period_is_open_until_closed_and_none_is_outside_the_fiscal_years(
    books: Books,
) -> None:
    # Next year's June: inside both ERPs' years and empty, so it can be closed.
    on = dt.date(TODAY.year + 1, 6, 15)
    assert await books.ledger.is_period_open(TODAY) is True
    assert await books.ledger.is_period_open(dt.date(2001, 1, 15)) is False

    await books.close_period(on)
    try:
        assert await books.ledger.is_period_open(on) is False
        assert await books.ledger.is_period_open(on.replace(month=7)) is True
    finally:
        await books.reopen_period(on)
    assert await books.ledger.is_period_open(on) is True


async def test_the_catalog_names_everything_the_local_finance_mapping_names(
    books: Books,
) -> None:
    catalog = {(entry.kind, entry.key): entry for entry in await books.ledger.catalog()}

    wanted = {
        ("product", product)
        for product, _ in (
            *ERP_BOOKS.revenue.values(),
            ERP_BOOKS.refunds,
            ERP_BOOKS.support_credits,
        )
    }
    wanted |= {
        ("account", account)
        for _, account in (
            *ERP_BOOKS.revenue.values(),
            ERP_BOOKS.refunds,
            ERP_BOOKS.support_credits,
            *ERP_BOOKS.card_journals.values(),
            ERP_BOOKS.out_of_band_journal,
        )
    }
    wanted |= {
        ("journal", journal)
        for journal, _ in (*ERP_BOOKS.card_journals.values(), ERP_BOOKS.out_of_band_journal)
    }
    wanted |= {("tax", name) for name in ERP_BOOKS.taxes.values()}
    wanted |= {("currency", code) for code in ERP_BOOKS.card_journals}
    assert wanted <= set(catalog), sorted(wanted - set(catalog))
    assert all(catalog[key].active for key in wanted)


async def test_errors_are_adapter_errors_naming_the_erp(books: Books, customer_id: str) -> None:
    invoice = document(customer_id, "20.00")
    with pytest.raises(AdapterError) as refused:
        await books.ledger.post_payment(money(invoice, "20.00"))
    assert refused.value.system == "erp" and refused.value.operation == "post_payment"
