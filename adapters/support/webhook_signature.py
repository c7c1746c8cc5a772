"""Zendesk webhook signatures: the ingress verifies them (tests sign with `sign_zendesk`).

Zendesk signs `timestamp + body` with HMAC-SHA256 and sends the base64 digest in
`X-Zendesk-Webhook-Signature`, the timestamp (ISO-8601 UTC) in
`X-Zendesk-Webhook-Signature-Timestamp`. Several secrets are accepted while one rotates.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime

# One SignatureError for every webhook scheme, so the ingress catches a single type.
from adapters.errors import SignatureError

SIGNATURE_HEADER = "X-Zendesk-Webhook-Signature"
TIMESTAMP_HEADER = "X-Zendesk-Webhook-Signature-Timestamp"


def zendesk_timestamp(moment: datetime) -> str:
    """The timestamp format Zendesk sends: second precision, UTC, `Z` suffix."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sign_zendesk(body: bytes, secret: str, timestamp: str) -> str:
    """base64(HMAC-SHA256(secret, timestamp + body)), the X-Zendesk-Webhook-Signature value."""
    digest = hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def _parse_timestamp(timestamp: str) -> datetime:
    try:
        moment = datetime.fromisoformat(timestamp.strip())
    except ValueError as err:
        raise SignatureError("malformed signature timestamp (expected ISO-8601)") from err
    if moment.tzinfo is None:
        # A zone-less time is ambiguous; Zendesk always sends UTC with `Z`.
        raise SignatureError("malformed signature timestamp (no timezone)")
    return moment


def verify_zendesk(
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    secrets: list[str],
    tolerance: int,
    now: datetime,
) -> None:
    """Return when one of `secrets` signed `body` within `tolerance` seconds of `now`.

    Raises SignatureError with a one-line reason otherwise. `now` is passed in so callers
    (and tests) decide the clock.
    """
    if not signature:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    if not timestamp:
        raise SignatureError(f"missing {TIMESTAMP_HEADER} header")
    usable = [secret for secret in secrets if secret]
    if not usable:
        raise SignatureError("no webhook secret configured")
    moment = _parse_timestamp(timestamp)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    age = (now - moment).total_seconds()
    if abs(age) > tolerance:
        raise SignatureError(
            f"signature timestamp outside tolerance ({age:+.0f} s, tolerance {tolerance} s)"
        )
    presented = signature.strip().encode()
    # Check every secret without stopping early, so timing does not reveal which matched.
    matched = False
    for secret in usable:
        expected = sign_zendesk(body, secret, timestamp).encode()
        matched |= hmac.compare_digest(expected, presented)
    if not matched:
        raise SignatureError("no matching signature")


__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "SignatureError",
    "sign_zendesk",
    "verify_zendesk",
    "zendesk_timestamp",
]
