"""Property: an invoice as Stripe reports it (lines with inclusive and exclusive rates, in
currencies of 0, 2 and 3 decimals) becomes an ERP posting whose revenue lines plus taxes are
billing's total, and whose tax per rate is billing's, to the minor unit. The invoice JSON is
generated as Stripe computes it (each line's tax rounded half up on its own, `total_taxes`
the sum per rate); the mapping under test never recomputes tax."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.billing.stripe import invoice_from_stripe
from canonical.ledger import required_postings
from canonical.money import currency_exponent

RATES: dict[str, dict[str, Any]] = {
    "txr_excl_20": {"id": "txr_excl_20", "display_name": "VAT", "percentage": 20.0,
                    "inclusive": False, "jurisdiction": "EU"},
    "txr_incl_20": {"id": "txr_incl_20", "display_name": "VAT", "percentage": 20.0,
                    "inclusive": True, "jurisdiction": "GB"},
    "txr_excl_8875": {"id": "txr_excl_8875", "display_name": "Sales tax", "percentage": 8.875,
                      "inclusive": False, "jurisdiction": "US - NY"},
}  # fmt: skip
CREATED = 1_790_000_000


def half_up(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def stripe_line(index: int, minor: int, rate_id: str | None) -> tuple[dict[str, Any], Any]:
    """A line of `minor` (tax excluded for an exclusive rate, included for an inclusive one)
    and its tax entry as Stripe computes it."""
    taxes = []
    entry = None
    if rate_id is not None:
        rate = RATES[rate_id]
        pct = Decimal(str(rate["percentage"])) / 100
        if rate["inclusive"]:
            taxable = half_up(Decimal(minor) / (1 + pct))
            tax = minor - taxable
        else:
            taxable, tax = minor, half_up(Decimal(minor) * pct)
        behavior = "inclusive" if rate["inclusive"] else "exclusive"
        entry = {"amount": tax, "taxable_amount": taxable, "tax_behavior": behavior,
                 "tax_rate_details": {"tax_rate": rate_id}, "type": "tax_rate_details",
                 "taxability_reason": "standard_rated"}  # fmt: skip
        taxes.append(entry)
    line = {
        "id": f"il_{index}", "object": "line_item", "amount": minor, "description": f"L{index}",
        "quantity": 1, "period": {"start": CREATED, "end": CREATED + 86400},
        "pricing": {"type": "price_details", "unit_amount_decimal": str(minor),
                    "price_details": {"price": f"price_{index}", "product": "prod_lb_platform"}},
        "parent": None, "taxes": taxes,
    }  # fmt: skip
    return line, entry


@st.composite
def stripe_invoices(draw: st.DrawFn) -> dict[str, Any]:
    currency = draw(st.sampled_from(["jpy", "usd", "eur", "kwd"]))
    scale = 10 ** currency_exponent(currency)
    specs = draw(
        st.lists(
            st.tuples(st.integers(1, 5_000 * scale), st.sampled_from([None, *RATES])),
            min_size=1,
            max_size=5,
        )
    )
    lines, per_rate = [], {}
    for index, (minor, rate_id) in enumerate(specs):
        line, entry = stripe_line(index, minor, rate_id)
        lines.append(line)
        if entry is not None:
            total = per_rate.setdefault(rate_id, {**entry, "amount": 0, "taxable_amount": 0})
            total["amount"] += entry["amount"]
            total["taxable_amount"] += entry["taxable_amount"]
    subtotal = sum(line["amount"] for line in lines)
    exclusive = sum(t["amount"] for t in per_rate.values() if t["tax_behavior"] == "exclusive")
    return {
        "id": "in_1Prop", "object": "invoice", "currency": currency, "customer": "cus_1",
        "status": "open", "number": "P-1", "billing_reason": "manual", "created": CREATED,
        "status_transitions": {"finalized_at": CREATED}, "parent": None,
        "lines": {"object": "list", "data": lines, "has_more": False},
        "subtotal": subtotal, "total": subtotal + exclusive, "amount_paid": 0,
        "amount_remaining": subtotal + exclusive, "total_taxes": list(per_rate.values()),
    }  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(stripe_invoices())
def test_the_posting_is_billings_total_and_tax_per_rate_to_the_minor_unit(
    data: dict[str, Any],
) -> None:
    document = invoice_from_stripe(data, None, RATES)
    (posting,) = required_postings(document)

    exponent = currency_exponent(data["currency"])
    revenue = sum(line.quantity * line.unit_price for line in posting.lines)
    taxes = sum(tax.amount for tax in posting.taxes)
    assert (revenue + taxes).scaleb(exponent) == data["total"]
    assert posting.total.to_minor() == data["total"]
    billed = {t["tax_rate_details"]["tax_rate"]: t["amount"] for t in data["total_taxes"]}
    assert {t.rate_id: int(t.amount.scaleb(exponent)) for t in posting.taxes} == billed
    assert document.tax.to_minor() == sum(billed.values())
