"""The console's customer view over HTTP: the customer's ids in each system, recent journal
postings, credits, open exceptions and running processes (from visibility by CustomerId),
with links to the item pages and the Web UI; escaped; readers only; a silent workflow
engine leaves the store's part standing."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from adapters import visibility
from canonical import AccountRecord
from starters.api.temporal import TemporalUnavailable
from tests.unit import test_console_pages
from tests.unit.test_console_pages import EXCEPTION_ID, MARKUP, Console, assert_console_headers

console = test_console_pages.console  # the signed-in console over fakes of the API's reads
CUSTOMER = "cus_Console1"


def execution(workflow_id: str, status: WorkflowExecutionStatus, process: str) -> Any:
    attributes = TypedSearchAttributes([
        SearchAttributePair(visibility.BUSINESS_PROCESS, process),
        SearchAttributePair(visibility.PROCESS_STATUS, "awaiting_approval"),
        SearchAttributePair(visibility.CUSTOMER_ID, CUSTOMER),
    ])  # fmt: skip
    return SimpleNamespace(
        id=workflow_id, run_id="run-9", workflow_type="Workflow", status=status,
        start_time=datetime(2026, 11, 2, 9, 30, tzinfo=UTC), typed_search_attributes=attributes,
    )  # fmt: skip


@dataclass
class FakeVisibility:
    """Temporal's client as the customer view lists workflows; records the queries."""

    queries: list[str] = field(default_factory=list)
    down: bool = False

    async def list_workflows(self, query: str, limit: int) -> Any:
        self.queries.append(query)
        for found in (
            execution("credit/41/goodwill-1", WorkflowExecutionStatus.RUNNING, "case_to_credit"),
            execution("credit/40/old", WorkflowExecutionStatus.COMPLETED, "case_to_credit"),
            execution(f"account/{CUSTOMER}", WorkflowExecutionStatus.COMPLETED, "account_sync"),
            execution("subscription/sub_9", WorkflowExecutionStatus.RUNNING, "subscription_ledger"),
        ):
            yield found


@pytest.fixture
def temporal(console: Console, monkeypatch: pytest.MonkeyPatch) -> FakeVisibility:
    fake = FakeVisibility()

    async def client() -> FakeVisibility:
        if fake.down:
            raise TemporalUnavailable("connection refused")
        return fake

    monkeypatch.setattr(console.client.app.state.temporal, "client", client)  # type: ignore[attr-defined]
    return fake


def seed(console: Console) -> None:
    records = [
        AccountRecord(system="erp", external_id="PARTY-7", customer_id=CUSTOMER, name=MARKUP),
        AccountRecord(system="support", external_id="9001", customer_id=CUSTOMER, name="Acme"),
    ]
    console.store.record_account_links(CUSTOMER, records, f"account/{CUSTOMER}")
    console.store.record_posting(
        source_system="billing", source_document_id="in_77", document_type="invoice",
        customer_id=CUSTOMER, erp_document_id="12", erp_number="INV-12",
        amount=Decimal("1200.00"), currency="USD", workflow_id="subscription/sub_9",
        correlation_id=None,
    )  # fmt: skip
    console.store.record_posting(
        source_system="billing", source_document_id="cn_5", document_type="credit_note",
        customer_id=CUSTOMER, erp_document_id="13", erp_number="CN-13",
        amount=Decimal("8.00"), currency="USD", workflow_id="credit/41/goodwill-1",
        correlation_id=None,
    )  # fmt: skip


def test_finance_sees_the_customers_ids_postings_credits_exceptions_and_processes(
    console: Console, temporal: FakeVisibility
) -> None:
    seed(console)
    console.sign_in("finance")
    page = console.client.get(f"/console/customers/{CUSTOMER}")
    assert page.status_code == 200, page.text
    assert_console_headers(page)
    text = page.text
    assert "PARTY-7" in text and "9001" in text
    assert MARKUP not in text and "&lt;script&gt;" in text
    assert "INV-12" in text and "1200.00 USD" in text and "CN-13" in text
    assert f'href="/console/items/{EXCEPTION_ID}"' in text  # the open exception
    assert 'href="/console/items/credit/41/goodwill-1"' in text  # a credit, and who posted
    assert "credit/40/old" in text and "completed" in text  # a closed credit still listed
    running = text.split('id="running-title"')[1].split('id="postings-title"')[0]
    assert "subscription/sub_9" in running and "credit/40/old" not in running
    assert "/namespaces/default/workflows/subscription%2Fsub_9/run-9/history" in running
    assert temporal.queries == [f"CustomerId = '{CUSTOMER}'"]


def test_only_readers_see_a_customer_and_a_bad_id_is_refused_before_any_query(
    console: Console, temporal: FakeVisibility
) -> None:
    console.sign_in("support")
    assert console.client.get(f"/console/customers/{CUSTOMER}").status_code == 403
    console.sign_in("ops")
    bad = console.client.get("/console/customers/cus_x' OR '1'='1")
    assert bad.status_code == 422 and temporal.queries == []
    find = console.client.get("/console/customers", params={"customer": f" {CUSTOMER} "},
                              follow_redirects=False)  # fmt: skip
    assert find.status_code == 303 and find.headers["location"] == f"/console/customers/{CUSTOMER}"
    assert console.client.get("/console/customers?customer=%3Cb%3E").status_code == 422
    form = console.client.get("/console/customers")
    assert 'for="c-id"' in form.text and 'href="/console/customers"' in form.text


def test_without_the_workflow_engine_the_store_part_still_shows(
    console: Console, temporal: FakeVisibility
) -> None:
    seed(console)
    temporal.down = True
    console.sign_in("finance")
    page = console.client.get(f"/console/customers/{CUSTOMER}")
    assert page.status_code == 200
    assert "did not answer" in page.text and "INV-12" in page.text and "PARTY-7" in page.text
