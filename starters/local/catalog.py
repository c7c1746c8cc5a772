"""The local stack's catalogue: what billing sells and taxes, and finance's mapping of it to
the ERP's books, so that the demo and the chaos run post to the right accounts.

`ledgerbridge up` calls `ensure_local_catalog` once billing is up: it makes sure billing has
the products (Stripe lets an admin choose a product's id: stable ones, so a restart finds
them) and the tax rates (Stripe chooses their ids: each carries its local key in metadata
and is found by it), writes `finance-mapping.toml` under the home naming the ERP's products,
accounts, taxes and journals (ERP_BOOKS: what `starters/local/tryton_bootstrap.py` creates),
and `local-catalog.json` with the billing ids the demo and the chaos run sell with. Run again
on a stack that has them, it creates nothing and keeps the mapping file, unless that file
no longer covers the catalogue (then it writes the whole mapping again, one version up).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import stripe
from pydantic import BaseModel

from adapters.billing.stripe import STRIPE_API_VERSION
from adapters.mapping_file import MappingFileError, load_mapping, render_mapping
from adapters.settings import Settings
from canonical.mapping import FinanceMapping, PaymentJournal, ProductAccount, TaxAccount

if TYPE_CHECKING:
    from stripe.params import TaxRateCreateParams

CATALOG_FILE = "local-catalog.json"
# Metadata key naming a tax rate's place in this catalogue (its id is Stripe's choice).
LOCAL_KEY_METADATA = "ledgerbridge_local_key"
# The currencies the local ERP books (each has a rate there) and so the local stack's
# LEDGERBRIDGE_LEDGER_CURRENCIES.
LOCAL_CURRENCIES = ("USD", "EUR", "GBP", "JPY")


@dataclass(frozen=True)
class ErpBooks:
    """The ERP's names the local mapping uses, in one table: product code and revenue
    account code per kind of revenue, tax names, payment journal and clearing account codes.
    They must be what `starters/local/tryton_bootstrap.py` creates; `ledgerbridge mapping
    check` tells when they are not."""

    revenue: Mapping[str, tuple[str, str]]
    refunds: tuple[str, str]
    support_credits: tuple[str, str]
    taxes: Mapping[str, str]
    card_journals: Mapping[str, tuple[str, str]]
    out_of_band_journal: tuple[str, str]


ERP_BOOKS = ErpBooks(
    # kind of revenue -> (ERP product code, revenue account code)
    revenue={
        "subscriptions": ("SUBSCRIPTION", "4000"),
        "add_ons": ("ADDON", "4100"),
        "services": ("SERVICES", "4200"),
    },
    refunds=("REFUND", "4900"),
    # credits support grants (case-to-credit): their own contra-revenue account
    support_credits=("SUPPORT_CREDIT", "4910"),
    # local tax key -> ERP tax name (the tax names its payable account)
    taxes={
        "eu_vat_20": "VAT 20%",
        "uk_vat_20": "UK VAT 20%",
        "us_ny_sales_8875": "US sales tax 8.875%",
    },
    # currency -> (card payment journal code, its clearing account code)
    card_journals={c: (f"CARD-{c}", f"1150-{c}") for c in LOCAL_CURRENCIES},
    # money received outside billing, any currency: (journal code, bank account code)
    out_of_band_journal=("BANK", "1100"),
)


@dataclass(frozen=True)
class LocalProduct:
    product_id: str
    name: str
    revenue: str  # a key of ERP_BOOKS.revenue


@dataclass(frozen=True)
class LocalTaxRate:
    key: str  # a key of ERP_BOOKS.taxes
    display_name: str
    percentage: Decimal
    inclusive: bool
    jurisdiction: str
    country: str
    state: str | None = None


PRODUCTS = (
    LocalProduct("prod_lb_platform", "Platform subscription", "subscriptions"),
    LocalProduct("prod_lb_seats", "Additional seats", "add_ons"),
    LocalProduct("prod_lb_support", "Premium support", "services"),
)
TAX_RATES = (
    LocalTaxRate("eu_vat_20", "VAT", Decimal("20"), False, "EU", "FR"),
    LocalTaxRate("uk_vat_20", "VAT", Decimal("20"), True, "GB", "GB"),
    LocalTaxRate("us_ny_sales_8875", "Sales tax", Decimal("8.875"), False, "US - NY", "US", "NY"),
)


class LocalCatalog(BaseModel):
    """Billing's ids of the local catalogue: products by id, tax rate ids by local key."""

    products: list[str]
    tax_rates: dict[str, str]


class CatalogError(RuntimeError):
    """Billing refused the catalogue, or the mapping file could not be written."""


def local_mapping(tax_rate_ids: Mapping[str, str], version: int = 1) -> FinanceMapping:
    """Finance's mapping of the local catalogue (tax rate ids by local key) to ERP_BOOKS."""
    bank_journal, bank_account = ERP_BOOKS.out_of_band_journal
    payments = {}
    for currency in LOCAL_CURRENCIES:
        journal, clearing = ERP_BOOKS.card_journals[currency]
        payments[f"card/{currency}"] = PaymentJournal(journal=journal, clearing_account=clearing)
        payments[f"out_of_band/{currency}"] = PaymentJournal(
            journal=bank_journal, clearing_account=bank_account
        )
    return FinanceMapping(
        version=version,
        currencies=list(LOCAL_CURRENCIES),
        products={
            p.product_id: ProductAccount(
                erp_product=ERP_BOOKS.revenue[p.revenue][0],
                revenue_account=ERP_BOOKS.revenue[p.revenue][1],
            )
            for p in PRODUCTS
        },
        tax_rates={
            rate_id: TaxAccount(erp_tax=ERP_BOOKS.taxes[key])
            for key, rate_id in sorted(tax_rate_ids.items())
        },
        payments=payments,
        refunds=ProductAccount(
            erp_product=ERP_BOOKS.refunds[0], revenue_account=ERP_BOOKS.refunds[1]
        ),
        support_credits=ProductAccount(
            erp_product=ERP_BOOKS.support_credits[0],
            revenue_account=ERP_BOOKS.support_credits[1],
        ),
    )


async def ensure_billing_catalog(client: stripe.StripeClient) -> LocalCatalog:
    """The products and tax rates in billing, created where absent (idempotent: products by
    their chosen id, tax rates by their local key; every write with its Idempotency-Key).
    A tax rate found by its key but no longer as this catalogue says (another percentage,
    archived) is refused: Stripe never changes a rate's percentage, and guessing which rate
    the mapping means would book tax wrongly."""
    for product in PRODUCTS:
        try:
            await client.v1.products.retrieve_async(product.product_id)
        except stripe.InvalidRequestError as err:
            if err.http_status != 404:
                raise
            await client.v1.products.create_async(
                params={"id": product.product_id, "name": product.name},
                options={"idempotency_key": f"local-catalog/product/{product.product_id}"},
            )
    found: dict[str, dict[str, Any]] = {}
    page = await client.v1.tax_rates.list_async(params={"limit": 100})
    async for rate in page.auto_paging_iter():
        data = rate.to_dict(for_json=True)
        key = (data.get("metadata") or {}).get(LOCAL_KEY_METADATA)
        if key and key not in found:
            found[str(key)] = data
    rate_ids = {}
    for wanted in TAX_RATES:
        existing = found.get(wanted.key)
        if existing is None:
            params: TaxRateCreateParams = {
                "display_name": wanted.display_name,
                # The SDK types it as a number; 8.875 is sent as "8.875".
                "percentage": float(wanted.percentage),
                "inclusive": wanted.inclusive,
                "jurisdiction": wanted.jurisdiction,
                "country": wanted.country,
                "metadata": {LOCAL_KEY_METADATA: wanted.key},
            }
            if wanted.state:
                params["state"] = wanted.state
            created = await client.v1.tax_rates.create_async(
                params=params,
                options={"idempotency_key": f"local-catalog/tax-rate/{wanted.key}"},
            )
            rate_ids[wanted.key] = created.id
            continue
        as_billed = (Decimal(str(existing["percentage"])), bool(existing["inclusive"]),
                     bool(existing["active"]))  # fmt: skip
        if as_billed != (wanted.percentage, wanted.inclusive, True):
            raise CatalogError(
                f"billing's tax rate {existing['id']} ({wanted.key}) is {as_billed[0]}% "
                f"inclusive={as_billed[1]} active={as_billed[2]}; the local catalogue wants "
                f"{wanted.percentage}% inclusive={wanted.inclusive}: remove the home's billing "
                "state or the rate's metadata"
            )
        rate_ids[wanted.key] = str(existing["id"])
    return LocalCatalog(products=[p.product_id for p in PRODUCTS], tax_rates=rate_ids)


def write_mapping(path: Path, catalog: LocalCatalog) -> str:
    """Finance's mapping of the catalogue in `path`: written when absent, kept when it covers
    every product and tax rate of the catalogue (finance may have changed it), else written
    again one version up. What was done, in a few words."""
    wanted = local_mapping(catalog.tax_rates)
    try:
        current = load_mapping(path)
    except MappingFileError:
        current = None
    if current is not None:
        covers = (
            set(wanted.products) <= set(current.products)
            and set(wanted.tax_rates) <= set(current.tax_rates)
            and set(wanted.payments) <= set(current.payments)
            and set(wanted.currencies) <= set(current.currencies)
            and current.refunds is not None
            and current.support_credits is not None
        )
        if covers:
            return f"kept {path.name} (version {current.version})"
        wanted = wanted.model_copy(update={"version": current.version + 1})
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(render_mapping(wanted), encoding="utf-8")
    partial.replace(path)  # whole or not at all: a worker may read it at any moment
    return f"wrote {path.name} (version {wanted.version})"


def load_local_catalog(home: Path) -> LocalCatalog:
    """The billing ids `ledgerbridge up` left under `home` (the demo and the chaos run sell
    with them)."""
    return LocalCatalog.model_validate_json((home / CATALOG_FILE).read_text(encoding="utf-8"))


async def ensure_local_catalog(
    settings: Settings, echo: Callable[[str], None] = print
) -> LocalCatalog:
    """Billing's catalogue, the mapping file and `local-catalog.json`, as the module says."""
    http = stripe.HTTPXClient(timeout=10.0)
    client = stripe.StripeClient(
        settings.billing_api_key.get_secret_value(),
        base_addresses={"api": settings.billing_url},
        stripe_version=STRIPE_API_VERSION,
        max_network_retries=2,  # a local server just started; the writes carry their keys
        http_client=http,
    )
    try:
        catalog = await ensure_billing_catalog(client)
    except stripe.StripeError as err:
        raise CatalogError(
            f"billing refused the local catalogue: {err.user_message or err}"
        ) from err
    finally:
        await http.close_async()
    done = write_mapping(settings.resolved_finance_mapping(), catalog)
    home = settings.home.resolve()
    (home / CATALOG_FILE).write_text(json.dumps(catalog.model_dump(), indent=2) + "\n")
    echo(f"catalog: products {', '.join(catalog.products)}; tax rates "
         f"{', '.join(f'{k}={v}' for k, v in catalog.tax_rates.items())}; {done}")  # fmt: skip
    return catalog


__all__ = [
    "CATALOG_FILE",
    "ERP_BOOKS",
    "LOCAL_CURRENCIES",
    "PRODUCTS",
    "TAX_RATES",
    "CatalogError",
    "LocalCatalog",
    "ensure_local_catalog",
    "load_local_catalog",
    "local_mapping",
]
