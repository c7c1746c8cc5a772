"""Case-to-credit policy: eligibility, caps, the auto-approval threshold, who may approve."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from canonical import Money, Subscription, SubscriptionItem
from canonical.credit import CreditPolicy, CreditRequest
from canonical.entitlements import Entitlements
from workflows.credit_policy import approval_refusal, assess, eligibility_problems

T0 = datetime(2026, 11, 1, tzinfo=UTC)
POLICY = CreditPolicy()


def usd(amount: str) -> Money:
    return Money.of(amount, "USD")


def subscription(monthly: str = "900.00", **changes: Any) -> Subscription:
    fields: dict[str, Any] = {
        "subscription_id": "sub_1", "customer_id": "cus_1", "status": "active",
        "currency": "USD", "current_period_start": T0,
        "current_period_end": T0 + timedelta(days=30), "created_at": T0,
        "items": [SubscriptionItem(item_id="si_1", price_id="price_1", product_id="prod_1",
                                   description="Pro", quantity=1, unit_amount=usd(monthly),
                                   interval="month")],
    }  # fmt: skip
    fields.update(changes)
    return Subscription(**fields)


def request(amount: str = "200.00", currency: str = "USD", **changes: Any) -> CreditRequest:
    fields: dict[str, Any] = {
        "case_id": "1001", "request_id": "r1", "organization_id": "360000000001",
        "requested_by": "agent-ana", "amount": Money.of(amount, currency),
        "reason": "outage on 2026-11-14",
    }  # fmt: skip
    fields.update(changes)
    return CreditRequest(**fields)


def test_monthly_recurring_counts_yearly_prices_by_the_month() -> None:
    yearly = SubscriptionItem(item_id="si_2", price_id="p2", product_id="prod_2",
                              description="Add-on", quantity=2, unit_amount=usd("120.00"),
                              interval="year")  # fmt: skip
    sub = subscription("900.00")
    sub = sub.model_copy(update={"items": [*sub.items, yearly]})
    assert sub.monthly_recurring() == usd("920.00")


def test_small_credit_is_approved_at_once() -> None:
    result = assess(request("40.00"), subscription(), usd("0"), POLICY)
    assert result.outcome == "auto_approve"
    assert result.monthly_recurring == usd("900.00")


def test_credit_above_the_threshold_needs_finance() -> None:
    result = assess(request("200.00"), subscription(), usd("0"), POLICY)
    assert result.outcome == "needs_approval"
    assert "50.00 USD" in result.reasons[0]  # min(10 % of 900, 50)


@pytest.mark.parametrize(
    ("amount", "already", "reason"),
    [
        ("0", "0", "must be positive"),
        ("-5", "0", "must be positive"),
        ("901.00", "0", "over the cap"),
        ("500.00", "900.00", "90-day cap"),
    ],
)
def test_credits_over_a_cap_or_not_positive_are_rejected(
    amount: str, already: str, reason: str
) -> None:
    result = assess(request(amount), subscription(), usd(already), POLICY)
    assert result.outcome == "reject"
    assert reason in result.reasons[0]


def test_eligibility_needs_a_mapped_customer_an_active_subscription_and_its_currency() -> None:
    assert eligibility_problems(request(), subscription(), "cus_1") == []
    assert "not mapped" in eligibility_problems(request(), subscription(), None)[0]
    canceled = subscription(status="canceled")
    assert "no active subscription" in eligibility_problems(request(), canceled, "cus_1")[0]
    euro = request("10", "EUR")
    assert "bills in USD" in eligibility_problems(euro, subscription(), "cus_1")[0]


@pytest.mark.parametrize(
    ("approver", "role", "amount", "decided", "refusal"),
    [
        ("fiona", "finance", "200.00", False, None),
        ("fiona", "finance", "200.00", True, "already decided"),
        ("sam", "support", "200.00", False, "may not approve"),
        ("agent-ana", "finance", "200.00", False, "own credit"),
        ("fiona", "finance", "1500.00", False, "approval limit"),
        ("ada", "finance_admin", "1500.00", False, None),
    ],
)
def test_who_may_approve_a_credit(
    approver: str, role: str, amount: str, decided: bool, refusal: str | None
) -> None:
    found = approval_refusal(request(amount), approver, role, POLICY, decided)
    assert (found is None) if refusal is None else (refusal in (found or ""))


def standing(status: str | None, paid_through: str | None = "2026-10-31") -> Entitlements:
    return Entitlements(
        customer_id="cus_1", plan="Pro", subscription_id="sub_1", status=status,  # type: ignore[arg-type]
        paid_through=date.fromisoformat(paid_through) if paid_through else None, as_of=T0,
    )  # fmt: skip


def test_a_past_due_customer_never_gets_a_credit_without_finance() -> None:
    small = request("40.00")
    assert assess(small, subscription(), usd("0"), POLICY).outcome == "auto_approve"

    result = assess(small, subscription(), usd("0"), POLICY, standing("past_due"))

    assert result.outcome == "needs_approval"
    assert result.reasons[0].startswith("the customer is past due (past_due, plan Pro, paid")
    assert "2026-10-31" in result.reasons[0]


def test_finance_may_let_past_due_customers_through_by_policy() -> None:
    lenient = CreditPolicy(past_due_needs_approval=False)
    result = assess(request("40.00"), subscription(), usd("0"), lenient, standing("past_due"))
    assert result.outcome == "auto_approve"


def test_caps_still_reject_a_past_due_customer_outright() -> None:
    result = assess(request("950.00"), subscription(), usd("0"), POLICY, standing("past_due"))
    assert result.outcome == "reject"


@pytest.mark.parametrize("status", ["canceled", "unpaid", "incomplete_expired", None])
def test_support_showing_a_customer_out_of_service_makes_it_ineligible(
    status: str | None,
) -> None:
    """Support's entitlements decide even while billing still lists the subscription active
    (both read at one moment: support is the one place agents and the policy agree on)."""
    problems = eligibility_problems(request(), subscription(), "cus_1", standing(status))
    assert len(problems) == 1
    assert problems[0].startswith("the customer's subscription is not in service:")
    assert (status or "no subscription") in problems[0]


def test_an_active_standing_defers_to_the_subscription_for_currency() -> None:
    euro = request(currency="EUR")
    assert eligibility_problems(request(), subscription(), "cus_1", standing("active")) == []
    assert (
        "bills in USD" in eligibility_problems(euro, subscription(), "cus_1", standing("active"))[0]
    )
