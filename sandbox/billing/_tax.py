"""Tax rates on invoice and credit note lines, computed the way Stripe's manual tax rates are.

The rule the sandbox implements (Stripe documents the shapes; the arithmetic is this one):

- Each line is taxed on its own, rate by rate, and each tax amount is rounded to the
  currency's minor unit, half away from zero (so a credit of -x has the tax -t of x's t).
- Exclusive rates: tax = amount x percentage / 100; `taxable_amount` = the line's amount; the
  tax is added on top of the invoice's subtotal.
- Inclusive rates: the line's amount already holds the tax. With inclusive percentages
  p1..pn on a line, the net is amount / (1 + sum(p) / 100) rounded half away from zero, each
  tax is net x p / 100 rounded the same way, and the last inclusive rate takes what rounding
  left over so that net + inclusive taxes == the line's amount exactly. `taxable_amount` is
  the net for every inclusive rate.
- A line may not mix inclusive and exclusive rates (the sandbox refuses it: it is never what
  a price list means, and Stripe's own tax behaviour is one per price).

Totals (Stripe's definitions): subtotal = sum of line amounts; subtotal_excluding_tax =
subtotal - inclusive tax; total = subtotal + exclusive tax; total_excluding_tax = total - all
tax; `total_taxes` = one entry per rate (and behaviour) with the summed amount and taxable
amount of the lines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any


def _round(value: Decimal) -> int:
    """Half away from zero to a whole minor unit (Decimal's ROUND_HALF_UP is symmetric)."""
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _entry(rate: Mapping[str, Any], amount: int, taxable: int) -> dict[str, Any]:
    return {
        "amount": amount,
        "tax_behavior": "inclusive" if rate["inclusive"] else "exclusive",
        "tax_rate_details": {"tax_rate": rate["id"]},
        # Stripe's own examples answer this for a manual tax rate (it computed no taxability).
        "taxability_reason": "not_available",
        "taxable_amount": taxable,
        "type": "tax_rate_details",
    }


def line_taxes(amount: int, rates: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The `taxes` of one line of `amount` minor units under `rates` (tax rate objects)."""
    inclusive = [r for r in rates if r["inclusive"]]
    exclusive = [r for r in rates if not r["inclusive"]]
    taxes: list[dict[str, Any]] = []
    if inclusive:
        total_pct = sum((Decimal(str(r["percentage"])) for r in inclusive), Decimal(0))
        net = _round(Decimal(amount) / (1 + total_pct / 100))
        left = amount - net
        for index, rate in enumerate(inclusive):
            if index == len(inclusive) - 1:
                tax = left
            else:
                tax = _round(Decimal(net) * Decimal(str(rate["percentage"])) / 100)
                left -= tax
            taxes.append(_entry(rate, tax, net))
    for rate in exclusive:
        tax = _round(Decimal(amount) * Decimal(str(rate["percentage"])) / 100)
        taxes.append(_entry(rate, tax, amount))
    return taxes


def scaled_taxes(
    taxes: Sequence[Mapping[str, Any]], part: int, whole: int, rates: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The taxes of `part` of a line worth `whole`: the line's own taxes when all of it is
    meant (no new rounding), else the same rates applied to `part`."""
    if part == whole:
        return [dict(t) for t in taxes]
    used = [rates[t["tax_rate_details"]["tax_rate"]] for t in taxes]
    return line_taxes(part, used)


def document_totals(lines: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """subtotal, subtotal_excluding_tax, total, total_excluding_tax, tax and total_taxes of an
    invoice's or credit note's lines (each line's `amount` and `taxes`)."""
    subtotal = sum(int(line["amount"]) for line in lines)
    inclusive = exclusive = 0
    per_rate: dict[tuple[str, str], dict[str, Any]] = {}
    for line in lines:
        for tax in line.get("taxes") or []:
            if tax["tax_behavior"] == "inclusive":
                inclusive += int(tax["amount"])
            else:
                exclusive += int(tax["amount"])
            key = (tax["tax_rate_details"]["tax_rate"], tax["tax_behavior"])
            if key not in per_rate:
                per_rate[key] = {**tax, "amount": 0, "taxable_amount": 0}
            per_rate[key]["amount"] += int(tax["amount"])
            per_rate[key]["taxable_amount"] += int(tax["taxable_amount"] or 0)
    total = subtotal + exclusive
    return {
        "subtotal": subtotal,
        "subtotal_excluding_tax": subtotal - inclusive,
        "tax": inclusive + exclusive,
        "total": total,
        "total_excluding_tax": total - inclusive - exclusive,
        "total_taxes": list(per_rate.values()),
    }


def check_one_behavior(rates: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the rates on one line are all inclusive or all exclusive."""
    return len({bool(r["inclusive"]) for r in rates}) <= 1


__all__ = ["check_one_behavior", "document_totals", "line_taxes", "scaled_taxes"]
