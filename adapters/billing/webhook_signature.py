"""Stripe webhook signatures: the ingress verifies them (tests sign with `sign_stripe`).

Header: `Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "{t}.{body}">[,v1=...]`.
Several v1 values appear while an endpoint's secret is being rolled; any one may match any
of the secrets we hold.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from adapters.errors import SignatureError

SIGNATURE_SCHEME = "v1"
UNIX_SECONDS = re.compile(r"[0-9]{1,12}")


def _hmac_hex(payload: bytes, secret: str, timestamp: int) -> str:
    signed = str(timestamp).encode("ascii") + b"." + payload
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def sign_stripe(payload: bytes, secret: str, timestamp: int) -> str:
    """The Stripe-Signature header value for `payload` sent at `timestamp`."""
    return f"t={timestamp},{SIGNATURE_SCHEME}={_hmac_hex(payload, secret, timestamp)}"


def _parse_header(header: str) -> tuple[int, list[str]]:
    """The header read as Stripe's own libraries read it: the first `t`, every `v1`; items
    of other schemes (v0 test signatures, future ones) and items without '=' are ignored."""
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, *values = item.split("=", 2)
        if key not in ("t", SIGNATURE_SCHEME):
            continue
        if not values:
            raise SignatureError(f"malformed Stripe-Signature header: '{key}' without a value")
        if key == SIGNATURE_SCHEME:
            signatures.append(values[0])
        elif timestamp is None:
            # ASCII digits only, and few: str.isdigit() admits "²" and int() refuses 4301 digits.
            if not UNIX_SECONDS.fullmatch(values[0]):
                raise SignatureError(
                    "malformed Stripe-Signature header: timestamp is not an integer"
                )
            timestamp = int(values[0])
    if timestamp is None:
        raise SignatureError("malformed Stripe-Signature header: no timestamp")
    if not signatures:
        raise SignatureError("malformed Stripe-Signature header: no v1 signature")
    return timestamp, signatures


def verify_stripe(
    payload: bytes, header: str | None, secrets: list[str], tolerance: int, now: int
) -> int:
    """Check a Stripe-Signature header against the raw body; returns the signed timestamp.

    Raises SignatureError when the header is missing or malformed, when no v1 signature
    matches any of `secrets`, or when the timestamp is more than `tolerance` seconds before
    `now` (a replay). A timestamp ahead of `now` is accepted, as `stripe.WebhookSignature`
    does: only Stripe can sign one, and refusing it would lose deliveries to clock skew.
    """
    if not header or not header.strip():
        raise SignatureError("missing Stripe-Signature header")
    timestamp, signatures = _parse_header(header)
    expected = [_hmac_hex(payload, secret, timestamp) for secret in secrets if secret.strip()]
    # Compare every pair so timing does not reveal which secret or position matched.
    matched = False
    for candidate in signatures:
        for good in expected:
            matched |= hmac.compare_digest(candidate.encode("ascii", "replace"), good.encode())
    if not matched:
        raise SignatureError("no matching v1 signature for any configured secret")
    if now - timestamp > tolerance:
        raise SignatureError(
            f"timestamp outside tolerance: {now - timestamp}s old, allowed {tolerance}s"
        )
    return timestamp


__all__ = ["SignatureError", "sign_stripe", "verify_stripe"]
