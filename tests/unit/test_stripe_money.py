"""StripeBilling's reading of money: tax per rate, product ids, invoice payments and their
settlement, refunds and what they give back, open receivables, the catalogue.

Unit tests over httpx.MockTransport, because the local billing sandbox does not answer these
endpoints yet (tax rates, invoice payments, payment intents, charges, refunds). The answers
below are Stripe's shapes at the pinned API version, field for field as the official SDK's
models (stripe 16.x: InvoicePayment, Refund, Charge, BalanceTransaction, TaxRate, the
invoice line's `taxes` and `pricing.price_details`, the credit note's `refunds`) declare them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from adapters.billing import StripeBilling
from adapters.billing.stripe import STRIPE_API_VERSION, credit_note_from_stripe
from adapters.errors import AdapterError, NotFoundError
from canonical import Money

CREATED = 1_790_000_000

Answer = dict[str, Any] | tuple[int, dict[str, Any]]


def stripe_list(data: list[dict[str, Any]], url: str, has_more: bool = False) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def tax(rate: str, amount: int, taxable: int, behavior: str) -> dict[str, Any]:
    return {
        "amount": amount,
        "tax_behavior": behavior,
        "tax_rate_details": {"tax_rate": rate},
        "taxability_reason": "standard_rated",
        "taxable_amount": taxable,
        "type": "tax_rate_details",
    }


def tax_rate(rate_id: str, name: str, percentage: float, jurisdiction: str, inclusive: bool,
             country: str) -> dict[str, Any]:  # fmt: skip
    return {
        "id": rate_id, "object": "tax_rate", "active": True, "country": country,
        "created": CREATED, "description": None, "display_name": name,
        "effective_percentage": percentage, "inclusive": inclusive,
        "jurisdiction": jurisdiction, "jurisdiction_level": None, "livemode": False,
        "metadata": {}, "percentage": percentage, "rate_type": "percentage", "state": None,
        "tax_type": "vat",
    }  # fmt: skip


TAX_RATES = {
    "txr_eu_vat": tax_rate("txr_eu_vat", "VAT", 20.0, "EU", False, "FR"),
    "txr_uk_vat": tax_rate("txr_uk_vat", "VAT", 20.0, "GB", True, "GB"),
    "txr_ny": tax_rate("txr_ny", "Sales tax", 8.875, "US - NY", False, "US"),
}


def line(line_id: str, amount: int, product: str, price: str, taxes: list[dict[str, Any]],
         quantity: int = 1) -> dict[str, Any]:  # fmt: skip
    return {
        "id": line_id, "object": "line_item", "amount": amount, "currency": "eur",
        "description": f"{quantity} x {product}", "discount_amounts": [], "discountable": True,
        "discounts": [], "invoice": "in_1Taxed", "livemode": False, "metadata": {},
        "parent": {
            "type": "subscription_item_details",
            "subscription_item_details": {"subscription": "sub_1", "subscription_item": "si_1",
                                          "proration": False, "invoice_item": None},
        },
        "period": {"start": CREATED, "end": CREATED + 30 * 86400},
        "pretax_credit_amounts": [],
        "pricing": {
            "type": "price_details",
            "price_details": {"price": price, "product": product},
            "unit_amount_decimal": str(amount // quantity),
        },
        "quantity": quantity,
        "taxes": taxes,
    }  # fmt: skip


def invoice(
    invoice_id: str = "in_1Taxed",
    *,
    currency: str = "eur",
    lines: list[dict[str, Any]] | None = None,
    total_taxes: list[dict[str, Any]] | None = None,
    subtotal: int = 22000,
    total: int = 24000,
    paid: int = 10000,
    remaining: int = 14000,
    status: str = "open",
    customer: str = "cus_1Eur",
) -> dict[str, Any]:
    lines = lines if lines is not None else [
        # Platform: 100.00 net, VAT 20 % on top.
        line("il_1", 10000, "prod_lb_platform", "price_platform",
             [tax("txr_eu_vat", 2000, 10000, "exclusive")]),
        # Seats: 120.00 with UK VAT 20 % inside (100.00 net).
        line("il_2", 12000, "prod_lb_seats", "price_seats",
             [tax("txr_uk_vat", 2000, 10000, "inclusive")], quantity=2),
    ]  # fmt: skip
    if total_taxes is None:
        total_taxes = [tax("txr_eu_vat", 2000, 10000, "exclusive"),
                       tax("txr_uk_vat", 2000, 10000, "inclusive")]  # fmt: skip
    return {
        "id": invoice_id, "object": "invoice", "amount_due": total, "amount_paid": paid,
        "amount_remaining": remaining, "billing_reason": "subscription_cycle",
        "created": CREATED, "currency": currency, "customer": customer,
        "lines": stripe_list(lines, f"/v1/invoices/{invoice_id}/lines"),
        "number": "EUR-0001", "parent": {
            "type": "subscription_details",
            "subscription_details": {"subscription": "sub_1", "metadata": {}},
        },
        "status": status,
        "status_transitions": {"finalized_at": CREATED, "paid_at": None, "voided_at": None,
                               "marked_uncollectible_at": None},
        "subtotal": subtotal, "total": total, "total_taxes": total_taxes,
    }  # fmt: skip


class FakeStripe:
    """Answers by method and path; records every request (path and decoded query)."""

    def __init__(self, routes: dict[str, Callable[[dict[str, str]], Answer] | Answer]) -> None:
        self.routes = routes
        self.requests: list[tuple[str, dict[str, str]]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        query = dict(parse_qsl(request.url.query.decode()))
        key = f"{request.method} {request.url.path}"
        self.requests.append((key, query))
        assert request.headers["Stripe-Version"] == STRIPE_API_VERSION
        route = self.routes.get(key)
        if route is None:
            return httpx.Response(404, json={"error": {
                "type": "invalid_request_error", "code": "resource_missing",
                "message": f"No such path: '{request.url.path}'"}})  # fmt: skip
        answer = route(query) if callable(route) else route
        status, body = answer if isinstance(answer, tuple) else (200, answer)
        return httpx.Response(status, content=json.dumps(body).encode(),
                              headers={"Content-Type": "application/json"})  # fmt: skip

    def count(self, key: str) -> int:
        return Counter(k for k, _ in self.requests)[key]


def billing_over(fake: FakeStripe) -> StripeBilling:
    # A URL of its own per test: the tax rate cache is per billing URL and process.
    url = f"https://stripe-{id(fake)}.test"
    return StripeBilling(url, "sk_test_x", transport=httpx.MockTransport(fake))


def rate_routes() -> dict[str, Any]:
    return {f"GET /v1/tax_rates/{rid}": rate for rid, rate in TAX_RATES.items()}


# --- tax, products, amounts -----------------------------------------------------------


async def test_invoice_carries_billings_tax_per_rate_on_lines_and_document() -> None:
    fake = FakeStripe({"GET /v1/invoices/in_1Taxed": invoice(), **rate_routes()})

    async with billing_over(fake) as billing:
        document = await billing.get_invoice("in_1Taxed")

    platform, seats = document.lines
    assert (platform.product_id, platform.price_id) == ("prod_lb_platform", "price_platform")
    assert (seats.product_id, seats.price_id) == ("prod_lb_seats", "price_seats")
    (vat,) = platform.tax_lines
    assert (vat.rate_id, vat.display_name, vat.jurisdiction) == ("txr_eu_vat", "VAT", "EU")
    assert (vat.percentage, vat.inclusive) == (Decimal("20"), False)
    assert (vat.taxable_amount, vat.amount) == (Money.of("100", "EUR"), Money.of("20", "EUR"))
    assert seats.tax_lines[0].inclusive is True
    assert seats.net_amount() == Money.of("100.00", "EUR")  # 120.00 with 20.00 VAT inside
    assert [t.rate_id for t in document.tax_lines] == ["txr_eu_vat", "txr_uk_vat"]
    assert document.tax == Money.of("40.00", "EUR")  # inclusive and exclusive
    assert document.total == Money.of("240.00", "EUR")
    assert document.amount_paid == Money.of("100.00", "EUR")
    assert document.amount_remaining == Money.of("140.00", "EUR")


async def test_a_tax_rate_is_read_once_per_process() -> None:
    fake = FakeStripe({"GET /v1/invoices/in_1Taxed": invoice(), **rate_routes()})

    async with billing_over(fake) as billing:
        await billing.get_invoice("in_1Taxed")
        await billing.get_invoice("in_1Taxed")

    assert fake.count("GET /v1/tax_rates/txr_eu_vat") == 1
    assert fake.count("GET /v1/tax_rates/txr_uk_vat") == 1
    assert fake.count("GET /v1/invoices/in_1Taxed") == 2


async def test_a_fractional_percentage_is_exact() -> None:
    ny = [line("il_1", 10000, "prod_lb_platform", "price_platform",
               [tax("txr_ny", 888, 10000, "exclusive")])]  # fmt: skip
    data = invoice(currency="usd", lines=ny, total_taxes=[tax("txr_ny", 888, 10000, "exclusive")],
                   subtotal=10000, total=10888)  # fmt: skip
    fake = FakeStripe({"GET /v1/invoices/in_1Taxed": data, **rate_routes()})

    async with billing_over(fake) as billing:
        document = await billing.get_invoice("in_1Taxed")

    assert document.tax_lines[0].percentage == Decimal("8.875")
    assert document.tax_lines[0].amount == Money.of("8.88", "USD")


async def test_a_zero_decimal_currency_reads_whole_units() -> None:
    yen = [line("il_1", 1200, "prod_lb_platform", "price_jpy",
                [tax("txr_eu_vat", 240, 1200, "exclusive")])]  # fmt: skip
    data = invoice(currency="jpy", lines=yen, total_taxes=[tax("txr_eu_vat", 240, 1200,
                   "exclusive")], subtotal=1200, total=1440, paid=1440, remaining=0)  # fmt: skip
    fake = FakeStripe({"GET /v1/invoices/in_1Taxed": data, **rate_routes()})

    async with billing_over(fake) as billing:
        document = await billing.get_invoice("in_1Taxed")

    assert document.total == Money.of("1440", "JPY")
    assert document.tax == Money.of("240", "JPY")
    assert document.lines[0].tax_lines[0].taxable_amount == Money.of("1200", "JPY")


async def test_a_tax_naming_a_rate_billing_does_not_know_is_not_guessed() -> None:
    fake = FakeStripe({"GET /v1/invoices/in_1Taxed": invoice(), **rate_routes()})
    del fake.routes["GET /v1/tax_rates/txr_uk_vat"]

    async with billing_over(fake) as billing:
        with pytest.raises(NotFoundError):
            await billing.get_invoice("in_1Taxed")


async def test_credit_note_lines_take_the_product_of_the_invoice_line_they_credit() -> None:
    note = {
        "id": "cn_1", "object": "credit_note", "amount": 2400, "created": CREATED,
        "currency": "eur", "customer": "cus_1Eur", "effective_at": CREATED,
        "invoice": "in_1Taxed", "number": "EUR-0001-CN-01", "reason": "order_change",
        "refunds": [], "status": "issued", "subtotal": 2000, "total": 2400,
        "total_taxes": [tax("txr_eu_vat", 400, 2000, "exclusive")], "voided_at": None,
        "lines": stripe_list([
            {"id": "cnli_1", "object": "credit_note_line_item", "amount": 2000,
             "description": "Platform", "invoice_line_item": "il_1", "quantity": 1,
             "taxes": [tax("txr_eu_vat", 400, 2000, "exclusive")], "type": "invoice_line_item",
             "unit_amount": 2000},
            {"id": "cnli_2", "object": "credit_note_line_item", "amount": 0,
             "description": "Goodwill", "invoice_line_item": None, "quantity": 1,
             "taxes": [], "type": "custom_line_item", "unit_amount": 0},
        ], "/v1/credit_notes/cn_1/lines"),
    }  # fmt: skip
    fake = FakeStripe({"GET /v1/credit_notes/cn_1": note,
                       "GET /v1/invoices/in_1Taxed": invoice(), **rate_routes()})  # fmt: skip

    async with billing_over(fake) as billing:
        document = await billing.get_credit_note("cn_1")

    credited, custom = document.lines
    assert (credited.product_id, credited.price_id) == ("prod_lb_platform", "price_platform")
    assert credited.tax_lines[0].amount == Money.of("4", "EUR")
    assert (custom.product_id, custom.price_id) == (None, None)
    assert document.tax == Money.of("4.00", "EUR")
    assert document.subscription_id == "sub_1"


def test_a_credit_note_carries_the_refunds_it_names_and_what_it_gave_back_out_of_band() -> None:
    note = {
        "id": "cn_2", "object": "credit_note", "created": CREATED, "currency": "eur",
        "customer": "cus_1Eur", "invoice": "in_1Taxed", "status": "issued", "subtotal": 3000,
        "total": 3000, "total_taxes": [], "lines": stripe_list([], "/v1/credit_notes/cn_2/lines"),
        "out_of_band_amount": 1000,
        "refunds": [{"amount_refunded": 2000, "refund": "re_1Later", "type": "refund",
                     "payment_record_refund": None}],
    }  # fmt: skip
    document = credit_note_from_stripe(note, [])
    plain = credit_note_from_stripe({**note, "out_of_band_amount": None, "refunds": []}, [])

    assert [(r.refund_id, r.amount) for r in document.refunds] == [
        ("re_1Later", Money.of("20.00", "EUR"))]  # fmt: skip
    assert document.out_of_band_amount == Money.of("10.00", "EUR")
    assert (plain.refunds, plain.out_of_band_amount) == ([], None)


# --- invoice payments -----------------------------------------------------------------


def invoice_payment(payment_id: str, *, kind: str, amount: int, created: int,
                    status: str = "paid", currency: str = "eur",
                    invoice_id: str = "in_1Taxed") -> dict[str, Any]:  # fmt: skip
    refs = {"charge": None, "payment_intent": None, "payment_record": None}
    if kind == "payment_intent":
        refs["payment_intent"] = "pi_1Card"
    else:
        refs["payment_record"] = "pr_1Wire"
    return {
        "id": payment_id, "object": "invoice_payment",
        "amount_paid": amount if status == "paid" else None, "amount_requested": amount,
        "created": created, "currency": currency, "invoice": invoice_id, "is_default": False,
        "livemode": False, "payment": {"type": kind, **refs}, "status": status,
        "status_transitions": {"canceled_at": None,
                               "paid_at": created + 5 if status == "paid" else None},
    }  # fmt: skip


PAYMENT_INTENT = {
    "id": "pi_1Card", "object": "payment_intent", "amount": 10000, "currency": "eur",
    "customer": "cus_1Eur", "status": "succeeded",
    "latest_charge": {
        "id": "ch_1Card", "object": "charge", "amount": 10000, "currency": "eur",
        "customer": "cus_1Eur", "paid": True, "payment_intent": "pi_1Card",
        "payment_method_details": {"type": "card", "card": {"brand": "visa", "last4": "4242"}},
        "status": "succeeded",
        "balance_transaction": {
            "id": "txn_1Card", "object": "balance_transaction", "amount": 10850,
            "available_on": CREATED + 2 * 86400, "created": CREATED, "currency": "usd",
            "description": None, "exchange_rate": 1.085, "fee": 345, "fee_details": [],
            "net": 10505, "reporting_category": "charge", "source": "ch_1Card",
            "status": "pending", "type": "charge",
        },
    },
}  # fmt: skip


async def test_invoice_payments_are_read_oldest_first_across_pages_with_settlement() -> None:
    card = invoice_payment("inpay_1Card", kind="payment_intent", amount=10000, created=CREATED)
    wire = invoice_payment("inpay_2Wire", kind="payment_record", amount=5000, created=CREATED + 60)
    pending = invoice_payment("inpay_3Open", kind="payment_intent", amount=9000,
                              created=CREATED + 120, status="open")  # fmt: skip

    def payments(query: dict[str, str]) -> dict[str, Any]:
        assert query["invoice"] == "in_1Taxed"
        if "starting_after" not in query:  # Stripe lists newest first
            return stripe_list([pending, wire], "/v1/invoice_payments", has_more=True)
        assert query["starting_after"] == "inpay_2Wire"
        return stripe_list([card], "/v1/invoice_payments")

    fake = FakeStripe({
        "GET /v1/invoices/in_1Taxed": invoice(), **rate_routes(),
        "GET /v1/invoice_payments": payments,
        "GET /v1/payment_intents/pi_1Card": PAYMENT_INTENT,
    })  # fmt: skip

    async with billing_over(fake) as billing:
        found = await billing.invoice_payments("in_1Taxed")

    assert [p.payment_id for p in found] == ["inpay_1Card", "inpay_2Wire", "inpay_3Open"]
    by_card, by_wire, open_one = found
    assert {p.customer_id for p in found} == {"cus_1Eur"}
    assert (by_card.method, by_card.status, by_card.amount) == ("card", "paid",
                                                               Money.of("100", "EUR"))  # fmt: skip
    assert (by_card.payment_intent_id, by_card.charge_id) == ("pi_1Card", "ch_1Card")
    assert by_card.paid_at is not None and int(by_card.paid_at.timestamp()) == CREATED + 5
    settlement = by_card.settlement
    assert settlement is not None
    assert (settlement.amount, settlement.fee, settlement.net) == (
        Money.of("108.50", "USD"),
        Money.of("3.45", "USD"),
        Money.of("105.05", "USD"),
    )
    assert settlement.exchange_rate == Decimal("1.085")
    assert (by_wire.method, by_wire.settlement, by_wire.charge_id) == ("out_of_band", None, None)
    assert (open_one.status, open_one.amount, open_one.paid_at) == (
        "open",
        Money.of("90", "EUR"),
        None,
    )
    intent_reads = [q for k, q in fake.requests if k == "GET /v1/payment_intents/pi_1Card"]
    assert intent_reads == [{"expand[0]": "latest_charge.balance_transaction"}]


async def test_payments_of_an_invoice_billing_does_not_know_are_not_found() -> None:
    fake = FakeStripe({})

    async with billing_over(fake) as billing:
        with pytest.raises(NotFoundError):
            await billing.invoice_payments("in_1Unknown")
        with pytest.raises(NotFoundError):
            await billing.invoice_payments("inpay_1NotAnInvoice")

    assert [k for k, _ in fake.requests] == ["GET /v1/invoices/in_1Unknown"]


async def test_payment_page_reads_paid_payments_of_the_period_oldest_first() -> None:
    from datetime import UTC, datetime

    anchor = invoice_payment("inpay_0Before", kind="payment_intent", amount=1, created=CREATED - 9)
    first = invoice_payment("inpay_1Card", kind="payment_intent", amount=10000, created=CREATED)
    second = invoice_payment("inpay_2Wire", kind="payment_record", amount=5000,
                             created=CREATED + 60)  # fmt: skip

    def payments(query: dict[str, str]) -> dict[str, Any]:
        assert query["status"] == "paid"
        if query.get("limit") == "1":
            assert query["created[lt]"] == str(CREATED)
            return stripe_list([anchor], "/v1/invoice_payments", has_more=True)
        assert query["ending_before"] == "inpay_0Before"
        assert (query["created[gte]"], query["created[lt]"]) == (str(CREATED), str(CREATED + 3600))
        return stripe_list([second, first], "/v1/invoice_payments")

    fake = FakeStripe({
        "GET /v1/invoices/in_1Taxed": invoice(), **rate_routes(),
        "GET /v1/invoice_payments": payments,
        "GET /v1/payment_intents/pi_1Card": PAYMENT_INTENT,
    })  # fmt: skip
    since = datetime.fromtimestamp(CREATED, UTC)
    until = datetime.fromtimestamp(CREATED + 3600, UTC)

    async with billing_over(fake) as billing:
        page = await billing.payment_page(since, until, None, 10)

    assert [p.payment_id for p in page.payments] == ["inpay_1Card", "inpay_2Wire"]
    assert page.next_cursor is None
    assert fake.count("GET /v1/invoices/in_1Taxed") == 1  # one read per invoice, not per payment


# --- refunds --------------------------------------------------------------------------


def refund(refund_id: str, amount: int, created: int, *, customer: str | None = "cus_1Eur",
           status: str = "succeeded") -> dict[str, Any]:  # fmt: skip
    return {
        "id": refund_id, "object": "refund", "amount": amount, "balance_transaction": None,
        "charge": "ch_1Card", "created": created, "currency": "eur", "customer": customer,
        "metadata": {}, "payment_intent": "pi_1Card", "reason": "requested_by_customer",
        "status": status,
    }  # fmt: skip


def credit_notes_of(refund_ids: list[str]) -> dict[str, Any]:
    note = {"id": "cn_1Refund", "object": "credit_note", "invoice": "in_1Taxed",
            "refunds": [{"amount_refunded": 1000, "refund": rid, "type": "refund",
                         "payment_record_refund": None} for rid in refund_ids]}  # fmt: skip
    other = {"id": "cn_0Other", "object": "credit_note", "invoice": "in_1Taxed", "refunds": []}
    return stripe_list([note, other], "/v1/credit_notes")


def paid_by_intent(query: dict[str, str]) -> dict[str, Any]:
    assert query["payment[type]"] == "payment_intent"
    assert query["payment[payment_intent]"] == "pi_1Card"
    card = invoice_payment("inpay_1Card", kind="payment_intent", amount=10000, created=CREATED)
    return stripe_list([card], "/v1/invoice_payments")


async def test_a_refund_knows_the_payment_it_gives_back_and_the_credit_note_that_made_it() -> None:
    def notes(query: dict[str, str]) -> dict[str, Any]:
        assert query["invoice"] == "in_1Taxed"
        return credit_notes_of(["re_1ByNote"])

    fake = FakeStripe({
        "GET /v1/refunds/re_1ByNote": refund("re_1ByNote", 1000, CREATED + 100),
        "GET /v1/invoice_payments": paid_by_intent,
        "GET /v1/credit_notes": notes,
    })  # fmt: skip

    async with billing_over(fake) as billing:
        found = await billing.get_refund("re_1ByNote")

    assert (found.refund_id, found.charge_id, found.payment_intent_id) == (
        "re_1ByNote",
        "ch_1Card",
        "pi_1Card",
    )
    assert (found.payment_id, found.invoice_id) == ("inpay_1Card", "in_1Taxed")
    assert (found.credit_note_id, found.customer_id) == ("cn_1Refund", "cus_1Eur")
    assert (found.status, found.amount) == ("succeeded", Money.of("10.00", "EUR"))


async def test_charge_refunds_are_oldest_first_and_share_their_lookups() -> None:
    def refunds(query: dict[str, str]) -> dict[str, Any]:
        assert query["charge"] == "ch_1Card"
        return stripe_list([refund("re_2Plain", 500, CREATED + 200, customer=None),
                            refund("re_1ByNote", 1000, CREATED + 100, customer=None)],
                           "/v1/refunds")  # fmt: skip

    fake = FakeStripe({
        "GET /v1/refunds": refunds,
        "GET /v1/invoice_payments": paid_by_intent,
        "GET /v1/credit_notes": lambda q: credit_notes_of(["re_1ByNote"]),
        "GET /v1/charges/ch_1Card": PAYMENT_INTENT["latest_charge"],
    })  # fmt: skip

    async with billing_over(fake) as billing:
        found = await billing.charge_refunds("ch_1Card")

    assert [r.refund_id for r in found] == ["re_1ByNote", "re_2Plain"]
    assert [r.credit_note_id for r in found] == ["cn_1Refund", None]
    assert {r.payment_id for r in found} == {"inpay_1Card"}
    assert {r.customer_id for r in found} == {"cus_1Eur"}  # from the charge: refunds name none
    for shared in ("GET /v1/invoice_payments", "GET /v1/credit_notes", "GET /v1/charges/ch_1Card"):
        assert fake.count(shared) == 1, shared


async def test_a_refund_of_a_payment_intent_that_paid_two_invoices_leaves_the_payment_open() -> (
    None
):
    def two_payments(query: dict[str, str]) -> dict[str, Any]:
        return stripe_list([
            invoice_payment("inpay_2", kind="payment_intent", amount=1, created=CREATED + 1,
                            invoice_id="in_2"),
            invoice_payment("inpay_1", kind="payment_intent", amount=1, created=CREATED),
        ], "/v1/invoice_payments")  # fmt: skip

    fake = FakeStripe({"GET /v1/refunds/re_1": refund("re_1", 1, CREATED),
                       "GET /v1/invoice_payments": two_payments})  # fmt: skip

    async with billing_over(fake) as billing:
        found = await billing.get_refund("re_1")

    assert (found.payment_id, found.invoice_id, found.credit_note_id) == (None, None, None)


async def test_a_refund_of_a_charge_without_a_payment_intent_finds_its_payment_by_charge() -> None:
    """An invoice paid by a bare charge (`payment[type]=charge`, the older shape): its refunds
    name no payment intent and Stripe's list cannot filter by charge, so the customer's paid
    invoices' payments are read, once for all the refunds of the charge."""

    def bare(refund_id: str, amount: int, created: int) -> dict[str, Any]:
        return {**refund(refund_id, amount, created), "charge": "ch_1Bare", "payment_intent": None}

    def invoices(query: dict[str, str]) -> dict[str, Any]:
        assert query["customer"] == "cus_1Eur"
        return stripe_list([{"id": "in_0Draft", "object": "invoice", "amount_paid": 0},
                            {"id": "in_1Taxed", "object": "invoice", "amount_paid": 10000}],
                           "/v1/invoices")  # fmt: skip

    def paid(query: dict[str, str]) -> dict[str, Any]:
        assert (query["invoice"], query["status"]) == ("in_1Taxed", "paid")
        by_charge = invoice_payment("inpay_1Bare", kind="charge", amount=6000, created=CREATED)
        by_charge["payment"] = {"type": "charge", "charge": "ch_1Bare", "payment_intent": None,
                                "payment_record": None}  # fmt: skip
        by_card = invoice_payment("inpay_2Card", kind="payment_intent", amount=4000,
                                  created=CREATED + 1)  # fmt: skip
        return stripe_list([by_card, by_charge], "/v1/invoice_payments")

    fake = FakeStripe({
        "GET /v1/refunds": lambda q: stripe_list(
            [bare("re_2Plain", 500, CREATED + 200), bare("re_1ByNote", 1000, CREATED + 100)],
            "/v1/refunds",
        ),
        "GET /v1/invoices": invoices,
        "GET /v1/invoice_payments": paid,
        "GET /v1/credit_notes": lambda q: credit_notes_of(["re_1ByNote"]),
    })  # fmt: skip

    async with billing_over(fake) as billing:
        found = await billing.charge_refunds("ch_1Bare")

    assert [(r.refund_id, r.payment_id, r.invoice_id, r.credit_note_id) for r in found] == [
        ("re_1ByNote", "inpay_1Bare", "in_1Taxed", "cn_1Refund"),
        ("re_2Plain", "inpay_1Bare", "in_1Taxed", None),
    ]
    assert {(r.charge_id, r.payment_intent_id) for r in found} == {("ch_1Bare", None)}
    assert (fake.count("GET /v1/invoices"), fake.count("GET /v1/invoice_payments")) == (1, 1)


async def test_refund_page_gives_the_succeeded_refunds_of_the_period() -> None:
    from datetime import UTC, datetime

    def refunds(query: dict[str, str]) -> dict[str, Any]:
        if query.get("limit") == "1":
            return stripe_list([], "/v1/refunds")  # nothing before: the period is read back
        return stripe_list([refund("re_2Failed", 500, CREATED + 20, status="failed"),
                            refund("re_1ByNote", 1000, CREATED + 10)], "/v1/refunds")  # fmt: skip

    fake = FakeStripe({
        "GET /v1/refunds": refunds,
        "GET /v1/invoice_payments": paid_by_intent,
        "GET /v1/credit_notes": lambda q: credit_notes_of(["re_1ByNote"]),
    })  # fmt: skip

    async with billing_over(fake) as billing:
        page = await billing.refund_page(
            datetime.fromtimestamp(CREATED, UTC),
            datetime.fromtimestamp(CREATED + 60, UTC),
            None,
            10,
        )

    assert [r.refund_id for r in page.refunds] == ["re_1ByNote"]
    assert page.next_cursor is None


async def test_a_refund_whose_charge_has_no_customer_is_refused_as_unmappable() -> None:
    guest_charge = {**PAYMENT_INTENT["latest_charge"], "customer": None}
    fake = FakeStripe({
        "GET /v1/refunds/re_1": refund("re_1", 1000, CREATED, customer=None),
        "GET /v1/invoice_payments": paid_by_intent,
        "GET /v1/credit_notes": lambda q: credit_notes_of([]),
        "GET /v1/charges/ch_1Card": guest_charge,
    })  # fmt: skip

    async with billing_over(fake) as billing:
        with pytest.raises(AdapterError, match="has no customer"):
            await billing.get_refund("re_1")


# --- receivables and catalogue --------------------------------------------------------


def customer(customer_id: str, balance: int, currency: str | None) -> dict[str, Any]:
    return {"id": customer_id, "object": "customer", "balance": balance, "currency": currency,
            "created": CREATED, "metadata": {}}  # fmt: skip


async def test_open_receivables_add_open_and_uncollectible_invoices_and_the_balance() -> None:
    owed = {
        ("cus_1Eur", "open"): [invoice("in_1", remaining=14000), invoice("in_2", remaining=500)],
        ("cus_1Eur", "uncollectible"): [invoice("in_3", remaining=1000, status="uncollectible")],
        ("cus_2Usd", "open"): [], ("cus_2Usd", "uncollectible"): [],
        ("cus_3Jpy", "open"): [invoice("in_4", currency="jpy", remaining=1440,
                                       customer="cus_3Jpy")],
        ("cus_3Jpy", "uncollectible"): [],
    }  # fmt: skip

    def customers(query: dict[str, str]) -> dict[str, Any]:
        assert query["limit"] == "3"
        assert query.get("starting_after") == "cus_0Before"
        return stripe_list([customer("cus_1Eur", -2500, "eur"), customer("cus_2Usd", 0, "usd"),
                            customer("cus_3Jpy", 0, "jpy")], "/v1/customers",
                           has_more=True)  # fmt: skip

    def invoices(query: dict[str, str]) -> dict[str, Any]:
        return stripe_list(owed[(query["customer"], query["status"])], "/v1/invoices")

    fake = FakeStripe({"GET /v1/customers": customers, "GET /v1/invoices": invoices})

    async with billing_over(fake) as billing:
        page = await billing.open_receivable_page("cus_0Before", 3)

    figures = [(r.customer_id, r.amount) for r in page.receivables]
    assert figures == [
        ("cus_1Eur", Money.of("130.00", "EUR")),  # 140 + 5 + 10 open, less a 25 credit
        ("cus_3Jpy", Money.of("1440", "JPY")),
    ]
    assert page.next_cursor == "cus_3Jpy"


async def test_catalog_lists_products_prices_tax_rates_and_currencies() -> None:
    products = [
        {"id": "prod_lb_platform", "object": "product", "name": "Platform", "active": True},
        {"id": "prod_old", "object": "product", "name": "Legacy", "active": False},
    ]
    prices = [{"id": "price_platform_usd", "object": "price", "product": "prod_lb_platform",
               "currency": "usd", "nickname": "Monthly", "active": True},
              {"id": "price_platform_jpy", "object": "price", "product": "prod_lb_platform",
               "currency": "jpy", "nickname": None, "active": True}]  # fmt: skip
    fake = FakeStripe({
        "GET /v1/products": stripe_list(products, "/v1/products"),
        "GET /v1/prices": stripe_list(prices, "/v1/prices"),
        "GET /v1/tax_rates": stripe_list([TAX_RATES["txr_ny"]], "/v1/tax_rates"),
    })  # fmt: skip

    async with billing_over(fake) as billing:
        entries = await billing.catalog()

    seen = {(e.kind, e.key): e for e in entries}
    assert set(seen) == {
        ("product", "prod_lb_platform"), ("product", "prod_old"),
        ("price", "price_platform_usd"), ("price", "price_platform_jpy"),
        ("tax_rate", "txr_ny"), ("currency", "JPY"), ("currency", "USD"),
    }  # fmt: skip
    assert seen[("product", "prod_old")].active is False
    assert seen[("price", "price_platform_jpy")].parent == "prod_lb_platform"
    assert seen[("price", "price_platform_jpy")].name == "Platform"
    assert seen[("tax_rate", "txr_ny")].name == "Sales tax US - NY 8.875% (excl.)"
