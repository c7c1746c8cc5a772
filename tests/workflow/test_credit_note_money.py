"""SubscriptionLedgerWorkflow on the time-skipping server: credit notes that give money back
(a refund linked to a credit note after its own credit note was posted, money given back out
of band) and the currencies finance's mapping books. Billing, journal and audit are the
same-named activity doubles of the ledger's own tests; the ERP activities are the real ones
over the in-memory ERP, which here also applies a credit note to the document it names
when the whole credit fits what is open there, on the posting that finds both in the ERP
and once (the real adapter's rule)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest_asyncio
from temporalio import activity
from temporalio.testing import WorkflowEnvironment

from activities.payments import ChargeRefundsInput
from adapters.errors import RejectedError
from canonical import (
    BillingDocument,
    DocumentLine,
    LedgerPosting,
    LinkedRefund,
    Money,
    Payment,
    PostedDocument,
    Refund,
)
from tests.fixtures.temporal import time_skipping_server
from tests.workflow.test_ledger_refund_states import (
    paid_and_refunded,
    refund_becomes,
    refund_seen_pending,
)
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
from workflows.finance_exception import FinanceExceptionWorkflow


class CreditingWorld(FakeWorld):
    """The ledger's fake world, with the ERP's credit application and receivable, and
    billing linking a refund to a credit note between two reads of the refund."""

    def __init__(self) -> None:
        super().__init__()
        # charge id -> its refunds as billing lists them from the second read on
        self.refunds_after_first_read: dict[str, list[Refund]] = {}
        self.refund_reads = 0
        self.credits_applied: set[str] = set()
        # references the ERP refuses to post (a business rule of its own)
        self.refused: set[str] = set()

    def activities(self) -> dict[str, list[Callable[..., Any]]]:
        @activity.defn(name="fetch_charge_refunds")
        async def fetch_charge_refunds(request: ChargeRefundsInput) -> list[Refund]:
            self.refund_reads += 1
            now = self.refunds.get(request.charge_id, [])
            if request.charge_id in self.refunds_after_first_read:
                self.refunds[request.charge_id] = self.refunds_after_first_read.pop(
                    request.charge_id
                )
            return now

        queues = super().activities()
        queues["billing"] = [
            fetch_charge_refunds if getattr(a, "__name__", "") == "fetch_charge_refunds" else a
            for a in queues["billing"]
        ]
        return queues

    def post(self, posting: LedgerPosting) -> PostedDocument:
        if posting.reference in self.refused:
            raise RejectedError(f"the ERP refuses {posting.reference}", system="erp",
                                operation="post", remote_code="refused")  # fmt: skip
        posted = super().post(posting)
        target = posting.applies_to
        credit = posting.kind == "credit_note" and target in self.erp
        fits = credit and self.open(str(target)) >= posting.total.amount
        if fits and posting.reference not in self.credits_applied:
            self.credits_applied.add(posting.reference)
            for reference in (str(target), posting.reference):
                self.applied[reference] = (
                    self.applied.get(reference, Decimal(0)) + posting.total.amount
                )
        return posted

    def paid_by_card(self, invoice_id: str, amount: str) -> Payment:
        """A one-payment invoice of the subscription, paid in full: its payment."""
        paid = payment(invoice_id.replace("in_", "inpay_", 1), invoice_id, amount)
        self.payments[invoice_id] = [paid]
        self.documents[invoice_id] = paid_invoice(invoice_id, amount, paid)
        return paid

    async def posted_with_its_payment(
        self, env: WorkflowEnvironment, prefix: str, invoice_id: str
    ) -> None:
        await deliver(env.client, prefix, paid_event("evt_paid", invoice_id, 100))
        paid = invoice_id.replace("in_", "inpay_", 1)
        await until(lambda: paid in self.journal, env, "payment posted")

    def open(self, reference: str) -> Decimal:
        return self.erp[reference].total.amount - self.applied.get(reference, Decimal(0))

    def receivable(self) -> Decimal:
        """What the customer owes in the ERP: invoices - credit notes - payments + payouts."""
        owed = sum(
            (d.total.amount if d.kind == "invoice" else -d.total.amount for d in self.erp.values()),
            Decimal(0),
        )
        moved = sum(
            (p.amount.amount if p.kind == "refund" else -p.amount.amount
             for p in self.erp_payments.values()),
            Decimal(0),
        )  # fmt: skip
        return owed + moved


def credit_note(doc_id: str, amount: str, of: str, **changes: Any) -> BillingDocument:
    return invoice(doc_id, amount, kind="credit_note", status="issued", invoice_id=of, **changes)


def linked(refund_id: str, amount: str) -> list[LinkedRefund]:
    return [LinkedRefund(refund_id=refund_id, amount=usd(amount))]


async def test_refund_then_a_credit_note_naming_it_credits_once_and_books_end_equal(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, CreditingWorld()
    paid = world.paid_by_card("in_l", "100.00")
    world.refunds["ch_inpay_l"] = [refund("re_l", paid, "30.00")]
    reversal = "re_l/credited-by/cn_l"
    async with running(env.client, queue_prefix, world):
        await world.posted_with_its_payment(env, queue_prefix, "in_l")
        await deliver_to_customer_ledger(
            env.client, queue_prefix, charge_event("evt_refunded", "ch_inpay_l", 300)
        )
        await until(lambda: "re_l/payout" in world.journal, env, "refund paid out")
        # Later, for the tax paperwork, billing's credit note names the refund.
        world.documents["cn_l"] = credit_note("cn_l", "30.00", "in_l",
                                              refunds=linked("re_l", "30.00"))  # fmt: skip
        world.refunds["ch_inpay_l"] = [refund("re_l", paid, "30.00", credit_note_id="cn_l")]
        await deliver_to_customer_ledger(
            env.client, queue_prefix, event("evt_cn", "cn_l", 400, kind="credit_note")
        )
        await until(lambda: "cn_l" in world.journal, env, "credit note posted")
        # Redelivered, and another event of the charge: nothing more.
        await deliver_to_customer_ledger(
            env.client, queue_prefix, event("evt_cn_again", "cn_l", 401, kind="credit_note")
        )
        await deliver_to_customer_ledger(
            env.client, queue_prefix, charge_event("evt_refunded_again", "ch_inpay_l", 402)
        )
        await env.sleep(timedelta(minutes=1))
    # Billing's credit note first, then the reversal, then the credit note applied to it.
    assert world.erp_order == ["in_l", "inpay_l", "re_l", "re_l/payout", "cn_l", reversal]
    back = world.erp_postings[reversal]
    [line] = back.lines
    assert (back.kind, back.total, back.taxes) == ("invoice", usd("30.00"), [])
    assert (line.erp_product, line.revenue_account, line.unit_price) == (
        "REFUND", "4900", Decimal("30.00"))  # fmt: skip
    assert world.erp_postings["cn_l"].applies_to == reversal
    assert world.journal[reversal].document_type == "invoice"
    # Neither billing's credit note nor the reversal stays open; billing's receivable is 0.
    assert {ref: world.open(ref) for ref in world.erp} == dict.fromkeys(world.erp, Decimal(0))
    assert world.receivable() == 0
    # Revenue: the refunds line nets to nothing; billing's credit note is the credit. The
    # credit note is posted again on each delivery to apply it to the reversal (once).
    assert (world.post_calls, world.payment_calls) == (6, 2)


async def test_refund_whose_payout_waited_for_finance_while_billing_named_it_pays_out_on_its_own(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    """The refund's own credit note is in the ERP, its payout refused (no card journal);
    billing names the refund in a credit note before finance retries: the retry reverses
    the refund's credit note under billing's and pays out on the refund's own."""
    env, world = time_skipping_env, CreditingWorld()
    paid = world.paid_by_card("in_r", "90.00")
    world.refunds["ch_inpay_r"] = [refund("re_r", paid, "40.00")]
    mapping = finance_mapping()
    async with running(env.client, queue_prefix, world):
        await world.posted_with_its_payment(env, queue_prefix, "in_r")
        world.set_mapping(mapping.model_copy(update={"payments": {}}))
        ledger = await deliver_to_customer_ledger(
            env.client, queue_prefix, charge_event("evt_refunded", "ch_inpay_r", 300)
        )
        exception = await exception_handle(env, ledger)
        assert "re_r" in world.erp and "re_r/payout" not in world.erp_payments
        world.documents["cn_r"] = credit_note("cn_r", "40.00", "in_r",
                                              refunds=linked("re_r", "40.00"))  # fmt: skip
        world.refunds["ch_inpay_r"] = [refund("re_r", paid, "40.00", credit_note_id="cn_r")]
        world.set_mapping(finance_mapping(version=2))
        await exception.execute_update(FinanceExceptionWorkflow.decide, decision("retry"))
        await until(lambda: "re_r/payout" in world.journal, env, "refund paid out")
        await deliver_to_customer_ledger(
            env.client, queue_prefix, event("evt_cn", "cn_r", 301, kind="credit_note")
        )
        await env.sleep(timedelta(minutes=1))
    reversal = "re_r/credited-by/cn_r"
    assert world.erp_order == ["in_r", "inpay_r", "re_r", "cn_r", reversal, "re_r/payout"]
    assert world.erp_payment_postings["re_r/payout"].applies_to == "re_r"
    assert {ref: world.open(ref) for ref in world.erp} == dict.fromkeys(world.erp, Decimal(0))
    assert world.receivable() == 0


async def test_refund_linked_to_a_credit_note_just_before_its_own_credit_note_takes_that_path(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, CreditingWorld()
    paid = world.paid_by_card("in_w", "50.00")
    world.refunds["ch_inpay_w"] = [refund("re_w", paid, "20.00")]
    # Billing names the refund in a credit note after the ledger's first read of it.
    world.documents["cn_w"] = credit_note("cn_w", "20.00", "in_w", refunds=linked("re_w", "20.00"))
    world.refunds_after_first_read["ch_inpay_w"] = [
        refund("re_w", paid, "20.00", credit_note_id="cn_w")
    ]
    async with running(env.client, queue_prefix, world):
        await world.posted_with_its_payment(env, queue_prefix, "in_w")
        await deliver_to_customer_ledger(
            env.client, queue_prefix, charge_event("evt_refunded", "ch_inpay_w", 300)
        )
        await until(lambda: "re_w/payout" in world.journal, env, "refund paid out")
        await deliver_to_customer_ledger(
            env.client, queue_prefix, event("evt_cn", "cn_w", 301, kind="credit_note")
        )
        await env.sleep(timedelta(minutes=1))
    assert world.refund_reads == 2
    assert world.erp_order == ["in_w", "inpay_w", "cn_w", "re_w/payout"]
    assert world.erp_payment_postings["re_w/payout"].applies_to == "cn_w"
    assert world.receivable() == 0


async def test_credit_note_naming_its_refund_before_the_refund_posts_no_reversal(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, CreditingWorld()
    paid = world.paid_by_card("in_b", "60.00")
    world.documents["cn_b"] = credit_note("cn_b", "25.00", "in_b", refunds=linked("re_b", "25.00"))
    world.refunds["ch_inpay_b"] = [refund("re_b", paid, "25.00", credit_note_id="cn_b")]
    async with running(env.client, queue_prefix, world):
        await world.posted_with_its_payment(env, queue_prefix, "in_b")
        await deliver_to_customer_ledger(
            env.client, queue_prefix, event("evt_cn", "cn_b", 300, kind="credit_note")
        )
        await until(lambda: "cn_b" in world.journal, env, "credit note posted")
        await deliver_to_customer_ledger(
            env.client, queue_prefix, charge_event("evt_refunded", "ch_inpay_b", 301)
        )
        await until(lambda: "re_b/payout" in world.journal, env, "refund paid out")
        await env.sleep(timedelta(minutes=1))
    assert world.erp_order == ["in_b", "inpay_b", "cn_b", "re_b/payout"]
    assert world.erp_postings["cn_b"].applies_to == "in_b"
    assert world.receivable() == 0


async def refund_paid_out_on_its_own(
    env: WorkflowEnvironment, prefix: str, world: CreditingWorld, tag: str
) -> Payment:
    """A paid invoice of 100 and a refund of 30 of it made without a credit note, posted as
    the refund's own credit note and paid out; billing then names it in a credit note."""
    paid = world.paid_by_card(f"in_{tag}", "100.00")
    world.refunds[f"ch_inpay_{tag}"] = [refund(f"re_{tag}", paid, "30.00")]
    await world.posted_with_its_payment(env, prefix, f"in_{tag}")
    await deliver_to_customer_ledger(
        env.client, prefix, charge_event("evt_refunded", f"ch_inpay_{tag}", 300)
    )
    await until(lambda: f"re_{tag}/payout" in world.journal, env, "refund paid out")
    world.documents[f"cn_{tag}"] = credit_note(
        f"cn_{tag}", "30.00", f"in_{tag}", refunds=linked(f"re_{tag}", "30.00")
    )
    world.refunds[f"ch_inpay_{tag}"] = [
        refund(f"re_{tag}", paid, "30.00", credit_note_id=f"cn_{tag}")
    ]
    return paid


async def test_credit_note_finance_rejects_after_the_erp_refused_it_leaves_no_reversal_behind(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, CreditingWorld()
    async with running(env.client, queue_prefix, world):
        await refund_paid_out_on_its_own(env, queue_prefix, world, "x")
        world.refused.add("cn_x")
        ledger = await deliver_to_customer_ledger(
            env.client, queue_prefix, event("evt_cn", "cn_x", 400, kind="credit_note")
        )
        exception = await exception_handle(env, ledger)
        state = await exception.query(FinanceExceptionWorkflow.state)
        assert (state.context.invoice_id, state.context.error_type) == ("cn_x", "RejectedError")
        await exception.execute_update(FinanceExceptionWorkflow.decide, decision("reject"))
        await until(lambda: "cn_x" in world.journal, env, "rejection journaled")
        await env.sleep(timedelta(minutes=1))
    assert world.journal["cn_x"].erp_document_id.startswith("rejected:")
    # Nothing half-done: the refund's own credit note stands, with no reversal of it.
    assert world.erp_order == ["in_x", "inpay_x", "re_x", "re_x/payout"]
    assert "re_x/credited-by/cn_x" not in world.journal
    assert world.receivable() == 0  # billing's: the refund gave back what the note credits


async def test_reversal_the_erp_refuses_is_finances_exception_and_hand_posting_journals_it(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, CreditingWorld()
    reversal = "re_v/credited-by/cn_v"
    async with running(env.client, queue_prefix, world):
        await refund_paid_out_on_its_own(env, queue_prefix, world, "v")
        world.refused.add(reversal)
        ledger = await deliver_to_customer_ledger(
            env.client, queue_prefix, event("evt_cn", "cn_v", 400, kind="credit_note")
        )
        exception = await exception_handle(env, ledger)
        state = await exception.query(FinanceExceptionWorkflow.state)
        assert state.context.payload["reversal"]["reference"] == reversal
        assert state.context.amount == usd("30.00")
        assert "cn_v" in world.erp and reversal not in world.erp
        # Finance books the reversal by hand, then says so.
        world.refused.discard(reversal)
        world.post(LedgerPosting.model_validate(state.context.payload["reversal"]))
        await exception.execute_update(
            FinanceExceptionWorkflow.decide,
            decision("resolve_manually", manual_erp_number="INV-HAND-7"),
        )
        await until(lambda: reversal in world.journal, env, "hand posting journaled")
        await env.sleep(timedelta(minutes=1))
    hand = world.journal[reversal]
    assert (hand.erp_number, hand.document_type, hand.amount) == (
        "INV-HAND-7", "invoice", Decimal("30.00"))  # fmt: skip
    assert world.journal["cn_v"].erp_number == world.erp["cn_v"].erp_number
    assert world.receivable() == 0


async def test_credit_note_naming_a_refund_finance_rejected_is_finances_not_a_silent_credit(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, CreditingWorld()
    world.paid_by_card("in_k", "100.00")
    # The refund gives back a payment billing does not list as paid: finance rejects it.
    unknown = payment("inpay_gone", "in_k", "30.00")
    world.refunds["ch_inpay_gone"] = [refund("re_k", unknown, "30.00")]
    async with running(env.client, queue_prefix, world):
        await world.posted_with_its_payment(env, queue_prefix, "in_k")
        await deliver_to_customer_ledger(
            env.client, queue_prefix, charge_event("evt_refunded", "ch_inpay_gone", 300)
        )
        await credit_note_naming_the_rejected_refund_is_finances(env, queue_prefix, world, "k")
    assert world.journal["cn_k"].erp_document_id.startswith("rejected:")
    assert world.erp_order == ["in_k", "inpay_k"]
    assert world.receivable() == 0


@pytest_asyncio.fixture
async def own_server() -> AsyncIterator[WorkflowEnvironment]:
    """A time-skipping server of its own: weeks of skipped time touch no other test."""
    async with time_skipping_server() as env:
        yield env


async def test_credit_note_naming_a_refund_rejected_while_pending_is_finances_too(
    own_server: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = own_server, CreditingWorld()
    paid_and_refunded(world, "s", "100.00", "30.00")
    async with running(env.client, queue_prefix, world):
        await refund_seen_pending(env, world, queue_prefix, "s")
        await env.sleep(timedelta(days=47))  # longer than Stripe holds a pending refund
        refund_becomes(world, "ch_inpay_s", "succeeded")  # billing settles it after all
        await credit_note_naming_the_rejected_refund_is_finances(env, queue_prefix, world, "s")
    assert world.erp_order == ["in_s", "inpay_s"]
    assert world.receivable() == 0


async def credit_note_naming_the_rejected_refund_is_finances(
    env: WorkflowEnvironment, prefix: str, world: CreditingWorld, tag: str
) -> None:
    """Finance rejects the refund the ledger is blocked on; billing's credit note then names
    it: finance's LinkedRefundRejected, nothing posted, and rejected in turn."""
    ledger = f"customer-ledger/cus_1-{prefix}"
    first = await exception_handle(env, ledger)
    await first.execute_update(FinanceExceptionWorkflow.decide, decision("reject"))
    await until(lambda: f"re_{tag}/payout" in world.journal, env, "refund rejected")
    world.documents[f"cn_{tag}"] = credit_note(f"cn_{tag}", "30.00", f"in_{tag}",
                                               refunds=linked(f"re_{tag}", "30.00"))  # fmt: skip
    await deliver_to_customer_ledger(
        env.client, prefix, event("evt_cn", f"cn_{tag}", 400, kind="credit_note")
    )
    second = await exception_handle(env, ledger)
    state = await second.query(FinanceExceptionWorkflow.state)
    assert (state.context.step, state.context.error_type) == (
        "check_linked_refunds", "LinkedRefundRejected")  # fmt: skip
    assert f"names refund re_{tag} for 30.00 USD, which finance rejected" in (
        state.context.error_message
    )
    assert f"cn_{tag}" not in world.erp
    await second.execute_update(FinanceExceptionWorkflow.decide, decision("reject"))
    await until(lambda: f"cn_{tag}" in world.journal, env, "credit note rejected")
    await env.sleep(timedelta(minutes=1))
    assert world.journal[f"cn_{tag}"].erp_document_id.startswith("rejected:")


def partly_linked(tag: str, paid: Payment) -> Refund:
    """A refund of 30 that billing's credit note of 20 names for 20 of it."""
    return refund(f"re_{tag}", paid, "30.00", credit_note_id=f"cn_{tag}")


def assert_paid_out_in_part(world: CreditingWorld, tag: str) -> None:
    """20 paid out on billing's credit note, 10 through the refund's own credit note for the
    rest: nothing open, the receivable billing's (100 paid, 30 given back)."""
    re, cn = f"re_{tag}", f"cn_{tag}"
    on_cn = f"{re}/paid-out-on/{cn}"
    assert world.erp_order == [f"in_{tag}", f"inpay_{tag}", cn, on_cn, re, f"{re}/payout"]
    part, rest = world.erp_payment_postings[on_cn], world.erp_payment_postings[f"{re}/payout"]
    assert (part.applies_to, part.amount) == (cn, usd("20.00"))
    assert (world.erp[re].total, rest.applies_to, rest.amount) == (usd("10.00"), re, usd("10.00"))
    assert {ref: world.open(ref) for ref in world.erp} == dict.fromkeys(world.erp, Decimal(0))
    assert world.receivable() == 0


async def test_refund_a_credit_note_names_in_part_is_paid_out_on_it_for_that_part_only(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, CreditingWorld()
    paid = world.paid_by_card("in_p", "100.00")
    world.documents["cn_p"] = credit_note("cn_p", "20.00", "in_p", refunds=linked("re_p", "20.00"))
    world.refunds["ch_inpay_p"] = [partly_linked("p", paid)]
    async with running(env.client, queue_prefix, world):
        await world.posted_with_its_payment(env, queue_prefix, "in_p")
        await deliver_to_customer_ledger(
            env.client, queue_prefix, event("evt_cn", "cn_p", 300, kind="credit_note")
        )
        await until(lambda: "cn_p" in world.journal, env, "credit note posted")
        await deliver_to_customer_ledger(
            env.client, queue_prefix, charge_event("evt_refunded", "ch_inpay_p", 301)
        )
        await until(lambda: "re_p/payout" in world.journal, env, "refund paid out")
        # Redelivered: the refund's own credit note (the rest) is not reversed by it.
        await deliver_to_customer_ledger(
            env.client, queue_prefix, event("evt_cn_again", "cn_p", 302, kind="credit_note")
        )
        await env.sleep(timedelta(minutes=1))
    assert_paid_out_in_part(world, "p")


async def test_refund_linked_in_part_just_before_its_own_credit_note_pays_the_rest_on_its_own(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, CreditingWorld()
    paid = world.paid_by_card("in_q", "100.00")
    world.refunds["ch_inpay_q"] = [refund("re_q", paid, "30.00")]
    world.documents["cn_q"] = credit_note("cn_q", "20.00", "in_q", refunds=linked("re_q", "20.00"))
    world.refunds_after_first_read["ch_inpay_q"] = [partly_linked("q", paid)]
    async with running(env.client, queue_prefix, world):
        await world.posted_with_its_payment(env, queue_prefix, "in_q")
        await deliver_to_customer_ledger(
            env.client, queue_prefix, charge_event("evt_refunded", "ch_inpay_q", 300)
        )
        await until(lambda: "re_q/payout" in world.journal, env, "refund paid out")
        await deliver_to_customer_ledger(
            env.client, queue_prefix, event("evt_cn", "cn_q", 301, kind="credit_note")
        )
        await env.sleep(timedelta(minutes=1))
    assert_paid_out_in_part(world, "q")


async def test_money_a_credit_note_gives_back_out_of_band_is_paid_out_on_it_once(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, CreditingWorld()
    world.paid_by_card("in_o", "80.00")
    world.documents["cn_o"] = credit_note("cn_o", "20.00", "in_o",
                                          out_of_band_amount=usd("20.00"))  # fmt: skip
    async with running(env.client, queue_prefix, world):
        await world.posted_with_its_payment(env, queue_prefix, "in_o")
        for event_id in ("evt_cn", "evt_cn", "evt_cn_again"):
            await deliver_to_customer_ledger(
                env.client, queue_prefix, event(event_id, "cn_o", 300, kind="credit_note")
            )
        await until(lambda: "cn_o/out_of_band" in world.journal, env, "paid out out of band")
        await env.sleep(timedelta(minutes=1))
    assert world.erp_order == ["in_o", "inpay_o", "cn_o", "cn_o/out_of_band"]
    payout = world.erp_payment_postings["cn_o/out_of_band"]
    assert (payout.kind, payout.method, payout.applies_to, payout.amount) == (
        "refund", "out_of_band", "cn_o", usd("20.00"))  # fmt: skip
    assert (payout.journal, payout.clearing_account) == ("BANK", "1000")
    assert world.journal["cn_o/out_of_band"].document_type == "refund"
    assert world.open("cn_o") == 0 and world.receivable() == 0
    assert (world.post_calls, world.payment_calls) == (2, 2)


async def test_unmapped_out_of_band_journal_is_a_finance_exception_then_posted_once(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, CreditingWorld()
    mapping = finance_mapping()
    world.set_mapping(mapping.model_copy(update={"payments": {
        "card/USD": mapping.payments["card/USD"]}}))  # fmt: skip
    world.documents["in_u"] = invoice("in_u", "40.00", status="paid")
    world.documents["cn_u"] = credit_note("cn_u", "15.00", "in_u",
                                          out_of_band_amount=usd("15.00"))  # fmt: skip
    async with running(env.client, queue_prefix, world):
        workflow_id = await deliver_to_customer_ledger(
            env.client, queue_prefix, event("evt_cn", "cn_u", 300, kind="credit_note")
        )
        exception = await exception_handle(env, workflow_id)
        state = await exception.query(FinanceExceptionWorkflow.state)
        assert state.context.error_type == "Unmapped"
        assert "payment journal for out_of_band/USD" in state.context.error_message
        assert state.context.payload["refund"]["reference"] == "cn_u/out_of_band"
        assert "cn_u" in world.journal and "cn_u/out_of_band" not in world.erp_payments
        world.set_mapping(finance_mapping(version=2))
        await exception.execute_update(FinanceExceptionWorkflow.decide, decision("retry"))
        await until(lambda: "cn_u/out_of_band" in world.journal, env, "paid out after the fix")
        await env.sleep(timedelta(minutes=1))
    assert world.erp_payment_postings["cn_u/out_of_band"].journal == "BANK"
    assert world.erp_order == ["cn_u", "cn_u/out_of_band"]


def eur_invoice(doc_id: str, amount: str) -> BillingDocument:
    eur = Money.of(amount, "EUR")
    line = DocumentLine(line_id=f"{doc_id}-l0", description="line 0", quantity=Decimal(1),
                        unit_amount=eur, amount=eur, product_id="prod_basic")  # fmt: skip
    return invoice(doc_id, amount).model_copy(
        update={"currency": "EUR", "lines": [line], "subtotal": eur, "total": eur,
                "tax": Money.of("0", "EUR")}
    )  # fmt: skip


async def test_finance_mapping_alone_says_which_currencies_are_booked(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    """The ledger was started knowing only USD (`deliver`): a EUR invoice posts once
    finance maps EUR, and before that it is finance's Unmapped exception naming EUR."""
    env, world = time_skipping_env, CreditingWorld()
    world.documents["in_eur"] = eur_invoice("in_eur", "45.00")
    async with running(env.client, queue_prefix, world):
        workflow_id = await deliver(env.client, queue_prefix, event("evt_eur", "in_eur", 100))
        exception = await exception_handle(env, workflow_id)
        state = await exception.query(FinanceExceptionWorkflow.state)
        assert (state.context.step, state.context.error_type) == ("post_ledger_document",
                                                                  "Unmapped")  # fmt: skip
        assert "currency EUR" in state.context.error_message
        mapping = finance_mapping(version=2)
        world.set_mapping(mapping.model_copy(update={"currencies": ["USD", "EUR"]}))
        await exception.execute_update(FinanceExceptionWorkflow.decide, decision("retry"))
        await until(lambda: "in_eur" in world.journal, env, "EUR invoice posted")
    assert world.erp["in_eur"].total == Money.of("45.00", "EUR")
