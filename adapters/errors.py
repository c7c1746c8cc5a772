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

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx


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
    "parse_retry_after",
    "transport_errors_as_transient",
]
