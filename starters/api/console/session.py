"""The console's sign-in: an API key exchanged for a signed, expiring session cookie.

The cookie holds no key. It is an itsdangerous timestamped token over the holder's name and
role, a keyed fingerprint of the key (so a session ends as soon as its key leaves the keyring
or expires), and the session's CSRF token, which every form of the console carries and every
POST must send back. Signed with LEDGERBRIDGE_CONSOLE_SESSION_SECRET; without it each
process draws a random secret when it starts (sessions end on restart, and several replicas
need the secret set).

Before sign-in there is no session to hold a CSRF token, so the sign-in form's token is a
signed nonce also set in a short-lived cookie (double submit): a page of another site can
neither read the cookie nor forge the signature.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer

from adapters.settings import Settings
from starters.api.auth import ApiKeyExpired, ApiKeyring, ApiPrincipal
from starters.api.session_keys import SessionKeys

SESSION_COOKIE = "ledgerbridge_console_session"
SIGN_IN_COOKIE = "ledgerbridge_console_sign_in"
COOKIE_PATH = "/console"
SIGN_IN_MAX_AGE = 30 * 60


class SessionRefused(Exception):
    """The cookie does not (or no longer) stand for a signed-in key; the message says why."""


@dataclass(frozen=True)
class ConsoleSession:
    principal: ApiPrincipal
    csrf_token: str
    token: str


class ConsoleSessions:
    """Issues and checks console sessions against the keyring as it is at each use."""

    def __init__(
        self,
        keyring: ApiKeyring,
        secret: bytes | None,
        max_age_seconds: int,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = SessionKeys(
            secret, "LEDGERBRIDGE_CONSOLE_SESSION_SECRET", "console session", max_age_seconds
        )
        self._secret = self._keys.secret
        self._keyring = keyring
        self.max_age_seconds = max_age_seconds
        self._clock = clock
        self._sessions = _serializer(self._secret, "ledgerbridge-console-session", clock)
        self._sign_in = _serializer(self._secret, "ledgerbridge-console-sign-in", clock)

    @classmethod
    def from_settings(cls, settings: Settings, keyring: ApiKeyring) -> ConsoleSessions:
        secret = settings.console_session_secret
        return cls(
            keyring,
            None if secret is None else secret.get_secret_value().encode(),
            settings.console_session_max_age_seconds,
        )

    def issue(self, key: str, principal: ApiPrincipal) -> ConsoleSession:
        """A session for the holder of `key` (already authenticated by the caller)."""
        csrf = secrets.token_urlsafe(24)
        fingerprint = self._keys.fingerprint_of_key(key)
        claims = {"n": principal.name, "r": principal.role, "k": fingerprint, "c": csrf}
        return ConsoleSession(principal, csrf, self._sessions.dumps(claims))

    def check(self, token: str) -> ConsoleSession:
        """The session `token` stands for, if its signature holds, it has not expired and its
        key is still configured, unexpired, for the same name and role; else SessionRefused."""
        try:
            claims = self._sessions.loads(token, max_age=self.max_age_seconds)
            name, role, fingerprint, csrf = (claims[k] for k in ("n", "r", "k", "c"))
        except SignatureExpired:
            raise SessionRefused("your session has expired; sign in again") from None
        except (BadSignature, KeyError, TypeError):
            raise SessionRefused("you are not signed in") from None
        try:
            principal = self._keys.holder(self._keyring, str(fingerprint))
        except ApiKeyExpired as expired:
            raise SessionRefused(f"the session's {expired}; sign in with a new key") from None
        if principal != ApiPrincipal(name, role):
            raise SessionRefused("the session's API key is no longer configured; sign in again")
        return ConsoleSession(principal, str(csrf), token)

    def sign_in_token(self) -> str:
        """A fresh token for the sign-in form and its cookie."""
        return self._sign_in.dumps(secrets.token_urlsafe(16))

    def sign_in_token_holds(self, cookie: str | None, form: str | None) -> bool:
        """Whether the sign-in form sent back the token of its own cookie, signed by us and
        not older than SIGN_IN_MAX_AGE."""
        if not cookie or not form or not hmac.compare_digest(cookie, form):
            return False
        try:
            self._sign_in.loads(form, max_age=SIGN_IN_MAX_AGE)
        except BadSignature:  # SignatureExpired included
            return False
        return True


def _serializer(secret: bytes, salt: str, clock: Callable[[], float]) -> URLSafeTimedSerializer:
    """itsdangerous's timed serializer, its timestamps read from `clock` (tests move time)."""

    class ClockedSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(clock())

    return URLSafeTimedSerializer(secret, salt=salt, signer=ClockedSigner)
