"""Browser sign-in for the codec endpoint: the Temporal Web UI cannot send our API key, but it
can send cookies (its Codec Server setting "Include cross-origin credentials").

An operator opens `/codec/login` once, gives an ops or finance_admin key, and gets a session
cookie; the UI's calls to `/codec/decode` then carry it. The cookie holds no key: it is a
token `v1.<payload>.<signature>`, the payload naming the key's holder (name, role), a keyed
fingerprint of the key (HMAC of its digest, so a session ends when its key leaves the keyring
or expires, even while the name stays configured with a newer key), and the session's expiry;
the signature is HMAC-SHA256 with LEDGERBRIDGE_CODEC_SESSION_SECRET.

Without that secret each process draws a random one when it starts: sessions then end on
every restart, and an API run as several processes (replicas, uvicorn workers) needs the
secret set, or a session signed by one process is refused by the others.

The cookie is HttpOnly, SameSite=Lax, Path=/codec, Secure over https (or always, with
LEDGERBRIDGE_CODEC_COOKIE_ALWAYS_SECURE behind a TLS-ending proxy). Lax suffices because
the Web UI and the API are the same site (same host name, other port); it also means the
operator must open the Web UI under the host name of its codec endpoint (127.0.0.1 is not
localhost). Since the browser attaches the cookie on its own, a request authenticated by it
is accepted only from an origin in LEDGERBRIDGE_CODEC_CORS_ORIGINS (the CSRF guard).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from adapters.settings import Settings
from starters.api.auth import ApiKeyExpired, ApiKeyring, ApiPrincipal
from starters.api.session_keys import SessionKeys

COOKIE_NAME = "ledgerbridge_codec_session"
COOKIE_PATH = "/codec"
_VERSION = "v1"


class SessionRefused(Exception):
    """The cookie does not (or no longer) stand for a signed-in key; the message says why,
    without echoing the cookie."""


@dataclass(frozen=True)
class CodecSession:
    token: str
    principal: ApiPrincipal
    expires_at: datetime


class CodecSessions:
    """Issues and checks session tokens against the keyring as it is at each use."""

    def __init__(
        self,
        keyring: ApiKeyring,
        secret: bytes | None,
        max_age_seconds: int,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = SessionKeys(
            secret, "LEDGERBRIDGE_CODEC_SESSION_SECRET", "codec session", max_age_seconds
        )
        self.secret_is_random = self._keys.secret_is_random
        self._secret = self._keys.secret
        self._keyring = keyring
        self.max_age_seconds = max_age_seconds
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, keyring: ApiKeyring) -> CodecSessions:
        secret = settings.codec_session_secret
        return cls(
            keyring,
            None if secret is None else secret.get_secret_value().encode(),
            settings.codec_session_max_age_seconds,
        )

    def issue(self, key: str, principal: ApiPrincipal) -> CodecSession:
        """A session for the holder of `key` (already authenticated by the caller)."""
        expires = int(self._clock()) + self.max_age_seconds
        fingerprint = self._keys.fingerprint_of_key(key)
        claims = {"n": principal.name, "r": principal.role, "k": fingerprint, "x": expires}
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        token = f"{_VERSION}.{payload}.{self._sign(payload)}"
        return CodecSession(token, principal, datetime.fromtimestamp(expires, UTC))

    def check(self, token: str) -> CodecSession:
        """The session `token` stands for, if its signature holds, it has not expired and its
        key is still configured, unexpired, for the same name and role; else SessionRefused."""
        version, _, rest = token.partition(".")
        payload, _, signature = rest.partition(".")
        expected = self._sign(payload).encode()
        if version != _VERSION or not hmac.compare_digest(signature.encode(), expected):
            raise SessionRefused("codec session not recognised; sign in again at /codec/login")
        try:
            claims = json.loads(_unb64(payload))
            name, role, fingerprint, expires = (claims[k] for k in ("n", "r", "k", "x"))
        except (ValueError, KeyError, TypeError):  # signed by us: cannot happen
            raise SessionRefused("codec session not recognised") from None
        if not (isinstance(expires, int) and isinstance(fingerprint, str)):
            raise SessionRefused("codec session not recognised")
        if self._clock() >= expires:
            raise SessionRefused("codec session expired; sign in again at /codec/login")
        try:
            principal = self._keys.holder(self._keyring, fingerprint)
        except ApiKeyExpired as expired:
            raise SessionRefused(f"the session's {expired}") from None
        if principal != ApiPrincipal(name, role):
            raise SessionRefused("the session's API key is no longer configured")
        return CodecSession(token, principal, datetime.fromtimestamp(expires, UTC))

    def _sign(self, payload: str) -> str:
        mac = hmac.new(self._secret, b"codec-session-token\x00" + payload.encode(), hashlib.sha256)
        return _b64(mac.digest())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# --- the pages ------------------------------------------------------------------------
# Self-contained: no script, no external asset; the CSP allows only this one style block.

_STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;max-width:34rem;margin:4rem auto;padding:0 1rem;"
    "color:#1b1b1f}h1{font-size:1.4rem}input[type=password]{width:100%;padding:.5rem;"
    "font:inherit;box-sizing:border-box}button{margin-top:1rem;padding:.5rem 1.2rem;"
    "font:inherit}.note{color:#555;font-size:.9rem}code{background:#f1f1f4;padding:0 .2rem}"
)
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
PAGE_HEADERS = {
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
    # Not no-referrer: with it Chromium sends `Origin: null` on the page's own form, which
    # the cross-site check (rightly) refuses. same-origin still tells other sites nothing.
    "Referrer-Policy": "same-origin",
}


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)} · ledgerbridge codec</title><style>{_STYLE}</style>"
        f"</head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def login_page(problem: str | None = None) -> str:
    said = f"<p><strong>{html.escape(problem)}</strong></p>" if problem else ""
    # Relative action: the form posts back to this page's own path, behind any prefix.
    return _page(
        "Sign in to decode payloads",
        f"{said}<p>The Temporal Web UI shows workflow data decrypted through this codec "
        "endpoint. Sign in with an API key of role <code>ops</code> or "
        "<code>finance_admin</code>; the browser then keeps a session cookie (never the key) "
        'for this endpoint.</p><form method="post" action="login">'
        '<label for="api_key">API key</label>'
        '<input id="api_key" name="api_key" type="password" autocomplete="off" required '
        'autofocus><button type="submit">Sign in</button></form>',
    )


def signed_in_page(session: CodecSession, endpoint: str, ui_origins: Iterable[str]) -> str:
    links = ", ".join(
        f'<a href="{html.escape(origin)}">{html.escape(origin)}</a>' for origin in ui_origins
    )
    until = session.expires_at.strftime("%Y-%m-%d %H:%M UTC")
    return _page(
        "Signed in",
        f"<p>Signed in as <strong>{html.escape(session.principal.name)}</strong> (role "
        f"<code>{html.escape(session.principal.role)}</code>) until {until}.</p>"
        "<p>In the Temporal Web UI, open the <strong>Codec Server</strong> settings, choose "
        "<em>Use my browser setting</em>, enter the endpoint "
        f"<code>{html.escape(endpoint)}</code>, tick <strong>Include cross-origin "
        "credentials</strong> and apply: payloads then show decrypted. Open the Web UI under "
        "the same host name as this page (127.0.0.1 and localhost are different sites).</p>"
        f'<p class="note">Web UI origins allowed: {links or "none configured"}</p>'
        '<form method="post" action="logout"><button type="submit">Sign out</button></form>',
    )


def signed_out_page() -> str:
    return _page(
        "Signed out",
        '<p>The codec session is closed in this browser.</p><p><a href="login">Sign in</a></p>',
    )


def refused_page(status: int, reason: str) -> str:
    return login_page(f"Sign-in refused ({status}): {reason}")
