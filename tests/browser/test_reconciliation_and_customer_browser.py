"""Reconciliation and the customer view in a real browser against the real stack: finance
starts a run for today from the console, sees it listed and opens its report; then opens a
subscribed customer's page and finds its ERP and support ids, its journal postings and its
running subscription, with a link to the Temporal Web UI; both readable at phone width."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from playwright.async_api import BrowserContext, Page

from adapters.store.reconciliation import ReconciliationStore
from tests.browser.conftest import screenshot
from tests.browser.test_console_browser import sign_in
from tests.e2e.conftest import Stack, eventually
from tests.e2e.test_credits_e2e import subscribed_customer

pytestmark = pytest.mark.e2e


# The outermost elements reaching past the viewport, to name what is too wide.
WIDEST = """[...document.querySelectorAll("main *")]
  .filter(e => e.getBoundingClientRect().right > 392)
  .slice(0, 5).map(e => e.tagName + "." + e.className + " " + e.textContent.slice(0, 40))"""


async def fits_a_phone(page: Page) -> None:
    await page.set_viewport_size({"width": 390, "height": 844})
    width = await page.evaluate("document.documentElement.scrollWidth")
    wide = await page.evaluate(WIDEST)
    assert width <= 390, f"{page.url} is {width} px wide at phone width: {wide}"
    await page.set_viewport_size({"width": 1280, "height": 900})


async def test_finance_starts_a_reconciliation_and_reads_a_customer_in_the_browser(
    stack: Stack, in_process_worker: None, browser: BrowserContext
) -> None:
    test = "reconciliation_and_customer"
    cid, org_id, invoice_id = await subscribed_customer(stack, "browser-customer")

    async def posted() -> bool:
        return any(p.source_document_id == invoice_id for p in stack.adapters.store.postings(cid))

    await eventually(posted, "the first invoice journaled as posted to the ERP", 90)
    page = await browser.new_page()
    await sign_in(page, stack, "finance")

    # Start a run for today by keyboard: the form's first field is the first day.
    await page.get_by_role("link", name="Reconciliation").click()
    await page.wait_for_load_state()
    today = datetime.now(UTC).date().isoformat()
    await page.get_by_label("First day (UTC)").fill(today)
    await page.get_by_role("button", name="Start a run").press("Enter")
    await page.wait_for_load_state()
    notice = await page.locator("#outcome").inner_text()
    assert f"Started recon/{today}" in notice, notice
    await screenshot(page, test, "01-run-started")

    recon = ReconciliationStore(stack.adapters.store)

    async def finished() -> str | None:
        runs = [r for r in recon.latest_runs(5) if r.run_id.startswith(f"recon/{today}")]
        return runs[0].run_id if runs and runs[0].status == "done" else None

    run_id = await eventually(finished, "the reconciliation run to finish", 120)
    await page.reload()
    await page.locator(f'tr[data-run="{run_id}"] a').click()
    await page.wait_for_load_state()
    main = await page.locator("main").inner_text()
    assert run_id in main and "Totals per class and currency" in main and "done" in main
    assert invoice_id in await page.locator("table.items").inner_text()
    await screenshot(page, test, "02-run-report")
    row = page.locator("table.items tbody tr", has_text=invoice_id).first
    invoice_class = await row.locator("td").first.inner_text()
    await page.get_by_label("Class", exact=True).select_option(invoice_class)
    await page.get_by_role("button", name="Show").click()
    await page.wait_for_load_state()
    assert f"class={invoice_class}" in page.url
    classes = await page.locator("table.items tbody td:first-child").all_inner_texts()
    assert classes and set(classes) == {invoice_class}
    await fits_a_phone(page)

    # The customer view: reached from the nav by its id.
    await page.get_by_role("link", name="Customers").click()
    await page.get_by_label("Billing customer id").fill(cid)
    await page.get_by_label("Billing customer id").press("Enter")
    await page.wait_for_load_state()
    assert page.url.endswith(f"/console/customers/{cid}")
    ids = await page.locator("table.ids").inner_text()
    party = await stack.adapters.ledger.find_party(cid)
    assert party is not None and party.external_id in ids and org_id in ids
    assert invoice_id in await page.locator("table.postings").inner_text()
    running = page.locator("table.processes")
    assert "subscription/" in await running.inner_text()
    web_ui = await running.get_by_role("link").first.get_attribute("href")
    assert web_ui and "/namespaces/default/workflows/subscription%2F" in web_ui
    await screenshot(page, test, "03-customer")
    await fits_a_phone(page)
