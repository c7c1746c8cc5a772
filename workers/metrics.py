"""Prometheus on a worker process: ledgerbridge's metrics and the Temporal SDK's.

Ours (adapters/metrics.py: adapter calls, postings, credits, reconciliation) are served by
prometheus-client at http://{LEDGERBRIDGE_WORKER_METRICS_HOST}:{…_WORKER_METRICS_PORT}/metrics.
The SDK's (workflow and activity task latencies, polls, slots, sticky cache, failures) come
from the SDK's own Prometheus exporter in its Rust core, on LEDGERBRIDGE_WORKER_SDK_METRICS_PORT.

Why two ports rather than the SDK's `MetricBuffer` forwarded into our registry: the buffer
hands over raw updates (counter deltas, every histogram observation) that would have to be
drained on a timer and re-aggregated here, bucket by bucket, for every metric and label set the
core invents; the core's exporter already does that, with the SDK's names and buckets, and
its output is what Temporal's own dashboards expect. Both are scraped as targets of the job.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import start_http_server
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

from adapters.logs import get_logger
from adapters.settings import Settings

log = get_logger("ledgerbridge.worker")


def sdk_runtime(settings: Settings) -> Runtime | None:
    """A runtime exporting the SDK's metrics on their port (Prometheus naming: `_total`,
    units, seconds); None (the default runtime, no export) when the port is 0."""
    if not settings.worker_sdk_metrics_port:
        return None
    address = f"{settings.worker_metrics_host}:{settings.worker_sdk_metrics_port}"
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=address,
                counters_total_suffix=True,
                unit_suffix=True,
                durations_as_seconds=True,
            )
        )
    )


@contextmanager
def worker_metrics(settings: Settings) -> Iterator[Runtime | None]:
    """Serve ours while the worker runs; yields the runtime its client must connect with.
    A port already taken fails the start: two workers must not share one."""
    runtime = sdk_runtime(settings)
    host, port = settings.worker_metrics_host, settings.worker_metrics_port
    server = start_http_server(port, addr=host) if port else None
    log.info(
        "worker metrics",
        metrics=f"http://{host}:{port}/metrics" if port else "off",
        sdk_metrics=f"http://{host}:{settings.worker_sdk_metrics_port}/metrics"
        if runtime
        else "off",
    )
    try:
        yield runtime
    finally:
        if server is not None:
            server[0].shutdown()
            server[0].server_close()


__all__ = ["sdk_runtime", "worker_metrics"]
