"""The adapter error taxonomy: what every failure of an external system means for retries.

    AdapterError                  base; carries system, operation, status and the remote answer
     ├── TransientError           retry with backoff: timeouts, refused connections, 5xx
     │    └── RateLimitedError    retry after `retry_after` seconds: 429 + Retry-After
     ├── RejectedError            the remote system's business rules said no: never retry
     │    └── ValidationError     the request itself was malformed for the remote: never retry
     ├── NotFoundError            the thing asked for does not exist: never retry
     ├── ConflictError            it already exists: verify it is ours, then treat as success
     └── AuthenticationError      credentials refused (not an expired session): never retry

Activities translate these into ApplicationError (retryable or not, next_retry_delay from
`retry_after`); workflows decide what a rejection means for the business.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx
import stripe


class AdapterError(Exception):
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        system: str,
        operation: str,
        status: int | None = None,
        remote_code: str | None = None,
        remote_answer: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.system = system
        self.operation = operation
        self.status = status
        self.remote_code = remote_code
        self.remote_answer = remote_answer

    def details(self) -> dict[str, Any]:
        """What a finance exception needs to show: who answered what to which call."""
        return {
            "error": type(self).__name__,
            "message": self.message,
            "system": self.system,
            "operation": self.operation,
            "status": self.status,
            "remote_code": self.remote_code,
            "remote_answer": self.remote_answer,
        }

    def __str__(self) -> str:
        status = f" (HTTP {self.status})" if self.status else ""
        return f"{self.system}.{self.operation}{status}: {self.message}"


class TransientError(AdapterError):
    retryable = True


class RateLimitedError(TransientError):
    def __init__(self, message: str, *, retry_after: float, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class RejectedError(AdapterError):
    pass


class ValidationError(RejectedError):
    pass


class NotFoundError(AdapterError):
    pass


class ConflictError(AdapterError):
    pass


class AuthenticationError(AdapterError):
    pass


class SignatureError(ValueError):
    """An inbound webhook we must not trust; `reason` is one line for logs and 400 answers.

    Not an AdapterError: nothing was called, something arrived.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@contextmanager
def transport_errors_as_transient(system: str, operation: str) -> Iterator[None]:
    """No answer (timeout, refused, reset) is transient; a timed-out write may have
    committed, which is why every create looks up before it creates again."""
    try:
        yield
    except httpx.TimeoutException as err:
        raise TransientError(
            f"no answer in time ({type(err).__name__})", system=system, operation=operation
        ) from err
    except httpx.TransportError as err:
        raise TransientError(
            f"cannot reach {system} ({type(err).__name__}: {err})",
            system=system,
            operation=operation,
        ) from err


def parse_retry_after(value: str | None, default: float = 1.0) -> float:
    """Seconds from a Retry-After header (delta-seconds form); the default when absent or odd."""
    if not value:
        return default
    try:
        return max(0.0, float(value))
    except ValueError:
        return default


def error_for_status(
    status: int,
    message: str,
    *,
    system: str,
    operation: str,
    retry_after: str | None = None,
    remote_code: str | None = None,
    remote_answer: Any = None,
) -> AdapterError:
    """The taxonomy member for an HTTP status, shared by every HTTP adapter."""
    common: dict[str, Any] = {
        "system": system,
        "operation": operation,
        "status": status,
        "remote_code": remote_code,
        "remote_answer": remote_answer,
    }
    if status == 429:
        return RateLimitedError(message, retry_after=parse_retry_after(retry_after), **common)
    if status >= 500 or status in (408, 425):
        return TransientError(message, **common)
    if status in (401, 403):
        return AuthenticationError(message, **common)
    if status == 404:
        return NotFoundError(message, **common)
    if status == 409:
        return ConflictError(message, **common)
    if status in (400, 422):
        return ValidationError(message, **common)
    return RejectedError(message, **common)


# Error codes of requests malformed for Stripe (ValidationError); any other 400 code is a
# business rule refusing the request (RejectedError), e.g. invoice_not_editable.
_STRIPE_MALFORMED_CODE_PREFIXES = ("parameter_", "email_invalid", "url_invalid", "invalid_")


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    """A response header whatever the case its sender wrote it in."""
    for key, value in (headers or {}).items():
        if key.lower() == name:
            return value
    return None


def error_from_stripe(err: stripe.StripeError, system: str, operation: str) -> AdapterError:
    """The taxonomy member for an exception of the stripe SDK (its network retries are off:
    Temporal retries, by this meaning)."""
    status = err.http_status
    if isinstance(err, stripe.APIConnectionError) or status is None:
        cause = err.__cause__
        if isinstance(cause, httpx.TimeoutException):
            reason = f"no answer in time ({type(cause).__name__})"
        elif cause is not None:
            reason = f"cannot reach {system} ({type(cause).__name__}: {cause})"
        else:
            reason = f"cannot reach {system} ({err.user_message})"
        return TransientError(reason, system=system, operation=operation)
    answer: Any = err.json_body if err.json_body is not None else (err.http_body or "")[:500]
    error = answer.get("error") if isinstance(answer, dict) else None
    error = error if isinstance(error, dict) else {}
    message = str(err.user_message or error.get("message") or f"{system} error")
    code = error.get("code") or error.get("type")
    common: dict[str, Any] = {
        "system": system,
        "operation": operation,
        "status": status,
        "remote_code": code,
        "remote_answer": answer,
    }
    if status < 400:
        # A success whose body is not a Stripe object: a proxy or a half-written answer.
        return TransientError(f"{system} answered what is not a Stripe object", **common)
    if status == 409 and _header(err.headers, "stripe-should-retry") == "true":
        # A concurrent request holds the same Idempotency-Key: retry, it is not a duplicate.
        return TransientError(message, **common)
    if status == 400 and error.get("type") == "invalid_request_error" and code:
        # Stripe answers 400 both to malformed requests and to its business rules;
        # the code tells them apart (the rules are what workflows decide on).
        if code == "resource_missing":
            return NotFoundError(message, **common)
        if code.startswith(_STRIPE_MALFORMED_CODE_PREFIXES):
            return ValidationError(message, **common)
        return RejectedError(message, **common)
    return error_for_status(
        status,
        message,
        system=system,
        operation=operation,
        retry_after=_header(err.headers, "retry-after"),
        remote_code=code,
        remote_answer=answer,
    )


__all__ = [
    "AdapterError",
    "AuthenticationError",
    "ConflictError",
    "NotFoundError",
    "RateLimitedError",
    "RejectedError",
    "SignatureError",
    "TransientError",
    "ValidationError",
    "error_for_status",
    "error_from_stripe",
    "parse_retry_after",
    "transport_errors_as_transient",
]
