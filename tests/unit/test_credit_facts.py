"""The credit facts, gathered once for the API's check and the workflow alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from activities.credits import CreditFactsInput, gather_credit_facts
from adapters.errors import TransientError
from canonical import (
    AccountRecord,
    BillingDocument,
    DocumentLine,
    Money,
    Subscription,
    SubscriptionItem,
)
from canonical.entitlements import Entitlements
from canonical.support import SupportCase

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)


class Systems:
    """Support, billing, the ERP and the store, answering from fields and noting each read."""

    def __init__(self, customer_id: str | None = "cus_1") -> None:
        self.customer_id = customer_id
        self.reads: list[tuple[str, Any]] = []
        self.billing_error: Exception | None = None
        self.erp_error: Exception | None = None
        self.shown: Entitlements | None = None  # what the support organization carries
        self.invoices: list[BillingDocument] = []  # newest first

    async def read_entitlements(self, customer_id: str) -> Entitlements | None:
        self.reads.append(("entitlements", customer_id))
        return self.shown

    async def list_invoices(
        self, *, subscription_id: str | None = None
    ) -> AsyncIterator[BillingDocument]:
        self.reads.append(("invoices", subscription_id))
        for invoice in self.invoices:
            yield invoice

    async def get_case(self, case_id: str) -> SupportCase:
        self.reads.append(("case", case_id))
        return SupportCase(case_id=case_id, organization_id="360000000001",
                           customer_id=self.customer_id, subject="Outage", status="open",
                           updated_at=T0)  # fmt: skip

    async def active_subscription(self, customer_id: str) -> Subscription | None:
        self.reads.append(("subscription", customer_id))
        if self.billing_error:
            raise self.billing_error
        item = SubscriptionItem(item_id="si_1", price_id="p", product_id="prod",
                                description="Pro", quantity=1, unit_amount=Money.of("900", "USD"),
                                interval="month")  # fmt: skip
        return Subscription(subscription_id="sub_1", customer_id=customer_id, status="active",
                            currency="USD", items=[item], current_period_start=T0,
                            current_period_end=T0 + timedelta(30), created_at=T0)  # fmt: skip

    async def find_party(self, customer_id: str) -> AccountRecord | None:
        self.reads.append(("party", customer_id))
        if self.erp_error:
            raise self.erp_error
        return AccountRecord(customer_id=customer_id, system="erp", external_id="7", name="Acme")

    async def is_period_open(self, on: date) -> bool:
        self.reads.append(("period", on))
        return True

    def credited_since(self, customer_id: str, currency: str, since: datetime) -> Decimal:
        self.reads.append(("credited", (customer_id, currency, since)))
        return Decimal("12.50")


async def gather(systems: Systems, as_of: datetime) -> Any:
    request = CreditFactsInput(case_id="1001", currency="USD", as_of=as_of)
    return await gather_credit_facts(request, systems, systems, systems, systems)  # type: ignore[arg-type]


async def test_facts_are_read_on_the_utc_clock() -> None:
    systems = Systems()
    # 21:30 in New York on 1 Nov is already 2 Nov in UTC: the ERP period is asked for UTC's day.
    evening = datetime(2026, 11, 1, 21, 30, tzinfo=timezone(timedelta(hours=-5)))
    facts = await gather(systems, evening)
    assert facts.case.customer_id == "cus_1"
    assert facts.subscription.subscription_id == "sub_1"
    assert (facts.erp_party, facts.erp_period_open) == ("7", True)
    assert facts.credited_last_90_days == Money.of("12.50", "USD")
    reads = dict(systems.reads)
    assert reads["period"] == date(2026, 11, 2)
    assert reads["credited"] == ("cus_1", "USD", datetime(2026, 8, 4, 2, 30, tzinfo=UTC))


async def test_a_ticket_without_a_customer_reads_nothing_else() -> None:
    systems = Systems(customer_id=None)
    facts = await gather(systems, T0)
    assert facts.case.case_id == "1001"
    assert (facts.subscription, facts.erp_party, facts.credited_last_90_days) == (None, None, None)
    assert [kind for kind, _ in systems.reads] == ["case"]


async def test_a_system_that_fails_is_named_by_its_error() -> None:
    systems = Systems()
    systems.billing_error = TransientError("down", system="billing", operation="subscriptions")
    with pytest.raises(TransientError) as raised:
        await gather(systems, T0)
    assert raised.value.system == "billing"


async def test_an_unreachable_erp_marks_its_facts_unread_and_holds_nothing() -> None:
    """The policy decides on the ticket, billing and the journal; the ERP's facts only warn, so
    an ERP outage does not stop a credit at its first step (posting retries it later)."""
    systems = Systems()
    systems.erp_error = TransientError("no answer in time", system="erp", operation="find_party")
    facts = await gather(systems, T0)
    assert facts.erp_unreadable == "erp.find_party: no answer in time"
    assert (facts.erp_party, facts.erp_period_open) == (None, None)
    assert facts.subscription.subscription_id == "sub_1"
    assert facts.credited_last_90_days == Money.of("12.50", "USD")


def invoice(document_id: str, status: str, period_end: date) -> BillingDocument:
    usd = Money.of("900", "USD")
    line = DocumentLine(line_id=f"il_{document_id}", description="Pro", quantity=Decimal(1),
                        unit_amount=usd, amount=usd, period_start=period_end - timedelta(30),
                        period_end=period_end)  # fmt: skip
    return BillingDocument(document_id=document_id, kind="invoice", status=status,  # type: ignore[arg-type]
                           customer_id="cus_1", subscription_id="sub_1", currency="USD",
                           lines=[line], subtotal=usd, tax=Money.zero("USD"), total=usd,
                           created_at=T0)  # fmt: skip


async def test_standing_is_read_from_the_support_organization_when_it_shows_one() -> None:
    systems = Systems()
    systems.shown = Entitlements(
        customer_id="cus_1", plan="Pro", subscription_id="sub_1", status="past_due",
        paid_through=date(2026, 10, 31), as_of=T0,
    )  # fmt: skip
    facts = await gather(systems, T0)
    assert facts.entitlements_source == "support"
    assert facts.entitlements == systems.shown
    assert ("invoices", "sub_1") not in systems.reads  # billing is not asked twice


async def test_without_entitlements_in_support_billing_gives_them_and_the_facts_say_so() -> None:
    systems = Systems()
    systems.invoices = [
        invoice("in_3", "open", date(2026, 12, 1)),
        invoice("in_2", "paid", date(2026, 11, 1)),
        invoice("in_1", "paid", date(2026, 10, 1)),
    ]
    facts = await gather(systems, T0)
    assert facts.entitlements_source == "billing"
    assert facts.entitlements is not None
    assert facts.entitlements.standing() == ("Pro", "sub_1", "active", date(2026, 11, 1))
    assert facts.entitlements.as_of == T0
