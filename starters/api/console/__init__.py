"""The finance console at /console: server-rendered pages over the API's own operations.

`install` mounts it on the app: the router, its sessions, and the handler that answers a
console refusal as a page (a GET without a session goes to the sign-in page instead).
"""

from __future__ import annotations

from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from adapters.settings import Settings
from starters.api.auth import ApiKeyring
from starters.api.console import customers, reconciliation
from starters.api.console.pages import (
    ConsoleRefusal,
    DecisionsOnce,
    refusal_page,
    router,
)
from starters.api.console.security import PAGE_HEADERS
from starters.api.console.session import ConsoleSessions


def install(app: FastAPI, settings: Settings, keyring: ApiKeyring) -> None:
    app.state.console_sessions = ConsoleSessions.from_settings(settings, keyring)
    app.state.console_decisions = DecisionsOnce()
    app.include_router(router)
    app.include_router(reconciliation.router)
    app.include_router(customers.router)

    @app.exception_handler(ConsoleRefusal)
    async def console_refusal(request: Request, refusal: ConsoleRefusal) -> Response:
        fragment = request.url.path.endswith("/inbox/items")
        if refusal.status == 401 and request.method == "GET" and not fragment:
            target = "/console/sign-in?problem=" + quote(refusal.message.capitalize() + ".")
            return RedirectResponse(target, status_code=303, headers=PAGE_HEADERS)
        return refusal_page(refusal)


__all__ = ["ConsoleRefusal", "install"]
