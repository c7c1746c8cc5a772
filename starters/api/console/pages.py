"""The console's pages: sign-in, the inbox, an item's detail and decision, the audit trail.

Every operation is the API's own (starters/api/finance.py, credits.py): the same reads of
Temporal, the same Updates whose validators judge a decision, the same roles through
`admit`. A refusal is a page (or the form again, with the refusal in place), never JSON.
"""

# No `from __future__ import annotations`: FastAPI must see the Annotated dependencies.
import asyncio
import re
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from adapters.logs import get_logger
from adapters.settings import Settings
from starters.api import credits, finance
from starters.api.auth import ApiKeyring, admit, principal_for_key
from starters.api.console import audit
from starters.api.console.inbox import PROCESSES, InboxFilters, read_inbox
from starters.api.console.security import (
    PAGE_HEADERS,
    STATIC_HEADERS,
    CrossSiteRefused,
    check_same_origin,
    cookie_is_secure,
    tokens_match,
)
from starters.api.console.session import (
    COOKIE_PATH,
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    SIGN_IN_MAX_AGE,
    ConsoleSession,
    ConsoleSessions,
    SessionRefused,
)
from starters.api.dependencies import KeyringDep, SettingsDep, StoreDep, TemporalDep
from starters.api.temporal import TemporalConnection, TemporalUnavailable

log = get_logger("ledgerbridge.api.console")
HERE = Path(__file__).parent
STATIC = {"console.css": "text/css", "console.js": "text/javascript"}
# The roles of each page, as the API's: finance_readers, finance_deciders.
READERS = ("finance", "finance_admin", "ops")
DECIDERS = ("finance", "finance_admin")
EXCEPTION_DECISIONS = ("retry", "compensate", "resolve_manually", "reject")
CREDIT_DECISIONS = ("approve", "reject")
REFRESH_SECONDS = 15
FORM_LIMIT = 16 * 1024
IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9_\-]{8,64}$")

templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _amount(value: Decimal) -> str:
    """A stored amount (six decimals) as finance writes it: 8.00, 0.125, 1200.00."""
    exponent = value.normalize().as_tuple().exponent
    decimals = max(2, -exponent) if isinstance(exponent, int) else 2
    return f"{value:.{decimals}f}"


templates.filters["amount"] = _amount

router = APIRouter(prefix="/console", include_in_schema=False)


class ConsoleRefusal(Exception):
    """Answered as a page with `status`; `session` decides what the page's header offers."""

    def __init__(self, status: int, message: str, session: ConsoleSession | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.session = session


def render(
    template: str, status: int = 200, session: ConsoleSession | None = None, **values: Any
) -> HTMLResponse:
    page = templates.get_template(template).render(
        session=session,
        may_read=session is not None and session.principal.role in READERS,
        refresh_seconds=REFRESH_SECONDS,
        **values,
    )
    return HTMLResponse(page, status_code=status, headers=PAGE_HEADERS)


def refusal_page(refusal: ConsoleRefusal) -> HTMLResponse:
    return render(
        "refused.html", refusal.status, refusal.session, title="Refused", message=refusal.message
    )


def sessions_of(request: Request) -> ConsoleSessions:
    sessions: ConsoleSessions = request.app.state.console_sessions
    return sessions


def signed_in(request: Request, keyring: ApiKeyring, roles: tuple[str, ...] = ()) -> ConsoleSession:
    """The request's session if it stands and its role is one of `roles` (any when none);
    takes a token of the key's rate limit, as every API call does."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        raise ConsoleRefusal(401, "you are not signed in")
    try:
        session = sessions_of(request).check(token)
    except SessionRefused as refused:
        raise ConsoleRefusal(401, str(refused)) from None
    try:
        admit(keyring, session.principal, roles)
    except HTTPException as err:
        raise ConsoleRefusal(err.status_code, str(err.detail), session) from None
    return session


async def read_form(request: Request) -> dict[str, str]:
    """A urlencoded form of at most FORM_LIMIT bytes, one value per field."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise ConsoleRefusal(415, "send the console's form")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > FORM_LIMIT:
            raise ConsoleRefusal(413, "the form is too large")
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise ConsoleRefusal(400, "the form could not be read") from None
    return {name: values[0] for name, values in fields.items()}


async def checked_post(
    request: Request, keyring: ApiKeyring, roles: tuple[str, ...] = ()
) -> ConsoleSession:
    """The session of a console form: same origin, signed in, its CSRF token, its role. The
    form is kept as request.state.console_form."""
    try:
        check_same_origin(request)
    except CrossSiteRefused as refused:
        raise ConsoleRefusal(403, str(refused)) from None
    session = signed_in(request, keyring)
    form = await read_form(request)
    request.state.console_form = form
    if not tokens_match(session.csrf_token, form.get("csrf_token")):
        raise ConsoleRefusal(403, "the form's security token is missing or stale", session)
    if roles and session.principal.role not in roles:
        raise ConsoleRefusal(403, f"role {session.principal.role} may not do this", session)
    return session


async def through_api(call: Any, session: ConsoleSession) -> Any:
    """Awaits one of the API's operations; its refusals become the console's."""
    try:
        return await call
    except HTTPException as err:
        raise ConsoleRefusal(err.status_code, str(err.detail), session) from None
    except TemporalUnavailable:
        raise ConsoleRefusal(
            503, "the workflow engine is unavailable; try again", session
        ) from None


def validated(model: type[BaseModel], values: dict[str, Any], session: ConsoleSession) -> Any:
    try:
        return model.model_validate(values)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ())) or "form"
        raise ConsoleRefusal(422, f"{where}: {first.get('msg', 'invalid')}", session) from None


# --- sign-in ------------------------------------------------------------------------------


@router.get("")
async def home(request: Request) -> Response:
    return RedirectResponse("/console/inbox", status_code=303, headers=PAGE_HEADERS)


@router.get("/sign-in")
async def sign_in_form(request: Request, problem: str | None = None) -> Response:
    return _sign_in_page(request, problem[:200] if problem else None)


def _sign_in_page(request: Request, problem: str | None, status: int = 200) -> Response:
    token = sessions_of(request).sign_in_token()
    response = render("sign_in.html", status, title="Sign in", problem=problem, sign_in_token=token)
    response.set_cookie(
        SIGN_IN_COOKIE, token, max_age=SIGN_IN_MAX_AGE, path=COOKIE_PATH, httponly=True,
        samesite="strict", secure=cookie_is_secure(request),
    )  # fmt: skip
    return response


@router.post("/sign-in")
async def sign_in(request: Request, keyring: KeyringDep, store: StoreDep) -> Response:
    try:
        check_same_origin(request)
        form = await read_form(request)
    except CrossSiteRefused as refused:
        return _sign_in_page(request, str(refused), 403)
    except ConsoleRefusal as refusal:
        return _sign_in_page(request, refusal.message, refusal.status)
    api_key, csrf_token = form.get("api_key", ""), form.get("csrf_token", "")
    sessions = sessions_of(request)
    if not sessions.sign_in_token_holds(request.cookies.get(SIGN_IN_COOKIE), csrf_token):
        return _sign_in_page(request, "the sign-in form was stale; please try again", 403)
    try:
        principal = admit(keyring, principal_for_key(keyring, api_key.strip() or None), ())
    except HTTPException as err:
        return _sign_in_page(request, f"sign-in refused: {err.detail}", err.status_code)
    session = sessions.issue(api_key.strip(), principal)
    await run_in_threadpool(
        store.append_audit, actor=principal.name, role=principal.role,
        action="console.signed_in", subject="console/session",
        correlation_id=request.state.correlation_id,
    )  # fmt: skip
    target = "/console/inbox" if principal.role in READERS else "/console/signed-in"
    response = RedirectResponse(target, status_code=303, headers=PAGE_HEADERS)
    response.set_cookie(
        SESSION_COOKIE, session.token, max_age=sessions.max_age_seconds, path=COOKIE_PATH,
        httponly=True, samesite="strict", secure=cookie_is_secure(request),
    )  # fmt: skip
    response.delete_cookie(SIGN_IN_COOKIE, path=COOKIE_PATH)
    return response


@router.get("/signed-in")
async def signed_in_page(request: Request, keyring: KeyringDep) -> Response:
    session = signed_in(request, keyring)
    return render("signed_in.html", session=session, title="Signed in")


@router.post("/sign-out")
async def sign_out(request: Request, keyring: KeyringDep, store: StoreDep) -> Response:
    session = await checked_post(request, keyring)
    await run_in_threadpool(
        store.append_audit, actor=session.principal.name, role=session.principal.role,
        action="console.signed_out", subject="console/session",
        correlation_id=request.state.correlation_id,
    )  # fmt: skip
    response = RedirectResponse(
        "/console/sign-in?problem=" + quote("You are signed out."), status_code=303,
        headers=PAGE_HEADERS,
    )  # fmt: skip
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    return response


# --- inbox --------------------------------------------------------------------------------


async def _inbox_values(
    request: Request, keyring: ApiKeyring, temporal: TemporalConnection
) -> dict[str, Any]:
    session = signed_in(request, keyring, READERS)
    filters = validated(InboxFilters, dict(request.query_params), session)
    inbox = await through_api(read_inbox(temporal, filters), session)
    return {"session": session, "filters": filters, "inbox": inbox}


@router.get("/inbox")
async def inbox_page(request: Request, keyring: KeyringDep, temporal: TemporalDep) -> Response:
    values = await _inbox_values(request, keyring, temporal)
    return render("inbox.html", title="Inbox", processes=PROCESSES, **values)


@router.get("/inbox/items")
async def inbox_items(request: Request, keyring: KeyringDep, temporal: TemporalDep) -> Response:
    """The refreshed region of the inbox page alone (polled by console.js)."""
    return render("_inbox_items.html", **await _inbox_values(request, keyring, temporal))


# --- an item: detail and decision -----------------------------------------------------------


@dataclass
class Decided:
    """What a decision answered, kept per idempotency key so a double submit decides once."""

    message: str


class DecisionsOnce:
    """The outcome of each form submission by its idempotency key (the last few thousand, in
    this process): a second submit of the same form waits for the first and shows its answer
    instead of deciding again."""

    def __init__(self, keep: int = 5000) -> None:
        self._outcomes: OrderedDict[tuple[str, str], asyncio.Future[Decided]] = OrderedDict()
        self._keep = keep

    async def once(self, key: tuple[str, str], decide: Callable[[], Awaitable[Decided]]) -> Decided:
        known = self._outcomes.get(key)
        if known is not None:
            return await asyncio.shield(known)
        future: asyncio.Future[Decided] = asyncio.get_running_loop().create_future()
        self._outcomes[key] = future
        while len(self._outcomes) > self._keep:
            self._outcomes.popitem(last=False)
        try:
            outcome = await decide()
        except BaseException as err:
            del self._outcomes[key]  # refused or failed: the form may be sent again
            future.set_exception(err)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waits
            raise
        future.set_result(outcome)
        return outcome


def _decisions_once(request: Request) -> DecisionsOnce:
    once: DecisionsOnce = request.app.state.console_decisions
    return once


def web_ui_link(settings: Settings, workflow_id: str, run_id: str | None) -> str:
    """The run in the Temporal Web UI (its address from the settings)."""
    base = settings.temporal_ui_url
    if not base:
        host = settings.temporal_address.rsplit(":", 1)[0] or "127.0.0.1"
        base = f"http://{host}:{settings.temporal_ui_port}"
    path = f"/namespaces/{quote(settings.temporal_namespace, safe='')}/workflows/"
    path += quote(workflow_id, safe="")
    if run_id:
        path += f"/{quote(run_id, safe='')}/history"
    return base.rstrip("/") + path


async def _detail_values(
    item_id: str, session: ConsoleSession, temporal: TemporalConnection, store: Any,
    settings: Settings,
) -> dict[str, Any]:  # fmt: skip
    if item_id.startswith("credit/"):
        credit = await through_api(credits.credit_state(temporal, item_id), session)
        subjects = [item_id]
        values: dict[str, Any] = {
            "kind": "approval", "credit": credit, "decisions": CREDIT_DECISIONS,
            "open": credit.status in credits.WAITING, "run_id": None,
        }  # fmt: skip
    else:
        detail = await through_api(finance.exception_detail(temporal, item_id), session)
        subjects = [item_id, detail.origin_workflow_id]
        allowed = [d for d in EXCEPTION_DECISIONS if d in detail.context.allowed_decisions]
        values = {
            "kind": "exception", "exception": detail, "decisions": allowed,
            "open": detail.decision is None, "run_id": detail.run_id,
        }  # fmt: skip
    entries = await run_in_threadpool(audit.entries_of, store, subjects)
    return {
        **values,
        "item_id": item_id,
        "session": session,
        "may_decide": session.principal.role in DECIDERS,
        "audit_entries": entries,
        "web_ui": web_ui_link(settings, item_id, values["run_id"]),
        "idempotency_key": secrets.token_urlsafe(16),
    }


@router.get("/items/{item_id:path}")
async def item_page(
    item_id: str,
    request: Request,
    keyring: KeyringDep,
    temporal: TemporalDep,
    store: StoreDep,
    settings: SettingsDep,
) -> Response:
    session = signed_in(request, keyring, READERS)
    values = await _detail_values(item_id, session, temporal, store, settings)
    return render("item.html", title=item_id, **values)


@router.post("/decide/{item_id:path}")
async def decide(
    item_id: str,
    request: Request,
    keyring: KeyringDep,
    temporal: TemporalDep,
    store: StoreDep,
    settings: SettingsDep,
) -> Response:
    session = await checked_post(request, keyring, DECIDERS)
    form = request.state.console_form
    decision, reason = form.get("decision", ""), form.get("reason", "")
    manual_erp_number, idempotency_key = (
        form.get("manual_erp_number", ""),
        form.get("idempotency_key", ""),
    )
    if not IDEMPOTENCY_KEY.match(idempotency_key):
        raise ConsoleRefusal(422, "the form has no idempotency key; reload the page", session)
    try:
        outcome = await _decisions_once(request).once(
            (session.principal.name, idempotency_key),
            lambda: _decide(item_id, session, temporal, decision, reason, manual_erp_number),
        )
        problem, status, notice = None, 200, outcome.message
        log.info("console decision", item_id=item_id, actor=session.principal.name)
    except ConsoleRefusal as refusal:
        if refusal.status in (401, 403, 404):
            raise
        problem, status, notice = refusal.message, refusal.status, None
    values = await _detail_values(item_id, session, temporal, store, settings)
    return render(
        "item.html", status, title=item_id, problem=problem, notice=notice,
        form={"decision": decision, "reason": reason, "manual_erp_number": manual_erp_number},
        **values,
    )  # fmt: skip


async def _decide(
    item_id: str, session: ConsoleSession, temporal: TemporalConnection, decision: str,
    reason: str, manual_erp_number: str,
) -> Decided:  # fmt: skip
    principal = session.principal
    if item_id.startswith("credit/"):
        if decision not in CREDIT_DECISIONS:
            raise ConsoleRefusal(422, f"a credit is approved or rejected, not {decision!r}")
        body = validated(
            credits.ApprovalBody, {"approve": decision == "approve", "reason": reason}, session
        )
        approval = await through_api(
            credits.decide_approval(temporal, item_id, body, principal), session
        )
        verdict = "approved" if approval.approve else "rejected"
        return Decided(f"{item_id}: {verdict} by {approval.approver} ({approval.role}).")
    fields = {
        "decision": decision,
        "reason": reason,
        "manual_erp_number": manual_erp_number.strip() or None,
    }
    body = validated(finance.DecisionBody, fields, session)
    decided = await through_api(finance.decide(temporal, item_id, body, principal), session)
    return Decided(
        f"{decided.exception_id}: {decided.decision} by {decided.actor} ({decided.role})."
    )


# --- audit trail ----------------------------------------------------------------------------


async def _audit_rows(
    request: Request, keyring: ApiKeyring, temporal: TemporalConnection, store: Any
) -> tuple[ConsoleSession, audit.AuditFilters, list[Any], str | None]:
    session = signed_in(request, keyring, READERS)
    filters = validated(audit.AuditFilters, dict(request.query_params), session)
    subjects: list[str] = []
    note = None
    if filters.customer:
        try:
            subjects = await audit.customer_subjects(temporal, filters.customer)
        except TemporalUnavailable:
            note = "The workflow engine did not answer: only rows naming the customer are shown."
    rows = await run_in_threadpool(audit.search, store, filters, subjects)
    return session, filters, rows, note


@router.get("/audit")
async def audit_page(
    request: Request, keyring: KeyringDep, temporal: TemporalDep, store: StoreDep
) -> Response:
    session, filters, rows, note = await _audit_rows(request, keyring, temporal, store)
    query = urlencode({k: v for k, v in filters.model_dump(mode="json").items() if v})
    return render(
        "audit.html", session=session, title="Audit trail", filters=filters, rows=rows,
        note=note, csv_link=f"/console/audit.csv?{query}", limit=audit.ROW_LIMIT,
    )  # fmt: skip


@router.get("/audit.csv")
async def audit_csv(
    request: Request, keyring: KeyringDep, temporal: TemporalDep, store: StoreDep
) -> Response:
    _session, _filters, rows, _note = await _audit_rows(request, keyring, temporal, store)
    headers = {
        **PAGE_HEADERS,
        "Content-Disposition": 'attachment; filename="ledgerbridge-audit.csv"',
    }
    return Response(audit.as_csv(rows), media_type="text/csv; charset=utf-8", headers=headers)


# --- the console's own files ------------------------------------------------------------------


@router.get("/static/{name}")
async def static_file(name: str) -> Response:
    if name not in STATIC:
        raise ConsoleRefusal(404, "no such file")
    body = (HERE / "static" / name).read_bytes()
    return Response(body, media_type=STATIC[name], headers=STATIC_HEADERS)
