"""Amendment-to-ERP: one long-lived workflow per subscription posts its billing documents.

Workflow id `subscription/{id}` (documents without a subscription: `customer-ledger/{id}`).
Billing webhooks arrive by signal-with-start, duplicated and out of order; the workflow
drops events it has seen, waits a moment for stragglers, processes the earliest first and
refetches the document from billing, so it always posts what billing holds now. Each
posting is idempotent by reference (journal first, then the ERP's own lookup), so a retry
after a lost answer or a killed worker never makes a second document. A failure that no
retry cures opens a finance exception and holds the later events until finance decides.

Money that moved travels the same way. After an invoice's own postings the workflow reads
the invoice's payments from billing and posts each paid one it has not journaled, so a
payment never reaches the ERP before its invoice; an invoice is settled only once it is
paid and its payments are in the ERP. A charge's refunds (the customer's ledger gets them)
wait, bounded, for the payment they give back to be journaled, then post the payment out
against billing's credit note or, when none made the refund, against a refund credit note
posted first (billing is read once more just before: a credit note may have named the refund
meanwhile). A credit note naming a refund whose own credit note is already in the ERP
reverses that one (billing's credit note posted first, the reversal after), so the customer
is credited once; a credit note naming a refund finance rejected is finance's; a refund a
credit note names only in part is paid out on it for that part and through its own credit
note for the rest. What a credit note gives back out of band is paid out on it. A refund
billing still holds `pending` (or `requires_action`) is posted once it has succeeded: Stripe
tells that by `charge.refund.updated`, whose Refund names no customer and so reaches no
ledger, so the customer's ledger remembers the charge and reads it again on a durable timer,
backing off, until the refund succeeded, failed or was canceled (then nothing is posted), or
stayed pending past what Stripe allows (finance is asked). Every ERP posting maps through
finance's mapping in the ERP activity, which alone says which currencies are booked.

What finance decides is journaled, so that no later look (a retry, reconciliation's healing,
a refund waiting for the payment it gives back) posts it again: `resolve_manually` under the
ERP number finance gives, `reject` under the exception's id and no ERP number. A refund of a
payment finance rejected is not paid out on nothing: it is finance's too. A rejected document
closes with its money: its paid payments (a credit note: its out-of-band payout) are journaled
rejected under the same exception, then and whenever the document is looked at again. A credit
note finance posted by hand still pays out what it gave back out of band: that is billing's
money, not the document finance posted.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Literal

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
        FetchDocumentInput,
        FetchSubscriptionInput,
        JournalActivities,
        JournalEntry,
        JournalLookupInput,
        RecordJournalInput,
    )
    from activities.payments import (
        BillingPaymentActivities,
        ChargeRefundsInput,
        InvoicePaymentsInput,
    )
    from adapters import visibility
    from canonical import (
        BillingDocument,
        Decision,
        ExceptionContext,
        FinanceDecision,
        LedgerPosting,
        LinkedRefund,
        Money,
        Payment,
        PaymentPosting,
        Refund,
        Subscription,
    )
    from canonical.erp_routing import PostingRoute
    from canonical.ledger import (
        BILLING_EVENT_SIGNAL,
        HEAL_EVENT_PREFIX,
        LEDGER_PROCESS,
        LEDGER_WORKFLOW,
        MANUAL_POSTING_PREFIX,
        PAYOUT_SUFFIX,
        REFRESH_SIGNAL,
        REFUND_CHECK_EVENT_PREFIX,
        REJECTED_POSTING_PREFIX,
        BillingEventRef,
        LedgerStatus,
        PendingRefundWatch,
        SubscriptionLedgerInput,
        document_ledger_id,
        ledger_workflow_id,
        linked_part,
        linked_payout_reference,
        linked_refund_payout,
        out_of_band_payout,
        payment_postings,
        refund_credit_note,
        refund_credit_reversal,
        refund_payout,
        refund_references,
        required_postings,
    )
    from workflows.activity_options import StepFailed, call_system, run_activity
    from workflows.erp_postings import LINKED_ERP_QUEUE, POSTING_PATCHES, ErpPoster
    from workflows.finance_exception import exception_workflow_id, open_finance_exception
    from workflows.patches import Patches
    from workflows.policy import PolicyViolation, check_payments, check_postable, check_refund

PROCESS = LEDGER_PROCESS
# Stripe delivers out of order within seconds; waiting this long after the first event of a
# burst lets the earlier ones arrive, so documents reach the ERP in billing order.
REORDER_WINDOW = timedelta(seconds=2)
IDLE_BEFORE_FRESH_HISTORY = timedelta(days=7)
SEEN_LIMIT = 1000
DECISIONS_FOR_POSTING: list[Decision] = ["retry", "resolve_manually", "reject"]
DECISION_EFFECTS: dict[Decision, str] = {
    "retry": "read billing again and post what is still missing, on finance's mapping as it "
    "is then",
    "resolve_manually": "finance posted it in the ERP by hand: it is journaled under the ERP "
    "number given, and the ledger goes on",
    "reject": "it is not posted; the audit trail says so, the journal holds it as rejected "
    "under this exception (so no retry, reconciliation or refund posts it later), and the "
    "ledger goes on",
}
# Runs started since post payments and settle an invoice only once they are in the ERP; runs
# recorded before settle a paid invoice at once (they replay unchanged).
PAYMENTS_PATCH = "ledger-payments"
# Runs since post a refund's predecessors that their own ledger holds instead of waiting.
OWN_PREDECESSORS_PATCH = "refund-own-predecessors"
# Runs since go on with the rest of an event once finance decided on one part of it.
GO_ON_AFTER_DECISION_PATCH = "go-on-after-decision"
# Runs since read a charge again while billing holds one of its refunds pending.
PENDING_REFUNDS_PATCH = "pending-refunds-read-again"
# Runs since journal what finance rejected (under the exception's id) so nothing posts it later.
JOURNAL_REJECTED_PATCH = "journal-rejected"
# Runs since credit a refund once when billing names it in a credit note made later: the
# credit note reverses the refund's own credit note, and a refund reads billing again just
# before it posts its own credit note.
LINKED_REFUNDS_PATCH = "credit-note-linked-refunds"
# Runs since pay out on a credit note what it gives back outside billing.
OUT_OF_BAND_PATCH = "credit-note-out-of-band"
# Runs since keep the books equal around linked refunds: billing's credit note posts before the
# reversal of a refund's own credit note (the reversal is then what a failure is about), a
# credit note naming a refund finance rejected is finance's, and a refund a credit note names
# only in part is paid out on it for that part and through its own credit note for the rest.
LINKED_REFUNDS_BOOKED_PATCH = "linked-refunds-books-equal"
# Runs since leave the currencies to finance's mapping (the ERP activity refuses what it does
# not map); runs before checked the ledger's own list, frozen at its start.
MAPPING_CURRENCIES_PATCH = "mapping-currencies"
# Runs since keep the events carried over continue-as-new; runs before dropped them as seen.
CARRY_PENDING_PATCH = "carry-pending-events"
# Runs since close the whole of a document finance rejected: its money (an invoice's paid
# payments, a credit note's out-of-band payout) is journaled rejected under the same exception,
# at the decision and whenever the document is looked at again, and nothing is posted on it.
REJECTED_CLOSES_PATCH = "rejected-document-closes-its-money"
# Runs since still pay out what a credit note gives back out of band once finance posted the
# credit note itself by hand (`resolve_manually`): that money is billing's, not finance's.
MANUAL_OUT_OF_BAND_PATCH = "manual-credit-note-pays-out-of-band"
# Runs since count the pending limit from each refund's own start and report every refund
# past it; runs before counted from the charge's first pending refund and reported one.
PENDING_PER_REFUND_PATCH = "pending-since-per-refund"
# Runs since tell the journal billing's event time, for the billing-to-ERP latency metric.
JOURNAL_EVENT_TIME_PATCH = "journal-billing-event-time"
# Runs since process an event's document once for every event about it that waited with it:
# the document is read from billing after they all arrived, so it holds what each told.
COALESCE_PATCH = "coalesce-events-of-one-document"
# A new run takes every patch above, and the postings' (workflows/erp_postings.py), at its
# start under one id (workflows/patches.py), the newest release first.
LEDGER_PATCHES = frozenset({
    PAYMENTS_PATCH, OWN_PREDECESSORS_PATCH, GO_ON_AFTER_DECISION_PATCH, PENDING_REFUNDS_PATCH,
    JOURNAL_REJECTED_PATCH, LINKED_REFUNDS_PATCH, OUT_OF_BAND_PATCH, LINKED_REFUNDS_BOOKED_PATCH,
    MAPPING_CURRENCIES_PATCH, CARRY_PENDING_PATCH, REJECTED_CLOSES_PATCH,
    MANUAL_OUT_OF_BAND_PATCH, PENDING_PER_REFUND_PATCH, JOURNAL_EVENT_TIME_PATCH, *POSTING_PATCHES,
})  # fmt: skip
LEDGER_RELEASES = {
    "ledger-release-2026-12-coalesce": LEDGER_PATCHES | {COALESCE_PATCH},
    "ledger-release-2026-12": LEDGER_PATCHES,
}
# A reversal of a refund's own credit note is no billing document to read again: like money,
# what finance decides on it journals `_manual_journal`.
REVERSAL_KIND = "refund_credit_reversal"
MONEY_KINDS = ("payment", "refund", REVERSAL_KIND)
# Refund states that may still become `succeeded` (then posted) or `failed`/`canceled`.
REFUND_STILL_OPEN = ("pending", "requires_action")
REFUND_LOOK_FIRST = timedelta(minutes=10)
REFUND_LOOK_LONGEST = timedelta(days=1)
# Stripe fails a refund still pending after 45 days: one still pending a day later is finance's.
REFUND_PENDING_LIMIT = timedelta(days=46)
# A refund waits this long, checking with backoff, for the payment (or billing credit note)
# it gives back to reach the ERP through its own ledger; then finance is asked.
POSTING_WAIT_LIMIT = timedelta(hours=1)
POSTING_WAIT_FIRST = timedelta(seconds=30)
POSTING_WAIT_LONGEST = timedelta(minutes=10)


def _internal(event: BillingEventRef) -> bool:
    """Reconciliation's heal, or the ledger's own look at a pending refund: no billing event."""
    return event.event_id.startswith((HEAL_EVENT_PREFIX, REFUND_CHECK_EVENT_PREFIX))


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
        self._patches = Patches(LEDGER_RELEASES)
        self._erp = ErpPoster(self._patches)
        self._subscription_canceled = False
        # Documents finished with: paid or voided and posted, or decided by finance.
        self._settled: list[str] = []
        self._current_document: str | None = None
        self._current_kind = "invoice"
        self._current_amount: Money | None = None
        # Payments and refunds: the invoice they settle, what finance sees of them, and what
        # `resolve_manually` journals: (reference, document type, customer, amount).
        self._current_invoice: str | None = None
        self._current_details: dict[str, Any] = {}
        self._manual_journal: list[tuple[str, str, str, Money]] = []
        # Documents finance's decision covers besides the current one (refunds pending too long).
        self._decided_with: list[str] = []
        self._input: SubscriptionLedgerInput | None = None
        self._refresh_requested = False
        # Charges whose refunds billing holds pending, by charge id.
        self._refund_watches: dict[str, PendingRefundWatch] = {}
        self._refunds_not_posted: list[str] = []

    @workflow.run
    async def run(self, request: SubscriptionLedgerInput) -> None:
        self._patches.begin()
        self._input = request
        self._exceptions_opened = request.exceptions_opened
        self._seen = list(request.seen_event_ids)
        self._settled = list(request.settled_documents)
        self._refund_watches = {w.charge_id: w for w in request.pending_refunds}
        self._subscription_canceled = request.subscription_canceled
        if request.pending and self._patches.patched(CARRY_PENDING_PATCH):
            # Seen already (their ids are among seen_event_ids): carried, not enqueued anew.
            self._pending = list(request.pending)
        else:
            for event in request.pending:
                self._enqueue(event)
        while True:
            self._look_again_at_pending_refunds()
            self._set_status("waiting", "Waiting for billing events" + self._pending_refunds_told())
            try:
                await workflow.wait_condition(
                    lambda: bool(self._pending) or self._refresh_requested,
                    timeout=self._idle_limit(),
                )
            except TimeoutError:
                if self._refund_watches:
                    continue  # a look at a pending refund is due
                if self._subscription_canceled:
                    self._set_status("closed", "Subscription canceled; nothing left to post")
                    return
                break
            if self._pending:
                await workflow.sleep(REORDER_WINDOW)
            while self._pending:
                self._pending.sort(key=BillingEventRef.billing_order)
                event = self._pending.pop(0)
                covered = self._events_of_the_same_document(event)
                await self._process(event)
                self._processed += 1 + covered
            if (
                self._refresh_requested
                or self._processed >= request.continue_as_new_after
                or workflow.info().is_continue_as_new_suggested()
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
                    "pending_refunds": list(self._refund_watches.values()),
                    "subscription_canceled": self._subscription_canceled,
                }
            )
        )

    @workflow.signal(name=BILLING_EVENT_SIGNAL)
    def billing_event(self, event: BillingEventRef) -> None:
        self._enqueue(event)

    @workflow.signal(name=REFRESH_SIGNAL)
    def refresh(self) -> None:
        """Continue as new once the events at hand are done (see REFRESH_SIGNAL). Runs
        recorded before this signal existed never received it, so they replay unchanged."""
        self._refresh_requested = True

    @workflow.query(name="status")
    def status(self) -> LedgerStatus:
        return LedgerStatus(
            workflow_id=workflow.info().workflow_id,
            status=self._status,
            pending_events=len(self._pending),
            processed_events=self._processed,
            blocked_by=self._blocked_by,
            last_posted=self._last_posted[-20:],
            pending_refunds=[
                f"{refund_id} (charge {w.charge_id}, next look {w.next_look.isoformat()})"
                for w in self._refund_watches.values()
                for refund_id in w.refund_ids
            ],
            refunds_not_posted=self._refunds_not_posted[-20:],
        )

    def _events_of_the_same_document(self, event: BillingEventRef) -> int:
        """Drops the billing events waiting about `event`'s document (or subscription, or
        charge): `event` reads it from billing after they all arrived, so what they told is
        in what it posts (Stripe sends an invoice's finalized, paid and payment_succeeded
        within a second). Reconciliation's heals and the ledger's own looks are kept."""
        if _internal(event) or not self._patches.patched(COALESCE_PATCH):
            return 0
        kept: list[BillingEventRef] = []
        same: list[BillingEventRef] = []
        for waiting in self._pending:
            about = (waiting.object_kind, waiting.object_id) == (event.object_kind, event.object_id)
            (same if about and not _internal(waiting) else kept).append(waiting)
        if same:
            self._pending = kept
            workflow.logger.info("%d more events about %s %s covered by %s", len(same),
                                 event.object_kind, event.object_id, event.event_id)  # fmt: skip
        return len(same)

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
            if decision.decision == "resolve_manually" and self._current_kind in MONEY_KINDS:
                await self._journal_money_manually(event, decision)
            elif decision.decision == "resolve_manually" and failed_document:
                await self._journal_manual(failed_document, event, decision)
            elif decision.decision == "reject" and self._patches.patched(JOURNAL_REJECTED_PATCH):
                await self._journal_rejected(failed_document, event)
            # reject: finance decided it is not to be posted; the audit trail says so (and,
            # since JOURNAL_REJECTED_PATCH, the journal). Either way the document is done
            # with, also when a later invoice looks back at it.
            if failed_document:
                self._settle(failed_document)
                for also_decided in self._decided_with:
                    self._settle(also_decided)
                if self._patches.patched(GO_ON_AFTER_DECISION_PATCH):
                    # The rest the event brings (the invoice after an earlier one, the other
                    # payments of an invoice, other refunds) is still to be posted.
                    continue
            return

    async def _apply(self, event: BillingEventRef) -> None:
        # What a failure is about, until a more precise document takes over below.
        self._current_document = event.object_id if event.object_kind != "subscription" else None
        self._current_kind = "credit_note" if event.object_kind == "credit_note" else "invoice"
        self._current_amount = None
        self._current_invoice = None
        self._current_details = {}
        self._manual_journal = []
        self._decided_with = []
        if event.object_kind == "charge":
            self._current_kind = "refund"
            self._set_status("posting", f"Posting the refunds of charge {event.object_id}")
            await self._apply_refunds(event)
            return
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
        settled = document.document_id in self._settled
        if (settled or self._healing(event)) and await self._closed_by_finance(document, event):
            return
        if settled and not self._healing(event):
            return
        self._current_document = document.document_id
        self._current_kind = document.kind
        self._current_amount = document.total
        workflow.upsert_search_attributes(
            [visibility.INVOICE_ID.value_set(document.invoice_id or document.document_id)]
        )
        assert self._input is not None
        currencies = (
            None
            if self._patches.patched(MAPPING_CURRENCIES_PATCH)
            else self._input.supported_currencies
        )
        violations = check_postable(document, currencies)
        if violations:
            raise StepFailed(
                "check_policy",
                "PolicyViolation",
                "; ".join(f"{v.code}: {v.message}" for v in violations),
                [v.model_dump() for v in violations],
            )
        postings = required_postings(document)
        live_credit_note = document.kind == "credit_note" and document.status != "void"
        if live_credit_note and postings and self._patches.patched(LINKED_REFUNDS_PATCH):
            if self._patches.patched(LINKED_REFUNDS_BOOKED_PATCH):
                await self._post_credit_note_naming_refunds(document, postings, event)
                postings = []
            else:
                postings = await self._reversing_refund_credits(document, postings)
        for posting in postings:
            if await self._journaled(posting.reference) is None:
                await self._post(posting, event)
        if document.kind != "invoice":
            if live_credit_note and self._patches.patched(OUT_OF_BAND_PATCH):
                await self._pay_out_of_band(document, event)
            return
        # Billing can do nothing more to a voided invoice, nor to a paid one once its
        # payments are in the ERP.
        if document.status == "void":
            self._settle(document.document_id)
        elif self._patches.patched(PAYMENTS_PATCH):
            if await self._post_payments(document, event) and document.status == "paid":
                self._settle(document.document_id)
        elif document.status == "paid":
            self._settle(document.document_id)

    async def _closed_by_finance(self, document: BillingDocument, event: BillingEventRef) -> bool:
        """A document finance decided on, looked at again (a heal, a later payment event):
        rejected, its money is journaled rejected too and nothing is posted (True); posted by
        hand, a credit note's out-of-band payout still goes out (False: the rest goes on)."""
        rejects = self._patches.patched(REJECTED_CLOSES_PATCH)
        pays_out = document.kind == "credit_note" and self._patches.patched(
            MANUAL_OUT_OF_BAND_PATCH
        )
        if not required_postings(document) or not (rejects or pays_out):
            return False
        entry = await self._journaled(document.document_id)
        if entry is None:
            return False
        if rejects and entry.erp_document_id.startswith(REJECTED_POSTING_PREFIX):
            self._current_document, self._current_kind = document.document_id, document.kind
            for reference, document_type, customer_id, amount in await self._money_of(document):
                if await self._journaled(reference) is None:
                    await self._journal_entry(
                        reference, document_type, customer_id, amount,
                        entry.erp_document_id, None, event,
                    )  # fmt: skip
            if document.document_id not in self._settled:
                self._settle(document.document_id)
            return True
        manual = entry.erp_document_id.startswith(MANUAL_POSTING_PREFIX)
        if pays_out and manual and document.status != "void":
            await self._pay_out_of_band(document, event)
        return False

    async def _money_of(self, document: BillingDocument) -> list[tuple[str, str, str, Money]]:
        """The money that moved on a document, as journal entries (reference, document type,
        customer, amount): an invoice's paid payments, a credit note's out-of-band payout."""
        if document.kind == "credit_note":
            payout = out_of_band_payout(document)
            if payout is None:
                return []
            return [(payout.reference, payout.kind, payout.customer_id, payout.amount)]
        payments = await call_system(
            BillingPaymentActivities.fetch_invoice_payments,
            InvoicePaymentsInput(invoice_id=document.document_id),
        )
        return [
            (p.payment_id, "payment", p.customer_id, p.amount)
            for p in payments
            if p.status == "paid" and p.amount.amount > 0
        ]

    async def _reversing_refund_credits(
        self, credit_note: BillingDocument, postings: list[LedgerPosting]
    ) -> list[LedgerPosting]:
        """A credit note naming refunds whose own credit notes the ERP already holds (the
        refund came first, the credit note later): billing's credit note is the credit, so
        each of ours is reversed first, and billing's is applied to the reversal (one
        refund) so that neither stays open. Journal lookups keep it single on redelivery.

        Another workflow could post the refund's credit note between this look and the
        credit note's posting only if it were not this customer's ledger, which posts both;
        reconciliation reports any such double credit as a receivable that differs.

        Runs from before LINKED_REFUNDS_BOOKED_PATCH; `_post_credit_note_naming_refunds` since."""
        reversals = await self._reversals_due(credit_note, books_patch=False)
        if not reversals:
            return postings
        return [*reversals, *self._applied_to_reversal(postings, reversals)]

    async def _post_credit_note_naming_refunds(
        self, credit_note: BillingDocument, postings: list[LedgerPosting], event: BillingEventRef
    ) -> None:
        """Billing's credit note first, then each reversal of a refund's own credit note as
        the document a failure is about (finance's `resolve_manually` and `reject` journal the
        reversal), then billing's credit note posted again so that the ERP applies it to the
        one reversal now that both exist (the adapter applies a credit note to the document
        it names on every posting, once). A credit note finance rejects thus leaves no
        reversal behind. A credit note naming a refund finance rejected is finance's."""
        main, *rest = postings
        main_done = await self._journaled(main.reference) is not None
        reversals = await self._reversals_due(credit_note, books_patch=True, unposted=not main_done)
        main, *rest = self._applied_to_reversal(postings, reversals)
        if not main_done:
            await self._post(main, event)
        for posting in rest:
            if await self._journaled(posting.reference) is None:
                await self._post(posting, event)
        for reversal in reversals:
            self._working_on_reversal(reversal, credit_note)
            if await self._journaled(reversal.reference) is None:
                await self._post(reversal, event)
        self._current_document, self._current_kind = credit_note.document_id, credit_note.kind
        self._current_amount, self._current_details = credit_note.total, {}
        if len(reversals) == 1 and all(
            [await self._in_erp(reversals[0].reference), await self._in_erp(main.reference)]
        ):
            route = await self._erp.document_route(main)
            await self._erp.post_document(route, main)
            await self._erp.shadow_document(route, main)

    @staticmethod
    def _applied_to_reversal(
        postings: list[LedgerPosting], reversals: list[LedgerPosting]
    ) -> list[LedgerPosting]:
        """Billing's credit note credits the one reversal, so that neither stays open."""
        main, *rest = postings
        if len(reversals) == 1:
            main = main.model_copy(update={"applies_to": reversals[0].reference})
        return [main, *rest]

    async def _reversals_due(
        self, credit_note: BillingDocument, *, books_patch: bool, unposted: bool = False
    ) -> list[LedgerPosting]:
        """A reversal for each refund the credit note names whose own credit note the ERP
        holds. Since LINKED_REFUNDS_BOOKED_PATCH (`books_patch`): not for a refund paid out
        on this very credit note for the part it names (its own credit note is the rest),
        and, while the credit note is `unposted`, a named refund finance rejected stops it."""
        reversals = []
        for link in credit_note.refunds:
            if books_patch and unposted:
                await self._refuse_if_refund_rejected(link, credit_note)
            own = await self._refunds_own_credit_note(link.refund_id)
            if own is None:
                continue
            paid_here = linked_payout_reference(link.refund_id, credit_note.document_id)
            if books_patch and await self._journaled(paid_here) is not None:
                continue
            in_erp = Money(amount=own.amount, currency=own.currency)
            reversals.append(refund_credit_reversal(link, credit_note, in_erp))
        return reversals

    async def _refuse_if_refund_rejected(
        self, link: LinkedRefund, credit_note: BillingDocument
    ) -> None:
        """Finance rejected the refund (its payout is journaled rejected): it is paid out
        nowhere in the ERP, so the credit note's credit for it would stay the customer's there
        while billing gave it back. That part is finance's, never posted silently."""
        payout = await self._journaled(link.refund_id + PAYOUT_SUFFIX)
        if payout is None or not self._rejected_by_finance(payout):
            return
        rejected_by = payout.erp_document_id.removeprefix(REJECTED_POSTING_PREFIX)
        raise StepFailed(
            "check_linked_refunds",
            "LinkedRefundRejected",
            f"credit note {credit_note.document_id} names refund {link.refund_id} for "
            f"{link.amount}, which finance rejected ({rejected_by}): the ERP pays none of it "
            "out, so posting the credit note would leave that credit with the customer there "
            "while billing gave it back. Post what is due by hand (resolve_manually) or reject "
            "the credit note",
            {"linked_refund": link.model_dump(mode="json"),
             "rejected": payout.model_dump(mode="json")},
        )  # fmt: skip

    async def _in_erp(self, reference: str) -> bool:
        """Journaled as posted by the ledger itself (not by hand, not rejected)."""
        entry = await self._journaled(reference)
        return entry is not None and not entry.erp_document_id.startswith(
            (MANUAL_POSTING_PREFIX, REJECTED_POSTING_PREFIX)
        )

    def _working_on_reversal(self, reversal: LedgerPosting, credit_note: BillingDocument) -> None:
        """A failure from here on is about the reversal: what finance decides journals it."""
        self._current_document = reversal.reference
        self._current_kind = REVERSAL_KIND
        self._current_amount = reversal.total
        self._current_invoice = credit_note.document_id
        self._current_details = {"reversal": reversal.model_dump(mode="json")}
        self._manual_journal = [
            (reversal.reference, reversal.kind, reversal.customer_id, reversal.total)
        ]

    async def _refunds_own_credit_note(self, refund_id: str) -> JournalEntry | None:
        """The refund's own credit note as journaled, if the ERP holds one (finance's
        `reject` put nothing there)."""
        own = await self._journaled(refund_id)
        if own is None or own.document_type != "credit_note":
            return None
        return None if own.erp_document_id.startswith(REJECTED_POSTING_PREFIX) else own

    async def _pay_out_of_band(self, credit_note: BillingDocument, event: BillingEventRef) -> None:
        """What the credit note gave back outside billing leaves the ERP too, applied to the
        credit note, once (journal first; what finance decided on is not posted again)."""
        payout = out_of_band_payout(credit_note)
        if payout is None or payout.reference in self._settled:
            return
        self._working_on(payout, credit_note.invoice_id, [(payout.reference, "refund")])
        if await self._journaled(payout.reference) is None:
            await self._post_money(payout, event)

    def _healing(self, event: BillingEventRef) -> bool:
        """Reconciliation replays a settled document when something behind it is missing
        (e.g. a payment): journal lookups keep that idempotent."""
        return event.event_id.startswith(HEAL_EVENT_PREFIX) and self._patches.patched(
            PAYMENTS_PATCH
        )

    def _settle(self, document_id: str) -> None:
        self._settled = [*self._settled, document_id][-SEEN_LIMIT:]

    async def _post(self, posting: LedgerPosting, event: BillingEventRef) -> None:
        route = await self._erp.document_route(posting)
        await self._ensure_customer_in(route, posting.customer_id)
        # post_ledger_document checks that today's ERP period is open before it writes.
        posted = await self._erp.post_document(route, posting)
        await self._journal(posting, posted.erp_document_id, posted.erp_number, event, route)
        self._last_posted = [*self._last_posted, f"{posting.reference}={posted.erp_number}"][-20:]
        workflow.logger.info(
            "posted %s as ERP %s %s", posting.reference, posting.kind, posted.erp_number
        )
        await self._erp.shadow_document(route, posting)

    # --- money that moved -------------------------------------------------------------

    async def _post_payments(self, invoice: BillingDocument, event: BillingEventRef) -> bool:
        """Post the invoice's paid payments not journaled yet, oldest first; whether all
        that billing counts as paid on it is now in the ERP (or decided by finance)."""
        nothing_paid = invoice.amount_paid is not None and invoice.amount_paid.amount == 0
        if invoice.total.amount <= 0 or (invoice.status != "paid" and nothing_paid):
            return True
        payments = await call_system(
            BillingPaymentActivities.fetch_invoice_payments,
            InvoicePaymentsInput(invoice_id=invoice.document_id),
        )
        violations = check_payments(invoice, payments)
        if violations and await self._each_journaled(payments):
            # Finance decided on them (a `check_payments` it rejected): nothing left to post.
            return True
        self._refuse_if(
            "check_payments",
            violations,
            {"payments": [p.model_dump(mode="json") for p in payments]},
        )
        in_erp = Decimal(0)
        for posting in payment_postings(invoice, payments):
            if posting.reference not in self._settled:
                self._working_on(posting, invoice.document_id, [(posting.reference, "payment")])
                if await self._journaled(posting.reference) is None:
                    await self._post_money(posting, event)
            in_erp += posting.amount.amount
        paid = invoice.amount_paid.amount if invoice.amount_paid is not None else in_erp
        if in_erp < paid:
            workflow.logger.info(
                "invoice %s: billing counts %s paid, lists %s: settled on a later event",
                invoice.document_id, paid, in_erp,
            )  # fmt: skip
        return in_erp >= paid

    async def _each_journaled(self, payments: list[Payment]) -> bool:
        """Every paid payment is journaled already (posted, or decided by finance). False for
        runs from before REJECTED_CLOSES_PATCH."""
        paid = [p for p in payments if p.status == "paid" and p.amount.amount > 0]
        if not paid or not self._patches.patched(REJECTED_CLOSES_PATCH):
            return False
        for payment in paid:
            if await self._journaled(payment.payment_id) is None:
                return False
        return True

    async def _apply_refunds(self, event: BillingEventRef) -> None:
        """Post the charge's succeeded refunds not yet in the ERP, oldest first; remember
        the charge while billing holds one of its refunds pending, to read it again."""
        refunds = await call_system(
            BillingPaymentActivities.fetch_charge_refunds,
            ChargeRefundsInput(charge_id=event.object_id),
        )
        for refund in refunds:
            if refund.status == "succeeded" and refund.refund_id not in self._settled:
                await self._apply_refund(refund, refunds, event)
        still_open = [
            r for r in refunds if r.status in REFUND_STILL_OPEN and r.refund_id not in self._settled
        ]
        if (still_open or event.object_id in self._refund_watches) and self._patches.patched(
            PENDING_REFUNDS_PATCH
        ):
            self._watch_pending_refunds(event, refunds, still_open)

    def _watch_pending_refunds(
        self, event: BillingEventRef, refunds: list[Refund], still_open: list[Refund]
    ) -> None:
        """Keep reading the charge while a refund of it is pending; past what Stripe allows
        a pending refund, it is finance's (`retry` waits again, `reject` journals it)."""
        charge_id = event.object_id
        watch = self._refund_watches.pop(charge_id, None)
        if watch is not None:
            for refund in refunds:
                if refund.refund_id in watch.refund_ids and refund.status in ("failed", "canceled"):
                    self._refunds_not_posted = [
                        *self._refunds_not_posted,
                        f"{refund.refund_id} {refund.status} in billing: nothing posted",
                    ][-SEEN_LIMIT:]
                    workflow.logger.info(
                        "refund %s of charge %s (%s) ended %s in billing: nothing to post",
                        refund.refund_id, charge_id, refund.amount, refund.status,
                    )  # fmt: skip
        if not still_open:
            return
        now = workflow.now()
        if watch is None:
            watch = PendingRefundWatch(
                charge_id=charge_id, customer_id=event.customer_id,
                correlation_id=event.correlation_id, refund_ids=[], since=now,
                next_look=now + REFUND_LOOK_FIRST,
                delay_seconds=int((REFUND_LOOK_FIRST * 2).total_seconds()),
            )  # fmt: skip
        if self._patches.patched(PENDING_PER_REFUND_PATCH):
            self._watch_each_refund(watch, still_open, now)
            return
        waited = now - watch.since
        if waited >= REFUND_PENDING_LIMIT:
            refund = still_open[0]
            self._working_on(refund, refund.invoice_id, refund_references(refund))
            raise StepFailed(
                "await_refund_outcome",
                "RefundStillPending",
                f"refund {refund.refund_id} ({refund.amount}) of charge {charge_id} is still "
                f"{refund.status} in billing after {waited.days} days, longer than Stripe "
                "holds a pending refund",
                {**self._current_details, "pending_since": watch.since.isoformat()},
            )
        self._refund_watches[charge_id] = watch.model_copy(
            update={"refund_ids": [r.refund_id for r in still_open]}
        )
        workflow.logger.info(
            "charge %s: refund(s) %s pending in billing; read again at %s",
            charge_id, ", ".join(r.refund_id for r in still_open), watch.next_look,
        )  # fmt: skip

    def _watch_each_refund(
        self, watch: PendingRefundWatch, still_open: list[Refund], now: datetime
    ) -> None:
        """Each refund counts from its own start; every one past what Stripe allows goes to
        finance in one exception (`retry` waits again for them, the others keep their time)."""
        since = {r.refund_id: watch.pending_since(r.refund_id, now) for r in still_open}
        overdue = [r for r in still_open if now - since[r.refund_id] >= REFUND_PENDING_LIMIT]
        waiting = [
            r.refund_id for r in still_open if now - since[r.refund_id] < REFUND_PENDING_LIMIT
        ]
        self._refund_watches[watch.charge_id] = watch.model_copy(
            update={
                "refund_ids": waiting,
                "refund_since": {refund_id: since[refund_id] for refund_id in waiting},
            }
        )
        if not overdue:
            workflow.logger.info(
                "charge %s: refund(s) %s pending in billing; read again at %s",
                watch.charge_id, ", ".join(waiting), watch.next_look,
            )  # fmt: skip
            return
        # The watch stays (its looks count names the next read): after `reject` the next read
        # finds nothing open and ends it; after `retry` it watches them again.
        first = overdue[0]
        self._working_on(first, first.invoice_id, refund_references(first))
        self._manual_journal = [
            (reference, document_type, r.customer_id, r.amount)
            for r in overdue
            for reference, document_type in refund_references(r)
        ]
        self._current_amount = Money(
            amount=sum((r.amount.amount for r in overdue), Decimal(0)),
            currency=first.amount.currency,
        )
        self._current_details = {"refunds": [r.model_dump(mode="json") for r in overdue]}
        self._decided_with = [r.refund_id for r in overdue[1:]]
        told = "; ".join(
            f"refund {r.refund_id} ({r.amount}) {r.status} for "
            f"{(now - since[r.refund_id]).days} days" for r in overdue
        )  # fmt: skip
        raise StepFailed(
            "await_refund_outcome",
            "RefundStillPending",
            f"charge {watch.charge_id}: {told} in billing, longer than Stripe holds a pending "
            "refund",
            {
                **self._current_details,
                "pending_since": {r.refund_id: since[r.refund_id].isoformat() for r in overdue},
            },
        )

    def _look_again_at_pending_refunds(self) -> None:
        """Queue a read of each charge whose look is due (deduplicated by its event id)."""
        now = workflow.now()
        for charge_id, watch in list(self._refund_watches.items()):
            if watch.next_look > now:
                continue
            looks = watch.looks + 1
            self._enqueue(
                BillingEventRef(
                    event_id=f"{REFUND_CHECK_EVENT_PREFIX}{charge_id}:{looks}",
                    event_type="ledger.refund_check",
                    created=int(now.timestamp()),
                    object_kind="charge",
                    object_id=charge_id,
                    customer_id=watch.customer_id,
                    correlation_id=watch.correlation_id,
                )
            )
            delay = timedelta(seconds=watch.delay_seconds)
            self._refund_watches[charge_id] = watch.model_copy(
                update={
                    "looks": looks,
                    "next_look": now + delay,
                    "delay_seconds": int(min(delay * 2, REFUND_LOOK_LONGEST).total_seconds()),
                }
            )

    def _pending_refunds_told(self) -> str:
        if not self._refund_watches:
            return ""
        refunds = [r for w in self._refund_watches.values() for r in w.refund_ids]
        first = min(w.next_look for w in self._refund_watches.values())
        return (
            f"; refund(s) {', '.join(refunds)} pending in billing, read again from "
            f"{first.isoformat()}"
        )

    def _idle_limit(self) -> timedelta:
        """How long to wait for events: until the next look at a pending refund, if any."""
        if not self._refund_watches:
            return IDLE_BEFORE_FRESH_HISTORY
        first: datetime = min(w.next_look for w in self._refund_watches.values())
        return min(IDLE_BEFORE_FRESH_HISTORY, max(first - workflow.now(), timedelta(seconds=1)))

    async def _apply_refund(
        self, refund: Refund, refunds: list[Refund], event: BillingEventRef
    ) -> None:
        payout_reference = refund.refund_id + PAYOUT_SUFFIX
        manual = refund_references(refund)
        self._working_on(refund, refund.invoice_id, manual)
        if await self._journaled(payout_reference) is not None:
            self._settle(refund.refund_id)
            return
        payment = await self._refunded_payment(refund)
        self._refuse_if("check_refund", check_refund(refund, payment, refunds), {})
        if self._patches.patched(OWN_PREDECESSORS_PATCH):
            await self._post_own_predecessors(refund, event)
            self._working_on(refund, refund.invoice_id, manual)
        await self._await_journal(
            refund.payment_id or "",
            "await_payment_posting",
            "PaymentNotInErp",
            f"refund {refund.refund_id} ({refund.amount}) gives back payment "
            f"{refund.payment_id} of invoice {refund.invoice_id}, which is not in the ERP",
        )
        if refund.credit_note_id and not await self._credited_first(refund):
            # Billing's credit note made the refund: its own ledger posts it; pay out on it.
            await self._await_credit_note(refund)
            applies_to = refund.credit_note_id
        else:
            credit_note = refund_credit_note(refund)
            applies_to = credit_note.reference
            if await self._journaled(credit_note.reference) is None:
                named_by = await self._credit_note_naming_now(refund)
                if named_by is None:
                    await self._post(credit_note, event)
                else:
                    applies_to = await self._credit_note_made_later(refund, named_by, event)
        if applies_to != refund.refund_id and self._patches.patched(LINKED_REFUNDS_BOOKED_PATCH):
            await self._pay_out_on_credit_note(refund, payment.method, applies_to, event)
        else:
            await self._post_money(refund_payout(refund, payment.method, applies_to), event)
        self._settle(refund.refund_id)

    async def _credited_first(self, refund: Refund) -> bool:
        """The refund's own credit note reached the ERP before billing's credit note named
        it (e.g. its payout failed and waited for finance meanwhile): the money goes out on
        that credit note, which billing's credit note reversed. False for runs from before."""
        if not self._patches.patched(LINKED_REFUNDS_PATCH):
            return False
        if await self._refunds_own_credit_note(refund.refund_id) is None:
            return False
        if refund.credit_note_id and self._patches.patched(LINKED_REFUNDS_BOOKED_PATCH):
            # Its own credit note is for the rest of a refund that credit note names in part.
            paid_there = linked_payout_reference(refund.refund_id, refund.credit_note_id)
            return await self._journaled(paid_there) is None
        return True

    async def _pay_out_on_credit_note(
        self, refund: Refund, method: str, credit_note_id: str, event: BillingEventRef
    ) -> None:
        """Pay the refund out on billing's credit note for the part it names; the rest of a
        refund it names only in part goes out through the refund's own credit note for the
        rest. No credit note is paid out more than it credits, and the customer's receivable
        in the ERP stays billing's."""
        linked = linked_part(refund, await self._fetch_document("credit_note", credit_note_id))
        if linked == refund.amount:
            await self._post_money(refund_payout(refund, method, credit_note_id), event)
            return
        part = linked_refund_payout(refund, method, credit_note_id, linked)
        self._working_on(part, refund.invoice_id, [(part.reference, "refund")])
        if await self._journaled(part.reference) is None:
            await self._post_money(part, event)
        rest = refund.model_copy(update={"amount": refund.amount - linked, "credit_note_id": None})
        self._working_on(rest, refund.invoice_id, refund_references(rest))
        own = refund_credit_note(rest)
        if await self._journaled(own.reference) is None:
            await self._post(own, event)
        await self._post_money(refund_payout(rest, method, own.reference), event)

    async def _credit_note_naming_now(self, refund: Refund) -> str | None:
        """Billing's credit note that names the refund as billing reads now, just before the
        refund's own credit note would be posted: a credit note may name an existing refund
        (linked later), and then it is the credit. None for runs from before."""
        if not self._patches.patched(LINKED_REFUNDS_PATCH):
            return None
        refunds = await call_system(
            BillingPaymentActivities.fetch_charge_refunds,
            ChargeRefundsInput(charge_id=refund.charge_id),
        )
        fresh = next((r for r in refunds if r.refund_id == refund.refund_id), None)
        return fresh.credit_note_id if fresh is not None else None

    async def _credit_note_made_later(
        self, refund: Refund, credit_note_id: str, event: BillingEventRef
    ) -> str:
        """The refund takes the credit-note path: billing's credit note (posted here when
        this ledger is its own) is the credit, and the refund is paid out on it."""
        linked = refund.model_copy(update={"credit_note_id": credit_note_id})
        manual = [(refund.refund_id + PAYOUT_SUFFIX, "refund")]
        await self._post_own_predecessors(linked, event)
        self._working_on(linked, refund.invoice_id, manual)
        await self._await_credit_note(linked)
        return credit_note_id

    async def _await_credit_note(self, refund: Refund) -> None:
        """Billing's credit note that made (or names) the refund is in the ERP: its own
        ledger posts it."""
        await self._await_journal(
            refund.credit_note_id or "",
            "await_credit_note_posting",
            "CreditNoteNotInErp",
            f"refund {refund.refund_id} ({refund.amount}) was made by credit note "
            f"{refund.credit_note_id}, which is not in the ERP",
        )

    async def _post_own_predecessors(self, refund: Refund, event: BillingEventRef) -> None:
        """What this very ledger books before the refund (a one-off invoice and its payment,
        billing's credit note that made the refund) it posts now, as an invoice posts the
        invoices before it: their own events may sit behind this one in the queue, and
        waiting for them would be waiting for itself. Journal lookups keep it single."""
        assert self._input is not None
        here = ledger_workflow_id(self._input.subscription_id, self._input.customer_id)
        wanted = [("invoice", refund.invoice_id), ("credit_note", refund.credit_note_id)]
        for kind, document_id in wanted:
            if document_id is None:
                continue
            document = await self._fetch_document(kind, document_id)
            if document_ledger_id(document) == here:
                await self._apply_document(document, event)

    async def _refunded_payment(self, refund: Refund) -> Payment:
        """The paid invoice payment a refund gives back, as billing lists it now; a refund
        of money that paid no invoice billing knows is for finance, never guessed."""
        if refund.payment_id is None or refund.invoice_id is None:
            raise StepFailed(
                "check_refund",
                "RefundWithoutInvoice",
                f"refund {refund.refund_id} of charge {refund.charge_id} ({refund.amount}) "
                "gives back no payment of an invoice billing knows",
                self._current_details,
            )
        payments = await call_system(
            BillingPaymentActivities.fetch_invoice_payments,
            InvoicePaymentsInput(invoice_id=refund.invoice_id),
        )
        for payment in payments:
            if payment.payment_id == refund.payment_id and payment.status == "paid":
                return payment
        raise StepFailed(
            "check_refund",
            "PaymentUnknown",
            f"refund {refund.refund_id} ({refund.amount}) gives back payment "
            f"{refund.payment_id}, which billing does not list as paid on invoice "
            f"{refund.invoice_id}",
            {**self._current_details, "payments": [p.model_dump(mode="json") for p in payments]},
        )

    async def _await_journal(
        self, reference: str, step: str, error_type: str, message: str
    ) -> JournalEntry:
        """Wait (durable timers, backing off) until another ledger journals `reference`;
        past POSTING_WAIT_LIMIT it is finance's: `retry` waits again."""
        waited, delay = timedelta(0), POSTING_WAIT_FIRST
        while True:
            entry = await self._journaled(reference)
            if entry is not None and self._rejected_by_finance(entry):
                gives_back = step == "await_payment_posting"
                kind = "payment it gives back" if gives_back else "credit note it is paid out on"
                raise StepFailed(
                    step,
                    "RejectedByFinance",
                    f"{self._current_document}: the {kind} ({reference}) was rejected by "
                    f"finance ({entry.erp_document_id.removeprefix(REJECTED_POSTING_PREFIX)}), "
                    "so it is not in the ERP and nothing is paid out on it",
                    {**self._current_details, "rejected": entry.model_dump(mode="json")},
                )
            if entry is not None:
                return entry
            if waited >= POSTING_WAIT_LIMIT:
                raise StepFailed(
                    step,
                    error_type,
                    f"{message} after {waited}",
                    {**self._current_details, "waited_for": reference},
                )
            self._set_status("waiting_for_erp", f"Waiting for {reference} to reach the ERP")
            await workflow.sleep(delay)
            waited += delay
            delay = min(delay * 2, POSTING_WAIT_LONGEST)

    def _rejected_by_finance(self, entry: JournalEntry) -> bool:
        return entry.erp_document_id.startswith(REJECTED_POSTING_PREFIX) and self._patches.patched(
            JOURNAL_REJECTED_PATCH
        )

    async def _post_money(self, posting: PaymentPosting, event: BillingEventRef) -> None:
        route = await self._erp.payment_route(posting)
        posted = await self._erp.post_payment(route, posting)
        await self._journal_entry(
            posting.reference, posting.kind, posting.customer_id, posting.amount,
            posted.erp_document_id, posted.erp_number, event, route,
        )  # fmt: skip
        self._last_posted = [*self._last_posted, f"{posting.reference}={posted.erp_number}"][-20:]
        workflow.logger.info(
            "posted %s %s as ERP %s", posting.kind, posting.reference, posted.erp_number
        )
        await self._erp.shadow_payment(route, posting)

    def _working_on(
        self,
        subject: PaymentPosting | Refund,
        invoice_id: str | None,
        manual: list[tuple[str, str]],
    ) -> None:
        """What a failure from here on is about, for finance and for `resolve_manually`."""
        if isinstance(subject, Refund):
            reference, kind = subject.refund_id, "refund"
        else:
            reference, kind = subject.reference, subject.kind
        self._current_document = reference
        self._current_kind = kind
        self._current_amount = subject.amount
        self._current_invoice = invoice_id
        self._current_details = {kind: subject.model_dump(mode="json")}
        self._manual_journal = [
            (ref, doc_type, subject.customer_id, subject.amount) for ref, doc_type in manual
        ]

    def _refuse_if(
        self, step: str, violations: list[PolicyViolation], details: dict[str, Any]
    ) -> None:
        if violations:
            raise StepFailed(
                step,
                "PolicyViolation",
                "; ".join(f"{v.code}: {v.message}" for v in violations),
                {**self._current_details, **details,
                 "violations": [v.model_dump() for v in violations]},
            )  # fmt: skip

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

    async def _ensure_customer_in(self, route: PostingRoute | None, customer_id: str) -> None:
        """The party in the ERP that books the document: through account sync's links for
        the ERP on the `erp` queue, asked of the ERP itself (once per run) for the others."""
        if route is None or route.book_queue == LINKED_ERP_QUEUE:
            await self._ensure_customer_in_erp(customer_id)
        else:
            await self._erp.ensure_party(route.book_queue, customer_id)

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
            invoice_id=(
                self._current_invoice
                if self._current_kind in MONEY_KINDS
                else self._current_document
            ),
            amount=self._current_amount,
            error_type=failure.error_type,
            error_message=failure.message,
            remote_answer=failure.details,
            payload={**event.model_dump(), **self._current_details},
            correlation_id=event.correlation_id,
            allowed_decisions=DECISIONS_FOR_POSTING,
            decision_effects=DECISION_EFFECTS,
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
                route = await self._erp.decided_route(
                    posting.customer_id, posting.reference, posting.billing_date
                )
                await self._journal(
                    posting, MANUAL_POSTING_PREFIX + str(number), number, event, route
                )

    async def _journal_money_manually(
        self, event: BillingEventRef, decision: FinanceDecision
    ) -> None:
        """Finance posted the payment or refund by hand: journal what is not yet, so the
        ledger, reconciliation and later events know."""
        number = decision.manual_erp_number
        for reference, document_type, customer_id, amount in self._manual_journal:
            if await self._journaled(reference) is None:
                route = await self._money_decided_route(customer_id, reference)
                await self._journal_entry(
                    reference, document_type, customer_id, amount,
                    MANUAL_POSTING_PREFIX + str(number), number, event, route,
                )  # fmt: skip

    async def _money_decided_route(self, customer_id: str, reference: str) -> PostingRoute | None:
        """Money goes where the document it settles was booked."""
        settles = self._current_invoice or reference
        return await self._erp.decided_route(customer_id, settles, workflow.now().date())

    async def _journal_rejected(self, failed_document: str | None, event: BillingEventRef) -> None:
        """Finance rejected it: journal each reference the failed step was about under the
        exception's id and no ERP number, so retries, healing and refunds find it done."""
        rejected = REJECTED_POSTING_PREFIX + exception_workflow_id(
            workflow.info().workflow_id, self._exceptions_opened
        )
        if self._current_kind in MONEY_KINDS:
            entries = self._manual_journal
        elif failed_document:
            try:
                document = await self._fetch_document(self._current_kind, failed_document)
            except StepFailed as failure:
                workflow.logger.info(
                    "rejected %s: billing gives no document to journal (%s)",
                    failed_document, failure.message,
                )  # fmt: skip
                return
            entries = [
                (p.reference, p.kind, p.customer_id, p.total) for p in required_postings(document)
            ]
            if self._patches.patched(REJECTED_CLOSES_PATCH):
                entries += await self._money_rejected_with(document)
        else:
            return
        for reference, document_type, customer_id, amount in entries:
            if await self._journaled(reference) is None:
                # A document is routed as itself, money as what it settles.
                settles = reference
                if document_type in MONEY_KINDS:
                    settles = failed_document or self._current_invoice or reference
                route = await self._erp.decided_route(customer_id, settles, workflow.now().date())
                await self._journal_entry(
                    reference, document_type, customer_id, amount, rejected, None, event, route
                )

    async def _money_rejected_with(
        self, document: BillingDocument
    ) -> list[tuple[str, str, str, Money]]:
        """The document's money, rejected with it (a `check_payments` finance rejected too);
        when billing cannot say now, the next look at the document journals it."""
        try:
            return await self._money_of(document)
        except StepFailed as failure:
            workflow.logger.info(
                "rejected %s: its payments are journaled on the next look (%s)",
                document.document_id, failure.message,
            )  # fmt: skip
            return []

    async def _journal(
        self,
        posting: LedgerPosting,
        erp_document_id: str,
        erp_number: str | None,
        event: BillingEventRef,
        route: PostingRoute | None = None,
    ) -> None:
        await self._journal_entry(
            posting.reference, posting.kind, posting.customer_id, posting.total,
            erp_document_id, erp_number, event, route,
        )  # fmt: skip

    async def _journal_entry(
        self,
        reference: str,
        document_type: str,
        customer_id: str,
        amount: Money,
        erp_document_id: str,
        erp_number: str | None,
        event: BillingEventRef,
        route: PostingRoute | None = None,
    ) -> None:
        await run_activity(
            JournalActivities.record_journal_entry,
            RecordJournalInput(
                entry=JournalEntry(
                    reference=reference,
                    document_type=document_type,
                    customer_id=customer_id,
                    erp_document_id=erp_document_id,
                    erp_number=erp_number,
                    amount=amount.amount,
                    currency=amount.currency,
                    workflow_id=workflow.info().workflow_id,
                    erp=route.book if route else None,
                    entity=route.entity if route else None,
                ),
                correlation_id=event.correlation_id,
                billing_event_created=(
                    event.created if self._patches.patched(JOURNAL_EVENT_TIME_PATCH) else None
                ),
            ),
        )

    def _set_status(self, status: str, details: str) -> None:
        if status != self._status:
            self._status = status
            workflow.upsert_search_attributes([visibility.PROCESS_STATUS.value_set(status)])
        workflow.set_current_details(details)
