"""Finance decides an amendment exception from the terminal; the ledger moves on."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import API_KEYS, Stack, eventually

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent


async def finance_cli(
    stack: Stack, *args: str, role: str = "finance"
) -> subprocess.CompletedProcess[str]:
    """The CLI in a thread: the in-process worker must keep answering queries meanwhile."""
    env = {**os.environ, **stack.settings.to_env(), "LEDGERBRIDGE_API_KEY": API_KEYS[role]}
    return await asyncio.to_thread(
        subprocess.run, [str(BIN / "ledgerbridge"), "finance", *args], env=env,
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip


async def euro_subscription(stack: Stack) -> tuple[str, str]:
    customer = await stack.driver.create_customer("Inbox Co", idempotency_key="fi/c")
    product = await stack.driver.create_product("Inbox EU", idempotency_key="fi/p")
    price = await stack.driver.create_price(product.id, 2500, "eur", idempotency_key="fi/price")
    subscription = await stack.driver.subscribe(customer.id, price.id, idempotency_key="fi/s")
    return customer.id, subscription.id


async def test_finance_sees_and_rejects_an_exception_from_the_terminal(
    stack: Stack, in_process_worker: None
) -> None:
    customer_id, subscription_id = await euro_subscription(stack)
    exception_id = f"exception/subscription/{subscription_id}/1"

    async def in_inbox() -> str | None:
        listed = await finance_cli(stack, "inbox", "--customer", customer_id)
        return listed.stdout if exception_id in listed.stdout else None

    inbox = await eventually(in_inbox, "exception in the finance inbox", 90)
    assert "amendment_to_erp" in inbox and "25.00 EUR" in inbox
    assert "retry | resolve_manually | reject" in inbox

    shown = await finance_cli(stack, "show", exception_id)
    assert shown.returncode == 0, shown.stderr
    assert (
        # Finance's mapping names neither this product nor (in the stack's mapping) its price.
        "Unmapped" in shown.stdout and f"subscription/{subscription_id}" in shown.stdout
    )

    refused = await finance_cli(stack, "reject", exception_id, "--reason", "no", role="support")
    assert refused.returncode == 1
    assert refused.stderr.strip().count("\n") == 0 and "403" in refused.stderr
    unknown = await finance_cli(stack, "decide", exception_id, "compensate", "--reason", "x")
    assert unknown.returncode == 1 and "not possible here" in unknown.stderr

    rejected = await finance_cli(
        stack, "reject", exception_id, "--reason", "EUR is billed by mistake"
    )
    assert rejected.returncode == 0, rejected.stderr
    assert "reject by test-finance" in rejected.stdout

    again = await finance_cli(stack, "reject", exception_id, "--reason", "twice")
    assert again.returncode == 1 and "already decided" in again.stderr
    [opened, entry] = stack.adapters.store.audit_entries(exception_id)
    assert opened.action == "exception.opened"
    assert (entry.actor, entry.action, entry.reason) == (
        "test-finance", "exception.reject", "EUR is billed by mistake",
    )  # fmt: skip

    ledger = stack.client.get_workflow_handle(f"subscription/{subscription_id}")

    async def unblocked() -> bool:
        return (await ledger.query("status"))["status"] == "waiting"  # type: ignore[no-any-return]

    assert await eventually(unblocked, "ledger unblocked", 30)
    assert "empty" in (await finance_cli(stack, "inbox", "--customer", customer_id)).stdout
    # Journaled as rejected under the exception, with no ERP number: nothing posts it later.
    invoices = await stack.driver.client.v1.invoices.list_async({"subscription": subscription_id})
    [invoice_id] = [str(i.id) for i in invoices.data]
    journaled = stack.adapters.store.find_posting("billing", invoice_id)
    assert journaled is not None
    assert (journaled.erp_document_id, journaled.erp_number) == (f"rejected:{exception_id}", None)


def test_finance_api_refuses_bad_requests_without_changing_anything(stack: Stack) -> None:
    finance = {"Authorization": f"Bearer {API_KEYS['finance']}"}
    url = f"{stack.api_url}/v1/exceptions"
    assert httpx.get(url).status_code == 401
    assert (
        httpx.get(url, headers={"Authorization": f"Bearer {API_KEYS['support']}"}).status_code
        == 403
    )
    missing = httpx.get(f"{url}/exception/subscription/sub_none/1", headers=finance)
    assert missing.status_code == 404 and "no finance exception" in missing.json()["error"]
    not_ours = httpx.get(f"{url}/account/cus_1", headers=finance)
    assert not_ours.status_code == 404
    no_reason = httpx.post(f"{url}/exception/subscription/sub_none/1:decide",
                           json={"decision": "reject", "reason": ""}, headers=finance)  # fmt: skip
    assert no_reason.status_code == 422
    bad_filter = httpx.get(url, params={"customer_id": "x' OR 1=1"}, headers=finance)
    assert bad_filter.status_code == 422
