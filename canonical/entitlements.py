"""What a customer is entitled to now: plan, subscription status, paid-through date.

Billing decides it; the support organization carries a copy, kept current by account sync,
so an agent sees a past-due or canceled customer before promising a credit and the credit
policy reads standing from that one place.
"""

from __future__ import annotations

from datetime import date
from typing import ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from canonical.billing import BillingDocument, Subscription, SubscriptionStatus

# Statuses in which the customer still receives the service (Stripe's meaning).
SERVING = ("active", "trialing", "past_due")

EntitlementsSource = Literal["support", "billing"]


class Entitlements(BaseModel):
    """A customer's standing as billing says it at `as_of`. `status` None: no subscription."""

    SCHEMA_VERSION: ClassVar[int] = 1
    model_config = ConfigDict(frozen=True)

    customer_id: str
    plan: str | None = Field(default=None, description="the items' product/price names")
    subscription_id: str | None = None
    status: SubscriptionStatus | None = None
    paid_through: date | None = Field(
        default=None, description="the period end of the subscription's latest paid invoice"
    )
    as_of: AwareDatetime = Field(description="when billing was read (or support last written)")

    @field_validator("plan", "subscription_id")
    @classmethod
    def _trimmed(cls, value: str | None) -> str | None:
        """As support keeps text: trimmed, blank is none (so a read compares with a write)."""
        return (value.strip() or None) if value is not None else None

    def same_standing(self, other: Entitlements | None) -> bool:
        """Whether `other` says the same (as_of aside): nothing to write then."""
        return other is not None and self.standing() == other.standing()

    def standing(self) -> tuple[str | None, str | None, str | None, date | None]:
        return (self.plan, self.subscription_id, self.status, self.paid_through)

    def describe(self) -> str:
        """One line for an agent or finance: 'past_due, plan Pro, paid through 2026-05-31'."""
        if self.status is None:
            return "no subscription"
        paid = self.paid_through.isoformat() if self.paid_through else "never paid"
        return f"{self.status}, plan {self.plan or 'unnamed'}, paid through {paid}"


def plan_name(subscription: Subscription) -> str:
    """The plan as agents know it: the items' names (product name or price nickname)."""
    names = []
    for item in subscription.items:
        names.append(
            item.description if item.quantity == 1 else f"{item.description} x{item.quantity}"
        )
    return ", ".join(names)


def paid_through(invoices_newest_first: list[BillingDocument]) -> date | None:
    """The latest period end of the newest paid invoice: what has been paid for."""
    for invoice in invoices_newest_first:
        if invoice.kind == "invoice" and invoice.status == "paid":
            ends = [line.period_end for line in invoice.lines if line.period_end is not None]
            if ends:
                return max(ends)
    return None


def entitlements_from_billing(
    customer_id: str,
    subscription: Subscription | None,
    invoices_newest_first: list[BillingDocument],
    as_of: AwareDatetime,
) -> Entitlements:
    """The entitlements billing's subscription and its invoices give."""
    if subscription is None:
        return Entitlements(customer_id=customer_id, as_of=as_of)
    return Entitlements(
        customer_id=customer_id,
        plan=plan_name(subscription) or None,
        subscription_id=subscription.subscription_id,
        status=subscription.status,
        paid_through=paid_through(invoices_newest_first),
        as_of=as_of,
    )


__all__ = [
    "SERVING",
    "Entitlements",
    "EntitlementsSource",
    "entitlements_from_billing",
    "paid_through",
    "plan_name",
]
