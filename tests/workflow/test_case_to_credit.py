"""CaseToCreditWorkflow with same-named activity doubles: policy, approval, saga, exceptions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio
from temporalio import activity
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.amendments import PostDocumentInput, RecordJournalInput
from activities.audit import AuditRecordInput
from activities.credits import (
    AppliedCredit,
    ApplyCreditInput,
    CaseOutcomeInput,
    CreditFactsInput,
    ReverseCreditInput,
)
from adapters.task_queues import task_queue
from canonical import (
    DecisionRequest,
    ExceptionContext,
    FinanceDecision,
    Money,
    PostedDocument,
    Subscription,
    SubscriptionItem,
)
from canonical.credit import CreditFacts, CreditRequest
from canonical.entitlements import Entitlements
from canonical.mapping import SUPPORT_CREDIT_LINE
from canonical.support import SupportCase
from tests.fixtures.temporal import time_skipping_server
from tests.workflow.one_erp import with_one_erp
from workflows.case_to_credit import (
    CaseToCreditInput,
    CaseToCreditWorkflow,
    CreditApproval,
    CreditState,
    credit_workflow_id,
)
from workflows.finance_exception import FinanceExceptionWorkflow

T0 = datetime(2026, 11, 1, tzinfo=UTC)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """A test server of this module's own: its week-long approval timers and abandoned
    finance exceptions stay out of the other modules' skipped time."""
    async with time_skipping_server() as env:
        yield env


def usd(amount: str) -> Money:
    return Money.of(amount, "USD")


class FakeDesk:
    """Support, billing, ERP, journal and audit for one credit."""

    def __init__(self, monthly: str = "900.00") -> None:
        self.monthly = monthly
        self.organization_customer: str | None = "cus_1"
        self.subscription_status = "active"
        self.recent = usd("0")
        self.applied: list[ApplyCreditInput] = []
        self.reversed: list[ReverseCreditInput] = []
        self.posted: list[PostDocumentInput] = []
        self.journal: list[RecordJournalInput] = []
        self.outcomes: list[CaseOutcomeInput] = []
        self.audit: list[AuditRecordInput] = []
        self.billing_refusal: str | None = None
        self.erp_refusal: str | None = None
        self.facts_read: list[CreditFactsInput] = []
        # The status the support organization's entitlements show (None: it shows none).
        self.shown_status: str | None = None

    def subscription(self) -> Subscription | None:
        if self.subscription_status is None:
            return None
        item = SubscriptionItem(item_id="si_1", price_id="p", product_id="prod",
                                description="Pro", quantity=1, unit_amount=usd(self.monthly),
                                interval="month")  # fmt: skip
        return Subscription(subscription_id="sub_1", customer_id="cus_1",
                            status=self.subscription_status, currency="USD", items=[item],
                            current_period_start=T0, current_period_end=T0 + timedelta(30),
                            created_at=T0)  # fmt: skip

    def activities(self) -> dict[str, list[Callable[..., Any]]]:
        @activity.defn(name="gather_credit_facts")
        async def gather_credit_facts(request: CreditFactsInput) -> CreditFacts:
            self.facts_read.append(request)
            case = SupportCase(case_id=request.case_id, organization_id="360000000001",
                               customer_id=self.organization_customer, subject="Outage",
                               status="open", updated_at=T0)  # fmt: skip
            if case.customer_id is None:
                return CreditFacts(case=case)
            shown = None
            if self.shown_status is not None:
                shown = Entitlements(customer_id="cus_1", plan="Pro", subscription_id="sub_1",
                                     status=self.shown_status, paid_through=date(2026, 10, 31),
                                     as_of=T0)  # fmt: skip
            return CreditFacts(case=case, subscription=self.subscription(), erp_party="7",
                               erp_period_open=True, credited_last_90_days=self.recent,
                               entitlements=shown,
                               entitlements_source="support" if shown else None)  # fmt: skip

        @activity.defn(name="write_case_outcome")
        async def write_case_outcome(request: CaseOutcomeInput) -> None:
            self.outcomes.append(request)

        @activity.defn(name="apply_billing_credit")
        async def apply_billing_credit(request: ApplyCreditInput) -> AppliedCredit:
            if self.billing_refusal:
                raise ApplicationError(self.billing_refusal, type="RejectedError",
                                       non_retryable=True)  # fmt: skip
            self.applied.append(request)
            kind = "credit_note" if request.invoice_id else "balance_credit"
            return AppliedCredit(document_id="cbtxn_1", kind=kind)

        @activity.defn(name="reverse_billing_credit")
        async def reverse_billing_credit(request: ReverseCreditInput) -> None:
            self.reversed.append(request)

        @activity.defn(name="post_ledger_document")
        async def post_ledger_document(request: PostDocumentInput) -> PostedDocument:
            if self.erp_refusal:
                raise ApplicationError(self.erp_refusal, type="ValidationError",
                                       non_retryable=True)  # fmt: skip
            self.posted.append(request)
            posting = request.posting
            return PostedDocument(
                reference=posting.reference, kind="credit_note", erp_document_id="41",
                erp_number="CN-2026-00007", total=posting.total, state="posted",
                created_now=True,
            )  # fmt: skip

        @activity.defn(name="record_journal_entry")
        async def record_journal_entry(request: RecordJournalInput) -> None:
            self.journal.append(request)

        @activity.defn(name="append_audit")
        async def append_audit(record: AuditRecordInput) -> int:
            self.audit.append(record)
            return len(self.audit)

        return {
            "": [record_journal_entry, append_audit],
            "support": [write_case_outcome],
            "billing": [gather_credit_facts, apply_billing_credit, reverse_billing_credit],
            "erp": [post_ledger_document],
        }


@asynccontextmanager
async def running(client: Client, prefix: str, desk: FakeDesk) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        for queue, activities in with_one_erp(desk.activities()).items():
            await stack.enter_async_context(
                Worker(
                    client,
                    task_queue=task_queue(prefix, queue) if queue else task_queue(prefix),
                    workflows=[CaseToCreditWorkflow, FinanceExceptionWorkflow] if not queue else [],
                    activities=activities,
                )
            )
        yield


def credit(amount: str, **changes: Any) -> CreditRequest:
    fields: dict[str, Any] = {
        "case_id": "1001", "request_id": "r1", "organization_id": "360000000001",
        "requested_by": "agent-ana", "amount": usd(amount), "reason": "outage on 2026-11-14",
    }  # fmt: skip
    fields.update(changes)
    return CreditRequest(**fields)


async def start(client: Client, prefix: str, request: CreditRequest) -> WorkflowHandle[Any, Any]:
    return await client.start_workflow(
        CaseToCreditWorkflow.run,
        CaseToCreditInput(request=request),
        id=f"{credit_workflow_id(request.case_id, request.request_id)}-{prefix}",
        task_queue=task_queue(prefix),
    )


async def test_small_credit_is_applied_posted_and_told_to_the_ticket(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, desk = time_skipping_env, FakeDesk()
    async with running(env.client, queue_prefix, desk):
        handle = await start(env.client, queue_prefix, credit("40.00"))
        state: CreditState = await handle.result()
    assert state.status == "applied"
    assert state.erp_number == "CN-2026-00007"
    assert desk.applied[0].amount == usd("40.00") and desk.applied[0].invoice_id is None
    [posted] = desk.posted
    assert (posted.posting.kind, posted.posting.reference, posted.posting.total) == (
        "credit_note", "cbtxn_1", usd("40.00"))  # fmt: skip
    # Finance maps it: support credits are booked on the mapping's [support_credits] entry.
    assert [ln.product_id for ln in posted.posting.lines] == [SUPPORT_CREDIT_LINE]
    assert desk.journal[0].entry.workflow_id.startswith("credit/1001/r1")
    [outcome] = desk.outcomes
    assert outcome.tags == ["credit_applied"] and "CN-2026-00007" in outcome.internal_note
    assert [a.action for a in desk.audit] == ["credit.auto_approved"]
    # The facts the policy decided on were read once, on the workflow's (UTC) clock.
    [facts] = desk.facts_read
    assert (facts.case_id, facts.currency, facts.as_of.utcoffset()) == ("1001", "USD", timedelta(0))


async def test_large_credit_waits_for_finance_across_days_then_is_applied(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, desk = time_skipping_env, FakeDesk()
    async with running(env.client, queue_prefix, desk):
        handle = await start(env.client, queue_prefix, credit("200.00"))
        await env.sleep(timedelta(hours=25))
        assert (await handle.query(CaseToCreditWorkflow.state)).status == "reminded"
        assert desk.applied == []
        await env.sleep(timedelta(hours=48))
        assert (await handle.query(CaseToCreditWorkflow.state)).status == "escalated"
        await handle.execute_update(
            CaseToCreditWorkflow.decide,
            CreditApproval(approve=True, reason="confirmed outage", approver="fiona",
                           role="finance"),
        )  # fmt: skip
        state: CreditState = await handle.result()
    assert state.status == "applied"
    assert [a.action for a in desk.audit] == ["credit.approved"]
    assert desk.audit[0].actor == "fiona" and desk.audit[0].reason == "confirmed outage"


async def test_undecided_credit_expires_after_seven_days_and_the_ticket_is_told(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, desk = time_skipping_env, FakeDesk()
    async with running(env.client, queue_prefix, desk):
        handle = await start(env.client, queue_prefix, credit("200.00"))
        state: CreditState = await handle.result()
    assert state.status == "rejected"
    assert desk.applied == [] and desk.posted == []
    assert "no decision within 7 days" in desk.outcomes[0].public_reply


@pytest.mark.parametrize(
    ("setup", "amount", "reason"),
    [
        ("unmapped", "40.00", "not mapped"),
        ("canceled", "40.00", "no active subscription"),
        ("capped", "901.00", "over the cap"),
        ("rolling", "200.00", "90-day cap"),
    ],
)
async def test_ineligible_or_capped_credits_are_rejected_with_the_reason_on_the_ticket(
    time_skipping_env: WorkflowEnvironment,
    queue_prefix: str,
    setup: str,
    amount: str,
    reason: str,
) -> None:
    env, desk = time_skipping_env, FakeDesk()
    if setup == "unmapped":
        desk.organization_customer = None
    elif setup == "canceled":
        desk.subscription_status = "canceled"
    elif setup == "rolling":
        desk.recent = usd("1300.00")
    async with running(env.client, queue_prefix, desk):
        handle = await start(env.client, queue_prefix, credit(amount))
        state: CreditState = await handle.result()
    assert state.status == "rejected"
    assert reason in desk.outcomes[0].internal_note
    assert desk.outcomes[0].tags == ["credit_rejected"]
    assert desk.applied == []


async def decide_exception(
    env: WorkflowEnvironment,
    handle: WorkflowHandle[Any, Any],
    decision: str,
    fix: Callable[[], None] = lambda: None,
    **extra: Any,
) -> ExceptionContext:
    """Wait until the credit is blocked on its finance exception, let finance `fix` the
    cause, then decide it."""
    for _ in range(100):
        state = await handle.query(CaseToCreditWorkflow.state)
        if state.status == "blocked" and state.exception_id:
            exception = env.client.get_workflow_handle(state.exception_id)
            try:
                context = (await exception.query(FinanceExceptionWorkflow.state)).context
            except RPCError:
                await asyncio.sleep(0.1)  # the child is not started yet
                continue
            fix()
            request = DecisionRequest(decision=decision, reason="checked with the customer",
                                      actor="fiona", role="finance", **extra)  # type: ignore[arg-type]  # fmt: skip
            await exception.execute_update("decide", request, result_type=FinanceDecision)
            return context
        await asyncio.sleep(0.1)
    raise AssertionError("the credit never waited for finance")


async def test_erp_refusing_for_good_reverses_the_billing_credit_and_finance_rejects_it(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, desk = time_skipping_env, FakeDesk()
    desk.erp_refusal = "party has no receivable account"
    async with running(env.client, queue_prefix, desk):
        handle = await start(env.client, queue_prefix, credit("40.00"))
        context = await decide_exception(env, handle, "reject")
        state: CreditState = await handle.result()
    assert [r.applied.document_id for r in desk.reversed] == ["cbtxn_1"]
    assert desk.journal == []
    assert context.process == "case_to_credit" and context.case_id == "1001"
    assert "billing credit reversed" in context.error_message
    assert "compensate" not in context.allowed_decisions
    assert state.status == "rejected" and state.finance_decision is not None
    assert state.finance_decision.decision == "reject"
    assert [o.tags for o in desk.outcomes] == [["credit_exception"], ["credit_rejected"]]
    assert len({o.idempotency_key for o in desk.outcomes}) == 2


async def test_after_an_erp_failure_finance_retry_applies_and_posts_again(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, desk = time_skipping_env, FakeDesk()
    desk.erp_refusal = "party has no receivable account"
    async with running(env.client, queue_prefix, desk):
        handle = await start(env.client, queue_prefix, credit("40.00"))
        await decide_exception(env, handle, "retry", fix=lambda: setattr(desk, "erp_refusal", None))
        state: CreditState = await handle.result()
    assert state.status == "applied" and state.erp_number == "CN-2026-00007"
    first, second = desk.applied
    assert first.idempotency_key != second.idempotency_key  # a new billing credit
    assert len(desk.reversed) == 1 and len(desk.posted) == 1 and len(desk.journal) == 1
    assert desk.outcomes[-1].tags == ["credit_applied"]


async def test_settled_invoice_opens_an_exception_and_compensate_credits_the_next_invoice(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, desk = time_skipping_env, FakeDesk()
    desk.billing_refusal = "Invoice in_9 is already paid and cannot be credited this way"
    async with running(env.client, queue_prefix, desk):
        handle = await start(env.client, queue_prefix, credit("40.00", invoice_id="in_9"))
        context = await decide_exception(
            env, handle, "compensate", fix=lambda: setattr(desk, "billing_refusal", None)
        )
        state: CreditState = await handle.result()
    assert context.invoice_id == "in_9" and context.amount == usd("40.00")
    assert context.error_type == "RejectedError" and "already paid" in context.error_message
    assert "in_9" in context.decision_effects["compensate"]
    assert state.status == "applied"
    [applied] = desk.applied
    assert applied.invoice_id is None  # the next invoice, as finance decided
    assert desk.posted[0].posting.total == usd("40.00")


async def test_finance_resolving_by_hand_is_told_to_the_ticket(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, desk = time_skipping_env, FakeDesk()
    desk.billing_refusal = "Invoice in_9 is already paid and cannot be credited this way"
    async with running(env.client, queue_prefix, desk):
        handle = await start(env.client, queue_prefix, credit("40.00", invoice_id="in_9"))
        await decide_exception(env, handle, "resolve_manually", manual_erp_number="CN-MAN-1")
        state: CreditState = await handle.result()
    assert (state.status, state.erp_number) == ("resolved_manually", "CN-MAN-1")
    assert desk.applied == [] and desk.posted == []
    assert "credit_resolved_manually" in desk.outcomes[-1].tags
    assert "CN-MAN-1" in desk.outcomes[-1].internal_note


@pytest.mark.parametrize(
    ("approver", "role", "amount", "monthly", "refusal"),
    [
        ("agent-ana", "finance", "200.00", "900.00", "own credit"),
        ("sam", "support", "200.00", "900.00", "may not approve"),
        ("fiona", "finance", "1500.00", "2000.00", "approval limit"),
    ],
)
async def test_approvals_the_validator_refuses_change_nothing(
    dev_server_env: WorkflowEnvironment,
    queue_prefix: str,
    approver: str,
    role: str,
    amount: str,
    monthly: str,
    refusal: str,
) -> None:
    # The dev server: the time-skipping test server cannot report a rejected Update.
    env, desk = dev_server_env, FakeDesk(monthly)
    async with running(env.client, queue_prefix, desk):
        handle = await start(env.client, queue_prefix, credit(amount))
        for _ in range(50):
            if (await handle.query(CaseToCreditWorkflow.state)).status == "awaiting_approval":
                break
            await env.sleep(timedelta(milliseconds=200))
        with pytest.raises(WorkflowUpdateFailedError) as refused:
            await handle.execute_update(
                CaseToCreditWorkflow.decide,
                CreditApproval(approve=True, reason="ok", approver=approver, role=role),
            )
        assert refusal in str(refused.value.cause)
        assert (await handle.query(CaseToCreditWorkflow.state)).approval is None
        await handle.terminate("test over")
    assert desk.applied == [] and desk.audit == []


async def test_a_small_credit_for_a_customer_support_shows_past_due_waits_for_finance(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, desk = time_skipping_env, FakeDesk()
    desk.shown_status = "past_due"
    async with running(env.client, queue_prefix, desk):
        handle = await start(env.client, queue_prefix, credit("40.00"))
        await env.sleep(timedelta(hours=1))
        state = await handle.query(CaseToCreditWorkflow.state)
        assert state.status == "awaiting_approval"
        assert state.assessment.reasons[0].startswith("the customer is past due")
        assert desk.applied == []
        await handle.execute_update(
            CaseToCreditWorkflow.decide,
            CreditApproval(approve=True, reason="goodwill", approver="fiona", role="finance"),
        )
        final: CreditState = await handle.result()
    assert final.status == "applied"


async def test_support_showing_the_subscription_canceled_rejects_the_credit(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, desk = time_skipping_env, FakeDesk()
    desk.shown_status = "canceled"  # billing's active_subscription still answers: support decides
    async with running(env.client, queue_prefix, desk):
        handle = await start(env.client, queue_prefix, credit("40.00"))
        state: CreditState = await handle.result()
    assert state.status == "rejected"
    assert "not in service: canceled, plan Pro, paid through 2026-10-31" in (
        desk.outcomes[0].internal_note
    )
    assert desk.applied == []
