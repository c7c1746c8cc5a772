"""Task queue names: `ledgerbridge` for workflows, one activity queue per external system.

Read by the workflows (where to send a call), the workers (where to poll) and the starters
(where to start a workflow), so none of them can disagree with another.
"""

from __future__ import annotations

from typing import Final, Literal

WORKFLOW_QUEUE: Final = "ledgerbridge"
SYSTEM_QUEUES: Final = ("billing", "support", "erp")
# Beside each ERP's queue, one for reconciliation's page reads (`erp-read`), with limits of
# its own: reads never queue behind postings, nor postings behind reads.
READ_SUFFIX: Final = "-read"
# The system an activity talks to; the store's activities run on the workflow queue.
System = Literal["billing", "support", "erp", "store"]


def task_queue(prefix: str, name: str = WORKFLOW_QUEUE) -> str:
    """`ledgerbridge` for workflows, one queue per external system; a prefix isolates tests."""
    return f"{prefix}{name}"


def queue_of(system: System, prefix: str = "") -> str:
    """The queue whose workers run the activities of `system`."""
    return task_queue(prefix, WORKFLOW_QUEUE if system == "store" else system)


def read_queue(queue: str) -> str:
    """The queue of reconciliation's page reads of the ERP on `queue` (`erp` -> `erp-read`)."""
    return f"{queue}{READ_SUFFIX}"
