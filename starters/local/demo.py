"""The demo scenario, played against the running local stack through the real front doors.

Billing changes happen in the billing sandbox exactly as a person would make them in Stripe;
everything else follows from the signed webhooks: nothing here calls a workflow directly.
It plays account sync, the mid-cycle upgrade, a support credit approved by finance from
the terminal, and a credit on a settled invoice that finance resolves from its inbox.
Finance and support act through the `ledgerbridge` command line, as they would.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from adapters import metrics
from adapters.bootstrap import Adapters, build_adapters
from adapters.erp import TrytonLedger
from adapters.settings import Settings
from adapters.system_health import aware
from canonical import AccountRecord, BillingDocument, Money, PostedDocument
from canonical.ledger import REJECTED_POSTING_PREFIX, ledger_workflow_id
from canonical.reconciliation import ReceivablePage
from sandbox.billing.driver import BillingDriver
from starters.console import call_api
from starters.local.catalog import load_local_catalog
from starters.local.stack import metrics_endpoints
from starters.local.subscriber import LocalSubscriber
from workflows.account_sync import account_workflow_id

T = TypeVar("T")
# The catalogue's subscription product (`ledgerbridge up` made it; finance's mapping books it
# on the ERP's SUBSCRIPTION product and revenue account 4000).
PLATFORM = "prod_lb_platform"
RECEIVABLE = "1200"  # the ERP's receivable account (starters/local/tryton_bootstrap.py)


class DemoFailed(Exception):
    pass


def _add(first: str | None, second: str) -> str:
    """Two amounts as the demo prints them ("12.00 EUR"), added (same currency)."""
    if first is None:
        return second
    (a, currency), (b, _) = first.split(), second.split()
    return f"{Decimal(a) + Decimal(b)} {currency}"


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
    # The demo acts in billing as a person does, through Stripe's own SDK.
    driver = BillingDriver.connect(
        settings.billing_api_key.get_secret_value(), settings.billing_url
    )
    demo = Demo(settings, adapters, driver, echo, uuid.uuid4().hex[:8])
    subscriber = LocalSubscriber(echo)
    try:
        with subscriber.serving():
            await demo.subscribe(subscriber)
            await demo.scenario()
            await demo.show_events(subscriber)
        echo(
            "\nDemo complete: account sync, the mid-cycle upgrade, a credit approved by finance, "
            "a settled-invoice exception decided by finance, payments, a partial refund, a EUR "
            "customer with VAT, the books read back from the ERP, a reconciliation in "
            "agreement, and every business fact delivered to a subscriber."
        )
    finally:
        await driver.aclose()
        await adapters.aclose()


class Demo:
    def __init__(
        self,
        settings: Settings,
        adapters: Adapters,
        driver: BillingDriver,
        echo: Callable[[str], None],
        run: str,
    ) -> None:
        self.settings = settings
        self.adapters = adapters
        self.driver = driver
        self.echo = echo
        self.run = run
        self._payments_seen: list[str] = []
        self._customers: list[str] = []
        self._subscribed_at: datetime | None = None
        self._endpoint_id = ""

    async def scenario(self) -> None:
        customer_id = await self.account_sync()
        first_invoice = await self.mid_cycle_upgrade(customer_id)
        await self.credit_approved_by_finance(customer_id)
        await self.credit_on_a_settled_invoice(customer_id, first_invoice)
        refund = await self.partial_refund(first_invoice)
        eur_invoice = await self.eur_customer_with_vat()
        await self.show_books([first_invoice.document_id, eur_invoice.document_id], refund)
        await self.eu_entity_moves_to_netsuite()
        await self.reconcile()
        await self.show_metrics()

    async def subscribe(self, subscriber: LocalSubscriber) -> None:
        """Register the local subscriber for every event, as ops would."""
        self.echo("\n== Events out: a subscriber registered for every business fact")
        body = {"url": subscriber.url, "description": f"the demo's subscriber ({self.run})"}
        answer = call_api(self.settings, "post", "/v1/event-endpoints", role="ops", json=body)
        created = answer.json()
        subscriber.secret = created["secret"]
        self._endpoint_id = str(created["id"])
        self._subscribed_at = datetime.fromisoformat(created["created_at"])
        self.echo(f"endpoint {created['id']} at {subscriber.url}: signed per Standard Webhooks "
                  "(its whsec_ secret shown once, to the subscriber)")  # fmt: skip

    async def show_events(self, subscriber: LocalSubscriber) -> None:
        """Every event recorded since the subscriber registered reached it and the analytics
        table, each once."""
        self.echo("\n== Events out: what the subscriber and the analytics table received")
        since = self._subscribed_at
        assert since is not None

        def published() -> list[str]:
            return [e.event_id for e in self.adapters.store.outbox_events()
                    if aware(e.created_at) >= since]  # fmt: skip

        async def all_arrived() -> list[str] | None:
            ids = published()
            analytics = {r.event_id for r in self.adapters.store.business_events()}
            arrived = set(subscriber.received)
            return ids if ids and set(ids) <= arrived and set(ids) <= analytics else None

        ids = await eventually("every event at the subscriber and in the analytics table",
                               all_arrived, within=90)  # fmt: skip
        self.echo(f"events: {len(ids)} recorded since the subscriber registered; {len(ids)} "
                  f"delivered to it, each once, every signature verified by standardwebhooks "
                  f"({subscriber.refused} refused); {len(ids)} in the analytics table "
                  "(business_events)")  # fmt: skip
        # The subscriber goes away with the demo: its endpoint is paused, not left failing.
        call_api(self.settings, "post", f"/v1/event-endpoints/{self._endpoint_id}:pause",
                 role="ops", json={"reason": f"the demo ({self.run}) is over"})  # fmt: skip

    def trace(self, workflow_id: str, search: str) -> None:
        ui = f"http://{self.settings.temporal_address.split(':')[0]}:{self.settings.temporal_ui_port}"
        self.echo(
            f"trace it: {ui}/namespaces/{self.settings.temporal_namespace}/workflows/"
            f"{quote(workflow_id, safe='')}  (or search {search})"
        )

    async def account_sync(self) -> str:
        echo, run, adapters = self.echo, self.run, self.adapters
        echo("\n== Account sync: a new customer signs up in billing")
        name = f"Northwind Analytics {run}"
        customer = await self.driver.create_customer(
            name,
            email=f"ap+{run}@northwind.example",
            address={"line1": "1 Harbour Way", "city": "Boston", "postal_code": "02110",
                     "country": "US"},
            metadata={"demo_run": run},
            idempotency_key=f"demo/{run}/create-customer",
        )  # fmt: skip
        cid = customer.id
        self._customers.append(cid)
        echo(f"billing: created customer {cid}; the signed customer.created webhook follows")

        async def in_sync(name: str) -> tuple[AccountRecord, AccountRecord] | None:
            party = await adapters.ledger.find_party(cid)
            org = await adapters.support.find_organization(cid)
            # The cross-references are stored after both systems: wait for them to say it too.
            names = [link.name for link in adapters.store.account_links(cid)]
            if party and org and party.name == name and org.name == name and names == [name] * 2:
                return party, org
            return None

        party, org = await eventually("ERP party and support organization", lambda: in_sync(name))
        echo(f"erp: party {party.external_id} with code {cid}")
        echo(f"support: organization {org.external_id} with external id {cid}")

        echo("\n== Account sync: the customer is renamed in billing")
        renamed = f"Northwind Analytics Group {run}"
        await self.driver.update_customer(
            cid, name=renamed, idempotency_key=f"demo/{run}/rename-customer"
        )
        await eventually("renamed ERP party and support organization", lambda: in_sync(renamed))
        echo(f"erp and support now say {renamed!r}; cross-references stored:")
        for record in adapters.store.account_links(cid):
            echo(f"  {record.system:<8} {record.external_id:<12} {record.name}")
        self.trace(account_workflow_id(cid), f"CustomerId = '{cid}'")
        return cid

    async def mid_cycle_upgrade(self, customer_id: str) -> BillingDocument:
        echo, key = self.echo, f"demo/{self.run}"
        echo("\n== Amendment-to-ERP: the customer subscribes, then upgrades mid-cycle")
        # Sold from the catalogue finance has mapped to the ERP's products and accounts.
        basic = await self.driver.create_price(
            PLATFORM, 3000, "usd", nickname="Basic", idempotency_key=f"{key}/basic"
        )
        pro = await self.driver.create_price(
            PLATFORM, 9000, "usd", nickname="Pro", idempotency_key=f"{key}/pro"
        )
        created = await self.driver.subscribe(
            customer_id, basic.id, idempotency_key=f"{key}/subscribe"
        )
        sid = created.id
        subscription = await self.adapters.billing.get_subscription(sid)
        first = await self._latest_invoice(sid)
        echo(f"billing: subscription {sid} on Basic (30.00 USD/month); invoice "
             f"{first.number} {first.total}")  # fmt: skip
        posted = await self._posted(first)
        echo(f"erp: invoice {posted.erp_number} {posted.total} posted, journaled")

        upgrade_at = subscription.current_period_start + timedelta(days=12)
        await self.driver.change_plan(
            sid, price_id=pro.id, proration_behavior="always_invoice",
            proration_date=int(upgrade_at.timestamp()), idempotency_key=f"{key}/upgrade",
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
        return first

    async def credit_approved_by_finance(self, customer_id: str) -> None:
        echo = self.echo
        echo("\n== Case-to-credit: two days later an incident; support asks for a partial credit")
        org = await self.adapters.support.find_organization(customer_id)
        if org is None:
            raise DemoFailed(f"customer {customer_id} has no support organization")
        case_id = self._open_ticket(
            int(org.external_id),
            "Dashboards down for 6 hours",
            credit=("45.00", "USD", "Dashboards unavailable for 6 hours", "INC-1142"),
        )
        echo(
            f"support: ticket #{case_id} asks a credit of 45.00 USD (half of the 90.00 USD "
            f"monthly; above the auto-approval threshold); the signed webhook follows"
        )

        async def waiting() -> str | None:
            listed = self.cli("finance", "inbox", "--customer", customer_id)
            lines = [line for line in listed.splitlines() if f"credit/{case_id}/" in line]
            return lines[0].split()[-1] if lines else None

        credit_id = await eventually("the credit in the finance inbox", waiting)
        self.show_cli("finance", "inbox", "--customer", customer_id)
        await self._erp_faults("PUT", "rules", {"rules": [{"mode": "unavailable"}]})
        await self._erp_faults("DELETE", "stats")
        echo("\nerp: down for maintenance from now on (every call answered 503)")
        self.show_cli(
            "finance",
            "approve",
            credit_id,
            "--reason",
            "Incident INC-1142 confirmed; within the SLA credit policy",
        )

        async def refused_twice() -> int | None:
            refused = int((await self._erp_faults("GET", "stats"))["faults"]["unavailable"])
            return refused if refused >= 2 else None

        refused = await eventually("the credit note post retried against the ERP", refused_twice)
        await self._erp_faults("DELETE", "rules")
        echo(f"erp: back; it refused {refused} attempts to post the credit note meanwhile, "
             f"and the workflow kept retrying with backoff")  # fmt: skip
        state = await self._credit_done(credit_id, "applied")
        copies = await self._erp_copies(state["billing_document"])
        if copies != 1:
            raise DemoFailed(f"the ERP holds {copies} credit notes for {state['billing_document']}")
        minor, currency = await self.driver.balance(customer_id)
        balance = Money.from_minor(minor, currency) if currency else minor
        posted = await self.adapters.ledger.find_document(state["billing_document"])
        if posted is None or posted.total != Money.of("45.00", "USD"):
            raise DemoFailed(f"the ERP does not hold the 45.00 USD credit note: {posted}")
        echo(
            f"billing: balance credit {state['billing_document']}; the customer's balance is "
            f"{balance} (taken off the next invoice)"
        )
        echo(f"erp: credit note {posted.erp_number} {posted.total} posted once, journaled")
        case = await self.adapters.support.get_case(case_id)
        echo(
            f"support: ticket #{case_id} tagged {', '.join(case.tags)}; internal note and "
            f"public reply written"
        )
        for entry in self.adapters.store.audit_entries(credit_id):
            echo(f"audit: {entry.action} by {entry.actor} ({entry.role}): {entry.reason}")
        self.trace(credit_id, f"CaseId = '{case_id}'")

    async def credit_on_a_settled_invoice(self, customer_id: str, invoice: BillingDocument) -> None:
        echo = self.echo
        echo("\n== Finance exception: a second adjustment targets an invoice already settled")
        await self.driver.pay(invoice.document_id, idempotency_key=f"demo/{self.run}/pay")
        echo(f"billing: the customer paid invoice {invoice.number} ({invoice.total})")
        org = await self.adapters.support.find_organization(customer_id)
        assert org is not None
        case_id = self._open_ticket(int(org.external_id), "Invoice question", credit=None)
        echo(
            f"support: on ticket #{case_id} an agent requests 8.00 USD against "
            f"{invoice.number} through the API:"
        )
        request = (
            "credits",
            "request",
            "--case",
            case_id,
            "--amount",
            "8.00",
            "--currency",
            "USD",
            "--reason",
            "Goodwill: late invoice question",
            "--invoice",
            invoice.document_id,
            "--request-id",
            "goodwill-1",
        )
        self.show_cli(*request)
        credit_id = f"credit/{case_id}/goodwill-1"
        exception_id = f"exception/{credit_id}/1"

        async def in_inbox() -> bool:
            return exception_id in self.cli("finance", "inbox", "--customer", customer_id)

        await eventually("the settled-invoice exception in the finance inbox", in_inbox)
        self.show_cli("finance", "inbox", "--customer", customer_id)
        self.show_cli("finance", "show", exception_id)
        self.show_cli(
            "finance",
            "decide",
            exception_id,
            "compensate",
            "--reason",
            "Paid invoice: give the goodwill credit on the next invoice",
        )
        state = await self._credit_done(credit_id, "applied")
        posted = await self.adapters.ledger.find_document(state["billing_document"])
        if posted is None:
            raise DemoFailed(f"no ERP credit note for {state['billing_document']}")
        echo(
            f"the credit workflow continued as finance decided: balance credit "
            f"{state['billing_document']}, ERP credit note {posted.erp_number} {posted.total}"
        )
        for entry in self.adapters.store.audit_entries(exception_id):
            echo(f"audit: {entry.action} by {entry.actor} ({entry.role}): {entry.reason}")
        self.trace(
            exception_id, f"BusinessProcess = 'finance_exception' AND CustomerId = '{customer_id}'"
        )

    async def partial_refund(self, invoice: BillingDocument) -> str:
        """The invoice the customer paid by card is paid in the ERP too; then a third of
        the payment goes back to the customer."""
        echo = self.echo
        echo("\n== Payments and refunds: the card payment reaches the ERP; part is refunded")
        [payment] = await self.adapters.billing.invoice_payments(invoice.document_id)
        await self._journaled(payment.payment_id)
        erp = await self._erp_invoice(invoice.document_id)
        if erp["state"] != "paid":
            raise DemoFailed(f"the ERP invoice {erp['number']} is {erp['state']}, not paid")
        echo(f"billing: payment {payment.payment_id} of {payment.amount} by {payment.method} "
             f"({payment.payment_intent_id})")  # fmt: skip
        echo(f"erp: payment posted on the card clearing account; invoice {erp['number']} is "
             f"{erp['state']}")  # fmt: skip
        refunded = Money.of("10.00", payment.amount.currency)
        refund = await self.driver.refund(
            payment_intent_id=payment.payment_intent_id,
            amount=refunded.to_minor(),
            reason="requested_by_customer",
            idempotency_key=f"demo/{self.run}/refund",
        )
        echo(f"billing: refund {refund.id} of {refunded} (a partial refund of that payment); "
             "the signed charge.refunded webhook follows")  # fmt: skip
        await self._journaled(refund.id)
        await self._journaled(f"{refund.id}/payout")
        note = await self._erp_invoice(refund.id)
        echo(f"erp: refund credit note {note['number']} {note['total_amount']} on the refunds "
             f"account, and the payment out; both reconciled ({note['state']})")  # fmt: skip
        return str(refund.id)

    async def eur_customer_with_vat(self) -> BillingDocument:
        echo, key = self.echo, f"demo/{self.run}/eur"
        echo("\n== Tax and currencies: a French customer billed in EUR with 20 % VAT pays by card")
        catalog = load_local_catalog(self.settings.home)
        customer = await self.driver.create_customer(
            f"Lumière Analytique {self.run}",
            email=f"compta+{self.run}@lumiere.example",
            address={"line1": "12 rue de la Paix", "city": "Paris", "postal_code": "75002",
                     "country": "FR"},
            idempotency_key=f"{key}/customer",
        )  # fmt: skip
        self._customers.append(customer.id)
        method = await self.driver.attach_payment_method(customer.id, idempotency_key=f"{key}/pm")
        price = await self.driver.create_price(
            PLATFORM, 10000, "eur", nickname="Pro EU", idempotency_key=f"{key}/price"
        )
        subscription = await self.driver.subscribe(
            customer.id,
            price.id,
            payment_method=str(method.id),
            default_tax_rates=[catalog.tax_rates["eu_vat_20"]],
            idempotency_key=f"{key}/subscribe",
        )
        invoice = await self._latest_invoice(subscription.id)
        echo(f"billing: subscription {subscription.id}; invoice {invoice.number} "
             f"{invoice.subtotal} + VAT {invoice.tax} = {invoice.total}, "
             f"{invoice.status} by card")  # fmt: skip
        posted = await self._posted(invoice)
        [payment] = await self.adapters.billing.invoice_payments(invoice.document_id)
        await self._journaled(payment.payment_id)
        if posted.total != invoice.total:
            raise DemoFailed(f"ERP total {posted.total} differs from billing {invoice.total}")
        echo(f"erp: invoice {posted.erp_number} {posted.total}, VAT as the ERP's tax; "
             f"payment {payment.payment_id} applied")  # fmt: skip
        self.trace(ledger_workflow_id(subscription.id, customer.id),
                   f"SubscriptionId = '{subscription.id}'")  # fmt: skip
        return invoice

    async def eu_entity_moves_to_netsuite(self) -> None:
        """The EU entity goes from Tryton to NetSuite as a controller moves it: shadow (Tryton
        stays the book of record, NetSuite gets the same postings), a clean shadow report,
        then cutover (NetSuite books it); the US entity stays in Tryton."""
        echo, key = self.echo, f"demo/{self.run}/eu"
        echo("\n== Two ERPs: the EU entity moves from Tryton to NetSuite (shadow, then cutover)")
        self.show_cli("erp", "entities")
        customer = await self.driver.create_customer(
            f"Nordlicht Software GmbH {self.run}", email=f"rechnung+{self.run}@nordlicht.example",
            address={"line1": "Friedrichstraße 68", "city": "Berlin", "postal_code": "10117",
                     "country": "DE"},
            idempotency_key=f"{key}/customer",
        )  # fmt: skip
        self._customers.append(customer.id)
        today = str(datetime.now(UTC).date())
        if self._eu_mode() == "legacy":
            self.show_cli("erp", "mode", "EU", "shadow", "--from", today,
                          "--reason", "phase 1: NetSuite receives what Tryton books")  # fmt: skip
        if self._eu_mode() == "shadow":
            shadowed = await self._eu_invoice(customer.id, f"{key}/shadow", 4900)
            booked = await self._booked(shadowed)
            copy = await self.adapters.ledger_of("netsuite").find_document(shadowed)
            if copy is None or copy.total != booked.total:
                raise DemoFailed(f"{shadowed} in NetSuite: {copy}, in Tryton: {booked}")
            echo(f"erp: Tryton {booked.erp_number} {booked.total} is the book of record; "
                 f"NetSuite {copy.erp_number} {copy.total} its shadow")  # fmt: skip
            self.show_cli("erp", "shadow-report", "EU", "--day", today)
            self.show_cli("erp", "mode", "EU", "cutover", "--from", today,
                          "--reason", "phase 2: the shadow report is clean")  # fmt: skip
        cut_over = await self._eu_invoice(customer.id, f"{key}/cutover", 4900)
        booked = await self._booked(cut_over)
        entry = self.adapters.store.find_posting("billing", cut_over)
        in_tryton = await self.adapters.ledger.find_document(cut_over)
        if entry is None or entry.erp != "netsuite" or in_tryton is not None:
            raise DemoFailed(f"{cut_over} should be booked by NetSuite alone")
        echo(f"erp: NetSuite books the EU entity now: {booked.erp_number} {booked.total}, "
             "nothing of it in Tryton; the US entity stays in Tryton")  # fmt: skip

    def _eu_mode(self) -> str:
        entities = call_api(self.settings, "get", "/v1/erp/entities", role="finance").json()
        return str(next(e["mode"] for e in entities if e["name"] == "EU"))

    async def _eu_invoice(self, customer_id: str, key: str, cents: int) -> str:
        """A subscription of the EU customer in EUR paid by card; its invoice once journaled
        with its payment."""
        method = await self.driver.attach_payment_method(customer_id, idempotency_key=f"{key}/pm")
        price = await self.driver.create_price(PLATFORM, cents, "eur", nickname="Team EU",
                                               idempotency_key=f"{key}/price")  # fmt: skip
        subscription = await self.driver.subscribe(
            customer_id, price.id, payment_method=str(method.id), idempotency_key=f"{key}/sub"
        )
        invoice = await self._latest_invoice(subscription.id)
        [payment] = await self.adapters.billing.invoice_payments(invoice.document_id)
        await self._journaled(payment.payment_id)
        self.echo(f"billing: invoice {invoice.number} {invoice.total} paid by card")
        return invoice.document_id

    async def _booked(self, reference: str) -> PostedDocument:
        """The document as the ERP that booked it (the journal says which) holds it."""
        found = await self._in_booking_erp(reference)
        if found is None:
            raise DemoFailed(f"{reference} is not journaled, or not in the ERP that booked it")
        return found

    async def _in_booking_erp(self, reference: str) -> PostedDocument | None:
        entry = self.adapters.store.find_posting("billing", reference)
        if entry is None:
            return None
        return await self.adapters.ledger_of(entry.erp or "tryton").find_document(reference)

    def _booked_by(self, reference: str) -> str:
        entry = self.adapters.store.find_posting("billing", reference)
        return (entry.erp if entry else None) or "tryton"

    async def show_books(self, invoices: list[str], refund_id: str) -> None:
        """What the ERP holds for the demo's money, read back from Tryton itself."""
        echo = self.echo
        echo("\n== The books, read back from the ERP (Tryton)")
        references = [*invoices, refund_id]
        for elsewhere in [r for r in references if self._booked_by(r) != "tryton"]:
            posted = await self._booked(elsewhere)  # an entity cut over by an earlier demo
            echo(f"  {elsewhere}: booked by {self._booked_by(elsewhere)} as "
                 f"{posted.erp_number} {posted.total}")  # fmt: skip
        references = [r for r in references if self._booked_by(r) == "tryton"]
        rows = [await self._erp_invoice(reference) for reference in references]
        echo(f"  {'document':<15} {'reference':<30} {'state':<6} {'total':>14} "
             f"{'of which tax':>14} {'in USD':>9}")  # fmt: skip
        moves: list[int] = []
        for row in rows:
            lines = await self._erp_move_lines([row["move"]])
            moves.append(row["move"])
            in_company = sum((ln["debit"] - ln["credit"] for ln in lines
                              if ln["account."]["code"] == RECEIVABLE), Decimal(0))  # fmt: skip
            currency = row["currency."]["code"]
            echo(f"  {row['number']:<15} {row['reference']:<30} {row['state']:<6} "
                 f"{row['total_amount']:>10} {currency} {row['tax_amount']:>10} {currency} "
                 f"{in_company:>9}")  # fmt: skip
        for reference in [*self._payments_seen, f"{refund_id}/payout"]:
            found = await self.adapters.ledger.find_payment(reference)
            if found is not None:
                moves.append(int(found.erp_document_id))
        by_account: dict[tuple[str, str], tuple[Decimal, Decimal]] = {}
        for line in await self._erp_move_lines(moves):
            account = (line["account."]["code"], line["account."]["name"])
            debit, credit = by_account.get(account, (Decimal(0), Decimal(0)))
            by_account[account] = (debit + line["debit"], credit + line["credit"])
        echo("\n  what these documents and their payments booked, per account (USD):")
        echo(f"  {'account':<8} {'':<36} {'debit':>9} {'credit':>9}")
        for (code, name), (debit, credit) in sorted(by_account.items()):
            echo(f"  {code:<8} {name[:36]:<36} {debit:>9} {credit:>9}")
        echo("  revenue is on the mapped revenue accounts (4xxx) net of tax, VAT on the VAT "
             "payable account (2200), the money on the card clearing accounts (1150-*), and "
             "the receivable (1200) is settled; the EUR invoice is in EUR, its USD amounts at "
             "the ERP's rate of its date")  # fmt: skip

    async def reconcile(self) -> None:
        self.echo("\n== Reconciliation: billing, the ERP and the posting journal, for today")
        today = str(datetime.now(UTC).date())
        ran = await asyncio.to_thread(self.cli, "recon", "run", "--from", today)
        for line in ran.rstrip().splitlines():
            self.echo(f"  {line}")
        summary = [line for line in ran.splitlines() if "unexplained" in line]
        if not summary or not summary[-1].rstrip().endswith(" 0 unexplained"):
            raise DemoFailed("reconciliation found differences; see `ledgerbridge recon report`")
        await self._receivables_agree()
        self.echo("the nightly run of the same is a Temporal Schedule: search "
                  "`BusinessProcess = 'reconciliation'` in the Web UI")  # fmt: skip

    async def _receivables_agree(self) -> None:
        """What each of the demo's customers owes, as billing and the ERP say it now (the
        reconciliation above compared the same and found no `receivable_differs`)."""
        billing = await self._owed(self.adapters.billing.open_receivable_page)
        # An entity cut over owes in both ERPs: what it owed before in Tryton, since in NetSuite.
        erp = await self._owed(self.adapters.ledger.open_receivable_page)
        for erp_name in self.adapters.ledgers:
            in_other = await self._owed(self.adapters.ledger_of(erp_name).open_receivable_page)
            for customer_id, owed in in_other.items():
                erp[customer_id] = _add(erp.get(customer_id), owed)
        self.echo(f"\n  open receivables of this run's customers:\n  {'customer':<30} "
                  f"{'billing (remaining + balance)':>30} {'ERP (receivable)':>18}")  # fmt: skip
        for customer_id in self._customers:
            owed_billing = billing.get(customer_id, "0")
            owed_erp = erp.get(customer_id, "0")
            self.echo(f"  {customer_id:<30} {owed_billing:>30} {owed_erp:>18}")
            if Decimal(owed_billing.split()[0]) != Decimal(owed_erp.split()[0]):
                raise DemoFailed(f"{customer_id} owes {owed_billing} in billing, {owed_erp} in "
                                 "the ERP")  # fmt: skip

    async def show_metrics(self) -> None:
        """What Prometheus scrapes now: the API's counters and the worker's (when it serves
        them), summed over their labels."""
        endpoints = metrics_endpoints(self.settings)
        self.echo("\n== Metrics: what Prometheus scrapes")
        s = self.settings
        api_url = endpoints[0]
        worker_url = (
            f"http://{s.worker_metrics_host}:{s.worker_metrics_port}/metrics"
            if s.worker_metrics_port
            else None
        )
        async with httpx.AsyncClient(timeout=10) as client:
            texts = [(await client.get(url)).text for url in (api_url, worker_url) if url]
        found = [metrics.parse_samples(text) for text in texts]

        def total(name: str, **labels: str) -> int:
            return int(sum(metrics.total(samples, name, **labels) for samples in found))

        posted = "ledgerbridge_erp_documents_posted_total"
        credits = "ledgerbridge_credits_total"
        webhooks = "ledgerbridge_webhooks_answered_total"
        self.echo(
            f"metrics: {total(posted)} ERP documents posted "
            f"({total(posted, kind='invoice')} invoices, "
            f"{total(posted, kind='credit_note')} credit notes); credits: "
            f"{total(credits, outcome='applied')} applied, "
            f"{total(credits, outcome='exception')} sent to finance as an exception; "
            f"webhooks accepted: {total(webhooks, outcome='accepted')}"
        )
        self.echo(f"scrape them: {', '.join(endpoints)}")

    @staticmethod
    async def _owed(
        page: Callable[[str | None, int], Awaitable[ReceivablePage]],
    ) -> dict[str, str]:
        owed: dict[str, str] = {}
        cursor: str | None = None
        while True:
            found = await page(cursor, 100)
            for receivable in found.receivables:
                owed[receivable.customer_id] = str(receivable.amount)
            if found.next_cursor is None:
                return owed
            cursor = found.next_cursor

    async def _erp_faults(
        self, method: str, what: str, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The local stack's fault proxy in front of the ERP, as an operator drives it."""
        url = f"http://127.0.0.1:{self.settings.erp_proxy_port}/_faults/{what}"
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.request(method, url, json=body)
        answer.raise_for_status()
        return dict(answer.json())

    async def _erp_copies(self, reference: str) -> int:
        """How many ERP documents of today carry this reference (exactly once: 1)."""
        today = datetime.now(UTC).date()
        copies, cursor = 0, None
        while True:
            page = await self.adapters.ledger.document_page(today, today, cursor, 200)
            copies += sum(d.reference == reference for d in page.documents)
            if page.next_cursor is None:
                return copies
            cursor = page.next_cursor

    # --- acting as the people who use ledgerbridge ----------------------------------------

    def cli(self, *args: str) -> str:
        """`ledgerbridge ...` as finance or support types it, with the local stack's keys."""
        env = {**os.environ, **self.settings.to_env()}
        env.pop("LEDGERBRIDGE_API_KEY", None)  # each command uses its role's local key
        done = subprocess.run(
            [str(Path(sys.executable).parent / "ledgerbridge"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        if done.returncode != 0:
            raise DemoFailed(f"ledgerbridge {' '.join(args[:2])}: {done.stderr.strip()}")
        return done.stdout

    def show_cli(self, *args: str) -> None:
        quoted = " ".join(f'"{a}"' if " " in a else a for a in args)
        self.echo(f"\n$ ledgerbridge {quoted}")
        for line in self.cli(*args).rstrip().splitlines():
            self.echo(f"  {line}")

    def _open_ticket(
        self, organization_id: int, subject: str, credit: tuple[str, str, str, str] | None
    ) -> str:
        """A ticket as a support agent files it in Zendesk, credit fields filled in or not."""
        auth = (
            f"{self.settings.support_email}/token",
            self.settings.support_api_token.get_secret_value(),
        )
        with httpx.Client(base_url=self.settings.support_url, auth=auth, timeout=10) as api:
            fields: list[dict[str, Any]] = []
            if credit:
                ids = {
                    f["title"]: f["id"]
                    for f in api.get("/api/v2/ticket_fields.json").json()["ticket_fields"]
                }
                titles = ("Credit amount", "Credit currency", "Credit reason", "Incident reference")
                fields = [{"id": ids[t], "value": v} for t, v in zip(titles, credit, strict=True)]
            answer = api.post(
                "/api/v2/tickets.json",
                json={
                    "ticket": {
                        "subject": subject,
                        "organization_id": organization_id,
                        "custom_fields": fields,
                        "comment": {"body": f"{subject}: the customer asks for a credit."},
                    }
                },
                headers={"Idempotency-Key": f"demo/{self.run}/{subject}"},
            )
            answer.raise_for_status()
        return str(answer.json()["ticket"]["id"])

    async def _credit_done(self, credit_id: str, status: str) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            answer = await asyncio.to_thread(
                call_api, self.settings, "get", f"/v1/credits/{credit_id}", role="finance"
            )
            state = dict(answer.json())
            return state if state["status"] == status else None

        return await eventually(f"{credit_id} {status}", reached, within=90)

    async def _latest_invoice(self, subscription_id: str) -> BillingDocument:
        async for newest in self.adapters.billing.list_invoices(subscription_id=subscription_id):
            return newest  # billing lists newest first; `created` ties within a second
        raise DemoFailed(f"subscription {subscription_id} has no invoice")

    async def _journaled(self, reference: str) -> None:
        """Wait until a payment (or refund) is journaled: it is then in the ERP too, unless
        finance rejected it (journaled so, never posted)."""

        async def journaled() -> bool:
            return self.adapters.store.find_posting("billing", reference) is not None

        await eventually(f"{reference} journaled", journaled, within=90)
        entry = self.adapters.store.find_posting("billing", reference)
        if entry is not None and entry.erp_document_id.startswith(REJECTED_POSTING_PREFIX):
            raise DemoFailed(f"{reference} was rejected by finance ({entry.erp_document_id})")
        self._payments_seen.append(reference)

    async def _erp_invoice(self, reference: str) -> dict[str, Any]:
        rows = await self._tryton().call(
            "model.account.invoice.search_read",
            [("reference", "=", reference)], 0, 1, None,
            ["number", "state", "reference", "total_amount", "tax_amount", "move",
             "currency.code"],
        )  # fmt: skip
        if not rows:
            raise DemoFailed(f"the ERP has no document for {reference}")
        return dict(rows[0])

    async def _erp_move_lines(self, moves: list[int]) -> list[dict[str, Any]]:
        return list(
            await self._tryton().call(
                "model.account.move.line.search_read",
                [("move", "in", moves)],
                0,
                None,
                None,
                ["debit", "credit", "account.code", "account.name"],
            )
        )

    def _tryton(self) -> TrytonLedger:
        if not isinstance(self.adapters.ledger, TrytonLedger):
            raise DemoFailed("the demo reads the books back from Tryton, the local stack's ERP")
        return self.adapters.ledger

    async def _posted(self, invoice: BillingDocument) -> PostedDocument:
        async def journaled_and_in_erp() -> PostedDocument | None:
            return await self._in_booking_erp(invoice.document_id)

        return await eventually(f"ERP document for {invoice.number}", journaled_and_in_erp)
