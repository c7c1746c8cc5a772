"""AccountSyncWorkflow on the time-skipping server, activities replaced by same-named doubles."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, date, datetime
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.accounts import (
    BillingEntitlementsInput,
    EnsureOrganizationInput,
    EnsurePartyInput,
    EntitlementsWritten,
    FetchCustomerInput,
    RecordAccountLinksInput,
    SupportEntitlementsInput,
    WriteEntitlementsInput,
)
from adapters import visibility
from adapters.task_queues import task_queue
from canonical import AccountRecord, Customer
from canonical.entitlements import Entitlements
from starters.routing import account_sync_start, signal_with_start
from workflows.account_sync import AccountSyncWorkflow


class FakeSystems:
    """In-memory billing, ERP, support and store for one test."""

    def __init__(self) -> None:
        self.customers: dict[str, Customer] = {}
        self.parties: dict[str, AccountRecord] = {}
        self.organizations: dict[str, AccountRecord] = {}
        self.links: list[RecordAccountLinksInput] = []
        self.idempotency_keys: list[str] = []
        self.billing_failures: list[Exception] = []
        self.fetches = 0
        # Entitlements as billing says them, as the organization shows them, and writes made.
        self.billing_standing: dict[str, Entitlements] = {}
        self.shown: dict[str, Entitlements] = {}
        self.entitlement_writes: list[Entitlements] = []
        self.named_subscriptions: list[list[str]] = []

    def activities(self) -> dict[str, list[Callable[..., Any]]]:
        @activity.defn(name="fetch_billing_customer")
        async def fetch_billing_customer(request: FetchCustomerInput) -> Customer:
            self.fetches += 1
            if self.billing_failures:
                raise self.billing_failures.pop(0)
            if request.customer_id not in self.customers:
                raise ApplicationError("no such customer", type="NotFoundError", non_retryable=True)
            return self.customers[request.customer_id]

        @activity.defn(name="ensure_erp_party")
        async def ensure_erp_party(request: EnsurePartyInput) -> AccountRecord:
            c = request.customer
            existing = self.parties.get(c.customer_id)
            party_id = existing.external_id if existing else str(len(self.parties) + 1)
            self.parties[c.customer_id] = AccountRecord(
                system="erp", external_id=party_id, customer_id=c.customer_id, name=c.name
            )
            return self.parties[c.customer_id]

        @activity.defn(name="ensure_support_organization")
        async def ensure_support_organization(request: EnsureOrganizationInput) -> AccountRecord:
            c = request.customer
            self.idempotency_keys.append(request.idempotency_key)
            existing = self.organizations.get(c.customer_id)
            org_id = existing.external_id if existing else str(9000 + len(self.organizations))
            self.organizations[c.customer_id] = AccountRecord(
                system="support", external_id=org_id, customer_id=c.customer_id, name=c.name
            )
            return self.organizations[c.customer_id]

        @activity.defn(name="read_billing_entitlements")
        async def read_billing_entitlements(request: BillingEntitlementsInput) -> Entitlements:
            self.named_subscriptions.append(request.subscription_ids)
            said = self.billing_standing.get(request.customer_id)
            if said is None:
                return Entitlements(customer_id=request.customer_id, as_of=request.as_of)
            return said.model_copy(update={"as_of": request.as_of})

        @activity.defn(name="read_support_entitlements")
        async def read_support_entitlements(
            request: SupportEntitlementsInput,
        ) -> Entitlements | None:
            return self.shown.get(request.customer_id)

        @activity.defn(name="write_support_entitlements")
        async def write_support_entitlements(
            request: WriteEntitlementsInput,
        ) -> EntitlementsWritten:
            self.entitlement_writes.append(request.entitlements)
            self.shown[request.entitlements.customer_id] = request.entitlements
            return EntitlementsWritten(entitlements=request.entitlements, changed=True)

        @activity.defn(name="record_account_links")
        async def record_account_links(request: RecordAccountLinksInput) -> None:
            self.links.append(request)

        return {
            "": [record_account_links],
            "billing": [fetch_billing_customer, read_billing_entitlements],
            "support": [
                ensure_support_organization,
                read_support_entitlements,
                write_support_entitlements,
            ],
            "erp": [ensure_erp_party],
        }


@asynccontextmanager
async def running_workers(client: Client, prefix: str, systems: FakeSystems) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        for queue, activities in systems.activities().items():
            await stack.enter_async_context(
                Worker(
                    client,
                    task_queue=task_queue(prefix, queue) if queue else task_queue(prefix),
                    workflows=[AccountSyncWorkflow] if not queue else [],
                    activities=activities,
                )
            )
        yield


async def sync(client: Client, prefix: str, customer_id: str, request_id: str) -> str:
    start = account_sync_start(customer_id, request_id, "customer.updated", f"corr-{request_id}")
    await signal_with_start(client, start, prefix)
    return start.workflow_id


async def test_new_customer_gets_erp_party_support_org_and_links(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    systems = FakeSystems()
    systems.customers["cus_A1"] = Customer(customer_id="cus_A1", name="Acme", currency="USD")
    client = time_skipping_env.client
    async with running_workers(client, queue_prefix, systems):
        workflow_id = await sync(client, queue_prefix, "cus_A1", "evt_1")
        result = await client.get_workflow_handle_for(AccountSyncWorkflow.run, workflow_id).result()
    assert workflow_id == "account/cus_A1"
    assert result.status == "in_sync"
    assert result.handled_requests == ["evt_1"]
    assert systems.parties["cus_A1"].name == "Acme"
    assert systems.organizations["cus_A1"].customer_id == "cus_A1"
    assert [r.system for r in systems.links[0].records] == ["erp", "support"]
    assert systems.links[0].workflow_id == "account/cus_A1"


async def test_duplicate_request_in_one_run_is_dropped(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    systems = FakeSystems()
    systems.customers["cus_D1"] = Customer(customer_id="cus_D1", name="Dup Ltd")
    client = time_skipping_env.client
    start = account_sync_start("cus_D1", "evt_same", "customer.created", "corr")
    # Both deliveries reach Temporal before any worker polls: one run, one pass.
    await signal_with_start(client, start, queue_prefix)
    await signal_with_start(client, start, queue_prefix)
    async with running_workers(client, queue_prefix, systems):
        result = await client.get_workflow_handle_for(
            AccountSyncWorkflow.run, start.workflow_id
        ).result()
    assert result.passes == 1
    assert result.handled_requests == ["evt_same"]
    assert systems.fetches == 1


async def test_requests_arriving_together_coalesce_into_one_pass_with_newest_state(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    systems = FakeSystems()
    systems.customers["cus_C1"] = Customer(customer_id="cus_C1", name="Newest Name")
    client = time_skipping_env.client
    for n in range(3):
        await sync(client, queue_prefix, "cus_C1", f"evt_{n}")
    async with running_workers(client, queue_prefix, systems):
        result = await client.get_workflow_handle_for(
            AccountSyncWorkflow.run, "account/cus_C1"
        ).result()
    assert result.passes == 1
    assert sorted(result.handled_requests) == ["evt_0", "evt_1", "evt_2"]
    assert systems.parties["cus_C1"].name == "Newest Name"


async def test_a_rename_in_billing_stores_the_new_name_for_every_system(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    systems = FakeSystems()
    systems.customers["cus_R1"] = Customer(customer_id="cus_R1", name="Before Rename")
    client = time_skipping_env.client
    async with running_workers(client, queue_prefix, systems):
        workflow_id = await sync(client, queue_prefix, "cus_R1", "evt_created")
        await client.get_workflow_handle_for(AccountSyncWorkflow.run, workflow_id).result()
        systems.customers["cus_R1"] = Customer(customer_id="cus_R1", name="After Rename")
        await sync(client, queue_prefix, "cus_R1", "evt_renamed")
        renamed = await client.get_workflow_handle_for(
            AccountSyncWorkflow.run, workflow_id
        ).result()

    first, second = systems.links
    assert [(r.system, r.name) for r in first.records] == [
        ("erp", "Before Rename"),
        ("support", "Before Rename"),
    ]
    # Same ids in both systems, the new name stored for each.
    assert [(r.system, r.external_id, r.name) for r in second.records] == [
        (r.system, r.external_id, "After Rename") for r in first.records
    ]
    assert renamed.records == second.records


async def test_customer_unknown_to_billing_creates_nothing(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    systems = FakeSystems()
    client = time_skipping_env.client
    async with running_workers(client, queue_prefix, systems):
        workflow_id = await sync(client, queue_prefix, "cus_nobody", "evt_x")
        result = await client.get_workflow_handle_for(AccountSyncWorkflow.run, workflow_id).result()
    assert result.status == "unknown_in_billing"
    assert systems.parties == {} and systems.organizations == {} and systems.links == []


async def test_deleted_customer_keeps_erp_party_and_changes_nothing(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    systems = FakeSystems()
    systems.customers["cus_G1"] = Customer(customer_id="cus_G1", name="Gone", deleted=True)
    client = time_skipping_env.client
    async with running_workers(client, queue_prefix, systems):
        workflow_id = await sync(client, queue_prefix, "cus_G1", "evt_del")
        result = await client.get_workflow_handle_for(AccountSyncWorkflow.run, workflow_id).result()
    assert result.status == "deleted_in_billing"
    assert systems.links == []


async def test_transient_billing_failures_are_retried_until_they_pass(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    systems = FakeSystems()
    systems.customers["cus_T1"] = Customer(customer_id="cus_T1", name="Flaky")
    systems.billing_failures = [
        ApplicationError("503 from billing", type="TransientError"),
        ApplicationError("429", type="RateLimitedError"),
    ]
    client = time_skipping_env.client
    async with running_workers(client, queue_prefix, systems):
        workflow_id = await sync(client, queue_prefix, "cus_T1", "evt_t")
        result = await client.get_workflow_handle_for(AccountSyncWorkflow.run, workflow_id).result()
    assert result.status == "in_sync"
    assert systems.fetches == 3


async def test_rejection_by_the_erp_fails_the_run_visibly(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    systems = FakeSystems()
    systems.customers["cus_R1"] = Customer(customer_id="cus_R1", name="Rejected")

    @activity.defn(name="ensure_erp_party")
    async def refusing_erp(_request: EnsurePartyInput) -> AccountRecord:
        raise ApplicationError("party code taken", type="RejectedError", non_retryable=True)

    acts = systems.activities()
    acts["erp"] = [refusing_erp]
    systems.activities = lambda: acts  # type: ignore[method-assign]
    client = time_skipping_env.client
    async with running_workers(client, queue_prefix, systems):
        workflow_id = await sync(client, queue_prefix, "cus_R1", "evt_r")
        handle = client.get_workflow_handle(workflow_id)
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
        attributes = (await handle.describe()).typed_search_attributes
    assert "party code taken" in str(failed.value.cause.cause)
    assert attributes.get(visibility.PROCESS_STATUS) == "failed"
    assert systems.links == []


async def test_each_pass_sends_its_own_stable_idempotency_key(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    systems = FakeSystems()
    systems.customers["cus_K1"] = Customer(customer_id="cus_K1", name="Keys")
    client = time_skipping_env.client
    async with running_workers(client, queue_prefix, systems):
        workflow_id = await sync(client, queue_prefix, "cus_K1", "evt_k")
        handle = client.get_workflow_handle(workflow_id)
        await handle.result()
        await asyncio.sleep(0)
    assert len(systems.idempotency_keys) == 1
    key = systems.idempotency_keys[0]
    assert key.startswith("account/cus_K1/") and key.endswith("/ensure_support_organization/1")


def standing(customer_id: str, status: str, paid_through: str | None) -> Entitlements:
    return Entitlements(
        customer_id=customer_id, plan="Pro", subscription_id="sub_P1", status=status,  # type: ignore[arg-type]
        paid_through=date.fromisoformat(paid_through) if paid_through else None,
        as_of=datetime(2026, 11, 1, tzinfo=UTC),
    )  # fmt: skip


async def test_a_failed_payment_shows_the_customer_past_due_in_support(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    systems = FakeSystems()
    systems.customers["cus_P1"] = Customer(customer_id="cus_P1", name="Pastdue Inc")
    systems.billing_standing["cus_P1"] = standing("cus_P1", "past_due", "2026-10-31")
    client = time_skipping_env.client
    start = account_sync_start(
        "cus_P1", "evt_fail", "invoice.payment_failed", "corr", subscription_id="sub_P1"
    )
    await signal_with_start(client, start, queue_prefix)
    async with running_workers(client, queue_prefix, systems):
        result = await client.get_workflow_handle_for(
            AccountSyncWorkflow.run, start.workflow_id
        ).result()
    assert result.entitlements is not None
    assert result.entitlements.standing() == ("Pro", "sub_P1", "past_due", date(2026, 10, 31))
    assert [w.status for w in systems.entitlement_writes] == ["past_due"]
    assert systems.named_subscriptions == [["sub_P1"]]


async def test_a_sync_that_finds_support_current_writes_nothing(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    systems = FakeSystems()
    systems.customers["cus_P2"] = Customer(customer_id="cus_P2", name="Current Ltd")
    systems.billing_standing["cus_P2"] = standing("cus_P2", "active", "2026-11-30")
    systems.shown["cus_P2"] = standing("cus_P2", "active", "2026-11-30")
    client = time_skipping_env.client
    async with running_workers(client, queue_prefix, systems):
        workflow_id = await sync(client, queue_prefix, "cus_P2", "evt_upd")
        result = await client.get_workflow_handle_for(AccountSyncWorkflow.run, workflow_id).result()
    assert result.status == "in_sync"
    assert systems.entitlement_writes == []
    # The subscription support shows is read again, though no event named it.
    assert systems.named_subscriptions == [["sub_P1"]]


async def test_a_canceled_subscription_replaces_what_support_showed(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    systems = FakeSystems()
    systems.customers["cus_P3"] = Customer(customer_id="cus_P3", name="Gone GmbH")
    systems.shown["cus_P3"] = standing("cus_P3", "active", "2026-11-30")
    systems.billing_standing["cus_P3"] = standing("cus_P3", "canceled", "2026-11-30")
    client = time_skipping_env.client
    start = account_sync_start(
        "cus_P3", "evt_del", "customer.subscription.deleted", "corr", subscription_id="sub_P1"
    )
    await signal_with_start(client, start, queue_prefix)
    async with running_workers(client, queue_prefix, systems):
        await client.get_workflow_handle_for(AccountSyncWorkflow.run, start.workflow_id).result()
    assert systems.shown["cus_P3"].status == "canceled"
    assert systems.shown["cus_P3"].describe() == "canceled, plan Pro, paid through 2026-11-30"
