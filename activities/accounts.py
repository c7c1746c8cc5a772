"""Activities of account sync, grouped by the system (and so the task queue) they call."""

from __future__ import annotations

from pydantic import BaseModel
from temporalio import activity

from activities._errors import adapter_errors_as_application_errors
from activities._system import SystemActivities
from adapters.ports import BillingSystem, Ledger, SupportDesk
from adapters.store import IntegrationStore
from canonical import AccountRecord, Customer


class FetchCustomerInput(BaseModel):
    customer_id: str


class EnsurePartyInput(BaseModel):
    customer: Customer


class EnsureOrganizationInput(BaseModel):
    customer: Customer
    idempotency_key: str


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
        self._store.record_account_links(request.customer_id, request.records, request.workflow_id)
