"""The outbox on SQLite and PostgreSQL: each business fact's event written in the transaction
that records the fact, once per id, and the analytics table fed once per id."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from adapters.events.envelope import MAX_EVENT_BYTES, EventTooLarge, envelope, read_event
from adapters.store import DuplicatePostingError, IntegrationStore, ReconciliationStore
from canonical import AccountRecord
from canonical.facts import BY_TYPE, ExceptionDecided, ExceptionOpened
from canonical.money import Money


@pytest.fixture
def store(store_url: str) -> Iterator[IntegrationStore]:
    store = IntegrationStore(store_url)
    store.migrate()
    yield store
    store.dispose()


POSTED = "com.ledgerbridge.ledger.document_posted.v1"
PAID = "com.ledgerbridge.ledger.payment_posted.v1"


def journal(store: IntegrationStore, reference: str, **changes: object) -> None:
    entry: dict[str, object] = {
        "source_system": "billing", "source_document_id": reference, "document_type": "invoice",
        "customer_id": "cus_1", "erp_document_id": f"erp-{reference}", "erp_number": None,
        "amount": Decimal("12.34"), "currency": "USD", "workflow_id": "subscription/sub_1",
        "correlation_id": "corr-1",
    }  # fmt: skip
    store.record_posting(**{**entry, **changes})  # type: ignore[arg-type]


def test_a_posting_writes_its_event_once_with_the_canonical_data(store: IntegrationStore) -> None:
    journal(store, "in_1")
    journal(store, "in_1")  # recorded again (a retried activity): no second event
    [event] = store.outbox_events()
    assert (event.event_type, event.subject, event.published_at) == (POSTED, "in_1", None)
    cloud = read_event(event.body.encode())
    assert cloud.get_id() == event.event_id and cloud.get_source() == "/ledgerbridge/ledger"
    assert cloud.get_extension("correlationid") == "corr-1"
    data = BY_TYPE[POSTED].model_validate(cloud.get_data())
    assert data.amount == Money.of("12.34", "USD")  # type: ignore[attr-defined]
    assert data.erp_document_id == "erp-in_1" and not data.manual  # type: ignore[attr-defined]


def test_a_refused_duplicate_posting_writes_no_event(store: IntegrationStore) -> None:
    journal(store, "in_2")
    with pytest.raises(DuplicatePostingError):
        journal(store, "in_2", erp_document_id="another")
    assert len(store.outbox_events()) == 1


def test_payments_credits_and_rejections(store: IntegrationStore) -> None:
    journal(store, "py_1", document_type="payment")
    journal(store, "cn_1", document_type="credit_note", workflow_id="credit/77/r1")
    journal(store, "in_3", erp_document_id="rejected:exception/subscription/sub_1/1")
    journal(store, "in_4", erp_document_id="manual:INV-9", erp_number="INV-9")
    types = [(e.event_type, e.subject) for e in store.outbox_events()]
    assert types == [
        (PAID, "py_1"),
        (POSTED, "cn_1"),
        ("com.ledgerbridge.credit.applied.v1", "credit/77/r1"),
        (POSTED, "in_4"),  # the rejected one is the exception's decision, not a posting
    ]
    manual = read_event(store.outbox_events()[-1].body.encode()).get_data()
    assert isinstance(manual, dict) and manual["manual"] is True


def test_decisions_of_the_audit_trail_are_events_and_other_rows_are_not(
    store: IntegrationStore,
) -> None:
    store.append_audit(actor="fin", role="finance", action="credit.approved",
                       subject="credit/5/r", reason="ok", amount=Decimal("50.00"),
                       currency="EUR", details={"case_id": "5"})  # fmt: skip
    store.append_audit(actor="fin", role="finance", action="exception.reject",
                       subject="exception/subscription/s/1", reason="wrong",
                       details={"process": "amendment_to_erp"})  # fmt: skip
    store.append_audit(actor="ledgerbridge", role="system", action="exception.opened",
                       subject="exception/credit/5/r/1", reason="apply_credit: RejectedError",
                       amount=Decimal("50.00"), currency="EUR",
                       details={"process": "case_to_credit", "origin_workflow_id": "credit/5/r",
                                "step": "apply_credit", "customer_id": "cus_1",
                                "subscription_id": None, "invoice_id": "in_1", "case_id": "5",
                                "error_type": "RejectedError", "error_message": "paid",
                                "allowed_decisions": ["compensate", "reject"]})  # fmt: skip
    store.append_audit(actor="ops", role="ops", action="reconciliation.started",
                       subject="recon/2026-12-01")  # fmt: skip
    events = store.outbox_events()
    assert [e.event_type for e in events] == [
        "com.ledgerbridge.credit.approved.v1",
        "com.ledgerbridge.finance.exception_decided.v1",
        "com.ledgerbridge.finance.exception_opened.v1",
    ]
    opened = ExceptionOpened.model_validate(read_event(events[2].body.encode()).get_data())
    assert (opened.step, opened.amount, opened.allowed_decisions) == (
        "apply_credit", Money.of("50.00", "EUR"), ["compensate", "reject"],
    )  # fmt: skip
    decided = ExceptionDecided.model_validate(read_event(events[1].body.encode()).get_data())
    assert (decided.decision, decided.process, decided.amount) == (
        "reject", "amendment_to_erp", None,
    )  # fmt: skip


def test_a_sync_and_a_finished_run_are_events(store: IntegrationStore) -> None:
    record = AccountRecord(system="erp", external_id="12", customer_id="cus_9", name="A")
    store.record_account_links("cus_9", [record], "account/cus_9", step="run-1/3")
    store.record_account_links("cus_9", [record], "account/cus_9", step="run-1/3")  # retried
    store.record_account_links("cus_9", [record], "account/cus_9", step="run-2/3")  # next sync
    recon = ReconciliationStore(store)
    start = datetime(2026, 12, 1, tzinfo=UTC)
    recon.start_run("recon/2026-12-01@x", start, start.replace(day=2))
    recon.finish_run("recon/2026-12-01@x", "done", healed=1, exceptions=2)
    events = [(e.event_type, e.subject) for e in store.outbox_events()]
    assert events == [
        ("com.ledgerbridge.account.synced.v1", "cus_9"),
        ("com.ledgerbridge.account.synced.v1", "cus_9"),
        ("com.ledgerbridge.reconciliation.finished.v1", "recon/2026-12-01@x"),
    ]


def test_the_relay_reads_in_order_and_marks_what_it_published(store: IntegrationStore) -> None:
    for n in range(5):
        journal(store, f"in_o{n}")
    first = store.unpublished_events(limit=3)
    assert [e.subject for e in first] == ["in_o0", "in_o1", "in_o2"]
    store.mark_events_published([e.seq for e in first])
    assert [e.subject for e in store.unpublished_events()] == ["in_o3", "in_o4"]


def test_the_analytics_table_keeps_each_event_once(store: IntegrationStore) -> None:
    journal(store, "in_a", amount=Decimal("1500"), currency="JPY")
    journal(store, "py_a", document_type="payment", amount=Decimal("9.99"), currency="KWD")
    bodies = [e.body for e in store.unpublished_events()]
    assert store.append_business_events(bodies) == 2
    assert store.append_business_events(bodies) == 0  # delivered again: nothing new
    rows = {r.subject: r for r in store.business_events("cus_1")}
    assert (rows["in_a"].amount_minor, rows["in_a"].currency) == (1500, "JPY")
    assert (rows["py_a"].amount_minor, rows["py_a"].currency) == (9990, "KWD")
    assert rows["py_a"].event_type == PAID and rows["py_a"].correlation_id == "corr-1"


def test_an_oversized_event_is_refused_and_its_fact_not_recorded(store: IntegrationStore) -> None:
    reason = "x" * MAX_EVENT_BYTES
    with pytest.raises(EventTooLarge):
        store.append_audit(actor="fin", role="finance", action="credit.rejected",
                           subject="credit/6/r", reason=reason)  # fmt: skip
    assert store.audit_entries("credit/6/r") == []  # the same transaction: rolled back
    assert store.outbox_events() == []


def test_an_event_id_is_the_same_for_the_same_step_and_differs_otherwise() -> None:
    fact = ExceptionDecided(
        exception_id="e", process=None, origin_workflow_id=None, decision="retry", actor="a",
        role="finance", reason=None, manual_erp_number=None, amount=None,
        decided_at=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip
    at = datetime.now(UTC)
    one = envelope(fact, workflow_id="w", step="s", subject="e", time=at)
    again = envelope(fact, workflow_id="w", step="s", subject="e", time=at)
    other = envelope(fact, workflow_id="w", step="t", subject="e", time=at)
    assert one.event_id == again.event_id != other.event_id
    assert json.loads(one.body)["specversion"] == "1.0"


def test_published_events_older_than_kept_are_removed_and_unpublished_ones_stay(
    store: IntegrationStore,
) -> None:
    for reference in ("in_p1", "in_p2", "in_p3"):
        journal(store, reference)
    first, second, _third = store.unpublished_events()
    store.mark_events_published([first.seq, second.seq])
    assert store.purge_published_events(datetime.now(UTC) - timedelta(days=1)) == 0  # too young
    assert store.purge_published_events(datetime.now(UTC) + timedelta(seconds=1)) == 2
    assert [e.subject for e in store.outbox_events()] == ["in_p3"]  # never published: kept
