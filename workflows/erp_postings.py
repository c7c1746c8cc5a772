"""Posting to the ERP the routing names (canonical/erp_routing.py), for every process that
posts: the subscription ledger and case-to-credit. The processes do not change per ERP:
each asks where a document goes, posts it on that ERP's queue, journals which ERP booked
it, and while the entity is in shadow sends the same posting to its target ERP too.

Runs begun before routing existed keep posting to the one ERP on the `erp` queue
(`ERP_ROUTING_PATCH`): `workflow.patched` answers once per run, so a run never changes ERP
halfway through a document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from typing import Any, TypeVar

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.accounts import (
        BillingAccountActivities,
        EnsurePartyInput,
        ErpAccountActivities,
        FetchCustomerInput,
    )
    from activities.amendments import (
        ErpPostingActivities,
        JournalEntry,
        PostDocumentInput,
        PostPaymentInput,
    )
    from activities.erp_routing import (
        ErpRoutingActivities,
        RoutePaymentInput,
        RoutePostingInput,
        ShadowJournalActivities,
    )
    from canonical import LedgerPosting, Money, PaymentPosting, PostedDocument, PostedPayment
    from canonical.erp_routing import PostingRoute
    from canonical.shadow_report import SHADOW_FAILED_PREFIX

from workflows.activity_options import (
    ERP_CALL,
    StepFailed,
    call_locally,
    call_system,
    run_activity,
)
from workflows.patches import Patches

ERP_ROUTING_PATCH = "erp-routing"
# Runs since ask the route as a local activity of the workflow's worker: a route answers from
# memory (one ERP, a customer read a while ago) or from our store, and a round trip through
# the server and billing's queue (and its rate limit) per posting cost more than the answer.
LOCAL_ROUTE_PATCH = "erp-route-local"
# What a workflow's release (workflows/patches.py) includes of these.
POSTING_PATCHES = frozenset({ERP_ROUTING_PATCH, LOCAL_ROUTE_PATCH})
# The queue the one ERP of a deployment without routing polls: account sync keeps its parties
# linked, so the ledger looks at the links before it asks that ERP.
LINKED_ERP_QUEUE = "erp"

A = TypeVar("A")

# A shadow posting tries for a while, never for hours: the legacy ERP is the book of record
# and must not wait on the target. What did not reach the target, the shadow report lists.
SHADOW_CALL: dict[str, Any] = {**ERP_CALL, "schedule_to_close_timeout": timedelta(minutes=15)}


class ErpPoster:
    """One per workflow run: remembers which ERPs already hold which customers. Its patches
    are asked through the run's `Patches`."""

    def __init__(self, patches: Patches) -> None:
        self._patches = patches
        self._parties: set[tuple[str, str]] = set()

    async def document_route(self, posting: LedgerPosting) -> PostingRoute | None:
        """Where the document goes; None for runs from before routing (the `erp` queue)."""
        if not self._patches.patched(ERP_ROUTING_PATCH):
            return None
        return await self._route(
            ErpRoutingActivities.route_erp_posting,
            RoutePostingInput(
                customer_id=posting.customer_id,
                on=posting.billing_date,
                reference=posting.reference,
            ),
        )

    async def payment_route(self, posting: PaymentPosting) -> PostingRoute | None:
        """Money goes where the document it settles was booked (and shadowed)."""
        return await self._settled_route(
            posting.customer_id, posting.applies_to, posting.payment_date
        )

    async def decided_route(self, customer_id: str, settles: str, on: date) -> PostingRoute | None:
        """Where what finance decided on (posted by hand, or rejected) would have been booked:
        its journal entry names that ERP, so reconciliation judges it in the right run.
        `settles` is the document itself, or the one the money settles. None before routing,
        or when no route covers the customer (the exception may have been about that)."""
        try:
            return await self._settled_route(customer_id, settles, on)
        except StepFailed:
            return None

    async def _settled_route(self, customer_id: str, settles: str, on: date) -> PostingRoute | None:
        if not self._patches.patched(ERP_ROUTING_PATCH):
            return None
        return await self._route(
            ErpRoutingActivities.route_erp_payment,
            RoutePaymentInput(customer_id=customer_id, applies_to=settles, on=on),
        )

    async def _route(
        self, method: Callable[[Any, A], Awaitable[PostingRoute]], request: A
    ) -> PostingRoute:
        """Runs from before LOCAL_ROUTE_PATCH asked on billing's queue, and replay so."""
        if self._patches.patched(LOCAL_ROUTE_PATCH):
            return await call_locally(method, request)
        return await call_system(method, request)

    async def post_document(
        self, route: PostingRoute | None, posting: LedgerPosting
    ) -> PostedDocument:
        return await call_system(
            ErpPostingActivities.post_ledger_document,
            PostDocumentInput(posting=posting),
            queue=route.book_queue if route else None,
        )

    async def post_payment(
        self, route: PostingRoute | None, posting: PaymentPosting
    ) -> PostedPayment:
        return await call_system(
            ErpPostingActivities.post_ledger_payment,
            PostPaymentInput(posting=posting),
            queue=route.book_queue if route else None,
        )

    async def ensure_party(self, queue: str, customer_id: str) -> None:
        """The customer as a party of the ERP on `queue` (lookup-before-create there), once
        per run."""
        if (queue, customer_id) in self._parties:
            return
        customer = await call_system(
            BillingAccountActivities.fetch_billing_customer,
            FetchCustomerInput(customer_id=customer_id),
        )
        await call_system(
            ErpAccountActivities.ensure_erp_party, EnsurePartyInput(customer=customer), queue=queue
        )
        self._parties.add((queue, customer_id))

    async def shadow_document(self, route: PostingRoute | None, posting: LedgerPosting) -> None:
        """The same document to the entity's target while it is in shadow; what fails is
        logged and left to the shadow report, never to the book of record."""
        if route is None or route.shadow_queue is None:
            return
        try:
            await self.ensure_party(route.shadow_queue, posting.customer_id)
            posted = await call_system(
                ErpPostingActivities.post_ledger_document,
                PostDocumentInput(posting=posting),
                queue=route.shadow_queue,
                **SHADOW_CALL,
            )
        except StepFailed as failure:
            await _shadow_missed(route, posting.reference, posting.kind, posting.customer_id,
                                 posting.total, failure)  # fmt: skip
            return
        await _journal_shadow(route, posting.reference, posting.kind, posting.customer_id,
                              posted.erp_document_id, posted.erp_number, posting.total)  # fmt: skip

    async def shadow_payment(self, route: PostingRoute | None, posting: PaymentPosting) -> None:
        """The same money to the target that holds the shadow of the document it settles."""
        if route is None or route.shadow_queue is None:
            return
        try:
            posted = await call_system(
                ErpPostingActivities.post_ledger_payment,
                PostPaymentInput(posting=posting),
                queue=route.shadow_queue,
                **SHADOW_CALL,
            )
        except StepFailed as failure:
            await _shadow_missed(route, posting.reference, posting.kind, posting.customer_id,
                                 posting.amount, failure)  # fmt: skip
            return
        await _journal_shadow(
            route, posting.reference, posting.kind, posting.customer_id,
            posted.erp_document_id, posted.erp_number, posting.amount,
        )  # fmt: skip


async def _journal_shadow(
    route: PostingRoute, reference: str, document_type: str, customer_id: str,
    erp_document_id: str, erp_number: str | None, amount: Money,
) -> None:  # fmt: skip
    await run_activity(
        ShadowJournalActivities.record_shadow_posting,
        JournalEntry(
            reference=reference, document_type=document_type, customer_id=customer_id,
            erp_document_id=erp_document_id, erp_number=erp_number, amount=amount.amount,
            currency=amount.currency, workflow_id=workflow.info().workflow_id,
            erp=route.shadow, entity=route.entity,
        ),
    )  # fmt: skip


async def _shadow_missed(
    route: PostingRoute, reference: str, kind: str, customer_id: str, amount: Money,
    failure: StepFailed,
) -> None:  # fmt: skip
    """Journaled as failed, so that the shadow report lists it as missing in the target."""
    workflow.logger.warning(
        "shadow posting of %s to %s failed (%s: %s); the shadow report will list it",
        reference, route.shadow, failure.error_type, failure.message,
    )  # fmt: skip
    failed = f"{SHADOW_FAILED_PREFIX}{failure.error_type}"[:255]
    await _journal_shadow(route, reference, kind, customer_id, failed, None, amount)
