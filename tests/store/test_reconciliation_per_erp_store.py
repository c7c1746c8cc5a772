"""Reconciliation of one ERP in the store, on SQLite and PostgreSQL: the run keeps its ERP,
billing's rows another ERP books are kept for the tickets and never compared, the journal
snapshot holds what the ERP booked, the bulk reads of which ERP booked what, and the
migration that brings the columns to a store with runs from before."""

from __future__ import annotations

from decimal import Decimal

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text

from activities.amendments import JournalEntry
from adapters.store import (
    ErpDocument,
    ExpectedPosting,
    IntegrationStore,
    ReconciliationStore,
    RunStateError,
    SupportCredit,
)
from adapters.store.erp_coexistence import ErpCoexistenceStore
from adapters.store.store import MIGRATIONS_DIR
from tests.store import test_reconciliation_store
from tests.store.test_reconciliation_store import PERIOD

RUN = "recon/tryton/2026-11-26@r1"
# The store on both databases, and its reconciliation tables, as the reconciliation tests have.
store = test_reconciliation_store.store
recon = test_reconciliation_store.recon


def expected(
    reference: str, amount: str, other_erp: str | None = None, *, kind: str = "invoice",
    case_id: str | None = None,
) -> ExpectedPosting:  # fmt: skip
    credit = kind == "credit_note"
    return ExpectedPosting(
        reference=reference, kind=kind, customer_id="cus_1", currency="USD",  # type: ignore[arg-type]
        amount=Decimal(amount), billing_document_id=reference,
        billing_kind="credit_note" if credit else "invoice", is_credit=credit, case_id=case_id,
        other_erp=other_erp,
    )  # fmt: skip


def held(erp_id: str, reference: str, amount: str) -> ErpDocument:
    return ErpDocument(erp_id, reference, "invoice", f"N{erp_id}", "USD", Decimal(amount),
                       "posted", "cus_1")  # fmt: skip


def journal(
    store: IntegrationStore, reference: str, erp: str | None, customer_id: str = "cus_1"
) -> None:
    store.record_posting(
        source_system="billing", source_document_id=reference, document_type="invoice",
        customer_id=customer_id, erp_document_id=f"erp-{reference}", erp_number=None,
        amount=Decimal("10.00"), currency="USD", workflow_id="subscription/sub_1",
        correlation_id=None, erp=erp, entity=None if erp is None else "EU",
    )  # fmt: skip


def test_a_run_keeps_the_erp_it_reconciled_and_another_erps_run_of_the_id_is_refused(
    recon: ReconciliationStore,
) -> None:
    run = recon.start_run(RUN, *PERIOD, "eu")
    assert run.erp == "eu" and recon.start_run(RUN, *PERIOD, "eu") == run
    assert [r.erp for r in recon.latest_runs()] == ["eu"]
    with pytest.raises(RunStateError, match="of ERP eu"):
        recon.start_run(RUN, *PERIOD, "tryton")
    assert recon.start_run("recon/2026-11-26@old", *PERIOD).erp is None  # from before routing


def test_rows_another_erp_books_are_never_compared_yet_match_supports_tickets(
    recon: ReconciliationStore,
) -> None:
    recon.start_run(RUN, *PERIOD, "tryton")
    recon.add_expected(RUN, [
        expected("in_own", "10.00"),
        expected("in_theirs", "20.00", "eu"),  # the other ERP's: not missing here
        expected("in_wrong_erp", "30.00", "eu"),  # this ERP holds it all the same
        expected("cn_theirs", "5.00", "eu", kind="credit_note", case_id="case_1"),
        expected("cn_no_case", "6.00", "eu", kind="credit_note"),  # the other ERP's to report
    ])  # fmt: skip
    recon.add_erp(RUN, [held("1", "in_own", "10.00"), held("2", "in_wrong_erp", "30.00")])
    recon.add_support_credits(RUN, [
        SupportCredit("case_1", "ticket", "cus_1", "USD", Decimal("5.00")),
        SupportCredit("case_2", "ticket", "cus_1", "USD", Decimal("7.00")),
    ])  # fmt: skip
    recon.snapshot_journal(RUN, *PERIOD, erp="tryton", before_routing=True)
    run = recon.classify(RUN)
    items = recon.items(RUN)
    found = sorted((i.classification, i.reference or i.case_id) for i in items)
    assert found == [
        ("matched", "in_own"),
        ("orphan_in_erp", "in_wrong_erp"),
        ("ticket_credit_without_billing", "case_2"),  # case_1's credit is booked in eu
    ]
    [wrong] = [i for i in items if i.reference == "in_wrong_erp"]
    assert wrong.detail == (
        "Billing's document belongs to ERP eu (journaled or routed there), not to this one"
    )
    assert (run.loaded["expected"], run.loaded["expected_other_erps"]) == (1, 4)
    assert recon.plain_sql_diff(RUN) == run.counts


def test_the_journal_snapshot_of_an_erp_holds_only_what_that_erp_booked(
    store: IntegrationStore, recon: ReconciliationStore
) -> None:
    journal(store, "in_before_routing", None)
    journal(store, "in_tryton", "tryton")
    journal(store, "in_eu", "eu")
    for run, erp, before_routing, references in (
        ("recon/eu/r", "eu", False, ["in_eu"]),
        ("recon/tryton/r", "tryton", True, ["in_before_routing", "in_tryton"]),
        ("recon/r", None, False, ["in_before_routing", "in_eu", "in_tryton"]),  # before routing
    ):
        recon.start_run(run, *PERIOD, erp)
        assert recon.snapshot_journal(run, *PERIOD, erp=erp, before_routing=before_routing) == len(
            references
        )
        recon.classify(run)
        found = sorted(i.reference for i in recon.items(run))
        assert found == references, run  # each posted but absent: the ERPs hold nothing


def test_which_erp_booked_what_is_read_for_many_references_at_once(
    store: IntegrationStore, recon: ReconciliationStore
) -> None:
    journal(store, "in_1", None, "cus_old")
    journal(store, "in_2", "eu", "cus_split")
    journal(store, "in_3", "tryton", "cus_split")
    references = ["in_1", "in_2", "in_3", "in_unknown", *(f"in_x{n}" for n in range(600))]
    assert recon.journaled_erps(references) == {"in_1": None, "in_2": "eu", "in_3": "tryton"}
    assert recon.customer_journal_erps(["cus_old", "cus_split", "cus_new"]) == {
        "cus_old": {None}, "cus_split": {"eu", "tryton"},
    }  # fmt: skip
    recon.start_run(RUN, *PERIOD, "tryton")
    recon.add_expected(RUN, [expected("in_a", "1.00"), expected("in_b", "2.00", "eu")])
    assert recon.expected_erps(RUN, ["in_a", "in_b", "in_c"]) == {"in_a": None, "in_b": "eu"}
    ErpCoexistenceStore(store).record_shadow_posting(JournalEntry(
        reference="in_3", document_type="invoice", customer_id="cus_split", erp_document_id="9",
        erp_number="N9", amount=Decimal("10.00"), currency="USD", workflow_id="w", erp="eu",
        entity="EU",
    ))  # fmt: skip
    assert recon.shadowed_in("eu", ["in_3", "in_2"]) == {"in_3"}
    assert recon.shadowed_in("tryton", ["in_3"]) == set()


def test_the_migration_brings_the_erp_columns_to_a_store_with_runs_from_before(
    store_url: str,
) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = store_url
    command.upgrade(config, "0009")
    store = IntegrationStore(store_url)
    try:
        with store.engine.begin() as conn:
            conn.execute(text(
                "INSERT INTO recon_runs (run_id, period_start, period_end, status, started_at,"
                " loaded, totals, healed_count, exception_count) VALUES ('recon/old', :start,"
                " :end, 'done', :start, '{}', '{}', 0, 0)"
            ), {"start": PERIOD[0], "end": PERIOD[1]})  # fmt: skip
        store.migrate()
        recon = ReconciliationStore(store)
        old = recon.run("recon/old")
        assert old is not None and old.erp is None
        recon.start_run(RUN, *PERIOD, "eu")
        recon.add_expected(RUN, [expected("in_b", "2.00", "eu")])
        assert recon.expected_erps(RUN, ["in_b"]) == {"in_b": "eu"}
        command.downgrade(config, "0009")
        command.upgrade(config, "head")
    finally:
        store.dispose()
