"""What reconciliation expects the ERP to hold, from billing's documents and adjustments."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from temporalio.client import ScheduleActionStartWorkflow
from temporalio.exceptions import WorkflowAlreadyStartedError

from activities.reconciliation import (
    billing_taxes,
    erp_taxes,
    expected_out_of_band,
    expected_payments,
    expected_postings,
    expected_refunds,
    granted_credits,
    receivables,
    unmapped_tax_name,
)
from adapters.settings import Settings
from canonical import BalanceTransaction, BillingDocument, Money, Payment, Refund, TaxLine
from canonical.erp_routing import (
    EntityMatch,
    ErpRouting,
    ErpTarget,
    LegalEntity,
    single_erp_routing,
)
from canonical.mapping import FinanceMapping, TaxAccount
from canonical.reconciliation import (
    CLASSES,
    EXCEPTIONS,
    EXPLAINED,
    HEALABLE,
    IN_AGREEMENT,
    REJECTED_BY_FINANCE,
    REMEDIES,
    LedgerDocument,
    Receivable,
)
from starters import recon_commands
from starters.reconciliation import (
    UnknownErp,
    erps_to_reconcile,
    nightly_schedule,
    schedule_id,
    start_reconciliations,
)
from tests.unit.test_posting_policy import FINALIZED, document, line
from workflows.reconciliation import day_before, erp_of_workflow_id, recon_workflow_id


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
    # another ERP than the `erp` queue's is named in the id; each id says its ERP
    assert recon_workflow_id(start, end, "eu") == "recon/eu/2026-11-26"
    for workflow_id, erp in (("recon/2026-11-26", None), ("recon/eu/2026-11-26", "eu"),
                             ("recon/nightly-2026-11-27T02:00:00Z", None),
                             ("recon/eu/nightly-2026-11-27T02:00:00Z", "eu")):  # fmt: skip
        assert erp_of_workflow_id(workflow_id) == erp, workflow_id


TWO_ERPS = ErpRouting(
    version=1,
    erps={"eu": ErpTarget(kind="tryton", queue="erp-eu"),
          "tryton": ErpTarget(kind="tryton", queue="erp")},
    entities=[LegalEntity(name="EU", legacy="eu", match=EntityMatch(default=True))],
)  # fmt: skip


def test_each_erp_of_the_routing_is_reconciled_and_the_erp_queues_keeps_its_ids() -> None:
    assert erps_to_reconcile(TWO_ERPS) == [("tryton", None), ("eu", "eu")]
    assert erps_to_reconcile(TWO_ERPS, "tryton") == [("tryton", None)]
    assert erps_to_reconcile(TWO_ERPS, "eu") == [("eu", "eu")]
    assert erps_to_reconcile(single_erp_routing()) == [("tryton", None)]
    with pytest.raises(UnknownErp, match="no ERP 'sap'"):
        erps_to_reconcile(TWO_ERPS, "sap")


def test_each_erp_has_its_nightly_schedule_and_the_erp_queues_keeps_its_own() -> None:
    settings = Settings(task_queue_prefix="t.")
    home, eu = nightly_schedule(settings), nightly_schedule(settings, "eu")
    assert (schedule_id(settings), schedule_id(settings, "eu")) == ("t.recon-daily",
                                                                    "t.recon-daily-eu")  # fmt: skip
    assert isinstance(home.action, ScheduleActionStartWorkflow)
    assert isinstance(eu.action, ScheduleActionStartWorkflow)
    assert (home.action.id, eu.action.id) == ("recon/nightly", "recon/eu/nightly")
    assert [a.erp for a in (*home.action.args, *eu.action.args)] == [None, "eu"]  # type: ignore[attr-defined]


class StartsRecorded:
    """Temporal's client: records starts, refuses those of ids already running."""

    def __init__(self, running: set[str]) -> None:
        self.running, self.started = running, list[str]()

    async def start_workflow(self, _run: Any, _arg: Any, *, id: str, **_: Any) -> None:
        if id in self.running:
            raise WorkflowAlreadyStartedError(id, "Reconciliation")
        self.started.append(id)


async def test_a_run_still_going_is_left_to_go_and_only_all_of_them_going_is_refused() -> None:
    settings, day = Settings(), date(2026, 11, 26)
    client = StartsRecorded({"recon/2026-11-26"})
    runs = await start_reconciliations(client, settings, TWO_ERPS, day, day)  # type: ignore[arg-type]
    assert [(r.erp, r.workflow_id, r.already_running) for r in runs] == [
        ("tryton", "recon/2026-11-26", True), ("eu", "recon/eu/2026-11-26", False),
    ]  # fmt: skip
    assert client.started == ["recon/eu/2026-11-26"]
    with pytest.raises(WorkflowAlreadyStartedError):
        await start_reconciliations(client, settings, TWO_ERPS, day, day, "tryton")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="before"):
        await start_reconciliations(client, settings, TWO_ERPS, day, date(2026, 11, 1))  # type: ignore[arg-type]


# --- money moved, tax per rate, receivables ------------------------------------------------

PAID_AT = datetime(2026, 11, 14, 10, tzinfo=UTC)


def payment(payment_id: str, amount: str, status: str = "paid") -> Payment:
    return Payment(
        payment_id=payment_id, invoice_id="in_1", customer_id="cus_1", status=status,  # type: ignore[arg-type]
        amount=Money.of(amount, "USD"), method="card", charge_id="ch_1", paid_at=PAID_AT,
    )  # fmt: skip


def refund(refund_id: str, amount: str, credit_note_id: str | None = None,
           status: str = "succeeded") -> Refund:  # fmt: skip
    return Refund(
        refund_id=refund_id, charge_id="ch_1", payment_id="inpay_1", invoice_id="in_1",
        customer_id="cus_1", status=status, amount=Money.of(amount, "EUR"),  # type: ignore[arg-type]
        credit_note_id=credit_note_id, created_at=PAID_AT,
    )  # fmt: skip


def vat(rate_id: str, amount: str, currency: str = "EUR") -> TaxLine:
    return TaxLine(
        rate_id=rate_id, display_name="VAT", jurisdiction="FR", percentage=Decimal(20),
        inclusive=False, taxable_amount=Money.of("100", currency),
        amount=Money.of(amount, currency),
    )  # fmt: skip


def taxed(document_id: str, kind: str, *taxes: TaxLine, **changes: Any) -> BillingDocument:
    tax_total = sum((t.amount.amount for t in taxes), Decimal(0))
    eur = {"currency": "EUR", "subtotal": Money.of("100", "EUR"),
           "tax": Money.of(str(tax_total), "EUR"),
           "total": Money.of(str(100 + tax_total), "EUR")}  # fmt: skip
    hundred = Money.of("100", "EUR")
    lines = [line("l1", "100.00").model_copy(update={"amount": hundred, "unit_amount": hundred})]
    return document(*lines, document_id=document_id, kind=kind, tax_lines=list(taxes),
                    **eur, **changes)  # fmt: skip


MAPPING = FinanceMapping(
    version=3, currencies=["EUR"],
    tax_rates={"txr_fr": TaxAccount(erp_tax="VAT 20% FR"),
               "txr_fr2": TaxAccount(erp_tax="VAT 20% FR")},
)  # fmt: skip


def test_paid_payments_are_expected_on_their_invoice_and_others_not_at_all() -> None:
    rows = expected_payments([payment("inpay_1", "40.00"), payment("inpay_2", "9.00", "open")])
    assert [(r.reference, r.kind, r.amount, r.applies_to, r.billing_document_id) for r in rows] == [
        ("inpay_1", "payment", Decimal("40.00"), "in_1", "in_1")
    ]


def test_a_refund_without_a_credit_note_needs_its_own_erp_credit_note_and_one_with_none() -> None:
    money_out, credit_notes = expected_refunds([
        refund("re_1", "5.00"),
        refund("re_2", "7.00", credit_note_id="cn_9"),
        refund("re_3", "1.00", status="pending"),
    ])  # fmt: skip
    assert [(r.reference, r.kind, r.applies_to, r.billing_document_id) for r in money_out] == [
        ("re_1/payout", "refund", "re_1", "re_1"), ("re_2/payout", "refund", "cn_9", "re_2"),
    ]  # fmt: skip
    [own] = credit_notes
    assert (own.reference, own.kind, own.billing_kind, own.amount) == (
        "re_1", "credit_note", "refund", Decimal("5.00"),
    )  # fmt: skip
    assert not own.is_credit and own.case_id is None  # a refund is no support credit


def test_a_refund_credited_first_is_paid_out_on_its_own_credit_note_though_billing_names_it() -> (
    None
):
    linked_later = refund("re_4", "6.00", credit_note_id="cn_8")
    money_out, credit_notes = expected_refunds([linked_later], credited_first=["re_4"])
    assert [(r.reference, r.applies_to) for r in money_out] == [("re_4/payout", "re_4")]
    assert [(c.reference, c.kind, c.amount) for c in credit_notes] == [
        ("re_4", "credit_note", Decimal("6.00"))]  # fmt: skip
    plain, none = expected_refunds([linked_later])
    assert [r.applies_to for r in plain] == ["cn_8"] and none == []


def test_a_refund_its_credit_note_names_in_part_is_paid_out_there_for_that_part_only() -> None:
    partly = refund("re_5", "30.00", credit_note_id="cn_7")
    whole = refund("re_6", "8.00", credit_note_id="cn_7")
    money_out, credit_notes = expected_refunds(
        [partly, whole], linked_parts={"re_5": Decimal("20.00"), "re_6": Decimal("8.00")}
    )
    assert [(r.reference, r.amount, r.applies_to, r.billing_document_id) for r in money_out] == [
        ("re_5/paid-out-on/cn_7", Decimal("20.00"), "cn_7", "re_5"),
        ("re_5/payout", Decimal("10.00"), "re_5", "re_5"),
        ("re_6/payout", Decimal("8.00"), "cn_7", "re_6"),
    ]  # fmt: skip
    assert [(c.reference, c.kind, c.amount) for c in credit_notes] == [
        ("re_5", "credit_note", Decimal("10.00"))]  # fmt: skip


def test_money_a_credit_note_gives_back_out_of_band_is_expected_on_it_unless_voided() -> None:
    given = document(line("l1", "8.00"), document_id="cn_1", kind="credit_note",
                     out_of_band_amount=Money.of("5.00", "USD"))  # fmt: skip
    [payout] = expected_out_of_band(given)
    assert (payout.reference, payout.kind, payout.amount, payout.applies_to) == (
        "cn_1/out_of_band", "refund", Decimal("5.00"), "cn_1",
    )  # fmt: skip
    assert payout.billing_document_id == "cn_1"  # healing replays the credit note
    assert expected_out_of_band(given.model_copy(update={"status": "void"})) == []
    assert expected_out_of_band(given.model_copy(update={"out_of_band_amount": None})) == []
    assert expected_out_of_band(document(line("l1", "8.00"))) == []


def test_billing_tax_is_named_by_the_mapping_summed_per_erp_tax_and_negative_on_credits() -> None:
    invoice = taxed("in_1", "invoice", vat("txr_fr", "12.00"), vat("txr_fr2", "8.00"))
    note = taxed("cn_1", "credit_note", vat("txr_fr", "3.33"))
    rows = billing_taxes(invoice, MAPPING) + billing_taxes(note, MAPPING)
    assert [(t.side, t.reference, t.tax, t.currency, t.amount) for t in rows] == [
        ("billing", "in_1", "VAT 20% FR", "EUR", Decimal("20.00")),
        ("billing", "cn_1", "VAT 20% FR", "EUR", Decimal("-3.33")),
    ]


def test_an_unmapped_rate_is_compared_under_a_name_no_erp_tax_has() -> None:
    invoice = taxed("in_1", "invoice", vat("txr_de", "19.00"))
    [row] = billing_taxes(invoice, MAPPING)
    assert row.tax == unmapped_tax_name("txr_de") == "unmapped tax rate txr_de"
    [without_mapping] = billing_taxes(taxed("in_2", "invoice", vat("txr_fr", "1.00")), None)
    assert without_mapping.tax == "unmapped tax rate txr_fr"


def test_a_voided_invoice_taxes_its_reversal_the_other_way() -> None:
    voided = taxed("in_1", "invoice", vat("txr_fr", "20.00"), status="void", voided_at=FINALIZED)
    rows = {t.reference: t.amount for t in billing_taxes(voided, MAPPING)}
    assert rows == {"in_1": Decimal("20.00"), "in_1/void": Decimal("-20.00")}


def test_erp_tax_is_signed_by_kind_and_a_duplicate_reference_counted_once() -> None:
    def held(
        erp_id: str, reference: str | None, kind: str, taxes: dict[str, str]
    ) -> LedgerDocument:
        return LedgerDocument(
            erp_document_id=erp_id, reference=reference, kind=kind, number=None,  # type: ignore[arg-type]
            total=Money.of("120", "EUR"), state="posted", customer_id="cus_1",
            document_date=None, taxes={n: Money.of(a, "EUR") for n, a in taxes.items()},
        )  # fmt: skip

    rows = erp_taxes([
        held("1", "in_1", "invoice", {"VAT 20% FR": "20.00"}),
        held("2", "in_1", "invoice", {"VAT 20% FR": "20.00"}),
        held("3", "cn_1", "credit_note", {"VAT 20% FR": "3.33"}),
        held("4", None, "invoice", {"VAT 20% FR": "1.00"}),
    ])  # fmt: skip
    assert [(t.side, t.reference, t.amount) for t in rows] == [
        ("erp", "in_1", Decimal("20.00")), ("erp", "cn_1", Decimal("-3.33")),
    ]  # fmt: skip


def test_receivables_keep_their_side_and_sign() -> None:
    owed = [Receivable(customer_id="cus_1", amount=Money.of("-5.00", "GBP"))]
    [row] = receivables("erp", owed)
    assert (row.side, row.customer_id, row.currency, row.amount) == (
        "erp", "cus_1", "GBP", Decimal("-5.00"),
    )  # fmt: skip


def test_what_finance_rejected_is_neither_healed_nor_handed_back_nor_unexplained(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert REJECTED_BY_FINANCE in CLASSES and REJECTED_BY_FINANCE in EXPLAINED
    assert REJECTED_BY_FINANCE not in HEALABLE | EXCEPTIONS | IN_AGREEMENT
    assert REMEDIES[REJECTED_BY_FINANCE].startswith("None: finance rejected")
    # every class is in exactly one of the four sets
    groups = (IN_AGREEMENT, HEALABLE, EXPLAINED, EXCEPTIONS)
    assert sorted(c for g in groups for c in g) == sorted(CLASSES)
    recon_commands._print_result({
        "counts": {"matched": 3, "rejected_by_finance": 2, "amount_mismatch": 1},
        "in_agreement": 3, "healed": 0, "exceptions_opened": ["exception/recon/1"],
        "unexplained": 1,
    })  # fmt: skip
    printed = capsys.readouterr().out
    assert "2 explained by finance's decisions, 1 unexplained" in printed
