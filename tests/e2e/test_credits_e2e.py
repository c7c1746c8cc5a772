"""Case-to-credit end to end: a credit asked on a ticket (signed support webhook) or through
`POST /v1/credits`, approved or decided by finance from the terminal, held by billing, posted
to Tryton, told back to the ticket and named in the audit trail."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.billing.stripe import StripeBilling
from canonical import Money
from tests.e2e.conftest import API_KEYS, SOLD_PRODUCT, Stack, eventually, metric, scrape
from tests.fixtures.support import create_ticket_with_credit

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent


async def cli(stack: Stack, *args: str, role: str = "finance") -> subprocess.CompletedProcess[str]:
    """The CLI in a thread: the in-process worker must keep answering meanwhile."""
    env = {**os.environ, **stack.settings.to_env(), "LEDGERBRIDGE_API_KEY": API_KEYS[role]}
    return await asyncio.to_thread(
        subprocess.run, [str(BIN / "ledgerbridge"), *args], env=env,
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def api(stack: Stack, method: str, path: str, role: str, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {API_KEYS[role]}", **kwargs.pop("headers", {})}
    return httpx.request(method, f"{stack.api_url}{path}", headers=headers, timeout=30, **kwargs)


async def subscribed_customer(stack: Stack, tag: str) -> tuple[str, str, str]:
    """A customer on 90.00 USD/month, synced to the ERP and support: (customer, support
    organization, first invoice)."""
    billing: StripeBilling = stack.adapters.billing  # type: ignore[assignment]
    customer = await stack.driver.create_customer(f"Credit Co {tag}", idempotency_key=f"{tag}/c")
    cid = customer.id
    price = await stack.driver.create_price(
        SOLD_PRODUCT, 9000, "usd", idempotency_key=f"{tag}/price"
    )
    subscription = await stack.driver.subscribe(cid, price.id, idempotency_key=f"{tag}/s")

    async def synced() -> str | None:
        org = await stack.adapters.support.find_organization(cid)
        party = await stack.adapters.ledger.find_party(cid)
        return org.external_id if org and party else None

    org_id = await eventually(synced, "account sync to support and the ERP", 90)
    async for invoice in billing.list_invoices(subscription_id=subscription.id):
        return cid, org_id, invoice.document_id
    raise AssertionError("the subscription has no invoice")


async def credit_state(stack: Stack, credit_id: str) -> dict[str, Any]:
    answer = await asyncio.to_thread(api, stack, "get", f"/v1/credits/{credit_id}", "support")
    return dict(answer.json())


async def test_a_credit_asked_on_a_ticket_is_approved_from_the_terminal_and_lands_everywhere(
    stack: Stack, in_process_worker: None
) -> None:
    cid, org_id, _invoice = await subscribed_customer(stack, "e2e-credit-1")
    ticket = create_ticket_with_credit(
        stack.support, organization_id=int(org_id), amount="45.00", currency="USD",
        reason="API outage on 14 November",
    )  # fmt: skip
    case_id = str(ticket["id"])

    async def waiting_in_inbox() -> str | None:
        listed = await cli(stack, "finance", "inbox", "--customer", cid)
        for line in listed.stdout.splitlines():
            if "approval" in line and f"credit/{case_id}/" in line:
                return line.split()[-1]
        return None

    credit_id = await eventually(waiting_in_inbox, "credit waiting for approval", 90)
    shown = await cli(stack, "finance", "show", credit_id)
    assert shown.returncode == 0, shown.stderr
    assert "45.00 USD" in shown.stdout and "needs_approval" in shown.stdout

    refused = await cli(stack, "finance", "approve", credit_id, "--reason", "x", role="support")
    assert refused.returncode == 1 and "403" in refused.stderr
    assert refused.stderr.strip().count("\n") == 0

    approved = await cli(stack, "finance", "approve", credit_id,
                         "--reason", "outage confirmed by SRE")  # fmt: skip
    assert approved.returncode == 0, approved.stderr
    assert "approved by test-finance" in approved.stdout
    twice = await cli(stack, "finance", "approve", credit_id, "--reason", "again")
    assert twice.returncode == 1  # no longer waiting, or already decided

    async def applied() -> dict[str, Any] | None:
        state = await credit_state(stack, credit_id)
        return state if state["status"] == "applied" else None

    state = await eventually(applied, "credit applied and posted", 90)
    assert await stack.driver.balance(cid) == (-4500, "usd")
    posted = await stack.adapters.ledger.find_document(state["billing_document"])
    assert posted is not None and posted.kind == "credit_note"
    assert posted.total == Money.of("45.00", "USD") and posted.erp_number == state["erp_number"]
    case = await stack.adapters.support.get_case(case_id)
    assert "credit_applied" in case.tags
    with stack.support.api() as support_api:
        comments = support_api.get(f"/api/v2/tickets/{case_id}/comments.json").json()["comments"]
    notes = [c["body"] for c in comments if not c["public"]]
    assert any(state["erp_number"] in note and "45.00 USD" in note for note in notes)
    audit = stack.adapters.store.audit_entries(credit_id)
    assert [(e.actor, e.action, e.reason) for e in audit] == [
        ("test-finance", "credit.approved", "outage confirmed by SRE")
    ]
    assert stack.adapters.store.find_posting("billing", state["billing_document"]) is not None


async def test_a_credit_on_a_settled_invoice_goes_to_finance_who_credits_the_next_invoice(
    stack: Stack, in_process_worker: None
) -> None:
    metrics_url = f"{stack.api_url}/metrics"
    before = await asyncio.to_thread(scrape, metrics_url)
    cid, _org_id, invoice_id = await subscribed_customer(stack, "e2e-credit-2")
    await stack.driver.pay(invoice_id, idempotency_key="e2e-credit-2/pay")
    case_id = str(create_ticket_with_credit(stack.support, organization_id=None, amount=None)["id"])
    body = {
        "case_id": case_id, "amount": {"amount": "8.00", "currency": "USD"},
        "reason": "SLA miss", "invoice_id": invoice_id, "request_id": "req-1",
    }  # fmt: skip
    # The ticket's organization is not mapped to a customer yet: refused, and noted.
    unmapped = await asyncio.to_thread(api, stack, "post", "/v1/credits", "support", json=body)
    assert unmapped.status_code == 422 and "not mapped" in unmapped.json()["error"]
    org = await stack.adapters.support.find_organization(cid)
    assert org is not None
    with stack.support.api() as support_api:
        support_api.put(f"/api/v2/tickets/{case_id}.json",
                        json={"ticket": {"organization_id": int(org.external_id)}}
                        ).raise_for_status()  # fmt: skip

    checked = await asyncio.to_thread(api, stack, "post", "/v1/credits:validate", "support",
                                      json=body)  # fmt: skip
    assert checked.status_code == 200, checked.text
    facts = checked.json()
    assert facts["outcome"] == "auto_approve" and facts["customer_id"] == cid
    assert facts["monthly_recurring"] == {"amount": "90.00", "currency": "USD"}
    assert facts["erp_party"] and facts["erp_period_open"] is True

    for change, refusal in (
        ({"amount": {"amount": "8.00", "currency": "EUR"}}, "bills in USD"),
        ({"amount": {"amount": "500.00", "currency": "USD"}}, "over the cap"),
        ({"amount": {"amount": "0.00", "currency": "USD"}}, "must be positive"),
    ):
        bad = {**body, **change, "request_id": "req-bad"}
        answer = await asyncio.to_thread(api, stack, "post", "/v1/credits", "support", json=bad)
        assert answer.status_code == 422 and refusal in answer.json()["error"], answer.text
    first = await asyncio.to_thread(api, stack, "post", "/v1/credits", "support", json=body)
    again = await asyncio.to_thread(api, stack, "post", "/v1/credits", "support", json=body)
    assert first.status_code == 202 and first.json()["status"] == "accepted", first.text
    assert again.json()["status"] == "duplicate"
    credit_id = first.json()["workflow_id"]
    exception_id = f"exception/{credit_id}/1"

    async def in_inbox() -> str | None:
        listed = await cli(stack, "finance", "inbox", "--customer", cid)
        return listed.stdout if exception_id in listed.stdout else None

    inbox = await eventually(in_inbox, "settled-invoice exception in the inbox", 90)
    assert "case_to_credit" in inbox and "8.00 USD" in inbox

    async def exception_gauged() -> bool:  # read from visibility, cached for a few seconds
        shown = await asyncio.to_thread(scrape, metrics_url)
        return metric(shown, "ledgerbridge_finance_exceptions_open", process="case_to_credit") > 0

    await eventually(exception_gauged, "the open exception on /metrics", 60)
    shown = await cli(stack, "finance", "show", exception_id)
    assert "already paid" in shown.stdout and "credit the next invoice" in shown.stdout
    decided = await cli(stack, "finance", "decide", exception_id, "compensate",
                        "--reason", "credit the next invoice instead")  # fmt: skip
    assert decided.returncode == 0, decided.stderr

    async def applied() -> dict[str, Any] | None:
        state = await credit_state(stack, credit_id)
        return state if state["status"] == "applied" else None

    state = await eventually(applied, "credit applied to the next invoice", 90)
    assert state["finance_decision"]["decision"] == "compensate"
    assert await stack.driver.balance(cid) == (-800, "usd")
    posted = await stack.adapters.ledger.find_document(state["billing_document"])
    assert posted is not None and posted.total == Money.of("8.00", "USD")
    [opened, decision] = stack.adapters.store.audit_entries(exception_id)
    assert (opened.actor, opened.action) == ("ledgerbridge", "exception.opened")
    assert (decision.actor, decision.action) == ("test-finance", "exception.compensate")

    # The API's /metrics (the worker runs in this process: one registry) shows the work done.
    after = await asyncio.to_thread(scrape, metrics_url)
    posted = "ledgerbridge_erp_documents_posted_total"
    moved = {
        (name, tuple(sorted(labels.items()))): metric(after, name, **labels)
        - metric(before, name, **labels)
        for name, labels in (
            (posted, {"process": "amendment_to_erp", "kind": "invoice", "currency": "USD"}),
            (posted, {"process": "case_to_credit", "kind": "credit_note", "currency": "USD"}),
            ("ledgerbridge_credits_total", {"outcome": "exception"}),
            ("ledgerbridge_credits_total", {"outcome": "applied"}),
        )
    }
    assert all(delta >= 1 for delta in moved.values()), moved
    assert metric(after, "ledgerbridge_billing_event_to_erp_posting_seconds_count") > 0


def test_credit_requests_that_can_never_be_granted_are_refused_and_start_nothing(
    stack: Stack,
) -> None:
    body: dict[str, Any] = {
        "case_id": "999999", "amount": {"amount": "10.00", "currency": "USD"},
        "reason": "outage", "request_id": "r-bad",
    }  # fmt: skip
    unknown = api(stack, "post", "/v1/credits", "support", json=body)
    assert unknown.status_code == 404 and "no support ticket" in unknown.json()["error"]
    assert api(stack, "post", "/v1/credits", "finance", json=body).status_code == 403
    assert httpx.post(f"{stack.api_url}/v1/credits", json=body).status_code == 401
    no_key = api(stack, "post", "/v1/credits", "support", json={**body, "request_id": None})
    assert no_key.status_code == 422 and "Idempotency-Key" in no_key.json()["error"]
    forged_headers = {
        "x-zendesk-webhook-signature": "bad",
        "x-zendesk-webhook-signature-timestamp": "2026-01-01T00:00:00Z",
    }
    forged = httpx.post(
        f"{stack.api_url}/webhooks/zendesk", content=b'{"type":"x"}', headers=forged_headers
    )
    assert forged.status_code == 400
    missing = api(stack, "get", "/v1/credits/credit/999999/r-bad", "support")
    assert missing.status_code == 404
    assert stack.adapters.store.audit_entries() == []
