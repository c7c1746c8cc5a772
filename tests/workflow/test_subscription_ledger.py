"""SubscriptionLedgerWorkflow on the time-skipping server: billing, journal and audit as
same-named activity doubles; the ERP activities are the real ones (finance's mapping read
from a real TOML file) over an in-memory ERP."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest
from temporalio import activity
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.accounts import EnsurePartyInput, FetchCustomerInput, RecordAccountLinksInput
from activities.amendments import (
    AccountLinksInput,
    EarlierInvoicesInput,
    ErpPostingActivities,
    FetchDocumentInput,
    FetchSubscriptionInput,
    JournalEntry,
    JournalLookupInput,
    RecordJournalInput,
)
from activities.audit import AuditRecordInput
from activities.payments import ChargeRefundsInput, InvoicePaymentsInput
from adapters import visibility
from adapters.errors import AdapterError, NotFoundError, RejectedError, TransientError
from adapters.errors import ValidationError as ErpValidationError
from adapters.mapping_file import MappingFile, render_mapping
from adapters.ports import Ledger
from adapters.task_queues import task_queue
from canonical import (
    AccountRecord,
    BillingDocument,
    Customer,
    DecisionRequest,
    DocumentLine,
    LedgerPosting,
    Money,
    Payment,
    PaymentPosting,
    PostedDocument,
    PostedPayment,
    Refund,
    Subscription,
)
from canonical.ledger import REFRESH_SIGNAL, BillingEventRef, SubscriptionLedgerInput
from canonical.mapping import FinanceMapping, PaymentJournal, ProductAccount
from starters.routing import ProcessStart, signal_with_start
from tests.fixtures.temporal import time_skipping_server
from tests.workflow.one_erp import with_one_erp
from workflows.finance_exception import FinanceExceptionState, FinanceExceptionWorkflow
from workflows.subscription_ledger import LEDGER_RELEASES, SubscriptionLedgerWorkflow

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)


def usd(amount: str) -> Money:
    return Money.of(amount, "USD")


PRODUCT = "prod_basic"


def finance_mapping(version: int = 1, **products: str) -> FinanceMapping:
    """What finance maps: PRODUCT (and `products`: billing id -> ERP product), card and out of
    band payments in USD, refunds and support credits."""
    entries = {PRODUCT: "SUBSCRIPTION", **products}
    return FinanceMapping(
        version=version,
        currencies=["USD"],
        products={k: ProductAccount(erp_product=v, revenue_account="4000")
                  for k, v in entries.items()},
        payments={"card/USD": PaymentJournal(journal="STRIPE-USD", clearing_account="1110"),
                  "out_of_band/USD": PaymentJournal(journal="BANK", clearing_account="1000")},
        refunds=ProductAccount(erp_product="REFUND", revenue_account="4900"),
        support_credits=ProductAccount(erp_product="REFUND", revenue_account="4900"),
    )  # fmt: skip


def invoice(
    doc_id: str, *amounts: str, minute: int = 0, product: str = PRODUCT, **changes: Any
) -> BillingDocument:
    lines = [
        DocumentLine(line_id=f"{doc_id}-l{i}", description=f"line {i}", quantity=Decimal(1),
                     unit_amount=usd(a), amount=usd(a), product_id=product)
        for i, a in enumerate(amounts)
    ]  # fmt: skip
    total = sum((Decimal(a) for a in amounts), Decimal(0))
    at = T0 + timedelta(minutes=minute)
    fields: dict[str, Any] = {
        "document_id": doc_id, "kind": "invoice", "status": "open", "number": f"N-{doc_id}",
        "customer_id": "cus_1", "subscription_id": "sub_1", "currency": "USD", "lines": lines,
        "subtotal": usd(str(total)), "tax": usd("0"), "total": usd(str(total)),
        "created_at": at, "finalized_at": at,
    }  # fmt: skip
    fields.update(changes)
    return BillingDocument(**fields)


def payment(
    payment_id: str,
    invoice_id: str,
    amount: str,
    minute: int = 10,
    method: str = "card",
    status: str = "paid",
) -> Payment:
    return Payment(
        payment_id=payment_id, invoice_id=invoice_id, customer_id="cus_1", status=status,
        amount=usd(amount), method=method, charge_id=f"ch_{payment_id}",
        paid_at=T0 + timedelta(minutes=minute) if status == "paid" else None,
    )  # fmt: skip


def refund(
    refund_id: str, of: Payment | None, amount: str, credit_note_id: str | None = None
) -> Refund:
    return Refund(
        refund_id=refund_id, charge_id=of.charge_id if of and of.charge_id else "ch_x",
        payment_id=of.payment_id if of else None, invoice_id=of.invoice_id if of else None,
        customer_id="cus_1", status="succeeded", amount=usd(amount),
        credit_note_id=credit_note_id, created_at=T0 + timedelta(hours=1),
    )  # fmt: skip


def _erp_error(kind: str, message: str, remote_code: str | None = None) -> AdapterError:
    errors = {"TransientError": TransientError, "ValidationError": ErpValidationError,
              "RejectedError": RejectedError, "NotFoundError": NotFoundError}  # fmt: skip
    return errors[kind](message, system="erp", operation="post", remote_code=remote_code)


class FakeErp:
    """The Ledger port in memory: documents and payments by reference, what each document
    has left open, and the refusals a real ERP gives (no rate, overpayment, not posted)."""

    def __init__(self, world: FakeWorld) -> None:
        self._world = world

    async def is_period_open(self, on: date) -> bool:
        return self._world.period_open

    async def post_document(self, posting: LedgerPosting) -> PostedDocument:
        world = self._world
        world.post_calls += 1
        if posting.unmapped():
            raise _erp_error("ValidationError", f"unmapped: {posting.unmapped()}")
        if world.post_failures:
            kind, _final = world.post_failures.pop(0)
            raise _erp_error(kind, f"ERP said {kind}")
        if posting.currency in world.no_rate_currencies:
            raise _erp_error(
                "RejectedError",
                f"no {posting.currency} rate for {posting.billing_date.isoformat()}",
                "no_exchange_rate",
            )
        return world.post(posting)

    async def post_payment(self, posting: PaymentPosting) -> PostedPayment:
        world = self._world
        world.payment_calls += 1
        if posting.unmapped():
            raise _erp_error("ValidationError", f"unmapped: {posting.unmapped()}")
        existing = world.erp_payments.get(posting.reference)
        if existing is not None:
            return existing.model_copy(update={"created_now": False})
        document = world.erp.get(posting.applies_to)
        if document is None:
            raise _erp_error("NotFoundError", f"no ERP document {posting.applies_to}")
        open_amount = document.total.amount - world.applied.get(posting.applies_to, Decimal(0))
        if posting.amount.amount > open_amount:
            raise _erp_error(
                "RejectedError",
                f"{posting.amount} exceeds the {open_amount} open on {posting.applies_to}",
                "overpayment",
            )
        world.applied[posting.applies_to] = (
            world.applied.get(posting.applies_to, Decimal(0)) + posting.amount.amount
        )
        posted = PostedPayment(
            reference=posting.reference, kind=posting.kind,
            erp_document_id=f"pay-{len(world.erp_payments) + 1}",
            erp_number=f"PAY-{len(world.erp_payments) + 1}", amount=posting.amount,
            applies_to=posting.applies_to,
            applied_document_state="paid" if posting.amount.amount == open_amount else "posted",
            created_now=True,
        )  # fmt: skip
        world.erp_payments[posting.reference] = posted
        world.erp_payment_postings[posting.reference] = posting
        world.erp_order.append(posting.reference)
        if world.payment_answers_lost:
            world.payment_answers_lost -= 1
            raise _erp_error("TransientError", "no answer in time")
        return posted


class FakeWorld:
    """Billing, ERP, journal and audit in memory, with scripted failures; finance's mapping
    in a real file."""

    def __init__(self) -> None:
        self.documents: dict[str, BillingDocument] = {}
        self.payments: dict[str, list[Payment]] = {}
        self.refunds: dict[str, list[Refund]] = {}
        self.erp: dict[str, PostedDocument] = {}
        self.erp_postings: dict[str, LedgerPosting] = {}
        self.erp_payments: dict[str, PostedPayment] = {}
        self.erp_payment_postings: dict[str, PaymentPosting] = {}
        # What payments already settled of each ERP document (also by hand: see overpayment)
        self.applied: dict[str, Decimal] = {}
        self.erp_order: list[str] = []
        self.post_calls = 0
        self.payment_calls = 0
        self.payment_answers_lost = 0
        self.no_rate_currencies: set[str] = set()
        self._mapping_dir = tempfile.TemporaryDirectory(prefix="finance-mapping-")
        self.mapping_path = Path(self._mapping_dir.name) / "finance-mapping.toml"
        self.set_mapping(finance_mapping())
        self.journal: dict[str, JournalEntry] = {}
        self.audit: list[AuditRecordInput] = []
        self.links: dict[str, list[AccountRecord]] = {"cus_1": [
            AccountRecord(system="erp", external_id="7", customer_id="cus_1", name="Acme")
        ]}  # fmt: skip
        self.period_open = True
        # (exception type name, non_retryable) raised by the next post calls, in order
        self.post_failures: list[tuple[str, bool]] = []
        self.commit_then_lose_answer = 0
        self.journal_failures = 0

    def set_mapping(self, mapping: FinanceMapping) -> None:
        """Finance edits its file (the workers re-read it on their next posting)."""
        self.mapping_path.write_text(render_mapping(mapping))

    def activities(self) -> dict[str, list[Callable[..., Any]]]:
        @activity.defn(name="fetch_billing_document")
        async def fetch_billing_document(request: FetchDocumentInput) -> BillingDocument:
            if request.document_id not in self.documents:
                raise ApplicationError(
                    f"billing has no {request.kind} {request.document_id}",
                    type="NotFoundError", non_retryable=True,
                )  # fmt: skip
            return self.documents[request.document_id]

        @activity.defn(name="earlier_invoice_ids")
        async def earlier_invoice_ids(request: EarlierInvoicesInput) -> list[str]:
            # Billing's order is the order documents were added to this fake.
            same = [
                d
                for d in self.documents.values()
                if d.kind == "invoice" and d.subscription_id == request.subscription_id
            ]
            ids = [d.document_id for d in same]
            before = same[: ids.index(request.invoice_id)] if request.invoice_id in ids else []
            return [d.document_id for d in before if d.was_finalized]

        @activity.defn(name="fetch_subscription")
        async def fetch_subscription(request: FetchSubscriptionInput) -> Subscription:
            return Subscription(
                subscription_id=request.subscription_id, customer_id="cus_1", status="active",
                currency="USD", items=[], current_period_start=T0,
                current_period_end=T0 + timedelta(days=30), created_at=T0,
            )  # fmt: skip

        @activity.defn(name="fetch_billing_customer")
        async def fetch_billing_customer(request: FetchCustomerInput) -> Customer:
            return Customer(customer_id=request.customer_id, name="New Customer")

        @activity.defn(name="ensure_erp_party")
        async def ensure_erp_party(request: EnsurePartyInput) -> AccountRecord:
            customer_id = request.customer.customer_id
            return AccountRecord(
                system="erp", external_id="99", customer_id=customer_id, name="New Customer"
            )

        @activity.defn(name="fetch_invoice_payments")
        async def fetch_invoice_payments(request: InvoicePaymentsInput) -> list[Payment]:
            if request.invoice_id not in self.documents:
                raise ApplicationError("no such invoice", type="NotFoundError", non_retryable=True)
            return self.payments.get(request.invoice_id, [])

        @activity.defn(name="fetch_charge_refunds")
        async def fetch_charge_refunds(request: ChargeRefundsInput) -> list[Refund]:
            return self.refunds.get(request.charge_id, [])

        erp = ErpPostingActivities(cast(Ledger, FakeErp(self)), MappingFile(self.mapping_path))

        @activity.defn(name="find_journal_entry")
        async def find_journal_entry(request: JournalLookupInput) -> JournalEntry | None:
            return self.journal.get(request.reference)

        @activity.defn(name="record_journal_entry")
        async def record_journal_entry(request: RecordJournalInput) -> None:
            if self.journal_failures:
                self.journal_failures -= 1
                raise RuntimeError("worker died before the journal write")
            self.journal[request.entry.reference] = request.entry

        @activity.defn(name="account_links")
        async def account_links(request: AccountLinksInput) -> list[AccountRecord]:
            return self.links.get(request.customer_id, [])

        @activity.defn(name="record_account_links")
        async def record_account_links(request: RecordAccountLinksInput) -> None:
            self.links[request.customer_id] = request.records

        @activity.defn(name="append_audit")
        async def append_audit(record: AuditRecordInput) -> int:
            self.audit.append(record)
            return len(self.audit)

        return {
            "": [find_journal_entry, record_journal_entry, account_links, record_account_links,
                 append_audit],
            "billing": [fetch_billing_document, fetch_subscription, fetch_billing_customer,
                        earlier_invoice_ids, fetch_invoice_payments, fetch_charge_refunds],
            "erp": [*erp.activities(), ensure_erp_party],
        }  # fmt: skip

    def post(self, posting: LedgerPosting) -> PostedDocument:
        existing = self.erp.get(posting.reference)
        if existing is not None:
            return existing.model_copy(update={"created_now": False})
        posted = PostedDocument(
            reference=posting.reference, kind=posting.kind,
            erp_document_id=str(len(self.erp) + 1), erp_number=f"ERP-{len(self.erp) + 1}",
            total=posting.total, state="posted", created_now=True,
        )  # fmt: skip
        self.erp[posting.reference] = posted
        self.erp_postings[posting.reference] = posting
        self.erp_order.append(posting.reference)
        if self.commit_then_lose_answer:
            self.commit_then_lose_answer -= 1
            raise _erp_error("TransientError", "no answer in time")
        return posted


@asynccontextmanager
async def running(client: Client, prefix: str, world: FakeWorld) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        for queue, activities in with_one_erp(world.activities()).items():
            await stack.enter_async_context(
                Worker(
                    client,
                    task_queue=task_queue(prefix, queue) if queue else task_queue(prefix),
                    workflows=[SubscriptionLedgerWorkflow, FinanceExceptionWorkflow]
                    if not queue else [],
                    activities=activities,
                )
            )  # fmt: skip
        yield


def event(
    event_id: str, doc_id: str, created: int, kind: str = "invoice", number: str | None = None
) -> BillingEventRef:
    return BillingEventRef(
        event_id=event_id, event_type=f"{kind}.finalized", created=created,
        object_kind=kind, object_id=doc_id, customer_id="cus_1", correlation_id=f"c-{event_id}",
        document_number=number,
    )  # fmt: skip


async def deliver(client: Client, prefix: str, ref: BillingEventRef, sub: str = "sub_1") -> str:
    start = ProcessStart(
        workflow=SubscriptionLedgerWorkflow.run,
        workflow_id=f"subscription/{sub}-{prefix}",
        input=SubscriptionLedgerInput(subscription_id=sub, customer_id="cus_1",
                                      supported_currencies=["USD"]),
        signal="billing_event",
        signal_input=ref,
        search_attributes=visibility.start_attributes("amendment_to_erp", "waiting"),
        summary="test",
    )  # fmt: skip
    await signal_with_start(client, start, prefix)
    return start.workflow_id


async def until(
    probe: Callable[[], Any],
    env: WorkflowEnvironment,
    what: str,
    step: timedelta = timedelta(seconds=5),
) -> Any:
    for _ in range(200):
        value = probe()
        if value:
            return value
        await env.sleep(step)
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what} never happened")


async def status_of(handle: WorkflowHandle[Any, Any]) -> str:
    return (await handle.query(SubscriptionLedgerWorkflow.status)).status


async def test_upgrade_invoice_is_posted_and_journaled_once(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    world.documents["in_up"] = invoice("in_up", "-16.67", "50.00")
    async with running(env.client, queue_prefix, world):
        await deliver(env.client, queue_prefix, event("evt_1", "in_up", 100))
        await until(lambda: "in_up" in world.journal, env, "journal entry")
    assert world.erp["in_up"].total == usd("33.33")
    assert world.journal["in_up"].erp_number == "ERP-1"
    assert world.post_calls == 1


async def test_a_new_run_takes_its_patches_at_once_and_asks_the_route_locally(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    """One marker and one TemporalChangeVersion write for every patch of the ledger and its
    postings; the route is a local activity (a marker), not a task on billing's queue."""
    env, world = time_skipping_env, FakeWorld()
    world.documents["in_1"] = invoice("in_1", "10.00", minute=1)
    async with running(env.client, queue_prefix, world):
        workflow_id = await deliver(env.client, queue_prefix, event("evt_1", "in_1", 100))
        await until(lambda: "in_1" in world.journal, env, "journal entry")
        history = await env.client.get_workflow_handle(workflow_id).fetch_history()
    markers = [e.marker_recorded_event_attributes for e in history.events
               if e.HasField("marker_recorded_event_attributes")]  # fmt: skip
    patches = [json.loads(m.details["patch-data"].payloads[0].data)["id"]
               for m in markers if m.marker_name == "core_patch"]  # fmt: skip
    assert patches == [next(iter(LEDGER_RELEASES))]
    versions = [e for e in history.events
                if e.HasField("upsert_workflow_search_attributes_event_attributes")
                and "TemporalChangeVersion" in e.upsert_workflow_search_attributes_event_attributes
                .search_attributes.indexed_fields]  # fmt: skip
    assert len(versions) == 1
    assert [m.marker_name for m in markers if m.marker_name != "core_patch"] == [
        "core_local_activity"
    ]
    scheduled = [e.activity_task_scheduled_event_attributes.activity_type.name
                 for e in history.events
                 if e.HasField("activity_task_scheduled_event_attributes")]  # fmt: skip
    assert "route_erp_posting" not in scheduled
    assert "post_ledger_document" in scheduled


async def test_events_about_one_invoice_that_wait_together_read_and_post_it_once(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    """Stripe sends finalized, paid and payment_succeeded for one invoice at once: one read of
    billing after all three posts the invoice and its payment."""
    env, world = time_skipping_env, FakeWorld()
    paid = payment("inpay_1", "in_1", "10.00")
    world.payments["in_1"] = [paid]
    world.documents["in_1"] = paid_invoice("in_1", "10.00", paid)
    succeeded = paid_event("evt_3", "in_1", 102).model_copy(
        update={"event_type": "invoice.payment_succeeded"}
    )
    for ref in (paid_event("evt_2", "in_1", 101), event("evt_1", "in_1", 100), succeeded):
        workflow_id = await deliver(env.client, queue_prefix, ref)
    async with running(env.client, queue_prefix, world):
        await until(lambda: "inpay_1" in world.journal, env, "the payment journaled")
        await env.sleep(timedelta(seconds=5))
        handle = env.client.get_workflow_handle(workflow_id)
        status = await handle.query(SubscriptionLedgerWorkflow.status)
        history = await handle.fetch_history()
    assert (status.status, status.processed_events, status.pending_events) == ("waiting", 3, 0)
    fetched = [e for e in history.events if e.HasField("activity_task_scheduled_event_attributes")
               and e.activity_task_scheduled_event_attributes.activity_type.name
               == "fetch_billing_document"]  # fmt: skip
    assert len(fetched) == 1
    assert world.post_calls == 1
    assert list(world.erp_payments) == ["inpay_1"]


async def test_out_of_order_and_duplicate_events_post_each_document_once_in_billing_order(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    for n in range(1, 4):
        world.documents[f"in_{n}"] = invoice(f"in_{n}", f"{n}0.00", minute=n)
    deliveries = [("evt_3", "in_3", 300), ("evt_1", "in_1", 100), ("evt_3", "in_3", 300),
                  ("evt_2", "in_2", 200), ("evt_1", "in_1", 100)]  # fmt: skip
    for event_id, doc_id, created in deliveries:
        await deliver(env.client, queue_prefix, event(event_id, doc_id, created))
    async with running(env.client, queue_prefix, world):
        await until(lambda: len(world.journal) == 3, env, "three postings")
    assert world.erp_order == ["in_1", "in_2", "in_3"]
    assert world.post_calls == 3


async def test_an_earlier_invoice_whose_webhook_is_late_is_posted_first(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    world.documents["in_early"] = invoice("in_early", "30.00", minute=1)
    world.documents["in_late"] = invoice("in_late", "36.00", minute=2)
    world.documents["in_draft"] = invoice("in_draft", "5.00", minute=3, status="draft",
                                          finalized_at=None)  # fmt: skip
    async with running(env.client, queue_prefix, world):
        # Only the later invoice's webhook has arrived (the other is minutes behind).
        await deliver(env.client, queue_prefix, event("evt_late", "in_late", 200))
        await until(lambda: len(world.journal) == 2, env, "both postings")
        await deliver(env.client, queue_prefix, event("evt_early", "in_early", 100))
        await env.sleep(timedelta(minutes=1))
    assert world.erp_order == ["in_early", "in_late"]
    assert world.post_calls == 2


async def test_events_of_the_same_second_are_ordered_by_document_number(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    world.documents["in_first"] = invoice("in_first", "30.00")
    world.documents["in_second"] = invoice("in_second", "36.00")
    # Random event ids sort the wrong way round; the invoice numbers do not.
    await deliver(env.client, queue_prefix, event("evt_a", "in_second", 100, number="AB-0002"))
    await deliver(env.client, queue_prefix, event("evt_z", "in_first", 100, number="AB-0001"))
    async with running(env.client, queue_prefix, world):
        await until(lambda: len(world.journal) == 2, env, "two postings")
    assert world.erp_order == ["in_first", "in_second"]


async def test_a_second_event_for_a_posted_document_posts_nothing_more(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    world.documents["in_p"] = invoice("in_p", "10.00")
    async with running(env.client, queue_prefix, world):
        await deliver(env.client, queue_prefix, event("evt_fin", "in_p", 100))
        await until(lambda: "in_p" in world.journal, env, "posting")
        world.documents["in_p"] = world.documents["in_p"].model_copy(update={"status": "paid"})
        workflow_id = await deliver(env.client, queue_prefix, event("evt_paid", "in_p", 160))
        handle = env.client.get_workflow_handle(workflow_id)
        await until(lambda: True, env, "settle")
        await until(
            lambda: world.documents["in_p"].status == "paid", env, "paid"
        )  # the paid event is processed while we wait
        await env.sleep(timedelta(seconds=10))
        assert (await handle.query(SubscriptionLedgerWorkflow.status)).processed_events == 2
    assert world.post_calls == 1


async def test_voided_invoice_gets_its_reversal_after_the_invoice(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    # The void event arrives alone: the refetch shows a voided, once-finalized invoice.
    world.documents["in_v"] = invoice("in_v", "99.00", status="void")
    async with running(env.client, queue_prefix, world):
        await deliver(env.client, queue_prefix, event("evt_void", "in_v", 100))
        await until(lambda: len(world.journal) == 2, env, "invoice and reversal")
    assert world.erp_order == ["in_v", "in_v/void"]
    assert world.erp["in_v/void"].kind == "credit_note"


async def test_lost_erp_answer_is_retried_into_the_same_document(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    world.documents["in_lost"] = invoice("in_lost", "40.00")
    world.commit_then_lose_answer = 1
    async with running(env.client, queue_prefix, world):
        await deliver(env.client, queue_prefix, event("evt_l", "in_lost", 100))
        await until(lambda: "in_lost" in world.journal, env, "posting")
    assert world.post_calls == 2
    assert list(world.erp) == ["in_lost"]
    assert world.journal["in_lost"].erp_document_id == world.erp["in_lost"].erp_document_id


async def test_failed_journal_write_does_not_post_again(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    world.documents["in_j"] = invoice("in_j", "12.00")
    world.journal_failures = 2
    async with running(env.client, queue_prefix, world):
        await deliver(env.client, queue_prefix, event("evt_j", "in_j", 100))
        await until(lambda: "in_j" in world.journal, env, "journal entry")
    assert world.post_calls == 1


async def test_erp_down_for_an_hour_is_retried_and_posts_once(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    world.documents["in_down"] = invoice("in_down", "70.00")
    # Backoff 2 s doubling to 5 min: 20 failed attempts span 68 minutes.
    world.post_failures = [("TransientError", False)] * 20
    async with running(env.client, queue_prefix, world):
        await deliver(env.client, queue_prefix, event("evt_d", "in_down", 100))
        await until(
            lambda: "in_down" in world.journal, env, "posting after the outage",
            step=timedelta(minutes=1),
        )  # fmt: skip
    assert world.post_calls == 21
    assert list(world.erp) == ["in_down"]


async def exception_handle(env: WorkflowEnvironment, workflow_id: str) -> WorkflowHandle[Any, Any]:
    handle = env.client.get_workflow_handle(workflow_id)

    async def blocked_by() -> str | None:
        return (await handle.query(SubscriptionLedgerWorkflow.status)).blocked_by

    for _ in range(100):
        exception_id = await blocked_by()
        if exception_id:
            return env.client.get_workflow_handle(exception_id)
        await env.sleep(timedelta(seconds=1))
    raise AssertionError("no finance exception opened")


def decision(kind: str, **changes: Any) -> DecisionRequest:
    fields: dict[str, Any] = {"decision": kind, "reason": "checked with the customer",
                              "actor": "fiona", "role": "finance"}  # fmt: skip
    fields.update(changes)
    return DecisionRequest(**fields)


async def test_policy_violation_holds_later_events_until_finance_rejects_it(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    bad = invoice("in_bad", "10.00")
    world.documents["in_bad"] = bad.model_copy(update={"total": usd("11.00")})
    world.documents["in_next"] = invoice("in_next", "20.00", minute=5)
    async with running(env.client, queue_prefix, world):
        workflow_id = await deliver(env.client, queue_prefix, event("evt_bad", "in_bad", 100))
        exception = await exception_handle(env, workflow_id)
        await deliver(env.client, queue_prefix, event("evt_next", "in_next", 400))
        await env.sleep(timedelta(minutes=5))
        ledger = env.client.get_workflow_handle(workflow_id)
        assert await status_of(ledger) == "blocked"
        assert world.journal == {}  # held: the later invoice waits behind the exception

        state: FinanceExceptionState = await exception.query(FinanceExceptionWorkflow.state)
        assert state.context.error_type == "PolicyViolation"
        assert "total_inconsistent" in state.context.error_message
        assert state.context.invoice_id == "in_bad"
        assert state.context.origin_workflow_id == workflow_id

        decided = await exception.execute_update(
            FinanceExceptionWorkflow.decide, decision("reject")
        )
        assert decided.decision == "reject"
        await until(lambda: "in_next" in world.journal, env, "held event posted")
    assert "in_bad" not in world.erp
    assert [a.action for a in world.audit] == ["exception.opened", "exception.reject"]
    assert (world.audit[0].actor, world.audit[1].actor) == ("ledgerbridge", "fiona")


async def test_retry_after_an_erp_rejection_posts_the_document(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    world.documents["in_r"] = invoice("in_r", "15.00")
    world.post_failures = [("ValidationError", True)]
    async with running(env.client, queue_prefix, world):
        workflow_id = await deliver(env.client, queue_prefix, event("evt_r", "in_r", 100))
        exception = await exception_handle(env, workflow_id)
        await exception.execute_update(FinanceExceptionWorkflow.decide, decision("retry"))
        await until(lambda: "in_r" in world.journal, env, "posted after retry")
    assert world.post_calls == 2


async def test_resolve_manually_journals_the_manual_erp_document(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    world.documents["in_m"] = invoice("in_m", "25.00")
    world.period_open = False
    async with running(env.client, queue_prefix, world):
        workflow_id = await deliver(env.client, queue_prefix, event("evt_m", "in_m", 100))
        exception = await exception_handle(env, workflow_id)
        state = await exception.query(FinanceExceptionWorkflow.state)
        assert state.context.error_type == "PeriodClosed"
        await exception.execute_update(
            FinanceExceptionWorkflow.decide,
            decision("resolve_manually", manual_erp_number="INV-MANUAL-7"),
        )
        await until(lambda: "in_m" in world.journal, env, "manual journal entry")
    assert world.journal["in_m"].erp_number == "INV-MANUAL-7"
    assert world.erp == {}


@pytest.mark.parametrize(
    ("request_changes", "refusal"),
    [
        ({"role": "support"}, "may not decide"),
        ({"reason": "  "}, "reason is required"),
        ({"decision": "compensate"}, "not possible here"),
        ({"decision": "resolve_manually"}, "needs the number"),
    ],
)
async def test_bad_decisions_are_refused_before_they_reach_history(
    dev_server_env: WorkflowEnvironment,
    queue_prefix: str,
    request_changes: dict[str, Any],
    refusal: str,
) -> None:
    # The dev server: the time-skipping test server cannot report a rejected Update.
    env, world = dev_server_env, FakeWorld()
    world.documents["in_x"] = invoice("in_x", "5.00", currency="EUR")
    async with running(env.client, queue_prefix, world):
        workflow_id = await deliver(env.client, queue_prefix, event("evt_x", "in_x", 100))
        exception = await exception_handle(env, workflow_id)
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await exception.execute_update(
                FinanceExceptionWorkflow.decide, decision("reject", **request_changes)
            )
        assert refusal in str(refused.value.cause)
        state = await exception.query(FinanceExceptionWorkflow.state)
        assert state.decision is None
        await exception.execute_update(FinanceExceptionWorkflow.decide, decision("reject"))
        # Decided means closed: a second decision finds nothing to decide.
        with pytest.raises(RPCError, match="already completed"):
            await exception.execute_update(FinanceExceptionWorkflow.decide, decision("reject"))
    assert [a.action for a in world.audit] == ["exception.opened", "exception.reject"]


async def test_undecided_exception_is_reminded_then_escalated(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    world.documents["in_e"] = invoice("in_e", "5.00", currency="EUR")
    async with running(env.client, queue_prefix, world):
        workflow_id = await deliver(env.client, queue_prefix, event("evt_e", "in_e", 100))
        exception = await exception_handle(env, workflow_id)
        await env.sleep(timedelta(hours=25))
        assert (await exception.query(FinanceExceptionWorkflow.state)).status == "reminded"
        await env.sleep(timedelta(hours=48))
        assert (await exception.query(FinanceExceptionWorkflow.state)).status == "escalated"
        attributes = (await exception.describe()).typed_search_attributes
        assert attributes.get(visibility.PROCESS_STATUS) == "escalated"


async def test_unknown_customer_is_made_known_to_the_erp_before_posting(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    world.links = {}
    world.documents["in_new"] = invoice("in_new", "30.00")
    async with running(env.client, queue_prefix, world):
        await deliver(env.client, queue_prefix, event("evt_n", "in_new", 100))
        await until(lambda: "in_new" in world.journal, env, "posting")
    assert [r.external_id for r in world.links["cus_1"]] == ["99"]


async def test_long_history_continues_as_new_carrying_only_what_is_pending(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    for n in range(1, 6):
        world.documents[f"in_{n}"] = invoice(f"in_{n}", f"{n}.00", minute=n)
    start = ProcessStart(
        workflow=SubscriptionLedgerWorkflow.run,
        workflow_id=f"subscription/sub_can-{queue_prefix}",
        input=SubscriptionLedgerInput(subscription_id="sub_can", customer_id="cus_1",
                                      supported_currencies=["USD"], continue_as_new_after=2),
        signal="billing_event",
        signal_input=event("evt_1", "in_1", 100),
        search_attributes=visibility.start_attributes("amendment_to_erp", "waiting",
                                                      customer_id="cus_1"),
        summary="test",
    )  # fmt: skip
    await signal_with_start(env.client, start, queue_prefix)
    handle = env.client.get_workflow_handle(start.workflow_id)
    first_run = (await handle.describe()).run_id
    async with running(env.client, queue_prefix, world):
        for n in range(2, 6):
            await handle.signal("billing_event", event(f"evt_{n}", f"in_{n}", 100 * n))
        await until(lambda: len(world.journal) == 5, env, "five postings")
        # A duplicate of an event handled before continue-as-new is still recognised.
        await handle.signal("billing_event", event("evt_5", "in_5", 500))
        await env.sleep(timedelta(minutes=1))
        description = await handle.describe()
    assert description.run_id != first_run
    assert description.typed_search_attributes.get(visibility.CUSTOMER_ID) == "cus_1"
    assert world.post_calls == 5
    assert world.erp_order == [f"in_{n}" for n in range(1, 6)]


async def test_refresh_continues_as_new_once_idle_and_keeps_what_it_has_seen(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    """After a deployment, ops refresh the running ledgers: each continues as new (so it
    takes up the new code's patches) without losing what it has seen or has still to do."""
    env, world = time_skipping_env, FakeWorld()
    world.documents["in_1"] = invoice("in_1", "10.00", minute=1)
    world.documents["in_2"] = invoice("in_2", "20.00", minute=2)
    workflow_id = await deliver(env.client, queue_prefix, event("evt_1", "in_1", 100))
    handle = env.client.get_workflow_handle(workflow_id)
    first_run = (await handle.describe()).run_id
    async with running(env.client, queue_prefix, world):
        await until(lambda: "in_1" in world.journal, env, "first posting")
        await handle.signal(REFRESH_SIGNAL)
        await env.sleep(timedelta(seconds=5))
        description = await handle.describe()
        # The new run still knows evt_1 (a redelivery posts nothing) and posts what is new.
        await handle.signal("billing_event", event("evt_1", "in_1", 100))
        await handle.signal("billing_event", event("evt_2", "in_2", 200))
        await until(lambda: "in_2" in world.journal, env, "second posting")
    assert description.run_id != first_run
    assert description.status == WorkflowExecutionStatus.RUNNING
    assert world.post_calls == 2


async def test_events_carried_over_continue_as_new_are_posted_not_dropped_as_seen(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    """A run continues as new with what it has not done yet (an event that arrived while it
    was finishing): those events' ids are among the seen ones, and they are still posted."""
    env, world = time_skipping_env, FakeWorld()
    world.documents["in_c"] = invoice("in_c", "12.00", minute=1)
    carried = event("evt_c", "in_c", 100)
    request = SubscriptionLedgerInput(
        subscription_id="sub_1", customer_id="cus_1", supported_currencies=["USD"],
        pending=[carried], seen_event_ids=["evt_0", "evt_c"],
    )  # fmt: skip
    async with running(env.client, queue_prefix, world):
        await env.client.start_workflow(
            SubscriptionLedgerWorkflow.run, request, id=f"subscription/sub_1-{queue_prefix}",
            task_queue=task_queue(queue_prefix),
        )  # fmt: skip
        await until(lambda: "in_c" in world.journal, env, "the carried event posted")
    assert world.post_calls == 1


async def test_a_canceled_subscriptions_ledger_still_closes_after_a_refresh(
    queue_prefix: str,
) -> None:
    """The canceled state travels over continue-as-new (a refresh, say): once idle the
    ledger closes instead of continuing as new every week for ever."""
    world = FakeWorld()
    request = SubscriptionLedgerInput(
        subscription_id="sub_1", customer_id="cus_1", supported_currencies=["USD"],
        subscription_canceled=True,
    )  # fmt: skip
    # Its own server: this test skips a week, which the shared one stops doing once an
    # earlier test's timers fire with no worker left.
    async with time_skipping_server() as env, running(env.client, queue_prefix, world):
        handle = await env.client.start_workflow(
            SubscriptionLedgerWorkflow.run, request, id=f"subscription/sub_1-{queue_prefix}",
            task_queue=task_queue(queue_prefix),
        )  # fmt: skip
        await env.sleep(timedelta(days=8))
        description = await handle.describe()
    assert description.status == WorkflowExecutionStatus.COMPLETED


# --- money that moved: payments and refunds --------------------------------------------


def paid_event(event_id: str, doc_id: str, created: int) -> BillingEventRef:
    return event(event_id, doc_id, created).model_copy(update={"event_type": "invoice.paid"})


def charge_event(event_id: str, charge_id: str, created: int) -> BillingEventRef:
    return BillingEventRef(
        event_id=event_id, event_type="charge.refunded", created=created, object_kind="charge",
        object_id=charge_id, customer_id="cus_1", correlation_id=f"c-{event_id}",
    )  # fmt: skip


async def deliver_to_customer_ledger(client: Client, prefix: str, ref: BillingEventRef) -> str:
    """Refunds go to the customer's ledger (a charge names no subscription)."""
    start = ProcessStart(
        workflow=SubscriptionLedgerWorkflow.run,
        workflow_id=f"customer-ledger/cus_1-{prefix}",
        input=SubscriptionLedgerInput(subscription_id=None, customer_id="cus_1",
                                      supported_currencies=["USD"]),
        signal="billing_event",
        signal_input=ref,
        search_attributes=visibility.start_attributes("amendment_to_erp", "waiting"),
        summary="test",
    )  # fmt: skip
    await signal_with_start(client, start, prefix)
    return start.workflow_id


def paid_invoice(doc_id: str, total: str, *payments: Payment) -> BillingDocument:
    paid = sum((p.amount.amount for p in payments if p.status == "paid"), Decimal(0))
    status = "paid" if paid == Decimal(total) else "open"
    return invoice(doc_id, total, status=status, amount_paid=usd(str(paid)),
                   amount_remaining=usd(str(Decimal(total) - paid)))  # fmt: skip


async def test_payment_is_posted_after_its_invoice_and_settles_it(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    world.payments["in_p"] = [payment("inpay_1", "in_p", "50.00", minute=7)]
    world.documents["in_p"] = paid_invoice("in_p", "50.00", *world.payments["in_p"])
    async with running(env.client, queue_prefix, world):
        workflow_id = await deliver(env.client, queue_prefix, paid_event("evt_paid", "in_p", 100))
        await until(lambda: "inpay_1" in world.journal, env, "payment journaled")
        # Another event of the same payment (invoice.payment_succeeded) changes nothing.
        await deliver(env.client, queue_prefix, paid_event("evt_succeeded", "in_p", 101))
        await env.sleep(timedelta(minutes=1))
        ledger = env.client.get_workflow_handle(workflow_id)
        assert (await ledger.query(SubscriptionLedgerWorkflow.status)).processed_events == 2
    assert world.erp_order == ["in_p", "inpay_1"]
    posting = world.erp_payment_postings["inpay_1"]
    assert (posting.applies_to, posting.amount, posting.payment_date) == (
        "in_p",
        usd("50.00"),
        date(2026, 11, 2),
    )
    assert (posting.journal, posting.clearing_account) == ("STRIPE-USD", "1110")
    assert world.journal["inpay_1"].document_type == "payment"
    assert world.journal["inpay_1"].erp_number == "PAY-1"
    assert world.applied["in_p"] == Decimal("50.00")
    assert (world.post_calls, world.payment_calls) == (1, 1)


async def test_payment_event_before_the_finalized_event_posts_invoice_then_payment_once(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    world.payments["in_f"] = [payment("inpay_f", "in_f", "30.00", method="out_of_band")]
    world.documents["in_f"] = paid_invoice("in_f", "30.00", *world.payments["in_f"])
    async with running(env.client, queue_prefix, world):
        await deliver(env.client, queue_prefix, paid_event("evt_paid", "in_f", 200))
        await until(lambda: "inpay_f" in world.journal, env, "payment journaled")
        # The finalized event, minutes late, finds the invoice settled.
        await deliver(env.client, queue_prefix, event("evt_fin", "in_f", 100))
        await env.sleep(timedelta(minutes=1))
    assert world.erp_order == ["in_f", "inpay_f"]
    assert world.erp_payment_postings["inpay_f"].journal == "BANK"
    assert (world.post_calls, world.payment_calls) == (1, 1)


async def test_two_partial_payments_are_each_posted_once_and_settle_the_invoice(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    first = payment("inpay_1", "in_2p", "40.00", minute=5)
    world.payments["in_2p"] = [first]
    world.documents["in_2p"] = paid_invoice("in_2p", "100.00", first)
    async with running(env.client, queue_prefix, world):
        workflow_id = await deliver(env.client, queue_prefix, paid_event("evt_part1", "in_2p", 100))
        await until(lambda: "inpay_1" in world.journal, env, "first payment")
        second = payment("inpay_2", "in_2p", "60.00", minute=50)
        world.payments["in_2p"] = [first, second]
        world.documents["in_2p"] = paid_invoice("in_2p", "100.00", first, second)
        for event_id, created in (("evt_part2", 200), ("evt_part2", 200), ("evt_paid", 201)):
            await deliver(env.client, queue_prefix, paid_event(event_id, "in_2p", created))
        await until(lambda: "inpay_2" in world.journal, env, "second payment")
        await env.sleep(timedelta(minutes=1))
        ledger = env.client.get_workflow_handle(workflow_id)
        assert (await ledger.query(SubscriptionLedgerWorkflow.status)).processed_events == 3
    assert world.erp_order == ["in_2p", "inpay_1", "inpay_2"]
    assert world.payment_calls == 2
    assert world.applied["in_2p"] == Decimal("100.00")


async def test_refund_waits_for_its_payment_then_posts_a_refund_credit_note_and_payout(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    paid = payment("inpay_r", "in_r", "80.00")
    world.payments["in_r"] = [paid]
    world.documents["in_r"] = paid_invoice("in_r", "80.00", paid)
    world.refunds["ch_inpay_r"] = [refund("re_1", paid, "25.00")]
    async with running(env.client, queue_prefix, world):
        # The refund's webhook comes first: its payment is not in the ERP yet.
        customer_ledger = await deliver_to_customer_ledger(
            env.client, queue_prefix, charge_event("evt_refunded", "ch_inpay_r", 300)
        )
        await env.sleep(timedelta(minutes=5))
        handle = env.client.get_workflow_handle(customer_ledger)
        assert await status_of(handle) == "waiting_for_erp"
        assert world.erp_order == []
        await deliver(env.client, queue_prefix, paid_event("evt_paid", "in_r", 100))
        await until(lambda: "re_1/payout" in world.journal, env, "refund paid out")
    assert world.erp_order == ["in_r", "inpay_r", "re_1", "re_1/payout"]
    credit_note = world.erp_postings["re_1"]
    assert credit_note.kind == "credit_note" and credit_note.taxes == []
    [line] = credit_note.lines
    assert (line.erp_product, line.revenue_account, line.unit_price) == (
        "REFUND",
        "4900",
        Decimal("25.00"),
    )
    payout = world.erp_payment_postings["re_1/payout"]
    assert (payout.kind, payout.applies_to, payout.amount, payout.method) == (
        "refund",
        "re_1",
        usd("25.00"),
        "card",
    )
    assert world.journal["re_1"].document_type == "credit_note"
    assert world.journal["re_1/payout"].document_type == "refund"
    # The customer owes nothing in the ERP: 80 invoiced - 80 paid - 25 credited + 25 paid out.
    assert world.applied == {"in_r": Decimal("80.00"), "re_1": Decimal("25.00")}


async def test_refund_made_by_a_billing_credit_note_is_paid_out_on_that_credit_note(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    paid = payment("inpay_c", "in_c", "60.00")
    world.payments["in_c"] = [paid]
    world.documents["in_c"] = paid_invoice("in_c", "60.00", paid)
    world.documents["cn_1"] = invoice("cn_1", "60.00", kind="credit_note", status="issued",
                                      invoice_id="in_c")  # fmt: skip
    world.refunds["ch_inpay_c"] = [refund("re_c", paid, "60.00", credit_note_id="cn_1")]
    async with running(env.client, queue_prefix, world):
        await deliver(env.client, queue_prefix, paid_event("evt_paid", "in_c", 100))
        await until(lambda: "inpay_c" in world.journal, env, "payment posted")
        await deliver_to_customer_ledger(
            env.client, queue_prefix, charge_event("evt_refunded", "ch_inpay_c", 300)
        )
        # The credit note's own ledger is the customer's: the refund posts it first.
        await until(lambda: "re_c/payout" in world.journal, env, "refund paid out")
        # Its own event, later, finds it journaled and posts nothing.
        await deliver_to_customer_ledger(
            env.client, queue_prefix, event("evt_cn", "cn_1", 299, kind="credit_note")
        )
        # A duplicate refund event, and a later one of the same charge, post nothing more.
        await deliver_to_customer_ledger(
            env.client, queue_prefix, charge_event("evt_refunded_again", "ch_inpay_c", 400)
        )
        await env.sleep(timedelta(minutes=1))
    assert world.erp_order == ["in_c", "inpay_c", "cn_1", "re_c/payout"]
    assert "re_c" not in world.erp  # no refund credit note besides billing's own
    assert world.erp_payment_postings["re_c/payout"].applies_to == "cn_1"
    assert world.payment_calls == 2


async def test_refund_whose_payment_never_reaches_the_erp_goes_to_finance_after_an_hour(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    paid = payment("inpay_n", "in_n", "20.00")
    world.payments["in_n"] = [paid]
    world.documents["in_n"] = paid_invoice("in_n", "20.00", paid)
    world.refunds["ch_inpay_n"] = [refund("re_n", paid, "20.00")]
    async with running(env.client, queue_prefix, world):
        workflow_id = await deliver_to_customer_ledger(
            env.client, queue_prefix, charge_event("evt_refunded", "ch_inpay_n", 300)
        )
        await env.sleep(timedelta(minutes=50))
        assert await status_of(env.client.get_workflow_handle(workflow_id)) == "waiting_for_erp"
        await env.sleep(timedelta(minutes=20))
        exception = await exception_handle(env, workflow_id)
        state = await exception.query(FinanceExceptionWorkflow.state)
        assert (state.context.step, state.context.error_type) == (
            "await_payment_posting",
            "PaymentNotInErp",
        )
        assert "inpay_n" in state.context.error_message
        assert state.context.amount == usd("20.00")
        assert state.context.invoice_id == "in_n"
        assert state.context.payload["refund"]["refund_id"] == "re_n"
        assert set(state.context.decision_effects) == set(state.context.allowed_decisions)
        await exception.execute_update(FinanceExceptionWorkflow.decide, decision("reject"))
        await until(lambda: len(world.audit) == 2, env, "decision audited")
        ledger = env.client.get_workflow_handle(workflow_id)
        # Rejected: a later event of the same charge does not make it wait (and ask) again.
        await ledger.signal("billing_event", charge_event("evt_again", "ch_inpay_n", 400))
        await env.sleep(timedelta(hours=2))
        status = await ledger.query(SubscriptionLedgerWorkflow.status)
        assert (status.status, status.processed_events) == ("waiting", 2)
    assert world.erp_order == []
    # Journaled as rejected (no ERP number), so nothing looks for it again.
    assert {ref: e.erp_number for ref, e in world.journal.items()} == {
        "re_n": None,
        "re_n/payout": None,
    }


async def test_refund_of_a_charge_that_paid_no_invoice_is_a_finance_exception(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    world.refunds["ch_x"] = [refund("re_x", None, "9.00")]
    async with running(env.client, queue_prefix, world):
        workflow_id = await deliver_to_customer_ledger(
            env.client, queue_prefix, charge_event("evt_refunded", "ch_x", 300)
        )
        exception = await exception_handle(env, workflow_id)
        state = await exception.query(FinanceExceptionWorkflow.state)
    assert state.context.error_type == "RefundWithoutInvoice"
    assert "re_x" in state.context.error_message and "ch_x" in state.context.error_message
    assert state.context.amount == usd("9.00")
    assert state.context.remote_answer["refund"]["charge_id"] == "ch_x"
    assert world.erp_order == []


async def test_refund_larger_than_its_payment_is_a_finance_exception_and_posts_nothing(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    paid = payment("inpay_b", "in_b", "30.00")
    world.payments["in_b"] = [paid]
    world.documents["in_b"] = paid_invoice("in_b", "30.00", paid)
    world.refunds["ch_inpay_b"] = [refund("re_b1", paid, "20.00"), refund("re_b2", paid, "15.00")]
    async with running(env.client, queue_prefix, world):
        await deliver(env.client, queue_prefix, paid_event("evt_paid", "in_b", 100))
        workflow_id = await deliver_to_customer_ledger(
            env.client, queue_prefix, charge_event("evt_refunded", "ch_inpay_b", 300)
        )
        exception = await exception_handle(env, workflow_id)
        state = await exception.query(FinanceExceptionWorkflow.state)
        assert "re_b1/payout" in world.journal  # the first refund fits and is posted
    assert (state.context.step, state.context.error_type) == ("check_refund", "PolicyViolation")
    assert "refund_exceeds_payment" in state.context.error_message
    assert state.context.amount == usd("15.00")
    assert "re_b2" not in world.erp and "re_b2/payout" not in world.erp_payments


async def test_unmapped_product_names_it_and_posts_after_finance_fixes_the_mapping(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    world.documents["in_u"] = invoice("in_u", "45.00", product="prod_seats")
    async with running(env.client, queue_prefix, world):
        workflow_id = await deliver(env.client, queue_prefix, event("evt_u", "in_u", 100))
        exception = await exception_handle(env, workflow_id)
        state = await exception.query(FinanceExceptionWorkflow.state)
        assert (state.context.step, state.context.error_type) == (
            "post_ledger_document",
            "Unmapped",
        )
        assert "prod_seats" in state.context.error_message
        assert state.context.remote_answer["missing"] == [
            "product prod_seats (price none, line 'line 0')"
        ]
        assert state.context.remote_answer["mapping_version"] == 1
        assert world.erp == {} and world.post_calls == 0  # the ERP was never asked
        world.set_mapping(finance_mapping(version=2, prod_seats="ADDON"))
        await exception.execute_update(FinanceExceptionWorkflow.decide, decision("retry"))
        await until(lambda: "in_u" in world.journal, env, "posted after the fix")
    [line] = world.erp_postings["in_u"].lines
    assert line.erp_product == "ADDON"


async def test_unreadable_mapping_file_is_a_finance_exception(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    world.documents["in_bf"] = invoice("in_bf", "5.00")
    world.mapping_path.write_text("version = 'three'\n")
    async with running(env.client, queue_prefix, world):
        workflow_id = await deliver(env.client, queue_prefix, event("evt_bf", "in_bf", 100))
        exception = await exception_handle(env, workflow_id)
        state = await exception.query(FinanceExceptionWorkflow.state)
    assert state.context.error_type == "MappingFileError"
    assert "version" in state.context.error_message
    assert world.erp == {}


async def test_unmapped_payment_method_holds_the_payment_until_finance_decides(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    world.payments["in_m"] = [payment("inpay_m", "in_m", "12.00", method="sepa_debit")]
    world.documents["in_m"] = paid_invoice("in_m", "12.00", *world.payments["in_m"])
    async with running(env.client, queue_prefix, world):
        workflow_id = await deliver(env.client, queue_prefix, paid_event("evt_m", "in_m", 100))
        exception = await exception_handle(env, workflow_id)
        state = await exception.query(FinanceExceptionWorkflow.state)
        assert state.context.error_type == "Unmapped"
        assert "payment journal for sepa_debit/USD" in state.context.error_message
        assert state.context.invoice_id == "in_m"
        assert state.context.payload["payment"]["reference"] == "inpay_m"
        # A later invoice of the subscription is held behind the exception.
        world.documents["in_next"] = invoice("in_next", "8.00", minute=30)
        await deliver(env.client, queue_prefix, event("evt_next", "in_next", 400))
        await env.sleep(timedelta(minutes=5))
        assert "in_next" not in world.journal
        mapping = finance_mapping(version=2)
        journals = {**mapping.payments, "sepa_debit/USD": mapping.payments["out_of_band/USD"]}
        world.set_mapping(mapping.model_copy(update={"payments": journals}))
        await exception.execute_update(FinanceExceptionWorkflow.decide, decision("retry"))
        await until(lambda: "in_next" in world.journal, env, "held invoice after the fix")
    assert world.erp_order == ["in_m", "inpay_m", "in_next"]
    assert world.erp_payment_postings["inpay_m"].journal == "BANK"


async def test_missing_exchange_rate_is_a_finance_exception_naming_currency_and_date(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    world.documents["in_fx"] = invoice("in_fx", "70.00")
    world.no_rate_currencies = {"USD"}
    async with running(env.client, queue_prefix, world):
        workflow_id = await deliver(env.client, queue_prefix, event("evt_fx", "in_fx", 100))
        exception = await exception_handle(env, workflow_id)
        state = await exception.query(FinanceExceptionWorkflow.state)
    assert state.context.remote_answer["remote_code"] == "no_exchange_rate"
    assert "USD" in state.context.error_message and "2026-11-02" in state.context.error_message
    assert state.context.amount == usd("70.00")
    assert world.erp == {}


async def test_overpayment_refused_by_the_erp_goes_to_finance_and_manual_resolution_settles(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    world.payments["in_o"] = [payment("inpay_o", "in_o", "50.00")]
    world.documents["in_o"] = paid_invoice("in_o", "50.00", *world.payments["in_o"])
    world.applied["in_o"] = Decimal("20.00")  # someone already applied 20 in the ERP by hand
    async with running(env.client, queue_prefix, world):
        workflow_id = await deliver(env.client, queue_prefix, paid_event("evt_o", "in_o", 100))
        exception = await exception_handle(env, workflow_id)
        state = await exception.query(FinanceExceptionWorkflow.state)
        assert (state.context.step, state.context.error_type) == (
            "post_ledger_payment",
            "RejectedError",
        )
        assert state.context.remote_answer["remote_code"] == "overpayment"
        assert state.context.amount == usd("50.00")
        assert state.context.invoice_id == "in_o"
        assert "inpay_o" not in world.erp_payments
        await exception.execute_update(
            FinanceExceptionWorkflow.decide,
            decision("resolve_manually", manual_erp_number="PAY-MANUAL-3"),
        )
        await until(lambda: "inpay_o" in world.journal, env, "manual journal entry")
        # The invoice is settled: a later event of it asks the ERP nothing more.
        calls = world.payment_calls
        await deliver(env.client, queue_prefix, paid_event("evt_o2", "in_o", 101))
        await env.sleep(timedelta(minutes=1))
    assert world.journal["inpay_o"].erp_number == "PAY-MANUAL-3"
    assert world.journal["inpay_o"].document_type == "payment"
    assert world.payment_calls == calls


async def test_lost_answer_of_a_payment_is_retried_into_the_same_erp_payment(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    world.payments["in_l"] = [payment("inpay_l", "in_l", "19.00")]
    world.documents["in_l"] = paid_invoice("in_l", "19.00", *world.payments["in_l"])
    world.payment_answers_lost = 1
    async with running(env.client, queue_prefix, world):
        await deliver(env.client, queue_prefix, paid_event("evt_l", "in_l", 100))
        await until(lambda: "inpay_l" in world.journal, env, "payment journaled")
    assert world.payment_calls == 2
    assert list(world.erp_payments) == ["inpay_l"]
    assert world.journal["inpay_l"].erp_document_id == world.erp_payments["inpay_l"].erp_document_id


async def test_payment_event_for_an_invoice_billing_does_not_know_goes_to_finance(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    async with running(env.client, queue_prefix, world):
        workflow_id = await deliver(env.client, queue_prefix, paid_event("evt_g", "in_ghost", 100))
        exception = await exception_handle(env, workflow_id)
        state = await exception.query(FinanceExceptionWorkflow.state)
    assert (state.context.step, state.context.error_type) == (
        "fetch_billing_document",
        "NotFoundError",
    )
    assert state.context.invoice_id == "in_ghost"
    assert state.context.payload["event_type"] == "invoice.paid"
    assert world.erp_order == [] and world.journal == {}


async def test_reconciliation_replay_of_a_settled_invoice_posts_a_payment_missing_behind_it(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    world.payments["in_h"] = [payment("inpay_h", "in_h", "33.00")]
    world.documents["in_h"] = paid_invoice("in_h", "33.00", *world.payments["in_h"])
    async with running(env.client, queue_prefix, world):
        await deliver(env.client, queue_prefix, paid_event("evt_paid", "in_h", 100))
        await until(lambda: "inpay_h" in world.journal, env, "payment journaled")
        # The payment went missing (say, deleted in the ERP, its journal row with it).
        del world.journal["inpay_h"], world.erp_payments["inpay_h"]
        world.applied.clear()
        await deliver(env.client, queue_prefix, paid_event("evt_again", "in_h", 101))
        await env.sleep(timedelta(minutes=1))
        assert "inpay_h" not in world.journal  # a settled invoice is not looked at again
        heal = paid_event("recon:run-1:in_h", "in_h", 100)
        await deliver(env.client, queue_prefix, heal)
        await until(lambda: "inpay_h" in world.journal, env, "payment healed")
    assert world.post_calls == 1 and world.payment_calls == 2


async def test_refund_by_a_credit_note_queued_behind_it_in_its_ledger_is_paid_out_at_once(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    """Billing's credit note events go to the customer's ledger, like the charge's: when the
    charge's event comes first, the refund posts that credit note itself (journal first)
    rather than wait an hour for an event queued behind it."""
    env, world = time_skipping_env, FakeWorld()
    paid = payment("inpay_q", "in_q", "40.00")
    world.payments["in_q"] = [paid]
    world.documents["in_q"] = paid_invoice("in_q", "40.00", paid)
    world.documents["cn_q"] = invoice("cn_q", "40.00", kind="credit_note", status="issued",
                                      invoice_id="in_q")  # fmt: skip
    world.refunds["ch_inpay_q"] = [refund("re_q", paid, "40.00", credit_note_id="cn_q")]
    async with running(env.client, queue_prefix, world):
        await deliver(env.client, queue_prefix, paid_event("evt_paid", "in_q", 100))
        await until(lambda: "inpay_q" in world.journal, env, "payment posted")
        await deliver_to_customer_ledger(
            env.client, queue_prefix, charge_event("evt_refunded", "ch_inpay_q", 300)
        )
        await deliver_to_customer_ledger(
            env.client, queue_prefix, event("evt_cn", "cn_q", 300, kind="credit_note")
        )
        await until(lambda: "re_q/payout" in world.journal, env, "refund paid out")
        await env.sleep(timedelta(minutes=1))
    assert world.erp_order == ["in_q", "inpay_q", "cn_q", "re_q/payout"]
    assert world.erp_payment_postings["re_q/payout"].applies_to == "cn_q"


async def test_after_finance_rejects_one_payment_the_invoices_other_payments_are_posted(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, FakeWorld()
    first, second = (
        payment("inpay_r1", "in_r2", "30.00", 10),
        payment("inpay_r2", "in_r2", "20.00", 20),
    )
    world.payments["in_r2"] = [first, second]
    world.documents["in_r2"] = paid_invoice("in_r2", "50.00", first, second)
    world.applied["in_r2"] = Decimal("25.00")  # the ERP has 25 open: the first is refused
    async with running(env.client, queue_prefix, world):
        workflow_id = await deliver(env.client, queue_prefix, paid_event("evt_r2", "in_r2", 100))
        exception = await exception_handle(env, workflow_id)
        state = await exception.query(FinanceExceptionWorkflow.state)
        assert state.context.remote_answer["remote_code"] == "overpayment"
        await exception.execute_update(FinanceExceptionWorkflow.decide, decision("reject"))
        # No other event comes: the rest of this one is posted once finance has decided.
        await until(lambda: "inpay_r2" in world.journal, env, "the second payment posted")
    assert "inpay_r1" not in world.erp_payments
    assert world.erp_payment_postings["inpay_r2"].amount == usd("20.00")
