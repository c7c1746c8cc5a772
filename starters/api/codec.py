"""The codec endpoint: the Temporal Web UI (or `temporal --codec-endpoint`) posts the encrypted
payloads it shows here and displays what comes back, decrypted.

Temporal's codec-server protocol: `POST .../encode` and `POST .../decode`, each taking and
returning a Payloads message in protobuf JSON, `{"payloads": [{"metadata": {k: base64},
"data": base64}]}`; the client names its namespace in `X-Namespace`; bad input is a 400.
Only keys of role ops or finance_admin may call it, as `Authorization: Bearer <key>` or, from
a browser, through a session cookie got at `/codec/login` (see starters/api/codec_session.py).
Browsers reach it from the origins in LEDGERBRIDGE_CODEC_CORS_ORIGINS (the Web UI), preflight
included, with credentials; a cookie-authenticated call from any other origin is refused 403.
"""

# No `from __future__ import annotations`: FastAPI must see the Annotated dependencies.
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, HTTPException, Request, Response, Security
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import APIKeyCookie
from google.protobuf import json_format
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from temporalio.api.common.v1 import Payload, Payloads

from adapters.codec import AesGcmCodec, PayloadDecryptionError, codec_from_settings
from adapters.logs import get_logger
from adapters.settings import Settings
from adapters.store import IntegrationStore
from starters.api.auth import (
    UNKNOWN_KEY,
    ApiKeyExpired,
    ApiKeyring,
    ApiPrincipal,
    admit,
    bearer_key,
    principal_for_key,
)
from starters.api.codec_session import (
    COOKIE_NAME,
    COOKIE_PATH,
    PAGE_HEADERS,
    CodecSession,
    CodecSessions,
    SessionRefused,
    login_page,
    refused_page,
    signed_in_page,
    signed_out_page,
)
from starters.api.console.security import CrossSiteRefused, check_same_origin
from starters.api.dependencies import BearerDeclared, KeyringDep, SettingsDep, StoreDep
from starters.api.errors import ErrorBody, error_answers

# The UI sends one event's payloads at a time; Temporal caps a payload at 2 MB.
CODEC_MAX_BYTES = 4 * 1024 * 1024
LOGIN_MAX_BYTES = 4 * 1024
CODEC_ROLES = ("ops", "finance_admin")
# What the Web UI may send (Authorization and Authorization-Extras: its own OIDC tokens when
# "Pass the user access token" is ticked); Caller-Type is what it adds to its own API calls.
ALLOWED_HEADERS = "Authorization, Authorization-Extras, Caller-Type, Content-Type, X-Namespace"

log = get_logger("ledgerbridge.api.codec")


@dataclass(frozen=True)
class CodecService:
    """What the codec endpoint holds for the app's life: the payload codec, the Web UI's
    origins, and the browser sessions."""

    codec: AesGcmCodec
    origins: frozenset[str]
    sessions: CodecSessions

    @classmethod
    def from_settings(cls, settings: Settings, keyring: ApiKeyring) -> "CodecService":
        codec = codec_from_settings(settings)
        if codec is None:
            raise ValueError("the codec endpoint needs payload keys (LEDGERBRIDGE_PAYLOAD_KEYS)")
        sessions = CodecSessions.from_settings(settings, keyring)
        if sessions.secret_is_random:
            log.info("codec sessions end when this process stops (no codec session secret set)")
        return cls(codec, frozenset(settings.codec_cors_origins), sessions)


def get_codec(request: Request) -> CodecService:
    service: CodecService = request.app.state.codec
    return service


CodecDep = Annotated[CodecService, Depends(get_codec)]
# Declared for the OpenAPI document; the session itself is checked by `authorised`.
session_cookie = APIKeyCookie(
    name=COOKIE_NAME,
    auto_error=False,
    scheme_name="CodecSession",
    description="A browser's session, got by signing in at /codec/login.",
)


def cors_headers(request: Request) -> dict[str, str]:
    origin = request.headers.get("origin")
    if origin is None or origin not in get_codec(request).origins:
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


router = APIRouter(
    prefix="/codec",
    tags=["ops"],
    route_class=CorsRoute,
    responses={
        400: {"model": ErrorBody, "description": "not Payloads, or not decryptable"},
        **error_answers(401, 403, 413, 429),
    },
)


def authorised(
    request: Request,
    keyring: KeyringDep,
    service: CodecDep,
    _bearer: BearerDeclared,
    _cookie: Annotated[str | None, Security(session_cookie)],
) -> ApiPrincipal:
    """The Bearer key's holder, else the signed-in browser's; 401, 403 or 429 as for
    /v1. A Bearer the keyring does not know (the UI's own OIDC token) defers to the cookie."""
    principal = principal_for_key(keyring, bearer_key(request.headers.get("authorization")))
    token = request.cookies.get(COOKIE_NAME)
    if principal is None and token:
        principal = session_principal(request, service, token)
    return admit(keyring, principal, CODEC_ROLES)


def session_principal(request: Request, service: CodecService, token: str) -> ApiPrincipal:
    origin = request.headers.get("origin")
    if origin not in service.origins:
        # The browser attaches the cookie to any site's request: only the UI may use it.
        log.warning("codec session used from a foreign origin", origin=(origin or "")[:200])
        raise HTTPException(
            403, "a signed-in browser may call the codec only from the Web UI's origin"
        )
    try:
        return service.sessions.check(token).principal
    except SessionRefused as refused:
        raise HTTPException(401, str(refused)) from None


async def audit(
    request: Request,
    store: IntegrationStore,
    action: str,
    principal: ApiPrincipal | None,
    **details: Any,
) -> None:
    await run_in_threadpool(
        store.append_audit,
        actor=principal.name if principal else "unknown",
        role=principal.role if principal else "none",
        action=action,
        subject="codec/session",
        correlation_id=request.state.correlation_id,
        details=details,
    )


def page(content: str, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return HTMLResponse(content, status_code=status, headers={**PAGE_HEADERS, **(headers or {})})


def endpoint_of(request: Request) -> str:
    """The codec endpoint as this browser reached it: what the Web UI should call."""
    return str(request.url.replace(query="", fragment="")).removesuffix("/login")


def cookie_flags(request: Request, settings: Settings) -> dict[str, Any]:
    secure = settings.codec_cookie_always_secure or request.url.scheme == "https"
    return {"path": COOKIE_PATH, "secure": secure, "httponly": True, "samesite": "lax"}


def current_session(request: Request, sessions: CodecSessions) -> CodecSession | None:
    token = request.cookies.get(COOKIE_NAME)
    try:
        return sessions.check(token) if token else None
    except SessionRefused:
        return None


async def refuse_sign_in(
    request: Request,
    store: IntegrationStore,
    status: int,
    reason: str,
    principal: ApiPrincipal | None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    key_name = principal.name if principal else None
    log.warning("codec sign-in refused", status=status, reason=reason, key_name=key_name)
    # Only a refusal that got past the key's rate limit (a valid key of another role) is
    # audited; unknown, expired and throttled keys are only logged, so nobody can grow
    # the append-only audit trail faster than the rate limit lets them.
    if principal is not None and status == 403:
        await audit(
            request, store, "codec.sign_in_refused", principal, status=status, reason=reason
        )
    return page(refused_page(status, reason), status, headers)


def foreign_form(request: Request) -> bool:
    """A browser posting from another site's page (login or logout CSRF): the console's own
    check (an Origin other than ours, `null` included, or a Sec-Fetch-Site other than
    same-origin); clients that send neither header (curl, scripts) are not browsers acting
    for someone else."""
    try:
        check_same_origin(request)
    except CrossSiteRefused:
        return True
    return False


@router.get("/login", include_in_schema=False)
async def login_form(request: Request, service: CodecDep, settings: SettingsDep) -> Response:
    session = current_session(request, service.sessions)
    if session is not None:
        return page(signed_in_page(session, endpoint_of(request), settings.codec_cors_origins))
    return page(login_page())


@router.post("/login", include_in_schema=False)
async def login(
    request: Request,
    service: CodecDep,
    keyring: KeyringDep,
    settings: SettingsDep,
    store: StoreDep,
) -> Response:
    """Checks the key exactly as the Bearer path does; sets a session cookie, never the key."""
    if foreign_form(request):
        return page(login_page("Sign in from this page, not another site's."), 403)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        return page(login_page("Send the sign-in form."), 415)
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > LOGIN_MAX_BYTES:
            return page(login_page("The sign-in form is too large."), 413)
    try:
        form = parse_qs(body.decode("utf-8", "replace"), max_num_fields=8)
    except ValueError:  # more fields than a sign-in form has
        return page(login_page("Send the sign-in form."), 400)
    key = (form.get("api_key") or [""])[0].strip()

    try:
        principal = keyring.authenticate(key)
    except ApiKeyExpired as expired:
        return await refuse_sign_in(request, store, 401, str(expired), expired.principal)
    if principal is None:
        return await refuse_sign_in(request, store, 401, UNKNOWN_KEY, None)
    try:
        admit(keyring, principal, CODEC_ROLES)  # the rate limit, then the role
    except HTTPException as refused:
        return await refuse_sign_in(
            request, store, refused.status_code, str(refused.detail), principal, refused.headers
        )

    session = service.sessions.issue(key, principal)
    expires_at = session.expires_at.isoformat()
    log.info("codec sign-in", key_name=principal.name, role=principal.role, expires_at=expires_at)
    await audit(request, store, "codec.signed_in", principal, expires_at=expires_at)
    response = page(signed_in_page(session, endpoint_of(request), settings.codec_cors_origins))
    response.set_cookie(
        COOKIE_NAME,
        session.token,
        max_age=service.sessions.max_age_seconds,
        **cookie_flags(request, settings),
    )
    return response


@router.post("/logout", include_in_schema=False)
async def logout(
    request: Request, service: CodecDep, settings: SettingsDep, store: StoreDep
) -> Response:
    if foreign_form(request):
        return page(login_page("Sign out from this page, not another site's."), 403)
    session = current_session(request, service.sessions)
    if session is not None:
        log.info("codec sign-out", key_name=session.principal.name)
        await audit(request, store, "codec.signed_out", session.principal)
    response = page(signed_out_page())
    response.delete_cookie(COOKIE_NAME, **cookie_flags(request, settings))
    return response


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


# The body is read raw (protobuf JSON); declared here so clients know its shape.
# Protobuf's JSON mapping reads null as the field's default.
PAYLOADS_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "payloads": {
                            "type": ["array", "null"],
                            "items": {
                                "type": "object",
                                "properties": {
                                    "metadata": {
                                        "type": ["object", "null"],
                                        "additionalProperties": {
                                            "type": "string",
                                            "format": "byte",
                                        },
                                    },
                                    "data": {"type": ["string", "null"], "format": "byte"},
                                },
                                "additionalProperties": False,
                            },
                        }
                    },
                    "additionalProperties": False,
                }
            }
        },
    }
}


@router.post(
    "/encode",
    summary="Encrypt payloads (Temporal codec-server protocol)",
    openapi_extra=PAYLOADS_BODY,
)
async def encode(
    request: Request, principal: Annotated[ApiPrincipal, Depends(authorised)], service: CodecDep
) -> JSONResponse:
    payloads = await _read_payloads(request)
    encoded = await service.codec.encode(payloads)
    _log_use("encode", request, principal, len(payloads))
    return _payloads_response(encoded)


@router.post(
    "/decode",
    summary="Decrypt payloads (Temporal codec-server protocol)",
    openapi_extra=PAYLOADS_BODY,
)
async def decode(
    request: Request, principal: Annotated[ApiPrincipal, Depends(authorised)], service: CodecDep
) -> JSONResponse:
    payloads = await _read_payloads(request)
    try:
        decoded = await service.codec.decode(payloads)
    except PayloadDecryptionError as err:
        log.warning("codec decode refused", key_name=principal.name, reason=str(err))
        raise HTTPException(400, str(err)) from None
    _log_use("decode", request, principal, len(payloads))
    return _payloads_response(decoded)


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
