"""What every console response carries, and what every console POST must prove.

Pages load only the console's own stylesheet and script (no inline script or style, so the
CSP needs no hash nor nonce), may not be framed, and are never cached: they show money.
`Referrer-Policy: same-origin` (not no-referrer) keeps Chromium sending the page's real
Origin on its own form posts, which the cross-site check below relies on.

A POST is accepted only when the Origin header, if the browser sent one, is the console's
own origin, and the form carries the CSRF token of its session (or, for sign-in, of its
sign-in cookie). A refused POST changes nothing.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request

PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
STATIC_HEADERS = {
    **PAGE_HEADERS,
    "Cache-Control": "public, max-age=3600",
}


class CrossSiteRefused(Exception):
    """A POST that did not come from a console page of this origin."""


def own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


def check_same_origin(request: Request) -> None:
    """Refuses a POST whose Origin is another site's (or `null`, an opaque one). Browsers send
    Origin on every POST; a client without one (a script) must still hold the CSRF token."""
    origin = request.headers.get("origin")
    if origin is not None and origin != own_origin(request):
        raise CrossSiteRefused(f"a form posted from {origin[:80]!r}, not from the console")
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        raise CrossSiteRefused(f"a form posted from a {fetch_site[:20]} page, not the console")


def tokens_match(expected: str, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(expected.encode(), (sent or "").encode())


def cookie_is_secure(request: Request) -> bool:
    return request.url.scheme == "https"
