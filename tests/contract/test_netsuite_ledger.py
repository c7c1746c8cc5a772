"""What NetSuiteLedger does beyond the Ledger contract, against the NetSuite sandbox: conflicts
never overwritten, lost answers harmless, NetSuite's refusals mapped, the account's
concurrency limit respected. A sandbox account private to this module."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
import pytest_asyncio

from adapters.erp import NetSuiteLedger
from adapters.erp.netsuite import external_id
from adapters.errors import (
    AuthenticationError,
    ConflictError,
    RateLimitedError,
    RejectedError,
    TransientError,
)
from canonical import Customer, LedgerLine, LedgerPosting, Money, PaymentPosting
from sandbox.netsuite import DEFAULT_CONCURRENCY_LIMIT
from sandbox.netsuite import _books as sandbox_books
from starters.local.catalog import ERP_BOOKS
from tests.fixtures.netsuite import NetSuiteServer

TODAY = dt.date.today()


@pytest.fixture(scope="module")
def server(netsuite_module_server: NetSuiteServer) -> NetSuiteServer:
    return netsuite_module_server


@pytest_asyncio.fixture
async def ledger(server: NetSuiteServer) -> AsyncIterator[NetSuiteLedger]:
    async with server.ledger() as ledger:
        yield ledger


@pytest_asyncio.fixture
async def customer_id(ledger: NetSuiteLedger) -> str:
    customer = Customer(customer_id=f"cus_{uuid.uuid4().hex[:14]}", name="NetSuite Test Co")
    await ledger.ensure_party(customer)
    return customer.customer_id


def invoice(
    customer_id: str, amount: str, *, on: dt.date = TODAY, **changes: object
) -> LedgerPosting:
    product, account = ERP_BOOKS.revenue["subscriptions"]
    posting = LedgerPosting(
        reference=f"in_{uuid.uuid4().hex[:16]}",
        kind="invoice",
        customer_id=customer_id,
        currency="USD",
        lines=[
            LedgerLine(
                description="Pro plan",
                quantity=Decimal(1),
                unit_price=Decimal(amount),
                erp_product=product,
                revenue_account=account,
            )
        ],
        total=Money.of(amount, "USD"),
        billing_date=on,
        description="NetSuite test invoice",
    )
    return posting.model_copy(update=changes)


async def count_with_external_id(ledger: NetSuiteLedger, reference: str) -> int:
    answer = await ledger._suiteql(
        f"SELECT count(*) AS n FROM transaction WHERE externalid = '{external_id(reference)}'",
        "test",
    )
    return int(answer["items"][0]["n"])


async def test_a_posted_document_of_another_total_is_a_conflict_and_is_not_overwritten(
    ledger: NetSuiteLedger, customer_id: str
) -> None:
    first = invoice(customer_id, "30.00")
    posted = await ledger.post_document(first)

    with pytest.raises(ConflictError) as conflict:
        await ledger.post_document(first.model_copy(update={"total": Money.of("31", "USD")}))

    assert conflict.value.remote_code == "mismatch"
    assert "30.00" in str(conflict.value) and "31" in str(conflict.value)
    found = await ledger.find_document(first.reference)
    assert found is not None and found.total == posted.total


async def test_a_lost_answer_to_the_upsert_leaves_one_document_and_the_retry_adopts_it(
    ledger: NetSuiteLedger, server: NetSuiteServer, customer_id: str
) -> None:
    posting = invoice(customer_id, "44.00")
    server.admin("POST", "faults", {"status": 504, "afterCommit": True, "method": "PUT"})

    with pytest.raises(TransientError):
        await ledger.post_document(posting)
    retried = await ledger.post_document(posting)

    assert not retried.created_now and retried.total == Money.of("44.00", "USD")
    assert await count_with_external_id(ledger, posting.reference) == 1


async def test_a_lost_answer_to_a_payment_leaves_one_payment(
    ledger: NetSuiteLedger, server: NetSuiteServer, customer_id: str
) -> None:
    document = invoice(customer_id, "60.00")
    await ledger.post_document(document)
    payment = PaymentPosting(
        reference=f"inpay_{uuid.uuid4().hex[:14]}",
        kind="payment",
        customer_id=customer_id,
        applies_to=document.reference,
        amount=Money.of("60.00", "USD"),
        payment_date=TODAY,
        method="card",
        journal="CARD-USD",
        clearing_account="1150-USD",
        description="Card",
    )
    server.admin("POST", "faults", {"status": 504, "afterCommit": True, "method": "PUT"})

    with pytest.raises(TransientError):
        await ledger.post_payment(payment)
    retried = await ledger.post_payment(payment)

    assert not retried.created_now and retried.applied_document_state == "paid"
    assert await count_with_external_id(ledger, payment.reference) == 1


async def test_posting_into_a_closed_period_is_netsuites_user_error_and_creates_nothing(
    ledger: NetSuiteLedger, server: NetSuiteServer, customer_id: str
) -> None:
    on = dt.date(TODAY.year + 1, 8, 20)
    posting = invoice(customer_id, "15.00", on=on)
    server.close_period(on)
    try:
        with pytest.raises(RejectedError) as refused:
            await ledger.post_document(posting)
    finally:
        server.open_period(on)

    assert type(refused.value) is RejectedError
    assert refused.value.remote_code == "USER_ERROR" and refused.value.status == 400
    assert "closed" in refused.value.message
    assert await ledger.find_document(posting.reference) is None
    assert (await ledger.post_document(posting)).created_now


async def test_a_reference_with_a_slash_is_one_external_id_and_reads_back_as_itself(
    ledger: NetSuiteLedger, customer_id: str
) -> None:
    original = invoice(customer_id, "9.00")
    reversal = invoice(customer_id, "9.00", reference=original.reference + "/void")

    posted = await ledger.post_document(reversal)

    assert posted.reference == reversal.reference
    found = await ledger.find_document(reversal.reference)
    assert found is not None and found.erp_document_id == posted.erp_document_id
    assert await ledger.find_document(original.reference) is None


async def test_wrong_credentials_are_an_authentication_error(server: NetSuiteServer) -> None:
    c = server.credentials
    async with NetSuiteLedger(
        server.url, c.account_id, c.consumer_key, c.consumer_secret, c.token_id, "0" * 64
    ) as ledger:
        with pytest.raises(AuthenticationError) as refused:
            await ledger.find_party("cus_anyone")

    assert refused.value.remote_code == "INVALID_LOGIN" and refused.value.status == 401


async def test_the_ledger_keeps_within_the_accounts_concurrency_limit(
    server: NetSuiteServer, customer_id: str
) -> None:
    server.governance(concurrencyLimit=2, latencySeconds=0.2, resetCounters=True)
    try:
        async with server.ledger(concurrency=2) as polite:
            found = await asyncio.gather(*(polite.find_party(customer_id) for _ in range(8)))
        seen = server.governance()
        async with server.ledger(concurrency=6) as greedy:
            outcomes = await asyncio.gather(
                *(greedy.find_party(customer_id) for _ in range(6)), return_exceptions=True
            )
    finally:
        server.governance(concurrencyLimit=DEFAULT_CONCURRENCY_LIMIT, latencySeconds=0)

    assert all(record is not None for record in found)
    assert seen["refused"] == 0 and seen["peak"] == 2
    refused = [o for o in outcomes if isinstance(o, RateLimitedError)]
    assert refused and all(o.remote_code == "CONCURRENCY_LIMIT_EXCEEDED" for o in refused)


async def test_a_credit_larger_than_what_remains_due_stays_open_as_the_customers_credit(
    ledger: NetSuiteLedger, customer_id: str
) -> None:
    document = invoice(customer_id, "20.00")
    await ledger.post_document(document)
    credit = invoice(
        customer_id,
        "25.00",
        kind="credit_note",
        applies_to=document.reference,
        reference=f"cn_{uuid.uuid4().hex[:12]}",
    )

    await ledger.post_document(credit)

    found = await ledger.find_document(document.reference)
    assert found is not None and found.state == "posted"
    page = await ledger.open_receivable_page(None, 1000)
    mine = {r.amount.currency: r.amount for r in page.receivables if r.customer_id == customer_id}
    assert mine == {"USD": Money.of("-5.00", "USD")}


def test_the_sandbox_books_are_the_local_finance_mappings() -> None:
    """The sandbox imports nothing of the product: this holds its chart to ERP_BOOKS."""
    for product, account in (
        *ERP_BOOKS.revenue.values(),
        ERP_BOOKS.refunds,
        ERP_BOOKS.support_credits,
    ):
        assert sandbox_books.ITEMS[product][1] == account
    assert set(ERP_BOOKS.taxes.values()) <= set(sandbox_books.TAX_CODES)
    for journal, clearing in (*ERP_BOOKS.card_journals.values(), ERP_BOOKS.out_of_band_journal):
        assert sandbox_books.PAYMENT_METHODS[journal] == clearing
    assert set(ERP_BOOKS.card_journals) == set(sandbox_books.ACCOUNT_CURRENCIES)


async def test_an_open_period_and_an_upserted_customer_are_not_asked_again_for_a_while(
    ledger: NetSuiteLedger, server: NetSuiteServer, customer_id: str
) -> None:
    """Each request holds one of the account's few slots: what changes rarely is remembered
    (a period found open, a customer as upserted), what may change is asked again."""
    customer = Customer(customer_id=customer_id, name="Slots GmbH")
    await ledger.ensure_party(customer)
    assert await ledger.is_period_open(TODAY)
    server.governance(resetCounters=True)
    await ledger.ensure_party(customer)
    assert await ledger.is_period_open(TODAY)
    assert server.governance()["served"] == 0
    renamed = customer.model_copy(update={"name": "Slots AG"})
    assert (await ledger.ensure_party(renamed)).name == "Slots AG"  # a change is written
    assert server.governance()["served"] > 0
