"""The chaos run's own rules of what the ERP must hold, on hand-made billing documents."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest

from canonical import BalanceTransaction, BillingDocument, BusinessEvent, Money
from canonical.reconciliation import LedgerDocument
from starters.local.chaos import Checker
from starters.local.expectations import (
    ExpectedDocument,
    expected_for_balance_credits,
    expected_for_document,
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


def test_money_the_ledger_does_not_book_waits_on_finance() -> None:
    (eur,) = expected_for_document(document("75.00", currency="EUR"))
    assert waits_on_finance(eur, ["USD"])
    assert not waits_on_finance(eur, ["usd", "eur"])
    assert not waits_on_finance(usd("in_2", "invoice", "1.00"), ["USD"])


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
