"""Timeouts and retry policies per external system: every activity call uses one of these."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy

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
