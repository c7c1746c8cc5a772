"""Zendesk webhook signatures: what verify_zendesk accepts and why it refuses the rest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from adapters.support.webhook_signature import (
    SignatureError,
    sign_zendesk,
    verify_zendesk,
    zendesk_timestamp,
)

BODY = b'{"type":"zen:event-type:organization.created"}'
SECRET = "zdsec_test"
TIMESTAMP = "2026-11-27T13:00:00Z"
NOW = datetime(2026, 11, 27, 13, 0, 30, tzinfo=UTC)


def test_signature_matches_independently_computed_vector() -> None:
    # printf '%s' "$TIMESTAMP$BODY" | openssl dgst -sha256 -hmac zdsec_test -binary | base64
    assert sign_zendesk(BODY, SECRET, TIMESTAMP) == "+52ymJIiQaIsLDO3nneBaML7fhCW/PnP2PdLYQzG7lo="


def test_valid_signature_is_accepted() -> None:
    signature = sign_zendesk(BODY, SECRET, TIMESTAMP)
    verify_zendesk(BODY, signature, TIMESTAMP, [SECRET], tolerance=300, now=NOW)


def test_tampered_body_is_refused() -> None:
    signature = sign_zendesk(BODY, SECRET, TIMESTAMP)
    with pytest.raises(SignatureError, match="no matching signature"):
        verify_zendesk(BODY + b" ", signature, TIMESTAMP, [SECRET], tolerance=300, now=NOW)


def test_tampered_timestamp_is_refused_because_it_is_signed() -> None:
    signature = sign_zendesk(BODY, SECRET, TIMESTAMP)
    later = "2026-11-27T13:00:01Z"
    with pytest.raises(SignatureError, match="no matching signature"):
        verify_zendesk(BODY, signature, later, [SECRET], tolerance=300, now=NOW)


def test_wrong_secret_is_refused() -> None:
    signature = sign_zendesk(BODY, "someone-else", TIMESTAMP)
    with pytest.raises(SignatureError, match="no matching signature"):
        verify_zendesk(BODY, signature, TIMESTAMP, [SECRET], tolerance=300, now=NOW)


def test_old_and_new_secrets_are_both_accepted_during_rotation() -> None:
    secrets = ["zdsec_new", "zdsec_old"]
    for secret in secrets:
        signature = sign_zendesk(BODY, secret, TIMESTAMP)
        verify_zendesk(BODY, signature, TIMESTAMP, secrets, tolerance=300, now=NOW)
    retired = sign_zendesk(BODY, "zdsec_retired", TIMESTAMP)
    with pytest.raises(SignatureError):
        verify_zendesk(BODY, retired, TIMESTAMP, secrets, tolerance=300, now=NOW)


@pytest.mark.parametrize("skew", [timedelta(seconds=301), timedelta(seconds=-301)])
def test_timestamp_outside_tolerance_is_refused_even_when_signed(skew: timedelta) -> None:
    signature = sign_zendesk(BODY, SECRET, TIMESTAMP)
    now = datetime(2026, 11, 27, 13, 0, 0, tzinfo=UTC) + skew
    with pytest.raises(SignatureError, match="outside tolerance"):
        verify_zendesk(BODY, signature, TIMESTAMP, [SECRET], tolerance=300, now=now)


def test_timestamp_at_the_tolerance_edge_is_accepted() -> None:
    signature = sign_zendesk(BODY, SECRET, TIMESTAMP)
    now = datetime(2026, 11, 27, 13, 5, 0, tzinfo=UTC)
    verify_zendesk(BODY, signature, TIMESTAMP, [SECRET], tolerance=300, now=now)


@pytest.mark.parametrize("timestamp", ["yesterday", "1764248400", "2026-11-27T13:00:00"])
def test_malformed_or_zoneless_timestamp_is_refused(timestamp: str) -> None:
    signature = sign_zendesk(BODY, SECRET, timestamp)
    with pytest.raises(SignatureError, match="malformed signature timestamp"):
        verify_zendesk(BODY, signature, timestamp, [SECRET], tolerance=300, now=NOW)


@pytest.mark.parametrize(
    ("signature", "timestamp", "reason"),
    [
        (None, TIMESTAMP, "missing X-Zendesk-Webhook-Signature header"),
        ("", TIMESTAMP, "missing X-Zendesk-Webhook-Signature header"),
        ("c2ln", None, "missing X-Zendesk-Webhook-Signature-Timestamp header"),
    ],
)
def test_missing_headers_are_refused_with_their_name(
    signature: str | None, timestamp: str | None, reason: str
) -> None:
    with pytest.raises(SignatureError) as raised:
        verify_zendesk(BODY, signature, timestamp, [SECRET], tolerance=300, now=NOW)
    assert str(raised.value) == reason


def test_no_configured_secret_refuses_everything() -> None:
    signature = sign_zendesk(BODY, SECRET, TIMESTAMP)
    with pytest.raises(SignatureError, match="no webhook secret configured"):
        verify_zendesk(BODY, signature, TIMESTAMP, [], tolerance=300, now=NOW)


def test_signature_error_is_a_value_error_with_a_one_line_reason() -> None:
    with pytest.raises(ValueError) as raised:
        verify_zendesk(BODY, "bogus", TIMESTAMP, [SECRET], tolerance=300, now=NOW)
    assert "\n" not in str(raised.value)


def test_zendesk_timestamp_is_utc_with_z_suffix() -> None:
    moment = datetime(2026, 11, 27, 14, 0, 0, 123456, tzinfo=UTC)
    assert zendesk_timestamp(moment.astimezone()) == "2026-11-27T14:00:00Z"


def test_signature_error_is_the_one_shared_with_stripe_verification() -> None:
    from adapters.billing.webhook_signature import SignatureError as SharedSignatureError

    assert SignatureError is SharedSignatureError
