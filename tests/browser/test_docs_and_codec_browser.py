"""The API's own browser pages in a real Chromium, with every request to another host refused:
/docs lists the operations from the package's Swagger UI; the codec sign-in works from its own
page (docs/operations.md, "Decoding in the browser"), after which a page of the Web UI's
origin decodes with the cookie alone; another origin's page can neither sign in nor out."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import BrowserContext, Page, Request, Route
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route as StarletteRoute

from adapters.bootstrap import build_store
from adapters.settings import Settings
from starters.api import create_app
from starters.api.auth import key_entry
from tests.browser.conftest import screenshot
from tests.fixtures.servers import free_port, serve_app
from tests.unit.test_codec_sign_in import NAME, PAYLOAD_KEY, sealed_payload

pytestmark = pytest.mark.e2e
OPS_KEY = "lb_browser_ops_1c9e7d"


@contextlib.contextmanager
def api_served(tmp_path: Path, ui_origin: str) -> Iterator[str]:
    """The API alone (no workflow engine is needed by these pages), the codec on."""
    settings = Settings(
        home=tmp_path / "home",
        store_url=f"sqlite:///{tmp_path / 'store.sqlite'}",
        temporal_address="127.0.0.1:1",
        api_keys=[key_entry("browser-ops", "ops", OPS_KEY)],
        payload_keys=[SecretStr(PAYLOAD_KEY)],
        codec_session_secret=SecretStr("codec-session-secret-for-browser-tests-0123"),
        codec_cors_origins=[ui_origin],
    )
    store = build_store(settings)
    store.migrate()
    with serve_app(create_app(settings, store)) as url:
        yield url


@contextlib.contextmanager
def page_server(html: str, port: int | None = None) -> Iterator[str]:
    """A one-page site on its own port: another origin of the same host name."""

    async def index(_request: Any) -> HTMLResponse:
        return HTMLResponse(html)

    with serve_app(Starlette(routes=[StarletteRoute("/", index)]), port=port) as url:
        yield url


async def offline(page: Page) -> list[str]:
    """Refuses (and records) every request that leaves 127.0.0.1, as on a closed network."""
    tried: list[str] = []

    async def only_loopback(route: Route, request: Request) -> None:
        if request.url.startswith(("http://127.0.0.1:", "data:", "blob:")):
            await route.continue_()
        else:
            tried.append(request.url)
            await route.abort("internetdisconnected")

    await page.route("**/*", only_loopback)
    return tried


async def test_docs_lists_the_operations_with_no_network(
    browser: BrowserContext, tmp_path: Path
) -> None:
    with api_served(tmp_path, "http://127.0.0.1:1") as api:
        page = await browser.new_page()
        tried = await offline(page)
        await page.goto(f"{api}/docs")
        operation = page.locator(".opblock-summary-path", has_text="/v1/reconciliations").first
        await operation.wait_for()
        assert await page.locator(".opblock").count() > 20
        await screenshot(page, "docs_offline", "01-docs")
        block = page.locator(".opblock-post", has_text="/v1/reconciliations").first
        await block.locator(".opblock-summary-control").click()
        await block.get_by_text("Request body").wait_for()  # the operation opens
        assert "period_from" in await block.inner_text()
        await screenshot(page, "docs_offline", "02-operation")
        assert tried == [], f"the docs reached for another host: {tried}"


async def test_codec_sign_in_from_chromium_then_the_web_ui_origin_decodes(
    browser: BrowserContext, tmp_path: Path
) -> None:
    test = "codec_sign_in"
    ui_port = free_port()
    with api_served(tmp_path, f"http://127.0.0.1:{ui_port}") as api:
        foreign_forms = "".join(
            FOREIGN_FORM.format(action=f"{api}/codec/{action}", key=key)
            for action, key in (("login", OPS_KEY), ("logout", ""))
        )
        page = await browser.new_page()
        tried = await offline(page)
        # Step 1: sign in at /codec/login (the key field has the focus; Enter sends it).
        await page.goto(f"{api}/codec/login")
        await page.wait_for_function("document.activeElement?.id === 'api_key'")  # autofocus
        await page.keyboard.type(OPS_KEY)
        async with page.expect_navigation() as navigation:
            await page.keyboard.press("Enter")
        answer = await navigation.value
        assert answer is not None and answer.status == 200, await page.content()
        assert "Signed in as browser-ops" in await page.locator("body").inner_text()
        await screenshot(page, test, "01-signed-in")

        # Steps 2-3: the Web UI, under the same host name, calls /codec/decode with the cookie.
        body = await sealed_payload()
        with page_server("<!doctype html><title>Web UI</title>", port=ui_port) as ui:
            ui_page = await browser.new_page()
            await ui_page.goto(ui)
            decoded = await ui_page.evaluate(DECODE, {"url": f"{api}/codec/decode", "body": body})
        assert decoded["status"] == 200, decoded
        [item] = decoded["json"]["payloads"]
        assert json.loads(base64.b64decode(item["data"])) == NAME

        # Another origin (another port of the same host: same site, so the Lax cookie goes
        # along) is refused: its decode call, its sign-in form and its sign-out form.
        with page_server(f"<!doctype html><title>Elsewhere</title>{foreign_forms}") as foreign:
            other = await browser.new_page()
            await other.goto(foreign)
            refused = await other.evaluate(DECODE, {"url": f"{api}/codec/decode", "body": body})
            assert refused["status"] != 200, refused
            for action in ("login", "logout"):
                await other.goto(foreign)
                async with other.expect_navigation() as navigation:
                    await other.locator(f'form[action$="/codec/{action}"] button').click()
                answer = await navigation.value
                assert answer is not None and answer.status == 403, action
                await screenshot(other, test, f"02-foreign-{action}-refused")
        await page.goto(f"{api}/codec/login")
        assert "Signed in as browser-ops" in await page.locator("body").inner_text()
        assert tried == [], f"reached for another host: {tried}"


# What the Temporal Web UI does with "Include cross-origin credentials" ticked.
DECODE = """async ({url, body}) => {
  try {
    const answer = await fetch(url, {method: "POST", credentials: "include",
      headers: {"Content-Type": "application/json", "X-Namespace": "default"},
      body: JSON.stringify(body)});
    return {status: answer.status, json: answer.ok ? await answer.json() : null};
  } catch (err) { return {status: 0, error: String(err)}; }
}"""
FOREIGN_FORM = (
    '<!doctype html><form method="post" action="{action}">'
    '<input type="hidden" name="api_key" value="{key}"><button type="submit">Go</button></form>'
)
