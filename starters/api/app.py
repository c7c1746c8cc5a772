"""One ASGI app: signed webhooks in, the /v1 business API, health.

`create_app` builds what the handlers share and puts it on `app.state` (read back through
the dependencies of starters/api/dependencies.py); the handlers live in one module per area.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from adapters.bootstrap import build_billing, build_ledger, build_store, build_support
from adapters.logs import get_logger
from adapters.settings import Settings
from adapters.store import IntegrationStore
from adapters.tracing import instrument_api
from starters.api import (
    accounts,
    codec,
    console,
    credits,
    docs,
    erp_routing,
    event_endpoints,
    finance,
    health,
    metrics,
    ops,
    reconciliation,
    replay,
    webhooks,
)
from starters.api.auth import ApiKeyring
from starters.api.correlation import CorrelationMiddleware
from starters.api.errors import install_error_handlers
from starters.api.receipts import WebhookReceipts
from starters.api.temporal import TemporalConnection

log = get_logger("ledgerbridge.api")


def create_app(settings: Settings | None = None, store: IntegrationStore | None = None) -> FastAPI:
    settings = settings or Settings()
    store = store or build_store(settings)
    keyring = ApiKeyring.from_settings(settings)
    temporal = TemporalConnection(settings)
    receipts = WebhookReceipts(store)
    systems = (build_billing(settings), build_support(settings), build_ledger(settings))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(store.migrate)
        # Connect now, so the first webhook does not pay for it; a failure here is retried
        # by the first request that needs Temporal (and answered 503 if it still fails).
        warm = asyncio.create_task(temporal.client())
        warm.add_done_callback(lambda task: task.cancelled() or task.exception())
        log.info("api ready", host=settings.api_host, port=settings.api_port)
        yield
        warm.cancel()
        await receipts.close()
        for system in systems:
            await system.aclose()

    app = FastAPI(
        title="ledgerbridge",
        version="1",
        summary="Billing, support and ERP kept in agreement by durable workflows",
        lifespan=lifespan,
        # /docs comes from starters/api/docs.py, its assets from a package; no /redoc.
        docs_url=None,
        redoc_url=None,
    )
    state = app.state
    state.settings = settings
    state.store = store
    state.keyring = keyring
    state.temporal = temporal
    state.receipts = receipts
    state.billing, state.support, state.ledger = systems
    state.policy = settings.credit_policy

    app.add_middleware(CorrelationMiddleware)
    instrument_api(app, settings)  # traces, when an OTLP endpoint is configured
    install_error_handlers(app)
    # Webhooks first: a request's route is found by walking the routes in order (Starlette's
    # routing, and the trace's route lookup again), and webhooks are most of the requests.
    areas = (webhooks, ops, health, replay, accounts, finance, credits, reconciliation,
             event_endpoints, erp_routing, docs)  # fmt: skip
    for area in areas:
        app.include_router(area.router)
    console.install(app, settings, keyring)  # finance's pages at /console
    metrics.install(app, temporal)  # Prometheus at /metrics
    if settings.payload_keys:  # the Web UI shows decrypted payloads through /codec
        state.codec = codec.CodecService.from_settings(settings, keyring)
        app.include_router(codec.router)
    return app
