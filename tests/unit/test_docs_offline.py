"""/docs loads nothing from another host: its script and stylesheet come from the installed
package, and the OpenAPI document it reads is the app's own, unchanged. /redoc (whose page
fetches Redocly's logo from their CDN) is not served."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from adapters.bootstrap import build_store
from adapters.settings import Settings
from starters.api import create_app


def client_for(tmp_path: Path) -> TestClient:
    settings = Settings(home=tmp_path, store_url=f"sqlite:///{tmp_path / 'store.sqlite'}")
    store = build_store(settings)
    store.migrate()
    return TestClient(create_app(settings, store))


def loaded_urls(page: str) -> list[str]:
    """What the page makes the browser fetch: script and stylesheet addresses, the spec."""
    return re.findall(r"""(?:src|href|url:|spec-url)\s*=?\s*['"]([^'"]+)['"]""", page)


def test_the_docs_pages_load_their_assets_from_this_server_only(tmp_path: Path) -> None:
    client = client_for(tmp_path)
    assert client.get("/redoc").status_code == 404
    for path in ("/docs",):
        page = client.get(path)
        assert page.status_code == 200, path
        urls = loaded_urls(page.text)
        assert urls, f"{path} names no asset"
        assert all(url.startswith("/") for url in urls), (path, urls)
        assert "cdn" not in page.text.lower() and "fonts.googleapis" not in page.text
        for url in urls:
            if url.startswith("/docs/assets/"):
                asset = client.get(url)
                assert asset.status_code == 200 and len(asset.content) > 1000, url
    assert "/openapi.json" in loaded_urls(client.get("/docs").text)


def test_the_assets_are_served_with_their_types_and_nothing_else_is(tmp_path: Path) -> None:
    client = client_for(tmp_path)
    script = client.get("/docs/assets/swagger-ui-bundle.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert "SwaggerUIBundle" in script.text[:2000]
    assert client.get("/docs/assets/swagger-ui.css").headers["content-type"].startswith("text/css")
    for name in ("core.py", "..%2F__init__.py", "LICENSE", "redoc.standalone.js"):
        assert client.get(f"/docs/assets/{name}").status_code == 404


def test_the_openapi_document_is_unchanged_and_lists_no_docs_route(tmp_path: Path) -> None:
    client = client_for(tmp_path)
    spec = client.get("/openapi.json").json()
    assert spec["info"]["title"] == "ledgerbridge"
    assert "/v1/reconciliations" in spec["paths"]
    assert not [p for p in spec["paths"] if p.startswith(("/docs", "/redoc"))]


def test_swagger_ui_is_told_not_to_ask_the_public_validator(tmp_path: Path) -> None:
    assert '"validatorUrl": null' in client_for(tmp_path).get("/docs").text


def test_the_asyncapi_document_is_served_beside_the_openapi_one(tmp_path: Path) -> None:
    from adapters.events.broker import subject_for
    from canonical.facts import DocumentPosted

    document = client_for(tmp_path).get("/asyncapi.json").json()
    assert document["asyncapi"] == "3.0.0"
    channel = document["channels"]["ledger.document_posted.v1"]
    event_type = DocumentPosted.event_type()
    # the address it documents is where the relay publishes
    assert channel["address"].format(subject="in_1") == subject_for(event_type, "in_1")
