"""End to end through billing's signed webhooks, with two ERPs: the real Tryton books every
entity; the EU entity moves to the NetSuite sandbox, legacy, then shadow (each posting also
goes to NetSuite, the shadow report compares the two), then cutover (NetSuite books it). A
US customer stays in Tryton throughout. Every step goes through the API as a controller
takes it, and what no route covers is refused."""

from __future__ import annotations

import argparse
import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from adapters.errors import TransientError
from canonical import Money, Payment
from starters.mapping_commands import cmd_mapping
from tests.e2e.conftest import API_KEYS, SOLD_PRODUCT, Stack, eventually

pytestmark = pytest.mark.e2e
ROUTING = {
    "ledger_currencies": ["USD", "EUR"],
    "erp_routing_text": """version = 1
[erps.tryton]
kind = "tryton"
queue = "erp"
[erps.netsuite]
kind = "netsuite"
queue = "erp-netsuite"
[[entities]]
name = "EU"
legacy = "tryton"
target = "netsuite"
match = { countries = ["DE", "FR"] }
[[entities]]
name = "US"
legacy = "tryton"
match = { countries = ["US"] }
""",
}


async def api(stack: Stack, method: str, path: str, role: str, body: Any = None) -> httpx.Response:
    """A call to the API as `role`, off the event loop the in-process worker runs on."""
    headers = {"Authorization": f"Bearer {API_KEYS[role]}"}
    async with httpx.AsyncClient(timeout=60) as client:
        return await client.request(method, f"{stack.api_url}{path}", json=body, headers=headers)


async def paid_invoice(stack: Stack, customer_id: str, currency: str, key: str) -> tuple[str, str]:
    """A new subscription of the customer, paid by card: its invoice and payment ids."""
    driver = stack.driver
    method = await driver.attach_payment_method(customer_id, idempotency_key=f"{key}/pm")
    price = await driver.create_price(SOLD_PRODUCT, 2500, currency, idempotency_key=f"{key}/p")
    subscription = await driver.subscribe(customer_id, price.id, payment_method=str(method.id),
                                          idempotency_key=f"{key}/s")  # fmt: skip
    invoice_id = str(subscription.latest_invoice)

    async def read_payments() -> list[Payment] | None:
        try:  # the test reads billing itself, without the retries an activity has
            return await stack.adapters.billing.invoice_payments(invoice_id)
        except TransientError:
            return None

    [payment] = await eventually(read_payments, f"{invoice_id}'s payments read", 30)
    journal = stack.adapters.store

    async def journaled() -> bool:
        return journal.find_posting("billing", payment.payment_id) is not None

    await eventually(journaled, f"{payment.payment_id} journaled", 120)
    return invoice_id, payment.payment_id


@pytest.mark.parametrize("stack", [ROUTING], indirect=True)
async def test_an_entity_moves_to_netsuite_through_shadow_and_cutover(
    stack: Stack, in_process_worker: None
) -> None:
    tryton, netsuite = stack.adapters.ledger, stack.adapters.ledger_of("netsuite")
    journal = stack.adapters.store
    run = uuid.uuid4().hex[:8]
    eu = await stack.driver.create_customer("Lumière GmbH", idempotency_key=f"{run}/eu",
                                            address={"country": "DE"})  # fmt: skip
    us = await stack.driver.create_customer("Acme Inc", idempotency_key=f"{run}/us",
                                            address={"country": "US"})  # fmt: skip

    # Legacy: Tryton books the EU entity; NetSuite holds nothing of it.
    legacy_invoice, _ = await paid_invoice(stack, eu.id, "eur", f"{run}/1")
    entry = journal.find_posting("billing", legacy_invoice)
    assert entry is not None and (entry.erp, entry.entity) == ("tryton", "EU")
    assert (await tryton.find_document(legacy_invoice)) is not None
    assert await netsuite.find_document(legacy_invoice) is None

    today = datetime.now(UTC).date().isoformat()

    async def step(mode: str, reason: str) -> httpx.Response:
        body = {"mode": mode, "effective_from": today, "reason": reason}
        return await api(stack, "POST", "/v1/erp/entities/EU/mode", "finance_admin", body)

    cutover_first = await step("cutover", "too soon")
    assert cutover_first.status_code == 409, cutover_first.text
    shadow = await step("shadow", "phase 1")
    assert shadow.status_code == 200 and shadow.json()["shadowed_to"] == "netsuite", shadow.text

    # Shadow: Tryton stays the book of record; the same invoice and payment reach NetSuite.
    shadow_invoice, shadow_payment = await paid_invoice(stack, eu.id, "eur", f"{run}/2")
    entry = journal.find_posting("billing", shadow_invoice)
    assert entry is not None and entry.erp == "tryton"
    in_tryton, in_netsuite = await tryton.find_document(shadow_invoice), None

    async def shadowed() -> Any:
        return await netsuite.find_payment(shadow_payment)

    await eventually(shadowed, "the payment's shadow in NetSuite", 60)
    in_netsuite = await netsuite.find_document(shadow_invoice)
    assert in_tryton is not None and in_netsuite is not None
    assert in_netsuite.total == in_tryton.total == Money.of("25.00", "EUR")
    assert in_netsuite.state == "paid"
    report = await api(
        stack, "POST", "/v1/erp/entities/EU/shadow-reports", "finance", {"day": today}
    )
    assert report.status_code == 200, report.text
    assert (report.json()["compared"], report.json()["differences"]) == (2, [])

    cutover = await step("cutover", "clean shadow")
    assert cutover.status_code == 200 and cutover.json()["books_today"] == "netsuite", cutover.text

    # Cutover: NetSuite books the EU entity's new documents and their money; Tryton does not.
    new_invoice, new_payment = await paid_invoice(stack, eu.id, "eur", f"{run}/3")
    entry = journal.find_posting("billing", new_invoice)
    assert entry is not None and (entry.erp, entry.entity) == ("netsuite", "EU")
    assert (await netsuite.find_document(new_invoice)) is not None
    assert await tryton.find_document(new_invoice) is None
    payment = journal.find_posting("billing", new_payment)
    assert payment is not None and payment.erp == "netsuite"

    # The US entity never moved: Tryton alone.
    us_invoice, _ = await paid_invoice(stack, us.id, "usd", f"{run}/4")
    entry = journal.find_posting("billing", us_invoice)
    assert entry is not None and (entry.erp, entry.entity) == ("tryton", "US")
    assert await netsuite.find_document(us_invoice) is None

    steps = (await api(stack, "GET", "/v1/erp/entities", "ops")).json()
    assert [(e["name"], e["books_today"]) for e in steps] == [("EU", "netsuite"), ("US", "tryton")]
    audit = [a.action for a in journal.audit_entries() if a.subject == "erp/entity/EU"]
    assert audit == ["erp.mode_changed", "erp.mode_changed"]


@pytest.mark.parametrize("stack", [ROUTING], indirect=True)
async def test_finances_mapping_is_checked_against_each_erps_catalogue(stack: Stack) -> None:
    """The local catalogue's mapping names what both ERPs have: `mapping check --erp`."""
    for erp in (None, "netsuite"):
        args = argparse.Namespace(file=None, json=True, erp=erp)
        assert await asyncio.to_thread(cmd_mapping, args, stack.settings) == 0, erp
    unknown = argparse.Namespace(file=None, json=True, erp="sap")
    assert await asyncio.to_thread(cmd_mapping, unknown, stack.settings) == 2


@pytest.mark.parametrize("stack", [ROUTING], indirect=True)
async def test_a_customer_no_route_covers_is_a_finance_exception_and_nothing_is_posted(
    stack: Stack, in_process_worker: None
) -> None:
    """Routing never guesses: a Japanese customer, in neither entity of this routing, waits
    on finance naming what the routing looked at; no ERP holds anything of it."""
    run = uuid.uuid4().hex[:8]
    customer = await stack.driver.create_customer("Sakura KK", idempotency_key=f"{run}/jp",
                                                  address={"country": "JP"})  # fmt: skip
    driver = stack.driver
    method = await driver.attach_payment_method(customer.id, idempotency_key=f"{run}/pm")
    price = await driver.create_price(SOLD_PRODUCT, 2500, "usd", idempotency_key=f"{run}/p")
    subscription = await driver.subscribe(customer.id, price.id, payment_method=str(method.id),
                                          idempotency_key=f"{run}/s")  # fmt: skip
    store = stack.adapters.store

    async def opened() -> Any:
        found = [a for a in store.audit_entries() if a.action == "exception.opened"
                 and a.details.get("customer_id") == customer.id]  # fmt: skip
        return found[0] if found else None

    opening = await eventually(opened, "a finance exception for the customer", 90)
    assert opening.details["error_type"] == "NoRoute"
    assert "country JP" in opening.details["error_message"]
    invoice_id = str(subscription.latest_invoice)
    assert store.find_posting("billing", invoice_id) is None
    assert await stack.adapters.ledger.find_document(invoice_id) is None
    assert await stack.adapters.ledger_of("netsuite").find_document(invoice_id) is None
