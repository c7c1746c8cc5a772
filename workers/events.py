"""The worker's events out: the relay (outbox to broker), the analytics sink and the signed
webhooks, as background tasks beside the Temporal workers, and the exception an endpoint
failing for a day opens."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from urllib.parse import urlsplit

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy

from adapters import visibility
from adapters.bootstrap import connect_broker
from adapters.events.analytics import feeding_analytics
from adapters.events.broker import JetStreamBroker, subject_for
from adapters.events.relay import relaying
from adapters.events.subscriptions import EventEndpoint
from adapters.events.webhook_consumers import Alert, sending_webhooks
from adapters.events.webhooks_out import DeliveryOutcome
from adapters.settings import Settings
from adapters.store import IntegrationStore
from adapters.task_queues import task_queue
from canonical import ExceptionContext
from workflows.finance_exception import PROCESS, FinanceExceptionInput, FinanceExceptionWorkflow

EVENTS_PROCESS = "events_out"


def endpoint_alert(client: Client, settings: Settings) -> Alert:
    """Opens `exception/event-endpoint/<id>/<failing since>`: one per outage, whoever sees it
    first (a second worker's start finds it running)."""

    async def alert(endpoint: EventEndpoint, outcome: DeliveryOutcome) -> None:
        since = outcome.failing_since
        origin = f"event-endpoint/{endpoint.id}"
        # Named by id and host: a subscriber's URL may carry its token, and the subscriber's
        # answer is its own; neither goes into an event that other subscribers receive.
        host = urlsplit(endpoint.url).hostname or "?"
        last = f"HTTP {outcome.status_code}" if outcome.status_code else "no answer"
        failing = f"since {since:%Y-%m-%d %H:%M} UTC" if since else "for a day"
        context = ExceptionContext(
            process=EVENTS_PROCESS, origin_workflow_id=origin, origin_run_id="-",
            step="deliver_webhook", error_type="EndpointFailing",
            error_message=(
                f"endpoint {endpoint.id} ({host}) has failed every delivery {failing}; it is "
                f"paused. Last attempt: {last}"
            ),
            correlation_id=origin, allowed_decisions=["reject"],
            decision_effects={"reject": (
                "acknowledges the outage; nothing is resumed by it. Resume the endpoint "
                f"(POST /v1/event-endpoints/{endpoint.id}:resume) once the subscriber is back: "
                "its events wait in the stream and are delivered then, in order")},
        )  # fmt: skip
        stamp = f"{since:%Y%m%dT%H%M%S}" if since else "paused"
        await client.start_workflow(
            FinanceExceptionWorkflow.run,
            FinanceExceptionInput(context=context),
            id=f"exception/{origin}/{stamp}",
            task_queue=task_queue(settings.task_queue_prefix),
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=visibility.start_attributes(PROCESS, "open", correlation_id=origin),
            static_summary=f"Webhooks to {endpoint.id} ({host}) paused after a day of failures",
        )

    return alert


@contextlib.asynccontextmanager
async def events_out(
    store: IntegrationStore, client: Client, settings: Settings
) -> AsyncIterator[None]:
    """Until the block ends. Each part reconnects by itself: the broker being down delays
    events, never loses them."""

    async def broker() -> JetStreamBroker:
        return await connect_broker(settings, ensure_stream=True)

    async with (
        relaying(store, broker, subject_for, keep=timedelta(days=settings.events_outbox_keep_days)),
        feeding_analytics(store, broker),
        sending_webhooks(store, broker, endpoint_alert(client, settings)),
    ):
        yield
