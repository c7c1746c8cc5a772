"""Stripe's webhook signature scheme, as its documentation defines it.

Header: `Stripe-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "{t}.{body}">`, keyed
with the endpoint's signing secret.
"""

from __future__ import annotations

import hashlib
import hmac


def stripe_signature(payload: bytes, secret: str, timestamp: int) -> str:
    """The Stripe-Signature header value for `payload` sent at `timestamp`."""
    signed = str(timestamp).encode("ascii") + b"." + payload
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"
