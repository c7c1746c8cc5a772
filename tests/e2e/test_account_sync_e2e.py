"""Account sync through every layer: signed billing webhook -> API -> Temporal -> worker ->
real Tryton and the support sandbox -> store."""

from __future__ import annotations

import json
import signal
import time

import httpx
import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.service import RPCError

from adapters.billing.webhook_signature import sign_stripe
from adapters.errors import NotFoundError
from tests.e2e.conftest import Stack, eventually, stop_process
from workflows.account_sync import AccountSyncWorkflow

pytestmark = pytest.mark.e2e


async def create_customer(stack: Stack, name: str) -> str:
    customer = await stack.driver.create_customer(
        name,
        email="ap@example.com",
        address={"line1": "1 Main St", "city": "Boston", "postal_code": "02110", "country": "US"},
        idempotency_key=f"test/{name}",
    )
    return customer.id


async def synced_result(stack: Stack, customer_id: str):  # type: ignore[no-untyped-def]
    handle = stack.client.get_workflow_handle_for(AccountSyncWorkflow.run, f"account/{customer_id}")

    async def started() -> bool:
        try:
            await handle.describe()
            return True
        except RPCError:
            return False

    await eventually(started, "account sync workflow started by the webhook")
    return await handle.result()


async def runs_of(stack: Stack, workflow_id: str) -> int:
    return len([w async for w in stack.client.list_workflows(f"WorkflowId = '{workflow_id}'")])


async def test_customer_created_webhook_makes_erp_party_and_support_org(
    stack: Stack, in_process_worker: None
) -> None:
    customer_id = await create_customer(stack, "E2E Created Co")
    result = await synced_result(stack, customer_id)

    assert result.status == "in_sync"
    party = await stack.adapters.ledger.find_party(customer_id)
    org = await stack.adapters.support.find_organization(customer_id)
    assert party is not None and party.name == "E2E Created Co"
    assert org is not None and org.name == "E2E Created Co"
    links = {r.system: r.external_id for r in stack.adapters.store.account_links(customer_id)}
    assert links == {"erp": party.external_id, "support": org.external_id}

    async def searchable() -> list[str]:
        query = f"CustomerId = '{customer_id}' AND BusinessProcess = 'account_sync'"
        return [w.id async for w in stack.client.list_workflows(query)]

    assert await eventually(searchable, "CustomerId search") == [f"account/{customer_id}"]


async def test_duplicate_delivery_starts_nothing_new(stack: Stack, in_process_worker: None) -> None:
    customer_id = await create_customer(stack, "E2E Duplicate Co")
    await synced_result(stack, customer_id)
    [created] = stack.billing.events(type="customer.created")

    stack.billing.redeliver(created["id"])  # the sandbox sends it again, signed afresh
    deliveries = stack.billing.wait_for_deliveries(event_id=created["id"])
    body = json.dumps(created).encode()
    again = httpx.post(
        f"{stack.api_url}/webhooks/stripe", content=body, headers=_signed(stack, body)
    )

    assert len(deliveries) >= 2 and all(d["status"] == "succeeded" for d in deliveries)
    assert again.status_code == 200 and again.json()["status"] == "duplicate"
    assert await runs_of(stack, f"account/{customer_id}") == 1


async def test_rename_in_billing_reaches_erp_and_support(
    stack: Stack, in_process_worker: None
) -> None:
    customer_id = await create_customer(stack, "E2E Before Rename")
    await synced_result(stack, customer_id)
    await stack.driver.update_customer(
        customer_id, name="E2E After Rename", idempotency_key="test/rename"
    )

    async def renamed() -> bool:
        party = await stack.adapters.ledger.find_party(customer_id)
        org = await stack.adapters.support.find_organization(customer_id)
        links = stack.adapters.store.account_links(customer_id)
        return bool(
            party
            and org
            and party.name == org.name == "E2E After Rename"
            and {r.name for r in links} == {"E2E After Rename"}
        )

    assert await eventually(renamed, "ERP party, support org and cross-references renamed")


async def test_paying_an_invoice_shows_plan_status_and_paid_through_in_support(
    stack: Stack, in_process_worker: None
) -> None:
    """Billing's own signed webhooks (subscription created, invoice paid) reach account sync
    besides the ledger: the support organization ends up showing the customer's standing."""
    customer_id = await create_customer(stack, "E2E Entitled Co")
    product = await stack.driver.create_product("E2E Suite", idempotency_key="test/ent/p")
    price = await stack.driver.create_price(product.id, 4900, "usd", idempotency_key="test/ent/pr")
    subscription = await stack.billing.sdk().v1.subscriptions.create_async(
        {"customer": customer_id, "items": [{"price": price.id}],
         "collection_method": "send_invoice", "days_until_due": 30},
        {"idempotency_key": "test/ent/s"},
    )  # fmt: skip
    assert isinstance(subscription.latest_invoice, str)
    await stack.driver.pay(
        subscription.latest_invoice, idempotency_key="test/ent/pay", paid_out_of_band=True
    )
    invoice = await stack.adapters.billing.get_invoice(subscription.latest_invoice)
    period_end = max(line.period_end for line in invoice.lines if line.period_end)

    async def shown():  # type: ignore[no-untyped-def]
        try:
            shown = await stack.adapters.support.read_entitlements(customer_id)
        except NotFoundError:
            return None
        return shown if shown is not None and shown.paid_through is not None else None

    standing = await eventually(shown, "entitlements on the support organization", 90)
    assert standing.standing() == ("E2E Suite", subscription.id, "active", period_end)
    accepted = [e for e in stack.billing.events(type="invoice.paid")
                if e["data"]["object"]["id"] == subscription.latest_invoice]  # fmt: skip
    assert accepted, "billing sent invoice.paid"


def _signed(stack: Stack, body: bytes, *, at: int | None = None, secret: str | None = None) -> dict:
    secret = secret or stack.settings.billing_webhook_secrets[0].get_secret_value()
    return {
        "Stripe-Signature": sign_stripe(body, secret, at or int(time.time())),
        "Content-Type": "application/json",
    }


def _event(customer_id: str) -> bytes:
    return json.dumps(
        {
            "id": f"evt_forged_{customer_id}",
            "type": "customer.created",
            "created": int(time.time()),
            "data": {"object": {"object": "customer", "id": customer_id}},
        }
    ).encode()


@pytest.mark.parametrize(
    ("case", "status", "reason"),
    [
        ("unsigned", 400, "signature"),
        ("wrong_secret", 400, "signature"),
        ("stale", 400, "signature"),
        ("oversized", 413, "larger than"),
        ("not_json", 400, "malformed"),
        ("no_object", 400, "malformed"),
    ],
)
async def test_bad_webhooks_get_a_reason_and_start_nothing(
    stack: Stack, case: str, status: int, reason: str
) -> None:
    customer_id = f"cus_bad_{case}"
    body = _event(customer_id)
    headers = _signed(stack, body)
    if case == "unsigned":
        headers.pop("Stripe-Signature")
    elif case == "wrong_secret":
        headers = _signed(stack, body, secret="whsec_not_ours")
    elif case == "stale":
        headers = _signed(stack, body, at=int(time.time()) - 301)
    elif case == "oversized":
        body = body[:-1] + b', "pad": "' + b"x" * (256 * 1024) + b'"}'
        headers = _signed(stack, body)
    elif case == "not_json":
        body = b"{not json"
        headers = _signed(stack, body)
    elif case == "no_object":
        body = json.dumps(
            {"id": "evt_x", "type": "customer.created", "created": 1, "data": {}}
        ).encode()
        headers = _signed(stack, body)

    response = httpx.post(f"{stack.api_url}/webhooks/stripe", content=body, headers=headers)

    assert response.status_code == status
    assert reason in response.json()["error"]
    assert "\n" not in response.json()["error"]
    with pytest.raises(RPCError):
        await stack.client.get_workflow_handle(f"account/{customer_id}").describe()


async def test_worker_killed_mid_workflow_is_replaced_and_finishes_the_work(stack: Stack) -> None:
    stack.support.inject_fault(503, count=10_000)  # support is down: the run stalls mid-way
    worker = stack.start_worker_process()
    try:
        customer_id = await create_customer(stack, "E2E Killed Worker Co")
        assert await eventually(
            lambda: stack.adapters.ledger.find_party(customer_id), "ERP party created", 90
        )
        handle = stack.client.get_workflow_handle(f"account/{customer_id}")
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)

        with httpx.Client(base_url=stack.support.url) as client:
            client.delete("/_sandbox/faults").raise_for_status()
        worker = stack.start_worker_process()
        result = await handle.result()
    finally:
        stop_process(worker)

    assert result["status"] == "in_sync"
    parties = await stack.adapters.ledger.call(  # type: ignore[attr-defined]
        "model.party.party.search", [["code", "=", customer_id]], 0, None, None
    )
    assert len(parties) == 1
