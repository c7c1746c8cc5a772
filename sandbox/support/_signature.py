"""How Zendesk signs a webhook request: base64(HMAC-SHA256(secret, timestamp + body)) in
`X-Zendesk-Webhook-Signature`, the timestamp (ISO 8601, UTC, whole seconds, `Z`) in
`X-Zendesk-Webhook-Signature-Timestamp`. The sandbox signs on its own, as Zendesk does, so a
mistake in our verifying code cannot hide behind the same mistake here."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime

SIGNATURE_HEADER = "X-Zendesk-Webhook-Signature"
TIMESTAMP_HEADER = "X-Zendesk-Webhook-Signature-Timestamp"


def signature_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def signature_headers(body: bytes, secret: str, moment: datetime) -> dict[str, str]:
    """The two signature headers of a webhook request sent at `moment`."""
    timestamp = signature_timestamp(moment)
    digest = hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()
    return {SIGNATURE_HEADER: base64.b64encode(digest).decode("ascii"), TIMESTAMP_HEADER: timestamp}


__all__ = ["SIGNATURE_HEADER", "TIMESTAMP_HEADER", "signature_headers", "signature_timestamp"]
