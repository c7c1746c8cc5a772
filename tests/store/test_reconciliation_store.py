"""Three-way reconciliation in the store, on SQLite and PostgreSQL: loading, classification
in SQL, the plain-SQL baseline, and the report."""

from __future__ import annotations

import argparse
import csv
import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import insert, inspect, update

from adapters.settings import Settings
from adapters.store import (
    CLASSES,
    CustomerReceivable,
    DocumentTax,
    ErpDocument,
    ErpPayment,
    ExpectedPayment,
    ExpectedPosting,
    IntegrationStore,
    Posting,
    ReconciliationItem,
    ReconciliationStore,
    RunStateError,
    SupportCredit,
    UnknownRunError,
)
from starters import recon_commands
from starters.api import dependencies, reconciliation

NOW = datetime.now(UTC)
PERIOD = (NOW - timedelta(days=1), NOW + timedelta(days=1))
RUN = "recon/2026-11-26/r1"


@pytest.fixture
def store(store_url: str) -> Iterator[IntegrationStore]:
    store = IntegrationStore(store_url)
    store.migrate()
    yield store
    store.dispose()


@pytest.fixture
def recon(store: IntegrationStore) -> ReconciliationStore:
    return ReconciliationStore(store)


def expected(
    reference: str,
    amount: str,
    currency: str = "USD",
    *,
    kind: str = "invoice",
    billing_kind: str = "invoice",
    is_credit: bool = False,
    case_id: str | None = None,
) -> ExpectedPosting:
    return ExpectedPosting(
        reference=reference,
        kind=kind,  # type: ignore[arg-type]
        customer_id="cus_1",
        currency=currency,
        amount=Decimal(amount),
        billing_document_id=reference.split("/")[0],
        billing_kind=billing_kind,  # type: ignore[arg-type]
        is_credit=is_credit,
        case_id=case_id,
    )


def erp(
    erp_id: str,
    reference: str | None,
    amount: str,
    currency: str = "USD",
    *,
    kind: str = "invoice",
    state: str = "posted",
) -> ErpDocument:
    return ErpDocument(
        erp_document_id=erp_id,
        reference=reference,
        kind=kind,  # type: ignore[arg-type]
        number=f"INV-{erp_id}",
        currency=currency,
        amount=Decimal(amount),
        state=state,
        customer_id="cus_1",
    )


def journal(
    store: IntegrationStore,
    reference: str,
    erp_id: str,
    amount: str,
    currency: str = "USD",
    kind: str = "invoice",
) -> None:
    store.record_posting(
        source_system="billing", source_document_id=reference, document_type=kind,
        customer_id="cus_1", erp_document_id=erp_id, erp_number=f"INV-{erp_id}",
        amount=Decimal(amount), currency=currency, workflow_id="subscription/sub_1",
        correlation_id=None,
    )  # fmt: skip


def paid(
    reference: str, amount: str, applies_to: str, currency: str = "USD", *, kind: str = "payment"
) -> ExpectedPayment:
    return ExpectedPayment(
        reference=reference, kind=kind, customer_id="cus_1", currency=currency,  # type: ignore[arg-type]
        amount=Decimal(amount), applies_to=applies_to,
        billing_document_id=applies_to if kind == "payment" else reference.split("/")[0],
    )  # fmt: skip


def erp_paid(
    erp_id: str,
    reference: str | None,
    amount: str,
    applies_to: str | None,
    currency: str = "USD",
    *,
    kind: str = "payment",
) -> ErpPayment:
    return ErpPayment(
        erp_document_id=erp_id, reference=reference, kind=kind,  # type: ignore[arg-type]
        currency=currency, amount=Decimal(amount), applies_to=applies_to, state="posted",
        customer_id="cus_1",
    )  # fmt: skip


def tax(side: str, reference: str, name: str, amount: str, currency: str = "USD") -> DocumentTax:
    return DocumentTax(side=side, reference=reference, tax=name, currency=currency,  # type: ignore[arg-type]
                       amount=Decimal(amount))  # fmt: skip


def owed(side: str, customer_id: str, amount: str, currency: str = "USD") -> CustomerReceivable:
    return CustomerReceivable(side=side, customer_id=customer_id, currency=currency,  # type: ignore[arg-type]
                              amount=Decimal(amount))  # fmt: skip


def post_long_ago(store: IntegrationStore, reference: str) -> None:
    with store.session() as session:
        session.execute(
            update(Posting)
            .where(Posting.source_document_id == reference)
            .values(posted_at=datetime(2020, 1, 1, tzinfo=UTC))
        )


def seed_one_of_each(store: IntegrationStore, recon: ReconciliationStore) -> None:
    """Agreeing documents and payments in two currencies, and one difference of every class
    (tax and receivables: one agreeing and two differing keys each)."""
    recon.start_run(RUN, *PERIOD)
    recon.add_expected(
        RUN,
        [
            expected("in_m1", "100.00"),
            expected("in_m2", "50.50"),
            expected("in_m3", "75.00", "EUR"),
            expected("cn_m4", "20.00", "EUR", kind="credit_note", billing_kind="credit_note",
                     is_credit=True, case_id="1001"),
            # granted in billing with no case on it: matched in the ERP, yet unrequested
            expected("cbtxn_c1", "15.00", kind="credit_note", billing_kind="balance_credit",
                     is_credit=True),
            # no case on the billing side, but a ticket names it: requested after all
            expected("cbtxn_c2", "5.00", kind="credit_note", billing_kind="balance_credit",
                     is_credit=True),
            expected("in_miss", "30.00"),
            expected("in_gone", "40.00", "EUR"),
            expected("in_diff", "60.00"),
            expected("in_dup", "10.00"),
            expected("in_rej", "45.00"),  # finance rejected its posting
        ],
    )  # fmt: skip
    recon.add_erp(
        RUN,
        [
            erp("1", "in_m1", "100.00"),
            erp("2", "in_m2", "50.50"),
            erp("3", "in_m3", "75.00", "EUR"),
            erp("4", "cn_m4", "20.00", "EUR", kind="credit_note"),
            erp("5", "cbtxn_c1", "15.00", kind="credit_note"),
            erp("6", "cbtxn_c2", "5.00", kind="credit_note", state="paid"),
            erp("7", "in_diff", "66.00"),
            erp("8", "in_dup", "10.00"),
            erp("12", "in_dup", "10.00"),
            erp("9", "in_stranger", "12.00"),
            erp("10", None, "8.00", "EUR"),
            erp("11", "in_old", "20.00"),
        ],
    )
    journal(store, "in_m1", "1", "100.00")
    journal(store, "in_m2", "2", "50.50")
    post_long_ago(store, "in_m2")  # outside the window, but billing expects it
    journal(store, "in_gone", "90", "40.00", "EUR")
    journal(store, "in_old", "11", "20.00")  # billed last period, posted in this one
    journal(store, "in_ancient", "70", "1.00")
    post_long_ago(store, "in_ancient")  # neither in the window nor expected
    journal(store, "in_rej", "rejected:exception/subscription/sub_1/4", "45.00")
    recon.add_support_credits(
        RUN,
        [
            SupportCredit(case_id="1001", request_id="r1", customer_id="cus_1", currency="EUR",
                          amount=Decimal("20.00"), billing_document_id="cn_m4"),
            SupportCredit(case_id="1003", request_id="r1", customer_id="cus_1", currency="USD",
                          amount=Decimal("5.00"), billing_document_id="cbtxn_c2"),
            SupportCredit(case_id="1002", request_id="r1", customer_id="cus_1", currency="USD",
                          amount=Decimal("25.00"), billing_document_id=None),
        ],
    )  # fmt: skip
    recon.add_expected_payments(
        RUN,
        [
            paid("inpay_m1", "100.00", "in_m1"),
            paid("re_m2/payout", "20.00", "cn_m4", "EUR", kind="refund"),  # made by a credit note
            paid("inpay_miss", "30.00", "in_miss"),
            paid("re_miss/payout", "5.00", "cn_m4", kind="refund"),
            paid("inpay_diff", "60.00", "in_diff"),
            paid("inpay_dup", "10.00", "in_dup"),
            paid("inpay_gone", "7.00", "in_m2"),
        ],
    )
    recon.add_erp_payments(
        RUN,
        [
            # ERP ids of payments are their own: "1" here is not invoice "1"
            erp_paid("1", "inpay_m1", "100.00", "in_m1"),
            erp_paid("2", "re_m2/payout", "20.00", "cn_m4", "EUR", kind="refund"),
            erp_paid("3", "inpay_diff", "60.00", "in_m1"),  # applied to the wrong invoice
            erp_paid("4", "inpay_dup", "10.00", "in_dup"),
            erp_paid("5", "inpay_dup", "10.00", "in_dup"),
            erp_paid("6", None, "3.00", None),
            erp_paid("7", "inpay_stranger", "15.00", "in_m1"),
        ],
    )
    journal(store, "inpay_m1", "1", "100.00", kind="payment")
    journal(store, "inpay_gone", "91", "7.00", kind="payment")
    recon.add_taxes(
        RUN,
        [
            tax("billing", "in_m1", "VAT 20%", "16.00"),
            tax("erp", "in_m1", "VAT 20%", "16.00"),
            tax("billing", "in_m3", "VAT 20%", "12.50", "EUR"),
            tax("erp", "in_m3", "VAT 20%", "10.00", "EUR"),
            tax("billing", "cn_m4", "VAT 20%", "-3.33", "EUR"),
            tax("erp", "cn_m4", "VAT 20%", "-3.33", "EUR"),
            tax("billing", "in_miss", "VAT 20%", "5.00"),  # not in the ERP: its own finding
            tax("erp", "in_dup", "VAT 20%", "2.00"),  # doubled in the ERP: its own finding
            tax("billing", "in_m2", "unmapped tax rate txr_x", "1.00"),
        ],
    )
    recon.add_receivables(
        RUN,
        [
            owed("billing", "cus_1", "100.00"),
            owed("erp", "cus_1", "100.00"),
            owed("billing", "cus_2", "50.00", "EUR"),
            owed("erp", "cus_2", "45.00", "EUR"),
            owed("billing", "cus_3", "0.00"),  # owes nothing; the ERP lists nothing
            owed("erp", "cus_4", "12.34"),
        ],
    )
    assert recon.snapshot_journal(RUN, *PERIOD) == 7


def references(items: list[ReconciliationItem]) -> dict[str, list[str | None]]:
    found: dict[str, list[str | None]] = {}
    for item in items:
        found.setdefault(item.classification, []).append(item.reference)
    return {cls: sorted(refs, key=str) for cls, refs in found.items()}


def all_items(
    recon: ReconciliationStore, run_id: str, **filters: object
) -> list[ReconciliationItem]:
    return recon.items(run_id, limit=100_000, **filters)  # type: ignore[arg-type]


def test_migrations_create_the_reconciliation_tables_and_run_twice_harmlessly(
    store: IntegrationStore,
) -> None:
    store.migrate()
    inspector = inspect(store.engine)
    tables = set(inspector.get_table_names())
    assert {
        "recon_runs", "recon_expected", "recon_erp", "recon_journal", "recon_support_credits",
        "recon_items",
    } <= tables  # fmt: skip
    indexes = {index["name"] for index in inspector.get_indexes("recon_items")}
    assert {"ix_recon_items_class", "ix_recon_items_run"} <= indexes
    assert "ix_recon_erp_reference" in {i["name"] for i in inspector.get_indexes("recon_erp")}


def test_classify_finds_exactly_one_item_per_seeded_difference(
    store: IntegrationStore, recon: ReconciliationStore
) -> None:
    seed_one_of_each(store, recon)
    run = recon.classify(RUN)

    assert references(all_items(recon, RUN)) == {
        "matched": ["cbtxn_c1", "cbtxn_c2", "cn_m4", "in_m1", "in_m2", "in_m3", "inpay_m1",
                    "re_m2/payout"],
        "matched_to_journal": ["in_old"],
        "missing_in_erp": ["in_miss"],
        "posted_but_absent": ["in_gone", "inpay_gone"],
        "rejected_by_finance": ["in_rej"],
        "amount_mismatch": ["in_diff"],
        "duplicate_in_erp": ["in_dup", "inpay_dup"],
        "orphan_in_erp": [None, None, "in_stranger", "inpay_stranger"],
        "credit_without_ticket": ["cbtxn_c1"],
        "ticket_credit_without_billing": [None],
        "payment_missing_in_erp": ["inpay_miss"],
        "refund_missing_in_erp": ["re_miss/payout"],
        "payment_amount_mismatch": ["inpay_diff"],
        "tax_differs": ["VAT 20%", "unmapped tax rate txr_x"],
        "receivable_differs": [None, None],
    }  # fmt: skip
    assert run.status == "classified"
    assert run.loaded == {
        "expected": 11, "erp": 12, "journal": 7, "support_credits": 3, "expected_payments": 7,
        "erp_payments": 7, "billing_taxes": 5, "erp_taxes": 4, "billing_receivables": 3,
        "erp_receivables": 3,
    }  # fmt: skip
    assert run.counts == {
        "matched": 8, "matched_to_journal": 1, "missing_in_erp": 1, "posted_but_absent": 2,
        "rejected_by_finance": 1, "amount_mismatch": 1, "duplicate_in_erp": 2, "orphan_in_erp": 4,
        "credit_without_ticket": 1, "ticket_credit_without_billing": 1,
        "payment_missing_in_erp": 1, "refund_missing_in_erp": 1, "payment_amount_mismatch": 1,
        "tax_differs": 2, "receivable_differs": 2,
    }  # fmt: skip


def test_totals_count_and_sum_each_class_per_currency(
    store: IntegrationStore, recon: ReconciliationStore
) -> None:
    seed_one_of_each(store, recon)
    recon.classify(RUN)
    run = recon.run(RUN)
    assert run is not None

    def sums(cls: str) -> dict[str, tuple[int, Decimal]]:
        return {c: (t.count, t.amount) for c, t in run.totals[cls].by_currency.items()}

    assert sums("matched") == {"USD": (5, Decimal("270.50")), "EUR": (3, Decimal("115.00"))}
    assert sums("missing_in_erp") == {"USD": (1, Decimal("30.00"))}
    assert sums("posted_but_absent") == {"EUR": (1, Decimal("40.00")), "USD": (1, Decimal("7"))}
    assert sums("amount_mismatch") == {"USD": (1, Decimal("60.00"))}  # billing's amount
    assert sums("duplicate_in_erp") == {"USD": (2, Decimal("20.00"))}
    assert sums("orphan_in_erp") == {"USD": (3, Decimal("30.00")), "EUR": (1, Decimal("8.00"))}
    assert sums("payment_missing_in_erp") == {"USD": (1, Decimal("30.00"))}
    assert sums("refund_missing_in_erp") == {"USD": (1, Decimal("5.00"))}
    assert sums("payment_amount_mismatch") == {"USD": (1, Decimal("60.00"))}
    # billing's side of each total: EUR VAT 12.50 - 3.33; the unmapped rate's 1.00
    assert sums("tax_differs") == {"EUR": (1, Decimal("9.17")), "USD": (1, Decimal("1.00"))}
    assert sums("receivable_differs") == {"EUR": (1, Decimal("50")), "USD": (1, Decimal("0"))}

    def kinds(cls: str) -> dict[str, dict[str, tuple[int, Decimal]]]:
        return {
            kind: {c: (t.count, t.amount) for c, t in by_currency.items()}
            for kind, by_currency in run.totals[cls].by_kind.items()
        }

    # documents and money moved are told apart within a class
    assert kinds("matched") == {
        "invoice": {"USD": (2, Decimal("150.50")), "EUR": (1, Decimal("75.00"))},
        "credit_note": {"USD": (2, Decimal("20.00")), "EUR": (1, Decimal("20.00"))},
        "payment": {"USD": (1, Decimal("100.00"))},
        "refund": {"EUR": (1, Decimal("20.00"))},
    }
    assert kinds("ticket_credit_without_billing") == {"-": {"USD": (1, Decimal("25.00"))}}
    assert kinds("receivable_differs") == {
        "receivable": {"EUR": (1, Decimal("50")), "USD": (1, Decimal("0"))}
    }
    assert sums("credit_without_ticket") == {"USD": (1, Decimal("15.00"))}
    assert sums("ticket_credit_without_billing") == {"USD": (1, Decimal("25.00"))}
    assert sums("matched_to_journal") == {"USD": (1, Decimal("20.00"))}


def test_items_carry_both_sides_and_the_remedy(
    store: IntegrationStore, recon: ReconciliationStore
) -> None:
    seed_one_of_each(store, recon)
    recon.classify(RUN)
    [mismatch] = all_items(recon, RUN, cls="amount_mismatch")
    assert (mismatch.billing_amount, mismatch.erp_amount) == (Decimal("60"), Decimal("66"))
    assert mismatch.erp_document_ids == ("7",)
    assert mismatch.detail == "ERP document differs from billing in: amount"
    assert mismatch.remedy.startswith("Finance exception")
    [duplicate, _] = all_items(recon, RUN, cls="duplicate_in_erp")
    assert (duplicate.reference, duplicate.erp_document_ids) == ("in_dup", ("8", "12"))
    assert duplicate.erp_amount == Decimal("20")
    [gone, _] = all_items(recon, RUN, cls="posted_but_absent")
    assert (
        gone.reference == "in_gone"
        and gone.journal_amount == Decimal("40")
        and gone.erp_document_ids == ()
    )
    assert gone.detail is not None and "ERP document 90" in gone.detail
    [missing] = all_items(recon, RUN, cls="missing_in_erp")
    assert missing.billing_document_id == "in_miss" and missing.remedy.startswith("Auto-heal")
    [ticket] = all_items(recon, RUN, cls="ticket_credit_without_billing")
    assert (ticket.case_id, ticket.request_id, ticket.amount) == ("1002", "r1", Decimal("25"))


def test_payment_items_say_what_differs_and_what_healing_refetches(
    store: IntegrationStore, recon: ReconciliationStore
) -> None:
    seed_one_of_each(store, recon)
    recon.classify(RUN)
    [wrong] = all_items(recon, RUN, cls="payment_amount_mismatch")
    assert wrong.kind == "payment" and wrong.erp_document_ids == ("3",)
    assert wrong.detail == "ERP payment differs from billing in: applied to (in_diff vs in_m1)"
    [payment] = all_items(recon, RUN, cls="payment_missing_in_erp")
    assert (payment.kind, payment.billing_document_id) == ("payment", "in_miss")
    assert payment.remedy.startswith("Auto-heal") and payment.outcome is None
    [refund] = all_items(recon, RUN, cls="refund_missing_in_erp")
    assert (refund.kind, refund.billing_document_id) == ("refund", "re_miss")
    gone = {i.reference: i for i in all_items(recon, RUN, cls="posted_but_absent")}
    assert gone["inpay_gone"].kind == "payment" and gone["inpay_gone"].journal_amount == 7
    assert "ERP payment 91" in (gone["inpay_gone"].detail or "")
    duplicated = {i.reference: i for i in all_items(recon, RUN, cls="duplicate_in_erp")}
    assert duplicated["inpay_dup"].erp_document_ids == ("4", "5")
    assert (duplicated["inpay_dup"].detail or "").startswith("2 ERP payments carry this")
    healable = {i.reference for i in recon.healable(RUN)}
    assert healable == {"in_miss", "inpay_miss", "re_miss/payout"}


def test_tax_per_rate_compares_only_documents_both_systems_hold_once(
    store: IntegrationStore, recon: ReconciliationStore
) -> None:
    seed_one_of_each(store, recon)
    recon.classify(RUN)
    taxes = {(i.reference, i.currency): i for i in all_items(recon, RUN, cls="tax_differs")}
    # USD VAT agrees: the missing invoice's and the doubled invoice's tax are not counted
    assert set(taxes) == {("VAT 20%", "EUR"), ("unmapped tax rate txr_x", "USD")}
    vat = taxes[("VAT 20%", "EUR")]
    assert (vat.kind, vat.billing_amount, vat.erp_amount) == ("tax", Decimal("9.17"),
                                                              Decimal("6.67"))  # fmt: skip
    unmapped = taxes[("unmapped tax rate txr_x", "USD")]
    assert unmapped.erp_amount == 0 and unmapped.detail == (
        "Finance's mapping names no ERP tax for billing's tax rate txr_x (documents both hold "
        "for the period)"
    )


def test_receivables_differ_per_customer_and_currency_absent_counting_as_zero(
    store: IntegrationStore, recon: ReconciliationStore
) -> None:
    seed_one_of_each(store, recon)
    recon.classify(RUN)
    owed_items = {i.customer_id: i for i in all_items(recon, RUN, cls="receivable_differs")}
    assert set(owed_items) == {"cus_2", "cus_4"}  # cus_1 agrees, cus_3 owes nothing anywhere
    assert (owed_items["cus_2"].billing_amount, owed_items["cus_2"].erp_amount) == (
        Decimal("50"), Decimal("45"),
    )  # fmt: skip
    fourth = owed_items["cus_4"]
    assert (fourth.kind, fourth.currency, fourth.amount) == ("receivable", "USD", 0)
    assert fourth.erp_amount == Decimal("12.34")


def test_a_refund_credit_note_and_its_payout_are_each_matched_on_their_own_side(
    store: IntegrationStore, recon: ReconciliationStore
) -> None:
    """A refund made without a billing credit note is an ERP credit note (the refund id)
    and a payout on it; an ERP payment's id may equal an invoice's (ids of other tables)
    and a payment may share a document's reference: neither is a duplicate or an orphan."""
    recon.start_run(RUN, *PERIOD)
    recon.add_expected(RUN, [expected("re_1", "5.00", kind="credit_note", billing_kind="refund")])
    recon.add_expected_payments(RUN, [
        paid("re_1/payout", "5.00", "re_1", kind="refund"),
        paid("in_9", "3.00", "in_9"),  # a payment journaled under a document's reference
    ])  # fmt: skip
    recon.add_erp(RUN, [erp("1", "re_1", "5.00", kind="credit_note")])
    recon.add_erp_payments(RUN, [
        erp_paid("1", "re_1/payout", "5.00", "re_1", kind="refund"),
        erp_paid("2", "in_9", "3.00", "in_9"),
    ])  # fmt: skip
    journal(store, "re_1", "1", "5.00", kind="credit_note")
    journal(store, "re_1/payout", "1", "5.00", kind="refund")
    journal(store, "in_9", "2", "3.00", kind="payment")
    recon.snapshot_journal(RUN, *PERIOD)
    run = recon.classify(RUN)
    assert {cls: n for cls, n in run.counts.items() if n} == {"matched": 3}
    assert recon.plain_sql_diff(RUN) == run.counts


def test_what_finance_rejected_is_explained_and_a_hand_posting_the_erp_lacks_is_not(
    store: IntegrationStore, recon: ReconciliationStore
) -> None:
    """A document, a payment and a refund whose journal entry records finance's rejection
    (and one journaled only) are rejected_by_finance: reported, never healed; a `manual:`
    entry (finance's hand posting) the ERP lacks stays posted_but_absent."""
    exc = "rejected:exception/subscription/sub_1/"
    recon.start_run(RUN, *PERIOD)
    recon.add_expected(RUN, [expected("in_r1", "10.00"), expected("in_h1", "20.00"),
                             expected("in_ok", "40.00")])  # fmt: skip
    recon.add_expected_payments(RUN, [
        paid("inpay_r1", "10.00", "in_ok"),
        paid("re_r1/payout", "4.00", "in_ok", kind="refund"),
        paid("inpay_h1", "20.00", "in_ok"),
    ])  # fmt: skip
    recon.add_erp(RUN, [erp("1", "in_ok", "40.00")])
    journal(store, "in_r1", exc + "1", "10.00")
    journal(store, "in_h1", "manual:INV-77", "20.00")
    journal(store, "in_ok", exc + "3", "40.00")  # the ERP holds it: compared as ever
    journal(store, "inpay_r1", exc + "4", "10.00", kind="payment")
    journal(store, "re_r1/payout", exc + "5", "4.00", kind="refund")
    journal(store, "inpay_h1", "manual:PAY-9", "20.00", kind="payment")
    journal(store, "in_elsewhen", exc + "6", "5.00")  # billed in another period
    recon.snapshot_journal(RUN, *PERIOD)
    run = recon.classify(RUN)

    found = {i.reference: i for i in all_items(recon, RUN)}
    assert references(list(found.values())) == {
        "rejected_by_finance": ["in_elsewhen", "in_r1", "inpay_r1", "re_r1/payout"],
        "posted_but_absent": ["in_h1", "inpay_h1"],
        "matched": ["in_ok"],
    }
    assert found["in_r1"].detail == (
        "Finance rejected its posting in exception exception/subscription/sub_1/1; "
        "the ERP holds no document with this reference"
    )
    assert found["re_r1/payout"].detail == (
        "Finance rejected its posting in exception exception/subscription/sub_1/5; "
        "the ERP holds no refund with this reference"
    )
    assert found["in_elsewhen"].detail == (
        "Finance rejected its posting in exception exception/subscription/sub_1/6; "
        "neither the ERP nor billing holds this reference"
    )
    assert found["inpay_r1"].remedy.startswith("None: finance rejected")
    assert (found["inpay_r1"].kind, found["inpay_r1"].journal_amount) == ("payment", 10)
    assert found["in_h1"].detail == (
        "Journaled as ERP document manual:INV-77; the ERP holds no document with this reference"
    )
    assert recon.healable(RUN) == []
    assert recon.plain_sql_diff(RUN) == run.counts


def test_a_rejected_invoice_and_the_payments_journaled_rejected_with_it_are_explained(
    store: IntegrationStore, recon: ReconciliationStore
) -> None:
    """The ledger journals a rejected invoice's paid payments rejected under the same
    exception: reconciliation explains both and heals neither. A payment of it not yet so
    journaled is missing and healable: its heal makes the ledger journal it rejected too."""
    exc = "rejected:exception/subscription/sub_1/7"
    recon.start_run(RUN, *PERIOD)
    recon.add_expected(RUN, [expected("in_rx", "50.00")])
    recon.add_expected_payments(RUN, [paid("inpay_rx", "30.00", "in_rx"),
                                      paid("inpay_rx2", "20.00", "in_rx")])  # fmt: skip
    journal(store, "in_rx", exc, "50.00")
    journal(store, "inpay_rx", exc, "30.00", kind="payment")
    recon.snapshot_journal(RUN, *PERIOD)
    run = recon.classify(RUN)
    found = {i.reference: i for i in all_items(recon, RUN)}
    assert references(list(found.values())) == {
        "rejected_by_finance": ["in_rx", "inpay_rx"],
        "payment_missing_in_erp": ["inpay_rx2"],
    }
    assert found["inpay_rx"].detail == (
        "Finance rejected its posting in exception exception/subscription/sub_1/7; "
        "the ERP holds no payment with this reference"
    )
    assert [i.reference for i in recon.healable(RUN)] == ["inpay_rx2"]
    assert recon.plain_sql_diff(RUN) == run.counts


def test_a_credit_notes_out_of_band_payout_is_matched_on_it_and_missing_when_absent(
    store: IntegrationStore, recon: ReconciliationStore
) -> None:
    recon.start_run(RUN, *PERIOD)
    notes = [
        expected(cn, amount, kind="credit_note", billing_kind="credit_note", is_credit=True)
        for cn, amount in (("cn_1", "9.00"), ("cn_2", "4.00"))
    ]
    recon.add_expected(RUN, notes)
    recon.add_expected_payments(RUN, [
        paid(f"{n.reference}/out_of_band", str(n.amount), n.reference, kind="refund")
        for n in notes
    ])  # fmt: skip
    recon.add_erp(RUN, [erp("1", "cn_1", "9.00", kind="credit_note"),
                        erp("2", "cn_2", "4.00", kind="credit_note")])  # fmt: skip
    recon.add_erp_payments(RUN, [erp_paid("1", "cn_1/out_of_band", "9.00", "cn_1", kind="refund")])
    recon.snapshot_journal(RUN, *PERIOD)
    run = recon.classify(RUN)
    found = {i.reference: i for i in all_items(recon, RUN)}
    assert found["cn_1/out_of_band"].classification == "matched"
    missing = found["cn_2/out_of_band"]
    assert (missing.classification, missing.billing_document_id) == (
        "refund_missing_in_erp", "cn_2",
    )  # fmt: skip
    assert "cn_2/out_of_band" in [i.reference for i in recon.healable(RUN)]
    assert recon.plain_sql_diff(RUN) == run.counts


def test_plain_sql_diff_agrees_with_classify(
    store: IntegrationStore, recon: ReconciliationStore
) -> None:
    seed_one_of_each(store, recon)
    baseline = recon.plain_sql_diff(RUN)
    assert baseline == recon.classify(RUN).counts
    assert set(baseline) == set(CLASSES)


def test_cancelled_or_differently_kinded_erp_documents_do_not_match(
    recon: ReconciliationStore,
) -> None:
    recon.start_run(RUN, *PERIOD)
    recon.add_expected(RUN, [expected("in_1", "10.00"), expected("in_2", "10.00", "EUR")])
    recon.add_erp(
        RUN,
        [
            erp("1", "in_1", "10.00", state="cancelled"),
            erp("2", "in_2", "10.00", kind="credit_note"),
        ],
    )
    recon.classify(RUN)
    assert {i.reference: i.detail for i in all_items(recon, RUN)} == {
        "in_1": "ERP document differs from billing in: state (cancelled)",
        "in_2": "ERP document differs from billing in: kind (invoice vs credit_note), "
        "currency (EUR vs USD)",
    }
    assert recon.plain_sql_diff(RUN)["amount_mismatch"] == 2


def test_keyset_paging_returns_every_item_once(
    store: IntegrationStore, recon: ReconciliationStore
) -> None:
    seed_one_of_each(store, recon)
    recon.classify(RUN)
    everything = [item.id for item in all_items(recon, RUN)]
    paged: list[int] = []
    after: int | None = None
    while page := recon.items(RUN, after_id=after, limit=4):
        paged += [item.id for item in page]
        after = page[-1].id
    assert paged == everything and len(set(paged)) == len(paged) == 29
    matched = recon.items(RUN, cls="matched", limit=4)
    rest = recon.items(RUN, cls="matched", after_id=matched[-1].id, limit=5)
    assert len(matched) == 4 and len(rest) == 4
    assert {i.classification for i in matched + rest} == {"matched"}


def test_snapshot_takes_the_window_and_expected_references_and_replaces_itself(
    store: IntegrationStore, recon: ReconciliationStore
) -> None:
    seed_one_of_each(store, recon)  # takes the snapshot: 7 entries
    assert recon.snapshot_journal(RUN, *PERIOD, references_from_expected=False) == 6
    assert recon.snapshot_journal(RUN, *PERIOD) == 7
    later = (NOW + timedelta(days=2), NOW + timedelta(days=3))
    assert recon.snapshot_journal(RUN, *later, references_from_expected=False) == 0
    with pytest.raises(ValueError, match="timezone"):
        recon.snapshot_journal(RUN, datetime(2026, 11, 1), datetime(2026, 12, 1))


def test_a_page_loaded_twice_is_kept_once(recon: ReconciliationStore) -> None:
    recon.start_run(RUN, *PERIOD)
    page = [expected("in_1", "10.00"), expected("in_2", "20.00")]
    assert recon.add_expected(RUN, page) == 2
    recon.add_expected(RUN, page)  # the activity retried after the page was stored
    recon.add_erp(RUN, [erp("1", "in_1", "10.00")])
    recon.add_erp(RUN, [erp("1", "in_1", "10.00")])
    assert recon.classify(RUN).counts["matched"] == 1
    assert recon.run(RUN).loaded == {  # type: ignore[union-attr]
        "expected": 2, "erp": 1, "journal": 0, "support_credits": 0, "expected_payments": 0,
        "erp_payments": 0, "billing_taxes": 0, "erp_taxes": 0, "billing_receivables": 0,
        "erp_receivables": 0,
    }  # fmt: skip


def test_a_ticket_credit_is_found_in_billing_by_the_case_its_billing_credit_carries(
    recon: ReconciliationStore,
) -> None:
    recon.start_run(RUN, *PERIOD)
    credit = expected("cbtxn_1", "45.00", kind="credit_note", billing_kind="balance_credit",
                      is_credit=True, case_id="1042")  # fmt: skip
    recon.add_expected(RUN, [credit])
    recon.add_erp(RUN, [erp("1", "cbtxn_1", "45.00", kind="credit_note")])
    recon.add_support_credits(RUN, [
        SupportCredit(case_id="1042", request_id="ticket", customer_id="cus_1",
                      currency="USD", amount=Decimal("45.00")),
        SupportCredit(case_id="1043", request_id="ticket", customer_id="cus_1",
                      currency="USD", amount=Decimal("12.00")),
    ])  # fmt: skip
    counts = recon.classify(RUN).counts
    assert counts["matched"] == 1 and counts["credit_without_ticket"] == 0
    [lonely] = recon.items(RUN, "ticket_credit_without_billing")
    assert lonely.case_id == "1043"


def test_a_classified_run_keeps_its_report_and_refuses_more_rows(
    store: IntegrationStore, recon: ReconciliationStore
) -> None:
    seed_one_of_each(store, recon)
    first = recon.classify(RUN)
    with pytest.raises(RunStateError, match="classified"):
        recon.add_expected(RUN, [expected("in_late", "1.00")])
    assert recon.delete_staging(RUN) == 11 + 12 + 7 + 3 + 7 + 7 + 9 + 6
    again = recon.classify(RUN)  # a retried activity: staging is gone, the report is not
    assert again.counts == first.counts
    assert len(all_items(recon, RUN)) == 29
    assert recon.plain_sql_diff(RUN) == dict.fromkeys(CLASSES, 0)


def test_unknown_runs_and_loading_runs_are_refused(recon: ReconciliationStore) -> None:
    with pytest.raises(UnknownRunError):
        recon.add_erp("recon/none", [erp("1", "in_1", "1.00")])
    assert recon.run("recon/none") is None
    recon.start_run(RUN, *PERIOD)
    with pytest.raises(RunStateError, match="still needed"):
        recon.delete_staging(RUN)
    with pytest.raises(RunStateError, match="not classified"):
        recon.begin_healing(RUN)


def test_starting_a_run_again_returns_it_and_another_period_is_refused(
    recon: ReconciliationStore,
) -> None:
    first = recon.start_run(RUN, *PERIOD)
    assert recon.start_run(RUN, *PERIOD) == first
    assert first.period_start == PERIOD[0] and first.period_start.tzinfo is not None
    with pytest.raises(RunStateError, match="already covers"):
        recon.start_run(RUN, PERIOD[0], PERIOD[1] + timedelta(days=1))


def test_healing_works_through_missing_items_and_the_run_closes(
    recon: ReconciliationStore,
) -> None:
    recon.start_run(RUN, *PERIOD)
    recon.add_expected(RUN, [expected(f"in_{n}", "10.00") for n in range(5)])
    recon.classify(RUN)
    recon.begin_healing(RUN)
    first, second, *rest = recon.healable(RUN, limit=10)
    assert len(rest) == 3 and {i.classification for i in rest} == {"missing_in_erp"}
    recon.mark_outcome(first.id, "healed", "subscription/sub_1")
    recon.mark_outcome(second.id, "exception_opened", "exception/recon/2026-11-26/1")
    assert [i.id for i in recon.healable(RUN, limit=10)] == [i.id for i in rest]
    [marked] = recon.items(RUN, limit=1)
    assert (marked.outcome, marked.outcome_ref) == ("healed", "subscription/sub_1")
    assert marked.outcome_at is not None
    with pytest.raises(LookupError):
        recon.mark_outcome(10**9, "healed", None)
    recon.finish_run(RUN, "done", healed=1, exceptions=1)
    run = recon.run(RUN)
    assert run is not None and run.status == "done" and run.finished_at is not None
    assert (run.healed_count, run.exception_count) == (1, 1)


def test_latest_runs_come_newest_first(recon: ReconciliationStore) -> None:
    for n in range(3):
        recon.start_run(f"recon/2026-11-2{n}/r1", *PERIOD)
    assert [r.run_id for r in recon.latest_runs(2)] == [
        "recon/2026-11-22/r1",
        "recon/2026-11-21/r1",
    ]


def test_rows_refuse_floats_unknown_kinds_lower_case_currencies_and_non_positive_amounts() -> None:
    with pytest.raises(TypeError, match="Decimal"):
        ExpectedPosting("in_1", "invoice", "cus_1", "USD", 1.5, "in_1", "invoice")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind"):
        erp("1", "in_1", "1.00", kind="receipt")
    with pytest.raises(ValueError, match="positive"):
        expected("in_1", "0.00")
    with pytest.raises(ValueError, match="currency 'usd'"):
        expected("in_1", "1.00", "usd")


def test_twenty_thousand_rows_load_and_classify_in_agreement_with_the_baseline(
    store: IntegrationStore, recon: ReconciliationStore
) -> None:
    """A random mix at volume; each reference's fate is drawn, so the counts are known."""
    rng = random.Random(20261126)
    weights = {
        "matched": 88, "missing_in_erp": 3, "amount_mismatch": 3, "duplicate_in_erp": 2,
        "orphan_in_erp": 2, "posted_but_absent": 1, "matched_to_journal": 1,
    }  # fmt: skip
    expected_rows: list[ExpectedPosting] = []
    erp_rows: list[ErpDocument] = []
    postings: list[dict[str, object]] = []
    drawn: Counter[str] = Counter()
    for n in count():
        if len(expected_rows) + len(erp_rows) >= 20_000:
            break
        [fate] = rng.choices(list(weights), weights=list(weights.values()))
        drawn[fate] += 1
        reference, amount = f"in_{n}", f"{rng.randint(1, 99_999)}.{rng.randint(0, 99):02d}"
        currency = rng.choice(["USD", "EUR"])
        if fate not in ("orphan_in_erp", "matched_to_journal"):
            expected_rows.append(expected(reference, amount, currency))
        if fate in ("matched", "orphan_in_erp", "duplicate_in_erp", "matched_to_journal"):
            erp_rows.append(erp(str(n), reference, amount, currency))
        if fate == "duplicate_in_erp":
            erp_rows.append(erp(f"d{n}", reference, amount, currency))
        if fate == "amount_mismatch":
            erp_rows.append(erp(str(n), reference, str(Decimal(amount) + 1), currency))
        if fate in ("posted_but_absent", "matched_to_journal"):
            postings.append({
                "source_system": "billing", "source_document_id": reference,
                "document_type": "invoice", "customer_id": "cus_1", "erp_document_id": str(n),
                "amount": Decimal(amount), "currency": currency, "workflow_id": "wf",
                "posted_at": NOW,
            })  # fmt: skip
    with store.engine.begin() as conn:
        conn.execute(insert(Posting), postings)
    recon.start_run(RUN, *PERIOD)
    recon.add_expected(RUN, iter(expected_rows))
    recon.add_erp(RUN, iter(erp_rows))
    recon.snapshot_journal(RUN, *PERIOD)
    run = recon.classify(RUN)

    assert {cls: n for cls, n in run.counts.items() if n} == dict(drawn)
    assert recon.plain_sql_diff(RUN) == run.counts
    unmatched = ("missing_in_erp", "amount_mismatch", "duplicate_in_erp", "posted_but_absent")
    matched_usd = sum(
        (row.amount for row in expected_rows if row.currency == "USD"), Decimal(0)
    ) - sum(
        (item.amount for item in all_items(recon, RUN)
         if item.currency == "USD" and item.classification in unmatched),
        Decimal(0),
    )  # fmt: skip
    assert run.totals["matched"].by_currency["USD"].amount == matched_usd


def test_payments_taxes_and_receivables_at_volume_agree_with_the_baseline(
    store: IntegrationStore, recon: ReconciliationStore
) -> None:
    """Each payment's, tax's and customer's fate drawn at random: the counts are known, and
    classify and the plain SQL agree on them."""
    rng = random.Random(20261207)
    weights = {
        "matched": 80, "payment_missing_in_erp": 3, "refund_missing_in_erp": 2,
        "payment_amount_mismatch": 4, "duplicate_in_erp": 3, "orphan_in_erp": 3,
        "posted_but_absent": 3, "matched_to_journal": 2,
    }  # fmt: skip
    recon.start_run(RUN, *PERIOD)
    expected_rows: list[ExpectedPayment] = []
    erp_rows: list[ErpPayment] = []
    postings: list[dict[str, object]] = []
    drawn: Counter[str] = Counter()
    for n in range(3_000):
        [fate] = rng.choices(list(weights), weights=list(weights.values()))
        drawn[fate] += 1
        kind = {"refund_missing_in_erp": "refund", "payment_missing_in_erp": "payment"}.get(
            fate, "refund" if rng.random() < 0.2 else "payment"
        )
        reference = f"re_{n}/payout" if kind == "refund" else f"inpay_{n}"
        amount, currency = f"{rng.randint(1, 9_999)}.{rng.randint(0, 99):02d}", "EUR"
        if fate not in ("orphan_in_erp", "matched_to_journal"):
            expected_rows.append(paid(reference, amount, f"in_{n}", currency, kind=kind))
        if fate in ("matched", "orphan_in_erp", "duplicate_in_erp", "matched_to_journal"):
            erp_rows.append(erp_paid(str(n), reference, amount, f"in_{n}", currency, kind=kind))
        if fate == "duplicate_in_erp":
            erp_rows.append(erp_paid(f"d{n}", reference, amount, f"in_{n}", currency, kind=kind))
        if fate == "payment_amount_mismatch":  # another amount, or applied elsewhere
            other = str(Decimal(amount) + 1) if n % 2 else amount
            applied = f"in_{n}" if n % 2 else f"in_{n + 1}"
            erp_rows.append(erp_paid(str(n), reference, other, applied, currency, kind=kind))
        if fate in ("posted_but_absent", "matched_to_journal"):
            postings.append({
                "source_system": "billing", "source_document_id": reference,
                "document_type": kind, "customer_id": "cus_1", "erp_document_id": str(n),
                "amount": Decimal(amount), "currency": currency, "workflow_id": "wf",
                "posted_at": NOW,
            })  # fmt: skip
    with store.engine.begin() as conn:
        conn.execute(insert(Posting), postings)
    recon.add_expected_payments(RUN, iter(expected_rows))
    recon.add_erp_payments(RUN, iter(erp_rows))
    # tax on 300 documents both systems hold; the ERP's on one of them is a cent more
    recon.add_expected(RUN, [expected(f"in_t{n}", "120.00") for n in range(300)])
    recon.add_erp(RUN, [erp(f"t{n}", f"in_t{n}", "120.00") for n in range(300)])
    taxes: list[DocumentTax] = []
    for n in range(300):
        name = f"VAT {n % 5}"
        taxes.append(tax("billing", f"in_t{n}", name, "20.00"))
        taxes.append(tax("erp", f"in_t{n}", name, "20.01" if n == 35 else "20.00"))
    recon.add_taxes(RUN, taxes)
    owes = [owed("billing", f"cus_{n}", f"{n}.10") for n in range(500)]
    owes += [owed("erp", f"cus_{n}", f"{n}.10" if n % 50 else f"{n}.11") for n in range(500)]
    recon.add_receivables(RUN, owes)
    recon.snapshot_journal(RUN, *PERIOD)
    run = recon.classify(RUN)

    drawn["matched"] += 300  # the documents whose tax is compared
    drawn["tax_differs"] = 1  # VAT 0: document in_t35
    drawn["receivable_differs"] = 10  # every fiftieth customer
    assert {cls: n for cls, n in run.counts.items() if n} == dict(drawn)
    assert recon.plain_sql_diff(RUN) == run.counts


def test_recon_report_prints_every_new_class_with_its_kind_and_the_erp_side(
    store: IntegrationStore,
    recon: ReconciliationStore,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    """`ledgerbridge recon report` over the API's answer for a stored run: the totals per
    class, kind and currency, the differences with both sides, and the CSV."""
    seed_one_of_each(store, recon)
    recon.classify(RUN)
    app = FastAPI()
    app.include_router(reconciliation.router)
    app.dependency_overrides[dependencies.get_store] = lambda: store
    app.dependency_overrides[dependencies.reconcilers] = lambda: None
    client = TestClient(app)

    def call_api(_settings: object, method: str, path: str, **kwargs: Any) -> Any:
        answer = client.request(method, path, params=kwargs.get("params"))
        assert answer.status_code == 200, answer.text
        return answer

    monkeypatch.setattr(recon_commands, "call_api", call_api)
    assert recon_commands.cmd_recon(
        argparse.Namespace(action="report", id=RUN, csv=str(tmp_path / "r.csv"), cls=None),
        Settings(),
    ) == 0  # fmt: skip
    printed = capsys.readouterr().out.splitlines()

    def row(*cells: str) -> bool:
        return any(line.split() == list(cells) for line in printed)

    assert row("matched", "payment", "USD", "1", "100.00")
    assert row("tax_differs", "tax", "EUR", "1", "9.17")
    assert row("receivable_differs", "receivable", "USD", "1", "0.00")
    said = " ".join(" ".join(printed).split())  # the tables' columns, one space apart
    assert "payment_amount_mismatch payment inpay_diff cus_1 60.00 USD 60.00 USD" in said
    assert "receivable_differs receivable - cus_2 50.00 EUR 45.00 EUR" in said
    with (tmp_path / "r.csv").open() as out:
        rows = list(csv.DictReader(out))
    assert {r["classification"] for r in rows} == set(CLASSES)  # one item of every class
    [refund] = [r for r in rows if r["classification"] == "refund_missing_in_erp"]
    assert (refund["kind"], refund["billing_document_id"]) == ("refund", "re_miss")
