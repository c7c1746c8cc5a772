"""The codec endpoint: the Temporal Web UI (or `temporal --codec-endpoint`) posts the encrypted
payloads it shows here and displays what comes back, decrypted.

Temporal's codec-server protocol: `POST .../encode` and `POST .../decode`, each taking and
returning a Payloads message in protobuf JSON, `{"payloads": [{"metadata": {k: base64},
"data": base64}]}`; the client names its namespace in `X-Namespace`; bad input is a 400.
Only keys of role ops or finance_admin may call it. Browsers reach it from the origins in
LEDGERBRIDGE_CODEC_CORS_ORIGINS (the Web UI), preflight included.
"""

# No `from __future__ import annotations`: FastAPI must see the closures in Depends().
from collections.abc import Callable, Coroutine, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from google.protobuf import json_format
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.api.common.v1 import Payload, Payloads

from adapters.codec import PayloadDecryptionError, codec_from_settings
from adapters.logs import get_logger
from adapters.settings import Settings
from starters.api.auth import ApiKeyring, ApiPrincipal, role_dependency

# The UI sends one event's payloads at a time; Temporal caps a payload at 2 MB.
CODEC_MAX_BYTES = 4 * 1024 * 1024
ALLOWED_HEADERS = "Authorization, Content-Type, X-Namespace"

log = get_logger("ledgerbridge.api.codec")


def codec_router(settings: Settings, keyring: ApiKeyring) -> APIRouter:
    codec = codec_from_settings(settings)
    if codec is None:
        raise ValueError("the codec endpoint needs payload keys (LEDGERBRIDGE_PAYLOAD_KEYS)")
    origins = frozenset(settings.codec_cors_origins)

    def cors_headers(request: Request) -> dict[str, str]:
        origin = request.headers.get("origin")
        if origin is None or origin not in origins:
            return {}
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin",
        }

    class CorsRoute(APIRoute):
        """Every answer of this router carries the CORS headers, refusals included, so the UI
        shows a 401/403 rather than an opaque network error."""

        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def with_cors(request: Request) -> Response:
                headers = cors_headers(request)
                try:
                    response = await handler(request)
                except StarletteHTTPException as exc:
                    exc.headers = {**(exc.headers or {}), **headers}
                    raise
                response.headers.update(headers)
                return response

            return with_cors

    router = APIRouter(prefix="/codec", tags=["ops"], route_class=CorsRoute)
    authorised = role_dependency(keyring, "ops", "finance_admin")

    @router.options("/{action}", include_in_schema=False)
    async def preflight(action: str, request: Request) -> Response:
        headers = cors_headers(request)
        if action not in ("encode", "decode") or not headers:
            return JSONResponse({"error": "origin or path not allowed"}, status_code=400)
        return Response(
            status_code=204,
            headers={
                **headers,
                "Access-Control-Allow-Methods": "POST, OPTIONS",
                "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                "Access-Control-Max-Age": "600",
            },
        )

    @router.post("/encode", summary="Encrypt payloads (Temporal codec-server protocol)")
    async def encode(
        request: Request, principal: Annotated[ApiPrincipal, Depends(authorised)]
    ) -> JSONResponse:
        payloads = await _read_payloads(request)
        encoded = await codec.encode(payloads)
        _log_use("encode", request, principal, len(payloads))
        return _payloads_response(encoded)

    @router.post("/decode", summary="Decrypt payloads (Temporal codec-server protocol)")
    async def decode(
        request: Request, principal: Annotated[ApiPrincipal, Depends(authorised)]
    ) -> JSONResponse:
        payloads = await _read_payloads(request)
        try:
            decoded = await codec.decode(payloads)
        except PayloadDecryptionError as err:
            log.warning("codec decode refused", key_name=principal.name, reason=str(err))
            raise HTTPException(400, str(err)) from None
        _log_use("decode", request, principal, len(payloads))
        return _payloads_response(decoded)

    return router


async def _read_payloads(request: Request) -> list[Payload]:
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > CODEC_MAX_BYTES:
            raise HTTPException(413, f"body larger than {CODEC_MAX_BYTES} bytes")
    message = Payloads()
    try:
        json_format.Parse(bytes(body), message)
    except (json_format.ParseError, UnicodeDecodeError) as err:  # Parse() decodes bytes itself
        first = (str(err).splitlines() or ["invalid"])[0][:200]
        raise HTTPException(400, f"expected Payloads as protobuf JSON: {first}") from None
    return list(message.payloads)


def _payloads_response(payloads: Sequence[Payload]) -> JSONResponse:
    return JSONResponse({"payloads": [json_format.MessageToDict(p) for p in payloads]})


def _log_use(action: str, request: Request, principal: ApiPrincipal, count: int) -> None:
    # Who looked at decrypted data, never what it was.
    log.info(
        f"codec {action}",
        key_name=principal.name,
        role=principal.role,
        namespace=request.headers.get("x-namespace", "")[:200],
        payloads=count,
    )
