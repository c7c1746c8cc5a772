"""The console in a real browser against the real stack: finance signs in, finds the
settled-invoice exception of the demo scenario, decides `compensate` and sees the audit row;
finance is refused a credit above its approval limit; a support key sees no inbox."""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import BrowserContext, Page

from canonical import Money
from canonical.credit import CreditPolicy
from starters.api.console import pages
from tests.browser.conftest import screenshot
from tests.e2e.conftest import API_KEYS, Stack, eventually
from tests.e2e.test_credits_e2e import api, credit_state, subscribed_customer
from tests.fixtures.support import create_ticket_with_credit

pytestmark = pytest.mark.e2e
# Finance may approve up to 40.00 USD here, so the 45.00 USD credit below is above its limit.
LOW_LIMIT = CreditPolicy(approver_limits={"finance": Money.of("40", "USD"), "finance_admin": None})


async def sign_in(page: Page, stack: Stack, role: str) -> None:
    """By keyboard alone: the key field has the focus, Enter sends the form."""
    await page.bring_to_front()
    await page.goto(f"{stack.api_url}/console")
    await page.wait_for_function("document.activeElement?.id === 'api_key'")  # autofocus
    await page.keyboard.type(API_KEYS[role])
    async with page.expect_navigation():
        await page.keyboard.press("Enter")
    assert "/console/sign-in" not in page.url, await page.locator("main").inner_text()


async def settled_invoice_exception(stack: Stack) -> tuple[str, str, str]:
    """The demo's second adjustment: a credit on an invoice already paid. (customer, credit,
    exception)"""
    cid, _org, invoice_id = await subscribed_customer(stack, "browser-settled")
    await stack.driver.pay(invoice_id, idempotency_key="browser-settled/pay")
    org = await stack.adapters.support.find_organization(cid)
    assert org is not None
    case_id = create_ticket_with_credit(
        stack.support, organization_id=int(org.external_id), amount=None
    )["id"]
    body = {
        "case_id": str(case_id), "amount": {"amount": "8.00", "currency": "USD"},
        "reason": "Goodwill: late invoice question", "invoice_id": invoice_id,
        "request_id": "goodwill-1",
    }  # fmt: skip
    accepted = await asyncio.to_thread(api, stack, "post", "/v1/credits", "support", json=body)
    assert accepted.status_code == 202, accepted.text
    credit_id = accepted.json()["workflow_id"]
    return cid, credit_id, f"exception/{credit_id}/1"


@pytest.mark.parametrize("stack", [{"credit_policy": LOW_LIMIT}], indirect=True)
async def test_finance_decides_in_the_browser_and_support_sees_no_inbox(
    stack: Stack, in_process_worker: None, browser: BrowserContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pages, "REFRESH_SECONDS", 1)
    test = "finance_decides_in_the_browser"
    cid, credit_id, exception_id = await settled_invoice_exception(stack)
    page = await browser.new_page()
    await sign_in(page, stack, "finance")
    assert page.url.endswith("/console/inbox")
    await page.keyboard.press("Tab")  # the first stop skips to the content
    assert await page.evaluate("document.activeElement.textContent") == "Skip to content"
    await screenshot(page, test, "01-inbox")

    # The inbox refreshes its list in place: the row arrives without the page reloading.
    answer = await page.goto(f"{stack.api_url}/console/inbox?customer={cid}")
    assert answer is not None and answer.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    assert await page.evaluate("getComputedStyle(document.body).fontFamily") != ""
    await page.evaluate("window.loadedOnce = true")
    await page.locator(f'tr[data-item="{exception_id}"]').wait_for(timeout=90_000)
    assert await page.evaluate("window.loadedOnce === true"), "the page was reloaded"
    row = page.locator(f'tr[data-item="{exception_id}"]')
    assert "case_to_credit" in await row.inner_text() and "8.00 USD" in await row.inner_text()
    await screenshot(page, test, "02-inbox-filtered")

    await row.get_by_role("link").click()
    await page.wait_for_load_state()
    body = await page.locator("main").inner_text()
    assert "already paid" in body and "8.00 USD" in body and "compensate" in body
    web_ui = await page.get_by_role("link", name="the run in the Temporal Web UI").get_attribute(
        "href"
    )
    assert web_ui and "/namespaces/default/workflows/exception%2Fcredit%2F" in web_ui
    await screenshot(page, test, "03-exception")

    await page.get_by_label("compensate").press("Space")  # decided by keyboard
    await page.get_by_label("Reason").fill("Paid invoice: give the goodwill credit on the next one")
    await page.get_by_role("button", name="Decide").press("Enter")
    await page.wait_for_load_state()
    assert "compensate by test-finance" in await page.locator("#outcome").inner_text()
    audit_rows = await page.locator("table.audit").inner_text()
    assert "exception.compensate" in audit_rows and "test-finance" in audit_rows
    assert await page.locator('form[action^="/console/decide/"]').count() == 0
    await screenshot(page, test, "04-decided")

    async def applied() -> bool:
        return (await credit_state(stack, credit_id))["status"] == "applied"

    assert await eventually(applied, "the credit moved to the next invoice", 90)
    [opened, entry] = stack.adapters.store.audit_entries(exception_id)
    assert opened.action == "exception.opened"
    assert (entry.actor, entry.action) == ("test-finance", "exception.compensate")
    await page.goto(f"{stack.api_url}/console/audit?customer={cid}")
    assert exception_id in await page.locator("table.audit").inner_text()
    await screenshot(page, test, "05-audit")

    # Above finance's approval limit: the workflow's validator refuses, shown in place.
    cid2, org_id, _invoice = await subscribed_customer(stack, "browser-limit")
    ticket = create_ticket_with_credit(
        stack.support, organization_id=int(org_id), amount="45.00", currency="USD",
        reason="API outage on 14 November",
    )  # fmt: skip
    approval_id: list[str] = []

    async def waiting() -> bool:
        await page.goto(f"{stack.api_url}/console/inbox?customer={cid2}&kind=approval")
        links = page.locator(f'tr[data-item^="credit/{ticket["id"]}/"] a')
        if await links.count() == 1:
            approval_id.append(await links.inner_text())
            return True
        return False

    assert await eventually(waiting, "the 45.00 USD credit waiting for approval", 90)
    await page.locator(f'tr[data-item="{approval_id[0]}"] a').click()
    await page.get_by_label("approve").check()
    await page.get_by_label("Reason").fill("outage confirmed")
    await page.get_by_role("button", name="Decide").click()
    await page.wait_for_load_state()
    refusal = await page.locator("#outcome").inner_text()
    assert "over the finance approval limit" in refusal, refusal
    await screenshot(page, test, "06-over-limit")
    state = await credit_state(stack, approval_id[0])
    assert state["status"] in ("awaiting_approval", "reminded", "escalated")
    assert state["approval"] is None

    await page.set_viewport_size({"width": 390, "height": 844})
    await page.goto(f"{stack.api_url}/console/inbox")
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the inbox is {width} px wide at phone width"
    await screenshot(page, test, "07-inbox-phone")

    # A support key signs in but sees no inbox, and is refused it by address.
    await browser.clear_cookies()  # finance signs out by losing its cookie
    support_page = await browser.new_page()
    await sign_in(support_page, stack, "support")
    assert await support_page.get_by_role("link", name="Inbox").count() == 0
    answer = await support_page.goto(f"{stack.api_url}/console/inbox")
    assert answer is not None and answer.status == 403
    assert "role support may not" in await support_page.locator("main").inner_text()
    await screenshot(support_page, test, "08-support-refused")
