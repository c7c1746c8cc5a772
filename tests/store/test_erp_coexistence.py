"""The store of a move between ERPs, on SQLite and PostgreSQL: steps once each, audited with
them; shadow postings once per document and ERP; the journal's postings per entity and day."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from types import SimpleNamespace

import pytest

from adapters.store import IntegrationStore
from adapters.store.erp_coexistence import ErpCoexistenceStore, ModeChangeRefused


@pytest.fixture
def store(store_url: str) -> Iterator[IntegrationStore]:
    store = IntegrationStore(store_url)
    store.migrate()
    yield store
    store.dispose()


def take(coexistence: ErpCoexistenceStore, mode: str, refusal: str | None = None) -> None:
    coexistence.change_mode(
        entity="EU", mode=mode, effective_from=date(2026, 12, 7), actor="controller",
        role="finance_admin", reason="move", refusal=lambda _steps: refusal,
    )  # fmt: skip


def test_a_step_is_recorded_with_its_audit_row_and_taken_once(store: IntegrationStore) -> None:
    coexistence = ErpCoexistenceStore(store)
    take(coexistence, "shadow")
    with pytest.raises(ModeChangeRefused, match="already taken the shadow step"):
        take(coexistence, "shadow")  # what two controllers at once would do
    with pytest.raises(ModeChangeRefused, match="not today"):
        take(coexistence, "cutover", refusal="not today")
    assert [(c.entity, c.mode, c.changed_by) for c in coexistence.mode_changes()] == [
        ("EU", "shadow", "controller")]  # fmt: skip
    assert [(a.action, a.details["mode"]) for a in store.audit_entries()] == [
        ("erp.mode_changed", "shadow")]  # fmt: skip


def shadow_entry(reference: str, erp_document_id: str) -> SimpleNamespace:
    return SimpleNamespace(
        reference=reference, document_type="invoice", customer_id="cus_1",
        erp_document_id=erp_document_id, erp_number="INV-1", amount=Decimal("12.50"),
        currency="EUR", workflow_id="subscription/sub_1", erp="netsuite", entity="EU",
    )  # fmt: skip


def test_a_shadow_posting_is_kept_once_per_document_and_erp(store: IntegrationStore) -> None:
    coexistence = ErpCoexistenceStore(store)
    coexistence.record_shadow_posting(shadow_entry("in_1", "101"))  # type: ignore[arg-type]
    coexistence.record_shadow_posting(shadow_entry("in_1", "999"))  # type: ignore[arg-type]
    found = coexistence.shadow_postings("EU", ["in_1", "in_2"])
    assert list(found) == ["in_1"] and found["in_1"].erp_document_id == "101"
    with pytest.raises(ValueError, match="names no ERP"):
        coexistence.record_shadow_posting(
            SimpleNamespace(**{**vars(shadow_entry("in_3", "1")), "erp": None})
        )  # type: ignore[arg-type]


def test_book_postings_are_the_entitys_of_the_day(store: IntegrationStore) -> None:
    for reference, entity in (("in_1", "EU"), ("in_2", "US"), ("in_3", "EU")):
        store.record_posting(
            source_system="billing", source_document_id=reference, document_type="invoice",
            customer_id="cus_1", erp_document_id=f"erp-{reference}", erp_number=None,
            amount=Decimal(10), currency="EUR", workflow_id="w", correlation_id=None,
            erp="tryton", entity=entity,
        )  # fmt: skip
    today = datetime.now(UTC).date()
    coexistence = ErpCoexistenceStore(store)
    assert [p.source_document_id for p in coexistence.book_postings("EU", today)] == [
        "in_1", "in_3"]  # fmt: skip
    assert coexistence.book_postings("EU", date(2020, 1, 1)) == []
    assert store.find_posting("billing", "in_2").erp == "tryton"  # type: ignore[union-attr]
