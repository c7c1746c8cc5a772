"""Activities of case-to-credit: the ticket, the billing credit, the 90-day total."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel
from temporalio import activity

from activities._errors import adapter_errors_as_application_errors
from adapters.errors import RejectedError
from adapters.ports import BillingSystem, SupportDesk
from adapters.store import IntegrationStore
from canonical import BillingDocument, Money, Subscription
from canonical.support import SupportCase

CASE_ID = "case_id"  # billing metadata naming the support case a credit came from
REVERSES = "reverses"  # billing metadata of a reversal: the adjustment it takes back


class FetchCaseInput(BaseModel):
    case_id: str


class ActiveSubscriptionInput(BaseModel):
    customer_id: str


class CreditedInput(BaseModel):
    customer_id: str
    currency: str
    days: int = 90


class ApplyCreditInput(BaseModel):
    customer_id: str
    amount: Money
    description: str
    invoice_id: str | None = None  # credit note on this invoice; none: balance credit
    idempotency_key: str
    case_id: str | None = None  # kept on the billing credit, so reconciliation finds the ticket


class AppliedCredit(BaseModel):
    document_id: str
    kind: Literal["balance_credit", "credit_note"]


class ReverseCreditInput(BaseModel):
    customer_id: str
    applied: AppliedCredit
    amount: Money
    idempotency_key: str


class CaseOutcomeInput(BaseModel):
    case_id: str
    internal_note: str
    public_reply: str
    tags: list[str]
    idempotency_key: str


class SupportCaseActivities:
    def __init__(self, support: SupportDesk) -> None:
        self._support = support

    @activity.defn(name="fetch_support_case")
    async def fetch_support_case(self, request: FetchCaseInput) -> SupportCase:
        with adapter_errors_as_application_errors():
            return await self._support.get_case(request.case_id)

    @activity.defn(name="write_case_outcome")
    async def write_case_outcome(self, request: CaseOutcomeInput) -> None:
        """Internal note, public reply and tags; each write keyed, so a retry repeats none."""
        key = request.idempotency_key
        with adapter_errors_as_application_errors():
            await self._support.add_internal_note(
                request.case_id, request.internal_note, f"{key}/note"
            )
            await self._support.add_public_reply(
                request.case_id, request.public_reply, f"{key}/reply"
            )
            await self._support.add_tags(request.case_id, request.tags, f"{key}/tags")


class BillingCreditActivities:
    def __init__(self, billing: BillingSystem) -> None:
        self._billing = billing

    @activity.defn(name="fetch_active_subscription")
    async def fetch_active_subscription(
        self, request: ActiveSubscriptionInput
    ) -> Subscription | None:
        with adapter_errors_as_application_errors():
            return await self._billing.active_subscription(request.customer_id)

    @activity.defn(name="apply_billing_credit")
    async def apply_billing_credit(self, request: ApplyCreditInput) -> AppliedCredit:
        metadata = {CASE_ID: request.case_id} if request.case_id else None
        with adapter_errors_as_application_errors():
            if request.invoice_id:
                note = await self._creditable(request, request.invoice_id)
                if note is None:
                    note = await self._billing.create_credit_note(
                        request.invoice_id, request.amount, request.description, "order_change",
                        request.idempotency_key, metadata=metadata,
                    )  # fmt: skip
                return AppliedCredit(document_id=note.document_id, kind="credit_note")
            credit = await self._billing.create_balance_credit(
                request.customer_id, request.amount, request.description, request.idempotency_key,
                metadata=metadata,
            )  # fmt: skip
            return AppliedCredit(document_id=credit.transaction_id, kind="balance_credit")

    async def _creditable(
        self, request: ApplyCreditInput, invoice_id: str
    ) -> BillingDocument | None:
        """A credit note only reduces what is still owed: on a settled invoice it would pay
        money out (refund or balance), which is finance's decision, not support's. None when
        one may be made; the one this very call made, when a retry finds the invoice settled
        by it (its answer was lost); RejectedError otherwise."""
        invoice = await self._billing.get_invoice(invoice_id)
        problem = None
        if invoice.customer_id != request.customer_id:
            problem = f"invoice {invoice.number or invoice_id} belongs to another customer"
        elif invoice.status != "open":
            made = await self._billing.find_credit_note(invoice_id, request.idempotency_key)
            if made is not None:
                return made
            problem = (
                f"invoice {invoice.number or invoice_id} is already {invoice.status}: a credit "
                f"note on it would pay money out rather than reduce what is owed"
            )
        if problem:
            raise RejectedError(
                problem,
                system="billing",
                operation="apply_billing_credit",
                remote_code="invoice_settled",
                remote_answer={"invoice": invoice_id, "status": invoice.status},
            )
        return None

    @activity.defn(name="reverse_billing_credit")
    async def reverse_billing_credit(self, request: ReverseCreditInput) -> None:
        """Compensation: take back what apply_billing_credit gave."""
        with adapter_errors_as_application_errors():
            if request.applied.kind == "credit_note":
                await self._billing.void_credit_note(
                    request.applied.document_id, idempotency_key=request.idempotency_key
                )
            else:
                await self._billing.reverse_balance_credit(
                    request.customer_id, request.amount,
                    f"reversal of {request.applied.document_id}", request.idempotency_key,
                    metadata={REVERSES: request.applied.document_id},
                )  # fmt: skip


class CreditJournalActivities:
    def __init__(self, store: IntegrationStore) -> None:
        self._store = store

    @activity.defn(name="credited_recently")
    def credited_recently(self, request: CreditedInput) -> Money:
        since = datetime.now(UTC) - timedelta(days=request.days)
        amount = self._store.credited_since(request.customer_id, request.currency, since)
        return Money(amount=amount, currency=request.currency)
