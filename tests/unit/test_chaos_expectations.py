"""The chaos run's own rules of what the ERP must hold, on hand-made billing documents."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from canonical import BalanceTransaction, BillingDocument, BusinessEvent, Money
from canonical.reconciliation import LedgerDocument, LedgerPayment, Receivable
from starters.local.chaos import Checker
from starters.local.expectations import (
    BilledPayment,
    BilledRefund,
    ExpectedDocument,
    ExpectedPayment,
    OwedInvoice,
    expected_for_balance_credits,
    expected_for_document,
    expected_for_payments,
    expected_for_refund,
    expected_receivables,
    expected_tax,
    must_reach_a_process,
    waits_on_finance,
)

NOW = datetime(2026, 3, 1, tzinfo=UTC)


def document(
    total: str,
    *,
    kind: str = "invoice",
    status: str = "open",
    finalized: bool = True,
    currency: str = "USD",
) -> BillingDocument:
    amount = Money.of(total, currency)
    prefix = "in" if kind == "invoice" else "cn"
    return BillingDocument.model_validate(
        {
            "document_id": f"{prefix}_1",
            "kind": kind,
            "status": status,
            "customer_id": "cus_1",
            "currency": currency,
            "lines": [],
            "subtotal": amount,
            "tax": Money.of("0", currency),
            "total": amount,
            "created_at": NOW,
            "finalized_at": NOW if finalized else None,
        }
    )


def credit(transaction_id: str, amount: str, **fields: Any) -> BalanceTransaction:
    return BalanceTransaction.model_validate(
        {
            "transaction_id": transaction_id,
            "customer_id": "cus_1",
            "amount": Money.of(amount, "USD"),
            "ending_balance": Money.of("0", "USD"),
            "created_at": NOW,
            "kind": "adjustment",
            **fields,
        }
    )


def usd(reference: str, kind: str, amount: str) -> ExpectedDocument:
    return ExpectedDocument(reference, kind, "USD", Decimal(amount))  # type: ignore[arg-type]


def test_a_finalized_invoice_calls_for_one_erp_invoice_of_its_total() -> None:
    assert expected_for_document(document("90.00")) == [usd("in_1", "invoice", "90.00")]
    paid = document("90.00", status="paid")
    assert expected_for_document(paid) == [usd("in_1", "invoice", "90.00")]


def test_a_negative_invoice_calls_for_an_erp_credit_note_of_its_absolute_value() -> None:
    assert expected_for_document(document("-30.00")) == [usd("in_1", "credit_note", "30.00")]


def test_a_voided_invoice_calls_for_its_reversal_besides() -> None:
    assert expected_for_document(document("90.00", status="void")) == [
        usd("in_1", "invoice", "90.00"),
        usd("in_1/void", "credit_note", "90.00"),
    ]
    assert expected_for_document(document("-30.00", status="void")) == [
        usd("in_1", "credit_note", "30.00"),
        usd("in_1/void", "invoice", "30.00"),
    ]


def test_a_credit_note_calls_for_an_erp_credit_note_and_once_voided_its_reversal() -> None:
    issued = document("20.00", kind="credit_note", status="issued", finalized=False)
    assert expected_for_document(issued) == [usd("cn_1", "credit_note", "20.00")]
    voided = document("20.00", kind="credit_note", status="void", finalized=False)
    assert expected_for_document(voided) == [
        usd("cn_1", "credit_note", "20.00"),
        usd("cn_1/void", "invoice", "20.00"),
    ]


@pytest.mark.parametrize(
    "draft_or_zero",
    [document("90.00", status="draft", finalized=False), document("0.00"),
     document("0.00", status="void")],
    ids=["draft", "zero total", "voided zero total"],
)  # fmt: skip
def test_drafts_and_zero_totals_call_for_nothing(draft_or_zero: BillingDocument) -> None:
    assert expected_for_document(draft_or_zero) == []


def test_a_balance_credit_calls_for_an_erp_credit_note_unless_taken_back() -> None:
    adjustments = [
        credit("txn_kept", "-25.00", metadata={"case_id": "7"}),
        credit("txn_taken_back", "-40.00"),
        credit("txn_reversal", "40.00", metadata={"reverses": "txn_taken_back"}),
        credit("txn_debit", "15.00"),  # billing charging the balance credits nobody
        credit("txn_applied", "-90.00", kind="applied_to_invoice"),  # the balance drawn on
    ]
    assert expected_for_balance_credits(adjustments) == [usd("txn_kept", "credit_note", "25.00")]


def line(product_id: str | None, amount: str = "90.00", currency: str = "USD") -> dict[str, Any]:
    money = Money.of(amount, currency)
    return {"line_id": "il_1", "description": "Plan", "quantity": 1, "unit_amount": money,
            "amount": money, "product_id": product_id}  # fmt: skip


def with_lines(billing_document: BillingDocument, *lines: dict[str, Any]) -> BillingDocument:
    return billing_document.model_validate({**billing_document.model_dump(), "lines": lines})


def test_a_document_the_ledger_cannot_book_yet_waits_on_finance() -> None:
    mapped = ["prod_lb_platform"]
    sold = with_lines(document("90.00"), line("prod_lb_platform"))
    assert not waits_on_finance(sold, ["USD"], mapped)
    euros = with_lines(document("75.00", currency="EUR"), line("prod_lb_platform", "75.00", "EUR"))
    assert waits_on_finance(euros, ["USD"], mapped)
    assert waits_on_finance(with_lines(document("90.00"), line("prod_chaos")), ["USD"], mapped)
    assert waits_on_finance(with_lines(document("90.00"), line(None)), ["usd"], mapped)
    # A support credit is booked on finance's own entry for support credits.
    support_credit = with_lines(
        document("20.00", kind="credit_note", status="issued", finalized=False), line(None, "20.00")
    ).model_copy(update={"metadata": {"case_id": "7"}})
    assert not waits_on_finance(support_credit, ["USD"], mapped)


def test_a_paid_invoice_payment_calls_for_one_erp_payment_on_its_invoice() -> None:
    payments = [
        BilledPayment("inpay_1", "in_1", "cus_1", "paid", Money.of("40.00", "USD")),
        BilledPayment("inpay_2", "in_1", "cus_1", "open", Money.of("50.00", "USD")),
        BilledPayment("inpay_3", "in_2", "cus_1", "paid", Money.of("0", "JPY")),
    ]
    assert expected_for_payments(payments) == [
        ExpectedPayment("inpay_1", "payment", "cus_1", "USD", Decimal("40.00"), "in_1")
    ]


def test_a_refund_calls_for_its_credit_note_and_a_payment_out_applied_to_it() -> None:
    refund = BilledRefund("re_1", "cus_1", "succeeded", Money.of("1500", "JPY"))
    notes, money_out = expected_for_refund(refund)
    assert notes == [ExpectedDocument("re_1", "credit_note", "JPY", Decimal("1500"))]
    assert money_out == [
        ExpectedPayment("re_1/payout", "refund", "cus_1", "JPY", Decimal("1500"), "re_1")
    ]
    by_credit_note = BilledRefund("re_2", "cus_1", "succeeded", Money.of("5", "USD"), "cn_9")
    notes, money_out = expected_for_refund(by_credit_note)
    assert notes == [] and [p.applies_to for p in money_out] == ["cn_9"]
    pending = BilledRefund("re_3", "cus_1", "pending", Money.of("5", "USD"))
    assert expected_for_refund(pending) == ([], [])


def taxed(total: str, tax: str, *, kind: str = "invoice", status: str = "open",
          currency: str = "EUR", rate: str = "txr_vat",
          inclusive: bool = False) -> BillingDocument:  # fmt: skip
    base = document(total, kind=kind, status=status, finalized=kind == "invoice",
                    currency=currency)  # fmt: skip
    tax_line = {"rate_id": rate, "display_name": "VAT", "percentage": Decimal("20"),
                "inclusive": inclusive, "taxable_amount": Money.of(total, currency),
                "amount": Money.of(tax, currency)}  # fmt: skip
    net = Decimal(total) - Decimal(tax)
    sold = line("prod_lb_platform", str(net if not inclusive else Decimal(total)), currency)
    sold["tax_lines"] = [tax_line]
    return base.model_validate(
        {**base.model_dump(), "lines": [sold], "tax_lines": [tax_line],
         "tax": Money.of(tax, currency)}
    )  # fmt: skip


VAT = {"txr_vat": "VAT 20%"}


def test_tax_lands_on_the_mapped_erp_tax_with_the_sign_of_the_erp_document() -> None:
    assert expected_tax(taxed("120.00", "20.00"), VAT) == {
        "in_1": {("VAT 20%", "EUR"): Decimal("20.00")}
    }
    # A downgrade's negative invoice is an ERP credit note: its tax takes from what is owed.
    assert expected_tax(taxed("-60.00", "-10.00"), VAT) == {
        "in_1": {("VAT 20%", "EUR"): Decimal("-10.00")}
    }
    credit_note = taxed("12.00", "2.00", kind="credit_note", status="issued")
    assert expected_tax(credit_note, VAT) == {"cn_1": {("VAT 20%", "EUR"): Decimal("-2.00")}}
    assert expected_tax(taxed("120.00", "20.00", status="void"), VAT) == {
        "in_1": {("VAT 20%", "EUR"): Decimal("20.00")},
        "in_1/void": {("VAT 20%", "EUR"): Decimal("-20.00")},
    }
    unmapped = taxed("120.00", "20.00", rate="txr_other")
    assert expected_tax(unmapped, VAT) == {
        "in_1": {("unmapped tax rate txr_other", "EUR"): Decimal("20.00")}
    }
    assert expected_tax(document("90.00", status="draft", finalized=False), VAT) == {}


def test_a_customer_owes_what_remains_on_open_and_uncollectible_invoices_plus_its_balance() -> None:
    invoices = [
        OwedInvoice("cus_1", "open", Money.of("50.00", "USD")),
        OwedInvoice("cus_1", "uncollectible", Money.of("30.00", "USD")),
        OwedInvoice("cus_1", "paid", Money.of("0", "USD")),
        OwedInvoice("cus_1", "draft", Money.of("90.00", "USD")),
        OwedInvoice("cus_2", "open", Money.of("9000", "JPY")),
        OwedInvoice("cus_3", "open", Money.of("10.00", "EUR")),
    ]
    balances = {"cus_1": Money.of("-20.00", "USD"), "cus_3": Money.of("-10.00", "EUR"),
                "cus_4": Money.of("-5.00", "GBP")}  # fmt: skip
    assert expected_receivables(invoices, balances) == {
        ("cus_1", "USD"): Decimal("60.00"),
        ("cus_2", "JPY"): Decimal("9000"),
        ("cus_4", "GBP"): Decimal("-5.00"),
    }


def test_an_expected_document_books_a_positive_amount() -> None:
    with pytest.raises(ValueError, match="books nothing"):
        ExpectedDocument("in_1", "invoice", "USD", Decimal("-1"))


def test_events_about_accounts_documents_and_subscriptions_must_reach_a_process() -> None:
    def event(kind: str, customer_id: str | None = "cus_1") -> BusinessEvent:
        return BusinessEvent.model_validate(
            {
                "event_id": "evt_1",
                "source": "billing",
                "type": kind,
                "occurred_at": NOW,
                "correlation_id": "c1",
                "subject": {"customer_id": customer_id},
            }
        )

    assert must_reach_a_process(event("invoice.finalized"))
    assert must_reach_a_process(event("customer.updated"))
    assert must_reach_a_process(event("charge.refunded"))  # a refund reaches the ERP by it
    assert not must_reach_a_process(event("invoice.created"))  # a draft books nothing
    assert not must_reach_a_process(event("invoice.finalized", customer_id=None))


def test_the_checker_disagrees_with_a_posting_of_the_wrong_kind() -> None:
    """A downgrade's negative invoice posted as an ERP invoice (the sign lost) is caught."""
    run = SimpleNamespace(settings=None, client=None, billing=None, adapters=None)
    checker = Checker(run)  # type: ignore[arg-type]
    expected = {row.reference: row for row in expected_for_document(document("-30.00"))}
    wrong = LedgerDocument(erp_document_id="1", reference="in_1", kind="invoice", number="INV-1",
                           total=Money.of("30.00", "USD"), state="posted", customer_id="cus_1",
                           document_date=None)  # fmt: skip
    ok, _, _ = checker._one_erp_document_each(expected, [wrong])
    assert not ok
    assert checker.violations == ["in_1: ERP invoice 30.00 USD != billing credit_note 30.00 USD"]
    right = wrong.model_copy(update={"kind": "credit_note"})
    assert Checker(run)._one_erp_document_each(expected, [right])[0]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "billing_document",
    [document("90.00"), document("-30.00"), document("90.00", status="void"),
     document("20.00", kind="credit_note", status="void", finalized=False),
     document("90.00", status="draft", finalized=False), document("0.00")],
)  # fmt: skip
def test_the_run_and_the_posting_path_agree_on_what_billing_documents_call_for(
    billing_document: BillingDocument,
) -> None:
    """Two statements of one business rule: a difference is a defect in one of them."""
    from canonical.ledger import required_postings

    product = [(p.reference, p.kind, p.total.amount) for p in required_postings(billing_document)]
    run = [(e.reference, e.kind, e.amount) for e in expected_for_document(billing_document)]
    assert run == product


@pytest.mark.parametrize(
    "billing_document",
    [taxed("120.00", "20.00"), taxed("-60.00", "-10.00"), taxed("120.00", "20.00", status="void"),
     taxed("12.00", "2.00", kind="credit_note", status="issued"),
     taxed("120.00", "20.00", currency="GBP", inclusive=True)],
)  # fmt: skip
def test_the_run_and_reconciliation_agree_on_the_tax_billing_documents_call_for(
    billing_document: BillingDocument,
) -> None:
    """Two statements of one rule (tax per ERP tax, signed as the ERP document)."""
    from activities.reconciliation import billing_taxes
    from canonical.mapping import FinanceMapping, TaxAccount

    mapping = FinanceMapping(version=1, tax_rates={"txr_vat": TaxAccount(erp_tax="VAT 20%")})
    product = {(t.reference, t.tax, t.currency): t.amount
               for t in billing_taxes(billing_document, mapping)}  # fmt: skip
    run = {(reference, name, currency): amount
           for reference, taxes in expected_tax(billing_document, VAT).items()
           for (name, currency), amount in taxes.items()}  # fmt: skip
    assert run == product


# --- the judge of the books' money: checkers that cannot fail would prove nothing ----------


def money_checker(held: dict[str, str] | None = None, held_customers: set[str] | None = None,
                  tax_rates: dict[str, str] | None = None) -> Checker:  # fmt: skip
    catalog = SimpleNamespace(tax_rates=tax_rates or {"eu_vat_20": "txr_vat"})
    run = SimpleNamespace(settings=None, client=None, billing=None, adapters=None,
                          catalog=catalog)  # fmt: skip
    checker = Checker(run)  # type: ignore[arg-type]
    checker.held = dict(held or {})
    checker.held_customers = set(held_customers or ())
    return checker


def erp_payment(reference: str, move: int, amount: str = "40.00", applies_to: str = "in_1",
                kind: str = "payment") -> LedgerPayment:  # fmt: skip
    return LedgerPayment(erp_document_id=str(move), reference=reference, kind=kind,  # type: ignore[arg-type]
                         amount=Money.of(amount, "USD"), applies_to=applies_to,
                         customer_id="cus_1", payment_date=None, state="posted")  # fmt: skip


PAID = ExpectedPayment("inpay_1", "payment", "cus_1", "USD", Decimal("40.00"), "in_1")
REFUNDED = ExpectedPayment("re_1/payout", "refund", "cus_1", "USD", Decimal("15.00"), "re_1")


def test_the_checker_wants_each_payment_and_refund_in_the_erp_once() -> None:
    expected = {PAID.reference: PAID, REFUNDED.reference: REFUNDED}
    right = [erp_payment("inpay_1", 1), erp_payment("re_1/payout", 2, "15.00", "re_1", "refund")]
    ok, _, detail = money_checker()._money_posted_once(expected, right)
    assert ok and "2 in the ERP once" in detail

    checker = money_checker()
    twice = [*right, erp_payment("inpay_1", 3)]
    assert not checker._money_posted_once(expected, twice)[0]
    assert checker.duplicates == 1 and checker.violations == [
        "payment inpay_1: 2 in the ERP (1, 3)"
    ]

    checker = money_checker()
    elsewhere = [erp_payment("inpay_1", 1, applies_to="in_2"), right[1], erp_payment("inpay_9", 4)]
    ok, _, detail = checker._money_posted_once(expected, elsewhere)
    assert not ok and "1 missing or different, 1 ERP orphans" in detail
    assert "on in_2 != billing 40.00 USD on in_1" in checker.violations[0]


def test_the_checker_excuses_a_missing_payment_only_when_finance_holds_it() -> None:
    expected = {PAID.reference: PAID}
    assert money_checker(held={"inpay_1": "exc/1"})._money_posted_once(expected, [])[0]
    checker = money_checker()
    assert not checker._money_posted_once(expected, [])[0]
    assert checker.violations == ["payment inpay_1: 0 in the ERP (none)"]


def test_the_checker_compares_what_each_customer_owes_and_leaves_out_held_ones() -> None:
    billing = {("cus_1", "USD"): Decimal("60.00"), ("cus_2", "JPY"): Decimal("9000"),
               ("cus_3", "USD"): Decimal("90.00")}  # fmt: skip
    erp = [Receivable(customer_id="cus_1", amount=Money.of("60.000000", "USD")),
           Receivable(customer_id="cus_2", amount=Money.of("9000", "JPY"))]  # fmt: skip
    ok, _, detail = money_checker(held_customers={"cus_3"})._receivables_agree(billing, erp)
    assert ok and "2 agree, 0 differ" in detail and "1 customer(s) left out" in detail

    checker = money_checker()
    assert not checker._receivables_agree(billing, erp)[0]
    assert checker.violations == ["receivable of cus_3 in USD: ERP 0 != billing 90.00"]
    paid_twice = [*erp, Receivable(customer_id="cus_4", amount=Money.of("-40.00", "USD"))]
    checker = money_checker(held_customers={"cus_3"})
    assert not checker._receivables_agree(billing, paid_twice)[0]
    assert checker.violations == ["receivable of cus_4 in USD: ERP -40.00 != billing 0"]


def test_the_checker_compares_tax_per_erp_tax_and_currency() -> None:
    invoice = taxed("120.00", "20.00")
    expected = {row.reference: row for row in expected_for_document(invoice)}

    def posted(tax: str) -> LedgerDocument:
        return LedgerDocument(erp_document_id="1", reference="in_1", kind="invoice", number="1",
                              total=Money.of("120.00", "EUR"), state="posted", customer_id="cus_1",
                              document_date=None,
                              taxes={"VAT 20%": Money.of(tax, "EUR")})  # fmt: skip

    rates = {"eu_vat_20": "txr_vat"}
    ok, _, detail = money_checker(tax_rates=rates)._taxes_agree(
        [invoice], expected, [posted("20.00")]
    )
    assert ok and detail == "VAT 20% EUR ERP 20.00 = billing 20.00"
    checker = money_checker(tax_rates=rates)
    assert not checker._taxes_agree([invoice], expected, [posted("19.99")])[0]
    assert checker.violations == ["tax VAT 20% in EUR: VAT 20% EUR ERP 19.99 ? billing 20.00"]
    # What finance holds is on neither side.
    held = money_checker(held={"in_1": "exc/1"}, tax_rates=rates)
    assert held._taxes_agree([invoice], expected, [])[0]
