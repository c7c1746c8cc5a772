"""The one place that turns settings into concrete adapters (workers, starters and tests)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from adapters.billing.stripe import StripeBilling
from adapters.erp.netsuite import NetSuiteLedger
from adapters.erp.tryton import TrytonLedger
from adapters.events.broker import JetStreamBroker
from adapters.ports import BillingSystem, Ledger, SupportDesk
from adapters.routing_file import load_routing
from adapters.settings import Settings
from adapters.store import IntegrationStore
from adapters.support.zendesk import ZendeskSupport
from canonical.erp_routing import ErpRouting, single_erp_routing


@dataclass
class Adapters:
    """`ledger` is the ERP on the `erp` queue (the only one without a routing file);
    `ledgers` the others of the routing, by their name there."""

    billing: BillingSystem
    support: SupportDesk
    ledger: Ledger
    store: IntegrationStore
    routing: ErpRouting = field(default_factory=single_erp_routing)
    ledgers: dict[str, Ledger] = field(default_factory=dict)

    def ledger_of(self, erp: str) -> Ledger:
        """The adapter of the routing's ERP named `erp`."""
        return self.ledgers.get(erp) or self.ledger

    async def aclose(self) -> None:
        await self.billing.aclose()
        await self.support.aclose()
        await self.ledger.aclose()
        for ledger in self.ledgers.values():
            await ledger.aclose()
        self.store.dispose()


def build_store(settings: Settings) -> IntegrationStore:
    return IntegrationStore(settings.resolved_store_url)


def build_billing(settings: Settings) -> BillingSystem:
    return StripeBilling(settings.billing_url, settings.billing_api_key.get_secret_value())


def build_support(settings: Settings) -> SupportDesk:
    return ZendeskSupport(
        settings.support_url, settings.support_email, settings.support_api_token.get_secret_value()
    )


def build_ledger(settings: Settings) -> Ledger:
    return TrytonLedger(
        settings.erp_url,
        settings.erp_database,
        settings.erp_user,
        settings.erp_password.get_secret_value(),
    )


def build_netsuite_ledger(settings: Settings) -> NetSuiteLedger:
    """The NetSuite account as a Ledger (which ERP books what is decided where it is used)."""
    return NetSuiteLedger(
        settings.netsuite_url,
        settings.netsuite_account_id,
        settings.netsuite_consumer_key,
        settings.netsuite_consumer_secret,
        settings.netsuite_token_id,
        settings.netsuite_token_secret,
        concurrency=settings.netsuite_concurrency,
        subsidiary=settings.netsuite_subsidiary,
    )


LEDGER_BUILDERS: dict[str, Callable[[Settings], Ledger]] = {
    "tryton": build_ledger,
    "netsuite": build_netsuite_ledger,
}


def build_adapters(settings: Settings) -> Adapters:
    """Every adapter, and one ledger per ERP of the routing: the one on the `erp` queue is
    `ledger` (a Tryton), the others are built by their kind."""
    routing = load_routing(settings.resolved_erp_routing())
    on_erp_queue = next((erp for erp in routing.erps.values() if erp.queue == "erp"), None)
    ledgers = {
        name: LEDGER_BUILDERS[erp.kind](settings)
        for name, erp in routing.erps.items()
        if erp.queue != "erp"
    }
    return Adapters(
        billing=build_billing(settings),
        support=build_support(settings),
        ledger=LEDGER_BUILDERS[on_erp_queue.kind if on_erp_queue else "tryton"](settings),
        store=build_store(settings),
        routing=routing,
        ledgers=ledgers,
    )


async def connect_broker(settings: Settings, ensure_stream: bool = False) -> JetStreamBroker:
    """A connection to the event broker; close it on shutdown. With `ensure_stream`, the
    stream is made (or brought to its settings) first: what a publisher needs."""
    broker = await JetStreamBroker.connect(
        settings.nats_url,
        duplicate_window_seconds=settings.nats_stream_duplicate_window_seconds,
        replicas=settings.nats_stream_replicas,
    )
    if ensure_stream:
        try:
            await broker.ensure_stream()
        except BaseException:
            await broker.close()
            raise
    return broker
