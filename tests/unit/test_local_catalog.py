"""The local stack's catalogue: billing's products and tax rates made once, and finance's
mapping of them written so that `mapping check` finds nothing missing.

Billing is httpx.MockTransport answering Stripe's shapes (the sandbox does not yet take a
chosen product id or tax rates); the ERP side is ERP_BOOKS itself, which the lead aligns
with `starters/local/tryton_bootstrap.py`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import stripe

from adapters.billing.stripe import STRIPE_API_VERSION
from adapters.mapping_file import load_mapping, render_mapping
from canonical.mapping import CatalogEntry
from canonical.mapping_check import check_mapping
from starters.local.catalog import (
    ERP_BOOKS,
    LOCAL_CURRENCIES,
    LOCAL_KEY_METADATA,
    PRODUCTS,
    TAX_RATES,
    CatalogError,
    LocalCatalog,
    ensure_billing_catalog,
    local_mapping,
    write_mapping,
)


class FakeBilling:
    """Products by chosen id and tax rates, kept between calls; refuses a duplicate id as
    Stripe does (resource_already_exists)."""

    def __init__(self) -> None:
        self.products: dict[str, dict[str, Any]] = {}
        self.tax_rates: list[dict[str, Any]] = []
        self.writes: list[tuple[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.headers["Stripe-Version"] == STRIPE_API_VERSION
        path = request.url.path
        form = dict(parse_qsl(request.content.decode())) if request.method == "POST" else {}
        if request.method == "POST":
            self.writes.append((path, request.headers["Idempotency-Key"]))
        if request.method == "GET" and path.startswith("/v1/products/"):
            found = self.products.get(path.rsplit("/", 1)[1])
            if found is None:
                return self.error(404, "resource_missing", f"No such product: '{path}'")
            return httpx.Response(200, json=found)
        if request.method == "POST" and path == "/v1/products":
            if form["id"] in self.products:
                return self.error(400, "resource_already_exists", "Product already exists.")
            product = {"id": form["id"], "object": "product", "name": form["name"],
                       "active": True}  # fmt: skip
            self.products[form["id"]] = product
            return httpx.Response(200, json=product)
        if request.method == "GET" and path == "/v1/tax_rates":
            return httpx.Response(200, json={"object": "list", "data": self.tax_rates[::-1],
                                             "has_more": False, "url": path})  # fmt: skip
        if request.method == "POST" and path == "/v1/tax_rates":
            rate = {
                "id": f"txr_{len(self.tax_rates) + 1}", "object": "tax_rate", "active": True,
                "display_name": form["display_name"], "percentage": float(form["percentage"]),
                "inclusive": form["inclusive"] == "true", "jurisdiction": form["jurisdiction"],
                "country": form["country"], "state": form.get("state"),
                "metadata": {LOCAL_KEY_METADATA: form[f"metadata[{LOCAL_KEY_METADATA}]"]},
            }  # fmt: skip
            self.tax_rates.append(rate)
            return httpx.Response(200, json=rate)
        return self.error(404, "resource_missing", f"unexpected {request.method} {path}")

    @staticmethod
    def error(status: int, code: str, message: str) -> httpx.Response:
        return httpx.Response(
            status,
            json={"error": {"type": "invalid_request_error", "code": code, "message": message}},
        )


async def run_catalog(fake: FakeBilling) -> LocalCatalog:
    http = stripe.HTTPXClient()
    http._client_async = httpx.AsyncClient(transport=httpx.MockTransport(fake))
    client = stripe.StripeClient("sk_test_x", base_addresses={"api": "https://billing.test"},
                                 stripe_version=STRIPE_API_VERSION, http_client=http,
                                 max_network_retries=0)  # fmt: skip
    try:
        return await ensure_billing_catalog(client)
    finally:
        await http.close_async()


async def test_the_catalogue_is_made_once_and_found_again() -> None:
    fake = FakeBilling()

    first = await run_catalog(fake)
    writes_after_first = list(fake.writes)
    second = await run_catalog(fake)

    assert first == second
    assert first.products == ["prod_lb_platform", "prod_lb_seats", "prod_lb_support"]
    assert set(first.tax_rates) == {"eu_vat_20", "uk_vat_20", "us_ny_sales_8875"}
    assert len(writes_after_first) == len(PRODUCTS) + len(TAX_RATES)
    assert fake.writes == writes_after_first  # the second run wrote nothing
    assert {key for _, key in fake.writes} == {
        *(f"local-catalog/product/{p.product_id}" for p in PRODUCTS),
        *(f"local-catalog/tax-rate/{t.key}" for t in TAX_RATES),
    }
    ny = next(r for r in fake.tax_rates if r["id"] == first.tax_rates["us_ny_sales_8875"])
    assert (ny["percentage"], ny["inclusive"], ny["state"]) == (8.875, False, "NY")
    uk = next(r for r in fake.tax_rates if r["id"] == first.tax_rates["uk_vat_20"])
    assert uk["inclusive"] is True


async def test_a_tax_rate_found_by_key_but_no_longer_as_wanted_is_refused() -> None:
    fake = FakeBilling()
    await run_catalog(fake)
    fake.tax_rates[0]["active"] = False

    with pytest.raises(CatalogError, match="eu_vat_20"):
        await run_catalog(fake)


def billing_catalog_of(catalog: LocalCatalog) -> list[CatalogEntry]:
    entries = [CatalogEntry(kind="product", key=p) for p in catalog.products]
    entries += [CatalogEntry(kind="tax_rate", key=t) for t in catalog.tax_rates.values()]
    return entries + [CatalogEntry(kind="currency", key=c) for c in LOCAL_CURRENCIES]


def erp_catalog_of_books() -> list[CatalogEntry]:
    entries = [CatalogEntry(kind="currency", key=c) for c in LOCAL_CURRENCIES]
    for product, account in [*ERP_BOOKS.revenue.values(), ERP_BOOKS.refunds,
                             ERP_BOOKS.support_credits]:  # fmt: skip
        entries += [CatalogEntry(kind="product", key=product),
                    CatalogEntry(kind="account", key=account)]  # fmt: skip
    entries += [CatalogEntry(kind="tax", key=name) for name in ERP_BOOKS.taxes.values()]
    for journal, account in [*ERP_BOOKS.card_journals.values(), ERP_BOOKS.out_of_band_journal]:
        entries += [CatalogEntry(kind="journal", key=journal),
                    CatalogEntry(kind="account", key=account)]  # fmt: skip
    return entries


CATALOG = LocalCatalog(
    products=[p.product_id for p in PRODUCTS],
    tax_rates={"eu_vat_20": "txr_a", "uk_vat_20": "txr_b", "us_ny_sales_8875": "txr_c"},
)


def test_the_local_mapping_covers_the_catalogue_with_the_books_names() -> None:
    report = check_mapping(
        local_mapping(CATALOG.tax_rates), billing_catalog_of(CATALOG), erp_catalog_of_books()
    )

    assert report.clean, report
    assert report.unknown_in_billing == []


def test_the_mapping_file_is_written_then_kept_then_rewritten_one_version_up(
    tmp_path: Path,
) -> None:
    path = tmp_path / "finance-mapping.toml"

    assert write_mapping(path, CATALOG) == "wrote finance-mapping.toml (version 1)"
    finance_edit = load_mapping(path).model_copy(update={"version": 4})
    path.write_text(render_mapping(finance_edit))
    assert write_mapping(path, CATALOG) == "kept finance-mapping.toml (version 4)"

    new_rates = CATALOG.model_copy(
        update={"tax_rates": {**CATALOG.tax_rates, "eu_vat_20": "txr_z"}}
    )
    assert write_mapping(path, new_rates) == "wrote finance-mapping.toml (version 5)"
    mapping = load_mapping(path)
    assert mapping.tax_rates["txr_z"].erp_tax == ERP_BOOKS.taxes["eu_vat_20"]
    assert mapping.journal("card", "JPY") is not None
    assert mapping.journal("out_of_band", "GBP") is not None
    assert not list(tmp_path.glob("*.partial"))


def test_local_catalog_file_round_trips(tmp_path: Path) -> None:
    from starters.local.catalog import CATALOG_FILE, load_local_catalog

    (tmp_path / CATALOG_FILE).write_text(json.dumps(CATALOG.model_dump()))

    assert load_local_catalog(tmp_path) == CATALOG
