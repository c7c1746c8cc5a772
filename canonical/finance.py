"""Finance exceptions and decisions: what a human must decide, and what they decided."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from canonical.money import Money

Decision = Literal["retry", "compensate", "resolve_manually", "reject"]
FINANCE_ROLES = ("finance", "finance_admin")


class ExceptionContext(BaseModel):
    """Everything finance needs to decide without opening another system."""

    SCHEMA_VERSION: ClassVar[int] = 1
    model_config = ConfigDict(frozen=True)

    process: str = Field(description="amendment_to_erp, case_to_credit, reconciliation, ...")
    origin_workflow_id: str
    origin_run_id: str
    step: str = Field(description="the step that failed, e.g. post_ledger_document")
    customer_id: str | None = None
    subscription_id: str | None = None
    invoice_id: str | None = None
    case_id: str | None = None
    amount: Money | None = None
    error_type: str
    error_message: str
    remote_answer: Any = None
    payload: dict[str, Any] = Field(default_factory=dict, description="the input that failed")
    correlation_id: str
    allowed_decisions: list[Decision]
    decision_effects: dict[Decision, str] = Field(
        default_factory=dict, description="what the origin does on each allowed decision"
    )


class DecisionRequest(BaseModel):
    """A finance user's decision, as the API hands it over with their verified identity."""

    model_config = ConfigDict(frozen=True)

    decision: Decision
    reason: str
    actor: str
    role: str
    manual_erp_number: str | None = Field(
        default=None, description="the ERP document finance posted by hand (resolve_manually)"
    )


class FinanceDecision(BaseModel):
    SCHEMA_VERSION: ClassVar[int] = 1
    model_config = ConfigDict(frozen=True)

    exception_id: str
    decision: Decision
    reason: str
    actor: str
    role: str
    manual_erp_number: str | None = None
    decided_at: AwareDatetime


class FinanceExceptionInput(BaseModel):
    """What a finance exception workflow starts with (here, not in the workflow's module,
    so the sandbox does not build the model again for every run it holds)."""

    context: ExceptionContext
    # Above this amount only finance_admin may decide (None: any finance role may).
    admin_threshold: Money | None = None


class FinanceExceptionState(BaseModel):
    exception_id: str
    status: str  # open | reminded | escalated | decided
    context: ExceptionContext
    decision: FinanceDecision | None = None
