"""Case-to-credit: a credit requested on a support ticket, checked, approved, applied in
billing, posted to the ERP and told back to the ticket (`credit/{case_id}/{request_id}`).

Small credits go through; larger ones wait for finance (Update `decide`, validated: finance
role, not the requester, within the approver's limit, not twice), with a reminder after
24 h, escalation after 72 h and expiry after 7 days. If the ERP refuses the credit note for
good after billing applied the credit, the billing credit is reversed (saga) and finance
gets an exception; if billing refuses the credit (e.g. the invoice is already settled),
finance gets an exception with the full context. The workflow waits for finance's decision
and acts on it: `retry` applies and posts again, `compensate` credits the next invoice
instead of the settled one, `resolve_manually` records what finance did by hand, `reject`
tells the ticket the credit is not granted.
"""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.amendments import (
        JournalActivities,
        JournalEntry,
        RecordJournalInput,
    )
    from activities.audit import AuditActivities, AuditRecordInput
    from activities.credits import (
        ActiveSubscriptionInput,
        AppliedCredit,
        ApplyCreditInput,
        BillingCreditActivities,
        CaseOutcomeInput,
        CreditedInput,
        CreditFactsActivities,
        CreditFactsInput,
        CreditJournalActivities,
        FetchCaseInput,
        ReverseCreditInput,
        SupportCaseActivities,
    )
    from adapters import visibility
    from canonical import (
        Decision,
        ExceptionContext,
        FinanceDecision,
        LedgerLine,
        LedgerPosting,
        PostedDocument,
    )
    from canonical.credit import (
        CaseToCreditInput,
        CreditApproval,
        CreditAssessment,
        CreditFacts,
        CreditRequest,
        CreditState,
    )
    from canonical.mapping import SUPPORT_CREDIT_LINE
    from workflows.activity_options import StepFailed, call_system, run_activity
    from workflows.credit_policy import approval_refusal, assess, eligibility_problems
    from workflows.erp_postings import LINKED_ERP_QUEUE, POSTING_PATCHES, ErpPoster
    from workflows.finance_exception import exception_workflow_id, open_finance_exception
    from workflows.patches import Patches

PROCESS = "case_to_credit"
# Runs started since read the credit facts in one activity; older ones replay step by step.
CREDIT_FACTS_ONCE = "credit-facts-once"
# Runs started since decide on the customer's standing as support's entitlements show it.
STANDING_FROM_ENTITLEMENTS = "credit-standing-from-entitlements"
# A new run takes the patches above, the inbox row's and the postings' at its start under
# one release id (workflows/patches.py); a patch made later goes into a new release, first.
CREDIT_PATCHES = frozenset({
    CREDIT_FACTS_ONCE, STANDING_FROM_ENTITLEMENTS, visibility.INBOX_ROW_PATCH, *POSTING_PATCHES,
})  # fmt: skip
CREDIT_RELEASES = {"credit-release-2026-12": CREDIT_PATCHES}
REMIND_AFTER = timedelta(hours=24)
ESCALATE_AFTER = timedelta(hours=72)
EXPIRE_AFTER = timedelta(days=7)


def credit_workflow_id(case_id: str, request_id: str) -> str:
    return f"credit/{case_id}/{request_id}"


@workflow.defn(name="CaseToCredit")
class CaseToCreditWorkflow:
    def __init__(self) -> None:
        self._input: CaseToCreditInput | None = None
        self._patches = Patches(CREDIT_RELEASES)
        self._erp = ErpPoster(self._patches)
        self._status = "checking"
        self._customer_id: str | None = None
        self._assessment: CreditAssessment | None = None
        self._approval: CreditApproval | None = None
        self._applied: AppliedCredit | None = None
        self._erp_number: str | None = None
        self._exception_id: str | None = None
        self._finance_decision: FinanceDecision | None = None

    @workflow.run
    async def run(self, request: CaseToCreditInput) -> CreditState:
        self._patches.begin()
        self._input = request
        credit = request.request
        facts = await self._gather_facts(credit)
        customer_id, subscription = facts.case.customer_id, facts.subscription
        recent = facts.credited_last_90_days
        standing = facts.entitlements if self._patches.patched(STANDING_FROM_ENTITLEMENTS) else None
        problems = eligibility_problems(credit, subscription, customer_id, standing)
        if problems or subscription is None or customer_id is None or recent is None:
            return await self._finish_rejected("; ".join(problems))
        self._assessment = assess(credit, subscription, recent, request.policy, standing)
        # The assessment is what the rest needs: a run waiting days for finance holds no facts.
        del facts, subscription, standing
        if self._assessment.outcome == "reject":
            return await self._finish_rejected("; ".join(self._assessment.reasons))
        if self._assessment.outcome == "needs_approval" and not await self._approved():
            reason = self._approval.reason if self._approval else "no decision within 7 days"
            return await self._finish_rejected(reason)
        if self._assessment.outcome == "auto_approve":
            await self._audit(
                "system", "policy", "credit.auto_approved", "; ".join(self._assessment.reasons)
            )
        return await self._apply_and_post(customer_id)

    async def _gather_facts(self, credit: CreditRequest) -> CreditFacts:
        """What the policy decides on, read in one activity (the API's check reads the same)."""
        if not self._patches.patched(CREDIT_FACTS_ONCE):
            return await self._facts_step_by_step(credit)
        facts = await call_system(
            CreditFactsActivities.gather_credit_facts,
            CreditFactsInput(
                case_id=credit.case_id, currency=credit.amount.currency, as_of=workflow.now()
            ),
        )
        self._note_customer(facts.case.customer_id)
        return facts

    async def _facts_step_by_step(self, credit: CreditRequest) -> CreditFacts:
        """The facts as runs started before credit-facts-once read them (kept for their
        replay): ticket, subscription, then the 90-day total only for an eligible customer."""
        case = await call_system(
            SupportCaseActivities.fetch_support_case, FetchCaseInput(case_id=credit.case_id)
        )
        self._note_customer(case.customer_id)
        if case.customer_id is None:
            return CreditFacts(case=case)
        subscription = await call_system(
            BillingCreditActivities.fetch_active_subscription,
            ActiveSubscriptionInput(customer_id=case.customer_id),
        )
        if eligibility_problems(credit, subscription, case.customer_id):
            return CreditFacts(case=case, subscription=subscription)
        recent = await run_activity(
            CreditJournalActivities.credited_recently,
            CreditedInput(customer_id=case.customer_id, currency=credit.amount.currency),
        )
        return CreditFacts(case=case, subscription=subscription, credited_last_90_days=recent)

    def _note_customer(self, customer_id: str | None) -> None:
        self._customer_id = customer_id
        if customer_id:
            workflow.upsert_search_attributes([visibility.CUSTOMER_ID.value_set(customer_id)])

    # --- approval -----------------------------------------------------------------------

    async def _approved(self) -> bool:
        self._set_status("awaiting_approval", "Waiting for finance to approve the credit")
        if self._patches.patched(visibility.INBOX_ROW_PATCH):
            assert self._input is not None
            # The policy's reasons name amounts; visibility is not encrypted, so the rule only.
            workflow.upsert_search_attributes(
                visibility.credit_row(
                    self._input.request.amount.currency, ["above the auto-approval threshold"]
                )
            )
        for deadline, mark in (
            (REMIND_AFTER, "reminded"),
            (ESCALATE_AFTER, "escalated"),
            (EXPIRE_AFTER, None),
        ):
            elapsed = workflow.now() - workflow.info().start_time
            try:
                await workflow.wait_condition(
                    lambda: self._approval is not None,
                    timeout=max(deadline - elapsed, timedelta(0)),
                )
                break
            except TimeoutError:
                if mark is None:
                    workflow.logger.warning("credit %s expired", workflow.info().workflow_id)
                    return False
                self._set_status(mark, f"Finance approval {mark}: still waiting")
                workflow.logger.warning("credit approval %s: %s", mark, workflow.info().workflow_id)
        return bool(self._approval and self._approval.approve)

    @workflow.update(name="decide")
    async def decide(self, approval: CreditApproval) -> CreditApproval:
        self._approval = approval
        action = "credit.approved" if approval.approve else "credit.rejected"
        await self._audit(approval.approver, approval.role, action, approval.reason)
        return approval

    @decide.validator
    def _validate(self, approval: CreditApproval) -> None:
        assert self._input is not None
        if self._status not in ("awaiting_approval", "reminded", "escalated"):
            raise ValueError(f"nothing to approve: the credit is {self._status}")
        if not approval.reason.strip():
            raise ValueError("a reason is required")
        refusal = approval_refusal(
            self._input.request,
            approval.approver,
            approval.role,
            self._input.policy,
            self._approval is not None,
        )
        if refusal:
            raise ValueError(refusal)

    @workflow.query(name="state")
    def state(self) -> CreditState:
        assert self._input is not None
        return CreditState(
            workflow_id=workflow.info().workflow_id,
            status=self._status,
            request=self._input.request,
            customer_id=self._customer_id,
            assessment=self._assessment,
            approval=self._approval,
            billing_document=self._applied.document_id if self._applied else None,
            erp_number=self._erp_number,
            exception_id=self._exception_id,
            finance_decision=self._finance_decision,
        )

    # --- apply, post, compensate ------------------------------------------------------------

    async def _apply_and_post(self, customer_id: str) -> CreditState:
        """Apply in billing, post to the ERP; on a failure for good, ask finance and act."""
        assert self._input is not None
        credit = self._input.request
        invoice_id = credit.invoice_id
        attempt = 1
        while True:
            failure = await self._attempt(customer_id, invoice_id, attempt)
            if failure is None:
                assert self._applied is not None
                await self._tell_ticket(
                    internal=f"Credit of {credit.amount} applied in billing "
                    f"({self._applied.document_id}) and posted to the ERP as {self._erp_number}.",
                    public=f"We have credited {credit.amount} to your account: {credit.reason}.",
                    tags=["credit_applied"],
                    stage="applied",
                )
                return self._finish(
                    "applied", f"Credit applied; ERP credit note {self._erp_number}"
                )
            step_failed, compensated = failure
            decision = await self._ask_finance(step_failed, compensated, attempt, invoice_id)
            attempt += 1
            if decision.decision == "compensate":
                invoice_id = None  # the invoice is settled: credit the next one instead
            elif decision.decision == "resolve_manually":
                await self._tell_ticket(
                    internal=f"Finance resolved the credit by hand ({decision.actor}: "
                    f"{decision.reason}); ERP document {decision.manual_erp_number}.",
                    public=f"Our finance team has credited {credit.amount} to your account.",
                    tags=["credit_applied", "credit_resolved_manually"],
                    stage="resolved",
                )
                self._erp_number = decision.manual_erp_number
                return self._finish(
                    "resolved_manually", f"Resolved by hand: ERP {decision.manual_erp_number}"
                )
            elif decision.decision == "reject":
                return await self._finish_rejected(f"finance decided: {decision.reason}")

    async def _attempt(
        self, customer_id: str, invoice_id: str | None, attempt: int
    ) -> tuple[StepFailed, bool] | None:
        """One try at billing then ERP: None when both hold the credit; else the failure and
        whether the billing credit was reversed."""
        assert self._input is not None
        credit = self._input.request
        suffix = "" if attempt == 1 else f"/{attempt}"
        self._applied = None  # an earlier attempt's credit was refused or reversed
        self._set_status("applying", "Applying the credit in billing")
        try:
            self._applied = await call_system(
                BillingCreditActivities.apply_billing_credit,
                ApplyCreditInput(
                    customer_id=customer_id,
                    amount=credit.amount,
                    description=f"Support credit, case {credit.case_id}: {credit.reason}",
                    invoice_id=invoice_id,
                    idempotency_key=f"{workflow.info().workflow_id}/apply_billing_credit{suffix}",
                    case_id=credit.case_id,
                ),
            )
        except StepFailed as failure:
            return failure, False
        try:
            posted = await self._post_credit_note(customer_id, self._applied)
        except StepFailed as failure:
            # Saga: the ledger will never hold this credit, so billing must not either.
            await call_system(
                BillingCreditActivities.reverse_billing_credit,
                ReverseCreditInput(
                    customer_id=customer_id,
                    applied=self._applied,
                    amount=credit.amount,
                    idempotency_key=f"{workflow.info().workflow_id}/reverse{suffix}",
                ),
            )
            return failure, True
        self._erp_number = posted.erp_number
        return None

    async def _post_credit_note(self, customer_id: str, applied: AppliedCredit) -> PostedDocument:
        assert self._input is not None
        credit = self._input.request
        posting = LedgerPosting(
            reference=applied.document_id,
            kind="credit_note",
            customer_id=customer_id,
            currency=credit.amount.currency,
            lines=[
                LedgerLine(
                    description=f"Support credit, case {credit.case_id}: {credit.reason}",
                    quantity=Decimal(1),
                    unit_price=credit.amount.amount,
                    # Booked on finance's [support_credits] entry of the mapping.
                    product_id=SUPPORT_CREDIT_LINE,
                )
            ],
            total=credit.amount,
            billing_date=workflow.now().date(),
            description=f"Support credit {applied.document_id}, case {credit.case_id}",
            # Billing's credit note takes it off the invoice: in the ERP it settles it too.
            applies_to=credit.invoice_id if applied.kind == "credit_note" else None,
        )
        self._set_status("posting", f"Posting credit note {applied.document_id} to the ERP")
        route = await self._erp.document_route(posting)
        if route is not None and route.book_queue != LINKED_ERP_QUEUE:
            await self._erp.ensure_party(route.book_queue, customer_id)
        posted = await self._erp.post_document(route, posting)
        await run_activity(
            JournalActivities.record_journal_entry,
            RecordJournalInput(
                entry=JournalEntry(
                    reference=posting.reference,
                    document_type="credit_note",
                    customer_id=customer_id,
                    erp_document_id=posted.erp_document_id,
                    erp_number=posted.erp_number,
                    amount=credit.amount.amount,
                    currency=credit.amount.currency,
                    workflow_id=workflow.info().workflow_id,
                    erp=route.book if route else None,
                    entity=route.entity if route else None,
                ),
                correlation_id=workflow.info().workflow_id,
            ),
        )
        await self._erp.shadow_document(route, posting)
        return posted

    async def _ask_finance(
        self, failure: StepFailed, compensated: bool, attempt: int, invoice_id: str | None
    ) -> FinanceDecision:
        """Open a finance exception with the full context and wait for its decision."""
        assert self._input is not None
        credit = self._input.request
        info = workflow.info()
        self._exception_id = exception_workflow_id(info.workflow_id, attempt)
        effects: dict[Decision, str] = {
            "retry": "apply the credit in billing and post it to the ERP again"
        }
        if invoice_id and not compensated:
            effects["compensate"] = f"credit the next invoice instead of {invoice_id}"
        effects["resolve_manually"] = "finance applied and posted it by hand (give the ERP number)"
        effects["reject"] = "the credit is not granted; the ticket is told why"
        context = ExceptionContext(
            process=PROCESS,
            origin_workflow_id=info.workflow_id,
            origin_run_id=info.run_id,
            step=failure.step,
            customer_id=self._customer_id,
            invoice_id=invoice_id,
            case_id=credit.case_id,
            amount=credit.amount,
            error_type=failure.error_type,
            error_message=failure.message + (" (billing credit reversed)" if compensated else ""),
            remote_answer=failure.details,
            payload=credit.model_dump(mode="json"),
            correlation_id=info.workflow_id,
            allowed_decisions=list(effects),
            decision_effects=effects,
        )
        self._set_status(
            "blocked", f"Waiting for finance exception {self._exception_id}: {failure.message}"
        )
        await self._tell_ticket(
            internal=f"Credit of {credit.amount} could not be applied ({failure.error_type}: "
            f"{failure.message}); finance exception {self._exception_id} opened.",
            public="Your credit request needs a review by our finance team; we will be in touch.",
            tags=["credit_exception"],
            stage=f"exception/{attempt}",
        )
        decision = await (
            await open_finance_exception(
                context,
                self._exception_id,
                f"Finance exception: {PROCESS} {failure.step}, case {credit.case_id}",
            )
        )
        self._finance_decision = decision
        workflow.logger.info("finance decided %s for %s", decision.decision, self._exception_id)
        return decision

    async def _finish_rejected(self, reason: str) -> CreditState:
        assert self._input is not None
        await self._tell_ticket(
            internal=f"Credit of {self._input.request.amount} not granted: {reason}",
            public="We have reviewed your credit request and cannot grant it: " + reason,
            tags=["credit_rejected"],
            stage="rejected",
        )
        return self._finish("rejected", f"Rejected: {reason}")

    # --- helpers ------------------------------------------------------------------------

    async def _tell_ticket(self, internal: str, public: str, tags: list[str], stage: str) -> None:
        assert self._input is not None
        await call_system(
            SupportCaseActivities.write_case_outcome,
            CaseOutcomeInput(
                case_id=self._input.request.case_id,
                internal_note=internal,
                public_reply=public,
                tags=tags,
                idempotency_key=f"{workflow.info().workflow_id}/outcome/{stage}",
            ),
        )

    async def _audit(self, actor: str, role: str, action: str, reason: str) -> None:
        assert self._input is not None
        credit = self._input.request
        await run_activity(
            AuditActivities.append_audit,
            AuditRecordInput(
                actor=actor,
                role=role,
                action=action,
                subject=workflow.info().workflow_id,
                reason=reason,
                amount=credit.amount.amount,
                currency=credit.amount.currency,
                correlation_id=workflow.info().workflow_id,
                details={"case_id": credit.case_id, "requested_by": credit.requested_by},
            ),
        )

    def _finish(self, status: str, details: str) -> CreditState:
        self._set_status(status, details)
        return self.state()

    def _set_status(self, status: str, details: str) -> None:
        self._status = status
        workflow.upsert_search_attributes([visibility.PROCESS_STATUS.value_set(status)])
        workflow.set_current_details(details)
