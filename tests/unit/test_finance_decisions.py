"""Who may decide a finance exception, and how: the validator's rules as a pure function."""

from __future__ import annotations

from typing import Any

import pytest

from canonical import DecisionRequest, ExceptionContext, Money
from workflows.finance_exception import FinanceExceptionInput, decision_refusal


def exception(amount: str | None = "250.00", threshold: str | None = "1000.00") -> Any:
    context = ExceptionContext(
        process="amendment_to_erp", origin_workflow_id="subscription/sub_1", origin_run_id="r",
        step="post_ledger_document", amount=Money.of(amount, "USD") if amount else None,
        error_type="RejectedError", error_message="closed period", correlation_id="c",
        allowed_decisions=["retry", "resolve_manually", "reject"],
    )  # fmt: skip
    return FinanceExceptionInput(
        context=context, admin_threshold=Money.of(threshold, "USD") if threshold else None
    )


def request(**changes: Any) -> DecisionRequest:
    fields: dict[str, Any] = {"decision": "retry", "reason": "ERP reopened", "actor": "fiona",
                              "role": "finance"}  # fmt: skip
    fields.update(changes)
    return DecisionRequest(**fields)


def test_a_finance_user_with_a_reason_may_decide() -> None:
    assert decision_refusal(exception(), False, request()) is None


@pytest.mark.parametrize(
    ("already", "changes", "refusal"),
    [
        (True, {}, "already decided"),
        (False, {"role": "support"}, "may not decide"),
        (False, {"role": "ops"}, "may not decide"),
        (False, {"reason": ""}, "reason is required"),
        (False, {"decision": "compensate"}, "not possible here"),
        (False, {"decision": "resolve_manually"}, "needs the number"),
        (False, {"actor": " "}, "unknown"),
    ],
)
def test_refusals_name_the_rule(already: bool, changes: dict[str, Any], refusal: str) -> None:
    assert refusal in (decision_refusal(exception(), already, request(**changes)) or "")


def test_amounts_above_the_threshold_need_finance_admin() -> None:
    big = exception(amount="5000.00")
    assert "finance_admin" in (decision_refusal(big, False, request()) or "")
    assert decision_refusal(big, False, request(role="finance_admin")) is None
    assert decision_refusal(exception(amount=None), False, request()) is None


def test_resolve_manually_with_the_erp_number_is_accepted() -> None:
    manual = request(decision="resolve_manually", manual_erp_number="INV-2026-0042")
    assert decision_refusal(exception(), False, manual) is None
