"""NetSuiteLedger's reading of NetSuite's answers, on canned answers (MockTransport): error
bodies to the taxonomy, answers of an unexpected shape to a ValidationError naming what was
unexpected (never a KeyError), the signature the sandbox verifies, exact ids and amounts."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.erp import NetSuiteLedger
from adapters.erp.netsuite import external_id, reference_of, wire_json
from adapters.errors import (
    AuthenticationError,
    NotFoundError,
    RateLimitedError,
    RejectedError,
    TransientError,
    ValidationError,
)
from adapters.settings import (
    LOCAL_NETSUITE_ACCOUNT_ID,
    LOCAL_NETSUITE_CONSUMER_KEY,
    LOCAL_NETSUITE_CONSUMER_SECRET,
    LOCAL_NETSUITE_TOKEN_ID,
    LOCAL_NETSUITE_TOKEN_SECRET,
)
from canonical import Money, PaymentPosting
from sandbox.netsuite import Credentials
from sandbox.netsuite._auth import TokenAuthentication

BASE = "https://1234567-sb1.suitetalk.api.netsuite.com"


def netsuite_error(status: int, code: str, detail: str) -> dict[str, Any]:
    return {
        "type": "https://www.w3.org/Protocols/rfc2616/rfc2616-sec10.html",
        "title": "x",
        "status": status,
        "o:errorDetails": [{"detail": detail, "o:errorCode": code}],
    }


def ledger_answering(answer: Callable[[httpx.Request], httpx.Response]) -> NetSuiteLedger:
    return NetSuiteLedger(
        BASE,
        LOCAL_NETSUITE_ACCOUNT_ID,
        LOCAL_NETSUITE_CONSUMER_KEY,
        LOCAL_NETSUITE_CONSUMER_SECRET,
        LOCAL_NETSUITE_TOKEN_ID,
        LOCAL_NETSUITE_TOKEN_SECRET,
        transport=httpx.MockTransport(answer),
    )


def always(status: int, body: Any = None, **headers: str) -> NetSuiteLedger:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return ledger_answering(lambda _: httpx.Response(status, content=content, headers=headers))


# --- error bodies -----------------------------------------------------------------------------


async def test_a_user_error_is_a_rejection_carrying_netsuites_code_and_detail() -> None:
    ledger = always(400, netsuite_error(400, "USER_ERROR", "The period is closed."))

    with pytest.raises(RejectedError) as refused:
        await ledger.is_period_open(dt.date(2026, 1, 1))

    assert type(refused.value) is RejectedError
    assert refused.value.remote_code == "USER_ERROR" and refused.value.status == 400
    assert refused.value.message == "The period is closed."
    assert refused.value.remote_answer["o:errorDetails"][0]["o:errorCode"] == "USER_ERROR"


@pytest.mark.parametrize("code", ["INVALID_CONTENT", "INVALID_PARAMETER", "INVALID_HEADER"])
async def test_a_malformed_request_is_a_validation_error(code: str) -> None:
    ledger = always(400, netsuite_error(400, code, "Invalid field value."))

    with pytest.raises(ValidationError) as refused:
        await ledger.catalog()

    assert refused.value.remote_code == code


async def test_invalid_login_is_an_authentication_error() -> None:
    ledger = always(401, netsuite_error(401, "INVALID_LOGIN", "Invalid login attempt."))

    with pytest.raises(AuthenticationError) as refused:
        await ledger.catalog()

    assert refused.value.remote_code == "INVALID_LOGIN" and not refused.value.retryable


async def test_the_concurrency_limit_is_rate_limited_with_retry_after() -> None:
    body = netsuite_error(429, "CONCURRENCY_LIMIT_EXCEEDED", "Request blocked.")
    ledger = always(429, body, **{"Retry-After": "3"})

    with pytest.raises(RateLimitedError) as refused:
        await ledger.catalog()

    assert refused.value.retry_after == 3.0 and refused.value.retryable
    assert refused.value.remote_code == "CONCURRENCY_LIMIT_EXCEEDED"


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_a_server_error_is_transient_even_without_a_netsuite_body(status: int) -> None:
    ledger = always(status, b"<html>Service Unavailable</html>")

    with pytest.raises(TransientError) as refused:
        await ledger.catalog()

    assert refused.value.status == status and refused.value.remote_code is None
    assert "Service Unavailable" in str(refused.value.remote_answer)


async def test_a_missing_record_reads_as_none_and_a_missing_document_as_not_found() -> None:
    ledger = always(404, netsuite_error(404, "NONEXISTENT_ID", "The record does not exist."))

    assert await ledger.find_party("cus_nobody") is None
    with pytest.raises(NotFoundError) as refused:
        await ledger.catalog()
    assert refused.value.remote_code == "NONEXISTENT_ID"


async def test_no_connection_is_transient() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(TransientError, match="cannot reach erp"):
        await ledger_answering(refuse).catalog()


# --- answers of an unexpected shape ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"<html>maintenance</html>", "not JSON"),
        (json.dumps([1, 2]).encode(), "not an object"),
        (json.dumps({"count": 0}).encode(), "'items'"),
        (json.dumps({"items": [], "hasMore": "no"}).encode(), "'hasMore'"),
        (json.dumps({"items": [{"id": "1"}], "hasMore": False}).encode(), "'key'"),
    ],
)
async def test_a_suiteql_answer_of_unknown_shape_is_a_validation_error_naming_it(
    body: bytes, named: str
) -> None:
    with pytest.raises(ValidationError, match=named) as refused:
        await always(200, body).catalog()

    assert refused.value.remote_code == "unexpected_answer"


async def test_a_record_without_the_fields_the_port_needs_is_a_validation_error() -> None:
    ledger = always(200, {"id": "7", "links": [], "total": 10})
    payment = PaymentPosting(
        reference="inpay_shape",
        kind="payment",
        customer_id="cus_shape",
        applies_to="in_shape",
        amount=Money.of("10", "USD"),
        payment_date=dt.date(2026, 5, 1),
        method="card",
        journal="CARD-USD",
        clearing_account="1150-USD",
        description="Card",
    )

    with pytest.raises(ValidationError, match="no 'currency'") as refused:
        await ledger.post_payment(payment)

    assert refused.value.remote_answer == {"id": "7", "links": [], "total": 10}


async def test_an_amount_that_is_not_a_number_is_a_validation_error() -> None:
    row = {"links": [], "id": "3", "type": "CustInvc", "foreigntotal": "lots", "currency": "USD"}
    ledger = always(200, {"items": [row], "hasMore": False})

    with pytest.raises(ValidationError, match="foreigntotal is not an amount"):
        await ledger.find_document("in_shape")


# --- the wire ------------------------------------------------------------------------------------


async def test_every_request_is_signed_as_the_sandbox_verifies_it() -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"items": [], "hasMore": False})

    await ledger_answering(record).is_period_open(dt.date(2026, 5, 1))

    (request,) = seen
    header = request.headers["Authorization"]
    assert header.startswith("OAuth ") and 'oauth_signature_method="HMAC-SHA256"' in header
    assert f'realm="{LOCAL_NETSUITE_ACCOUNT_ID}"' in header
    assert request.headers["Prefer"] == "transient"
    verifier = TokenAuthentication(
        Credentials(
            LOCAL_NETSUITE_ACCOUNT_ID,
            LOCAL_NETSUITE_CONSUMER_KEY,
            LOCAL_NETSUITE_CONSUMER_SECRET,
            LOCAL_NETSUITE_TOKEN_ID,
            LOCAL_NETSUITE_TOKEN_SECRET,
        )
    )
    headers = {"authorization": header}
    assert verifier.verify(str(request.url), request.method, headers) is True
    assert verifier.verify(str(request.url), request.method, headers) is False  # nonce used
    tampered = str(request.url).replace("limit=1000", "limit=999")
    assert TokenAuthentication(verifier._credentials).verify(tampered, "POST", headers) is False


def test_amounts_travel_as_exact_json_numbers() -> None:
    body = {
        "amount": Decimal("0.10"),
        "big": Decimal("123456789012345678.99"),
        "lines": [{"rate": Decimal("-8.875")}],
        "text": "0.10",
    }

    wire = wire_json(body)

    assert wire == (
        b'{"amount": 0.10, "big": 123456789012345678.99, '
        b'"lines": [{"rate": -8.875}], "text": "0.10"}'
    )
    assert json.loads(wire, parse_float=Decimal)["big"] == Decimal("123456789012345678.99")


@given(st.text(min_size=1, max_size=60))
def test_an_external_id_is_one_path_segment_that_maps_back_to_its_reference(
    reference: str,
) -> None:
    made = external_id(reference)

    assert reference_of(made) == reference
    assert all(c.isascii() and (c.isalnum() or c in "_.-~") for c in made)


def test_a_billing_id_keeps_its_external_id_and_a_reversal_escapes_its_slash() -> None:
    assert external_id("in_1QabcXYZ") == "in_1QabcXYZ"
    assert external_id("in_1Qabc/void") == "in_1Qabc~2Fvoid"
    assert external_id("a~b") == "a~7Eb" and reference_of("a~7Eb") == "a~b"
