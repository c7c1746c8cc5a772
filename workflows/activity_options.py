"""Timeouts and retry policies per external system: every activity call uses one of these."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

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

WORKFLOW_QUEUE = "ledgerbridge"
SYSTEM_QUEUES = ("billing", "support", "erp")


def task_queue(prefix: str, name: str = WORKFLOW_QUEUE) -> str:
    """`ledgerbridge` for workflows, one queue per external system; a prefix isolates tests."""
    return f"{prefix}{name}"


def activity_queue(system: str) -> str:
    """The activity queue of a system, derived from the running workflow's own queue."""
    prefix = workflow.info().task_queue.removesuffix(WORKFLOW_QUEUE)
    return task_queue(prefix, system)


class StepFailed(Exception):
    """A step that no retry will cure: the process decides, usually by asking finance."""

    def __init__(self, step: str, error_type: str, message: str, details: object = None) -> None:
        super().__init__(message)
        self.step = step
        self.error_type = error_type
        self.message = message
        self.details = details


async def call_system(activity_name: str, arg: BaseModel, result: Any, system: str) -> Any:
    """An activity on an external system's queue with that system's options; what no retry
    cures (a non-retryable error, or retries exhausted) becomes a StepFailed."""
    options = ERP_CALL if system == "erp" else SAAS_CALL
    try:
        return await workflow.execute_activity(
            activity_name, arg, result_type=result, task_queue=activity_queue(system), **options
        )
    except ActivityError as err:
        cause = err.cause
        if isinstance(cause, ApplicationError):
            details = cause.details[0] if cause.details else None
            raise StepFailed(
                activity_name, cause.type or "ApplicationError", cause.message, details
            ) from err
        raise StepFailed(
            activity_name, "RetriesExhausted", f"{activity_name} kept failing: {cause}"
        ) from err
