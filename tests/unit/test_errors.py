import json
from datetime import timedelta

import httpx
import pytest
import stripe
from temporalio.exceptions import ApplicationError

from activities._errors import adapter_errors_as_application_errors
from adapters.errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    RateLimitedError,
    RejectedError,
    TransientError,
    ValidationError,
    error_for_status,
    error_from_stripe,
)


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (429, RateLimitedError),
        (500, TransientError),
        (503, TransientError),
        (401, AuthenticationError),
        (404, NotFoundError),
        (409, ConflictError),
        (400, ValidationError),
        (402, RejectedError),
    ],
)
def test_http_status_maps_to_the_taxonomy(status: int, kind: type) -> None:
    err = error_for_status(status, "m", system="billing", operation="op", retry_after="7")
    assert type(err) is kind
    assert err.details()["status"] == status


def test_rate_limited_carries_retry_after_into_the_next_retry_delay() -> None:
    with pytest.raises(ApplicationError) as caught, adapter_errors_as_application_errors():
        raise error_for_status(429, "slow down", system="support", operation="x", retry_after="12")
    assert not caught.value.non_retryable
    assert caught.value.next_retry_delay == timedelta(seconds=12)
    assert caught.value.type == "RateLimitedError"


@pytest.mark.parametrize(("status", "retryable"), [(503, True), (400, False), (404, False)])
def test_only_transient_errors_stay_retryable(status: int, retryable: bool) -> None:
    with pytest.raises(ApplicationError) as caught, adapter_errors_as_application_errors():
        raise error_for_status(status, "m", system="erp", operation="x")
    assert caught.value.non_retryable is not retryable
    assert caught.value.details[0]["system"] == "erp"


# the stripe SDK's exceptions --------------------------------------------------------------


def stripe_answer(status: int, error: dict[str, str], headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """The exception the stripe SDK raises for this answer (its own choice of class)."""
    body = {"error": error}
    requestor = stripe._api_requestor._APIRequestor()
    try:
        requestor.handle_error_response(json.dumps(body), status, body, headers or {}, "V1")
    except stripe.StripeError as err:
        return err
    raise AssertionError("the SDK raised nothing")


@pytest.mark.parametrize(
    ("status", "error", "headers", "kind"),
    [
        (429, {"type": "invalid_request_error", "code": "rate_limit"}, {"Retry-After": "7"},
         RateLimitedError),
        (500, {"type": "api_error"}, {}, TransientError),
        (503, {"type": "api_error"}, {}, TransientError),
        (409, {"type": "idempotency_error"}, {"Stripe-Should-Retry": "true"}, TransientError),
        (409, {"type": "invalid_request_error", "code": "resource_already_exists"}, {},
         ConflictError),
        (400, {"type": "invalid_request_error", "code": "resource_missing"}, {}, NotFoundError),
        (400, {"type": "invalid_request_error", "code": "parameter_unknown"}, {},
         ValidationError),
        (400, {"type": "invalid_request_error", "code": "email_invalid"}, {}, ValidationError),
        (400, {"type": "invalid_request_error", "code": "url_invalid"}, {}, ValidationError),
        (400, {"type": "invalid_request_error", "code": "invalid_request_body"}, {},
         ValidationError),
        (400, {"type": "invalid_request_error", "code": "invoice_not_editable"}, {},
         RejectedError),
        (400, {"type": "idempotency_error"}, {}, ValidationError),
        (401, {"type": "invalid_request_error"}, {}, AuthenticationError),
        (403, {"type": "invalid_request_error"}, {}, AuthenticationError),
        (404, {"type": "invalid_request_error", "code": "resource_missing"}, {}, NotFoundError),
        (402, {"type": "card_error", "code": "card_declined"}, {}, RejectedError),
    ],
)  # fmt: skip
def test_stripe_sdk_error_maps_to_the_taxonomy(
    status: int, error: dict[str, str], headers: dict[str, str], kind: type
) -> None:
    err = error_from_stripe(
        stripe_answer(status, {**error, "message": "m"}, headers), "billing", "op"
    )

    assert type(err) is kind
    assert (err.status, err.message, err.system, err.operation) == (status, "m", "billing", "op")
    assert err.remote_code == error.get("code", error["type"])


def test_stripe_rate_limit_carries_the_answers_retry_after() -> None:
    err = error_from_stripe(
        stripe_answer(429, {"type": "invalid_request_error"}, {"retry-after": "12"}), "b", "op"
    )

    assert isinstance(err, RateLimitedError) and err.retry_after == 12.0


def test_conflict_without_should_retry_is_not_transient() -> None:
    err = error_from_stripe(
        stripe_answer(409, {"type": "idempotency_error"}, {"Stripe-Should-Retry": "false"}),
        "billing",
        "op",
    )

    assert type(err) is ConflictError and not err.retryable


@pytest.mark.parametrize(
    ("cause", "message"),
    [
        (httpx.ReadTimeout("slow"), "no answer in time (ReadTimeout)"),
        (httpx.ConnectError("refused"), "cannot reach billing (ConnectError: refused)"),
    ],
)
def test_stripe_connection_failures_are_transient(cause: Exception, message: str) -> None:
    try:
        try:
            raise cause
        except httpx.HTTPError as low:
            raise stripe.APIConnectionError("network error", should_retry=True) from low
    except stripe.StripeError as err:
        mapped = error_from_stripe(err, "billing", "get_invoice")

    assert type(mapped) is TransientError and mapped.retryable
    assert mapped.message == message and mapped.status is None


def test_stripe_success_it_could_not_read_is_transient() -> None:
    unreadable = stripe.APIError("Invalid response body from API", "<html>", 200)

    mapped = error_from_stripe(unreadable, "billing", "get_invoice")

    assert type(mapped) is TransientError and mapped.status == 200
