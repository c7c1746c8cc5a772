"""Case-to-credit rules as pure functions: eligibility, caps, thresholds, approvers."""

from __future__ import annotations

from decimal import Decimal

from canonical import Money, Subscription
from canonical.credit import CreditAssessment, CreditPolicy, CreditRequest
from canonical.entitlements import SERVING, Entitlements

ACTIVE = SERVING


def eligibility_problems(
    request: CreditRequest,
    subscription: Subscription | None,
    customer_id: str | None,
    standing: Entitlements | None = None,
) -> list[str]:
    """Why this customer cannot receive a credit at all (empty: eligible). `standing` is the
    customer's entitlements as support shows them: when given, its status decides (the one
    place an agent and the policy both read); the subscription then only gives the amounts."""
    problems = []
    if customer_id is None:
        problems.append(f"organization {request.organization_id} is not mapped to a customer")
    if standing is not None and standing.status not in ACTIVE:
        problems.append(f"the customer's subscription is not in service: {standing.describe()}")
    elif subscription is None or subscription.status not in ACTIVE:
        problems.append("the customer has no active subscription")
    elif subscription.currency != request.amount.currency:
        problems.append(
            f"the credit is in {request.amount.currency}, the subscription bills in "
            f"{subscription.currency}"
        )
    return problems


def assess(
    request: CreditRequest,
    subscription: Subscription,
    credited_last_90_days: Money,
    policy: CreditPolicy,
    standing: Entitlements | None = None,
) -> CreditAssessment:
    """Reject, approve at once, or ask finance: caps first, then the threshold; a past-due
    customer (by `standing`, support's entitlements) never gets a credit without finance."""
    assessment = _assess_amount(request, subscription, credited_last_90_days, policy)
    if (
        assessment.outcome == "auto_approve"
        and standing is not None
        and standing.status == "past_due"
        and policy.past_due_needs_approval
    ):
        return assessment.model_copy(
            update={
                "outcome": "needs_approval",
                "reasons": [
                    f"the customer is past due ({standing.describe()}): finance approves "
                    "its credits",
                    *assessment.reasons,
                ],
            }
        )
    return assessment


def _assess_amount(
    request: CreditRequest,
    subscription: Subscription,
    credited_last_90_days: Money,
    policy: CreditPolicy,
) -> CreditAssessment:
    amount = request.amount
    monthly = subscription.monthly_recurring()
    context = {"monthly_recurring": monthly, "credited_last_90_days": credited_last_90_days}
    if amount.amount <= 0:
        return CreditAssessment(
            outcome="reject", reasons=["the amount must be positive"], **context
        )
    cap = Money(amount=monthly.amount * policy.max_share_of_monthly, currency=monthly.currency)
    if amount > cap:
        return CreditAssessment(
            outcome="reject",
            reasons=[f"{amount} is over the cap of {cap.quantized()} for one credit"],
            **context,
        )
    rolling_cap = _share(monthly, policy.max_share_of_monthly_90_days)
    if credited_last_90_days + amount > rolling_cap:
        return CreditAssessment(
            outcome="reject",
            reasons=[
                f"{credited_last_90_days} already credited in 90 days; {amount} more would pass "
                f"the 90-day cap of {rolling_cap.quantized()}"
            ],
            **context,
        )
    threshold = min(
        Money(
            amount=monthly.amount * policy.auto_approve_share_of_monthly, currency=monthly.currency
        ),
        policy.auto_approve_up_to
        if policy.auto_approve_up_to.currency == amount.currency
        else Money.zero(amount.currency),
    )
    if amount <= threshold:
        return CreditAssessment(
            outcome="auto_approve",
            reasons=[f"{amount} is within the auto-approval threshold of {threshold.quantized()}"],
            **context,
        )
    return CreditAssessment(
        outcome="needs_approval",
        reasons=[f"{amount} is above the auto-approval threshold of {threshold.quantized()}"],
        **context,
    )


def _share(monthly: Money, factor: Decimal) -> Money:
    return Money(amount=monthly.amount * factor, currency=monthly.currency)


def approval_refusal(
    request: CreditRequest, approver: str, role: str, policy: CreditPolicy, already_decided: bool
) -> str | None:
    """Why this approver may not decide this credit (None: they may)."""
    if already_decided:
        return "already decided"
    if role not in policy.approver_limits:
        return f"role {role} may not approve credits"
    if approver == request.requested_by:
        return "the requester may not approve their own credit"
    limit = policy.approver_limits[role]
    if limit is not None and limit.currency == request.amount.currency and request.amount > limit:
        return f"{request.amount} is over the {role} approval limit of {limit}"
    return None
