"""Business rules that decide, as pure functions: unit-tested without Temporal.

Amendment-to-ERP: which ERP documents a billing document needs, and whether it may be posted.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from decimal import Decimal

from pydantic import BaseModel

from canonical import BillingDocument, LedgerLine, LedgerPosting, Money

VOID_SUFFIX = "/void"
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


def required_postings(document: BillingDocument) -> list[LedgerPosting]:
    """The ERP documents that mirror a billing document in its current state, in order.

    A draft needs nothing; a finalized invoice needs an ERP invoice (or a credit note when
    its total is negative, e.g. a downgrade's proration); a voided one also needs the
    reversal. A credit note needs an ERP credit note, and a reversing invoice once voided.
    A zero total moves no money and needs nothing.
    """
    if not document.was_finalized or document.total.amount == 0:
        return []
    main = _posting(document)
    if document.status == "void":
        return [main, _reversal(main)]
    return [main]


def _posting(document: BillingDocument) -> LedgerPosting:
    credit = (document.kind == "credit_note") != (document.total.amount < 0)
    sign = Decimal(-1) if document.total.amount < 0 else Decimal(1)
    lines = [
        LedgerLine(
            description=_line_description(line.description, line.period_start, line.period_end),
            quantity=Decimal(1),
            unit_price=sign * line.amount.amount,
        )
        for line in document.lines
    ]
    if document.tax.amount:
        lines.append(
            LedgerLine(
                description="Tax", quantity=Decimal(1), unit_price=sign * document.tax.amount
            )
        )
    label = "Credit note" if document.kind == "credit_note" else "Invoice"
    billing_date = (document.finalized_at or document.created_at).date()
    posting = LedgerPosting(
        reference=document.document_id,
        kind="credit_note" if credit else "invoice",
        customer_id=document.customer_id,
        currency=document.currency,
        lines=lines,
        total=Money(amount=abs(document.total.amount), currency=document.currency),
        billing_date=billing_date,
        description=(
            f"{label} {document.number or document.document_id} of {billing_date.isoformat()}"
            + (f", subscription {document.subscription_id}" if document.subscription_id else "")
        ),
    )
    return _net_credit_lines(posting)


def _reversal(posting: LedgerPosting) -> LedgerPosting:
    reversal = posting.model_copy(
        update={
            "reference": posting.reference + VOID_SUFFIX,
            "kind": "invoice" if posting.kind == "credit_note" else "credit_note",
            "description": f"Reversal (voided in billing) of {posting.description}",
        }
    )
    return _net_credit_lines(reversal)


def _net_credit_lines(posting: LedgerPosting) -> LedgerPosting:
    """An ERP credit note takes lines of one sign (Tryton numbers it as a credit note only
    then): a credit with a proration charge inside is booked as one net line."""
    if posting.kind != "credit_note" or all(
        ln.unit_price * ln.quantity >= 0 for ln in posting.lines
    ):
        return posting
    parts = "; ".join(f"{ln.description}: {ln.unit_price * ln.quantity}" for ln in posting.lines)
    net = LedgerLine(description=f"Net of {parts}"[:500], quantity=Decimal(1),
                     unit_price=posting.total.amount)  # fmt: skip
    return posting.model_copy(update={"lines": [net]})


def _line_description(text: str, start: date | None, end: date | None) -> str:
    if start and end:
        return f"{text} ({start.isoformat()} to {end.isoformat()})"
    return text
