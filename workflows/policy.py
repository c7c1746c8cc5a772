"""Business rules that decide, as pure functions: unit-tested without Temporal.

Amendment-to-ERP: whether a billing document may be posted (which ERP documents it needs is
`canonical.ledger.required_postings`, read by reconciliation too), and whether an invoice's
payments and a charge's refunds may be.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from pydantic import BaseModel

from canonical import BillingDocument, Payment, Refund

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
    document: BillingDocument, supported_currencies: Iterable[str] | None
) -> list[PolicyViolation]:
    """Everything wrong with a billing document before it may reach the ledger. Without
    `supported_currencies` the currency is left to finance's mapping (the ERP activity
    refuses one it does not map)."""
    violations: list[PolicyViolation] = []
    currencies = {c.upper() for c in supported_currencies or ()}
    if supported_currencies is not None and document.currency not in currencies:
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
    # Billing's subtotal already holds inclusive tax; only exclusive tax comes on top.
    inclusive = sum((t.amount.amount for t in document.tax_lines if t.inclusive), Decimal(0))
    exclusive = document.tax.amount - inclusive
    if document.subtotal.amount + exclusive != document.total.amount:
        violations.append(
            PolicyViolation(
                code="total_inconsistent",
                message=(
                    f"subtotal {document.subtotal.amount} + exclusive tax {exclusive} "
                    f"!= total {document.total.amount}"
                ),
            )
        )
    return violations


def check_payments(invoice: BillingDocument, payments: list[Payment]) -> list[PolicyViolation]:
    """Everything wrong with an invoice's payments before any reaches the ledger: billing's
    own figures must agree before the ERP is asked (it refuses an overpayment too)."""
    violations: list[PolicyViolation] = []
    paid = [p for p in payments if p.status == "paid"]
    for payment in paid:
        where = f"payment {payment.payment_id}"
        if payment.invoice_id != invoice.document_id:
            violations.append(PolicyViolation(
                code="payment_of_another_invoice",
                message=f"{where} pays {payment.invoice_id}, not {invoice.document_id}",
            ))  # fmt: skip
        if payment.amount.currency != invoice.currency:
            violations.append(PolicyViolation(
                code="mixed_currency",
                message=f"{where} is in {payment.amount.currency}, the invoice in "
                f"{invoice.currency}",
            ))  # fmt: skip
        if payment.amount.amount < 0:
            violations.append(PolicyViolation(
                code="negative_payment", message=f"{where} is of {payment.amount}"
            ))  # fmt: skip
        if payment.paid_at is None:
            violations.append(PolicyViolation(
                code="payment_without_date", message=f"{where} is paid but has no payment date"
            ))  # fmt: skip
    if violations:
        return violations
    paid_total = sum((p.amount.amount for p in paid), Decimal(0))
    if paid and paid_total > invoice.total.amount:
        violations.append(
            PolicyViolation(
                code="overpayment",
                message=f"payments of {paid_total} {invoice.currency} exceed the invoice "
                f"total {invoice.total.amount}",
            )
        )
    return violations


def check_refund(refund: Refund, payment: Payment, refunds: list[Refund]) -> list[PolicyViolation]:
    """Everything wrong with a succeeded refund of `payment`, given the charge's refunds
    (oldest first, this one among them): billing refuses a refund larger than what it gives
    back, so one that shows up anyway is for finance, never posted."""
    violations: list[PolicyViolation] = []
    where = f"refund {refund.refund_id}"
    if refund.amount.currency != payment.amount.currency:
        violations.append(PolicyViolation(
            code="mixed_currency",
            message=f"{where} is in {refund.amount.currency}, payment {payment.payment_id} "
            f"in {payment.amount.currency}",
        ))  # fmt: skip
        return violations
    if refund.amount.amount <= 0:
        violations.append(PolicyViolation(
            code="refund_of_nothing", message=f"{where} is of {refund.amount}"
        ))  # fmt: skip
    given_back = Decimal(0)
    for other in refunds:
        if other.status == "succeeded" and other.payment_id == refund.payment_id:
            given_back += other.amount.amount
        if other.refund_id == refund.refund_id:
            break
    if given_back > payment.amount.amount:
        violations.append(
            PolicyViolation(
                code="refund_exceeds_payment",
                message=f"refunds of payment {payment.payment_id} up to {where} give back "
                f"{given_back} {refund.amount.currency}, more than its "
                f"{payment.amount.amount} paid",
            )
        )
    return violations
