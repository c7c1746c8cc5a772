"""Stripe-Signature signing and verification (adapters.billing.webhook_signature)."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest
import stripe

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


def test_future_timestamp_is_accepted_as_stripes_libraries_do() -> None:
    # Only Stripe can sign it, so it is no replay; refusing it would lose deliveries to skew.
    header = sign_stripe(BODY, SECRET, NOW + TOLERANCE + 1)
    assert verify_stripe(BODY, header, [SECRET], TOLERANCE, NOW) == NOW + TOLERANCE + 1


@pytest.mark.parametrize(
    "header",
    [
        "v1=abc",  # no timestamp
        f"t={NOW}",  # no v1
        f"t=soon,v1={'0' * 64}",  # timestamp not an integer
        "garbage",  # no item of ours at all
        f"t,v1={'0' * 64}",  # timestamp without a value
        f"t={NOW},v1",  # signature without a value
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


# agreement with the official SDK --------------------------------------------------------


def deliveries(now: int) -> dict[str, tuple[bytes, str]]:
    """(body, header) by case, signed relative to `now`: built when a test runs, since a long
    test session would otherwise turn every signature stale before it is checked."""
    good = sign_stripe(BODY, SECRET, now - 10)
    good_v1 = good.split(",")[1]
    old_v1 = sign_stripe(BODY, OLD_SECRET, now - 10).split(",")[1]
    return {
        "valid": (BODY, good),
        "tampered body": (BODY + b" ", good),
        "other secret": (BODY, sign_stripe(BODY, "whsec_someone_else", now - 10)),
        "stale": (BODY, sign_stripe(BODY, SECRET, now - TOLERANCE - 100)),
        "just inside tolerance": (BODY, sign_stripe(BODY, SECRET, now - TOLERANCE + 60)),
        "a little ahead": (BODY, sign_stripe(BODY, SECRET, now + 60)),
        "far ahead": (BODY, sign_stripe(BODY, SECRET, now + TOLERANCE + 100)),
        "several v1, old first": (BODY, f"t={now - 10},{old_v1},{good_v1}"),
        "several v1, none good": (BODY, f"t={now - 10},v1={'0' * 64},v1=abc"),
        "v0 only": (BODY, f"t={now - 10},v0={good_v1[3:]}"),
        "v0 beside v1": (BODY, f"t={now - 10},v0=ignored,{good_v1}"),
        "unknown items": (BODY, f"t={now - 10},flag,{good_v1},v9=x"),
        "empty": (BODY, ""),
        "blank": (BODY, "   "),
        "no timestamp": (BODY, good_v1),
        "timestamp not a number": (BODY, f"t=soon,{good_v1}"),
        "timestamp without value": (BODY, f"t,{good_v1}"),
        "second timestamp ignored": (BODY, f"{good},t=soon"),
        "no signature": (BODY, f"t={now - 10}"),
        "signature without value": (BODY, f"t={now - 10},v1"),
        "spaces around items": (BODY, f"t={now - 10}, {good_v1}"),
        "semicolons": (BODY, good.replace(",", ";")),
    }


DELIVERY_CASES = list(deliveries(NOW))
SECRET_SETS = [[SECRET], [OLD_SECRET], [SECRET, OLD_SECRET], ["whsec_unrelated"], []]


def sdk_accepts(body: bytes, header: str, secret: str) -> bool:
    try:
        stripe.WebhookSignature.verify_header(body, header, secret, TOLERANCE)
    except stripe.SignatureVerificationError:
        return False
    return True


def ours_accepts(body: bytes, header: str, secrets: list[str]) -> bool:
    try:
        verify_stripe(body, header, secrets, TOLERANCE, int(time.time()))
    except SignatureError:
        return False
    return True


@pytest.mark.parametrize("secrets", SECRET_SETS, ids=lambda s: "+".join(s) or "no-secret")
@pytest.mark.parametrize("case", DELIVERY_CASES)
def test_verification_agrees_with_the_stripe_sdk(case: str, secrets: list[str]) -> None:
    body, header = deliveries(int(time.time()))[case]
    # Ours holds several secrets during rotation: it accepts what the SDK accepts with any one.
    sdk = any(sdk_accepts(body, header, secret) for secret in secrets)

    assert ours_accepts(body, header, secrets) is sdk, case


def test_agreement_cases_include_acceptance_and_refusal() -> None:
    verdicts = {
        sdk_accepts(body, header, SECRET) for body, header in deliveries(int(time.time())).values()
    }
    assert verdicts == {True, False}
