"""Which ERP documents a billing document needs, and when it may not be posted; the same
for an invoice's payments and a charge's refunds."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from canonical import (
    BillingDocument,
    DocumentLine,
    LinkedRefund,
    Money,
    Payment,
    Refund,
    TaxLine,
)
from canonical.ledger import (
    out_of_band_payout,
    payment_postings,
    refund_credit_note,
    refund_credit_reversal,
    refund_payout,
    required_postings,
)
from canonical.mapping import (
    REFUND_LINE,
    SUPPORT_CREDIT_LINE,
    FinanceMapping,
    ProductAccount,
    Unmapped,
    map_document,
)
from workflows.policy import check_payments, check_postable, check_refund

FINALIZED = datetime(2026, 11, 14, 9, 30, tzinfo=UTC)


def usd(amount: str) -> Money:
    return Money.of(amount, "USD")


def line(line_id: str, amount: str, quantity: str = "1", **extra: Any) -> DocumentLine:
    return DocumentLine(
        line_id=line_id, description=f"line {line_id}", quantity=Decimal(quantity),
        unit_amount=usd(amount), amount=usd(amount), **extra,
    )  # fmt: skip


def document(*lines: DocumentLine, **changes: Any) -> BillingDocument:
    subtotal = sum((ln.amount.amount for ln in lines), Decimal(0))
    fields: dict[str, Any] = {
        "document_id": "in_1", "kind": "invoice", "status": "open", "number": "ABC-0002",
        "customer_id": "cus_1", "subscription_id": "sub_1", "currency": "USD",
        "lines": list(lines), "subtotal": usd(str(subtotal)), "tax": usd("0"),
        "total": usd(str(subtotal)), "created_at": FINALIZED, "finalized_at": FINALIZED,
    }  # fmt: skip
    fields.update(changes)
    return BillingDocument(**fields)


def test_upgrade_proration_invoice_becomes_one_erp_invoice_with_both_lines() -> None:
    upgrade = document(
        line("il_1", "-16.67", proration=True), line("il_2", "50.00", proration=True)
    )
    [posting] = required_postings(upgrade)
    assert posting.kind == "invoice"
    assert posting.reference == "in_1"
    assert posting.total == usd("33.33")
    assert [ln.unit_price for ln in posting.lines] == [Decimal("-16.67"), Decimal("50.00")]
    assert sum(ln.unit_price * ln.quantity for ln in posting.lines) == Decimal("33.33")
    assert posting.billing_date == date(2026, 11, 14)
    assert "ABC-0002" in posting.description and "sub_1" in posting.description


def test_downgrade_with_negative_total_becomes_an_erp_credit_note_of_one_net_line() -> None:
    downgrade = document(line("il_1", "-50.00"), line("il_2", "20.00"))
    [posting] = required_postings(downgrade)
    assert posting.kind == "credit_note"
    assert posting.total == usd("30.00")
    [net] = posting.lines
    assert net.unit_price * net.quantity == Decimal("30.00")
    assert "line il_1: 50.00" in net.description and "line il_2: -20.00" in net.description


def test_credit_note_lines_of_one_sign_are_kept_as_they_are() -> None:
    downgrade = document(line("il_1", "-50.00"), line("il_2", "-5.00"))
    [posting] = required_postings(downgrade)
    assert [ln.unit_price for ln in posting.lines] == [Decimal("50.00"), Decimal("5.00")]


def test_draft_and_zero_documents_need_nothing() -> None:
    assert required_postings(document(line("il_1", "10"), status="draft", finalized_at=None)) == []
    assert required_postings(document(line("il_1", "0"))) == []


def test_voided_invoice_needs_the_invoice_and_its_reversal_in_that_order() -> None:
    postings = required_postings(document(line("il_1", "99.00"), status="void"))
    assert [(p.reference, p.kind) for p in postings] == [
        ("in_1", "invoice"),
        ("in_1/void", "credit_note"),
    ]
    assert postings[1].total == postings[0].total
    assert all(ln.unit_price > 0 for ln in postings[1].lines)


def test_reversal_of_a_proration_invoice_is_one_net_credit_line() -> None:
    upgrade = document(line("il_1", "-16.67"), line("il_2", "50.00"), status="void")
    _, reversal = required_postings(upgrade)
    [net] = reversal.lines
    assert (reversal.kind, net.unit_price) == ("credit_note", Decimal("33.33"))


def test_voided_draft_needs_nothing() -> None:
    assert required_postings(document(line("il_1", "5"), status="void", finalized_at=None,
                                      number=None)) == []  # fmt: skip


def test_credit_note_becomes_an_erp_credit_note_and_its_void_an_invoice() -> None:
    note = document(line("cnli_1", "12.50"), document_id="cn_1", kind="credit_note",
                    status="issued", invoice_id="in_1")  # fmt: skip
    [posting] = required_postings(note)
    assert (posting.kind, posting.total) == ("credit_note", usd("12.50"))
    voided = note.model_copy(update={"status": "void"})
    assert [p.kind for p in required_postings(voided)] == ["credit_note", "invoice"]


def test_a_sound_document_has_no_violations() -> None:
    assert check_postable(document(line("il_1", "10"), line("il_2", "5")), ["USD"]) == []
    for reason in ("subscription_create", "subscription_cycle", "subscription_update", "manual"):
        assert check_postable(document(line("il_1", "10"), billing_reason=reason), ["USD"]) == []
    credit = document(line("il_1", "10"), kind="credit_note", billing_reason="order_change")
    assert check_postable(credit, ["USD"]) == []


@pytest.mark.parametrize(
    ("doc", "code"),
    [
        (document(line("il_1", "10"), currency="EUR", subtotal=Money.of("10", "EUR"),
                  tax=Money.of("0", "EUR"), total=Money.of("10", "EUR"),
                  lines=[DocumentLine(line_id="x", description="x", quantity=Decimal(1),
                                      unit_amount=Money.of("10", "EUR"),
                                      amount=Money.of("10", "EUR"))]),
         "unsupported_currency"),
        (document(line("il_1", "10", quantity="-1")), "negative_quantity"),
        (document(line("il_1", "10"), subtotal=usd("11"), total=usd("11")), "lines_do_not_add_up"),
        (document(line("il_1", "10"), tax=usd("1")), "total_inconsistent"),
        (document(line("il_1", "10"), billing_reason="subscription_threshold"),
         "unknown_billing_reason"),
    ],
    ids=["currency", "negative quantity", "lines", "total", "unknown subscription change"],
)  # fmt: skip
def test_violations_are_named(doc: BillingDocument, code: str) -> None:
    assert code in [v.code for v in check_postable(doc, ["usd"])]


def test_without_a_list_of_currencies_the_currency_is_left_to_the_mapping() -> None:
    euros = Money.of("10", "EUR")
    eur = document(currency="EUR", subtotal=euros, tax=Money.of("0", "EUR"), total=euros,
                   lines=[DocumentLine(line_id="x", description="x", quantity=Decimal(1),
                                       unit_amount=euros, amount=euros)])  # fmt: skip
    assert check_postable(eur, None) == []
    assert [v.code for v in check_postable(eur, [])] == ["unsupported_currency"]


def test_inclusive_tax_is_inside_the_subtotal_and_only_exclusive_tax_adds_to_the_total() -> None:
    vat = TaxLine(rate_id="txr_uk", percentage=Decimal(20), inclusive=True,
                  taxable_amount=usd("100.00"), amount=usd("20.00"))  # fmt: skip
    sales = TaxLine(rate_id="txr_ny", percentage=Decimal("8.875"), inclusive=False,
                    taxable_amount=usd("100.00"), amount=usd("8.88"))  # fmt: skip
    taxed = document(line("il_1", "120.00"), tax=usd("28.88"), total=usd("128.88"),
                     tax_lines=[vat, sales])  # fmt: skip
    assert check_postable(taxed, ["USD"]) == []
    as_if_exclusive = taxed.model_copy(update={"total": usd("148.88")})
    assert [v.code for v in check_postable(as_if_exclusive, ["USD"])] == ["total_inconsistent"]


def paid(payment_id: str, value: str, **changes: Any) -> Payment:
    fields: dict[str, Any] = {
        "payment_id": payment_id, "invoice_id": "in_1", "customer_id": "cus_1",
        "status": "paid", "amount": usd(value), "method": "card", "charge_id": "ch_1",
        "paid_at": FINALIZED,
    }  # fmt: skip
    fields.update(changes)
    return Payment(**fields)


def test_paid_payments_become_erp_payments_applied_to_their_invoice_oldest_first() -> None:
    invoice = document(line("il_1", "100.00"))
    payments = [paid("inpay_1", "40.00"), paid("inpay_0", "0.00"),
                paid("inpay_x", "60.00", status="open", paid_at=None),
                paid("inpay_2", "60.00", method="out_of_band")]  # fmt: skip
    postings = payment_postings(invoice, payments)
    assert [(p.reference, p.applies_to, p.amount, p.method) for p in postings] == [
        ("inpay_1", "in_1", usd("40.00"), "card"),
        ("inpay_2", "in_1", usd("60.00"), "out_of_band"),
    ]
    assert postings[0].payment_date == date(2026, 11, 14) and postings[0].kind == "payment"
    assert check_payments(invoice, payments) == []


@pytest.mark.parametrize(
    ("payment", "code"),
    [
        (paid("inpay_1", "120.00"), "overpayment"),
        (paid("inpay_1", "10.00", amount=Money.of("10", "EUR")), "mixed_currency"),
        (paid("inpay_1", "10.00", invoice_id="in_2"), "payment_of_another_invoice"),
        (paid("inpay_1", "10.00", paid_at=None), "payment_without_date"),
        (paid("inpay_1", "-1.00"), "negative_payment"),
    ],
    ids=["overpayment", "currency", "other invoice", "no date", "negative"],
)
def test_payment_violations_are_named(payment: Payment, code: str) -> None:
    invoice = document(line("il_1", "100.00"))
    assert code in [v.code for v in check_payments(invoice, [payment])]


def give_back(refund_id: str, value: str, **changes: Any) -> Refund:
    fields: dict[str, Any] = {
        "refund_id": refund_id, "charge_id": "ch_1", "payment_id": "inpay_1",
        "invoice_id": "in_1", "customer_id": "cus_1", "status": "succeeded",
        "amount": usd(value), "created_at": FINALIZED,
    }  # fmt: skip
    fields.update(changes)
    return Refund(**fields)


def test_refunds_up_to_the_payment_pass_and_the_one_beyond_is_named() -> None:
    payment = paid("inpay_1", "50.00")
    first, failed = give_back("re_1", "30.00"), give_back("re_f", "40.00", status="failed")
    second, third = give_back("re_2", "20.00"), give_back("re_3", "0.01")
    refunds = [first, failed, second, third]
    assert check_refund(first, payment, refunds) == []
    assert check_refund(second, payment, refunds) == []
    [violation] = check_refund(third, payment, refunds)
    assert violation.code == "refund_exceeds_payment" and "50.01" in violation.message
    euros = give_back("re_e", "5.00", amount=Money.of("5", "EUR"))
    assert [v.code for v in check_refund(euros, payment, [euros])] == ["mixed_currency"]


def test_refund_without_billing_credit_note_is_a_credit_note_on_refunds_and_a_payout() -> None:
    refund = give_back("re_1", "25.00")
    credit_note = refund_credit_note(refund)
    assert (credit_note.reference, credit_note.kind, credit_note.total) == (
        "re_1",
        "credit_note",
        usd("25.00"),
    )
    assert credit_note.taxes == []
    [refund_line] = credit_note.lines
    assert (refund_line.product_id, refund_line.unit_price) == (REFUND_LINE, Decimal("25.00"))
    payout = refund_payout(refund, "card", applies_to="re_1")
    assert (payout.reference, payout.kind, payout.applies_to) == ("re_1/payout", "refund", "re_1")


def test_a_refunds_credit_note_is_reversed_for_what_billings_credit_note_names_of_it() -> None:
    note = document(line("cnli_1", "20.00"), document_id="cn_7", kind="credit_note",
                    status="issued", invoice_id="in_1", number="ABC-0002-CN-01")  # fmt: skip
    part = LinkedRefund(refund_id="re_1", amount=usd("20.00"))
    reversal = refund_credit_reversal(part, note, refund_credit=usd("25.00"))
    [back] = reversal.lines
    assert (reversal.reference, reversal.kind, reversal.total, reversal.applies_to) == (
        "re_1/credited-by/cn_7", "invoice", usd("20.00"), None)  # fmt: skip
    assert (back.product_id, back.unit_price, reversal.taxes) == (REFUND_LINE, Decimal(20), [])
    # Never more than the refund's own credit note is worth in the ERP.
    capped = refund_credit_reversal(part, note, refund_credit=usd("15.00"))
    assert capped.total == usd("15.00") and capped.lines[0].unit_price == Decimal(15)


def test_out_of_band_money_of_a_credit_note_is_a_payout_applied_to_it() -> None:
    note = document(line("cnli_1", "20.00"), document_id="cn_7", kind="credit_note",
                    status="issued", invoice_id="in_1")  # fmt: skip
    assert out_of_band_payout(note) is None
    assert out_of_band_payout(note.model_copy(update={"out_of_band_amount": usd("0")})) is None
    payout = out_of_band_payout(note.model_copy(update={"out_of_band_amount": usd("12.00")}))
    assert payout is not None
    assert (payout.reference, payout.kind, payout.method, payout.applies_to, payout.amount) == (
        "cn_7/out_of_band", "refund", "out_of_band", "cn_7", usd("12.00"))  # fmt: skip
    assert payout.payment_date == FINALIZED.date()


def test_refund_and_support_credit_lines_map_to_their_own_entries_or_name_the_gap() -> None:
    account = ProductAccount(erp_product="REFUND", revenue_account="4900")
    mapping = FinanceMapping(version=4, currencies=["USD"], refunds=account)
    mapped = map_document(refund_credit_note(give_back("re_1", "25.00")), mapping)
    assert (mapped.lines[0].erp_product, mapped.lines[0].revenue_account) == ("REFUND", "4900")
    support = refund_credit_note(give_back("re_2", "5.00"))
    support_line = support.lines[0].model_copy(update={"product_id": SUPPORT_CREDIT_LINE})
    with pytest.raises(Unmapped) as unmapped:
        map_document(support.model_copy(update={"lines": [support_line]}), mapping)
    assert unmapped.value.missing == [
        "support credits (the [support_credits] entry: ERP product and account)"
    ]


def test_credit_note_made_for_a_support_case_is_booked_as_a_support_credit() -> None:
    note = document(line("cnli_1", "12.50"), document_id="cn_1", kind="credit_note",
                    status="issued", invoice_id="in_1", metadata={"case_id": "1001"})  # fmt: skip
    [posting] = required_postings(note)
    assert [(ln.product_id, ln.price_id) for ln in posting.lines] == [(SUPPORT_CREDIT_LINE, None)]
    other = note.model_copy(
        update={"metadata": {}, "lines": [line("cnli_1", "12.50", product_id="prod_a")]}
    )
    assert [ln.product_id for ln in required_postings(other)[0].lines] == ["prod_a"]


def test_a_voided_plan_change_is_reversed_net_per_product_so_finance_can_map_it() -> None:
    upgrade = document(
        line("il_1", "-16.67", proration=True, product_id="prod_a", price_id="price_basic"),
        line("il_2", "50.00", proration=True, product_id="prod_a", price_id="price_pro"),
        status="void",
    )
    _, reversal = required_postings(upgrade)
    [net] = reversal.lines
    assert (reversal.kind, net.product_id, net.price_id) == ("credit_note", "prod_a", None)
    assert net.unit_price * net.quantity == Decimal("33.33")


def test_a_credit_netting_two_products_of_opposite_signs_names_no_product() -> None:
    downgrade = document(
        line("il_1", "-50.00", product_id="prod_a"), line("il_2", "20.00", product_id="prod_b")
    )
    [posting] = required_postings(downgrade)
    [net] = posting.lines
    assert net.product_id is None  # the mapping refuses it: no revenue account is guessed
