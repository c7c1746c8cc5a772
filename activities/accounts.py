"""Activities of account sync, grouped by the system (and so the task queue) they call."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel, Field
from temporalio import activity

from activities._errors import adapter_errors_as_application_errors
from activities._system import SystemActivities
from adapters.errors import NotFoundError
from adapters.ports import BillingSystem, Ledger, SupportDesk
from adapters.store import IntegrationStore
from canonical import AccountRecord, BillingDocument, Customer, Subscription
from canonical.entitlements import Entitlements, entitlements_from_billing

# A paid invoice is normally among a subscription's newest few; past this many, none counts.
MAX_INVOICES_SCANNED = 50


class FetchCustomerInput(BaseModel):
    customer_id: str


class EnsurePartyInput(BaseModel):
    customer: Customer


class EnsureOrganizationInput(BaseModel):
    customer: Customer
    idempotency_key: str


class BillingEntitlementsInput(BaseModel):
    customer_id: str
    subscription_ids: list[str] = Field(
        default_factory=list,
        description="subscriptions the events named or support knows: read when none is active",
    )
    as_of: AwareDatetime


class SupportEntitlementsInput(BaseModel):
    customer_id: str


class WriteEntitlementsInput(BaseModel):
    entitlements: Entitlements


class EntitlementsWritten(BaseModel):
    entitlements: Entitlements
    changed: bool


async def billing_entitlements(
    billing: BillingSystem, customer_id: str, subscription_ids: list[str], as_of: AwareDatetime
) -> Entitlements:
    """What billing says the customer is entitled to: its active subscription, else the
    newest of the named ones (a canceled one still says "canceled"), with the period end of
    that subscription's latest paid invoice."""
    subscription = await billing.active_subscription(customer_id)
    if subscription is None:
        subscription = await _newest_named(billing, customer_id, subscription_ids)
    invoices: list[BillingDocument] = []
    if subscription is not None:
        async for invoice in billing.list_invoices(subscription_id=subscription.subscription_id):
            invoices.append(invoice)
            if invoice.status == "paid" or len(invoices) >= MAX_INVOICES_SCANNED:
                break
    return entitlements_from_billing(customer_id, subscription, invoices, as_of)


async def _newest_named(
    billing: BillingSystem, customer_id: str, subscription_ids: list[str]
) -> Subscription | None:
    newest: Subscription | None = None
    for subscription_id in dict.fromkeys(subscription_ids):
        try:
            subscription = await billing.get_subscription(subscription_id)
        except NotFoundError:
            continue
        if subscription.customer_id != customer_id:
            continue  # another customer's: never let it speak for this one
        if newest is None or subscription.created_at > newest.created_at:
            newest = subscription
    return newest


class RecordAccountLinksInput(BaseModel):
    customer_id: str
    records: list[AccountRecord]
    workflow_id: str


class BillingAccountActivities(SystemActivities):
    system = "billing"

    def __init__(self, billing: BillingSystem) -> None:
        self._billing = billing

    @activity.defn(name="fetch_billing_customer")
    async def fetch_billing_customer(self, request: FetchCustomerInput) -> Customer:
        with adapter_errors_as_application_errors():
            return await self._billing.get_customer(request.customer_id)

    @activity.defn(name="read_billing_entitlements")
    async def read_billing_entitlements(self, request: BillingEntitlementsInput) -> Entitlements:
        with adapter_errors_as_application_errors():
            return await billing_entitlements(
                self._billing, request.customer_id, request.subscription_ids, request.as_of
            )


class SupportAccountActivities(SystemActivities):
    system = "support"

    def __init__(self, support: SupportDesk) -> None:
        self._support = support

    @activity.defn(name="ensure_support_organization")
    async def ensure_support_organization(self, request: EnsureOrganizationInput) -> AccountRecord:
        with adapter_errors_as_application_errors():
            return await self._support.ensure_organization(
                request.customer, request.idempotency_key
            )

    @activity.defn(name="read_support_entitlements")
    async def read_support_entitlements(
        self, request: SupportEntitlementsInput
    ) -> Entitlements | None:
        with adapter_errors_as_application_errors():
            return await self._support.read_entitlements(request.customer_id)

    @activity.defn(name="write_support_entitlements")
    async def write_support_entitlements(
        self, request: WriteEntitlementsInput
    ) -> EntitlementsWritten:
        """Look before write: Zendesk takes no idempotency key for organizations."""
        with adapter_errors_as_application_errors():
            changed = await self._support.write_entitlements(request.entitlements)
        return EntitlementsWritten(entitlements=request.entitlements, changed=changed)


class ErpAccountActivities(SystemActivities):
    system = "erp"

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    @activity.defn(name="ensure_erp_party")
    async def ensure_erp_party(self, request: EnsurePartyInput) -> AccountRecord:
        with adapter_errors_as_application_errors():
            return await self._ledger.ensure_party(request.customer)


class StoreAccountActivities(SystemActivities):
    """Runs on the workflow task queue: the store is ours, not an external system."""

    system = "store"

    def __init__(self, store: IntegrationStore) -> None:
        self._store = store

    @activity.defn(name="record_account_links")
    def record_account_links(self, request: RecordAccountLinksInput) -> None:
        info = activity.info()  # the sync's run and this call: the same on every retry
        self._store.record_account_links(
            request.customer_id, request.records, request.workflow_id,
            step=f"{info.workflow_run_id}/{info.activity_id}",
        )  # fmt: skip
