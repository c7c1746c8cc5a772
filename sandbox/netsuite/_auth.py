"""Token-based authentication (OAuth 1.0a, RFC 5849) verified on every call, as NetSuite does.

NetSuite's TBA (Help Center, "The Authorization Headers" and "Token-based Authentication"):
`Authorization: OAuth realm="<account id>", oauth_consumer_key, oauth_token, oauth_nonce,
oauth_timestamp, oauth_signature_method="HMAC-SHA256", oauth_version="1.0",
oauth_signature`. The signature is checked by oauthlib's `SignatureOnlyEndpoint` (the
reference implementation), with NetSuite's own rules on top: HMAC-SHA256 only (HMAC-SHA1 was
withdrawn), the realm must be the account id, the token must be the integration's, a nonce
is 6-64 characters and may be used once, and a timestamp must be near the server's clock
(the window is oauthlib's default, 600 s; NetSuite does not document its own). Any refusal is
NetSuite's 401 `INVALID_LOGIN`, which says nothing about which part was wrong.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import Any

from oauthlib.oauth1 import RequestValidator, SignatureOnlyEndpoint
from oauthlib.oauth1.rfc5849 import SIGNATURE_HMAC_SHA256

TIMESTAMP_LIFETIME_SECONDS = 600


@dataclass(frozen=True)
class Credentials:
    """The one integration (consumer) and access token the sandbox account knows."""

    account_id: str
    consumer_key: str
    consumer_secret: str
    token_id: str
    token_secret: str


class _TokenValidator(RequestValidator):  # type: ignore[misc]
    """oauthlib's questions, answered for one account and its one token."""

    def __init__(self, credentials: Credentials) -> None:
        super().__init__()
        self._credentials = credentials
        # (consumer key, token, nonce) -> timestamp: a nonce is good for one request.
        self._nonces: dict[tuple[str, str, str], int] = {}

    enforce_ssl = False  # the sandbox serves plain HTTP on loopback
    allowed_signature_methods = (SIGNATURE_HMAC_SHA256,)
    timestamp_lifetime = TIMESTAMP_LIFETIME_SECONDS
    # NetSuite's keys and secrets are 64 hex characters; nonces 6-64 characters.
    client_key_length = (20, 64)
    access_token_length = (20, 64)
    nonce_length = (6, 64)

    @property
    def dummy_client(self) -> str:
        return "0" * 64

    @property
    def dummy_access_token(self) -> str:
        return "0" * 64

    def validate_client_key(self, client_key: str, request: Any) -> bool:
        return hmac.compare_digest(client_key, self._credentials.consumer_key)

    def get_client_secret(self, client_key: str, request: Any) -> str:
        if hmac.compare_digest(client_key, self._credentials.consumer_key):
            return self._credentials.consumer_secret
        return "dummy-secret"

    def get_access_token_secret(self, client_key: str, token: str, request: Any) -> str:
        if hmac.compare_digest(token, self._credentials.token_id):
            return self._credentials.token_secret
        return "dummy-secret"

    def validate_timestamp_and_nonce(
        self,
        client_key: str,
        timestamp: str,
        nonce: str,
        request: Any,
        request_token: str | None = None,
        access_token: str | None = None,
    ) -> bool:
        now = int(time.time())
        for key, seen in list(self._nonces.items()):
            if seen < now - 2 * TIMESTAMP_LIFETIME_SECONDS:
                del self._nonces[key]
        key = (client_key, access_token or request.resource_owner_key or "", nonce)
        if key in self._nonces:
            return False
        self._nonces[key] = int(timestamp)
        return True


class TokenAuthentication:
    """Decides whether one request is signed by the account's integration token."""

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials
        self._endpoint = SignatureOnlyEndpoint(_TokenValidator(credentials))

    def verify(self, uri: str, method: str, headers: dict[str, str]) -> bool:
        """True when the Authorization header signs this method and URI for this account."""
        authorization = headers.get("authorization", "")
        if not authorization.startswith("OAuth "):
            return False
        # The body is not signed: NetSuite's REST bodies are JSON, not form parameters.
        valid, request = self._endpoint.validate_request(
            uri, http_method=method, body=None, headers={"Authorization": authorization}
        )
        if not valid or request is None:
            return False
        token_ok = hmac.compare_digest(request.resource_owner_key or "", self._credentials.token_id)
        realm_ok = hmac.compare_digest(request.realm or "", self._credentials.account_id)
        return token_ok and realm_ok


__all__ = ["TIMESTAMP_LIFETIME_SECONDS", "Credentials", "TokenAuthentication"]
