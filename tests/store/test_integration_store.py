"""The integration store on SQLite and PostgreSQL, schema made by the Alembic migrations."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import delete, inspect, text, update
from sqlalchemy.exc import DBAPIError

from adapters.store import AppendOnlyError, AuditEntry, DuplicatePostingError, IntegrationStore
from canonical import AccountRecord


@pytest.fixture
def store(store_url: str) -> Iterator[IntegrationStore]:
    store = IntegrationStore(store_url)
    store.migrate()
    yield store
    store.dispose()


def test_migrations_create_every_table_and_run_twice_harmlessly(store: IntegrationStore) -> None:
    store.migrate()
    tables = set(inspect(store.engine).get_table_names())
    assert {"account_links", "posting_journal", "audit_trail", "webhook_receipts"} <= tables


def _record(system: str, external_id: str, name: str) -> AccountRecord:
    return AccountRecord(system=system, external_id=external_id, customer_id="cus_1", name=name)  # type: ignore[arg-type]


def test_account_links_are_upserted_per_system(store: IntegrationStore) -> None:
    store.record_account_links(
        "cus_1", [_record("erp", "12", "A"), _record("support", "9", "A")], "wf"
    )
    store.record_account_links("cus_1", [_record("erp", "12", "B")], "wf2")
    links = {r.system: r for r in store.account_links("cus_1")}
    assert links["erp"].name == "B"
    assert links["support"].name == "A"
    assert store.account_links("cus_other") == []


def test_one_external_id_cannot_belong_to_two_customers(store: IntegrationStore) -> None:
    store.record_account_links("cus_1", [_record("erp", "12", "A")], "wf")
    clash = AccountRecord(system="erp", external_id="12", customer_id="cus_2", name="X")
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        store.record_account_links("cus_2", [clash], "wf")


def test_webhook_receipt_is_recorded_once(store: IntegrationStore) -> None:
    assert store.record_webhook_receipt("billing", "evt_1", "customer.created", "account/cus_1")
    assert not store.record_webhook_receipt("billing", "evt_1", "customer.created", "account/cus_1")
    receipt = store.webhook_receipt("billing", "evt_1")
    assert receipt is not None and receipt.workflow_id == "account/cus_1"
    assert store.webhook_receipt("support", "evt_1") is None
    assert store.has_webhook_receipt("billing", "evt_1")
    assert not store.has_webhook_receipt("support", "evt_1")


def test_webhook_receipts_in_a_batch_count_only_the_new_ones(store: IntegrationStore) -> None:
    assert store.record_webhook_receipt("billing", "evt_2", "invoice.paid", "subscription/s")
    batch = [("billing", f"evt_{n}", "invoice.paid", "subscription/s") for n in range(1, 302)]
    assert store.record_webhook_receipts(batch) == 300  # evt_2 was there; 301 rows, 3 inserts
    assert store.record_webhook_receipts(batch) == 0
    assert store.has_webhook_receipt("billing", "evt_301")


def test_audit_entries_keep_exact_amounts(store: IntegrationStore) -> None:
    store.append_audit(
        actor="fin-1",
        role="finance",
        action="credit.approved",
        subject="credit/1/2",
        reason="incident",
        amount=Decimal("12.345"),
        currency="KWD",
        correlation_id="c-1",
    )
    [entry] = store.audit_entries("credit/1/2")
    assert entry.amount == Decimal("12.345")
    assert (entry.actor, entry.role, entry.reason) == ("fin-1", "finance", "incident")


def test_audit_trail_refuses_updates_and_deletes_through_the_orm(store: IntegrationStore) -> None:
    entry_id = store.append_audit(actor="a", role="finance", action="x", subject="s")
    with pytest.raises(AppendOnlyError), store.session() as session:
        session.get(AuditEntry, entry_id).reason = "rewritten"  # type: ignore[union-attr]
    with pytest.raises(AppendOnlyError), store.session() as session:
        session.delete(session.get(AuditEntry, entry_id))
    assert store.audit_entries("s")[0].reason is None


@pytest.mark.parametrize(
    "statement",
    [update(AuditEntry).values(reason="rewritten"), delete(AuditEntry)],
    ids=["update", "delete"],
)
def test_audit_trail_refuses_updates_and_deletes_in_the_database(
    store: IntegrationStore, statement: object
) -> None:
    store.append_audit(actor="a", role="finance", action="x", subject="s")
    with pytest.raises(DBAPIError, match="append-only"), store.engine.begin() as conn:
        conn.execute(statement)  # type: ignore[call-overload]
    with store.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM audit_trail")).scalar() == 1


def _journal(store: IntegrationStore, erp_id: str, reference: str = "in_1") -> object:
    return store.record_posting(
        source_system="billing", source_document_id=reference, document_type="invoice",
        customer_id="cus_1", erp_document_id=erp_id, erp_number="INV-1",
        amount=Decimal("33.33"), currency="USD", workflow_id="subscription/sub_1",
        correlation_id="c",
    )  # fmt: skip


def test_journal_records_a_posting_once_and_refuses_a_second_erp_document(
    store: IntegrationStore,
) -> None:
    _journal(store, "17")
    _journal(store, "17")  # the same fact again (a retried activity) is harmless
    with pytest.raises(DuplicatePostingError, match="in_1"):
        _journal(store, "18")
    [posting] = store.postings("cus_1")
    assert (posting.erp_document_id, posting.amount) == ("17", Decimal("33.33"))
    assert store.find_posting("billing", "in_1") is not None
    assert store.find_posting("billing", "in_2") is None


def test_journal_takes_a_rejection_named_by_a_long_workflow_id(store: IntegrationStore) -> None:
    """`rejected:<exception id>` names the ledger it came from, longer than an ERP id."""
    exception = "exception/customer-ledger/cus_" + "N" * 60 + "/12"
    store.record_posting(
        source_system="billing", source_document_id="re_1/payout", document_type="refund",
        customer_id="cus_1", erp_document_id=f"rejected:{exception}", erp_number=None,
        amount=Decimal("5.00"), currency="USD", workflow_id="customer-ledger/cus_1",
        correlation_id=None,
    )  # fmt: skip
    posting = store.find_posting("billing", "re_1/payout")
    assert posting is not None and posting.erp_document_id == f"rejected:{exception}"


def test_credited_since_sums_support_credits_of_the_customer_only(
    store: IntegrationStore,
) -> None:
    def credit(
        reference: str, amount: str, workflow_id: str, customer: str = "cus_1", erp_id: str = ""
    ) -> None:
        store.record_posting(
            source_system="billing", source_document_id=reference, document_type="credit_note",
            customer_id=customer, erp_document_id=erp_id or reference, erp_number=None,
            amount=Decimal(amount), currency="USD", workflow_id=workflow_id, correlation_id=None,
        )  # fmt: skip

    credit("cbtxn_1", "40.00", "credit/1001/r1")
    credit("cbtxn_2", "15.50", "credit/1002/r1")
    credit("in_9/void", "99.00", "subscription/sub_1")  # an amendment, not a support credit
    credit("cbtxn_3", "70.00", "credit/1003/r1", customer="cus_2")
    # Finance rejected it: never given, so it counts for nothing (one by hand counts).
    credit("cbtxn_4", "25.00", "credit/1004/r1", erp_id="rejected:exception/credit/1004/r1/1")
    since = datetime.now(UTC) - timedelta(days=90)
    assert store.credited_since("cus_1", "USD", since) == Decimal("55.50")
    assert store.credited_since("cus_1", "EUR", since) == Decimal(0)
    assert store.credited_since("cus_1", "USD", datetime.now(UTC) + timedelta(days=1)) == 0


def test_system_health_rows_fold_what_each_worker_saw(store: IntegrationStore) -> None:
    from adapters.system_health import SystemObservation

    start = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    store.record_system_health([SystemObservation("erp", start, answered=True, failure=None)])
    down = start + timedelta(minutes=1)
    store.record_system_health(
        [
            SystemObservation("erp", down, answered=False, failure="unreachable"),
            SystemObservation("billing", down, answered=True, failure=None),
        ]
    )
    rows = {row.system: row for row in store.system_health()}
    assert set(rows) == {"billing", "erp"}
    erp = rows["erp"]
    assert erp.failing_since is not None and erp.failing_since.replace(tzinfo=UTC) == down
    assert erp.last_failure == "unreachable"
    store.record_system_health([SystemObservation("erp", down + timedelta(minutes=2), True, None)])
    assert {row.system: row.failing_since for row in store.system_health()}["erp"] is None
