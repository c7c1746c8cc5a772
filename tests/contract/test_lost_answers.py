"""Billing and support behind the fault proxy: the write commits, its answer is lost, the
activity fails retryable and Temporal runs it again with the same Idempotency-Key. Whatever
the lost write changed meanwhile, the retry must end in exactly one effect.

The ERP's side of the same failure is in test_fault_proxy.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
import pytest_asyncio
import stripe
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.credits import (
    ApplyCreditInput,
    BillingCreditActivities,
    CaseOutcomeInput,
    SupportCaseActivities,
)
from adapters.billing import StripeBilling
from adapters.errors import RateLimitedError, TransientError
from adapters.support import ZendeskSupport
from adapters.support.zendesk import without_write_marker
from canonical import BillingDocument, Customer, Money
from tests.fixtures.billing import BillingSandbox
from tests.fixtures.faults import FaultProxyHandle
from tests.fixtures.support import SupportSandbox, create_organization, create_ticket_with_credit


def usd(amount: str) -> Money:
    return Money.of(amount, "USD")


@dataclass
class Billing:
    proxy: FaultProxyHandle
    through_proxy: StripeBilling  # as the worker calls it
    direct: StripeBilling  # what billing really holds
    admin: stripe.StripeClient  # a billing admin setting up and checking data

    def credit_note_totals(self, invoice_id: str) -> list[tuple[str, int]]:
        notes = self.admin.v1.credit_notes.list(params={"invoice": invoice_id}).data
        return [(note.id, note.total) for note in notes]


@pytest_asyncio.fixture
async def billing(
    billing_sandbox: BillingSandbox, fault_proxy: Callable[..., FaultProxyHandle]
) -> AsyncIterator[Billing]:
    proxy = fault_proxy(billing_sandbox.url)
    async with (
        StripeBilling(proxy.url, billing_sandbox.api_key) as through_proxy,
        StripeBilling(billing_sandbox.url, billing_sandbox.api_key) as direct,
    ):
        yield Billing(proxy, through_proxy, direct, billing_sandbox.sdk())


async def open_invoice(billing: Billing, name: str) -> BillingDocument:
    """A customer subscribed at 30.00 USD a month: its first invoice, open."""
    admin = billing.admin.v1
    customer = admin.customers.create(params={"name": name})
    product = admin.products.create(params={"name": "Pro"})
    price = admin.prices.create(
        params={
            "product": product.id,
            "unit_amount": 3000,
            "currency": "usd",
            "recurring": {"interval": "month"},
        }
    )
    subscription = admin.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": price.id, "quantity": 1}],
            "collection_method": "send_invoice",
            "days_until_due": 30,
        }
    )
    [invoice] = [i async for i in billing.direct.list_invoices(subscription_id=subscription.id)]
    assert invoice.status == "open" and invoice.amount_remaining == usd("30.00")
    return invoice


def credit(invoice: BillingDocument | None, customer_id: str, amount: str) -> ApplyCreditInput:
    return ApplyCreditInput(
        customer_id=customer_id,
        amount=usd(amount),
        description="Support credit, case 7: outage",
        invoice_id=invoice.document_id if invoice else None,
        idempotency_key="credit/7/evt_1/apply_billing_credit",
        case_id="7",
    )


async def lost_then_retried(env: ActivityEnvironment, call: object, request: object) -> object:
    """The first run loses its answer (retryable for Temporal); the second is the retry."""
    with pytest.raises(ApplicationError) as lost:
        await env.run(call, request)  # type: ignore[arg-type]
    assert not lost.value.non_retryable, lost.value
    return await env.run(call, request)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("amount", "then"), [("10.00", "open"), ("30.00", "paid")], ids=["part", "all-of-it"]
)
async def test_credit_note_whose_answer_was_lost_is_applied_once_even_if_it_settled_the_invoice(
    billing: Billing, amount: str, then: str
) -> None:
    invoice = await open_invoice(billing, f"Lost Note {amount}")
    activities = BillingCreditActivities(billing.through_proxy)
    billing.proxy.add_rule("drop", method="POST", path="/v1/credit_notes", count=1)

    applied = await lost_then_retried(
        ActivityEnvironment(),
        activities.apply_billing_credit,
        credit(invoice, invoice.customer_id, amount),
    )

    assert billing.credit_note_totals(invoice.document_id) == [
        (applied.document_id, usd(amount).to_minor())  # type: ignore[attr-defined]
    ]
    assert (await billing.direct.get_invoice(invoice.document_id)).status == then
    assert billing.proxy.stats()["faults"]["drop"] == 1


async def test_credit_note_on_an_invoice_settled_by_someone_else_is_still_refused(
    billing: Billing,
) -> None:
    invoice = await open_invoice(billing, "Paid Meanwhile")
    billing.admin.v1.invoices.pay(invoice.document_id, params={"paid_out_of_band": True})
    activities = BillingCreditActivities(billing.through_proxy)

    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(
            activities.apply_billing_credit, credit(invoice, invoice.customer_id, "10.00")
        )

    assert refused.value.non_retryable and refused.value.type == "RejectedError"
    assert "already paid" in refused.value.message
    assert billing.credit_note_totals(invoice.document_id) == []


async def test_balance_credit_whose_answer_was_lost_is_applied_once(billing: Billing) -> None:
    invoice = await open_invoice(billing, "Lost Balance Credit")
    activities = BillingCreditActivities(billing.through_proxy)
    billing.proxy.add_rule("drop", method="POST", path="/v1/customers/*", count=1)

    applied = await lost_then_retried(
        ActivityEnvironment(),
        activities.apply_billing_credit,
        credit(None, invoice.customer_id, "12.50"),
    )

    assert applied.kind == "balance_credit"  # type: ignore[attr-defined]
    assert billing.admin.v1.customers.retrieve(invoice.customer_id).balance == -1250
    assert billing.proxy.stats()["faults"]["drop"] == 1


@pytest_asyncio.fixture
async def support(
    support_sandbox: SupportSandbox, fault_proxy: Callable[..., FaultProxyHandle]
) -> AsyncIterator[tuple[FaultProxyHandle, ZendeskSupport]]:
    proxy = fault_proxy(support_sandbox.url)
    async with ZendeskSupport(
        proxy.url, support_sandbox.email, support_sandbox.api_token
    ) as through_proxy:
        yield proxy, through_proxy


async def test_case_outcome_whose_answers_were_lost_is_written_once(
    support_sandbox: SupportSandbox, support: tuple[FaultProxyHandle, ZendeskSupport]
) -> None:
    proxy, through_proxy = support
    organization = create_organization(support_sandbox, "Lost Outcome", "cus_lost_outcome")
    ticket = create_ticket_with_credit(support_sandbox, organization_id=organization["id"])
    case_id = str(ticket["id"])
    # The internal note lands, its answer is lost; on the retry, the reply's is lost too.
    proxy.add_rule("drop", method="PUT", count=1)
    proxy.add_rule("drop", method="PUT", body_contains="We have credited", count=1)
    outcome = CaseOutcomeInput(
        case_id=case_id,
        internal_note="Credit of 120.00 EUR applied in billing (cbtxn_1).",
        public_reply="We have credited 120.00 EUR to your account.",
        tags=["credit_applied"],
        idempotency_key=f"credit/{case_id}/evt_1/outcome/applied",
    )
    env = ActivityEnvironment()
    activities = SupportCaseActivities(through_proxy)
    for _ in range(2):
        with pytest.raises(ApplicationError) as lost:
            await env.run(activities.write_case_outcome, outcome)
        assert not lost.value.non_retryable

    await env.run(activities.write_case_outcome, outcome)

    with support_sandbox.api() as api:
        comments = api.get(f"/api/v2/tickets/{case_id}/comments.json").json()["comments"]
        tags = api.get(f"/api/v2/tickets/{case_id}.json").json()["ticket"]["tags"]
    written = [without_write_marker(c["body"]) for c in comments[1:]]
    assert written == [outcome.internal_note, outcome.public_reply]
    assert "credit_applied" in tags
    assert proxy.stats()["faults"]["drop"] == 2


async def test_organization_whose_creation_answer_was_lost_exists_once(
    support_sandbox: SupportSandbox, support: tuple[FaultProxyHandle, ZendeskSupport]
) -> None:
    proxy, through_proxy = support
    customer = Customer(customer_id="cus_lost_org", name="Lost Org Ltd")
    proxy.add_rule("drop", method="POST", path="/api/v2/organizations.json", count=1)

    with pytest.raises(Exception, match="cannot reach support"):
        await through_proxy.ensure_organization(customer, "account/cus_lost_org/support")
    record = await through_proxy.ensure_organization(customer, "account/cus_lost_org/support")

    with support_sandbox.api() as api:
        found = api.get(
            "/api/v2/organizations/search.json", params={"external_id": "cus_lost_org"}
        ).json()["organizations"]
    assert [(str(o["id"]), o["name"]) for o in found] == [(record.external_id, "Lost Org Ltd")]
    assert proxy.stats()["faults"]["drop"] == 1


async def test_a_gateway_in_front_of_billing_is_taken_by_its_status(billing: Billing) -> None:
    """A 503 or 429 from something in front of billing (here the fault proxy, whose `error` is
    a sentence, not Stripe's error object) is transient, with its Retry-After, rather than a
    crash of the SDK reading an answer Stripe would never give."""
    customer = billing.admin.v1.customers.create(params={"name": "Gateway Ltd"})
    billing.proxy.add_rule("unavailable", count=1)
    with pytest.raises(TransientError) as unavailable:
        await billing.through_proxy.get_customer(customer.id)
    assert unavailable.value.status == 503 and not isinstance(unavailable.value, RateLimitedError)

    billing.proxy.add_rule("rate_limited", retry_after=7, count=1)
    with pytest.raises(RateLimitedError) as throttled:
        await billing.through_proxy.get_customer(customer.id)
    assert (throttled.value.status, throttled.value.retry_after) == (429, 7.0)

    assert (await billing.through_proxy.get_customer(customer.id)).name == "Gateway Ltd"
