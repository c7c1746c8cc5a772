from datetime import timedelta

import pytest
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
