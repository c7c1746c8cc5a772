"""`ledgerbridge mapping check`: the mapping held against both catalogues. Billing and the
ERP are small fakes of their ports' `catalog()` (this tests the command and the comparison;
the catalogues themselves are the adapters' contract tests)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from adapters.errors import TransientError
from adapters.mapping_file import render_mapping
from adapters.settings import Settings
from canonical.mapping import (
    CatalogEntry,
    FinanceMapping,
    PaymentJournal,
    ProductAccount,
    TaxAccount,
)
from canonical.mapping_check import check_mapping
from starters.mapping_commands import cmd_mapping

BILLING = [
    CatalogEntry(kind="product", key="prod_platform", name="Platform"),
    CatalogEntry(kind="price", key="price_platform_usd", name="Monthly", parent="prod_platform"),
    CatalogEntry(kind="product", key="prod_seats", name="Seats"),
    CatalogEntry(kind="price", key="price_seats_eur", parent="prod_seats"),
    CatalogEntry(kind="tax_rate", key="txr_eu_vat", name="VAT 20% (excl.)"),
    CatalogEntry(kind="currency", key="USD"),
    CatalogEntry(kind="currency", key="EUR"),
]
ERP = [
    CatalogEntry(kind="product", key="SUBSCRIPTION", name="Subscription"),
    CatalogEntry(kind="product", key="REFUND", name="Refund"),
    CatalogEntry(kind="account", key="4000", name="Subscriptions"),
    CatalogEntry(kind="account", key="4900", name="Refunds"),
    CatalogEntry(kind="product", key="SUPPORT_CREDIT", name="Support credit"),
    CatalogEntry(kind="account", key="4910", name="Support credits"),
    CatalogEntry(kind="account", key="1110", name="Stripe USD clearing"),
    CatalogEntry(kind="account", key="1120", name="Stripe EUR clearing"),
    CatalogEntry(kind="tax", key="7", name="VAT 20%"),
    CatalogEntry(kind="journal", key="STRIPE-USD", name="Stripe USD"),
    CatalogEntry(kind="journal", key="STRIPE-EUR", name="Stripe EUR"),
    CatalogEntry(kind="currency", key="USD"),
    CatalogEntry(kind="currency", key="EUR"),
]
SUBSCRIPTION = ProductAccount(erp_product="SUBSCRIPTION", revenue_account="4000")
COMPLETE = FinanceMapping(
    version=3,
    currencies=["USD", "EUR"],
    products={"prod_platform": SUBSCRIPTION, "prod_seats": SUBSCRIPTION},
    tax_rates={"txr_eu_vat": TaxAccount(erp_tax="VAT 20%")},
    payments={
        "*/USD": PaymentJournal(journal="STRIPE-USD", clearing_account="1110"),
        "*/EUR": PaymentJournal(journal="STRIPE-EUR", clearing_account="1120"),
    },
    refunds=ProductAccount(erp_product="REFUND", revenue_account="4900"),
    support_credits=ProductAccount(erp_product="SUPPORT_CREDIT", revenue_account="4910"),
)


class FakeCatalog:
    def __init__(self, entries: list[CatalogEntry], error: Exception | None = None) -> None:
        self.entries, self.error, self.closed = entries, error, False

    async def catalog(self) -> list[CatalogEntry]:
        if self.error is not None:
            raise self.error
        return self.entries

    async def aclose(self) -> None:
        self.closed = True


def run(
    tmp_path: Path,
    mapping: FinanceMapping | str | None,
    *,
    as_json: bool = False,
    billing: FakeCatalog | None = None,
) -> tuple[int, FakeCatalog, FakeCatalog]:
    path = tmp_path / "finance-mapping.toml"
    if isinstance(mapping, FinanceMapping):
        path.write_text(render_mapping(mapping))
    elif isinstance(mapping, str):
        path.write_text(mapping)
    billing = billing or FakeCatalog(BILLING)
    erp = FakeCatalog(ERP)
    systems: Any = lambda _settings: (billing, erp)  # noqa: E731
    args = argparse.Namespace(file=None, json=as_json)
    code = cmd_mapping(args, Settings(home=tmp_path), systems)
    return code, billing, erp


def test_a_complete_mapping_is_clean_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, billing, erp = run(tmp_path, COMPLETE)

    assert code == 0
    assert "clean" in capsys.readouterr().out
    assert billing.closed and erp.closed


def test_what_billing_bills_without_an_entry_is_listed_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    partial = COMPLETE.model_copy(
        update={
            "currencies": ["USD"],
            "products": {"price_seats_eur": SUBSCRIPTION},
            "tax_rates": {},
            "payments": {"card/USD": COMPLETE.payments["*/USD"]},
            "refunds": None,
            "support_credits": None,
        }
    )

    code, _, _ = run(tmp_path, partial, as_json=True)

    assert code == 1
    report = json.loads(capsys.readouterr().out)
    unmapped = {(f["kind"], f["key"]) for f in report["unmapped"]}
    assert unmapped == {
        ("product", "prod_platform"),  # nor its price
        # Its one price is mapped, but a credit netting two prices names only the product.
        ("product", "prod_seats"),
        ("tax_rate", "txr_eu_vat"),
        ("currency", "EUR"),
        ("payment", "out_of_band/USD"),
        ("payment", "card/EUR"),
        ("payment", "out_of_band/EUR"),
        ("refunds", "refunds"),
        ("support_credits", "support_credits"),
    }
    assert report["clean"] is False
    assert report["missing_in_erp"] == []


def test_entries_naming_what_the_erp_lacks_are_listed_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = COMPLETE.model_copy(
        update={
            "products": {
                "prod_platform": ProductAccount(erp_product="SUBSCRIPTION", revenue_account="4001"),
                "prod_seats": SUBSCRIPTION,
            },
            "tax_rates": {"txr_eu_vat": TaxAccount(erp_tax="VAT 19%")},
            "currencies": ["USD", "EUR", "GBP"],
        }
    )

    code, _, _ = run(tmp_path, wrong)

    out = capsys.readouterr().out
    assert code == 1
    assert "the ERP has no account '4001' (named by products.prod_platform)" in out
    assert "the ERP has no tax 'VAT 19%'" in out
    assert "the ERP has no currency 'GBP'" in out


def test_an_erp_entry_made_inactive_counts_as_missing() -> None:
    erp = [e if e.key != "STRIPE-EUR" else e.model_copy(update={"active": False}) for e in ERP]

    report = check_mapping(COMPLETE, BILLING, erp)

    assert [(f.kind, f.key) for f in report.missing_in_erp] == [("journal", "STRIPE-EUR")]
    assert "inactive" in report.missing_in_erp[0].detail


def test_entries_for_ids_billing_does_not_know_are_warnings_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = COMPLETE.model_copy(
        update={
            "products": {**COMPLETE.products, "prod_typo": SUBSCRIPTION},
            "tax_rates": {**COMPLETE.tax_rates, "txr_gone": TaxAccount(erp_tax="VAT 20%")},
        }
    )

    code, _, _ = run(tmp_path, extra)

    out = capsys.readouterr().out
    assert code == 0
    assert "billing has no product or price prod_typo" in out
    assert "billing has no tax rate txr_gone" in out
    assert "2 warning(s)" in out


def test_a_missing_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = run(tmp_path, None)

    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert "finance-mapping.toml does not exist" in err


def test_an_invalid_file_names_the_bad_key_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = run(tmp_path, 'version = 1\n[products.prod_x]\nerp_prodcut = "X"\n')

    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert "is invalid" in err and "erp_prodcut" in err


def test_a_system_that_does_not_answer_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    down = FakeCatalog([], TransientError("cannot reach billing", system="billing",
                                          operation="catalog"))  # fmt: skip

    code, _, erp = run(tmp_path, COMPLETE, billing=down)

    err = capsys.readouterr().err
    assert code == 2
    assert "billing did not give its catalogue (catalog): cannot reach billing" in err
    assert down.closed and erp.closed
