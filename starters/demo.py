"""The demo scenario, played against the running local stack through the real front doors.

Billing changes happen in the billing sandbox exactly as a person would make them in Stripe;
everything else follows from the signed webhooks: nothing here calls a workflow directly.
Today it plays account sync and the mid-cycle upgrade; the credit, exception and
reconciliation parts join as those processes land.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar
from urllib.parse import quote

from adapters.billing.stripe import StripeBilling
from adapters.bootstrap import Adapters, build_adapters
from adapters.settings import Settings
from canonical import AccountRecord, BillingDocument, Money, PostalAddress, PostedDocument
from workflows.account_sync import account_workflow_id
from workflows.subscription_ledger import ledger_workflow_id

T = TypeVar("T")


class DemoFailed(Exception):
    pass


async def eventually(
    what: str, probe: Callable[[], Awaitable[T | None]], within: float = 60.0
) -> T:
    """Poll until the probe returns something; the stack works asynchronously."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = await probe()
        if found:
            return found
        await asyncio.sleep(0.5)
    raise DemoFailed(f"{what}: not seen within {within:.0f} s (see .ledgerbridge/logs/)")


async def play(settings: Settings, echo: Callable[[str], None] = print) -> None:
    adapters = build_adapters(settings)
    billing = adapters.billing
    assert isinstance(billing, StripeBilling)  # the demo acts as a person using billing
    demo = Demo(settings, adapters, billing, echo, uuid.uuid4().hex[:8])
    try:
        customer_id = await demo.account_sync()
        await demo.mid_cycle_upgrade(customer_id)
        echo("\nDemo complete: account sync and the mid-cycle upgrade, end to end.")
    finally:
        await adapters.aclose()


class Demo:
    def __init__(
        self,
        settings: Settings,
        adapters: Adapters,
        billing: StripeBilling,
        echo: Callable[[str], None],
        run: str,
    ) -> None:
        self.settings = settings
        self.adapters = adapters
        self.billing = billing
        self.echo = echo
        self.run = run

    def trace(self, workflow_id: str, search: str) -> None:
        ui = f"http://{self.settings.temporal_address.split(':')[0]}:{self.settings.temporal_ui_port}"
        self.echo(
            f"trace it: {ui}/namespaces/{self.settings.temporal_namespace}/workflows/"
            f"{quote(workflow_id, safe='')}  (or search {search})"
        )

    async def account_sync(self) -> str:
        echo, run, adapters = self.echo, self.run, self.adapters
        echo("\n== Account sync: a new customer signs up in billing")
        customer = await self.billing.create_customer(
            name=f"Northwind Analytics {run}",
            email=f"ap+{run}@northwind.example",
            address=PostalAddress(
                line1="1 Harbour Way", city="Boston", postal_code="02110", country="US"
            ),
            metadata={"demo_run": run},
            idempotency_key=f"demo/{run}/create-customer",
        )
        cid = customer.customer_id
        echo(f"billing: created customer {cid}; the signed customer.created webhook follows")

        async def in_sync(name: str) -> tuple[AccountRecord, AccountRecord] | None:
            party = await adapters.ledger.find_party(cid)
            org = await adapters.support.find_organization(cid)
            links = adapters.store.account_links(cid)
            if party and org and party.name == name and org.name == name and len(links) == 2:
                return party, org
            return None

        party, org = await eventually(
            "ERP party and support organization", lambda: in_sync(customer.name)
        )
        echo(f"erp: party {party.external_id} with code {cid}")
        echo(f"support: organization {org.external_id} with external id {cid}")

        echo("\n== Account sync: the customer is renamed in billing")
        renamed = f"Northwind Analytics Group {run}"
        await self.billing.update_customer(
            cid, name=renamed, idempotency_key=f"demo/{run}/rename-customer"
        )
        await eventually("renamed ERP party and support organization", lambda: in_sync(renamed))
        echo(f"erp and support now say {renamed!r}; cross-references stored:")
        for record in adapters.store.account_links(cid):
            echo(f"  {record.system:<8} {record.external_id:<12} {record.name}")
        self.trace(account_workflow_id(cid), f"CustomerId = '{cid}'")
        return cid

    async def mid_cycle_upgrade(self, customer_id: str) -> None:
        echo, key = self.echo, f"demo/{self.run}"
        echo("\n== Amendment-to-ERP: the customer subscribes, then upgrades mid-cycle")
        product = await self.billing.create_product(
            name="Northwind Insights", idempotency_key=f"{key}/product"
        )
        basic = await self.billing.create_price(
            product_id=product, unit_amount=Money.of("30.00", "USD"), nickname="Basic",
            idempotency_key=f"{key}/basic",
        )  # fmt: skip
        pro = await self.billing.create_price(
            product_id=product, unit_amount=Money.of("90.00", "USD"), nickname="Pro",
            idempotency_key=f"{key}/pro",
        )  # fmt: skip
        subscription = await self.billing.create_subscription(
            customer_id, basic, 1, idempotency_key=f"{key}/subscribe"
        )
        sid = subscription.subscription_id
        first = await self._latest_invoice(sid)
        echo(f"billing: subscription {sid} on Basic (30.00 USD/month); invoice "
             f"{first.number} {first.total}")  # fmt: skip
        posted = await self._posted(first)
        echo(f"erp: invoice {posted.erp_number} {posted.total} posted, journaled")

        upgrade_at = subscription.current_period_start + timedelta(days=12)
        await self.billing.update_subscription(
            sid, price_id=pro, proration_behavior="always_invoice", proration_date=upgrade_at,
            idempotency_key=f"{key}/upgrade",
        )  # fmt: skip
        prorated = await self._latest_invoice(sid)
        echo(f"billing: upgraded to Pro (90.00 USD/month) on {upgrade_at.date()}; "
             f"prorated invoice {prorated.number}:")  # fmt: skip
        for line in prorated.lines:
            echo(f"  {line.amount.amount:>10}  {line.description}")
        echo(f"  {prorated.total.amount:>10}  total {prorated.total.currency}")
        posted = await self._posted(prorated)
        if posted.total != prorated.total:
            raise DemoFailed(f"ERP total {posted.total} differs from billing {prorated.total}")
        echo(f"erp: invoice {posted.erp_number} {posted.total} posted: equal to the billing "
             f"invoice, once")  # fmt: skip
        self.trace(ledger_workflow_id(sid, customer_id), f"SubscriptionId = '{sid}'")

    async def _latest_invoice(self, subscription_id: str) -> BillingDocument:
        async for newest in self.billing.list_invoices(subscription_id=subscription_id):
            return newest  # billing lists newest first; `created` ties within a second
        raise DemoFailed(f"subscription {subscription_id} has no invoice")

    async def _posted(self, invoice: BillingDocument) -> PostedDocument:
        async def journaled_and_in_erp() -> PostedDocument | None:
            if self.adapters.store.find_posting("billing", invoice.document_id) is None:
                return None
            return await self.adapters.ledger.find_document(invoice.document_id)

        return await eventually(f"ERP document for {invoice.number}", journaled_and_in_erp)
