"""Business rules that decide, as pure functions: unit-tested without Temporal.

Amendment-to-ERP: whether a billing document may be posted (which ERP documents it needs is
`canonical.ledger.required_postings`, read by reconciliation too).
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from pydantic import BaseModel

from canonical import BillingDocument

# Why billing made an invoice: the subscription changes we know how to book. Anything else
# (metered thresholds, quotes, a reason billing adds later) goes to finance, not the ledger.
KNOWN_BILLING_REASONS = frozenset(
    {"subscription_create", "subscription_cycle", "subscription_update", "subscription", "manual"}
)


class PolicyViolation(BaseModel):
    """Why a document must not be posted as it is; finance decides what happens next."""

    code: str
    message: str


def check_postable(
    document: BillingDocument, supported_currencies: Iterable[str]
) -> list[PolicyViolation]:
    """Everything wrong with a billing document before it may reach the ledger."""
    violations: list[PolicyViolation] = []
    currencies = {c.upper() for c in supported_currencies}
    if document.currency not in currencies:
        allowed = ", ".join(sorted(currencies))
        violations.append(
            PolicyViolation(
                code="unsupported_currency",
                message=f"{document.currency} is not a ledger currency ({allowed})",
            )
        )
    reason = document.billing_reason  # on a credit note it is the credit's reason, not this
    if document.kind == "invoice" and reason is not None and reason not in KNOWN_BILLING_REASONS:
        violations.append(
            PolicyViolation(
                code="unknown_billing_reason",
                message=f"billing made this invoice for {reason!r}, "
                "a kind of subscription change the ledger has no rule for",
            )
        )
    for line in document.lines:
        if line.quantity < 0:
            violations.append(
                PolicyViolation(
                    code="negative_quantity",
                    message=f"line {line.line_id} has quantity {line.quantity}",
                )
            )
        if line.amount.currency != document.currency:
            violations.append(
                PolicyViolation(
                    code="mixed_currency",
                    message=f"line {line.line_id} is in {line.amount.currency}",
                )
            )
    if violations:
        return violations
    lines_total = sum((line.amount.amount for line in document.lines), Decimal(0))
    if lines_total != document.subtotal.amount:
        violations.append(
            PolicyViolation(
                code="lines_do_not_add_up",
                message=f"lines add up to {lines_total}, subtotal says {document.subtotal.amount}",
            )
        )
    if document.subtotal.amount + document.tax.amount != document.total.amount:
        violations.append(
            PolicyViolation(
                code="total_inconsistent",
                message=(
                    f"subtotal {document.subtotal.amount} + tax {document.tax.amount} "
                    f"!= total {document.total.amount}"
                ),
            )
        )
    return violations
