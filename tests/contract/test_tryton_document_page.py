"""TrytonLedger pages the ERP's customer documents for reconciliation, from the real Tryton 8.2.

One private server for the module (documents posted here stay out of other tests' books);
assertions still look only at this module's customers, so other writers cannot break them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import httpx
import pytest
import pytest_asyncio

from adapters.erp import TrytonLedger
from adapters.errors import ValidationError
from canonical import Customer, LedgerLine, LedgerPosting, Money
from canonical.reconciliation import LedgerDocument
from starters.local.tryton_bootstrap import PRODUCTS, SERVICE_PRODUCT_CODE
from tests.fixtures.tryton import TrytonServer


class CountingTransport(httpx.AsyncHTTPTransport):
    """The real transport, counting the requests that go through it."""

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        return await super().handle_async_request(request)


@dataclass(frozen=True)
class Books:
    """What the module put in the ERP: expected documents by ERP id, and the dates used."""

    customers: frozenset[str]
    today: dt.date
    created_day: dt.date  # the UTC day the undated drafts were created
    past_day: dt.date
    in_range: dict[str, LedgerDocument]  # dated today, or undated and created today
    past_draft: LedgerDocument  # a draft dated `past_day`, created today


def posting(
    customer_id: str, *, kind: str, quantity: str, unit_price: str, reference: str
) -> LedgerPosting:
    line = LedgerLine(
        description=f"{kind} line",
        quantity=Decimal(quantity),
        unit_price=Decimal(unit_price),
        erp_product=SERVICE_PRODUCT_CODE,
        revenue_account=PRODUCTS[SERVICE_PRODUCT_CODE][1],
    )
    return LedgerPosting(
        reference=reference,
        kind=kind,  # type: ignore[arg-type]
        customer_id=customer_id,
        currency="USD",
        lines=[line],
        total=Money.of(line.quantity * line.unit_price, "USD"),
        billing_date=dt.date(2026, 3, 9),
        description=f"Subscription sub_page {kind}",
    )


def reference() -> str:
    return f"in_page_{uuid.uuid4().hex[:12]}"


async def copy_as_draft(
    ledger: TrytonLedger, erp_id: str, *, reference: str | None, invoice_date: dt.date | None
) -> str:
    """A draft duplicate of a posted document, made the way a person would in the ERP."""
    (copied,) = await ledger.call(
        "model.account.invoice.copy",
        [int(erp_id)],
        {"reference": reference, "invoice_date": invoice_date},
    )
    return str(copied)


async def all_pages(
    ledger: TrytonLedger, date_from: dt.date, date_to: dt.date, limit: int
) -> list[list[LedgerDocument]]:
    pages: list[list[LedgerDocument]] = []
    cursor: str | None = None
    while True:
        page = await ledger.document_page(date_from, date_to, cursor, limit)
        pages.append(page.documents)
        assert len(page.documents) <= limit
        if page.next_cursor is None:
            return pages
        # A cursor only follows a full page, and it is that page's last id.
        assert len(page.documents) == limit
        assert page.next_cursor == page.documents[-1].erp_document_id
        cursor = page.next_cursor


def ours(pages: list[list[LedgerDocument]], books: Books) -> dict[str, LedgerDocument]:
    documents = [document for page in pages for document in page]
    ids = [int(document.erp_document_id) for document in documents]
    assert ids == sorted(ids), "pages are ordered by id"
    assert len(ids) == len(set(ids)), "no document appears twice"
    return {
        document.erp_document_id: document
        for document in documents
        if document.customer_id in books.customers
    }


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def books(tryton_module_server: TrytonServer) -> Books:
    async with tryton_module_server.ledger() as ledger:
        return await _fill_books(ledger)


async def _fill_books(ledger: TrytonLedger) -> Books:
    alpha, beta = (f"cus_page_{uuid.uuid4().hex[:10]}" for _ in range(2))
    await ledger.ensure_party(Customer(customer_id=alpha, name="Paging Alpha Co"))
    await ledger.ensure_party(Customer(customer_id=beta, name="Paging Beta Co"))
    today = await ledger.call("model.ir.date.today")
    assert isinstance(today, dt.date)
    past_day = today - dt.timedelta(days=10)

    invoice = await ledger.post_document(
        posting(alpha, kind="invoice", quantity="1", unit_price="49.00", reference=reference())
    )
    credit = await ledger.post_document(
        posting(alpha, kind="credit_note", quantity="2", unit_price="15.50", reference=reference())
    )
    other = await ledger.post_document(
        posting(beta, kind="invoice", quantity="3", unit_price="40.00", reference=reference())
    )
    # A stray undated draft duplicating the invoice (what reconciliation must surface).
    duplicate_ref = invoice.reference
    duplicate = await copy_as_draft(
        ledger, invoice.erp_document_id, reference=duplicate_ref, invoice_date=None
    )
    # A draft credit note with a date outside the main range, created today all the same.
    past_ref = reference()
    past = await copy_as_draft(
        ledger, credit.erp_document_id, reference=past_ref, invoice_date=past_day
    )
    # A draft whose reference was cleared, then cancelled: still a document of the period.
    cancelled = await copy_as_draft(ledger, other.erp_document_id, reference="", invoice_date=None)
    await ledger.call("model.account.invoice.cancel", [int(cancelled)])

    created = await ledger.call(
        "model.account.invoice.read", [int(duplicate), int(cancelled)], ["create_date", "reference"]
    )
    assert created[1]["reference"] == "", "Tryton keeps a cleared reference as ''"
    created_days = {row["create_date"].date() for row in created}
    assert len(created_days) == 1, "test setup straddled midnight UTC; run again"

    def expected(
        erp_id: str,
        ref: str | None,
        kind: str,
        amount: str,
        state: str,
        customer: str,
        on: dt.date | None,
    ) -> LedgerDocument:
        return LedgerDocument(
            erp_document_id=erp_id,
            reference=ref,
            kind=kind,  # type: ignore[arg-type]
            number=None,
            total=Money.of(amount, "USD"),
            state=state,
            customer_id=customer,
            document_date=on,
        )

    in_range = {
        doc.erp_document_id: expected(
            doc.erp_document_id, doc.reference, kind, amount, "posted", customer, today
        ).model_copy(update={"number": doc.erp_number})
        for doc, kind, amount, customer in (
            (invoice, "invoice", "49.00", alpha),
            (credit, "credit_note", "31.00", alpha),
            (other, "invoice", "120.00", beta),
        )
    }
    in_range[duplicate] = expected(
        duplicate, duplicate_ref, "invoice", "49.00", "draft", alpha, None
    )
    in_range[cancelled] = expected(cancelled, None, "invoice", "120.00", "cancelled", beta, None)
    return Books(
        customers=frozenset({alpha, beta}),
        today=today,
        created_day=created_days.pop(),
        past_day=past_day,
        in_range=in_range,
        past_draft=expected(past, past_ref, "credit_note", "31.00", "draft", alpha, past_day),
    )


@pytest_asyncio.fixture
async def ledger(tryton_module_server: TrytonServer) -> AsyncIterator[TrytonLedger]:
    async with tryton_module_server.ledger() as ledger:
        await ledger.login()
        yield ledger


async def test_pages_of_two_list_every_document_of_the_range_once_in_every_state(
    ledger: TrytonLedger, books: Books
) -> None:
    day_from = min(books.today, books.created_day)
    day_to = max(books.today, books.created_day)

    pages = await all_pages(ledger, day_from, day_to, limit=2)

    found = ours(pages, books)
    assert found == books.in_range
    assert {document.state for document in found.values()} == {"posted", "draft", "cancelled"}
    assert books.past_draft.erp_document_id not in found
    assert len(pages) >= 3


async def test_a_draft_is_in_the_range_of_its_invoice_date_not_of_its_creation(
    ledger: TrytonLedger, books: Books
) -> None:
    pages = await all_pages(ledger, books.past_day, books.past_day, limit=2)

    assert ours(pages, books) == {books.past_draft.erp_document_id: books.past_draft}


async def test_date_bounds_are_inclusive_and_exclude_the_days_around(
    ledger: TrytonLedger, books: Books
) -> None:
    day_before = books.past_day - dt.timedelta(days=1)
    day_after = books.past_day + dt.timedelta(days=1)
    up_to_yesterday = min(books.today, books.created_day) - dt.timedelta(days=1)

    before = ours(await all_pages(ledger, day_before - dt.timedelta(days=30), day_before, 5), books)
    between = ours(await all_pages(ledger, day_after, up_to_yesterday, 5), books)
    after = ours(
        await all_pages(
            ledger,
            max(books.today, books.created_day) + dt.timedelta(days=1),
            books.today + dt.timedelta(days=60),
            5,
        ),
        books,
    )
    spanning = ours(await all_pages(ledger, books.past_day, books.today, 5), books)

    assert before == {}
    assert between == {}
    assert after == {}
    assert spanning == {**books.in_range, books.past_draft.erp_document_id: books.past_draft}


async def test_cursor_past_the_last_document_gives_an_empty_last_page(
    ledger: TrytonLedger, books: Books
) -> None:
    last_id = max(int(erp_id) for erp_id in books.in_range)
    beyond = str(last_id + 1_000_000)

    page = await ledger.document_page(books.past_day, books.today, beyond, 2)

    assert page.documents == []
    assert page.next_cursor is None


async def test_cursor_resumes_after_the_id_it_names(ledger: TrytonLedger, books: Books) -> None:
    ids = sorted(int(erp_id) for erp_id in books.in_range)

    page = await ledger.document_page(books.past_day, books.today, str(ids[0]), 100)

    listed = {int(document.erp_document_id) for document in page.documents}
    assert ids[0] not in listed
    assert set(ids[1:]) <= listed
    assert all(erp_id > ids[0] for erp_id in listed)


async def test_a_page_takes_one_rpc_call(tryton_module_server: TrytonServer, books: Books) -> None:
    transport = CountingTransport()
    server = tryton_module_server
    async with TrytonLedger(
        server.url, server.database, server.user, server.password, transport=transport
    ) as ledger:
        await ledger.login()
        before = transport.requests

        page = await ledger.document_page(books.past_day, books.today, None, 3)

        assert transport.requests - before == 1
        assert len(page.documents) == 3


@pytest.mark.parametrize(
    ("cursor", "limit", "date_to_offset"),
    [("not-an-id", 10, 0), (None, 0, 0), (None, 10, -1)],
    ids=["garbled cursor", "zero limit", "reversed range"],
)
async def test_malformed_page_requests_are_refused_without_asking_the_erp(
    cursor: str | None, limit: int, date_to_offset: int
) -> None:
    transport = CountingTransport()
    day = dt.date(2026, 3, 9)
    async with TrytonLedger(
        "http://127.0.0.1:9", "none", "nobody", "nothing", transport=transport
    ) as ledger:
        with pytest.raises(ValidationError):
            await ledger.document_page(day, day + dt.timedelta(days=date_to_offset), cursor, limit)
    assert transport.requests == 0
