"""Adapter errors become Temporal ApplicationErrors with the right retry semantics."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from temporalio.exceptions import ApplicationError

from adapters.errors import AdapterError, RateLimitedError


@contextmanager
def adapter_errors_as_application_errors() -> Iterator[None]:
    """Transient and rate-limited failures retry (after Retry-After); the rest do not."""
    try:
        yield
    except RateLimitedError as err:
        raise ApplicationError(
            str(err),
            err.details(),
            type=type(err).__name__,
            non_retryable=False,
            next_retry_delay=timedelta(seconds=max(err.retry_after, 0.1)),
        ) from err
    except AdapterError as err:
        raise ApplicationError(
            str(err), err.details(), type=type(err).__name__, non_retryable=not err.retryable
        ) from err
