"""Finance exception: a human decision, with its full context, that an origin process awaits.

Started as a child by any process (`exception/{origin workflow id}/{n}`). Finance decides
through the Update `decide`, whose validator refuses bad input before it reaches history;
the decision is audited and returned to the origin, which acts on it. Reminder after 24 h,
escalation after 72 h: both visible as ProcessStatus and as log lines alerting can key on.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from activities.audit import AuditActivities, AuditRecordInput
    from adapters import visibility
    from canonical import FINANCE_ROLES, DecisionRequest, ExceptionContext, FinanceDecision
    from canonical.finance import FinanceExceptionInput, FinanceExceptionState
    from workflows.activity_options import run_activity
    from workflows.patches import Patches

PROCESS = "finance_exception"
# Exceptions started before the opening was audited (and so published) skip it.
OPENED_AUDIT_PATCH = "exception-opened-audited"
# A new run takes the patches above and the inbox row's at its start under one release id
# (workflows/patches.py); a patch made later goes into a new release, first.
EXCEPTION_RELEASES = {
    "exception-release-2026-12": frozenset({OPENED_AUDIT_PATCH, visibility.INBOX_ROW_PATCH}),
}
REMIND_AFTER = timedelta(hours=24)
ESCALATE_AFTER = timedelta(hours=72)


def exception_workflow_id(origin_workflow_id: str, n: int) -> str:
    return f"exception/{origin_workflow_id}/{n}"


@workflow.defn(name="FinanceException")
class FinanceExceptionWorkflow:
    def __init__(self) -> None:
        self._input: FinanceExceptionInput | None = None
        self._decision: FinanceDecision | None = None
        self._status = "open"
        self._opening = False  # the opening's audit row is being written
        self._patches = Patches(EXCEPTION_RELEASES)

    @workflow.run
    async def run(self, request: FinanceExceptionInput) -> FinanceDecision:
        self._patches.begin()
        self._input = request
        context = request.context
        workflow.set_current_details(
            f"Waiting for finance: {context.process} {context.step} failed "
            f"({context.error_type}: {context.error_message}). "
            f"Allowed decisions: {', '.join(context.allowed_decisions)}."
        )
        if self._patches.patched(visibility.INBOX_ROW_PATCH):
            amount = context.amount
            workflow.upsert_search_attributes(
                visibility.exception_row(
                    context.process,
                    context.step,
                    context.error_type,
                    list(context.allowed_decisions),
                    amount.currency if amount else None,
                )
            )
        if self._patches.patched(OPENED_AUDIT_PATCH):
            self._opening = True
            await self._audit_opening(context)
            self._opening = False
        if not await self._decided_within(REMIND_AFTER):
            self._mark("reminded")
            workflow.logger.warning(
                "finance exception %s undecided after 24 h", workflow.info().workflow_id
            )
            if not await self._decided_within(ESCALATE_AFTER - REMIND_AFTER):
                self._mark("escalated")
                workflow.logger.error(
                    "finance exception %s escalated: undecided after 72 h",
                    workflow.info().workflow_id,
                )
                await workflow.wait_condition(lambda: self._decision is not None)
        await workflow.wait_condition(workflow.all_handlers_finished)
        assert self._decision is not None
        return self._decision

    async def _audit_opening(self, context: ExceptionContext) -> None:
        """The opening in the audit trail (its `exception_opened` event goes out with it)."""
        fields = {"process": context.process, "origin_workflow_id": context.origin_workflow_id,
                  "step": context.step, "customer_id": context.customer_id,
                  "subscription_id": context.subscription_id, "invoice_id": context.invoice_id,
                  "case_id": context.case_id, "error_type": context.error_type,
                  "error_message": context.error_message,
                  "allowed_decisions": list(context.allowed_decisions)}  # fmt: skip
        try:
            await run_activity(
                AuditActivities.append_audit,
                AuditRecordInput(
                    actor="ledgerbridge",
                    role="system",
                    action="exception.opened",
                    subject=workflow.info().workflow_id,
                    reason=f"{context.step}: {context.error_type}",
                    amount=context.amount.amount if context.amount else None,
                    currency=context.amount.currency if context.amount else None,
                    correlation_id=context.correlation_id,
                    details=fields,
                ),
            )
        except ActivityError as err:
            # An error message too large for an event (a remote system's whole page): the
            # event is refused, never truncated; this exception, open in the inbox, is what
            # finance sees of it. Anything else fails as before.
            if not isinstance(err.cause, ApplicationError) or err.cause.type != "EventTooLarge":
                raise
            workflow.logger.warning("exception %s: its opening event was refused: %s",
                                    workflow.info().workflow_id, err.cause.message)  # fmt: skip

    async def _decided_within(self, period: timedelta) -> bool:
        try:
            await workflow.wait_condition(lambda: self._decision is not None, timeout=period)
        except TimeoutError:
            return False
        return True

    @workflow.update(name="decide")
    async def decide(self, request: DecisionRequest) -> FinanceDecision:
        assert self._input is not None
        context = self._input.context
        decision = FinanceDecision(
            exception_id=workflow.info().workflow_id,
            decision=request.decision,
            reason=request.reason.strip(),
            actor=request.actor,
            role=request.role,
            manual_erp_number=request.manual_erp_number,
            decided_at=workflow.now(),
        )
        # Claimed before the audit write, so a second decision is refused meanwhile.
        self._decision = decision
        self._mark("decided")
        manual = (
            f" (ERP document {decision.manual_erp_number})" if decision.manual_erp_number else ""
        )
        workflow.set_current_details(
            f"Decided: {decision.decision}{manual} by {decision.actor} ({decision.role}) "
            f"at {decision.decided_at:%Y-%m-%d %H:%M} UTC: {decision.reason}"
        )
        if self._opening:  # claimed above; its opening is published before its decision
            await workflow.wait_condition(lambda: not self._opening)
        await run_activity(
            AuditActivities.append_audit,
            AuditRecordInput(
                actor=request.actor,
                role=request.role,
                action=f"exception.{request.decision}",
                subject=workflow.info().workflow_id,
                reason=decision.reason,
                amount=context.amount.amount if context.amount else None,
                currency=context.amount.currency if context.amount else None,
                correlation_id=context.correlation_id,
                details={
                    "process": context.process,
                    "origin_workflow_id": context.origin_workflow_id,
                    "manual_erp_number": request.manual_erp_number,
                },
            ),
        )
        return decision

    @decide.validator
    def _validate_decision(self, request: DecisionRequest) -> None:
        assert self._input is not None
        refusal = decision_refusal(self._input, self._decision is not None, request)
        if refusal:
            raise ValueError(refusal)

    @workflow.query(name="state")
    def state(self) -> FinanceExceptionState:
        assert self._input is not None
        return FinanceExceptionState(
            exception_id=workflow.info().workflow_id,
            status=self._status,
            context=self._input.context,
            decision=self._decision,
        )

    def _mark(self, status: str) -> None:
        self._status = status
        workflow.upsert_search_attributes([visibility.PROCESS_STATUS.value_set(status)])


def decision_refusal(
    request_input: FinanceExceptionInput, already_decided: bool, request: DecisionRequest
) -> str | None:
    """Why a decision must be refused, or None: pure, so it is unit-tested directly."""
    context = request_input.context
    if already_decided:
        return "already decided"
    if request.role not in FINANCE_ROLES:
        return f"role {request.role} may not decide finance exceptions"
    threshold = request_input.admin_threshold
    if (
        threshold is not None
        and context.amount is not None
        and context.amount.currency == threshold.currency
        and abs(context.amount.amount) > threshold.amount
        and request.role != "finance_admin"
    ):
        return f"amounts above {threshold} need finance_admin"
    if not request.reason.strip():
        return "a reason is required"
    if request.decision not in context.allowed_decisions:
        allowed = ", ".join(context.allowed_decisions)
        return f"{request.decision} is not possible here (allowed: {allowed})"
    if request.decision == "resolve_manually" and not (request.manual_erp_number or "").strip():
        return "resolve_manually needs the number of the ERP document posted by hand"
    if not request.actor.strip():
        return "the deciding user is unknown"
    return None


async def open_finance_exception(
    context: ExceptionContext, exception_id: str, summary: str
) -> workflow.ChildWorkflowHandle[FinanceExceptionWorkflow, FinanceDecision]:
    """Start an exception as a child of the running workflow, findable by the business ids
    of its context; it outlives its origin (ABANDON). Await the handle for the decision."""
    amount = context.amount
    return await workflow.start_child_workflow(
        FinanceExceptionWorkflow.run,
        FinanceExceptionInput(context=context),
        id=exception_id,
        task_queue=workflow.info().task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        parent_close_policy=ParentClosePolicy.ABANDON,
        search_attributes=visibility.start_attributes(
            PROCESS,
            "open",
            customer_id=context.customer_id,
            correlation_id=context.correlation_id,
            subscription_id=context.subscription_id,
            invoice_id=context.invoice_id,
            case_id=context.case_id,
            amount_minor=amount.to_minor() if amount else None,
        ),
        static_summary=summary,
    )
