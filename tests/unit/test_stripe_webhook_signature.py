"""Stripe-Signature signing and verification (adapters.billing.webhook_signature)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from adapters.billing.webhook_signature import SignatureError, sign_stripe, verify_stripe

BODY = b'{"id": "evt_1", "type": "customer.created"}'
SECRET = "whsec_current"
OLD_SECRET = "whsec_previous"
NOW = 1_760_000_000
TOLERANCE = 300


def test_signature_header_is_stripes_hmac_of_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign_stripe(BODY, SECRET, NOW) == f"t={NOW},v1={expected}"


def test_valid_signature_returns_the_signed_timestamp() -> None:
    header = sign_stripe(BODY, SECRET, NOW - 10)
    assert verify_stripe(BODY, header, [SECRET], TOLERANCE, NOW) == NOW - 10


def test_tampered_body_is_rejected() -> None:
    header = sign_stripe(BODY, SECRET, NOW)
    with pytest.raises(SignatureError, match="no matching v1 signature"):
        verify_stripe(BODY.replace(b"created", b"deleted"), header, [SECRET], TOLERANCE, NOW)


def test_wrong_secret_is_rejected() -> None:
    header = sign_stripe(BODY, "whsec_someone_else", NOW)
    with pytest.raises(SignatureError, match="no matching v1 signature"):
        verify_stripe(BODY, header, [SECRET], TOLERANCE, NOW)


def test_signature_by_old_secret_verifies_while_both_secrets_are_configured() -> None:
    header = sign_stripe(BODY, OLD_SECRET, NOW)
    assert verify_stripe(BODY, header, [SECRET, OLD_SECRET], TOLERANCE, NOW) == NOW
    with pytest.raises(SignatureError):
        verify_stripe(BODY, header, [SECRET], TOLERANCE, NOW)


def test_any_of_several_v1_values_may_match() -> None:
    # During Stripe's secret roll the sender signs with both secrets: two v1 values.
    old = sign_stripe(BODY, OLD_SECRET, NOW).split(",")[1]
    new = sign_stripe(BODY, SECRET, NOW).split(",")[1]
    header = f"t={NOW},{old},{new},v0=ignored"
    assert verify_stripe(BODY, header, [SECRET], TOLERANCE, NOW) == NOW
    assert verify_stripe(BODY, header, [OLD_SECRET], TOLERANCE, NOW) == NOW


def test_stale_timestamp_is_rejected_even_with_a_valid_signature() -> None:
    header = sign_stripe(BODY, SECRET, NOW - TOLERANCE - 1)
    with pytest.raises(SignatureError, match="timestamp outside tolerance"):
        verify_stripe(BODY, header, [SECRET], TOLERANCE, NOW)


def test_timestamp_at_the_tolerance_edge_is_accepted() -> None:
    header = sign_stripe(BODY, SECRET, NOW - TOLERANCE)
    assert verify_stripe(BODY, header, [SECRET], TOLERANCE, NOW) == NOW - TOLERANCE


def test_future_timestamp_beyond_tolerance_is_rejected() -> None:
    header = sign_stripe(BODY, SECRET, NOW + TOLERANCE + 1)
    with pytest.raises(SignatureError, match="timestamp outside tolerance"):
        verify_stripe(BODY, header, [SECRET], TOLERANCE, NOW)


@pytest.mark.parametrize(
    "header",
    [
        "v1=abc",  # no timestamp
        f"t={NOW}",  # no v1
        f"t=soon,v1={'0' * 64}",  # timestamp not an integer
        "garbage",  # item without '='
        f"t={NOW},v0=abc",  # only a scheme we do not accept
    ],
)
def test_malformed_header_is_rejected_with_reason(header: str) -> None:
    with pytest.raises(SignatureError, match="malformed Stripe-Signature header") as raised:
        verify_stripe(BODY, header, [SECRET], TOLERANCE, NOW)
    assert "\n" not in raised.value.reason


@pytest.mark.parametrize("header", [None, "", "   "])
def test_missing_header_is_rejected(header: str | None) -> None:
    with pytest.raises(SignatureError, match="missing Stripe-Signature header"):
        verify_stripe(BODY, header, [SECRET], TOLERANCE, NOW)


def test_no_configured_secret_verifies_nothing() -> None:
    header = sign_stripe(BODY, SECRET, NOW)
    with pytest.raises(SignatureError, match="no matching v1 signature"):
        verify_stripe(BODY, header, [], TOLERANCE, NOW)
