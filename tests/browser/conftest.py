"""A real headless browser for the console's tests: Debian's chromium, driven by Playwright
for Python through `executable_path` (Playwright never downloads a browser here).

The flags keep Chromium off the network it would otherwise try at start (component updates,
sync, QUIC probes): on a closed network it hangs on those lookups. Each test gets a fresh
profile directory. In CI (CI=true) a missing browser fails the run; elsewhere it skips.

Screenshots go to test-artifacts/browser/ (ignored by git), one per page a test visits.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from playwright.async_api import BrowserContext, Page, async_playwright

# The end-to-end stack (dev server, real Tryton, sandboxes, API, worker) of tests/e2e.
from tests.e2e.conftest import in_process_worker, stack  # noqa: F401
from tests.fixtures.system_tools import missing_tool

CHROMIUM = os.environ.get("LEDGERBRIDGE_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "browser"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

# Injected into every page before its own scripts (not subject to the page's CSP): records
# what the CSP refuses, so a test sees the console's pages work under their own policy.
CSP_WATCH = """
window.cspRefusals = [];
document.addEventListener("securitypolicyviolation", function (event) {
  window.cspRefusals.push(event.violatedDirective + " " + (event.blockedURI || "inline"));
});
"""


def chromium_path() -> str:
    """Debian's chromium; its absence fails in CI and skips elsewhere."""
    found = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if found:
        return found
    missing_tool(f"no chromium at {CHROMIUM}: apt-get install -y chromium (.ci/run does)")


@pytest_asyncio.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    executable = chromium_path()
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=executable,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(20_000)
        await context.add_init_script(CSP_WATCH)
        try:
            yield context
        finally:
            await context.close()


async def screenshot(page: Page, test: str, name: str) -> Path:
    """Writes a full-page screenshot as a test artifact and returns its path, once the page is
    seen to have had nothing of its own refused by its Content-Security-Policy."""
    refused = await page.evaluate("window.cspRefusals || []")
    assert refused == [], f"{name}: the page's CSP refused {refused}"
    folder = ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]", "_", test)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path
