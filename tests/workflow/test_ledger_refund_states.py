"""SubscriptionLedgerWorkflow on the time-skipping server (the doubles of
test_subscription_ledger): refunds billing holds pending, read again until they end, and what
finance rejects journaled so that nothing posts it later.

Each test has a time-skipping server of its own: these sleep for days, and the session's
server stops skipping time once the timers of an earlier test's workflows fire without
their workers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from activities.accounts import BillingAccountActivities
from activities.amendments import BillingDocumentActivities
from activities.payments import BillingPaymentActivities
from adapters import visibility
from adapters.billing.stripe import StripeBilling
from canonical import Payment, Refund
from canonical.ledger import REJECTED_POSTING_PREFIX, BillingEventRef, SubscriptionLedgerInput
from sandbox.billing.driver import BillingDriver
from starters.routing import ProcessStart, signal_with_start
from tests.fixtures.billing import BillingSandbox
from tests.fixtures.temporal import time_skipping_server
from tests.workflow.test_subscription_ledger import (
    FakeWorld,
    charge_event,
    decision,
    deliver,
    deliver_to_customer_ledger,
    event,
    exception_handle,
    finance_mapping,
    invoice,
    paid_event,
    paid_invoice,
    payment,
    refund,
    running,
    until,
    usd,
)
from workflows.finance_exception import FinanceExceptionState, FinanceExceptionWorkflow
from workflows.subscription_ledger import LedgerStatus, SubscriptionLedgerWorkflow


@pytest_asyncio.fixture
async def own_time() -> AsyncIterator[WorkflowEnvironment]:
    async with time_skipping_server() as env:
        yield env


def pending_refund(refund_id: str, of: Payment, amount: str) -> Refund:
    return refund(refund_id, of, amount).model_copy(update={"status": "pending"})


def paid_and_refunded(world: FakeWorld, tag: str, amount: str, refunded: str) -> Payment:
    """An invoice paid by card whose charge has one refund billing holds pending."""
    paid = payment(f"inpay_{tag}", f"in_{tag}", amount)
    world.payments[f"in_{tag}"] = [paid]
    world.documents[f"in_{tag}"] = paid_invoice(f"in_{tag}", amount, paid)
    world.refunds[f"ch_inpay_{tag}"] = [pending_refund(f"re_{tag}", paid, refunded)]
    return paid


def refund_becomes(world: FakeWorld, charge_id: str, status: str) -> None:
    world.refunds[charge_id] = [r.model_copy(update={"status": status})
                                for r in world.refunds[charge_id]]  # fmt: skip


async def refund_seen_pending(
    env: WorkflowEnvironment, world: FakeWorld, queue_prefix: str, tag: str
) -> str:
    """The invoice and its payment posted, then the charge's refund event: the customer's
    ledger id."""
    await deliver(env.client, queue_prefix, paid_event("evt_paid", f"in_{tag}", 100))
    await until(lambda: f"inpay_{tag}" in world.journal, env, "payment posted")
    return await deliver_to_customer_ledger(
        env.client, queue_prefix, charge_event("evt_refunded", f"ch_inpay_{tag}", 300)
    )


async def ledger_status(env: WorkflowEnvironment, workflow_id: str) -> LedgerStatus:
    handle = env.client.get_workflow_handle(workflow_id)
    return await handle.query(SubscriptionLedgerWorkflow.status)


async def test_a_pending_refund_is_posted_once_when_billing_later_says_it_succeeded(
    own_time: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = own_time, FakeWorld()
    paid_and_refunded(world, "p", "80.00", "30.00")
    async with running(env.client, queue_prefix, world):
        ledger = await refund_seen_pending(env, world, queue_prefix, "p")
        await env.sleep(timedelta(hours=1))
        status = await ledger_status(env, ledger)
        assert status.status == "waiting"
        assert [r.split(" ")[0] for r in status.pending_refunds] == ["re_p"]
        assert "re_p" not in world.journal and "re_p/payout" not in world.journal
        # Billing settles it; Stripe's charge.refund.updated reaches no ledger.
        refund_becomes(world, "ch_inpay_p", "succeeded")
        await until(lambda: "re_p/payout" in world.journal, env, "refund paid out later")
        calls = (world.post_calls, world.payment_calls)
        await env.sleep(timedelta(days=3))
        status = await ledger_status(env, ledger)
        processed = status.processed_events
        await env.sleep(timedelta(days=2))
        assert (await ledger_status(env, ledger)).processed_events == processed
    assert status.pending_refunds == [] and status.refunds_not_posted == []
    assert (world.post_calls, world.payment_calls) == calls  # posted once, not read again
    assert world.erp_order == ["in_p", "inpay_p", "re_p", "re_p/payout"]
    assert world.erp_payment_postings["re_p/payout"].amount == usd("30.00")


async def test_a_pending_refund_that_fails_in_billing_posts_nothing_and_says_so(
    own_time: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = own_time, FakeWorld()
    paid_and_refunded(world, "f", "40.00", "40.00")
    async with running(env.client, queue_prefix, world):
        ledger = await refund_seen_pending(env, world, queue_prefix, "f")
        await env.sleep(timedelta(hours=3))  # read again at 10, 30 and 70 minutes
        refund_becomes(world, "ch_inpay_f", "failed")
        await env.sleep(timedelta(hours=3))
        status = await ledger_status(env, ledger)
        processed = status.processed_events
        await env.sleep(timedelta(days=3))
        later = await ledger_status(env, ledger)
    assert status.refunds_not_posted == ["re_f failed in billing: nothing posted"]
    assert status.pending_refunds == []
    assert later.processed_events == processed  # no more reads of the charge
    assert world.erp_order == ["in_f", "inpay_f"]
    assert set(world.journal) == {"in_f", "inpay_f"}


async def test_a_pending_refund_is_still_read_again_after_the_ledger_continues_as_new(
    own_time: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = own_time, FakeWorld()
    paid_and_refunded(world, "c", "60.00", "60.00")
    start = ProcessStart(
        workflow=SubscriptionLedgerWorkflow.run,
        workflow_id=f"customer-ledger/cus_1-{queue_prefix}",
        input=SubscriptionLedgerInput(subscription_id=None, customer_id="cus_1",
                                      supported_currencies=["USD"], continue_as_new_after=1),
        signal="billing_event",
        signal_input=charge_event("evt_refunded", "ch_inpay_c", 300),
        search_attributes=visibility.start_attributes("amendment_to_erp", "waiting"),
        summary="test",
    )  # fmt: skip
    async with running(env.client, queue_prefix, world):
        await deliver(env.client, queue_prefix, paid_event("evt_paid", "in_c", 100))
        await until(lambda: "inpay_c" in world.journal, env, "payment posted")
        await signal_with_start(env.client, start, queue_prefix)
        handle = env.client.get_workflow_handle(start.workflow_id)
        first_run = (await handle.describe()).run_id
        await env.sleep(timedelta(minutes=5))
        carried = await ledger_status(env, start.workflow_id)
        refund_becomes(world, "ch_inpay_c", "succeeded")
        await until(lambda: "re_c/payout" in world.journal, env, "refund paid out")
        description = await handle.describe()
    assert description.run_id != first_run  # a fresh history that still knew of the refund
    assert [r.split(" ")[0] for r in carried.pending_refunds] == ["re_c"]
    assert world.erp_order == ["in_c", "inpay_c", "re_c", "re_c/payout"]


async def test_a_refund_pending_longer_than_stripe_holds_one_goes_to_finance(
    own_time: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = own_time, FakeWorld()
    paid_and_refunded(world, "l", "25.00", "10.00")
    async with running(env.client, queue_prefix, world):
        ledger = await refund_seen_pending(env, world, queue_prefix, "l")
        await env.sleep(timedelta(days=44))
        assert (await ledger_status(env, ledger)).status == "waiting"
        await env.sleep(timedelta(days=3))
        exception = await exception_handle(env, ledger)
        state: FinanceExceptionState = await exception.query(FinanceExceptionWorkflow.state)
        assert (state.context.step, state.context.error_type) == (
            "await_refund_outcome",
            "RefundStillPending",
        )
        assert "re_l" in state.context.error_message and "pending" in state.context.error_message
        assert state.context.amount == usd("10.00")
        await exception.execute_update(FinanceExceptionWorkflow.decide, decision("reject"))
        await until(lambda: "re_l/payout" in world.journal, env, "rejection journaled")
        # Billing settles it after all: finance's decision stands, nothing is paid out.
        refund_becomes(world, "ch_inpay_l", "succeeded")
        await env.sleep(timedelta(days=2))
    assert world.erp_order == ["in_l", "inpay_l"]
    for reference in ("re_l", "re_l/payout"):
        entry = world.journal[reference]
        assert entry.erp_document_id == REJECTED_POSTING_PREFIX + exception.id
        assert entry.erp_number is None


async def reject_overpaid_payment(
    env: WorkflowEnvironment, world: FakeWorld, queue_prefix: str, tag: str
) -> tuple[str, str]:
    """An invoice whose payment the ERP refuses (someone applied money by hand) and finance
    rejects: (ledger workflow id, exception id)."""
    world.payments[f"in_{tag}"] = [payment(f"inpay_{tag}", f"in_{tag}", "50.00")]
    world.documents[f"in_{tag}"] = paid_invoice(f"in_{tag}", "50.00", *world.payments[f"in_{tag}"])
    world.applied[f"in_{tag}"] = Decimal("20.00")
    ledger = await deliver(env.client, queue_prefix, paid_event("evt_paid", f"in_{tag}", 100))
    exception = await exception_handle(env, ledger)
    await exception.execute_update(FinanceExceptionWorkflow.decide, decision("reject"))
    await until(lambda: f"inpay_{tag}" in world.journal, env, "rejection journaled")
    return ledger, exception.id


async def test_a_payment_finance_rejected_is_journaled_as_rejected_and_healing_posts_nothing(
    own_time: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = own_time, FakeWorld()
    async with running(env.client, queue_prefix, world):
        _, exception_id = await reject_overpaid_payment(env, world, queue_prefix, "j")
        calls = world.payment_calls
        # Reconciliation finds no ERP payment behind the invoice and replays it.
        await deliver(env.client, queue_prefix, paid_event("recon:run-1:in_j", "in_j", 100))
        await env.sleep(timedelta(minutes=5))
    entry = world.journal["inpay_j"]
    assert entry.erp_document_id == REJECTED_POSTING_PREFIX + exception_id
    assert (entry.erp_number, entry.document_type, entry.amount) == (
        None,
        "payment",
        Decimal("50.00"),
    )
    assert world.payment_calls == calls  # the heal asked the ERP nothing
    assert "inpay_j" not in world.erp_payments


async def test_an_invoice_finance_rejected_is_journaled_and_a_heal_does_not_post_it(
    own_time: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = own_time, FakeWorld()
    world.documents["in_x"] = invoice("in_x", "5.00", currency="EUR")  # unsupported currency
    async with running(env.client, queue_prefix, world):
        ledger = await deliver(env.client, queue_prefix, event("evt_x", "in_x", 100))
        exception = await exception_handle(env, ledger)
        await exception.execute_update(FinanceExceptionWorkflow.decide, decision("reject"))
        await until(lambda: "in_x" in world.journal, env, "rejection journaled")
        await deliver(env.client, queue_prefix, event("recon:run-1:in_x", "in_x", 100))
        await env.sleep(timedelta(minutes=5))
    assert world.journal["in_x"].erp_document_id == REJECTED_POSTING_PREFIX + exception.id
    assert world.journal["in_x"].erp_number is None
    assert world.erp == {} and world.post_calls == 0


async def test_a_refund_of_a_payment_finance_rejected_is_its_own_finance_exception(
    own_time: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = own_time, FakeWorld()
    async with running(env.client, queue_prefix, world):
        _, rejected_in = await reject_overpaid_payment(env, world, queue_prefix, "g")
        [paid] = world.payments["in_g"]
        world.refunds["ch_inpay_g"] = [refund("re_g", paid, "50.00")]
        ledger = await deliver_to_customer_ledger(
            env.client, queue_prefix, charge_event("evt_refunded", "ch_inpay_g", 300)
        )
        exception = await exception_handle(env, ledger)
        state: FinanceExceptionState = await exception.query(FinanceExceptionWorkflow.state)
    assert (state.context.step, state.context.error_type) == (
        "await_payment_posting",
        "RejectedByFinance",
    )
    assert "payment it gives back (inpay_g) was rejected by finance" in (
        state.context.error_message
    )
    assert rejected_in in state.context.error_message
    assert state.context.amount == usd("50.00")
    assert "re_g" not in world.erp and "re_g/payout" not in world.erp_payments


class SandboxBilledWorld(FakeWorld):
    """The doubles, but billing is the billing sandbox read by the product's adapter."""

    def __init__(self, billing: StripeBilling) -> None:
        super().__init__()
        self.billing = billing

    def activities(self) -> dict[str, list[Callable[..., Any]]]:
        activities = super().activities()
        activities["billing"] = [
            *BillingDocumentActivities(self.billing).activities(),
            *BillingPaymentActivities(self.billing).activities(),
            *BillingAccountActivities(self.billing).activities(),
        ]
        return activities


async def test_a_pending_refund_in_the_billing_sandbox_is_posted_after_billing_settles_it(
    own_time: WorkflowEnvironment,
    queue_prefix: str,
    billing_driver: BillingDriver,
    billing_sandbox: BillingSandbox,
    stripe_billing: StripeBilling,
) -> None:
    """Stripe's test card 4000000000007726: its refund starts pending, and only the sandbox's
    control route (Stripe itself, later) moves it on; the ledger finds out by reading again."""
    env, world = own_time, SandboxBilledWorld(stripe_billing)
    tag = queue_prefix.strip(".")
    customer = await billing_driver.create_customer("Pending Co", idempotency_key=f"{tag}/c")
    product = await billing_driver.create_product("Seats", idempotency_key=f"{tag}/p")
    world.set_mapping(finance_mapping(version=2, **{product.id: "ADDON"}))
    invoice_id = str(
        (await billing_driver.charge_once(
            customer.id, 4000, "usd", "Seats", key=f"{tag}/i", product_id=product.id
        )).id
    )  # fmt: skip
    await billing_driver.pay(
        invoice_id, idempotency_key=f"{tag}/pay", payment_method="pm_card_pendingRefund"
    )
    [paid] = await stripe_billing.invoice_payments(invoice_id)
    assert paid.charge_id is not None
    refund_made = await billing_driver.refund(
        charge_id=paid.charge_id, amount=1500, idempotency_key=f"{tag}/r"
    )
    refund_id = str(refund_made.id)
    workflow_id = f"customer-ledger/{customer.id}-{queue_prefix}"

    async def feed(event_id: str, kind: str, object_id: str) -> None:
        start = ProcessStart(
            workflow=SubscriptionLedgerWorkflow.run,
            workflow_id=workflow_id,
            input=SubscriptionLedgerInput(subscription_id=None, customer_id=customer.id,
                                          supported_currencies=["USD"]),
            signal="billing_event",
            signal_input=BillingEventRef(
                event_id=event_id, event_type=f"{kind}.event", created=100, object_kind=kind,
                object_id=object_id, customer_id=customer.id, correlation_id=event_id,
            ),
            search_attributes=visibility.start_attributes("amendment_to_erp", "waiting"),
            summary="test",
        )  # fmt: skip
        await signal_with_start(env.client, start, queue_prefix)

    async with running(env.client, queue_prefix, world):
        await feed("evt_paid", "invoice", invoice_id)
        await until(lambda: paid.payment_id in world.journal, env, "payment posted")
        await feed("evt_refunded", "charge", paid.charge_id)
        await env.sleep(timedelta(hours=1))
        waiting = await ledger_status(env, workflow_id)
        assert f"{refund_id}/payout" not in world.journal
        billing_sandbox.settle_refund(refund_id, "succeeded")
        await until(lambda: f"{refund_id}/payout" in world.journal, env, "refund paid out")
        await env.sleep(timedelta(days=2))
        done = await ledger_status(env, workflow_id)
    assert [r.split(" ")[0] for r in waiting.pending_refunds] == [refund_id]
    assert done.pending_refunds == []
    assert world.erp_order == [invoice_id, paid.payment_id, refund_id, f"{refund_id}/payout"]
    assert world.erp_payment_postings[f"{refund_id}/payout"].amount == usd("15.00")
