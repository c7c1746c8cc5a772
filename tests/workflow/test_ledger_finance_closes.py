"""SubscriptionLedgerWorkflow on the time-skipping server (the doubles of
test_subscription_ledger): what finance decides about a document closes the whole of it.
A rejected invoice's payments are journaled rejected with it (also when it is looked at
again later), a credit note finance posted by hand still pays out what it gave back out of
band, and refunds pending too long count each from its own start.

Each test has a time-skipping server of its own (some sleep for weeks)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from canonical.ledger import (
    MANUAL_POSTING_PREFIX,
    REJECTED_POSTING_PREFIX,
    required_postings,
)
from tests.workflow import test_ledger_refund_states
from tests.workflow.test_credit_note_money import CreditingWorld, credit_note
from tests.workflow.test_ledger_refund_states import (
    ledger_status,
    paid_and_refunded,
    pending_refund,
    refund_becomes,
    refund_seen_pending,
)
from tests.workflow.test_subscription_ledger import (
    FakeWorld,
    decision,
    deliver,
    deliver_to_customer_ledger,
    event,
    exception_handle,
    paid_event,
    paid_invoice,
    payment,
    running,
    until,
    usd,
)
from workflows.finance_exception import FinanceExceptionState, FinanceExceptionWorkflow

own_time = test_ledger_refund_states.own_time  # the fixture: a time-skipping server of its own


async def reject_paid_invoice(
    env: WorkflowEnvironment, world: FakeWorld, queue_prefix: str, tag: str
) -> tuple[str, str]:
    """A paid invoice the ERP refuses to post, and finance rejects: (ledger, exception id)."""
    paid = payment(f"inpay_{tag}", f"in_{tag}", "50.00")
    world.payments[f"in_{tag}"] = [paid]
    world.documents[f"in_{tag}"] = paid_invoice(f"in_{tag}", "50.00", paid)
    world.post_failures = [("ValidationError", True)]
    ledger = await deliver(env.client, queue_prefix, paid_event("evt_paid", f"in_{tag}", 100))
    exception = await exception_handle(env, ledger)
    await exception.execute_update(FinanceExceptionWorkflow.decide, decision("reject"))
    await until(lambda: f"in_{tag}" in world.journal, env, "rejection journaled")
    await env.sleep(timedelta(minutes=1))
    return ledger, exception.id


async def test_rejecting_a_paid_invoice_journals_its_payments_rejected_and_a_heal_posts_nothing(
    own_time: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = own_time, FakeWorld()
    async with running(env.client, queue_prefix, world):
        ledger, exception_id = await reject_paid_invoice(env, world, queue_prefix, "c")
        journaled_at_decision = dict(world.journal)
        # Reconciliation (before this fix) found the payment missing and replayed the invoice.
        await deliver(env.client, queue_prefix, paid_event("recon:run-1:in_c:paid", "in_c", 100))
        await env.sleep(timedelta(minutes=5))
        status = await ledger_status(env, ledger)
    assert set(journaled_at_decision) == {"in_c", "inpay_c"}
    for reference, document_type in (("in_c", "invoice"), ("inpay_c", "payment")):
        entry = world.journal[reference]
        assert entry.erp_document_id == REJECTED_POSTING_PREFIX + exception_id
        assert (entry.erp_number, entry.document_type) == (None, document_type)
    assert world.journal["inpay_c"].amount == usd("50.00").amount
    assert (status.status, status.blocked_by) == ("waiting", None)  # no second exception
    assert world.payment_calls == 0 and world.erp == {} and world.erp_payments == {}


async def test_a_payment_made_after_finance_rejected_its_invoice_is_journaled_rejected_too(
    own_time: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = own_time, FakeWorld()
    world.documents["in_l"] = paid_invoice("in_l", "30.00")  # open, nothing paid yet
    world.post_failures = [("ValidationError", True)]
    async with running(env.client, queue_prefix, world):
        ledger = await deliver(env.client, queue_prefix, event("evt_fin", "in_l", 100))
        exception = await exception_handle(env, ledger)
        await exception.execute_update(FinanceExceptionWorkflow.decide, decision("reject"))
        await until(lambda: "in_l" in world.journal, env, "rejection journaled")
        # The customer pays the invoice finance rejected.
        paid = payment("inpay_l", "in_l", "30.00")
        world.payments["in_l"] = [paid]
        world.documents["in_l"] = paid_invoice("in_l", "30.00", paid)
        await deliver(env.client, queue_prefix, paid_event("evt_paid", "in_l", 200))
        await until(lambda: "inpay_l" in world.journal, env, "payment journaled rejected")
        status = await ledger_status(env, ledger)
    assert world.journal["inpay_l"].erp_document_id == REJECTED_POSTING_PREFIX + exception.id
    assert world.journal["inpay_l"].erp_number is None
    assert status.blocked_by is None
    assert world.payment_calls == 0 and world.erp_payments == {}


async def reject_undated_payment(
    env: WorkflowEnvironment, world: FakeWorld, queue_prefix: str, tag: str
) -> tuple[str, str]:
    """An invoice posted whose payment billing lists paid without a date: `check_payments`
    refuses it, finance rejects that, then the invoice is healed: (ledger, exception id)."""
    undated = payment(f"inpay_{tag}", f"in_{tag}", "40.00").model_copy(update={"paid_at": None})
    world.payments[f"in_{tag}"] = [undated]
    world.documents[f"in_{tag}"] = paid_invoice(f"in_{tag}", "40.00", undated)
    ledger = await deliver(
        env.client, queue_prefix, paid_event(f"evt_paid_{tag}", f"in_{tag}", 200)
    )
    exception = await exception_handle(env, ledger)
    state: FinanceExceptionState = await exception.query(FinanceExceptionWorkflow.state)
    assert (state.context.step, state.context.error_type) == ("check_payments", "PolicyViolation")
    await exception.execute_update(FinanceExceptionWorkflow.decide, decision("reject"))
    await until(lambda: f"inpay_{tag}" in world.journal, env, "payment journaled rejected")
    healed = paid_event(f"recon:run-1:in_{tag}:paid", f"in_{tag}", 100)
    await deliver(env.client, queue_prefix, healed)
    await env.sleep(timedelta(minutes=5))
    return ledger, exception.id


async def test_a_rejected_check_of_an_invoices_payments_journals_them_and_a_heal_asks_nothing(
    own_time: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = own_time, FakeWorld()
    async with running(env.client, queue_prefix, world):
        ledger, exception_id = await reject_undated_payment(env, world, queue_prefix, "d")
        status = await ledger_status(env, ledger)
    assert (status.status, status.blocked_by) == ("waiting", None)  # no second exception
    assert world.journal["in_d"].erp_document_id != REJECTED_POSTING_PREFIX + exception_id
    assert world.journal["inpay_d"].erp_document_id == REJECTED_POSTING_PREFIX + exception_id
    assert world.erp_order == ["in_d"] and world.payment_calls == 0


async def credit_note_posted_by_hand(
    env: WorkflowEnvironment, world: CreditingWorld, queue_prefix: str
) -> str:
    """A credit note giving 25.00 back out of band meets a closed ERP period; finance books it
    by hand (under billing's reference) and says so: the customer's ledger id."""
    world.paid_by_card("in_o", "100.00")
    cn = credit_note("cn_o", "40.00", "in_o", out_of_band_amount=usd("25.00"))
    world.documents["cn_o"] = cn
    await world.posted_with_its_payment(env, queue_prefix, "in_o")
    world.period_open = False
    ledger = await deliver_to_customer_ledger(
        env.client, queue_prefix, event("evt_cn", "cn_o", 400, kind="credit_note")
    )
    exception = await exception_handle(env, ledger)
    world.period_open = True
    world.post(required_postings(cn)[0])
    await exception.execute_update(
        FinanceExceptionWorkflow.decide,
        decision("resolve_manually", manual_erp_number="CN-HAND-1"),
    )
    await until(lambda: "cn_o/out_of_band" in world.journal, env, "paid out out of band")
    return ledger


async def test_a_credit_note_finance_posted_by_hand_still_pays_out_what_it_gave_back_out_of_band(
    own_time: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = own_time, CreditingWorld()
    async with running(env.client, queue_prefix, world):
        await credit_note_posted_by_hand(env, world, queue_prefix)
    assert world.journal["cn_o"].erp_document_id == MANUAL_POSTING_PREFIX + "CN-HAND-1"
    payout = world.erp_payment_postings["cn_o/out_of_band"]
    assert (payout.applies_to, payout.amount, payout.method) == (
        "cn_o",
        usd("25.00"),
        "out_of_band",
    )
    assert (
        world.journal["cn_o/out_of_band"].erp_number
        == world.erp_payments["cn_o/out_of_band"].erp_number
    )


async def test_a_refund_pending_since_later_is_not_held_to_the_first_refunds_start(
    own_time: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = own_time, FakeWorld()
    paid = paid_and_refunded(world, "g", "100.00", "10.00")
    async with running(env.client, queue_prefix, world):
        ledger = await refund_seen_pending(env, world, queue_prefix, "g")
        await env.sleep(timedelta(days=40))
        # A second refund of the same charge starts pending while the first is watched;
        # the first then succeeds.
        world.refunds["ch_inpay_g"].append(pending_refund("re_g2", paid, "20.00"))
        await env.sleep(timedelta(days=1))
        world.refunds["ch_inpay_g"][0] = world.refunds["ch_inpay_g"][0].model_copy(
            update={"status": "succeeded"}
        )
        await until(lambda: "re_g/payout" in world.journal, env, "first refund paid out",
                    step=timedelta(hours=1))  # fmt: skip
        await env.sleep(timedelta(days=7))  # 48 days after the first, 8 after the second
        status = await ledger_status(env, ledger)
        assert (status.status, status.blocked_by) == ("waiting", None)
        assert [r.split(" ")[0] for r in status.pending_refunds] == ["re_g2"]
        await env.sleep(timedelta(days=40))  # the second's own limit passes
        exception = await exception_handle(env, ledger)
        state: FinanceExceptionState = await exception.query(FinanceExceptionWorkflow.state)
    assert "re_g2" in state.context.error_message
    assert state.context.amount == usd("20.00")
    assert "re_g2" not in world.journal and "re_g2/payout" not in world.journal


async def two_refunds_past_the_limit(
    env: WorkflowEnvironment, world: FakeWorld, queue_prefix: str, tag: str
) -> tuple[str, WorkflowHandle[Any, Any]]:
    """Two refunds of one charge pending past Stripe's limit: (ledger id, its exception)."""
    paid = paid_and_refunded(world, tag, "100.00", "10.00")
    world.refunds[f"ch_inpay_{tag}"].append(pending_refund(f"re_{tag}2", paid, "15.00"))
    ledger = await refund_seen_pending(env, world, queue_prefix, tag)
    await env.sleep(timedelta(days=47))
    return ledger, await exception_handle(env, ledger)


async def test_every_refund_past_the_pending_limit_is_reported_and_decided_together(
    own_time: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = own_time, FakeWorld()
    async with running(env.client, queue_prefix, world):
        ledger, exception = await two_refunds_past_the_limit(env, world, queue_prefix, "e")
        state: FinanceExceptionState = await exception.query(FinanceExceptionWorkflow.state)
        assert "re_e " in state.context.error_message
        assert "re_e2 " in state.context.error_message
        assert state.context.amount == usd("25.00")
        await exception.execute_update(FinanceExceptionWorkflow.decide, decision("reject"))
        await until(lambda: "re_e2/payout" in world.journal, env, "both rejections journaled")
        await env.sleep(timedelta(days=50))
        status = await ledger_status(env, ledger)
    for reference in ("re_e", "re_e/payout", "re_e2", "re_e2/payout"):
        assert world.journal[reference].erp_document_id == REJECTED_POSTING_PREFIX + exception.id
    assert status.pending_refunds == [] and status.blocked_by is None  # no second exception
    assert world.erp_order == ["in_e", "inpay_e"]


async def test_after_retry_a_refund_past_the_limit_is_read_again_and_posted_once_it_succeeds(
    own_time: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = own_time, FakeWorld()
    paid_and_refunded(world, "r", "60.00", "12.00")
    async with running(env.client, queue_prefix, world):
        ledger = await refund_seen_pending(env, world, queue_prefix, "r")
        await env.sleep(timedelta(days=47))
        exception = await exception_handle(env, ledger)
        await exception.execute_update(FinanceExceptionWorkflow.decide, decision("retry"))
        await env.sleep(timedelta(hours=1))
        assert (await ledger_status(env, ledger)).blocked_by is None  # waiting again, anew
        refund_becomes(world, "ch_inpay_r", "succeeded")
        # Read again within the day (the charge's reads go on counting, none dropped as seen).
        await until(lambda: "re_r/payout" in world.journal, env, "refund paid out",
                    step=timedelta(hours=2))  # fmt: skip
    assert world.erp_order == ["in_r", "inpay_r", "re_r", "re_r/payout"]
