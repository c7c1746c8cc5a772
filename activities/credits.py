"""Activities of case-to-credit: the facts the policy decides on, the billing credit, the
outcome on the ticket."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import AwareDatetime, BaseModel, Field
from temporalio import activity

from activities._errors import adapter_errors_as_application_errors
from activities._system import SystemActivities
from activities.accounts import billing_entitlements
from adapters import metrics
from adapters.errors import AdapterError, NotFoundError, RejectedError
from adapters.ports import BillingSystem, Ledger, SupportDesk
from adapters.store import IntegrationStore
from canonical import AccountRecord, BillingDocument, Money, Subscription
from canonical.credit import CreditFacts
from canonical.entitlements import Entitlements, EntitlementsSource
from canonical.support import SupportCase

CREDITED_WINDOW = timedelta(days=90)  # the policy's rolling cap looks back this far
CASE_ID = "case_id"  # billing metadata naming the support case a credit came from
REVERSES = "reverses"  # billing metadata of a reversal: the adjustment it takes back


class CreditFactsInput(BaseModel):
    case_id: str
    currency: str = Field(description="the credit's currency: the 90-day total is summed in it")
    as_of: AwareDatetime = Field(description="now: dates the ERP period and the 90-day window")


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


async def gather_credit_facts(
    request: CreditFactsInput,
    support: SupportDesk,
    billing: BillingSystem,
    ledger: Ledger,
    store: IntegrationStore,
) -> CreditFacts:
    """Everything the credit policy needs, for the API's live check and the workflow alike.
    The ticket first (it names the customer), then billing, the ERP and the journal side by
    side. Adapter errors propagate: their `system` says which one failed."""
    case = await support.get_case(request.case_id)
    customer_id = case.customer_id
    if customer_id is None:
        return CreditFacts(case=case)
    as_of = request.as_of.astimezone(UTC)
    subscription, shown, (party, period_open, erp_unreadable), credited = await asyncio.gather(
        billing.active_subscription(customer_id),
        _shown_entitlements(support, customer_id),
        _erp_facts(ledger, customer_id, as_of),
        asyncio.to_thread(
            store.credited_since, customer_id, request.currency, as_of - CREDITED_WINDOW
        ),
    )
    entitlements = shown
    source_named: EntitlementsSource = "support"
    if entitlements is None:
        # Account sync has not written them yet: billing says the same, only not in one place.
        named = [subscription.subscription_id] if subscription else []
        entitlements = await billing_entitlements(billing, customer_id, named, as_of)
        source_named = "billing"
    return CreditFacts(
        case=case,
        subscription=subscription,
        erp_party=party.external_id if party else None,
        erp_period_open=period_open,
        credited_last_90_days=Money(amount=credited, currency=request.currency),
        erp_unreadable=erp_unreadable,
        entitlements=entitlements,
        entitlements_source=source_named,
    )


async def _shown_entitlements(support: SupportDesk, customer_id: str) -> Entitlements | None:
    """What the customer's organization shows; None when it shows nothing yet (or the
    organization is gone since the ticket named it)."""
    try:
        return await support.read_entitlements(customer_id)
    except NotFoundError:
        return None


async def _erp_facts(
    ledger: Ledger, customer_id: str, as_of: datetime
) -> tuple[AccountRecord | None, bool | None, str | None]:
    """The ERP party and today's period, or why they could not be read: the policy does not
    decide on them (they only warn), so an ERP outage must not hold a credit at its start."""
    try:
        party, period_open = await asyncio.gather(
            ledger.find_party(customer_id), ledger.is_period_open(as_of.date())
        )
    except AdapterError as err:
        return None, None, str(err)
    return party, period_open, None


class CreditFactsActivities(SystemActivities):
    """The credit facts as one activity. On the billing queue: it has the most headroom
    (50/s), and its two ERP reads are cheap lookups the ERP's posting cap need not guard."""

    system = "billing"

    def __init__(
        self, support: SupportDesk, billing: BillingSystem, ledger: Ledger, store: IntegrationStore
    ) -> None:
        self._systems = (support, billing, ledger, store)

    @activity.defn(name="gather_credit_facts")
    async def gather_credit_facts(self, request: CreditFactsInput) -> CreditFacts:
        with adapter_errors_as_application_errors():
            return await gather_credit_facts(request, *self._systems)


class SupportCaseActivities(SystemActivities):
    system = "support"

    def __init__(self, support: SupportDesk) -> None:
        self._support = support

    # Only for credits started before the workflow patch "credit-facts-once"; remove once none runs.
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
        metrics.credit_outcome(request.tags)


class BillingCreditActivities(SystemActivities):
    system = "billing"

    def __init__(self, billing: BillingSystem) -> None:
        self._billing = billing

    # Only for credits started before the workflow patch "credit-facts-once"; remove once none runs.
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


class CreditJournalActivities(SystemActivities):
    system = "store"

    def __init__(self, store: IntegrationStore) -> None:
        self._store = store

    # Only for credits started before the workflow patch "credit-facts-once"; remove once none runs.
    @activity.defn(name="credited_recently")
    def credited_recently(self, request: CreditedInput) -> Money:
        since = datetime.now(UTC) - timedelta(days=request.days)
        amount = self._store.credited_since(request.customer_id, request.currency, since)
        return Money(amount=amount, currency=request.currency)
