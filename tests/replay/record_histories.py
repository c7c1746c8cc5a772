"""Record the committed histories that the replay test runs against.

    .venv/bin/python -m tests.replay.record_histories [NAME ...]

With names, only those recorders run (see RECORDERS), so existing histories stay as they are.
Run it only when a new history shape is worth keeping (a new workflow, a new path), never to
"fix" a failing replay: a replay failure means the change would break running workflows.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.reconciliation import RunErp
from adapters.task_queues import task_queue
from canonical import Customer
from tests.fixtures.temporal import TEST_SERVER, register_search_attributes
from tests.workflow.test_account_sync import FakeSystems, running_workers, standing, sync
from tests.workflow.test_case_to_credit import FakeDesk, credit, decide_exception
from tests.workflow.test_case_to_credit import running as credit_workers
from tests.workflow.test_case_to_credit import start as start_credit
from tests.workflow.test_credit_note_money import (
    CreditingWorld,
    credit_note,
    linked,
    partly_linked,
    refund_paid_out_on_its_own,
)
from tests.workflow.test_ledger_finance_closes import (
    credit_note_posted_by_hand,
    reject_paid_invoice,
    reject_undated_payment,
    two_refunds_past_the_limit,
)
from tests.workflow.test_ledger_refund_states import (
    pending_refund,
    refund_becomes,
    reject_overpaid_payment,
)
from tests.workflow.test_reconciliation import DAY, HOME, FakeStore
from tests.workflow.test_reconciliation import running as recon_workers
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
)
from workflows.account_sync import AccountSyncWorkflow
from workflows.case_to_credit import CaseToCreditWorkflow, CreditApproval
from workflows.finance_exception import FinanceExceptionWorkflow
from workflows.reconciliation import ReconciliationInput, ReconciliationWorkflow

HISTORIES = Path(__file__).parent / "histories"


def without_stack_traces(node: Any) -> Any:
    """Failures carry the recording machine's file paths; replay needs none of them."""
    if isinstance(node, dict):
        return {k: "" if k == "stackTrace" else without_stack_traces(v) for k, v in node.items()}
    if isinstance(node, list):
        return [without_stack_traces(item) for item in node]
    return node


def save(name: str, history: WorkflowHistory) -> None:
    HISTORIES.mkdir(exist_ok=True)
    path = HISTORIES / f"{name}.json"
    events = without_stack_traces(json.loads(history.to_json()))
    document = {"workflow_id": history.workflow_id, "history": events}
    path.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {path}")


async def record_subscription_ledger(
    env: WorkflowEnvironment, suffix: str = "", ledger_name: str | None = None
) -> None:
    """Three invoices out of order, one rejected by the ERP, retried after finance decides."""
    world = FakeWorld()
    for n, amount in ((1, "10.00"), (2, "20.00"), (3, "30.00")):
        world.documents[f"in_{n}"] = invoice(f"in_{n}", amount, minute=n)
    world.post_failures = [("ValidationError", True)]
    async with running(env.client, "replay.", world):
        for n in (2, 1, 3):
            workflow_id = await deliver(env.client, "replay.", event(f"evt_{n}", f"in_{n}", n))
        exception = await exception_handle(env, workflow_id)
        await exception.execute_update(FinanceExceptionWorkflow.decide, decision("retry"))
        await until(lambda: len(world.journal) == 3, env, "three postings")
        ledger = env.client.get_workflow_handle(workflow_id)
        if ledger_name or not suffix:
            name = ledger_name or "subscription_ledger_exception_retry"
            save(name, await ledger.fetch_history())
        save(f"finance_exception_retry{suffix}", await exception.fetch_history())


async def record_ledger_payments(env: WorkflowEnvironment) -> None:
    """An invoice paid in two parts (each payment posted once, the invoice settled after the
    second), and a refund of the first that waits for it, then posts its credit note and
    payout in the customer's ledger."""
    world = FakeWorld()
    first = payment("inpay_1", "in_1", "40.00", minute=5)
    second = payment("inpay_2", "in_1", "60.00", minute=50)
    world.payments["in_1"] = [first]
    world.documents["in_1"] = paid_invoice("in_1", "100.00", first)
    world.refunds["ch_inpay_1"] = [refund("re_1", first, "15.00")]
    async with running(env.client, "replay-pay.", world):
        customer_ledger = await deliver_to_customer_ledger(
            env.client, "replay-pay.", charge_event("evt_refunded", "ch_inpay_1", 300)
        )
        await env.sleep(timedelta(minutes=3))
        ledger = await deliver(env.client, "replay-pay.", paid_event("evt_part", "in_1", 100))
        await until(lambda: "re_1/payout" in world.journal, env, "refund paid out")
        world.payments["in_1"] = [first, second]
        world.documents["in_1"] = paid_invoice("in_1", "100.00", first, second)
        await deliver(env.client, "replay-pay.", paid_event("evt_paid", "in_1", 400))
        await until(lambda: "inpay_2" in world.journal, env, "second payment")
        await deliver(env.client, "replay-pay.", event("evt_fin", "in_1", 50))
        await env.sleep(timedelta(minutes=1))
        save("subscription_ledger_payments",
             await env.client.get_workflow_handle(ledger).fetch_history())  # fmt: skip
        save("customer_ledger_refund",
             await env.client.get_workflow_handle(customer_ledger).fetch_history())  # fmt: skip


async def record_ledger_event_time(env: WorkflowEnvironment) -> None:
    """One invoice posted and journaled with billing's event time (journal-billing-event-time)."""
    world = FakeWorld()
    world.documents["in_1"] = invoice("in_1", "10.00", minute=1)
    async with running(env.client, "replay-time.", world):
        workflow_id = await deliver(env.client, "replay-time.", event("evt_1", "in_1", 1))
        await until(lambda: len(world.journal) == 1, env, "one posting journaled")
        save("subscription_ledger_journal_event_time",
             await env.client.get_workflow_handle(workflow_id).fetch_history())  # fmt: skip


async def record_pending_refunds(env: WorkflowEnvironment) -> None:
    """Two refunds billing holds pending (pending-refunds-read-again): the customer's ledger
    reads their charge again on its timer; one succeeds (posted), the other fails (nothing)."""
    world = FakeWorld()
    paid = payment("inpay_pr", "in_pr", "100.00")
    world.payments["in_pr"] = [paid]
    world.documents["in_pr"] = paid_invoice("in_pr", "100.00", paid)
    world.refunds["ch_inpay_pr"] = [
        pending_refund("re_pr1", paid, "30.00"),
        pending_refund("re_pr2", paid, "20.00"),
    ]
    async with running(env.client, "replay-pend.", world):
        await deliver(env.client, "replay-pend.", paid_event("evt_paid", "in_pr", 100))
        await until(lambda: "inpay_pr" in world.journal, env, "payment posted")
        ledger = await deliver_to_customer_ledger(
            env.client, "replay-pend.", charge_event("evt_refunded", "ch_inpay_pr", 300)
        )
        await env.sleep(timedelta(minutes=40))
        refund_becomes(world, "ch_inpay_pr", "succeeded")
        world.refunds["ch_inpay_pr"][1] = world.refunds["ch_inpay_pr"][1].model_copy(
            update={"status": "failed"}
        )
        await until(lambda: "re_pr1/payout" in world.journal, env, "refund paid out",
                    step=timedelta(minutes=1))  # fmt: skip
        await env.sleep(timedelta(days=2))
        save("customer_ledger_pending_refunds",
             await env.client.get_workflow_handle(ledger).fetch_history())  # fmt: skip


async def record_rejections_journaled(env: WorkflowEnvironment) -> None:
    """A payment finance rejects is journaled as rejected (journal-rejected) and a heal posts
    nothing; a refund of it is finance's, and rejected in turn."""
    world = FakeWorld()
    async with running(env.client, "replay-rej.", world):
        ledger, _ = await reject_overpaid_payment(env, world, "replay-rej.", "rj")
        await deliver(env.client, "replay-rej.", paid_event("recon:run-1:in_rj", "in_rj", 100))
        await env.sleep(timedelta(minutes=5))
        [paid] = world.payments["in_rj"]
        world.refunds["ch_inpay_rj"] = [refund("re_rj", paid, "50.00")]
        customer_ledger = await deliver_to_customer_ledger(
            env.client, "replay-rej.", charge_event("evt_refunded", "ch_inpay_rj", 300)
        )
        exception = await exception_handle(env, customer_ledger)
        await exception.execute_update(FinanceExceptionWorkflow.decide, decision("reject"))
        await until(lambda: "re_rj/payout" in world.journal, env, "refund rejection journaled")
        save("subscription_ledger_reject_journaled",
             await env.client.get_workflow_handle(ledger).fetch_history())  # fmt: skip
        save("customer_ledger_refund_of_rejected_payment",
             await env.client.get_workflow_handle(customer_ledger).fetch_history())  # fmt: skip


async def record_rejected_closes(env: WorkflowEnvironment) -> None:
    """A paid invoice finance rejects: its payment is journaled rejected with it, and a heal
    then journals and posts nothing; then a rejected `check_payments` of another invoice,
    healed without a new exception (rejected-document-closes-its-money)."""
    world = FakeWorld()
    async with running(env.client, "replay-rjc.", world):
        ledger, _ = await reject_paid_invoice(env, world, "replay-rjc.", "rc")
        await deliver(env.client, "replay-rjc.", paid_event("recon:run-1:in_rc", "in_rc", 100))
        await env.sleep(timedelta(minutes=5))
        await reject_undated_payment(env, world, "replay-rjc.", "rd")
        save("subscription_ledger_rejected_closes",
             await env.client.get_workflow_handle(ledger).fetch_history())  # fmt: skip


async def record_manual_out_of_band(env: WorkflowEnvironment) -> None:
    """A credit note finance posts by hand (`resolve_manually`): what it gave back out of band
    is still paid out on it (manual-credit-note-pays-out-of-band)."""
    world = CreditingWorld()
    async with running(env.client, "replay-mob.", world):
        ledger = await credit_note_posted_by_hand(env, world, "replay-mob.")
        await env.sleep(timedelta(minutes=1))
        save("customer_ledger_manual_out_of_band",
             await env.client.get_workflow_handle(ledger).fetch_history())  # fmt: skip


async def record_pending_per_refund(env: WorkflowEnvironment) -> None:
    """Two refunds pending past Stripe's limit, each counted from its own start, reported in
    one exception and rejected together (pending-since-per-refund)."""
    world = FakeWorld()
    async with running(env.client, "replay-ppr.", world):
        ledger, exception = await two_refunds_past_the_limit(env, world, "replay-ppr.", "pp")
        await exception.execute_update(FinanceExceptionWorkflow.decide, decision("reject"))
        await until(lambda: "re_pp2/payout" in world.journal, env, "rejections journaled")
        await env.sleep(timedelta(days=2))
        save("customer_ledger_pending_per_refund",
             await env.client.get_workflow_handle(ledger).fetch_history())  # fmt: skip


async def record_credit_note_money(env: WorkflowEnvironment) -> None:
    """In the customer's ledger: a refund posted as its own credit note (billing read again
    just before), its payout refused for want of a journal; billing's credit note then names
    the refund and gives the rest back out of band; finance retries: the payout goes out on
    the refund's credit note, which billing's credit note reverses, and the out-of-band money
    is paid out (credit-note-linked-refunds, credit-note-out-of-band, mapping-currencies)."""
    world = CreditingWorld()
    paid = world.paid_by_card("in_m", "100.00")
    world.refunds["ch_inpay_m"] = [refund("re_m", paid, "30.00")]
    async with running(env.client, "replay-cn.", world):
        await world.posted_with_its_payment(env, "replay-cn.", "in_m")
        world.set_mapping(finance_mapping().model_copy(update={"payments": {}}))
        customer_ledger = await deliver_to_customer_ledger(
            env.client, "replay-cn.", charge_event("evt_refunded", "ch_inpay_m", 300)
        )
        exception = await exception_handle(env, customer_ledger)
        world.documents["cn_m"] = credit_note(
            "cn_m", "40.00", "in_m", refunds=linked("re_m", "30.00"),
            out_of_band_amount=paid.amount.model_copy(update={"amount": Decimal("10.00")}),
        )  # fmt: skip
        world.refunds["ch_inpay_m"] = [refund("re_m", paid, "30.00", credit_note_id="cn_m")]
        world.set_mapping(finance_mapping(version=2))
        await exception.execute_update(FinanceExceptionWorkflow.decide, decision("retry"))
        await until(lambda: "re_m/payout" in world.journal, env, "refund paid out")
        await deliver_to_customer_ledger(
            env.client, "replay-cn.", event("evt_cn", "cn_m", 400, kind="credit_note")
        )
        await until(lambda: "cn_m/out_of_band" in world.journal, env, "paid out out of band")
        await env.sleep(timedelta(minutes=1))
        save("customer_ledger_credit_note_money",
             await env.client.get_workflow_handle(customer_ledger).fetch_history())  # fmt: skip


async def record_linked_refunds_books(env: WorkflowEnvironment) -> None:
    """In the customer's ledger: billing's credit note names a refund posted as its own credit
    note: the credit note posts, then the reversal, then the credit note again to apply it;
    then a credit note names a refund for part of it: the refund is paid out on the note for
    that part and on its own credit note for the rest (linked-refunds-books-equal)."""
    world, prefix = CreditingWorld(), "replay-lr."
    async with running(env.client, prefix, world):
        await refund_paid_out_on_its_own(env, prefix, world, "y")
        customer_ledger = await deliver_to_customer_ledger(
            env.client, prefix, event("evt_cn", "cn_y", 400, kind="credit_note")
        )
        await until(lambda: "re_y/credited-by/cn_y" in world.journal, env, "reversal posted")
        paid = world.paid_by_card("in_z", "100.00")
        await deliver(env.client, prefix, paid_event("evt_paid_z", "in_z", 500))
        await until(lambda: "inpay_z" in world.journal, env, "payment posted")
        world.documents["cn_z"] = credit_note("cn_z", "20.00", "in_z",
                                              refunds=linked("re_z", "20.00"))  # fmt: skip
        world.refunds["ch_inpay_z"] = [partly_linked("z", paid)]
        await deliver_to_customer_ledger(
            env.client, prefix, event("evt_cn_z", "cn_z", 501, kind="credit_note")
        )
        await deliver_to_customer_ledger(
            env.client, prefix, charge_event("evt_refunded_z", "ch_inpay_z", 502)
        )
        await until(lambda: "re_z/payout" in world.journal, env, "rest paid out")
        await env.sleep(timedelta(minutes=1))
        assert world.receivable() == 0
        save("customer_ledger_linked_refunds_books",
             await env.client.get_workflow_handle(customer_ledger).fetch_history())  # fmt: skip


async def record_case_to_credit(
    env: WorkflowEnvironment, name: str = "case_to_credit_approved"
) -> None:
    """A credit above the threshold, approved by finance after a reminder."""
    desk = FakeDesk()
    async with credit_workers(env.client, "replay-credit.", desk):
        handle = await start_credit(env.client, "replay-credit.", credit("200.00"))
        await env.sleep(timedelta(hours=25))
        await handle.execute_update(
            CaseToCreditWorkflow.decide,
            CreditApproval(approve=True, reason="outage confirmed", approver="fiona",
                           role="finance"),
        )  # fmt: skip
        await handle.result()
        save(name, await handle.fetch_history())


async def record_credit_facts_once(env: WorkflowEnvironment) -> None:
    """A small credit auto-approved, its facts read in one activity (credit-facts-once)."""
    desk = FakeDesk()
    async with credit_workers(env.client, "replay-facts.", desk):
        handle = await start_credit(env.client, "replay-facts.", credit("40.00", request_id="r3"))
        await handle.result()
        save("case_to_credit_facts_once", await handle.fetch_history())


async def record_credit_settled_invoice(env: WorkflowEnvironment) -> None:
    """A credit on a paid invoice: finance exception, finance decides `compensate`, the
    credit goes on the next invoice."""
    desk = FakeDesk()
    desk.billing_refusal = "invoice 0001 is already paid"
    async with credit_workers(env.client, "replay-settled.", desk):
        handle = await start_credit(
            env.client, "replay-settled.", credit("8.00", request_id="r2", invoice_id="in_9")
        )

        def paid_invoice_understood() -> None:
            desk.billing_refusal = None

        await decide_exception(env, handle, "compensate", fix=paid_invoice_understood)
        await handle.result()
        save("case_to_credit_settled_invoice", await handle.fetch_history())


async def record_account_sync(env: WorkflowEnvironment) -> None:
    systems = FakeSystems()
    systems.customers["cus_REPLAY1"] = Customer(customer_id="cus_REPLAY1", name="Replay Co")
    async with running_workers(env.client, "replay.", systems):
        for request in ("evt_r1", "evt_r2"):
            await sync(env.client, "replay.", "cus_REPLAY1", request)
        handle = env.client.get_workflow_handle_for(AccountSyncWorkflow.run, "account/cus_REPLAY1")
        await handle.result()
        history = await handle.fetch_history()
    save("account_sync_two_requests", history)


async def record_account_sync_entitlements(env: WorkflowEnvironment) -> None:
    """A failed payment: billing says past due, account sync writes it to support
    (account-entitlements)."""
    systems = FakeSystems()
    systems.customers["cus_REPLAY2"] = Customer(customer_id="cus_REPLAY2", name="Replay Two")
    systems.billing_standing["cus_REPLAY2"] = standing("cus_REPLAY2", "past_due", "2026-10-31")
    async with running_workers(env.client, "replay-ent.", systems):
        await sync(env.client, "replay-ent.", "cus_REPLAY2", "evt_r3")
        handle = env.client.get_workflow_handle_for(AccountSyncWorkflow.run, "account/cus_REPLAY2")
        await handle.result()
        history = await handle.fetch_history()
    save("account_sync_entitlements", history)


async def record_credit_past_due(env: WorkflowEnvironment) -> None:
    """A small credit for a customer support shows past due: finance approves it
    (credit-standing-from-entitlements)."""
    desk = FakeDesk()
    desk.shown_status = "past_due"
    async with credit_workers(env.client, "replay-pastdue.", desk):
        handle = await start_credit(env.client, "replay-pastdue.", credit("40.00", request_id="r4"))
        await env.sleep(timedelta(hours=1))
        await handle.execute_update(
            CaseToCreditWorkflow.decide,
            CreditApproval(approve=True, reason="goodwill", approver="fiona", role="finance"),
        )
        await handle.result()
        save("case_to_credit_past_due", await handle.fetch_history())


async def record_reconciliation(
    env: WorkflowEnvironment, name: str, erp: RunErp = HOME, named: str | None = None
) -> None:
    """A day's run over every source: a missing invoice and payment healed, the other
    differences handed to finance (of the ERP `erp`, asked for by `named`)."""
    fake = FakeStore(erp=erp)
    async with recon_workers(env.client, "replay-recon.", fake):
        handle = await env.client.start_workflow(
            ReconciliationWorkflow.run,
            ReconciliationInput(erp=named, period_start=DAY, period_end=DAY.replace(day=27)),
            id=f"recon/{named}/{name}" if named else f"recon/{name}",
            task_queue=task_queue("replay-recon."),
        )
        result = await handle.result()
        for exception_id in result.exceptions_opened:
            await env.client.get_workflow_handle(exception_id).terminate("recorded")
        save(name, await handle.fetch_history())


async def record_reconciliation_receivables_last(env: WorkflowEnvironment) -> None:
    """Receivables read after every other source, billing's then the ERP's
    (recon-receivables-billing-then-erp)."""
    await record_reconciliation(env, "reconciliation_receivables_last")


async def record_reconciliation_money(env: WorkflowEnvironment) -> None:
    """Receivables read at the end of each system's chain (recon-payments-tax-receivables;
    recorded before recon-receivables-billing-then-erp: recorded now, it takes that shape)."""
    await record_reconciliation(env, "reconciliation_money")


async def record_reconciliation_per_erp(env: WorkflowEnvironment) -> None:
    """A run of the ERP on the `erp` queue and one of another ERP (recon-per-erp): the ERP
    resolved first, its pages read on its own queue, the tickets by the first only."""
    await record_reconciliation(env, "reconciliation_per_erp_home")
    other = RunErp(erp="eu", queue="erp-eu", compares_tickets=False)
    await record_reconciliation(env, "reconciliation_per_erp_other", other, "eu")


async def record_releases(env: WorkflowEnvironment) -> None:
    """The ledger (its route a local activity), its finance exception and a credit, each
    taking its workflow's release at its start (workflows/patches.py)."""
    await record_subscription_ledger(env, "_release", "subscription_ledger_release")
    await record_case_to_credit(env, "case_to_credit_release")


async def record_ledger_coalesced(env: WorkflowEnvironment) -> None:
    """Three events about one paid invoice waiting together: read once, the invoice and its
    payment posted once (coalesce-events-of-one-document, in the newest ledger release)."""
    world = FakeWorld()
    paid = payment("inpay_1", "in_1", "10.00")
    world.payments["in_1"] = [paid]
    world.documents["in_1"] = paid_invoice("in_1", "10.00", paid)
    for ref in (paid_event("evt_2", "in_1", 101), event("evt_1", "in_1", 100),
                paid_event("evt_3", "in_1", 102)):  # fmt: skip
        workflow_id = await deliver(env.client, "replay-coalesce.", ref)
    async with running(env.client, "replay-coalesce.", world):
        await until(lambda: "inpay_1" in world.journal, env, "the payment journaled")
        await env.sleep(timedelta(seconds=5))
        save("subscription_ledger_coalesced",
             await env.client.get_workflow_handle(workflow_id).fetch_history())  # fmt: skip


RECORDERS = {
    "reconciliation_per_erp": record_reconciliation_per_erp,
    "reconciliation_money": record_reconciliation_money,
    "reconciliation_receivables_last": record_reconciliation_receivables_last,
    "account_sync_entitlements": record_account_sync_entitlements,
    "case_to_credit_past_due": record_credit_past_due,
    "account_sync": record_account_sync,
    "subscription_ledger": record_subscription_ledger,
    "ledger_payments": record_ledger_payments,
    "ledger_event_time": record_ledger_event_time,
    "pending_refunds": record_pending_refunds,
    "rejections_journaled": record_rejections_journaled,
    "credit_note_money": record_credit_note_money,
    "linked_refunds_books": record_linked_refunds_books,
    "rejected_closes": record_rejected_closes,
    "manual_out_of_band": record_manual_out_of_band,
    "pending_per_refund": record_pending_per_refund,
    "case_to_credit": record_case_to_credit,
    "case_to_credit_settled_invoice": record_credit_settled_invoice,
    "case_to_credit_facts_once": record_credit_facts_once,
    # The credit and the exception upserting their inbox row (inbox-row-in-visibility).
    "case_to_credit_inbox_row": lambda env: record_case_to_credit(
        env, "case_to_credit_approved_inbox_row"
    ),
    "finance_exception_inbox_row": lambda env: record_subscription_ledger(env, "_inbox_row"),
    "releases": record_releases,
    "ledger_coalesced": record_ledger_coalesced,
}


async def record(names: list[str]) -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(TEST_SERVER), data_converter=pydantic_data_converter
    )
    await register_search_attributes(env.client)
    try:
        for name in names or list(RECORDERS):
            await RECORDERS[name](env)
    finally:
        await env.shutdown()
        await asyncio.sleep(0.5)


if __name__ == "__main__":
    asyncio.run(record(sys.argv[1:]))
