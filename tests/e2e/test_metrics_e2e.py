"""Prometheus end to end: a webhook accepted then redelivered moves the API's counters (real
Temporal behind the intake), and a worker process serves ours and the SDK's metrics."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.e2e.conftest import (
    Stack,
    customer_updated,
    deliver_billing,
    eventually,
    metric,
    scrape,
    stop_process,
)
from tests.fixtures.servers import free_port

pytestmark = pytest.mark.e2e
WORKER_PORTS = {"worker_metrics_port": free_port(), "worker_sdk_metrics_port": free_port()}


@pytest.mark.parametrize("stack", [WORKER_PORTS], indirect=True)
async def test_a_worker_process_serves_our_metrics_and_the_sdks(stack: Stack) -> None:
    worker = stack.start_worker_process()
    try:
        api_before = await asyncio.to_thread(scrape, f"{stack.api_url}/metrics")
        body = await customer_updated(stack, "Metrics Co")
        first, again = deliver_billing(stack, body), deliver_billing(stack, body)
        assert first.json()["status"] == "accepted", first.text
        assert again.json()["status"] == "duplicate", again.text

        api = await asyncio.to_thread(scrape, f"{stack.api_url}/metrics")
        answered = "ledgerbridge_webhooks_answered_total"
        for outcome in ("accepted", "duplicate"):
            moved = metric(api, answered, source="billing", outcome=outcome) - metric(
                api_before, answered, source="billing", outcome=outcome
            )
            assert moved >= 1, outcome
        assert metric(api, "ledgerbridge_waiting_work_read_ok") == 1

        host = stack.settings.worker_metrics_host
        ours_url = f"http://{host}:{WORKER_PORTS['worker_metrics_port']}/metrics"
        sdk_url = f"http://{host}:{WORKER_PORTS['worker_sdk_metrics_port']}/metrics"

        async def synced_in_the_worker() -> float:
            try:
                ours = await asyncio.to_thread(scrape, ours_url)
            except httpx.HTTPError:
                return 0  # still starting
            calls = "ledgerbridge_adapter_calls_total"
            erp = metric(ours, calls, system="erp", outcome="ok")
            return min(erp, metric(ours, calls, system="support", outcome="ok"))

        await eventually(synced_in_the_worker, "the worker's ERP and support calls counted", 90)
        ours = await asyncio.to_thread(scrape, ours_url)
        assert metric(ours, "ledgerbridge_adapter_call_duration_seconds_count", system="erp") > 0

        async def completed_in_the_sdk() -> float:
            # The sync's activities are counted before its workflow completes: wait for that.
            return metric(
                await asyncio.to_thread(scrape, sdk_url), "temporal_workflow_completed_total"
            )

        await eventually(completed_in_the_sdk, "the SDK counts the completed sync", 60)
        sdk = await asyncio.to_thread(scrape, sdk_url)
        names = {name for name, _ in sdk}
        assert any(n.startswith("temporal_") for n in names), sorted(names)[:20]
        assert not any(n.startswith("ledgerbridge_") for n in names)
    finally:
        stop_process(worker)
