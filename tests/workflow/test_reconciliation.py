"""ReconciliationWorkflow with same-named activity doubles: paging across continue-as-new,
healing, finance exceptions, and a history that holds cursors and counts only."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from activities.reconciliation import (
    BillingReconciliationActivities,
    ErpReconciliationActivities,
    FindingsInput,
    FinishInput,
    HealInput,
    HealOutcome,
    JournalSnapshotInput,
    LoadPageInput,
    OutcomeInput,
    PageLoaded,
    ReconciliationStoreActivities,
    ReconCounts,
    ReconFinding,
    RunErp,
    RunErpInput,
    RunRef,
    StartRunInput,
)
from adapters.mapping_file import MappingFile, render_mapping
from adapters.store import IntegrationStore
from adapters.task_queues import task_queue
from canonical import BillingDocument, Money, Payment, Refund, TaxLine
from canonical.ledger import (
    BILLING_EVENT_SIGNAL,
    LEDGER_WORKFLOW,
    BillingEventRef,
    SubscriptionLedgerInput,
)
from canonical.mapping import FinanceMapping, TaxAccount
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
)
from tests.unit.test_posting_policy import FINALIZED, document, line
from workflows.finance_exception import FinanceExceptionWorkflow
from workflows.reconciliation import (
    ReconciliationInput,
    ReconciliationResult,
    ReconciliationWorkflow,
)

DAY = datetime(2026, 11, 26, tzinfo=UTC)
# The ERP on the `erp` queue, as the routing names it: what a run naming no ERP reconciles.
HOME = RunErp(erp="tryton", queue="erp", compares_tickets=True, read_queue="erp-read")
PAGES = {"invoices": 4, "credit_notes": 1, "balance_credits": 2, "payments": 2, "refunds": 1,
         "receivables": 1, "erp": 4, "erp_payments": 2, "erp_receivables": 1,
         "tickets": 1}  # fmt: skip


def finding(
    item_id: int,
    cls: str,
    reference: str | None = None,
    kind: str = "invoice",
    billing_document_id: str | None = None,
) -> ReconFinding:
    reference = reference or f"in_{item_id}"
    return ReconFinding(
        item_id=item_id, classification=cls, reference=reference,
        billing_document_id=billing_document_id or reference, kind=kind, customer_id="cus_1",
        case_id=None, currency="USD", amount=Decimal("30.00"), detail=f"{cls} detail",
        remedy="remedy",
    )  # fmt: skip


FINDINGS = [
    finding(1, "missing_in_erp"),
    finding(2, "amount_mismatch"),
    finding(3, "payment_missing_in_erp", "inpay_3", "payment", "in_3"),
    finding(4, "tax_differs", "VAT 20%", "tax", ""),
    finding(5, "rejected_by_finance"),  # explained: neither replayed nor handed to finance
]


class FakeStore:
    """The store and the systems, as the loaders and store steps see them."""

    def __init__(
        self, found: list[ReconFinding] = FINDINGS, heal: bool = True, erp: RunErp = HOME
    ) -> None:
        self.erp = erp
        self.erp_asked: list[str | None] = []
        self.started: list[StartRunInput] = []
        self.erp_pages: list[tuple[str, str | None]] = []  # (source, ERP) of each ERP page
        self.pages_read: list[tuple[str, str | None]] = []
        self.page_sizes: dict[str, set[int]] = {}  # source -> page sizes asked
        self.outcomes: dict[int, str] = {}
        self.finished: FinishInput | None = None
        self.healed: list[str] = []
        self.found = found
        self.heal = heal

    def activities(self) -> dict[str, list[Callable[..., Any]]]:
        @activity.defn(name="recon_erp_of_run")
        async def erp_of_run(request: RunErpInput) -> RunErp:
            self.erp_asked.append(request.erp)
            return self.erp

        @activity.defn(name="recon_start_run")
        async def start_run(request: StartRunInput) -> None:
            self.started.append(request)

        @activity.defn(name="recon_load_billing_page")
        async def load_billing_page(request: LoadPageInput) -> PageLoaded:
            return self._page(request)

        @activity.defn(name="recon_load_erp_page")
        async def load_erp_page(request: LoadPageInput) -> PageLoaded:
            self.erp_pages.append((request.source, request.erp))
            return self._page(request)

        @activity.defn(name="recon_load_ticket_page")
        async def load_ticket_page(request: LoadPageInput) -> PageLoaded:
            return self._page(request)

        @activity.defn(name="recon_snapshot_journal")
        async def snapshot_journal(_r: JournalSnapshotInput) -> PageLoaded:
            return PageLoaded(rows=7, next_cursor=None)

        @activity.defn(name="recon_classify")
        async def classify(_r: RunRef) -> ReconCounts:
            counts = {"matched": 38}
            for f in self.found:
                counts[f.classification] = counts.get(f.classification, 0) + 1
            return ReconCounts(counts=counts, loaded={})

        @activity.defn(name="recon_findings")
        async def findings(request: FindingsInput) -> list[ReconFinding]:
            return [f for f in self.found if f.classification in request.classes
                    and f.item_id not in self.outcomes][: request.limit]  # fmt: skip

        @activity.defn(name="recon_heal_missing_posting")
        async def heal(request: HealInput) -> HealOutcome:
            self.healed.append(request.finding.reference or "")
            return HealOutcome(healed=True, workflow_id="customer-ledger/cus_1", detail="ok")

        @activity.defn(name="recon_mark_outcome")
        async def mark_outcome(request: OutcomeInput) -> None:
            self.outcomes[request.item_id] = request.outcome

        @activity.defn(name="recon_finish_run")
        async def finish_run(request: FinishInput) -> None:
            self.finished = request

        return {
            "": [erp_of_run, start_run, snapshot_journal, classify, findings, mark_outcome,
                 finish_run],
            "billing": [load_billing_page, heal] if self.heal else [load_billing_page],
            # ERP pages are read on the ERP's read queue (on its queue before read queues)
            (self.erp.read_queue or self.erp.queue): [load_erp_page],
            "support": [load_ticket_page],
        }  # fmt: skip

    def _page(self, request: LoadPageInput) -> PageLoaded:
        # an invoices page names its part of the period: `invoices@06` reads from 06:00
        part = f"@{request.period_start:%H}" if request.source == "invoices" else ""
        self.pages_read.append((request.source + part, request.cursor))
        self.page_sizes.setdefault(request.source, set()).add(request.page_size)
        n = int(request.cursor or 0) + 1
        last = n >= PAGES[request.source]
        return PageLoaded(rows=10, next_cursor=None if last else str(n))


@asynccontextmanager
async def running(
    client: Client,
    prefix: str,
    fake: FakeStore,
    billing: tuple[Callable[..., Any], ...] = (),
    workflows: tuple[type, ...] = (),
) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        for queue, activities in fake.activities().items():
            await stack.enter_async_context(
                Worker(
                    client,
                    task_queue=task_queue(prefix, queue) if queue else task_queue(prefix),
                    workflows=[ReconciliationWorkflow, FinanceExceptionWorkflow, *workflows]
                    if not queue
                    else [],
                    activities=[*activities, *(billing if queue == "billing" else ())],
                )
            )
        yield


async def test_a_long_run_continues_as_new_between_pages_and_heals_and_reports(
    dev_server_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    client, fake = dev_server_env.client, FakeStore()
    workflow_id = f"recon/2026-11-26-{queue_prefix}"
    async with running(client, queue_prefix, fake):
        handle = await client.start_workflow(
            ReconciliationWorkflow.run,
            ReconciliationInput(
                period_start=DAY, period_end=DAY.replace(day=27), continue_after_events=25
            ),
            id=workflow_id,
            task_queue=task_queue(queue_prefix),
        )
        result: ReconciliationResult = await handle.result()
        first_run = client.get_workflow_handle(workflow_id, run_id=handle.first_execution_run_id)
        first_history = await first_run.fetch_history()
        last_history = await handle.fetch_history()
        # named by the run's start and the item: a period run again opens new ones
        started = result.run_id.rsplit("@", 1)[1]
        exception = client.get_workflow_handle(f"exception/{workflow_id}/{started}-2")
        context = (await exception.query(FinanceExceptionWorkflow.state)).context
        tax = client.get_workflow_handle(f"exception/{workflow_id}/{started}-4")
        tax_context = (await tax.query(FinanceExceptionWorkflow.state)).context
        for opened in (exception, tax):
            await opened.terminate("test over")

    # every page read once, in order, whatever execution read it; the invoices in four
    # parts of the day, each paged on its own
    parts = ["invoices@00", "invoices@06", "invoices@12", "invoices@18"]
    assert len(fake.pages_read) == sum(PAGES.values()) + 3 * PAGES["invoices"]
    read = [source.split("@")[0] for source, _ in fake.pages_read]
    assert sorted({source for source, _ in fake.pages_read} & set(parts)) == parts
    # what customers owe is read after everything else, billing's then the ERP's at once
    assert read[-2:] == ["receivables", "erp_receivables"]
    assert len(set(fake.pages_read)) == len(fake.pages_read)
    # billing's money after every page of its documents (a payment is routed by its invoice)
    last_document = max(i for i, s in enumerate(read) if s in ("invoices", "credit_notes",
                                                                 "balance_credits"))  # fmt: skip
    assert min(i for i, s in enumerate(read) if s in ("payments", "refunds")) > last_document
    # billing's documents side by side: the credit notes are not left for the invoices' end
    assert read.index("credit_notes") < max(i for i, s in enumerate(read) if s == "invoices")
    # each system's own page size: billing's as asked, the ERP's and support's larger
    assert fake.page_sizes["invoices"] == {200}
    assert fake.page_sizes["erp"] == fake.page_sizes["tickets"] == {1000}
    assert first_history.events[-1].event_type == (
        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    )
    assert result.loaded == {"invoices": 160, "credit_notes": 10, "balance_credits": 20,
                             "payments": 20, "refunds": 10, "journal": 7, "receivables": 10,
                             "erp": 40, "erp_payments": 20, "erp_receivables": 10,
                             "tickets": 10}  # fmt: skip
    assert (result.healed, result.in_agreement, result.unexplained) == (2, 38, 2)
    assert result.exceptions_opened == [exception.id, tax.id]
    # the missing invoice and the missing payment are replayed; the rest goes to finance
    assert sorted(fake.healed) == ["in_1", "inpay_3"]
    assert fake.outcomes == {1: "healed", 2: "exception_opened", 3: "healed",
                             4: "exception_opened"}  # fmt: skip
    assert fake.finished is not None and (fake.finished.healed, fake.finished.exceptions) == (2, 2)
    assert context.process == "reconciliation" and context.step == "amount_mismatch"
    assert "retry" in context.decision_effects
    assert tax_context.step == "tax_differs" and tax_context.payload["kind"] == "tax"
    assert result.run_id.startswith(workflow_id)
    # naming no ERP, the run reconciles the one on the `erp` queue, on that queue
    assert fake.erp_asked == [None] and [s.erp for s in fake.started] == ["tryton"]
    assert {erp for _, erp in fake.erp_pages} == {"tryton"} and result.erp == "tryton"
    # the runs replay on this code (the new sources are read behind a patch marker)
    replayer = Replayer(workflows=[ReconciliationWorkflow], data_converter=pydantic_data_converter)
    for history in (first_history, last_history):
        replayed = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        assert replayed.replay_failure is None


class SplitReceivables(FakeStore):
    """Billing's receivables page says two customers' receivables are compared nowhere."""

    def _page(self, request: LoadPageInput) -> PageLoaded:
        page = super()._page(request)
        split = 2 if request.source == "receivables" else 0
        return page.model_copy(update={"receivables_not_compared": split})


async def test_a_run_of_another_erp_reads_it_on_its_queue_and_leaves_tickets_to_the_home_run(
    dev_server_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    client = dev_server_env.client
    fake = SplitReceivables(
        erp=RunErp(erp="eu", queue="erp-eu", compares_tickets=False, read_queue="erp-eu-read")
    )
    workflow_id = f"recon/eu/2026-11-26-{queue_prefix}"
    async with running(client, queue_prefix, fake):
        handle = await client.start_workflow(
            ReconciliationWorkflow.run,
            ReconciliationInput(erp="eu", period_start=DAY, period_end=DAY.replace(day=27)),
            id=workflow_id,
            task_queue=task_queue(queue_prefix),
        )
        result = await handle.result()
        started = result.run_id.rsplit("@", 1)[1]
        for opened in result.exceptions_opened:
            await client.get_workflow_handle(opened).terminate("test over")

    assert fake.erp_asked == ["eu"] and [s.erp for s in fake.started] == ["eu"]
    # every ERP page read on the eu read queue (the only one the fake ERP polls) for eu
    assert sorted(fake.erp_pages) == sorted(
        (source, "eu") for source in ("erp", "erp_payments", "erp_receivables")
        for _ in range(PAGES[source])
    )  # fmt: skip
    assert "tickets" not in {source for source, _ in fake.pages_read}
    assert result.erp == "eu" and "tickets" not in result.loaded
    assert result.loaded["receivables_not_compared"] == 2
    assert result.exceptions_opened == [
        f"exception/{workflow_id}/{started}-2",
        f"exception/{workflow_id}/{started}-4",
    ]


async def test_a_run_told_no_read_queue_reads_the_erp_on_its_queue_as_runs_before_did(
    dev_server_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    # The ERP's answer recorded before read queues names none: only the `erp` queue is polled.
    fake = FakeStore(found=[], erp=RunErp(erp="tryton", queue="erp", compares_tickets=True))
    client = dev_server_env.client
    async with running(client, queue_prefix, fake):
        result = await client.execute_workflow(
            ReconciliationWorkflow.run,
            ReconciliationInput(period_start=DAY, period_end=DAY.replace(day=27)),
            id=f"recon/2026-11-26-{queue_prefix}",
            task_queue=task_queue(queue_prefix),
        )

    assert len(fake.erp_pages) == PAGES["erp"] + PAGES["erp_payments"] + PAGES["erp_receivables"]
    assert result.loaded["erp"] == 10 * PAGES["erp"]


@workflow.defn(name=LEDGER_WORKFLOW, sandboxed=False)
class LedgerStandIn:
    """Takes the ledger's place: records the billing events it is fed (no sandbox: this
    module imports the store)."""

    def __init__(self) -> None:
        self.events: list[BillingEventRef] = []

    @workflow.run
    async def run(self, _request: SubscriptionLedgerInput) -> None:
        await workflow.wait_condition(lambda: False)

    @workflow.signal(name=BILLING_EVENT_SIGNAL)
    def billing_event(self, event: BillingEventRef) -> None:
        self.events.append(event)

    @workflow.query(name="events")
    def fed(self) -> list[BillingEventRef]:
        return self.events


class BillingForHealing:
    """Billing as healing reads it: the invoice a payment paid, the refund of a charge, a
    credit note that gave money back out of band."""

    def __init__(self, suffix: str) -> None:
        self.subscription_id = f"sub_{suffix}"
        self.customer_id = f"cus_{suffix}"

    async def get_invoice(self, invoice_id: str) -> BillingDocument:
        return document(line("l1", "30.00"), document_id=invoice_id, status="paid",
                        subscription_id=self.subscription_id,
                        customer_id=self.customer_id)  # fmt: skip

    async def get_credit_note(self, credit_note_id: str) -> BillingDocument:
        return document(line("l1", "30.00"), document_id=credit_note_id, kind="credit_note",
                        status="issued", subscription_id=None, customer_id=self.customer_id,
                        out_of_band_amount=Money.of("30.00", "USD"))  # fmt: skip

    async def get_refund(self, refund_id: str) -> Refund:
        return Refund(
            refund_id=refund_id, charge_id="ch_9", customer_id=self.customer_id,
            status="succeeded", amount=Money.of("5.00", "USD"), created_at=FINALIZED,
        )  # fmt: skip


async def test_a_missing_payment_and_refund_are_healed_by_replaying_their_billing_events(
    dev_server_env: WorkflowEnvironment, queue_prefix: str, tmp_path: Path
) -> None:
    """The real healing activity: a missing payment feeds its invoice's payment event to the
    subscription's ledger, a missing refund its charge's refund event to the customer's, and
    a missing out-of-band payout its credit note to the customer's."""
    client, suffix = dev_server_env.client, uuid.uuid4().hex[:10]
    billing = BillingForHealing(suffix)
    found = [
        finding(1, "payment_missing_in_erp", "inpay_1", "payment", "in_7"),
        finding(2, "refund_missing_in_erp", "re_2/payout", "refund", "re_2"),
        finding(3, "refund_missing_in_erp", "cn_3/out_of_band", "refund", "cn_3"),
    ]
    found = [f.model_copy(update={"customer_id": billing.customer_id}) for f in found]
    store = IntegrationStore(f"sqlite:///{tmp_path / 'store.sqlite'}")
    healer = BillingReconciliationActivities(store, billing)  # type: ignore[arg-type]
    fake = FakeStore(found, heal=False)
    workflow_id = f"recon/2026-11-26-{queue_prefix}"
    async with running(
        client, queue_prefix, fake, (healer.heal_missing_posting,), (LedgerStandIn,)
    ):
        result = await client.execute_workflow(
            ReconciliationWorkflow.run,
            ReconciliationInput(period_start=DAY, period_end=DAY.replace(day=27)),
            id=workflow_id,
            task_queue=task_queue(queue_prefix),
        )
        subscription = client.get_workflow_handle(f"subscription/{billing.subscription_id}")
        customer = client.get_workflow_handle(f"customer-ledger/{billing.customer_id}")
        paid = await subscription.query("events", result_type=list[BillingEventRef])
        refunded = await customer.query("events", result_type=list[BillingEventRef])
        for ledger in (subscription, customer):
            await ledger.terminate("test over")
    store.dispose()

    assert (result.healed, result.unexplained, result.exceptions_opened) == (3, 0, [])
    assert fake.outcomes == {1: "healed", 2: "healed", 3: "healed"}
    [payment_event] = paid
    assert (payment_event.event_type, payment_event.object_kind, payment_event.object_id) == (
        "invoice.paid", "invoice", "in_7",
    )  # fmt: skip
    assert payment_event.event_id == f"recon:{result.run_id}:in_7:paid"
    [refund_event] = [e for e in refunded if e.object_kind == "charge"]
    [credit_note_event] = [e for e in refunded if e.object_kind != "charge"]
    assert (credit_note_event.object_kind, credit_note_event.object_id) == ("credit_note", "cn_3")
    assert credit_note_event.event_id == f"recon:{result.run_id}:cn_3"
    assert (refund_event.event_type, refund_event.object_kind, refund_event.object_id) == (
        "charge.refunded", "charge", "ch_9",
    )  # fmt: skip
    assert refund_event.customer_id == billing.customer_id


# --- the loaders: each system's pages into the store, then classified ----------------------

EUR_INVOICE_TAX = TaxLine(
    rate_id="txr_vat20", display_name="VAT", jurisdiction="FR", percentage=Decimal(20),
    inclusive=False, taxable_amount=Money.of("100.00", "EUR"), amount=Money.of("20.00", "EUR"),
)  # fmt: skip


class BooksBilling:
    """Billing's reconciliation pages over one taxed EUR invoice, its payment and a partial
    refund made without a credit note."""

    def __init__(self) -> None:
        hundred = Money.of("100.00", "EUR")
        self.invoice = document(
            line("l1", "100.00").model_copy(update={"amount": hundred, "unit_amount": hundred}),
            document_id="in_eur", currency="EUR", subtotal=hundred, tax=Money.of("20.00", "EUR"),
            total=Money.of("120.00", "EUR"), tax_lines=[EUR_INVOICE_TAX], status="paid",
        )  # fmt: skip

    async def invoice_page(self, *_: Any) -> BillingDocumentPage:
        return BillingDocumentPage(documents=[self.invoice])

    async def credit_note_page(self, *_: Any) -> BillingDocumentPage:
        return BillingDocumentPage(documents=[])

    async def payment_page(self, *_: Any) -> BillingPaymentPage:
        return BillingPaymentPage(payments=[
            Payment(payment_id="inpay_eur", invoice_id="in_eur", customer_id="cus_1",
                    status="paid", amount=Money.of("120.00", "EUR"), method="card",
                    charge_id="ch_eur", paid_at=FINALIZED),
        ])  # fmt: skip

    async def refund_page(self, *_: Any) -> BillingRefundPage:
        return BillingRefundPage(refunds=[
            Refund(refund_id="re_eur", charge_id="ch_eur", payment_id="inpay_eur",
                   invoice_id="in_eur", customer_id="cus_1", status="succeeded",
                   amount=Money.of("30.00", "EUR"), created_at=FINALIZED),
        ])  # fmt: skip

    async def open_receivable_page(self, *_: Any) -> ReceivablePage:
        # paid in full, then 30.00 refunded: nothing open either way
        return ReceivablePage(receivables=[
            Receivable(customer_id="cus_1", amount=Money.of("0.00", "EUR"))
        ])  # fmt: skip


class BooksLedger:
    """The ERP's pages: the invoice with its VAT, the refund's credit note, the payment and
    the payout; `erp_vat` and `payout` let a test take something away."""

    def __init__(self, erp_vat: str = "20.00", payout: bool = True) -> None:
        self.erp_vat, self.payout = erp_vat, payout

    async def document_page(self, *_: Any) -> LedgerDocumentPage:
        def held(erp_id: str, reference: str, kind: str, total: str,
                 taxes: dict[str, Money]) -> LedgerDocument:  # fmt: skip
            return LedgerDocument(
                erp_document_id=erp_id, reference=reference, kind=kind,  # type: ignore[arg-type]
                number=f"N{erp_id}", total=Money.of(total, "EUR"), state="posted",
                customer_id="cus_1", document_date=FINALIZED.date(), taxes=taxes,
            )  # fmt: skip

        return LedgerDocumentPage(documents=[
            held("1", "in_eur", "invoice", "120.00", {"VAT 20% FR": Money.of(self.erp_vat, "EUR")}),
            held("2", "re_eur", "credit_note", "30.00", {}),
        ])  # fmt: skip

    async def payment_page(self, *_: Any) -> LedgerPaymentPage:
        def moved(erp_id: str, reference: str, kind: str, amount: str, on: str) -> LedgerPayment:
            return LedgerPayment(
                erp_document_id=erp_id, reference=reference, kind=kind,  # type: ignore[arg-type]
                amount=Money.of(amount, "EUR"), applies_to=on, customer_id="cus_1",
                payment_date=FINALIZED.date(), state="posted",
            )  # fmt: skip

        payments = [moved("1", "inpay_eur", "payment", "120.00", "in_eur")]
        if self.payout:
            payments.append(moved("2", "re_eur/payout", "refund", "30.00", "re_eur"))
        return LedgerPaymentPage(payments=payments)

    async def open_receivable_page(self, *_: Any) -> ReceivablePage:
        return ReceivablePage(receivables=[])


async def load_and_classify(
    tmp_path: Path,
    ledger: BooksLedger,
    billing: BooksBilling | None = None,
    journal: Callable[[IntegrationStore], None] | None = None,
) -> dict[str, int]:
    """Every source read by the real loader activities into a SQLite store (its journal as
    `journal` writes it), classified."""
    mapping = tmp_path / "finance-mapping.toml"
    mapping.write_text(render_mapping(FinanceMapping(
        version=1, currencies=["EUR"], tax_rates={"txr_vat20": TaxAccount(erp_tax="VAT 20% FR")},
    )))  # fmt: skip
    store = IntegrationStore(f"sqlite:///{tmp_path / 'store.sqlite'}")
    store.migrate()
    if journal is not None:
        journal(store)
    billing_pages = billing or BooksBilling()
    loader = BillingReconciliationActivities(store, billing_pages, MappingFile(mapping))  # type: ignore[arg-type]
    erp = ErpReconciliationActivities(store, ledger)  # type: ignore[arg-type]
    steps, env = ReconciliationStoreActivities(store), ActivityEnvironment()
    period = {"run_id": "recon/books", "period_start": DAY.replace(month=11, day=14),
              "period_end": DAY.replace(month=11, day=15)}  # fmt: skip
    steps.start_run(StartRunInput(**period))
    for source in ("invoices", "credit_notes", "payments", "refunds", "receivables"):
        await env.run(loader.load_billing_page, LoadPageInput(**period, source=source))  # type: ignore[arg-type]
    for source in ("erp", "erp_payments", "erp_receivables"):
        await env.run(erp.load_erp_page, LoadPageInput(**period, source=source))  # type: ignore[arg-type]
    steps.snapshot_journal(JournalSnapshotInput(**period))
    counts = steps.classify(RunRef(run_id="recon/books")).counts
    store.dispose()
    return {cls: n for cls, n in counts.items() if n}


async def test_the_loaders_find_taxed_paid_and_refunded_books_in_agreement(
    tmp_path: Path,
) -> None:
    # the invoice, the refund's credit note, the payment and the payout; VAT and nothing owed
    assert await load_and_classify(tmp_path, BooksLedger()) == {"matched": 4}


async def test_the_loaders_find_a_missing_payout_and_tax_the_erp_books_otherwise(
    tmp_path: Path,
) -> None:
    found = await load_and_classify(tmp_path, BooksLedger(erp_vat="19.99", payout=False))
    assert found == {"matched": 3, "refund_missing_in_erp": 1, "tax_differs": 1}


class OutOfBandBilling(BooksBilling):
    """The books, and a credit note of 10.00 on the invoice, given back out of band."""

    async def credit_note_page(self, *_: Any) -> BillingDocumentPage:
        ten = Money.of("10.00", "EUR")
        return BillingDocumentPage(documents=[document(
            line("l1", "10.00").model_copy(update={"amount": ten, "unit_amount": ten}),
            document_id="cn_eur", kind="credit_note", status="issued", currency="EUR",
            subtotal=ten, tax=Money.of("0", "EUR"), total=ten, invoice_id="in_eur",
            out_of_band_amount=ten,
        )])  # fmt: skip


class OutOfBandLedger(BooksLedger):
    """The ERP's books with the credit note, and (`paid_out`) its out-of-band payout."""

    def __init__(self, paid_out: bool) -> None:
        super().__init__()
        self.paid_out = paid_out

    async def document_page(self, *_: Any) -> LedgerDocumentPage:
        page = await super().document_page()
        page.documents.append(LedgerDocument(
            erp_document_id="3", reference="cn_eur", kind="credit_note", number="N3",
            total=Money.of("10.00", "EUR"), state="posted", customer_id="cus_1",
            document_date=FINALIZED.date(), taxes={},
        ))  # fmt: skip
        return page

    async def payment_page(self, *_: Any) -> LedgerPaymentPage:
        page = await super().payment_page()
        if self.paid_out:
            page.payments.append(LedgerPayment(
                erp_document_id="3", reference="cn_eur/out_of_band", kind="refund",
                amount=Money.of("10.00", "EUR"), applies_to="cn_eur", customer_id="cus_1",
                payment_date=FINALIZED.date(), state="posted",
            ))  # fmt: skip
        return page


async def test_the_loaders_expect_a_credit_notes_out_of_band_payout_and_find_it_missing(
    tmp_path: Path,
) -> None:
    """Money a credit note gave back out of band is expected in the ERP, applied to the
    credit note: found when it is there, a refund missing in the ERP (healable) when not."""
    (tmp_path / "paid").mkdir()
    (tmp_path / "lost").mkdir()
    paid = await load_and_classify(tmp_path / "paid", OutOfBandLedger(True), OutOfBandBilling())
    lost = await load_and_classify(tmp_path / "lost", OutOfBandLedger(False), OutOfBandBilling())
    # (no support ticket names the credit note: reported as ever)
    assert paid == {"matched": 6, "credit_without_ticket": 1}
    assert lost == {"matched": 5, "refund_missing_in_erp": 1, "credit_without_ticket": 1}
