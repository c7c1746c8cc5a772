"""Timeouts and retry policies per external system: every activity call uses one of these."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar, overload

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.exceptions import TimeoutError as TemporalTimeout

with workflow.unsafe.imports_passed_through():
    from activities._system import activity_name, system_of
    from adapters.task_queues import WORKFLOW_QUEUE, System, queue_of

A = TypeVar("A")
R = TypeVar("R")

NON_RETRYABLE = [
    "RejectedError",
    "ValidationError",
    "NotFoundError",
    "ConflictError",
    "AuthenticationError",
]

# SaaS APIs: quick attempts, back off to a minute, give up after an hour of trying.
SAAS_CALL: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    "schedule_to_close_timeout": timedelta(hours=1),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(minutes=1),
        non_retryable_error_types=NON_RETRYABLE,
    ),
}

# The ERP is slow and sometimes down for maintenance: retry for hours, then a human decides.
# One call takes about a second; 30 s bounds how long a dead worker's call blocks a retry.
ERP_CALL: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    "schedule_to_close_timeout": timedelta(hours=6),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=2),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(minutes=5),
        non_retryable_error_types=NON_RETRYABLE,
    ),
}

# Our own store: local and fast; a failure is an outage of ours worth retrying.
STORE_CALL: dict[str, Any] = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(
        initial_interval=timedelta(seconds=1),
        maximum_interval=timedelta(seconds=30),
    ),
}

# Each system's calls get its options; the store's run on the workflow queue.
SYSTEM_OPTIONS: dict[System, dict[str, Any]] = {
    "billing": SAAS_CALL,
    "support": SAAS_CALL,
    "erp": ERP_CALL,
    "store": STORE_CALL,
}


def activity_queue(system: System, queue: str | None = None) -> str:
    """The queue of a system's activities, derived from the running workflow's own queue;
    `queue` names another queue of that system (an ERP of the routing: each has its own)."""
    if system == "store":
        return workflow.info().task_queue
    prefix = workflow.info().task_queue.removesuffix(WORKFLOW_QUEUE)
    return queue_of(system, prefix) if queue is None else prefix + queue


@overload
async def run_activity(
    method: Callable[[Any, A], Awaitable[R]],
    arg: A,
    *,
    summary: str | None = None,
    queue: str | None = None,
    **options: Any,
) -> R: ...


@overload
async def run_activity(
    method: Callable[[Any, A], R],
    arg: A,
    *,
    summary: str | None = None,
    queue: str | None = None,
    **options: Any,
) -> R: ...


async def run_activity(
    method: Callable[[Any, A], Any],
    arg: A,
    *,
    summary: str | None = None,
    queue: str | None = None,
    **options: Any,
) -> Any:
    """An activity method of a SystemActivities class, on the queue of the system its class
    names (or `queue`, another of that system's), with that system's timeouts and retries
    (`options` override them)."""
    system = system_of(method)
    return await workflow.execute_activity_method(
        method,  # type: ignore[arg-type]
        arg,
        task_queue=activity_queue(system, queue),
        summary=summary,
        **{**SYSTEM_OPTIONS[system], **options},
    )


class StepFailed(Exception):
    """A step that no retry will cure: the process decides, usually by asking finance."""

    def __init__(self, step: str, error_type: str, message: str, details: object = None) -> None:
        super().__init__(message)
        self.step = step
        self.error_type = error_type
        self.message = message
        self.details = details


async def call_system(
    method: Callable[[Any, A], Awaitable[R]], arg: A, *, queue: str | None = None, **options: Any
) -> R:
    """An activity on an external system's queue (or `queue`, another of that system's) with
    that system's options (`options` override them); what no retry cures (a non-retryable
    error, or retries exhausted) becomes a StepFailed."""
    try:
        return await run_activity(method, arg, queue=queue, **options)
    except ActivityError as err:
        raise _step_failed(method, err.cause) from err


async def call_locally(method: Callable[[Any, A], Awaitable[R]], arg: A, **options: Any) -> R:
    """A quick activity run by the workflow's own worker as a local activity, with its
    system's timeouts and retries: no task queue, no round trip through the server, one
    marker in the history. For calls that answer in milliseconds and mostly from memory
    (a route); what no retry cures becomes a StepFailed, as with `call_system`."""
    try:
        return await workflow.execute_local_activity_method(
            method,  # type: ignore[arg-type]
            arg,
            **{**SYSTEM_OPTIONS[system_of(method)], **options},
        )
    except ActivityError as err:
        raise _step_failed(method, err.cause) from err
    except (ApplicationError, TemporalTimeout) as err:  # a local activity's failure comes bare
        raise _step_failed(method, err) from err


def _step_failed(method: Callable[..., Any], cause: BaseException | None) -> StepFailed:
    step = activity_name(method)
    if isinstance(cause, ApplicationError):
        details = cause.details[0] if cause.details else None
        return StepFailed(step, cause.type or "ApplicationError", cause.message, details)
    return StepFailed(step, "RetriesExhausted", f"{step} kept failing: {cause}")
