"""The API's reference page, /docs (Swagger UI), served with its script and stylesheet from
an installed package (fastapi-offline, pinned in pyproject.toml) instead of FastAPI's default
CDN, so it works on a closed network.

The page is FastAPI's own (`get_swagger_ui_html`) pointed at /docs/assets/; the OpenAPI
document at /openapi.json is untouched. /redoc is not served: ReDoc's page loads its logo
from Redocly's CDN whatever it is told, and /docs shows the same document.
"""

from __future__ import annotations

import functools
from importlib.resources import files
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse, Response

from adapters.events.asyncapi import asyncapi_document, stream_address

ASSETS = files("fastapi_offline") / "static"
ASSET_TYPES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon.png": "image/png",
}
ASSETS_PATH = "/docs/assets"
OAUTH2_REDIRECT = "/docs/oauth2-redirect"

router = APIRouter(include_in_schema=False)


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    root = _root(request)
    return get_swagger_ui_html(
        openapi_url=f"{root}{request.app.openapi_url}",
        title=f"{request.app.title} - Swagger UI",
        oauth2_redirect_url=f"{root}{OAUTH2_REDIRECT}",
        swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
        swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
        swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
        # No badge from the public validator: nothing is fetched from another host.
        swagger_ui_parameters={"validatorUrl": None, **(request.app.swagger_ui_parameters or {})},
    )


@router.get(OAUTH2_REDIRECT)
async def swagger_ui_oauth2_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get(ASSETS_PATH + "/{name}")
async def asset(name: str) -> Response:
    if name not in ASSET_TYPES:
        raise HTTPException(404, "no such file")
    body = (ASSETS / name).read_bytes()
    return Response(
        body, media_type=ASSET_TYPES[name], headers={"Cache-Control": "public, max-age=86400"}
    )


@router.get("/asyncapi.json")
async def asyncapi() -> JSONResponse:
    """The events out (AsyncAPI 3.0), generated from the canonical facts."""
    return JSONResponse(_asyncapi_document())


@functools.cache
def _asyncapi_document() -> dict[str, Any]:
    return asyncapi_document(stream_address)
