"""Support credits: what an agent asks for, and the policy finance set for answering."""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from canonical.billing import Subscription
from canonical.entitlements import Entitlements, EntitlementsSource
from canonical.finance import FinanceDecision
from canonical.money import Money
from canonical.support import SupportCase

CreditOutcome = Literal["auto_approve", "needs_approval", "reject"]


class CreditRequest(BaseModel):
    """A credit requested on a support ticket (by webhook or POST /v1/credits)."""

    SCHEMA_VERSION: ClassVar[int] = 1
    model_config = ConfigDict(frozen=True)

    case_id: str = Field(description="the support ticket")
    request_id: str = Field(description="unique per request on the ticket; dedupe key")
    organization_id: str = Field(description="the ticket's organization in support")
    requested_by: str = Field(description="the agent asking; may not approve it")
    amount: Money
    reason: str
    incident_reference: str | None = None
    invoice_id: str | None = Field(
        default=None, description="credit this open invoice; none: credit the next invoice"
    )


class CreditPolicy(BaseModel):
    """Finance's rules for support credits (configured, not hard-coded in the workflow)."""

    model_config = ConfigDict(frozen=True)

    # One credit may not exceed this share of the monthly recurring amount.
    max_share_of_monthly: Decimal = Decimal("1.0")
    # Credits of the last 90 days together may not exceed this share of it.
    max_share_of_monthly_90_days: Decimal = Decimal("1.5")
    # Below this share of the monthly amount (and this absolute amount) credits go through.
    auto_approve_share_of_monthly: Decimal = Decimal("0.1")
    auto_approve_up_to: Money = Money.of("50", "USD")
    # What one approver of each role may approve (None: no limit).
    approver_limits: dict[str, Money | None] = {
        "finance": Money.of("1000", "USD"),
        "finance_admin": None,
    }
    # A customer past due (as support's entitlements show) gets no credit without finance.
    past_due_needs_approval: bool = True


class CreditAssessment(BaseModel):
    """What the policy says of a request, and why: shown to the agent and to finance."""

    model_config = ConfigDict(frozen=True)

    outcome: CreditOutcome
    reasons: list[str]
    monthly_recurring: Money | None = None
    credited_last_90_days: Money | None = None


class CreditFacts(BaseModel):
    """What the credit policy decides on, read live at one moment: the ticket, the
    customer's active subscription, the ERP's readiness and the 90-day credited total."""

    case: SupportCase
    subscription: Subscription | None = None
    erp_party: str | None = Field(default=None, description="the ERP party's id, when one exists")
    erp_period_open: bool | None = Field(
        default=None, description="whether the ERP accepts postings dated today (UTC)"
    )
    credited_last_90_days: Money | None = None
    erp_unreadable: str | None = Field(
        default=None,
        description="why the ERP could not be read; its facts are advisory, so a credit goes on",
    )
    entitlements: Entitlements | None = Field(
        default=None, description="plan, subscription status and paid-through date"
    )
    entitlements_source: EntitlementsSource | None = Field(
        default=None,
        description=(
            "support: read from the customer's organization (the one place agents see); "
            "billing: the organization carries none yet, so billing was read instead"
        ),
    )


# The process's messages. They live here, not in the workflow module, because the workflow
# sandbox re-imports a workflow's module for every run: models defined there cost each
# waiting credit about 55 KB of worker memory; models here are imported once.


class CaseToCreditInput(BaseModel):
    request: CreditRequest
    policy: CreditPolicy = CreditPolicy()


class CreditApproval(BaseModel):
    """Finance's answer to a credit waiting for approval (identity set by the API)."""

    approve: bool
    reason: str
    approver: str
    role: str


class CreditState(BaseModel):
    """A credit as an agent or finance sees it: state, decision, amounts and ids."""

    workflow_id: str
    status: str
    request: CreditRequest
    customer_id: str | None
    assessment: CreditAssessment | None
    approval: CreditApproval | None
    billing_document: str | None
    erp_number: str | None
    exception_id: str | None
    finance_decision: FinanceDecision | None = None
