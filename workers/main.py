"""The ledgerbridge worker: workflows on `ledgerbridge`, activities on one queue per system.

Each external system has its own activity queue and rate limit, so an ERP outage cannot
starve billing work and the ERP is never hammered.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from temporalio.client import Client
from temporalio.worker import Worker

from activities._system import SystemActivities
from activities.accounts import (
    BillingAccountActivities,
    ErpAccountActivities,
    StoreAccountActivities,
    SupportAccountActivities,
)
from activities.amendments import (
    BillingDocumentActivities,
    ErpPostingActivities,
    FinanceMappingSource,
    JournalActivities,
)
from activities.audit import AuditActivities
from activities.credits import (
    BillingCreditActivities,
    CreditFactsActivities,
    CreditJournalActivities,
    SupportCaseActivities,
)
from activities.erp_routing import (
    ErpRoutingActivities,
    ErpShadowActivities,
    ShadowJournalActivities,
)
from activities.payments import BillingPaymentActivities
from activities.reconciliation import (
    BillingReconciliationActivities,
    ErpReconciliationActivities,
    ReconciliationStoreActivities,
    SupportReconciliationActivities,
)
from adapters.bootstrap import Adapters, build_adapters
from adapters.logs import configure_logging, get_logger
from adapters.mapping_file import MappingFile
from adapters.ports import Ledger
from adapters.settings import Settings
from adapters.store import IntegrationStore
from adapters.system_health import recording_system_health
from adapters.task_queues import read_queue, task_queue
from adapters.temporal import connect_for
from adapters.tracing import configure_tracing
from canonical.erp_routing import ErpRouting
from workers.events import events_out
from workers.metrics import worker_metrics
from workers.sandbox import workflow_runner
from workflows.account_sync import AccountSyncWorkflow
from workflows.case_to_credit import CaseToCreditWorkflow
from workflows.finance_exception import FinanceExceptionWorkflow
from workflows.reconciliation import ReconciliationWorkflow
from workflows.shadow_report import ShadowReportWorkflow
from workflows.subscription_ledger import SubscriptionLedgerWorkflow

WORKFLOWS = [
    AccountSyncWorkflow,
    SubscriptionLedgerWorkflow,
    CaseToCreditWorkflow,
    FinanceExceptionWorkflow,
    ReconciliationWorkflow,
    ShadowReportWorkflow,
]

log = get_logger("ledgerbridge.worker")


# An activity holds its worker slot also between its NetSuite requests: while the worker
# starts and completes it (Temporal round trips, tens of ms and more on a busy machine) and
# while it builds its next request. With one posting activity per account slot, each of those
# gaps leaves a slot of the account idle; with two, another activity's request is waiting for
# it. The requests in flight stay at the account's limit (NetSuiteLedger's semaphore): a
# request waits for about one other request to end (two while reconciliation reads pages
# too), so a posting takes at most two to three times its own requests' time, inside
# ERP_CALL's 30 s at NetSuite's usual 0.5-1 s a request (a posting makes up to six). Where an
# account answers slower, a posting past 30 s is retried, and the retry finds what the first
# attempt upserted by external id. `bench.erp_posting --erp netsuite` (100 invoices a side):
# ours at 0.87x the direct posters' rate with one activity a slot, 0.93x with two
# (bench/README.md).
NETSUITE_ACTIVITIES_PER_SLOT = 2


@dataclasses.dataclass(frozen=True)
class QueueLimits:
    """What the worker may do against each system: activities per second the whole fleet
    may start (server-side rate limit per task queue), ERP calls in flight per worker process;
    and how one worker polls and caches. Defaults are the settings' defaults."""

    billing: float = 50.0  # Stripe allows ~100 req/s in live mode; keep headroom
    support: float = 10.0  # Zendesk plans allow 200-700 req/min
    # Tryton writes serially (~1.5-2.5 postings/s on SQLite): the concurrency cap below is what
    # protects it; this rate only stops a stampede of cheap reads after an outage.
    erp: float = 10.0
    erp_concurrency: int = 2  # calls in flight per worker process
    # Reconciliation reads each ERP's pages on the ERP's read queue (`erp-read`), so its reads
    # and the postings never wait behind each other; a page read is one heavy call to the
    # same single-process Tryton, so it keeps the posting queue's pace and cap.
    erp_read: float = 10.0
    erp_read_concurrency: int = 2
    # A NetSuite account refuses requests past its own concurrency limit
    # (LEDGERBRIDGE_NETSUITE_CONCURRENCY; with several worker processes, each one's share of
    # it), and NetSuiteLedger holds the requests it has in flight to it: a NetSuite posting
    # queue runs NETSUITE_ACTIVITIES_PER_SLOT activities for each of the account's slots, its
    # read queue one for each (`queue_options`).
    netsuite_concurrency: int = 5
    max_cached_workflows: int = 1000  # the SDK's default
    workflow_task_slots: int = 100  # workflow tasks run at once (the SDK's default)
    workflow_pollers: int = 5  # long polls for workflow tasks (the SDK's default)
    activity_pollers: int = 5  # long polls for activity tasks, per queue (the SDK's default)

    @classmethod
    def from_settings(cls, settings: Settings) -> QueueLimits:
        return cls(
            billing=settings.worker_billing_per_second,
            support=settings.worker_support_per_second,
            erp=settings.worker_erp_per_second,
            erp_concurrency=settings.worker_erp_concurrency,
            erp_read=settings.worker_erp_read_per_second,
            erp_read_concurrency=settings.worker_erp_read_concurrency,
            netsuite_concurrency=settings.netsuite_concurrency,
            max_cached_workflows=settings.worker_max_cached_workflows,
            workflow_task_slots=settings.worker_workflow_task_slots,
            workflow_pollers=settings.worker_workflow_pollers,
            activity_pollers=settings.worker_activity_pollers,
        )

    def worker_options(self) -> dict[str, dict[str, Any]]:
        """`Worker` options per queue ("" is the workflow queue), from these limits; the
        benchmarks' baseline workers take the same."""
        polls = {"max_concurrent_activity_task_polls": self.activity_pollers}
        return {
            "": {
                **polls,
                "max_cached_workflows": self.max_cached_workflows,
                "max_concurrent_workflow_tasks": self.workflow_task_slots,
                "max_concurrent_workflow_task_polls": self.workflow_pollers,
            },
            "billing": {**polls, "max_task_queue_activities_per_second": self.billing},
            "support": {**polls, "max_task_queue_activities_per_second": self.support},
            "erp": {
                **polls,
                "max_task_queue_activities_per_second": self.erp,
                "max_concurrent_activities": self.erp_concurrency,
            },
            read_queue("erp"): {
                **polls,
                "max_task_queue_activities_per_second": self.erp_read,
                "max_concurrent_activities": self.erp_read_concurrency,
            },
        }

    def queue_options(self, routing: ErpRouting) -> dict[str, dict[str, Any]]:
        """`worker_options` with each ERP of the routing under its own queue and read queue:
        Tryton's (and any other kind's) the `erp` and `erp-read` options; a NetSuite
        account's no rate (NetSuite governs an account by requests in flight, not per second,
        so a rate on top would only leave the account's slots idle), its posting queue
        NETSUITE_ACTIVITIES_PER_SLOT activities for each slot of the account, its read queue
        (reconciliation's pages, a few a day) one for each: the adapter holds both together
        to the account's limit."""
        options = self.worker_options()
        erp, reads = options.pop("erp"), options.pop(read_queue("erp"))
        posting_slots = NETSUITE_ACTIVITIES_PER_SLOT * self.netsuite_concurrency
        for target in routing.erps.values():
            netsuite = target.kind == "netsuite"
            options[target.queue] = self._netsuite(erp, posting_slots) if netsuite else erp
            options[read_queue(target.queue)] = (
                self._netsuite(reads, self.netsuite_concurrency) if netsuite else reads
            )
        return options

    def _netsuite(self, queue_options: dict[str, Any], activities: int) -> dict[str, Any]:
        governed = {**queue_options, "max_concurrent_activities": activities}
        governed.pop("max_task_queue_activities_per_second", None)
        return governed


def activity_groups(
    adapters: Adapters, finance_mapping: FinanceMappingSource | None = None
) -> list[SystemActivities]:
    """Every activity class but the ERPs', wired to the adapters it calls."""
    return [
        StoreAccountActivities(adapters.store),
        AuditActivities(adapters.store),
        JournalActivities(adapters.store),
        CreditJournalActivities(adapters.store),
        ReconciliationStoreActivities(adapters.store, adapters.routing),
        BillingAccountActivities(adapters.billing),
        BillingDocumentActivities(adapters.billing),
        BillingPaymentActivities(adapters.billing),
        BillingCreditActivities(adapters.billing),
        BillingReconciliationActivities(
            adapters.store, adapters.billing, finance_mapping, adapters.routing
        ),
        CreditFactsActivities(adapters.support, adapters.billing, adapters.ledger, adapters.store),
        SupportAccountActivities(adapters.support),
        SupportCaseActivities(adapters.support),
        SupportReconciliationActivities(adapters.store, adapters.support),
        ErpRoutingActivities(adapters.billing, adapters.store, adapters.routing),
        ShadowJournalActivities(adapters.store, adapters.routing),
    ]


def erp_activity_groups(
    ledger: Ledger,
    store: IntegrationStore,
    finance_mapping: FinanceMappingSource | None = None,
    routing: ErpRouting | None = None,
) -> list[SystemActivities]:
    """The activities of one ERP, on its own queue (the postings on finance's mapping:
    without one, every posting goes to finance naming the gap)."""
    return [
        ErpAccountActivities(ledger),
        ErpPostingActivities(ledger, finance_mapping),
        ErpReconciliationActivities(store, ledger, routing),
        ErpShadowActivities(ledger),
    ]


def activities_by_queue(
    adapters: Adapters, finance_mapping: FinanceMappingSource | None = None
) -> dict[str, list[Callable[..., Any]]]:
    """Every activity, under the queue of the system its class declares ("" is the workflow
    queue, where activities on our own store run); each ERP of the routing on its queue."""
    by_queue: dict[str, list[Callable[..., Any]]] = {"": [], "billing": [], "support": []}
    for group in activity_groups(adapters, finance_mapping):
        by_queue["" if group.system == "store" else group.system].extend(group.activities())
        if group.runs_locally and group.system != "store":
            by_queue[""].extend(group.activities())
    for name, erp in adapters.routing.erps.items():
        ledger = adapters.ledger_of(name)
        for group in erp_activity_groups(ledger, adapters.store, finance_mapping, adapters.routing):
            by_queue.setdefault(erp.queue, []).extend(group.activities())
            if isinstance(group, ErpReconciliationActivities):
                # Reconciliation reads on the read queue; runs from before it, on the ERP's.
                by_queue.setdefault(read_queue(erp.queue), []).extend(group.activities())
    return by_queue


def build_workers(
    client: Client,
    adapters: Adapters,
    prefix: str = "",
    limits: QueueLimits | None = None,
    finance_mapping: FinanceMappingSource | None = None,
) -> list[Worker]:
    limits = limits or QueueLimits()
    activities = activities_by_queue(adapters, finance_mapping)
    store_executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="store-activity")
    options = limits.queue_options(adapters.routing)
    return [
        Worker(
            client,
            task_queue=task_queue(prefix),
            workflows=WORKFLOWS,
            workflow_runner=workflow_runner(),
            activities=activities[""],
            activity_executor=store_executor,
            **options[""],
        ),
        *(
            Worker(
                client,
                task_queue=task_queue(prefix, queue),
                activities=activities[queue],
                # Each ERP is protected on its own queue, by its own limits.
                **options[queue],
            )
            for queue in activities
            if queue
        ),
    ]


async def run_workers(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM, then let in-flight activities finish (graceful shutdown)."""
    configure_tracing(settings, "worker")  # before the client: its interceptors depend on it
    with worker_metrics(settings) as runtime:
        await _run_workers(settings, await connect_for(settings, wait_seconds=60, runtime=runtime))


async def _run_workers(settings: Settings, client: Client) -> None:
    adapters = build_adapters(settings)
    limits = QueueLimits.from_settings(settings)
    # Re-read whenever finance changes it: a fix and a `retry` are enough, no restart.
    finance_mapping = MappingFile(settings.resolved_finance_mapping())
    workers = build_workers(client, adapters, settings.task_queue_prefix, limits, finance_mapping)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    queues = [w.task_queue for w in workers]
    log.info(
        "worker polling",
        temporal=settings.temporal_address,
        task_queues=queues,
        limits=dataclasses.asdict(limits),
    )
    try:
        async with (
            recording_system_health(adapters.store),
            events_out(adapters.store, client, settings),  # outbox, analytics, webhooks
        ):
            await run_until_stopped(workers, stop)
    finally:
        await adapters.aclose()
    log.info("worker stopped")


async def run_until_stopped(workers: list[Worker], stop: asyncio.Event) -> None:
    """Run every worker; stop all when asked or when one of them fails (and re-raise that)."""
    tasks = [asyncio.create_task(w.run()) for w in workers]
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    await asyncio.gather(*tasks, return_exceptions=True)


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(run_workers(settings))


if __name__ == "__main__":
    main()
