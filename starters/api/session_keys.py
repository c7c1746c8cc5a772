"""What the API's browser sessions (the codec's, the console's) share: their signing secret
and the keyed fingerprint of the API key a session stands for.

A session holds no key, only a fingerprint of it (HMAC of its SHA-256 digest under the
session secret), so it is checked against the keyring as it is at each use: it ends when its
key leaves the keyring or expires, even while the name stays configured with a newer key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from starters.api.auth import ApiKeyring, ApiPrincipal

MIN_SECRET_CHARS = 32
_FINGERPRINT_BYTES = 16


class SessionKeys:
    """A session secret (configured, or drawn per process when `secret` is None) and the
    fingerprints of keys under it; `purpose` keeps one kind of session's apart from another's."""

    def __init__(self, secret: bytes | None, setting: str, purpose: str, max_age_seconds: int):
        if max_age_seconds < 1:
            raise ValueError(f"{purpose} max age must be at least 1 s, not {max_age_seconds}")
        if secret is not None and len(secret) < MIN_SECRET_CHARS:
            raise ValueError(f"{setting} must be at least {MIN_SECRET_CHARS} characters long")
        self.secret_is_random = secret is None
        self.secret = secrets.token_bytes(32) if secret is None else secret
        self._purpose = purpose.replace(" ", "-").encode()

    def fingerprint_of_key(self, key: str) -> str:
        return self.fingerprint(hashlib.sha256(key.encode()).digest())

    def fingerprint(self, digest: bytes) -> str:
        mac = hmac.new(self.secret, self._purpose + b"-key\x00" + digest, hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()[:_FINGERPRINT_BYTES]).rstrip(b"=").decode()

    def holder(self, keyring: ApiKeyring, fingerprint: str) -> ApiPrincipal | None:
        """Who holds the configured key of this fingerprint now (None: no such key); raises
        ApiKeyExpired for a key past its expiry."""
        return keyring.authenticate_matching(
            lambda digest: hmac.compare_digest(self.fingerprint(digest), fingerprint)
        )
