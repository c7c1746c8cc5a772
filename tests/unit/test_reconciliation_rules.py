"""What reconciliation expects the ERP to hold, from billing's documents and adjustments."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from activities.reconciliation import expected_postings, granted_credits
from canonical import BalanceTransaction, Money
from tests.unit.test_posting_policy import FINALIZED, document, line
from workflows.reconciliation import day_before, recon_workflow_id


def adjustment(txn: str, amount: str, **metadata: str) -> BalanceTransaction:
    return BalanceTransaction(
        transaction_id=txn, customer_id="cus_1", amount=Money.of(amount, "USD"),
        ending_balance=Money.of("0", "USD"), created_at=FINALIZED, kind="adjustment",
        metadata=metadata,
    )  # fmt: skip


def test_a_voided_invoice_is_expected_twice_and_a_support_credit_note_names_its_case() -> None:
    voided = document(line("l1", "30.00"), status="void", voided_at=FINALIZED)
    [main, reversal] = expected_postings(voided)
    assert (main.reference, main.kind, main.amount) == ("in_1", "invoice", Decimal("30.00"))
    assert (reversal.reference, reversal.kind) == ("in_1/void", "credit_note")
    assert not main.is_credit
    note = document(line("l1", "8.00"), document_id="cn_1", kind="credit_note",
                    metadata={"case_id": "1042"})  # fmt: skip
    [credit] = expected_postings(note)
    assert (credit.kind, credit.is_credit, credit.case_id) == ("credit_note", True, "1042")


def test_drafts_and_zero_invoices_are_expected_nowhere() -> None:
    assert expected_postings(document(line("l1", "0.00"))) == []
    assert expected_postings(document(line("l1", "9.00"), status="draft", finalized_at=None)) == []


def test_balance_credits_count_once_and_reversed_ones_not_at_all() -> None:
    credits = granted_credits([
        adjustment("cbtxn_1", "-45.00", case_id="1042"),
        adjustment("cbtxn_2", "-8.00"),
        adjustment("cbtxn_3", "8.00", reverses="cbtxn_2"),
        adjustment("cbtxn_4", "20.00"),  # a debit, not a credit
    ])  # fmt: skip
    assert [(c.reference, c.amount, c.case_id) for c in credits] == [
        ("cbtxn_1", Decimal("45.00"), "1042")
    ]
    assert credits[0].billing_kind == "balance_credit" and credits[0].is_credit


def test_runs_are_named_by_their_days_and_the_nightly_one_takes_the_day_before() -> None:
    start, end = day_before(datetime(2026, 11, 27, 2, 0, tzinfo=UTC))
    assert (start, end) == (datetime(2026, 11, 26, tzinfo=UTC), datetime(2026, 11, 27, tzinfo=UTC))
    assert recon_workflow_id(start, end) == "recon/2026-11-26"
    month_end = datetime(2026, 12, 1, tzinfo=UTC)
    assert recon_workflow_id(datetime(2026, 11, 1, tzinfo=UTC), month_end) == (
        "recon/2026-11-01..2026-11-30"
    )
