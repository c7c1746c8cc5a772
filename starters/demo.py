"""The demo scenario, played against the running local stack through the real front doors.

Billing changes happen in the billing sandbox exactly as a person would make them in Stripe;
everything else follows from the signed webhooks: nothing here calls a workflow directly.
Today it plays the account-sync part; the amendment, credit, exception and reconciliation
parts join as those processes land.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import quote

from adapters.bootstrap import build_adapters
from adapters.settings import Settings
from canonical import AccountRecord, PostalAddress
from workflows.account_sync import account_workflow_id

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
    run = uuid.uuid4().hex[:8]
    ui = f"http://{settings.temporal_address.split(':')[0]}:{settings.temporal_ui_port}"
    try:
        echo("\n== Account sync: a new customer signs up in billing")
        customer = await adapters.billing.create_customer(  # type: ignore[attr-defined]
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
        await adapters.billing.update_customer(  # type: ignore[attr-defined]
            cid, name=renamed, idempotency_key=f"demo/{run}/rename-customer"
        )
        party, org = await eventually(
            "renamed ERP party and support organization", lambda: in_sync(renamed)
        )
        echo(f"erp and support now say {renamed!r}; cross-references stored:")
        for record in adapters.store.account_links(cid):
            echo(f"  {record.system:<8} {record.external_id:<12} {record.name}")
        workflow_id = account_workflow_id(cid)
        echo(
            f"trace it: {ui}/namespaces/{settings.temporal_namespace}/workflows/"
            f"{quote(workflow_id, safe='')}  (or search CustomerId = '{cid}')"
        )
        echo("\nDemo complete: account sync end to end.")
    finally:
        await adapters.aclose()
