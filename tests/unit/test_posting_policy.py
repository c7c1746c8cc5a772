"""Which ERP documents a billing document needs, and when it may not be posted."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from canonical import BillingDocument, DocumentLine, Money
from canonical.ledger import required_postings
from workflows.policy import check_postable

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
