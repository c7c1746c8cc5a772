"""The /v1 accounts API: keys bound to roles, a sync request that runs, an audit record."""

from __future__ import annotations

import httpx
import pytest
from temporalio.client import WorkflowExecutionStatus

from adapters.task_queues import task_queue
from canonical.ledger import SubscriptionLedgerInput
from tests.e2e.conftest import API_KEYS, Stack, eventually
from workflows.account_sync import AccountSyncWorkflow
from workflows.subscription_ledger import SubscriptionLedgerWorkflow

pytestmark = pytest.mark.e2e


def _auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {API_KEYS[role]}"}


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Bearer not-a-key"}, 401), (_auth("support"), 403)],
    ids=["no key", "unknown key", "wrong role"],
)
async def test_sync_request_without_the_right_key_is_refused_and_starts_nothing(
    stack: Stack, headers: dict[str, str], status: int
) -> None:
    response = httpx.post(f"{stack.api_url}/v1/accounts/cus_refused:sync", headers=headers)
    assert response.status_code == status
    assert response.json()["error"]
    assert [
        w async for w in stack.client.list_workflows("WorkflowId = 'account/cus_refused'")
    ] == []
    assert stack.adapters.store.audit_entries("account/cus_refused") == []


async def test_ops_can_request_a_sync_which_runs_and_is_audited(
    stack: Stack, in_process_worker: None
) -> None:
    customer = await stack.driver.create_customer(
        "API Sync Co", address={"country": "US"}, idempotency_key="test/api-sync"
    )
    cid = customer.id
    # The billing webhook is not wired here to another endpoint: the API request alone syncs.
    response = httpx.post(
        f"{stack.api_url}/v1/accounts/{cid}:sync",
        headers={**_auth("ops"), "Idempotency-Key": "op-req-1", "X-Correlation-Id": "corr-ops-1"},
    )
    assert response.status_code == 202
    assert response.json() == {
        "status": "accepted",
        "workflow_id": f"account/{cid}",
        "detail": None,
        "also_started": [],
    }

    handle = stack.client.get_workflow_handle_for(AccountSyncWorkflow.run, f"account/{cid}")
    result = await handle.result()
    assert result.status == "in_sync"

    async def shown() -> dict | None:
        got = httpx.get(f"{stack.api_url}/v1/accounts/{cid}", headers=_auth("finance"))
        return got.json() if got.status_code == 200 else None

    view = await eventually(shown, "account view")
    assert {r["system"] for r in view["records"]} == {"erp", "support"}
    [entry] = stack.adapters.store.audit_entries(f"account/{cid}")
    assert (entry.actor, entry.role, entry.action) == ("test-ops", "ops", "account.sync_requested")
    assert entry.correlation_id == "corr-ops-1"


async def test_unknown_account_is_a_404_with_a_reason(stack: Stack) -> None:
    response = httpx.get(f"{stack.api_url}/v1/accounts/cus_NeverSeen", headers=_auth("ops"))
    assert response.status_code == 404
    assert "cus_NeverSeen" in response.json()["error"]


async def test_an_id_billing_could_not_have_made_is_a_422(stack: Stack) -> None:
    for customer_id in ("cus_never_seen", "cus_", "42", "cus_a.b"):
        response = httpx.get(f"{stack.api_url}/v1/accounts/{customer_id}", headers=_auth("ops"))
        assert response.status_code == 422, customer_id
        assert response.json()["error"].startswith("path.customer_id: "), response.text


async def test_ops_refresh_the_running_ledgers_which_continue_as_new(
    stack: Stack, in_process_worker: None
) -> None:
    """After a deployment, ops ask every running ledger to continue as new on the new code;
    a role that may not is refused and nothing is asked."""
    workflow_id = f"subscription/sub_refresh-{stack.settings.task_queue_prefix}"
    ledger = await stack.client.start_workflow(
        SubscriptionLedgerWorkflow.run,
        SubscriptionLedgerInput(
            subscription_id="sub_refresh", customer_id="cus_refresh", supported_currencies=["USD"]
        ),
        id=workflow_id,
        task_queue=task_queue(stack.settings.task_queue_prefix),
    )
    first_run = ledger.result_run_id

    refused = httpx.post(f"{stack.api_url}/v1/ledgers:refresh", headers=_auth("support"))
    assert refused.status_code == 403
    assert (await ledger.describe()).run_id == first_run

    response = httpx.post(f"{stack.api_url}/v1/ledgers:refresh", headers=_auth("ops"))
    assert response.status_code == 200
    assert workflow_id in response.json()["workflow_ids"]

    async def new_run() -> str | None:
        description = await ledger.describe()
        return description.run_id if description.run_id != first_run else None

    await eventually(new_run, "the ledger continuing as new")
    assert (await ledger.describe()).status == WorkflowExecutionStatus.RUNNING
    await ledger.terminate("test over")
