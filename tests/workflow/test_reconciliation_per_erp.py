"""Reconciliation per ERP through the real loader and store activities, over a routing of two
ERPs: an entity that went through shadow into cutover, its documents, payments, credits,
shadow copies and receivables, each compared in the run of the ERP that books it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import ScheduleActionStartWorkflow
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.amendments import JournalEntry
from activities.reconciliation import (
    BillingReconciliationActivities,
    ErpReconciliationActivities,
    JournalSnapshotInput,
    LoadPageInput,
    ReconciliationStoreActivities,
    RunErpInput,
    RunRef,
    StartRunInput,
    SupportReconciliationActivities,
)
from adapters.settings import Settings
from adapters.store import IntegrationStore
from adapters.store.erp_coexistence import ErpCoexistenceStore
from adapters.store.reconciliation import ReconciliationStore
from canonical import BillingDocument, Customer, Money, Payment, Refund
from canonical.customer import PostalAddress
from canonical.reconciliation import (
    BillingDocumentPage,
    BillingPaymentPage,
    BillingRefundPage,
    LedgerDocument,
    LedgerDocumentPage,
    LedgerPayment,
    LedgerPaymentPage,
    Receivable,
    ReceivablePage,
    TicketCredit,
    TicketCreditPage,
)
from starters.reconciliation import apply_schedules
from tests.unit.test_erp_routing_api import ROUTING as NETSUITE_ROUTING
from tests.unit.test_posting_policy import FINALIZED, document, line
from tests.unit.test_reconciliation_erps import ROUTING  # EU: tryton, then eu; US: tryton
from workflows.reconciliation import ReconciliationInput

# A routing file of the same two ERPs.
ROUTING_FILE = (
    NETSUITE_ROUTING.replace("[erps.netsuite]", "[erps.eu]")
    .replace('"erp-netsuite"', '"erp-eu"')
    .replace('target = "netsuite"', 'target = "eu"')
)
DAY = FINALIZED.date()  # the documents' day: EU is in cutover from it
PERIOD = {"period_start": datetime(2026, 11, 14, tzinfo=UTC),
          "period_end": datetime(2026, 11, 15, tzinfo=UTC)}  # fmt: skip
GERMANY = PostalAddress(country="DE")


def usd(amount: str) -> Money:
    return Money.of(amount, "USD")


def invoice(document_id: str, customer_id: str, amount: str, **changes: Any) -> BillingDocument:
    return document(line("l1", amount), document_id=document_id, customer_id=customer_id,
                    **changes)  # fmt: skip


class Billing:
    """Billing's pages for the day: a US invoice; EU's invoice booked in the legacy ERP during
    shadow (for a customer EU also booked since), EU's invoice, payment and support credit
    booked in the target, one EU invoice posted nowhere, and one US invoice the target holds
    by mistake; what three customers owe."""

    customers = {
        "cus_us": Customer(customer_id="cus_us", name="US Co"),
        "cus_eu": Customer(customer_id="cus_eu", name="EU GmbH", address=GERMANY),
        "cus_split": Customer(customer_id="cus_split", name="Old EU AG", address=GERMANY),
    }

    async def get_customer(self, customer_id: str) -> Customer:
        return self.customers[customer_id]

    async def invoice_page(self, *_: Any) -> BillingDocumentPage:
        during_shadow = datetime(2026, 11, 12, tzinfo=UTC)
        return BillingDocumentPage(documents=[
            invoice("in_us", "cus_us", "10.00"),
            invoice("in_shadowed", "cus_split", "15.00", created_at=during_shadow,
                    finalized_at=during_shadow),
            invoice("in_eu", "cus_eu", "20.00", status="paid"),
            invoice("in_eu_missing", "cus_eu", "25.00"),
            invoice("in_wrong", "cus_us", "30.00"),
        ])  # fmt: skip

    async def credit_note_page(self, *_: Any) -> BillingDocumentPage:
        return BillingDocumentPage(documents=[
            # given back out of band: the payout follows the credit note into its ERP
            document(line("l1", "5.00"), document_id="cn_eu", kind="credit_note",
                     status="issued", customer_id="cus_eu", invoice_id="in_eu",
                     metadata={"case_id": "case_9"}, out_of_band_amount=usd("5.00")),
        ])  # fmt: skip

    async def payment_page(self, *_: Any) -> BillingPaymentPage:
        return BillingPaymentPage(payments=[
            Payment(payment_id="inpay_eu", invoice_id="in_eu", customer_id="cus_eu",
                    status="paid", amount=usd("20.00"), method="card", paid_at=FINALIZED),
        ])  # fmt: skip

    async def refund_page(self, *_: Any) -> BillingRefundPage:
        # without a credit note: its own credit note and payout, routed by the refund's date
        return BillingRefundPage(refunds=[
            Refund(refund_id="re_eu", charge_id="ch_eu", payment_id="inpay_eu",
                   invoice_id="in_eu", customer_id="cus_eu", status="succeeded",
                   amount=usd("3.00"), created_at=FINALIZED),
        ])  # fmt: skip

    async def open_receivable_page(self, *_: Any) -> ReceivablePage:
        return ReceivablePage(receivables=[
            Receivable(customer_id="cus_us", amount=usd("40.00")),
            Receivable(customer_id="cus_eu", amount=usd("20.00")),
            # split: 3.00 open in the legacy ERP, 2.00 in the target
            Receivable(customer_id="cus_split", amount=usd("5.00")),
        ])  # fmt: skip


class Support:
    async def credit_ticket_page(self, *_: Any) -> TicketCreditPage:
        def ticket(case_id: str, customer_id: str) -> TicketCredit:
            return TicketCredit(case_id=case_id, customer_id=customer_id, amount=usd("5.00"),
                                updated_at=FINALIZED)  # fmt: skip

        # case_9's credit is booked in the target; case_404 has none anywhere in billing
        return TicketCreditPage(tickets=[ticket("case_9", "cus_eu"), ticket("case_404", "cus_us")])


class Ledger:
    """One ERP's pages: its documents, payments and receivables."""

    def __init__(
        self, documents: list[tuple[str, str, str, str]],
        payments: list[tuple[str, str, str, str]], owed: dict[str, str],
    ) -> None:  # fmt: skip
        self.documents, self.payments, self.owed = documents, payments, owed

    async def document_page(self, *_: Any) -> LedgerDocumentPage:
        return LedgerDocumentPage(documents=[
            LedgerDocument(erp_document_id=str(n), reference=reference, kind=kind,  # type: ignore[arg-type]
                           number=f"N{n}", total=usd(total), state="posted",
                           customer_id=customer_id, document_date=DAY)
            for n, (reference, kind, total, customer_id) in enumerate(self.documents, 1)
        ])  # fmt: skip

    async def payment_page(self, *_: Any) -> LedgerPaymentPage:
        return LedgerPaymentPage(payments=[
            LedgerPayment(erp_document_id=str(n), reference=reference, kind=kind,  # type: ignore[arg-type]
                          amount=usd(amount), applies_to=applies_to, customer_id="cus_eu",
                          payment_date=DAY, state="posted")
            for n, (reference, kind, amount, applies_to) in enumerate(self.payments, 1)
        ])  # fmt: skip

    async def open_receivable_page(self, *_: Any) -> ReceivablePage:
        return ReceivablePage(receivables=[
            Receivable(customer_id=customer_id, amount=usd(amount))
            for customer_id, amount in self.owed.items()
        ])  # fmt: skip


LEDGERS = {
    "tryton": Ledger(
        [("in_us", "invoice", "10.00", "cus_us"), ("in_shadowed", "invoice", "15.00", "cus_split")],
        [],
        {"cus_us": "40.00", "cus_split": "3.00"},
    ),
    "eu": Ledger(
        [("in_eu", "invoice", "20.00", "cus_eu"), ("cn_eu", "credit_note", "5.00", "cus_eu"),
         ("re_eu", "credit_note", "3.00", "cus_eu"),
         # the shadow copy of the legacy ERP's document, and a US document booked here wrongly
         ("in_shadowed", "invoice", "15.00", "cus_split"),
         ("in_wrong", "invoice", "30.00", "cus_us")],
        [("inpay_eu", "payment", "20.00", "in_eu"),
         ("cn_eu/out_of_band", "refund", "5.00", "cn_eu"),
         ("re_eu/payout", "refund", "3.00", "re_eu")],
        {"cus_eu": "20.00", "cus_split": "2.00"},
    ),
}  # fmt: skip


def journal(store: IntegrationStore, reference: str, customer_id: str, erp: str | None,
            entity: str | None, amount: str, kind: str = "invoice") -> None:  # fmt: skip
    store.record_posting(
        source_system="billing", source_document_id=reference, document_type=kind,
        customer_id=customer_id, erp_document_id=f"erp-{reference}", erp_number=None,
        amount=Decimal(amount), currency="USD", workflow_id="seeded", correlation_id=None,
        erp=erp, entity=entity,
    )  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Iterator[IntegrationStore]:
    store = IntegrationStore(f"sqlite:///{tmp_path / 'store.sqlite'}")
    store.migrate()
    moves = ErpCoexistenceStore(store)
    for mode, on in (("shadow", date(2026, 11, 10)), ("cutover", DAY)):
        moves.change_mode(
            entity="EU", mode=mode, effective_from=on, actor="controller",
            role="finance_admin", reason="the move", refusal=lambda _: None,
        )  # fmt: skip
    journal(store, "in_us", "cus_us", None, None, "10.00")  # booked before routing
    journal(store, "in_shadowed", "cus_split", "tryton", "EU", "15.00")
    moves.record_shadow_posting(JournalEntry(
        reference="in_shadowed", document_type="invoice", customer_id="cus_split",
        erp_document_id="3", erp_number="N3", amount=Decimal("15.00"), currency="USD",
        workflow_id="seeded", erp="eu", entity="EU",
    ))  # fmt: skip
    journal(store, "in_split_later", "cus_split", "eu", "EU", "2.00")  # of another period
    journal(store, "in_eu", "cus_eu", "eu", "EU", "20.00")
    yield store
    store.dispose()


async def reconcile(store: IntegrationStore, erp: str) -> tuple[dict[str, int], list[Any], int]:
    """One run of `erp` through the loaders the worker wires: its counts per class, its
    items, and how many customers' receivables it left uncompared."""
    env = ActivityEnvironment()
    steps = ReconciliationStoreActivities(store, ROUTING)
    billing = BillingReconciliationActivities(store, Billing(), None, ROUTING)  # type: ignore[arg-type]
    ledger = ErpReconciliationActivities(store, LEDGERS[erp], ROUTING)  # type: ignore[arg-type]
    support = SupportReconciliationActivities(store, Support())  # type: ignore[arg-type]
    target = steps.erp_of_run(RunErpInput(erp=None if erp == "tryton" else erp))
    period = {"run_id": f"recon/{erp}/run", **PERIOD, "erp": target.erp}
    steps.start_run(StartRunInput(**period))
    uncompared = 0
    for source in ("invoices", "credit_notes", "payments", "refunds", "receivables"):
        page = await env.run(billing.load_billing_page, LoadPageInput(**period, source=source))  # type: ignore[arg-type]
        uncompared += page.receivables_not_compared
    steps.snapshot_journal(JournalSnapshotInput(**period))
    for source in ("erp", "erp_payments", "erp_receivables"):
        await env.run(ledger.load_erp_page, LoadPageInput(**period, source=source))  # type: ignore[arg-type]
    if target.compares_tickets:
        await env.run(support.load_ticket_page, LoadPageInput(**period, source="tickets"))
    counts = steps.classify(RunRef(run_id=period["run_id"])).counts
    items = ReconciliationStore(store).items(period["run_id"])
    return {cls: n for cls, n in counts.items() if n}, items, uncompared


def found(items: list[Any]) -> list[tuple[str, str | None]]:
    return sorted((i.classification, i.reference or i.case_id) for i in items)


async def test_each_erps_run_compares_what_that_erp_books_and_nothing_else(
    store: IntegrationStore,
) -> None:
    counts, items, uncompared = await reconcile(store, "tryton")
    assert found(items) == [
        ("matched", "in_shadowed"),  # booked here during shadow: here it is compared
        ("matched", "in_us"),  # journaled before routing: the erp queue's ERP booked it
        ("missing_in_erp", "in_wrong"),  # routed here, held by the other ERP
        ("ticket_credit_without_billing", "case_404"),
    ], counts
    assert uncompared == 1  # cus_split: documents in both ERPs
    assert ReconciliationStore(store).run("recon/tryton/run").erp == "tryton"  # type: ignore[union-attr]

    counts, items, uncompared = await reconcile(store, "eu")
    assert found(items) == [
        ("matched", "cn_eu"),  # not journaled: routed by its date, in cutover
        ("matched", "cn_eu/out_of_band"),
        ("matched", "in_eu"),
        ("matched", "inpay_eu"),  # follows the invoice it pays
        ("matched", "re_eu"),
        ("matched", "re_eu/payout"),
        ("missing_in_erp", "in_eu_missing"),  # found by the target's run only
        ("orphan_in_erp", "in_wrong"),
    ], counts
    [wrong] = [i for i in items if i.reference == "in_wrong"]
    assert wrong.detail is not None and "belongs to ERP tryton" in wrong.detail
    assert uncompared == 1


async def test_a_ticket_is_matched_with_a_credit_whichever_erp_books_it_in_one_run_only(
    store: IntegrationStore,
) -> None:
    """case_9's credit note is booked in the target, yet the home ERP's run, the one that
    reads support, finds billing holds it; the target's run reads no tickets."""
    _, home, _ = await reconcile(store, "tryton")
    _, target, _ = await reconcile(store, "eu")
    assert [i.case_id for i in home if i.classification.startswith("ticket")] == ["case_404"]
    assert not [i for i in target if i.classification.startswith("ticket")]


async def test_a_receivable_is_compared_where_all_the_customers_documents_are(
    store: IntegrationStore,
) -> None:
    LEDGERS["eu"].owed["cus_eu"] = "19.00"
    try:
        _, home, _ = await reconcile(store, "tryton")
        _, target, _ = await reconcile(store, "eu")
    finally:
        LEDGERS["eu"].owed["cus_eu"] = "20.00"
    differs = [(i.customer_id, i.billing_amount, i.erp_amount) for i in target
               if i.classification == "receivable_differs"]  # fmt: skip
    assert differs == [("cus_eu", Decimal("20.00"), Decimal("19.00"))]
    # neither run compares cus_split's 5.00 with 3.00 or 2.00, nor cus_eu in the home run
    assert not [i for i in home if i.classification == "receivable_differs"]


def test_a_run_of_an_erp_the_routing_does_not_have_fails_and_is_not_retried(
    store: IntegrationStore,
) -> None:
    steps = ReconciliationStoreActivities(store, ROUTING)
    with pytest.raises(ApplicationError, match="no ERP 'netsuite'") as refused:
        steps.erp_of_run(RunErpInput(erp="netsuite"))
    assert refused.value.non_retryable
    home = steps.erp_of_run(RunErpInput())
    assert (home.erp, home.queue, home.compares_tickets) == ("tryton", "erp", True)
    eu = steps.erp_of_run(RunErpInput(erp="eu"))
    assert (eu.erp, eu.queue, eu.compares_tickets) == ("eu", "erp-eu", False)


async def test_each_erp_gets_its_nightly_schedule_and_the_erp_queues_keeps_recon_daily(
    dev_server_env: WorkflowEnvironment, queue_prefix: str, tmp_path: Path
) -> None:
    (tmp_path / "routing.toml").write_text(ROUTING_FILE)
    client = dev_server_env.client
    settings = Settings(task_queue_prefix=queue_prefix, erp_routing=tmp_path / "routing.toml")
    home, eu = f"{queue_prefix}recon-daily", f"{queue_prefix}recon-daily-eu"
    try:
        assert await apply_schedules(client, settings) == {home: "created", eu: "created"}
        assert await apply_schedules(client, settings, "eu") == {eu: "updated"}
        for schedule, workflow_id, erp in ((home, "recon/nightly", None),
                                           (eu, "recon/eu/nightly", "eu")):  # fmt: skip
            action = (await client.get_schedule_handle(schedule).describe()).schedule.action
            assert isinstance(action, ScheduleActionStartWorkflow)
            [request] = await client.data_converter.decode(
                action.args,
                [ReconciliationInput],  # type: ignore[arg-type]
            )
            assert (action.id, request.erp) == (workflow_id, erp)
    finally:
        for schedule in (home, eu):
            with contextlib.suppress(RPCError):
                await client.get_schedule_handle(schedule).delete()
