"""TrytonLedger keeps the books a controller signs off, against the real Tryton 8.2:
revenue on the mapped accounts, billing's exact tax on the tax accounts, foreign documents
at the rate of their date, payments and refunds applied so receivables agree.

One private server for the module: the payments and documents here change the books.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from activities.reconciliation import erp_taxes
from adapters.erp import TrytonLedger
from adapters.erp.tryton import _invoice_values, _payment_move_values
from adapters.errors import NotFoundError, RejectedError, TransientError, ValidationError
from canonical import Customer, LedgerLine, LedgerPosting, LedgerTax, Money, PaymentPosting
from starters.local import tryton_bootstrap as books
from tests.fixtures.tryton import TrytonServer

TODAY = dt.date.today()
THIS_YEAR = TODAY.year
BILLING_DATE = dt.date(THIS_YEAR, 3, 9)
# A foreign document is dated its billing date in the ERP; the day it is billed is the
# day it is posted (an earlier date would come after today's numbered documents).
FOREIGN_DATE = TODAY
NEXT_YEAR_PAYMENT = dt.date(THIS_YEAR + 1, 1, 15)


def rate_on(code: str, on: dt.date) -> Decimal:
    """Units of `code` per USD on `on`, from the bootstrap's dated steps."""
    steps = sorted(
        (dt.date(THIS_YEAR + years, month, 1), Decimal(rate))
        for (years, month), rate in books.RATES[code]
    )
    return [rate for start, rate in steps if start <= on][-1]


def usd(amount: str, code: str, on: dt.date) -> Decimal:
    return (Decimal(amount) / rate_on(code, on)).quantize(Decimal("0.01"), "ROUND_HALF_EVEN")


CARD = {"USD": "CARD-USD", "EUR": "CARD-EUR", "GBP": "CARD-GBP", "JPY": "CARD-JPY",
        "KWD": "CARD-KWD"}  # fmt: skip


@pytest_asyncio.fixture
async def ledger(tryton_module_server: TrytonServer) -> AsyncIterator[TrytonLedger]:
    async with tryton_module_server.ledger() as ledger:
        await ledger.login()
        yield ledger


@pytest_asyncio.fixture
async def customer_id(ledger: TrytonLedger) -> str:
    customer = Customer(customer_id=f"cus_{uuid.uuid4().hex[:14]}", name="Books Test Co")
    await ledger.ensure_party(customer)
    return customer.customer_id


def line(text: str, price: str, *, product: str = "SUBSCRIPTION", account: str = "4000"
         ) -> LedgerLine:  # fmt: skip
    return LedgerLine(description=text, quantity=Decimal(1), unit_price=Decimal(price),
                      erp_product=product, revenue_account=account)  # fmt: skip


def tax(erp_tax: str, base: str, amount: str) -> LedgerTax:
    return LedgerTax(rate_id=f"txr_{uuid.uuid4().hex[:8]}", description=erp_tax,
                     base=Decimal(base), amount=Decimal(amount), erp_tax=erp_tax)  # fmt: skip


def document(
    customer_id: str,
    lines: list[LedgerLine],
    taxes: list[LedgerTax] = (),  # type: ignore[assignment]
    *,
    kind: str = "invoice",
    currency: str = "USD",
    billing_date: dt.date = BILLING_DATE,
    reference: str | None = None,
) -> LedgerPosting:
    total = sum((x.quantity * x.unit_price for x in lines), Decimal(0)) + sum(
        (t.amount for t in taxes), Decimal(0)
    )
    return LedgerPosting(
        reference=reference or f"in_{uuid.uuid4().hex[:16]}",
        kind=kind,  # type: ignore[arg-type]
        customer_id=customer_id,
        currency=currency,
        lines=lines,
        taxes=list(taxes),
        total=Money.of(total, currency),
        billing_date=billing_date,
        description=f"Books test {kind}",
    )


def payment(
    posting: LedgerPosting,
    amount: str,
    *,
    kind: str = "payment",
    applies_to: str | None = None,
    on: dt.date = BILLING_DATE,
    journal: str | None = None,
    clearing: str | None = None,
) -> PaymentPosting:
    currency = posting.currency
    return PaymentPosting(
        reference=f"{'inpay' if kind == 'payment' else 're'}_{uuid.uuid4().hex[:14]}",
        kind=kind,  # type: ignore[arg-type]
        customer_id=posting.customer_id,
        applies_to=applies_to or posting.reference,
        amount=Money.of(amount, currency),
        payment_date=on,
        method="card",
        journal=journal or CARD[currency],
        clearing_account=clearing or f"1150-{currency}",
        description=f"Card {kind}",
    )


async def invoice_row(ledger: TrytonLedger, reference: str) -> dict[str, Any]:
    (row,) = await ledger.call(
        "model.account.invoice.search_read",
        [("reference", "=", reference)],
        0,
        None,
        None,
        ["state", "total_amount", "tax_amount", "untaxed_amount", "amount_to_pay",
         "accounting_date", "invoice_date", "move", "reconciled"],
    )  # fmt: skip
    return dict(row)


async def move_lines(ledger: TrytonLedger, move_id: int) -> list[dict[str, Any]]:
    return list(
        await ledger.call(
            "model.account.move.line.search_read",
            [("move", "=", move_id)],
            0,
            None,
            [("id", "ASC")],
            [
                "account.code",
                "debit",
                "credit",
                "amount_second_currency",
                "second_currency.code",
                "reconciliation",
            ],
        )
    )


def by_account(lines: list[dict[str, Any]]) -> dict[str, Decimal]:
    """Balance (debit - credit) per account code."""
    out: dict[str, Decimal] = {}
    for row in lines:
        code = row["account."]["code"]
        out[code] = out.get(code, Decimal(0)) + row["debit"] - row["credit"]
    return out


class CountingTransport(httpx.AsyncHTTPTransport):
    """The JSON-RPC methods a ledger calls, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.methods: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.methods.append(json.loads(request.content)["method"])
        return await super().handle_async_request(request)


# --- documents ----------------------------------------------------------------------------


async def test_invoice_books_revenue_per_mapped_account_and_billing_tax_per_tax(
    ledger: TrytonLedger, customer_id: str
) -> None:
    # Billing: Pro plan 100.00 net (20 % VAT exclusive: 20.00) and add-on 50.00 incl.
    # 19 % VAT (net 42.02, tax 7.98): the ERP must not recompute either.
    invoice = document(
        customer_id,
        [line("Pro plan", "100.00"), line("Seats", "42.02", product="ADDON", account="4100")],
        [tax("VAT 20%", "100.00", "20.00"), tax("VAT 19%", "42.02", "7.98")],
    )

    posted = await ledger.post_document(invoice)

    assert posted.state == "posted" and posted.total == Money.of("170.00", "USD")
    row = await invoice_row(ledger, invoice.reference)
    assert (row["untaxed_amount"], row["tax_amount"]) == (Decimal("142.02"), Decimal("27.98"))
    balances = by_account(await move_lines(ledger, row["move"]))
    assert balances == {
        "1200": Decimal("170.00"),
        "4000": Decimal("-100.00"),
        "4100": Decimal("-42.02"),
        "2200": Decimal("-27.98"),
    }
    page = await ledger.document_page(BILLING_DATE, dt.date(THIS_YEAR + 1, 12, 31), None, 500)
    (found,) = [d for d in page.documents if d.reference == invoice.reference]
    assert found.taxes == {"VAT 20%": Money.of("20.00", "USD"),
                           "VAT 19%": Money.of("7.98", "USD")}  # fmt: skip


async def test_credit_note_books_tax_back_on_the_tax_account(
    ledger: TrytonLedger, customer_id: str
) -> None:
    credit = document(
        customer_id, [line("Refund of Pro", "10.00")], [tax("UK VAT 20%", "10.00", "2.00")],
        kind="credit_note",
    )  # fmt: skip

    posted = await ledger.post_document(credit)

    assert posted.kind == "credit_note" and posted.total == Money.of("12.00", "USD")
    row = await invoice_row(ledger, credit.reference)
    assert row["tax_amount"] == Decimal("-2.00")
    balances = by_account(await move_lines(ledger, row["move"]))
    assert balances == {"1200": Decimal("-12.00"), "4000": Decimal("10.00"),
                        "2210": Decimal("2.00")}  # fmt: skip


async def test_document_page_keeps_a_taxs_sign_so_reconciliation_nets_it_as_the_erp_books_it(
    ledger: TrytonLedger, customer_id: str
) -> None:
    # An upgrade: the new plan with its VAT, and a proration credit for the old one taxed at
    # another rate (its tax negative); then a credit note with its own tax.
    upgrade = document(
        customer_id,
        [line("Pro plan", "100.00"), line("Unused Basic", "-50.00")],
        [tax("VAT 20%", "100.00", "20.00"), tax("VAT 19%", "-50.00", "-9.50")],
    )
    credit = document(customer_id, [line("Refund of Pro", "10.00")],
                      [tax("VAT 20%", "10.00", "2.00")], kind="credit_note")  # fmt: skip
    await ledger.post_document(upgrade)
    await ledger.post_document(credit)

    page = await ledger.document_page(BILLING_DATE, dt.date(THIS_YEAR + 1, 12, 31), None, 10_000)
    ours = (upgrade.reference, credit.reference)
    mine = {d.reference: d for d in page.documents if d.reference in ours}

    # In each document's direction: the proration's tax against its invoice, negative.
    assert mine[upgrade.reference].taxes == {"VAT 20%": Money.of("20.00", "USD"),
                                             "VAT 19%": Money.of("-9.50", "USD")}  # fmt: skip
    assert mine[credit.reference].taxes == {"VAT 20%": Money.of("2.00", "USD")}
    # As reconciliation sums them: the ERP's own signed tax, the credit note's against.
    netted = {(t.reference, t.tax): t.amount for t in erp_taxes(list(mine.values()))}
    assert netted == {
        (upgrade.reference, "VAT 20%"): Decimal("20.00"),
        (upgrade.reference, "VAT 19%"): Decimal("-9.50"),
        (credit.reference, "VAT 20%"): Decimal("-2.00"),
    }
    (credit_row,) = await ledger.call("model.account.invoice.search_read",
                                      [("reference", "=", credit.reference)], 0, 1, None,
                                      ["tax_amount"])  # fmt: skip
    assert credit_row["tax_amount"] == netted[(credit.reference, "VAT 20%")]


async def test_eur_invoice_books_its_usd_amounts_at_the_rate_of_the_billing_date(
    ledger: TrytonLedger, customer_id: str
) -> None:
    invoice = document(customer_id, [line("Pro plan", "92.00")],
                       [tax("VAT 20%", "92.00", "18.40")], currency="EUR",
                       billing_date=FOREIGN_DATE)  # fmt: skip

    await ledger.post_document(invoice)

    row = await invoice_row(ledger, invoice.reference)
    assert row["total_amount"] == Decimal("110.40")
    assert row["invoice_date"] == FOREIGN_DATE
    lines = await move_lines(ledger, row["move"])
    revenue, vat = usd("92.00", "EUR", FOREIGN_DATE), usd("18.40", "EUR", FOREIGN_DATE)
    assert by_account(lines) == {"1200": revenue + vat, "4000": -revenue, "2200": -vat}
    (receivable,) = [x for x in lines if x["account."]["code"] == "1200"]
    assert receivable["amount_second_currency"] == Decimal("110.40")
    assert receivable["second_currency."]["code"] == "EUR"


async def test_jpy_invoice_has_no_minor_units_and_converts_at_the_yen_rate(
    ledger: TrytonLedger, customer_id: str
) -> None:
    invoice = document(customer_id, [line("Pro plan", "15000")],
                       [tax("VAT 20%", "15000", "3000")], currency="JPY",
                       billing_date=FOREIGN_DATE)  # fmt: skip

    posted = await ledger.post_document(invoice)

    assert posted.total == Money.of("18000", "JPY")
    row = await invoice_row(ledger, invoice.reference)
    balances = by_account(await move_lines(ledger, row["move"]))
    # The total is converted once (18000 JPY), not per line.
    assert balances["1200"] == usd("18000", "JPY", FOREIGN_DATE)


async def test_document_without_a_rate_for_its_date_is_refused_and_leaves_nothing(
    ledger: TrytonLedger, customer_id: str
) -> None:
    invoice = document(customer_id, [line("Pro plan", "10.00")], currency=books.NO_RATE_CURRENCY,
                       billing_date=FOREIGN_DATE)  # fmt: skip

    with pytest.raises(RejectedError) as refused:
        await ledger.post_document(invoice)

    assert refused.value.remote_code == "no_exchange_rate"
    assert books.NO_RATE_CURRENCY in str(refused.value)
    assert FOREIGN_DATE.isoformat() in str(refused.value)
    assert await ledger.find_document(invoice.reference) is None


async def test_unknown_erp_code_is_refused_naming_it_and_unmapped_postings_are_invalid(
    ledger: TrytonLedger, customer_id: str
) -> None:
    unknown = document(customer_id, [line("Pro plan", "10.00", account="4999")])
    with pytest.raises(RejectedError, match="4999") as refused:
        await ledger.post_document(unknown)
    assert refused.value.remote_code == "unknown_erp_code"
    assert await ledger.find_document(unknown.reference) is None

    unknown_tax = document(customer_id, [line("Pro plan", "10.00")],
                           [tax("VAT 7%", "10.00", "0.70")])  # fmt: skip
    with pytest.raises(RejectedError, match="VAT 7%"):
        await ledger.post_document(unknown_tax)

    unmapped = document(customer_id, [LedgerLine(description="Pro", quantity=Decimal(1),
                                                 unit_price=Decimal(10))])  # fmt: skip
    with pytest.raises(ValidationError, match="not mapped"):
        await ledger.post_document(unmapped)
    assert await ledger.find_document(unmapped.reference) is None


# --- payments and refunds -----------------------------------------------------------------


async def test_full_payment_makes_the_invoice_paid_and_reconciles_its_receivable(
    ledger: TrytonLedger, customer_id: str
) -> None:
    invoice = document(customer_id, [line("Pro plan", "49.00")])
    await ledger.post_document(invoice)
    money = payment(invoice, "49.00")

    posted = await ledger.post_payment(money)

    assert posted.created_now and posted.applied_document_state == "paid"
    assert posted.amount == Money.of("49.00", "USD") and posted.applies_to == invoice.reference
    row = await invoice_row(ledger, invoice.reference)
    assert row["state"] == "paid" and row["reconciled"]
    lines = await move_lines(ledger, int(posted.erp_document_id))
    assert by_account(lines) == {"1150-USD": Decimal("49.00"), "1200": Decimal("-49.00")}
    assert await ledger.find_payment(money.reference) == posted.model_copy(
        update={"created_now": False}
    )


async def test_two_partial_payments_leave_it_open_then_paid_and_a_duplicate_changes_nothing(
    ledger: TrytonLedger, customer_id: str
) -> None:
    invoice = document(customer_id, [line("Pro plan", "100.00")])
    await ledger.post_document(invoice)
    first, second = payment(invoice, "30.00"), payment(invoice, "70.00")

    partial = await ledger.post_payment(first)
    assert partial.applied_document_state == "posted"
    assert (await invoice_row(ledger, invoice.reference))["amount_to_pay"] == Decimal("70.00")
    again = await ledger.post_payment(first)
    assert again.erp_document_id == partial.erp_document_id and not again.created_now
    assert (await invoice_row(ledger, invoice.reference))["amount_to_pay"] == Decimal("70.00")

    final = await ledger.post_payment(second)

    assert final.applied_document_state == "paid"
    row = await invoice_row(ledger, invoice.reference)
    assert row["state"] == "paid" and row["amount_to_pay"] == 0
    page = await ledger.payment_page(BILLING_DATE, BILLING_DATE, None, 500)
    mine = [p for p in page.payments if p.applies_to == invoice.reference]
    assert sorted((p.reference, p.amount.amount) for p in mine) == sorted(
        [(first.reference, Decimal("30.00")), (second.reference, Decimal("70.00"))]
    )


async def test_a_draft_payment_an_earlier_attempt_left_is_posted_and_applied_never_doubled(
    ledger: TrytonLedger, customer_id: str
) -> None:
    invoice = document(customer_id, [line("Pro plan", "25.00")])
    await ledger.post_document(invoice)
    money = payment(invoice, "25.00")
    # What an attempt whose answer was lost leaves: the move, created but not yet posted.
    (row,) = await ledger.call(
        "model.account.invoice.search_read",
        [("reference", "=", invoice.reference)],
        0,
        1,
        None,
        ["account", "party", "currency"],
    )
    (journal,) = await ledger.call("model.account.journal.search", [("code", "=", "CARD-USD")])
    (clearing,) = await ledger.call("model.account.account.search", [("code", "=", "1150-USD")])
    (period,) = await ledger.call(
        "model.account.period.search",
        [("start_date", "<=", BILLING_DATE), ("end_date", ">=", BILLING_DATE),
         ("type", "=", "standard")],
    )  # fmt: skip
    values = _payment_move_values(
        money, row, journal_id=journal, clearing_account_id=clearing, period_id=period,
        company_id=ledger.context["company"], company_amount=Decimal("25.00"), foreign=False,
    )  # fmt: skip
    (draft,) = await ledger.call("model.account.move.create", [values])

    posted = await ledger.post_payment(money)

    assert posted.erp_document_id == str(draft) and posted.created_now is False
    assert posted.applied_document_state == "paid"
    moves = await ledger.call("model.account.move.search", [("description", "=", money.reference)])
    assert moves == [draft]


async def test_a_payment_an_earlier_attempt_applied_but_did_not_reconcile_is_reconciled(
    ledger: TrytonLedger, customer_id: str, tryton_module_server: TrytonServer
) -> None:
    invoice = document(customer_id, [line("Pro plan", "45.00")])
    await ledger.post_document(invoice)
    money = payment(invoice, "45.00")
    posted = await ledger.post_payment(money)
    # Undo the last step: what an attempt that stopped after applying the payment leaves.
    (move_line,) = await ledger.call(
        "model.account.move.line.search",
        [("move", "=", int(posted.erp_document_id)), ("account.type.receivable", "=", True)],
    )
    (reconciliation,) = await ledger.call(
        "model.account.move.line.read", [move_line], ["reconciliation"]
    )
    async with tryton_module_server.admin_ledger() as admin:
        await admin.call(
            "model.account.move.reconciliation.delete", [reconciliation["reconciliation"]]
        )
    row = await invoice_row(ledger, invoice.reference)
    assert (row["state"], row["amount_to_pay"], row["reconciled"]) == ("posted", 0, None)

    again = await ledger.post_payment(money)

    assert again.erp_document_id == posted.erp_document_id and not again.created_now
    assert again.applied_document_state == "paid"
    row = await invoice_row(ledger, invoice.reference)
    assert row["state"] == "paid" and row["reconciled"]


async def test_concurrent_posts_of_one_payment_make_one_move(
    ledger: TrytonLedger, customer_id: str, tryton_module_server: TrytonServer
) -> None:
    invoice = document(customer_id, [line("Pro plan", "60.00")])
    await ledger.post_document(invoice)
    money = payment(invoice, "60.00")

    # In this process the reference's lock queues them; another process's ledger races.
    async with tryton_module_server.ledger() as other:
        outcomes = await asyncio.gather(
            ledger.post_payment(money), ledger.post_payment(money), other.post_payment(money),
            return_exceptions=True,
        )  # fmt: skip
        for outcome in outcomes:
            # A loser withdraws its draft and says to retry (TransientError); retried, it adopts.
            if isinstance(outcome, BaseException):
                assert isinstance(outcome, TransientError), outcome
        settled = await other.post_payment(money)

    moves = await ledger.call("model.account.move.search", [("description", "=", money.reference)])
    assert moves == [int(settled.erp_document_id)]
    assert settled.applied_document_state == "paid"
    assert (await invoice_row(ledger, invoice.reference))["amount_to_pay"] == 0


async def test_an_invoice_costs_the_erp_six_calls_and_its_payment_ten(
    ledger: TrytonLedger, customer_id: str, tryton_module_server: TrytonServer
) -> None:
    transport = CountingTransport()
    server = tryton_module_server
    async with TrytonLedger(server.url, server.database, server.user, server.password,
                            transport=transport) as counted:  # fmt: skip
        # The first posting reads what is read once (session, the books' codes, the setup).
        first = document(
            customer_id, [line("Pro plan", "30.00")], [tax("VAT 20%", "30.00", "6.00")]
        )
        await counted.post_document(first)
        await counted.post_payment(payment(first, "36.00"))
        invoice = document(customer_id, [line("Pro plan", "30.00")],
                           [tax("VAT 20%", "30.00", "6.00")])  # fmt: skip

        transport.methods.clear()
        await counted.post_document(invoice)
        document_calls, transport.methods = transport.methods, []
        posted = await counted.post_payment(payment(invoice, "36.00"))
        payment_calls = list(transport.methods)

    assert [m.removeprefix("model.") for m in document_calls] == [
        "account.invoice.search_read",  # lookup before create
        "party.party.search_read",  # the party with its addresses
        "account.invoice.create",
        "account.invoice.search_read",  # re-check: no other writer's document
        "account.invoice.post",
        "account.invoice.read",  # totals checked after posting
    ]
    assert [m.removeprefix("model.") for m in payment_calls] == [
        "account.move.line.search_read",  # lookup before create
        "account.invoice.search_read",  # the document, its open amount and lines
        "account.move.create",
        "account.move.line.search_read",  # re-check: no other writer's move
        "account.move.post",
        "account.invoice.write",  # applied to the document
        "wizard.account.move.reconcile_lines.create",
        "wizard.account.move.reconcile_lines.execute",
        "wizard.account.move.reconcile_lines.delete",
        "account.invoice.read",  # the document's state after, the payment's move number
    ]
    assert posted.applied_document_state == "paid"
    row = await invoice_row(ledger, invoice.reference)
    assert row["state"] == "paid" and row["reconciled"]
    found = await ledger.find_payment(posted.reference)
    assert found == posted.model_copy(update={"created_now": False}) and found.erp_number


async def test_payment_applied_to_a_credit_note_or_in_another_currency_is_refused(
    ledger: TrytonLedger, customer_id: str
) -> None:
    credit = document(customer_id, [line("Goodwill", "5.00")], kind="credit_note")
    await ledger.post_document(credit)

    with pytest.raises(RejectedError, match="settles a invoice, not a credit_note"):
        await ledger.post_payment(payment(credit, "5.00"))
    invoice = document(customer_id, [line("Pro plan", "5.00")])
    await ledger.post_document(invoice)
    in_euros = payment(invoice, "5.00").model_copy(update={"amount": Money.of("5.00", "EUR")})
    with pytest.raises(RejectedError, match="document in USD, payment in EUR"):
        await ledger.post_payment(in_euros)
    assert await ledger.find_payment(in_euros.reference) is None


async def test_overpayment_is_refused_and_nothing_is_posted(
    ledger: TrytonLedger, customer_id: str
) -> None:
    invoice = document(customer_id, [line("Pro plan", "20.00")])
    await ledger.post_document(invoice)
    too_much = payment(invoice, "20.01")

    with pytest.raises(RejectedError) as refused:
        await ledger.post_payment(too_much)

    assert refused.value.remote_code == "overpayment"
    assert await ledger.find_payment(too_much.reference) is None
    assert (await invoice_row(ledger, invoice.reference))["state"] == "posted"


async def test_payment_for_a_document_the_erp_does_not_hold_is_not_found(
    ledger: TrytonLedger, customer_id: str
) -> None:
    invoice = document(customer_id, [line("Pro plan", "20.00")])
    with pytest.raises(NotFoundError):
        await ledger.post_payment(payment(invoice, "20.00"))


async def test_eur_payment_at_another_rate_pays_the_invoice_and_books_the_difference(
    ledger: TrytonLedger, customer_id: str
) -> None:
    invoice = document(customer_id, [line("Pro plan", "92.00")], currency="EUR",
                       billing_date=FOREIGN_DATE)  # fmt: skip
    await ledger.post_document(invoice)
    # Paid next January, at next year's rate: the difference is an exchange gain or loss.
    money = payment(invoice, "92.00", on=NEXT_YEAR_PAYMENT)
    paid = usd("92.00", "EUR", NEXT_YEAR_PAYMENT)
    assert paid != usd("92.00", "EUR", FOREIGN_DATE)

    posted = await ledger.post_payment(money)

    assert posted.applied_document_state == "paid"
    lines = await move_lines(ledger, int(posted.erp_document_id))
    assert by_account(lines) == {"1150-EUR": paid, "1200": -paid}
    # The exchange difference is booked: the customer's receivable is zero in USD too.
    receivable = await ledger.call(
        "model.account.move.line.search_read",
        [("party.code", "=", customer_id), ("account.code", "=", "1200")],
        0,
        None,
        None,
        ["debit", "credit", "reconciliation", "move.journal.code"],
    )
    assert sum(row["debit"] - row["credit"] for row in receivable) == 0
    assert all(row["reconciliation"] for row in receivable) and len(receivable) == 3
    receivable = await ledger.open_receivable_page(None, 10_000)
    assert customer_id not in {r.customer_id for r in receivable.receivables}


async def test_refund_pays_out_a_credit_note_and_the_receivable_nets_to_billing(
    ledger: TrytonLedger, customer_id: str
) -> None:
    invoice = document(customer_id, [line("Pro plan", "50.00")])
    await ledger.post_document(invoice)
    await ledger.post_payment(payment(invoice, "50.00"))
    refund_id = f"re_{uuid.uuid4().hex[:14]}"
    # A refund without a billing credit note: its own credit note on the refunds account.
    credit = document(customer_id, [line("Refund", "15.00", product="REFUND", account="4900")],
                      kind="credit_note", reference=refund_id)  # fmt: skip
    await ledger.post_document(credit)

    out = await ledger.post_payment(payment(credit, "15.00", kind="refund"))

    assert out.kind == "refund" and out.applied_document_state == "paid"
    lines = await move_lines(ledger, int(out.erp_document_id))
    assert by_account(lines) == {"1150-USD": Decimal("-15.00"), "1200": Decimal("15.00")}
    assert (await invoice_row(ledger, refund_id))["state"] == "paid"
    owed = await ledger.open_receivable_page(None, 10_000)
    assert customer_id not in {r.customer_id for r in owed.receivables}


async def test_open_receivable_is_per_customer_in_the_document_currency(
    ledger: TrytonLedger, customer_id: str
) -> None:
    usd = document(customer_id, [line("Pro plan", "40.00")])
    eur = document(customer_id, [line("Pro plan", "92.00")], currency="EUR",
                   billing_date=FOREIGN_DATE)  # fmt: skip
    await ledger.post_document(usd)
    await ledger.post_document(eur)
    await ledger.post_payment(payment(eur, "30.00", on=FOREIGN_DATE))

    owed = await ledger.open_receivable_page(None, 10_000)

    mine = {r.amount.currency: r.amount for r in owed.receivables if r.customer_id == customer_id}
    assert mine == {"USD": Money.of("40.00", "USD"), "EUR": Money.of("62.00", "EUR")}


async def test_catalog_lists_what_finance_maps_to(ledger: TrytonLedger) -> None:
    catalog = await ledger.catalog()

    keys = {(e.kind, e.key) for e in catalog}
    assert {("product", code) for code in books.PRODUCTS} <= keys
    assert {("account", code) for code in books.REVENUE_ACCOUNTS} <= keys
    assert {("tax", name) for name in books.TAXES} <= keys
    assert {("journal", code) for code in books.PAYMENT_JOURNALS} <= keys
    currencies = {e.key: e.active for e in catalog if e.kind == "currency"}
    assert currencies["EUR"] is True and currencies[books.NO_RATE_CURRENCY] is False


# --- property: the ERP says billing's total and tax to the minor unit ----------------------

DIGITS = {"JPY": 0, "USD": 2, "EUR": 2, "KWD": 3}
RATES = {"VAT 20%": Decimal("0.20"), "VAT 19%": Decimal("0.19"),
         "US sales tax 8.875%": Decimal("0.08875")}  # fmt: skip


@st.composite
def taxed_documents(draw: st.DrawFn) -> tuple[str, list[tuple[Decimal, str, bool]]]:
    """A currency and lines of (billing amount, tax name, inclusive)."""
    currency = draw(st.sampled_from(sorted(DIGITS)))
    unit = Decimal(1).scaleb(-DIGITS[currency])
    lines = draw(
        st.lists(
            st.tuples(
                st.integers(min_value=1, max_value=10**7).map(lambda n: n * unit),
                st.sampled_from(sorted(RATES)),
                st.booleans(),
            ),
            min_size=1,
            max_size=4,
        )
    )
    return currency, lines


def billing_view(
    customer_id: str, currency: str, lines: list[tuple[Decimal, str, bool]]
) -> LedgerPosting:
    """What billing computes (Stripe's way: per line, rounded half-up to the minor unit)
    and what the canonical posting makes of it: net lines, tax per rate summed."""
    unit = Decimal(1).scaleb(-DIGITS[currency])
    ledger_lines: list[LedgerLine] = []
    per_tax: dict[str, tuple[Decimal, Decimal]] = {}
    for n, (amount, name, inclusive) in enumerate(lines):
        rate = RATES[name]
        if inclusive:
            tax_amount = (amount - amount / (1 + rate)).quantize(unit, rounding="ROUND_HALF_UP")
            net = amount - tax_amount
        else:
            net = amount
            tax_amount = (amount * rate).quantize(unit, rounding="ROUND_HALF_UP")
        ledger_lines.append(line(f"line {n}", str(net)))
        base, total = per_tax.get(name, (Decimal(0), Decimal(0)))
        per_tax[name] = (base + net, total + tax_amount)
    taxes = [tax(name, str(base), str(amount)) for name, (base, amount) in per_tax.items()]
    return document(customer_id, ledger_lines, taxes, currency=currency, billing_date=TODAY)


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(generated=taxed_documents())
async def test_generated_documents_match_billing_total_and_tax_to_the_minor_unit(
    ledger: TrytonLedger, customer_id: str, generated: tuple[str, list[tuple[Decimal, str, bool]]]
) -> None:
    currency, lines = generated
    posting = billing_view(customer_id, currency, lines)

    await ledger.post_document(posting)

    row = await invoice_row(ledger, posting.reference)
    assert row["total_amount"] == posting.total.amount
    assert row["tax_amount"] == sum((t.amount for t in posting.taxes), Decimal(0))
    page = await ledger.document_page(BILLING_DATE, dt.date(THIS_YEAR + 1, 12, 31), None, 10_000)
    (found,) = [d for d in page.documents if d.reference == posting.reference]
    expected = {t.erp_tax: Money.of(t.amount, currency) for t in posting.taxes}
    assert found.taxes == expected


# --- the strict sequence: documents reaching the ERP out of billing's date order ---------


def earlier_day_at_another_rate() -> dt.date | None:
    """A day of this year before today whose EUR rate is not today's (None if none is)."""
    day = dt.date(THIS_YEAR, 1, 2)
    while day < TODAY:
        if rate_on("EUR", day) != rate_on("EUR", TODAY):
            return day
        day += dt.timedelta(days=1)
    return None


async def test_late_foreign_document_at_another_rate_is_refused_naming_both_dates(
    ledger: TrytonLedger, customer_id: str
) -> None:
    late_day = earlier_day_at_another_rate()
    if late_day is None:
        pytest.skip("every earlier day of this year has today's EUR rate")
    await ledger.post_document(document(customer_id, [line("Today's", "10.00")]))
    late = document(customer_id, [line("Pro plan", "92.00")], currency="EUR",
                    billing_date=late_day)  # fmt: skip

    with pytest.raises(RejectedError) as refused:
        await ledger.post_document(late)

    assert refused.value.remote_code == "out_of_sequence"
    assert late_day.isoformat() in str(refused.value) and TODAY.isoformat() in str(refused.value)
    assert await ledger.find_document(late.reference) is None


async def test_foreign_document_billed_in_the_erps_future_is_dated_today_at_the_same_rate(
    ledger: TrytonLedger, customer_id: str
) -> None:
    # Billing's clock ran ahead (a subscription advanced); Tryton refuses a future date.
    ahead = TODAY + dt.timedelta(days=3)
    if rate_on("EUR", ahead) != rate_on("EUR", TODAY):
        pytest.skip("three days ahead has another EUR rate")
    renewal = document(customer_id, [line("Renewal", "92.00")], currency="EUR",
                       billing_date=ahead)  # fmt: skip

    await ledger.post_document(renewal)

    row = await invoice_row(ledger, renewal.reference)
    assert (row["state"], row["invoice_date"]) == ("posted", TODAY)
    assert row["total_amount"] == renewal.total.amount
    assert by_account(await move_lines(ledger, row["move"]))["1200"] == usd("92.00", "EUR", ahead)


async def test_late_foreign_document_at_the_same_rate_takes_the_latest_numbered_date(
    ledger: TrytonLedger, customer_id: str
) -> None:
    yesterday = TODAY - dt.timedelta(days=1)
    if yesterday.year != THIS_YEAR or rate_on("EUR", yesterday) != rate_on("EUR", TODAY):
        pytest.skip("yesterday is in another fiscal year or has another EUR rate")
    await ledger.post_document(document(customer_id, [line("Today's", "10.00")]))
    late = document(customer_id, [line("Pro plan", "92.00")], currency="EUR",
                    billing_date=yesterday)  # fmt: skip

    await ledger.post_document(late)

    row = await invoice_row(ledger, late.reference)
    assert (row["state"], row["invoice_date"]) == ("posted", TODAY)
    assert by_account(await move_lines(ledger, row["move"]))["1200"] == usd(
        "92.00", "EUR", yesterday
    )


async def foreign_draft(ledger: TrytonLedger, posting: LedgerPosting, on: dt.date) -> int:
    """The draft an attempt whose answer was lost leaves for `posting` (what
    `post_document` creates), dated `on`."""
    setup = await ledger._invoicing_setup()
    values = _invoice_values(
        posting,
        await ledger._invoicing_party(posting.customer_id),
        setup,
        await ledger._currency_id(posting.currency, setup, posting.billing_date),
        ledger.context["company"],
        await ledger._document_books(posting),
    )
    (draft,) = await ledger.call("model.account.invoice.create", [{**values, "invoice_date": on}])
    return int(draft)


async def test_an_adopted_foreign_draft_is_dated_and_converted_as_a_new_document_would_be(
    ledger: TrytonLedger, customer_id: str
) -> None:
    stale = earlier_day_at_another_rate()
    if stale is None:
        pytest.skip("every earlier day of this year has today's EUR rate")
    invoice = document(customer_id, [line("Pro plan", "92.00")],
                       [tax("VAT 20%", "92.00", "18.40")], currency="EUR",
                       billing_date=FOREIGN_DATE)  # fmt: skip
    # Left dated another day (at another rate) by an earlier attempt or by hand.
    draft = await foreign_draft(ledger, invoice, stale)

    posted = await ledger.post_document(invoice)

    assert (posted.erp_document_id, posted.created_now) == (str(draft), False)
    row = await invoice_row(ledger, invoice.reference)
    assert (row["state"], row["invoice_date"]) == ("posted", FOREIGN_DATE)
    revenue, vat = usd("92.00", "EUR", FOREIGN_DATE), usd("18.40", "EUR", FOREIGN_DATE)
    assert by_account(await move_lines(ledger, row["move"])) == {
        "1200": revenue + vat, "4000": -revenue, "2200": -vat,
    }  # fmt: skip


async def test_an_adopted_foreign_draft_the_date_rule_refuses_is_refused_and_left_as_it_was(
    ledger: TrytonLedger, customer_id: str
) -> None:
    late_day = earlier_day_at_another_rate()
    if late_day is None:
        pytest.skip("every earlier day of this year has today's EUR rate")
    late = document(customer_id, [line("Pro plan", "92.00")], currency="EUR",
                    billing_date=late_day)  # fmt: skip
    # Created while its day was still in sequence; a document numbered today came after.
    draft = await foreign_draft(ledger, late, late_day)
    await ledger.post_document(document(customer_id, [line("Today's", "10.00")]))

    with pytest.raises(RejectedError) as refused:
        await ledger.post_document(late)

    assert refused.value.remote_code == "out_of_sequence"
    row = await invoice_row(ledger, late.reference)
    assert (row["state"], row["invoice_date"], row["move"]) == ("draft", late_day, None)
    found = await ledger.find_document(late.reference)
    assert found is not None and found.erp_document_id == str(draft)


async def test_a_credit_note_settles_the_open_invoice_it_credits_and_a_payment_the_rest(
    ledger: TrytonLedger, customer_id: str
) -> None:
    invoice = document(customer_id, [line("Pro plan", "100.00")])
    await ledger.post_document(invoice)
    credit = document(customer_id, [line("Goodwill", "30.00")], kind="credit_note")
    credit = credit.model_copy(update={"applies_to": invoice.reference})

    await ledger.post_document(credit)
    await ledger.post_document(credit)  # a retry applies nothing twice

    assert (await invoice_row(ledger, invoice.reference))["state"] == "posted"
    out = await ledger.post_payment(payment(invoice, "70.00"))
    assert out.applied_document_state == "paid"
    # Billing took the credit off the invoice: in the ERP both are settled, nothing aged.
    assert (await invoice_row(ledger, credit.reference))["state"] == "paid"
    owed = await ledger.open_receivable_page(None, 10_000)
    assert customer_id not in {r.customer_id for r in owed.receivables}


async def test_a_voided_invoice_and_its_reversal_settle_each_other(
    ledger: TrytonLedger, customer_id: str
) -> None:
    invoice = document(customer_id, [line("Pro plan", "45.00")])
    reversal = document(customer_id, [line("Pro plan", "45.00")], kind="credit_note",
                        reference=f"{invoice.reference}/void")  # fmt: skip
    reversal = reversal.model_copy(update={"applies_to": invoice.reference})
    await ledger.post_document(invoice)

    await ledger.post_document(reversal)

    assert (await invoice_row(ledger, invoice.reference))["state"] == "paid"
    assert (await invoice_row(ledger, reversal.reference))["state"] == "paid"


async def test_a_credit_larger_than_what_is_open_stays_open_as_the_customers_credit(
    ledger: TrytonLedger, customer_id: str
) -> None:
    invoice = document(customer_id, [line("Pro plan", "40.00")])
    await ledger.post_document(invoice)
    await ledger.post_payment(payment(invoice, "40.00"))
    credit = document(customer_id, [line("Goodwill", "10.00")], kind="credit_note")

    await ledger.post_document(credit.model_copy(update={"applies_to": invoice.reference}))

    assert (await invoice_row(ledger, credit.reference))["state"] == "posted"
    owed = await ledger.open_receivable_page(None, 10_000)
    assert [r.amount for r in owed.receivables if r.customer_id == customer_id] == [
        Money.of("-10.00", "USD")
    ]
