"""Amendment-to-ERP: one long-lived workflow per subscription posts its billing documents.

Workflow id `subscription/{id}` (documents without a subscription: `customer-ledger/{id}`).
Billing webhooks arrive by signal-with-start, duplicated and out of order; the workflow
drops events it has seen, waits a moment for stragglers, processes the earliest first and
refetches the document from billing, so it always posts what billing holds now. Each
posting is idempotent by reference (journal first, then the ERP's own lookup), so a retry
after a lost answer or a killed worker never makes a second document. A failure that no
retry cures opens a finance exception and holds the later events until finance decides.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel
from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.accounts import (
        BillingAccountActivities,
        EnsurePartyInput,
        ErpAccountActivities,
        FetchCustomerInput,
        RecordAccountLinksInput,
        StoreAccountActivities,
    )
    from activities.amendments import (
        AccountLinksInput,
        BillingDocumentActivities,
        EarlierInvoicesInput,
        ErpPostingActivities,
        FetchDocumentInput,
        FetchSubscriptionInput,
        JournalActivities,
        JournalEntry,
        JournalLookupInput,
        PostDocumentInput,
        RecordJournalInput,
    )
    from adapters import visibility
    from canonical import (
        BillingDocument,
        Decision,
        ExceptionContext,
        FinanceDecision,
        LedgerPosting,
        Money,
        Subscription,
    )
    from canonical.ledger import (
        BILLING_EVENT_SIGNAL,
        LEDGER_PROCESS,
        LEDGER_WORKFLOW,
        BillingEventRef,
        SubscriptionLedgerInput,
        required_postings,
    )
    from workflows.activity_options import StepFailed, call_system, run_activity
    from workflows.finance_exception import exception_workflow_id, open_finance_exception
    from workflows.policy import check_postable

PROCESS = LEDGER_PROCESS
# Stripe delivers out of order within seconds; waiting this long after the first event of a
# burst lets the earlier ones arrive, so documents reach the ERP in billing order.
REORDER_WINDOW = timedelta(seconds=2)
IDLE_BEFORE_FRESH_HISTORY = timedelta(days=7)
SEEN_LIMIT = 1000
DECISIONS_FOR_POSTING: list[Decision] = ["retry", "resolve_manually", "reject"]


class LedgerStatus(BaseModel):
    workflow_id: str
    status: str
    pending_events: int
    processed_events: int
    blocked_by: str | None
    last_posted: list[str]


@workflow.defn(name=LEDGER_WORKFLOW)
class SubscriptionLedgerWorkflow:
    def __init__(self) -> None:
        self._pending: list[BillingEventRef] = []
        self._seen: list[str] = []
        self._processed = 0
        self._exceptions_opened = 0
        self._status = "waiting"
        self._blocked_by: str | None = None
        self._last_posted: list[str] = []
        self._erp_customers: set[str] = set()
        self._subscription_canceled = False
        # Documents finished with: paid or voided and posted, or decided by finance.
        self._settled: list[str] = []
        self._current_document: str | None = None
        self._current_kind = "invoice"
        self._current_amount: Money | None = None
        self._input: SubscriptionLedgerInput | None = None

    @workflow.run
    async def run(self, request: SubscriptionLedgerInput) -> None:
        self._input = request
        self._exceptions_opened = request.exceptions_opened
        self._seen = list(request.seen_event_ids)
        self._settled = list(request.settled_documents)
        for event in request.pending:
            self._enqueue(event)
        while True:
            self._set_status("waiting", "Waiting for billing events")
            try:
                await workflow.wait_condition(
                    lambda: bool(self._pending), timeout=IDLE_BEFORE_FRESH_HISTORY
                )
            except TimeoutError:
                if self._subscription_canceled:
                    self._set_status("closed", "Subscription canceled; nothing left to post")
                    return
                break
            await workflow.sleep(REORDER_WINDOW)
            while self._pending:
                self._pending.sort(key=BillingEventRef.billing_order)
                event = self._pending.pop(0)
                await self._process(event)
                self._processed += 1
            if self._processed >= request.continue_as_new_after or (
                workflow.info().is_continue_as_new_suggested()
            ):
                break
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(
            request.model_copy(
                update={
                    "pending": self._pending,
                    "seen_event_ids": self._seen[-SEEN_LIMIT:],
                    "settled_documents": self._settled[-SEEN_LIMIT:],
                    "exceptions_opened": self._exceptions_opened,
                }
            )
        )

    @workflow.signal(name=BILLING_EVENT_SIGNAL)
    def billing_event(self, event: BillingEventRef) -> None:
        self._enqueue(event)

    @workflow.query(name="status")
    def status(self) -> LedgerStatus:
        return LedgerStatus(
            workflow_id=workflow.info().workflow_id,
            status=self._status,
            pending_events=len(self._pending),
            processed_events=self._processed,
            blocked_by=self._blocked_by,
            last_posted=self._last_posted[-20:],
        )

    def _enqueue(self, event: BillingEventRef) -> None:
        if event.event_id in self._seen:
            workflow.logger.info("duplicate billing event %s dropped", event.event_id)
            return
        self._seen = [*self._seen, event.event_id][-SEEN_LIMIT:]
        self._pending.append(event)

    # --- one event ----------------------------------------------------------------------

    async def _process(self, event: BillingEventRef) -> None:
        """Apply an event; on a failure that needs a human, hold everything behind it."""
        while True:
            try:
                await self._apply(event)
                return
            except StepFailed as failure:
                decision = await self._await_finance(event, failure)
            if decision.decision == "retry":
                continue
            failed_document = self._current_document
            if decision.decision == "resolve_manually" and failed_document:
                await self._journal_manual(failed_document, event, decision)
            # reject: finance decided it is not to be posted; the audit trail says so. Either
            # way the document is done with, also when a later invoice looks back at it.
            if failed_document:
                self._settle(failed_document)
            return

    async def _apply(self, event: BillingEventRef) -> None:
        # What a failure is about, until a more precise document takes over below.
        self._current_document = event.object_id if event.object_kind != "subscription" else None
        self._current_kind = "credit_note" if event.object_kind == "credit_note" else "invoice"
        self._current_amount = None
        if event.object_kind == "subscription":
            subscription = await self._fetch_subscription(event.object_id)
            self._subscription_canceled = subscription.status == "canceled"
            return
        self._set_status("posting", f"Posting {event.object_kind} {event.object_id}")
        document = await self._fetch_document(event.object_kind, event.object_id)
        if (
            document.kind == "invoice"
            and document.subscription_id
            and document.billing_reason != "subscription_create"  # nothing comes before it
        ):
            # Webhooks may arrive minutes apart in any order: post what came before first.
            for earlier_id in await self._earlier_invoices(document):
                await self._apply_document(await self._fetch_document("invoice", earlier_id), event)
        await self._apply_document(document, event)

    async def _apply_document(self, document: BillingDocument, event: BillingEventRef) -> None:
        if document.document_id in self._settled:
            return
        self._current_document = document.document_id
        self._current_kind = document.kind
        self._current_amount = document.total
        workflow.upsert_search_attributes(
            [visibility.INVOICE_ID.value_set(document.invoice_id or document.document_id)]
        )
        assert self._input is not None
        violations = check_postable(document, self._input.supported_currencies)
        if violations:
            raise StepFailed(
                "check_policy",
                "PolicyViolation",
                "; ".join(f"{v.code}: {v.message}" for v in violations),
                [v.model_dump() for v in violations],
            )
        for posting in required_postings(document):
            if await self._journaled(posting.reference) is None:
                await self._post(posting, event)
        if document.kind == "invoice" and document.status in ("paid", "void"):
            # Billing can do nothing more to a paid or voided invoice that reaches the ledger.
            self._settle(document.document_id)

    def _settle(self, document_id: str) -> None:
        self._settled = [*self._settled, document_id][-SEEN_LIMIT:]

    async def _post(self, posting: LedgerPosting, event: BillingEventRef) -> None:
        await self._ensure_customer_in_erp(posting.customer_id)
        # post_ledger_document checks that today's ERP period is open before it writes.
        posted = await call_system(
            ErpPostingActivities.post_ledger_document, PostDocumentInput(posting=posting)
        )
        await self._journal(posting, posted.erp_document_id, posted.erp_number, event)
        self._last_posted = [*self._last_posted, f"{posting.reference}={posted.erp_number}"][-20:]
        workflow.logger.info(
            "posted %s as ERP %s %s", posting.reference, posting.kind, posted.erp_number
        )

    # --- steps --------------------------------------------------------------------------

    async def _fetch_document(self, object_kind: str, document_id: str) -> BillingDocument:
        kind: Literal["invoice", "credit_note"] = (
            "credit_note" if object_kind == "credit_note" else "invoice"
        )
        return await call_system(
            BillingDocumentActivities.fetch_billing_document,
            FetchDocumentInput(kind=kind, document_id=document_id),
        )

    async def _earlier_invoices(self, document: BillingDocument) -> list[str]:
        assert document.subscription_id is not None
        earlier = await call_system(
            BillingDocumentActivities.earlier_invoice_ids,
            EarlierInvoicesInput(
                subscription_id=document.subscription_id, invoice_id=document.document_id
            ),
        )
        return [doc_id for doc_id in earlier if doc_id not in self._settled]

    async def _fetch_subscription(self, subscription_id: str) -> Subscription:
        return await call_system(
            BillingDocumentActivities.fetch_subscription,
            FetchSubscriptionInput(subscription_id=subscription_id),
        )

    async def _journaled(self, reference: str) -> JournalEntry | None:
        return await run_activity(
            JournalActivities.find_journal_entry, JournalLookupInput(reference=reference)
        )

    async def _ensure_customer_in_erp(self, customer_id: str) -> None:
        """Enrichment: the ERP party must exist before a document can name it."""
        if customer_id in self._erp_customers:
            return
        links = await run_activity(
            JournalActivities.account_links, AccountLinksInput(customer_id=customer_id)
        )
        if not any(link.system == "erp" for link in links):
            customer = await call_system(
                BillingAccountActivities.fetch_billing_customer,
                FetchCustomerInput(customer_id=customer_id),
            )
            party = await call_system(
                ErpAccountActivities.ensure_erp_party, EnsurePartyInput(customer=customer)
            )
            await run_activity(
                StoreAccountActivities.record_account_links,
                RecordAccountLinksInput(
                    customer_id=customer_id,
                    records=[party],
                    workflow_id=workflow.info().workflow_id,
                ),
            )
        self._erp_customers.add(customer_id)

    # --- finance ------------------------------------------------------------------------

    async def _await_finance(self, event: BillingEventRef, failure: StepFailed) -> FinanceDecision:
        assert self._input is not None
        self._exceptions_opened += 1
        info = workflow.info()
        exception_id = exception_workflow_id(info.workflow_id, self._exceptions_opened)
        self._blocked_by = exception_id
        self._set_status(
            "blocked",
            f"Blocked by finance exception {exception_id}: {failure.step} failed for "
            f"{self._current_document or event.object_id} ({failure.error_type}). "
            f"{len(self._pending)} later event(s) held.",
        )
        context = ExceptionContext(
            process=PROCESS,
            origin_workflow_id=info.workflow_id,
            origin_run_id=info.run_id,
            step=failure.step,
            customer_id=event.customer_id,
            subscription_id=self._input.subscription_id,
            invoice_id=self._current_document,
            amount=self._current_amount,
            error_type=failure.error_type,
            error_message=failure.message,
            remote_answer=failure.details,
            payload=event.model_dump(),
            correlation_id=event.correlation_id,
            allowed_decisions=DECISIONS_FOR_POSTING,
        )
        decision = await (
            await open_finance_exception(
                context,
                exception_id,
                f"Finance exception: {PROCESS} {failure.step} for {event.object_id}",
            )
        )
        self._blocked_by = None
        workflow.logger.info("finance decided %s for %s", decision.decision, exception_id)
        return decision

    async def _journal_manual(
        self, document_id: str, event: BillingEventRef, decision: FinanceDecision
    ) -> None:
        """Finance posted it by hand: journal that, so reconciliation and retries know."""
        document = await self._fetch_document(self._current_kind, document_id)
        for posting in required_postings(document):
            if await self._journaled(posting.reference) is None:
                number = decision.manual_erp_number
                await self._journal(posting, f"manual:{number}", number, event)

    async def _journal(
        self,
        posting: LedgerPosting,
        erp_document_id: str,
        erp_number: str | None,
        event: BillingEventRef,
    ) -> None:
        await run_activity(
            JournalActivities.record_journal_entry,
            RecordJournalInput(
                entry=JournalEntry(
                    reference=posting.reference,
                    document_type=posting.kind,
                    customer_id=posting.customer_id,
                    erp_document_id=erp_document_id,
                    erp_number=erp_number,
                    amount=posting.total.amount,
                    currency=posting.total.currency,
                    workflow_id=workflow.info().workflow_id,
                ),
                correlation_id=event.correlation_id,
            ),
        )

    def _set_status(self, status: str, details: str) -> None:
        if status != self._status:
            self._status = status
            workflow.upsert_search_attributes([visibility.PROCESS_STATUS.value_set(status)])
        workflow.set_current_details(details)
