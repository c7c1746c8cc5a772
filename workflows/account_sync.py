"""Account sync: one customer known the same way in billing, the ERP and support.

Workflow id `account/{customer_id}`. Webhooks and the API signal-with-start it; requests that
arrive while a pass runs are coalesced into one more pass, which re-reads billing, so the
newest state always wins whatever order the events came in.

Each pass also carries the customer's entitlements (plan, subscription status, paid-through
date) from billing to the support organization, so billing's subscription and payment events
request a sync too: an agent then sees a past-due or canceled customer, and the credit policy
reads its standing there.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.accounts import (
        BillingAccountActivities,
        BillingEntitlementsInput,
        EnsureOrganizationInput,
        EnsurePartyInput,
        ErpAccountActivities,
        FetchCustomerInput,
        RecordAccountLinksInput,
        StoreAccountActivities,
        SupportAccountActivities,
        SupportEntitlementsInput,
        WriteEntitlementsInput,
    )
    from adapters import visibility
    from canonical import AccountRecord, Customer
    from canonical.account_sync import (
        AccountSyncInput,
        AccountSyncResult,
        AccountSyncStatus,
        SyncRequest,
    )
    from canonical.entitlements import Entitlements
    from workflows.activity_options import run_activity

PROCESS = "account_sync"
# Remember this many handled request ids per run; a run rarely sees more than a handful.
SEEN_LIMIT = 1000
# Runs started since carry entitlements to support on every pass; older ones replay without.
ENTITLEMENTS_PATCH = "account-entitlements"


def account_workflow_id(customer_id: str) -> str:
    return f"account/{customer_id}"


@workflow.defn(name="AccountSync")
class AccountSyncWorkflow:
    def __init__(self) -> None:
        self._pending: list[SyncRequest] = []
        self._handled: list[str] = []
        self._passes = 0
        self._status = "idle"
        self._records: list[AccountRecord] = []
        self._entitlements: Entitlements | None = None
        self._customer_id = ""

    @workflow.run
    async def run(self, request: AccountSyncInput) -> AccountSyncResult:
        self._customer_id = request.customer_id
        if request.request is not None:
            self.sync_requested(request.request)
        # Signals delivered with the start are handled before this line runs.
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                await self._sync_pass(batch)
            except ActivityError:
                # The run fails visibly; the next billing event or API request starts afresh.
                self._set_status("failed", batch[0].correlation_id)
                raise
        await workflow.wait_condition(workflow.all_handlers_finished)
        return AccountSyncResult(
            customer_id=self._customer_id,
            status=self._status,
            passes=self._passes,
            handled_requests=self._handled,
            records=self._records,
            entitlements=self._entitlements,
        )

    @workflow.signal(name="sync_requested")
    def sync_requested(self, request: SyncRequest) -> None:
        if request.request_id in self._handled or any(
            p.request_id == request.request_id for p in self._pending
        ):
            workflow.logger.info("duplicate sync request %s dropped", request.request_id)
            return
        self._pending.append(request)

    @workflow.query(name="status")
    def status(self) -> AccountSyncStatus:
        return AccountSyncStatus(
            customer_id=self._customer_id,
            status=self._status,
            passes=self._passes,
            pending_requests=len(self._pending),
            records=self._records,
            entitlements=self._entitlements,
        )

    async def _sync_pass(self, batch: list[SyncRequest]) -> None:
        self._passes += 1
        self._handled = [*self._handled, *(r.request_id for r in batch)][-SEEN_LIMIT:]
        correlation_id = batch[0].correlation_id
        self._set_status("syncing", correlation_id)
        customer = await self._fetch_customer()
        if customer is None:
            self._set_status("unknown_in_billing", correlation_id)
            return
        if customer.deleted:
            # Books keep history: a deleted billing customer stays a party in the ERP.
            self._set_status("deleted_in_billing", correlation_id)
            return
        party = await self._ensure_erp_party(customer)
        organization = await self._ensure_support_organization(customer)
        self._records = [party, organization]
        await run_activity(
            StoreAccountActivities.record_account_links,
            RecordAccountLinksInput(
                customer_id=customer.customer_id,
                records=self._records,
                workflow_id=workflow.info().workflow_id,
            ),
        )
        standing = ""
        if workflow.patched(ENTITLEMENTS_PATCH):
            self._entitlements = await self._carry_entitlements(batch)
            standing = f"; entitlements: {self._entitlements.describe()}"
        self._set_status("in_sync", correlation_id)
        workflow.set_current_details(
            f"In sync after pass {self._passes}: ERP party {party.external_id}, "
            f"support organization {organization.external_id}{standing}"
        )

    async def _carry_entitlements(self, batch: list[SyncRequest]) -> Entitlements:
        """Billing's view of the customer's standing, written to its support organization
        when it says otherwise. The subscription support last showed is read again, so a
        sync that no subscription event asked for still sees it canceled."""
        shown = await run_activity(
            SupportAccountActivities.read_support_entitlements,
            SupportEntitlementsInput(customer_id=self._customer_id),
        )
        named = [r.subscription_id for r in batch if r.subscription_id]
        if shown is not None and shown.subscription_id:
            named.append(shown.subscription_id)
        billing_view = await run_activity(
            BillingAccountActivities.read_billing_entitlements,
            BillingEntitlementsInput(
                customer_id=self._customer_id, subscription_ids=named, as_of=workflow.now()
            ),
        )
        if billing_view.same_standing(shown):
            return billing_view
        written = await run_activity(
            SupportAccountActivities.write_support_entitlements,
            WriteEntitlementsInput(entitlements=billing_view),
        )
        return written.entitlements

    async def _fetch_customer(self) -> Customer | None:
        try:
            return await run_activity(
                BillingAccountActivities.fetch_billing_customer,
                FetchCustomerInput(customer_id=self._customer_id),
            )
        except ActivityError as err:
            if isinstance(err.cause, ApplicationError) and err.cause.type == "NotFoundError":
                workflow.logger.warning("customer %s is unknown to billing", self._customer_id)
                return None
            raise

    async def _ensure_erp_party(self, customer: Customer) -> AccountRecord:
        return await run_activity(
            ErpAccountActivities.ensure_erp_party, EnsurePartyInput(customer=customer)
        )

    async def _ensure_support_organization(self, customer: Customer) -> AccountRecord:
        info = workflow.info()
        # Built here, so every retry of this step names the same write (Zendesk takes no key
        # for organizations: the adapter looks for the organization before it creates one).
        key = f"{info.workflow_id}/{info.run_id}/ensure_support_organization/{self._passes}"
        return await run_activity(
            SupportAccountActivities.ensure_support_organization,
            EnsureOrganizationInput(customer=customer, idempotency_key=key),
        )

    def _set_status(self, status: str, correlation_id: str) -> None:
        self._status = status
        workflow.upsert_search_attributes(
            [
                visibility.PROCESS_STATUS.value_set(status),
                visibility.CORRELATION_ID.value_set(correlation_id),
            ]
        )
