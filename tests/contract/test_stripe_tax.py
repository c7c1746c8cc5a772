"""Contract: tax rates on the billing sandbox's invoices and credit notes, as Stripe reports
them at the pinned version (each line's `taxes`, the document's `total_taxes` and totals),
for inclusive and exclusive rates, several rates, and a zero-decimal currency. The rounding
rule is the one sandbox/billing/_tax.py documents: per line, per rate, half away from zero."""

from __future__ import annotations

from typing import Any

import pytest
import stripe
from hypothesis import given
from hypothesis import strategies as st

from sandbox.billing._tax import document_totals, line_taxes
from sandbox.billing.driver import BillingDriver
from tests.fixtures.billing import BillingSandbox


def rate(rate_id: str, percentage: str, inclusive: bool) -> dict[str, Any]:
    return {"id": rate_id, "percentage": float(percentage), "inclusive": inclusive}


@pytest.mark.parametrize(
    ("amount", "rates", "expected"),
    [
        (1000, [rate("a", "20", False)], [(200, 1000)]),
        (1200, [rate("a", "20", True)], [(200, 1000)]),
        (999, [rate("a", "6.25", False), rate("b", "2.25", False)], [(62, 999), (22, 999)]),
        (1000, [rate("a", "10", True), rate("b", "5", True)], [(87, 870), (43, 870)]),
        (-1000, [rate("a", "8.875", False)], [(-89, -1000)]),  # 88.75 rounds away from zero
        (1, [rate("a", "50", False)], [(1, 1)]),  # half a minor unit rounds up
    ],
)
def test_each_line_is_taxed_per_rate_rounded_half_away_from_zero(
    amount: int, rates: list[dict[str, Any]], expected: list[tuple[int, int]]
) -> None:
    taxes = line_taxes(amount, rates)

    assert [(t["amount"], t["taxable_amount"]) for t in taxes] == expected
    inclusive = sum(t["amount"] for t in taxes if t["tax_behavior"] == "inclusive")
    if inclusive:
        assert taxes[0]["taxable_amount"] + inclusive == amount  # net + tax is the price


_PERCENTAGES = st.decimals(min_value=0, max_value=30, places=3).map(str)
_RATES = st.lists(_PERCENTAGES, min_size=1, max_size=3)


@given(
    lines=st.lists(
        st.tuples(st.integers(-(10**7), 10**7), _RATES, st.booleans()), min_size=1, max_size=8
    )
)
def test_document_totals_hold_together_for_any_lines_and_rates(
    lines: list[tuple[int, list[str], bool]],
) -> None:
    """Stripe's identities: total = subtotal + exclusive tax; subtotal_excluding_tax =
    subtotal - inclusive tax; each inclusive line's net + its taxes = its amount."""
    taxed: list[dict[str, Any]] = []
    for index, (amount, percentages, inclusive) in enumerate(lines):
        rates = [rate(f"r{index}_{n}", p, inclusive) for n, p in enumerate(percentages)]
        taxes = line_taxes(amount, rates)
        if inclusive:
            assert taxes[0]["taxable_amount"] + sum(t["amount"] for t in taxes) == amount
        taxed.append({"amount": amount, "taxes": taxes})

    sums = document_totals(taxed)

    exclusive = sum(
        t["amount"] for ln in taxed for t in ln["taxes"] if t["tax_behavior"] == "exclusive"
    )
    inclusive_tax = sum(
        t["amount"] for ln in taxed for t in ln["taxes"] if t["tax_behavior"] == "inclusive"
    )
    assert sums["subtotal"] == sum(amount for amount, _, _ in lines)
    assert sums["total"] == sums["subtotal"] + exclusive
    assert sums["subtotal_excluding_tax"] == sums["subtotal"] - inclusive_tax
    assert sums["total_excluding_tax"] == sums["total"] - exclusive - inclusive_tax
    assert sum(t["amount"] for t in sums["total_taxes"]) == exclusive + inclusive_tax


async def tax_rate(
    driver: BillingDriver, name: str, percentage: str, *, inclusive: bool
) -> stripe.TaxRate:
    return await driver.create_tax_rate(
        name,
        percentage,
        inclusive=inclusive,
        idempotency_key=f"txr/{name}",
        jurisdiction="FR" if name.startswith("VAT") else "US-NY",
        country="FR" if name.startswith("VAT") else "US",
        tax_type="vat" if name.startswith("VAT") else "sales_tax",
    )


async def subscribed_invoice(
    driver: BillingDriver,
    tag: str,
    amount: int,
    currency: str,
    *,
    tax_rates: list[str] | None = None,
    default_tax_rates: list[str] | None = None,
) -> stripe.Invoice:
    customer = await driver.create_customer(f"Taxed {tag}", idempotency_key=f"{tag}/c")
    product = await driver.create_product(f"Plan {tag}", idempotency_key=f"{tag}/prod")
    price = await driver.create_price(product.id, amount, currency, idempotency_key=f"{tag}/p")
    sub = await driver.subscribe(
        customer.id,
        price.id,
        idempotency_key=f"{tag}/s",
        tax_rates=tax_rates,
        default_tax_rates=default_tax_rates,
    )
    return await driver.client.v1.invoices.retrieve_async(str(sub.latest_invoice))


def totals(invoice: Any) -> tuple[int, int, int, int]:
    return (
        invoice.subtotal,
        invoice.subtotal_excluding_tax,
        invoice.total,
        invoice.total_excluding_tax,
    )


async def test_an_exclusive_rate_adds_its_tax_on_top_in_stripes_shape(
    billing_driver: BillingDriver,
) -> None:
    sales = await tax_rate(billing_driver, "Sales tax", "20", inclusive=False)

    invoice = await subscribed_invoice(billing_driver, "excl", 1000, "usd", tax_rates=[sales.id])

    [line] = invoice.lines.data
    assert line.amount == 1000
    assert [t.to_dict() for t in line.taxes or []] == [
        {
            "amount": 200,
            "tax_behavior": "exclusive",
            "tax_rate_details": {"tax_rate": sales.id},
            "taxability_reason": "not_available",
            "taxable_amount": 1000,
            "type": "tax_rate_details",
        }
    ]
    assert totals(invoice) == (1000, 1000, 1200, 1000)
    assert [(t.amount, t.taxable_amount) for t in invoice.total_taxes or []] == [(200, 1000)]
    assert (invoice.amount_due, invoice.amount_remaining) == (1200, 1200)


async def test_an_inclusive_rate_is_taken_out_of_the_price(billing_driver: BillingDriver) -> None:
    vat = await tax_rate(billing_driver, "VAT 20", "20", inclusive=True)

    invoice = await subscribed_invoice(
        billing_driver, "incl", 1200, "eur", default_tax_rates=[vat.id]
    )

    [line] = invoice.lines.data
    [tax] = line.taxes or []
    assert (line.amount, tax.amount, tax.taxable_amount, tax.tax_behavior) == (
        1200,
        200,
        1000,
        "inclusive",
    )
    assert totals(invoice) == (1200, 1000, 1200, 1000)
    assert (invoice.currency, invoice.amount_due) == ("eur", 1200)


async def test_two_exclusive_rates_are_each_rounded_on_the_line(
    billing_driver: BillingDriver,
) -> None:
    state = await tax_rate(billing_driver, "State", "6.25", inclusive=False)
    city = await tax_rate(billing_driver, "City", "2.25", inclusive=False)

    invoice = await subscribed_invoice(
        billing_driver, "two", 999, "usd", tax_rates=[state.id, city.id]
    )

    by_rate = {
        t.tax_rate_details.tax_rate: t.amount
        for t in invoice.total_taxes or []
        if t.tax_rate_details is not None
    }
    assert by_rate == {state.id: 62, city.id: 22}
    assert totals(invoice) == (999, 999, 1083, 999)


async def test_a_zero_decimal_currency_is_taxed_in_whole_yen(billing_driver: BillingDriver) -> None:
    jct = await tax_rate(billing_driver, "JCT", "10", inclusive=True)

    invoice = await subscribed_invoice(billing_driver, "jpy", 1000, "jpy", tax_rates=[jct.id])

    [tax] = invoice.lines.data[0].taxes or []
    assert (tax.amount, tax.taxable_amount) == (91, 909)  # 1000 / 1.1 = 909.09 yen net
    assert totals(invoice) == (1000, 909, 1000, 909)


async def test_paying_a_taxed_invoice_charges_its_total(billing_driver: BillingDriver) -> None:
    sales = await tax_rate(billing_driver, "Sales", "8.875", inclusive=False)
    invoice = await subscribed_invoice(billing_driver, "paytax", 2000, "usd", tax_rates=[sales.id])

    paid = await billing_driver.pay(str(invoice.id), idempotency_key="paytax/pay")

    assert (paid.total, paid.amount_paid, paid.status) == (2178, 2178, "paid")  # 177.5 -> 178


async def test_prorations_and_invoice_items_carry_their_tax_rates(
    billing_driver: BillingDriver,
) -> None:
    vat = await tax_rate(billing_driver, "VAT item", "20", inclusive=False)
    customer = await billing_driver.create_customer("Items", idempotency_key="items/c")
    product = await billing_driver.create_product("Seat", idempotency_key="items/prod")
    price = await billing_driver.create_price(product.id, 3000, "usd", idempotency_key="items/p")
    sub = await billing_driver.subscribe(
        customer.id, price.id, idempotency_key="items/s", default_tax_rates=[vat.id]
    )
    await billing_driver.change_plan(
        sub.id,
        quantity=2,
        proration_behavior="create_prorations",
        idempotency_key="items/up",
    )
    await billing_driver.client.v1.invoice_items.create_async(
        {
            "customer": customer.id,
            "amount": 500,
            "currency": "usd",
            "description": "Setup",
            "tax_rates": [vat.id],
        }
    )
    draft = await billing_driver.invoice_pending_items(customer.id, idempotency_key="items/d")

    for line in draft.lines.data:
        [tax] = line.taxes or []
        assert tax.tax_rate_details is not None and tax.tax_rate_details.tax_rate == vat.id
        assert tax.amount == round(line.amount * 0.2)  # whole cents here; credits negative
    assert any(line.amount < 0 for line in draft.lines.data)
    taxes = sum(t.amount for line in draft.lines.data for t in line.taxes or [])
    assert draft.total == sum(line.amount for line in draft.lines.data) + taxes


async def test_credit_notes_carry_the_taxes_of_the_lines_they_credit(
    billing_driver: BillingDriver,
) -> None:
    vat = await tax_rate(billing_driver, "VAT note", "20", inclusive=False)
    invoice = await subscribed_invoice(billing_driver, "note", 1000, "usd", tax_rates=[vat.id])
    line_id = invoice.lines.data[0].id

    part = await billing_driver.client.v1.credit_notes.create_async(
        {
            "invoice": str(invoice.id),
            "lines": [{"type": "invoice_line_item", "invoice_line_item": line_id, "amount": 500}],
        }
    )
    rest = await billing_driver.client.v1.credit_notes.create_async(
        {
            "invoice": str(invoice.id),
            "lines": [{"type": "invoice_line_item", "invoice_line_item": line_id, "amount": 500}],
        }
    )

    [part_line] = part.lines.data
    [tax] = part_line.taxes or []
    assert (tax.amount, tax.taxable_amount, tax.tax_behavior) == (100, 500, "exclusive")
    assert [r.id for r in part_line.tax_rates] == [vat.id]
    assert (part.subtotal, part.total, part.total_excluding_tax) == (500, 600, 500)
    assert [(t.amount, t.taxable_amount) for t in part.total_taxes or []] == [(100, 500)]
    assert rest.total == 600
    after = await billing_driver.client.v1.invoices.retrieve_async(str(invoice.id))
    assert (after.status, after.amount_remaining) == ("paid", 0)  # credited in full, tax too


async def test_a_tax_rate_keeps_its_percentage_and_refuses_what_stripe_refuses(
    billing_driver: BillingDriver, billing_sandbox: BillingSandbox
) -> None:
    vat = await tax_rate(billing_driver, "VAT fixed", "20", inclusive=False)
    vat_incl = await tax_rate(billing_driver, "VAT incl", "20", inclusive=True)
    client = billing_driver.client.v1

    with pytest.raises(stripe.InvalidRequestError) as changed:
        immutable: Any = {"percentage": "25"}  # not an update parameter at Stripe
        await client.tax_rates.update_async(vat.id, immutable)
    with pytest.raises(stripe.InvalidRequestError) as incomplete:
        no_kind: Any = {"display_name": "No kind", "percentage": "5"}
        await client.tax_rates.create_async(no_kind)
    with pytest.raises(stripe.InvalidRequestError) as mixed:
        await subscribed_invoice(
            billing_driver, "mixed", 1000, "usd", tax_rates=[vat.id, vat_incl.id]
        )
    archived = await client.tax_rates.update_async(vat.id, {"active": False})
    with pytest.raises(stripe.InvalidRequestError) as inactive:
        await subscribed_invoice(billing_driver, "arch", 1000, "usd", tax_rates=[vat.id])

    assert (changed.value.code, changed.value.param) == ("parameter_unknown", "percentage")
    assert (incomplete.value.code, incomplete.value.param) == ("parameter_missing", "inclusive")
    assert mixed.value.param == "items[0][tax_rates]"
    assert (archived.active, archived.percentage) == (False, 20.0)
    assert inactive.value.param == "items[0][tax_rates][0]"
    listed = await client.tax_rates.list_async({"active": True})
    assert [r.id for r in listed.data] == [vat_incl.id]
    created = [e for e in billing_sandbox.events() if e["type"] == "tax_rate.created"]
    assert len(created) == 2


async def test_an_invoices_default_tax_rates_apply_to_items_without_their_own(
    billing_driver: BillingDriver,
) -> None:
    vat = await tax_rate(billing_driver, "VAT default", "20", inclusive=False)
    reduced = await tax_rate(billing_driver, "Reduced", "5.5", inclusive=False)
    customer = await billing_driver.create_customer("Defaults", idempotency_key="dflt/c")
    for key, rates in (("plain", None), ("own", [reduced.id])):
        params: Any = {"customer": customer.id, "amount": 1000, "currency": "eur"}
        if rates:
            params["tax_rates"] = rates
        await billing_driver.client.v1.invoice_items.create_async(
            params, {"idempotency_key": f"dflt/{key}"}
        )

    draft = await billing_driver.client.v1.invoices.create_async(
        {
            "customer": customer.id,
            "pending_invoice_items_behavior": "include",
            "default_tax_rates": [vat.id],
        }
    )

    applied = sorted(
        (t.tax_rate_details.tax_rate, t.amount)
        for line in draft.lines.data
        for t in line.taxes or []
        if t.tax_rate_details is not None
    )
    assert applied == sorted([(vat.id, 200), (reduced.id, 55)])
    assert [r.id for r in draft.default_tax_rates] == [vat.id]
    assert draft.total == 2255
