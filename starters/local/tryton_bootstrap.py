"""Bootstrap the local Tryton ERP: one SQLite database with everything invoicing needs.

`bootstrap_database` is idempotent (a marker file next to the database says it is done) and
safe when several processes race for it (an `fcntl` lock in the data directory). The slow
parts run in child processes: `trytond-admin` creates the database and activates
`account_invoice`, then this module, run as `python -m starters.local.tryton_bootstrap`, sets
up the company and accounting with proteus. Keeping trytond out of the caller's process
matters because trytond's configuration and pool are process-global.

The books finance maps to (stable codes and names; `ledgerbridge mapping check` lists them
from the ERP's catalog):

- revenue accounts `4000` Subscription revenue, `4100` Add-on and usage revenue, `4200`
  Services revenue, `4900` Refunds and `4910` Support credits (both contra revenue), each
  with an ERP product of the same purpose: `SUBSCRIPTION`, `ADDON`, `SERVICES`, `REFUND`,
  `SUPPORT_CREDIT` (REVENUE_ACCOUNTS, PRODUCTS);
- taxes by name, on their payable accounts (TAXES): "VAT 20%" and "VAT 19%" on `2200`
  EU VAT payable, "UK VAT 20%" on `2210` UK VAT payable, "US sales tax 8.875%" on `2220`
  US sales tax payable;
- currencies USD (the company's), EUR, GBP, JPY (0 decimals) and KWD (3 decimals) with dated
  rates from three years back (RATES); CHF exists without any rate, so a document in it is
  refused for want of one;
- payment journals (type cash) by code with their clearing accounts (PAYMENT_JOURNALS):
  `CARD-USD`/`1150-USD`, `CARD-EUR`/`1150-EUR`, `CARD-GBP`/`1150-GBP`, `CARD-JPY`/`1150-JPY`,
  `CARD-KWD`/`1150-KWD` for card payments and `BANK`/`1100` for money received out of band;
  the receivable is `1200`; exchange differences of a foreign payment go to `7600` / `6600`
  (the configuration's currency exchange accounts, booked by Tryton's reconciliation).

Payments are Tryton's own: a move in the payment journal whose receivable line joins the
invoice's payment lines, reconciled by Tryton's reconcile wizard once nothing remains to pay
(see `TrytonLedger.post_payment`); no statement module is needed. The integration user's
groups (Party Administration, Accounting) may do all of it over RPC.

Bootstrapping takes ~20 s, so tests, the chaos run and `ledgerbridge up` bootstrap a
template once (per trytond version, year and this module's code) and start each fresh home
from a copy (`seed_from_template_cache`, `copy_template`: 0.01 s).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

from adapters.erp.tryton import SERVICE_PRODUCT_CODE

COMPANY_NAME = "ledgerbridge demo company"
COMPANY_CURRENCY = "USD"
SERVICE_PRODUCT_NAME = "Subscription service"
PAYMENT_TERM_NAME = "Direct"
ACCOUNT_CATEGORY_NAME = "Services"
# Groups that let the integration user maintain parties and create, post and credit invoices.
INTEGRATION_GROUPS = ("Party Administration", "Accounting")
DEFAULT_SESSION_TIMEOUT = 300
RECEIVABLE_CODE = "1200"
# code -> (name, kind of account it is like): revenue, tax payable, cash, expense
REVENUE_ACCOUNTS = {
    "4000": "Subscription revenue",
    "4100": "Add-on and usage revenue",
    "4200": "Services revenue",
    "4900": "Refunds (contra revenue)",
    "4910": "Support credits (contra revenue)",
}
# ERP product code -> (name, revenue account code)
PRODUCTS = {
    SERVICE_PRODUCT_CODE: ("Subscription service", "4000"),
    "ADDON": ("Add-ons and usage", "4100"),
    "SERVICES": ("Professional services", "4200"),
    "REFUND": ("Refunds", "4900"),
    "SUPPORT_CREDIT": ("Support credits", "4910"),
}
TAX_PAYABLE_ACCOUNTS = {
    "2200": "EU VAT payable",
    "2210": "UK VAT payable",
    "2220": "US sales tax payable",
}
# Tax name (what finance maps a billing tax rate to) -> (rate, payable account code)
TAXES = {
    "VAT 20%": ("0.20", "2200"),
    "VAT 19%": ("0.19", "2200"),
    "UK VAT 20%": ("0.20", "2210"),
    "US sales tax 8.875%": ("0.08875", "2220"),
}
# code -> (name, digits); the company currency first
CURRENCIES = {
    "USD": ("U.S. Dollar", 2),
    "EUR": ("Euro", 2),
    "GBP": ("Pound Sterling", 2),
    "JPY": ("Yen", 0),
    "KWD": ("Kuwaiti Dinar", 3),
    "CHF": ("Swiss Franc", 2),
}
NO_RATE_CURRENCY = "CHF"
# Units of the currency per USD, from (years after this one, month): a document date picks
# the latest step on or before it. Steps start three years back and reach next year.
RATES = {
    "USD": [((-3, 1), "1")],
    "EUR": [((-3, 1), "0.90"), ((0, 1), "0.92"), ((0, 7), "0.95"), ((1, 1), "0.93")],
    "GBP": [((-3, 1), "0.78"), ((0, 1), "0.80"), ((0, 7), "0.79"), ((1, 1), "0.81")],
    "JPY": [((-3, 1), "140"), ((0, 1), "150"), ((0, 7), "155"), ((1, 1), "148")],
    "KWD": [((-3, 1), "0.305"), ((0, 1), "0.307"), ((1, 1), "0.306")],
}
OUT_OF_BAND_JOURNAL = "BANK"
# journal code -> (journal name, clearing account code, clearing account name)
PAYMENT_JOURNALS = {
    **{
        f"CARD-{code}": (f"Card payments {code}", f"1150-{code}", f"Card clearing {code}")
        for code in ("USD", "EUR", "GBP", "JPY", "KWD")
    },
    OUT_OF_BAND_JOURNAL: ("Bank (out of band)", "1100", "Bank"),
}
EXCHANGE_GAIN_CODE = "7600"
EXCHANGE_LOSS_CODE = "6600"
MARKER_SUFFIX = ".bootstrapped.json"
# Bumped when the books (chart, taxes, currencies, journals) change: a database set up with
# older books is brought up to date in place, its documents kept.
BOOKS_VERSION = 2


def trytond_version() -> str:
    return version("trytond")


def sqlite_path(data_dir: Path, database: str) -> Path:
    """Where trytond keeps the SQLite database named `database` under `[database] path`."""
    return Path(data_dir) / f"{database}.sqlite"


def _marker_path(data_dir: Path, database: str) -> Path:
    return Path(data_dir) / f"{database}{MARKER_SUFFIX}"


def _script(name: str) -> str:
    """A console script of the running interpreter's environment (venv first, then PATH)."""
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed next to {sys.executable} nor on PATH")
    return found


def write_config(
    data_dir: Path,
    *,
    port: int = 8000,
    host: str = "127.0.0.1",
    session_timeout: int = DEFAULT_SESSION_TIMEOUT,
    name: str = "trytond.conf",
) -> Path:
    """Write the trytond configuration serving the SQLite databases of `data_dir`."""
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    conf = data_dir / name
    conf.write_text(
        "\n".join(
            [
                "[database]",
                "uri = sqlite://",
                f"path = {data_dir}",
                "language = en",
                # Never list databases to anonymous callers.
                "list = False",
                "",
                "[web]",
                f"listen = {host}:{port}",
                "",
                "[session]",
                # Idle seconds before a session expires (the adapter re-logs in on 401).
                f"timeout = {session_timeout}",
                "",
            ]
        )
    )
    return conf


def server_command(conf: Path, database: str) -> list[str]:
    """The command that serves `database`; `-d` preloads it, or logins fail on a fresh server."""
    return [_script("trytond"), "-c", str(conf), "-d", database]


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def is_bootstrapped(data_dir: Path, database: str) -> bool:
    """True once a bootstrap finished with the current books. Any trytond version counts: a
    newer trytond upgrades a database with `trytond-admin --all`, it never rebuilds (that
    would lose ERP data); older books are added to in place by `bootstrap_database`."""
    info = _marker(data_dir, database)
    return info is not None and int(info.get("books", 1)) >= BOOKS_VERSION


def _marker(data_dir: Path, database: str) -> dict[str, Any] | None:
    """What the marker of a finished bootstrap says, or None when there is none."""
    marker = _marker_path(data_dir, database)
    if not marker.exists() or not sqlite_path(data_dir, database).exists():
        return None
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and "trytond" in info else None


def bootstrap_database(
    data_dir: Path,
    database: str,
    admin_password: str,
    user: str,
    user_password: str,
) -> Path:
    """Create and set up the ERP database once; returns its SQLite file.

    Skips all work when the marker says it is already bootstrapped (the credentials given
    are then not re-applied). A half-done database (no marker) is removed and rebuilt.
    """
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    db_file = sqlite_path(data_dir, database)
    with _exclusive_lock(data_dir / f".{database}.bootstrap.lock"):
        if is_bootstrapped(data_dir, database):
            return db_file
        earlier = _marker(data_dir, database)
        if earlier is not None:
            _add_current_books(data_dir, database, user, user_password, earlier)
            return db_file
        started = time.monotonic()
        # Marker first: nobody may take a half-removed database for a finished one.
        _marker_path(data_dir, database).unlink(missing_ok=True)
        _remove_database_files(db_file)
        conf = write_config(data_dir, name=f".{database}.bootstrap.conf")
        try:
            _create_database(conf, data_dir, database, admin_password)
            _run_setup(conf, database, user, user_password)
            _checkpoint(db_file)
        except BaseException:
            _remove_database_files(db_file)
            raise
        finally:
            conf.unlink(missing_ok=True)
        _marker_path(data_dir, database).write_text(
            json.dumps(
                {
                    "trytond": trytond_version(),
                    "database": database,
                    "user": user,
                    "company": COMPANY_NAME,
                    "books": BOOKS_VERSION,
                    "bootstrapped_at": dt.datetime.now(dt.UTC).isoformat(),
                    "seconds": round(time.monotonic() - started, 1),
                },
                indent=2,
            )
        )
        return db_file


def _add_current_books(
    data_dir: Path, database: str, user: str, user_password: str, marker: dict[str, Any]
) -> None:
    """Run the (idempotent) setup again on a database bootstrapped with older books: what
    is missing is added, nothing is removed, its documents stay. The ERP server must not be
    serving it meanwhile (the local stack bootstraps before it starts the server)."""
    db_file = sqlite_path(data_dir, database)
    conf = write_config(data_dir, name=f".{database}.bootstrap.conf")
    try:
        _run_setup(conf, database, user, user_password)
        _checkpoint(db_file)
    finally:
        conf.unlink(missing_ok=True)
    marker = {**marker, "books": BOOKS_VERSION,
              "books_added_at": dt.datetime.now(dt.UTC).isoformat()}  # fmt: skip
    _marker_path(data_dir, database).write_text(json.dumps(marker, indent=2))


def template_key(database: str, user: str, user_password: str) -> str:
    """What a cached template depends on: this module's code, the trytond version, the year
    (the fiscal year it opens) and the integration user's credentials (as a digest)."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(f"{trytond_version()}/{dt.date.today().year}/{database}/{user}/".encode())
    digest.update(user_password.encode())
    return digest.hexdigest()[:16]


def seed_from_template_cache(
    cache_root: Path, data_dir: Path, database: str, user: str, user_password: str
) -> Path:
    """Give `data_dir` a bootstrapped `database` copied from a template under `cache_root`,
    bootstrapping that template first if no earlier run left one (the one slow time).
    Returns the template's directory; its admin password is copied with the database."""
    cache = Path(cache_root).resolve() / f"tryton-{template_key(database, user, user_password)}"
    admin_password_file = cache / "admin-password"
    with _exclusive_lock(cache / ".admin-password.lock"):
        if not admin_password_file.exists() or not admin_password_file.read_text().strip():
            # Written whole or not at all: a crash leaves no empty password behind.
            partial = cache / ".admin-password.partial"
            partial.unlink(missing_ok=True)
            partial.touch(mode=0o600)
            partial.write_text(os.urandom(12).hex())
            partial.replace(admin_password_file)
    bootstrap_database(
        cache, database, admin_password_file.read_text().strip(), user, user_password
    )
    copy_template(sqlite_path(cache, database), data_dir, database)
    data_dir = Path(data_dir).resolve()
    shutil.copy(admin_password_file, data_dir / "admin-password")
    marker = _marker_path(cache, database)
    shutil.copy(marker, _marker_path(data_dir, database))
    return cache


def copy_template(template_sqlite: Path, data_dir: Path, database: str) -> Path:
    """Copy a bootstrapped database under a new name in `data_dir`; returns the new file.

    Uses SQLite's backup API so committed pages still in a `-wal` file are carried over,
    and removes stale `-wal`/`-shm` files at the destination (they would corrupt the copy).
    """
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    target = sqlite_path(data_dir, database)
    _remove_database_files(target)
    source = sqlite3.connect(f"file:{Path(template_sqlite).resolve()}?mode=ro", uri=True)
    try:
        destination = sqlite3.connect(target)
        try:
            source.backup(destination)
            destination.execute("PRAGMA journal_mode = DELETE")
        finally:
            destination.close()
    finally:
        source.close()
    return target


def _remove_database_files(db_file: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{db_file}{suffix}").unlink(missing_ok=True)


def _checkpoint(db_file: Path) -> None:
    """Fold the WAL into the main file so the database is one self-contained file."""
    connection = sqlite3.connect(db_file)
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        connection.execute("PRAGMA journal_mode = DELETE")
    finally:
        connection.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{db_file}{suffix}").unlink(missing_ok=True)


def _create_database(conf: Path, data_dir: Path, database: str, admin_password: str) -> None:
    # trytond's SQLite backend only opens existing files; an empty file is a valid database.
    sqlite_path(data_dir, database).touch()
    with tempfile.NamedTemporaryFile("w", dir=data_dir, prefix=".pass-", delete=False) as fh:
        fh.write(admin_password + "\n")
        passfile = Path(fh.name)
    try:
        os.chmod(passfile, 0o600)
        env = {**os.environ, "TRYTONPASSFILE": str(passfile)}
        command = [
            _script("trytond-admin"),
            *("-c", str(conf), "-d", database),
            *("-u", "account_invoice", "--all", "--activate-dependencies"),
        ]
        # An empty line answers the admin e-mail prompt (no e-mail).
        _run(command, env=env, stdin="\n", what="trytond-admin")
    finally:
        passfile.unlink(missing_ok=True)


def _run_setup(conf: Path, database: str, user: str, user_password: str) -> None:
    command = [
        sys.executable,
        "-m",
        "starters.local.tryton_bootstrap",
        "setup",
        "--config",
        str(conf),
        "--database",
        database,
    ]
    # Credentials travel on stdin, never on a command line that `ps` shows.
    payload = json.dumps({"user": user, "user_password": user_password})
    env = dict(os.environ)
    # The child must import our package even when the caller runs from elsewhere.
    project_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [project_root, env.get("PYTHONPATH")]))
    _run(command, env=env, stdin=payload, what="tryton setup")


def _run(command: list[str], *, env: dict[str, str], stdin: str, what: str) -> None:
    result = subprocess.run(
        command, input=stdin, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).splitlines()[-30:])
        raise RuntimeError(f"{what} failed with exit code {result.returncode}:\n{tail}")


# --- what runs inside the setup child process (trytond imported here only) -------------


def setup_company_and_accounting(
    config_file: Path, database: str, user: str, user_password: str
) -> None:
    """Company, chart, fiscal years, sequences, payment term, product and integration user."""
    from proteus import Model
    from proteus import config as proteus_config
    from trytond.modules.account.tests.tools import create_chart, get_accounts
    from trytond.modules.company.tests.tools import create_company, get_company
    from trytond.modules.currency.tests.tools import get_currency

    config = proteus_config.set_trytond(database=database, config_file=str(config_file))

    Party = Model.get("party.party")
    Company = Model.get("company.company")
    if not Company.find([]):
        company_party = Party(name=COMPANY_NAME)
        company_party.save()
        create_company(party=company_party, currency=get_currency(COMPANY_CURRENCY))
    company = get_company()
    config._context = Model.get("res.user").get_preferences(True, {})

    if not get_accounts(company).get("revenue"):
        create_chart(company)
    accounts = get_accounts(company)

    today = dt.date.today()
    for year in (today.year - 1, today.year, today.year + 1):
        _ensure_fiscal_year(company, year)

    payment_term = _ensure_payment_term()
    _ensure_default_payment_term(payment_term)
    chart = _ensure_books_accounts(company, accounts)
    _ensure_products(accounts, chart)
    _ensure_taxes(company, chart)
    _ensure_currencies(today.year)
    _ensure_payment_journals(chart)
    _ensure_exchange_accounts(chart)
    _ensure_integration_user(company, user, user_password)


def _ensure_fiscal_year(company: Any, year: int) -> None:
    from proteus import Model
    from trytond.modules.account.tests.tools import create_fiscalyear

    FiscalYear = Model.get("account.fiscalyear")
    if FiscalYear.find([("name", "=", str(year)), ("company", "=", company.id)]):
        return
    fiscal_year = create_fiscalyear(company, today=(dt.date(year, 1, 1), dt.date(year, 12, 31)))
    sequences = _invoice_sequences(company, year)
    (invoice_sequences,) = fiscal_year.invoice_sequences
    invoice_sequences.out_invoice_sequence = sequences["out_invoice"]
    invoice_sequences.out_credit_note_sequence = sequences["out_credit_note"]
    invoice_sequences.in_invoice_sequence = sequences["in_invoice"]
    invoice_sequences.in_credit_note_sequence = sequences["in_credit_note"]
    fiscal_year.save()
    fiscal_year.click("create_period")


def _invoice_sequences(company: Any, year: int) -> dict[str, Any]:
    from proteus import Model

    SequenceStrict = Model.get("ir.sequence.strict")
    SequenceType = Model.get("ir.sequence.type")
    (sequence_type,) = SequenceType.find([("name", "=", "Invoice")], limit=1)
    prefixes = {
        "out_invoice": f"INV-{year}-",
        "out_credit_note": f"CN-{year}-",
        "in_invoice": f"SUPINV-{year}-",
        "in_credit_note": f"SUPCN-{year}-",
    }
    sequences = {}
    for kind, prefix in prefixes.items():
        sequence = SequenceStrict(
            name=f"{kind.replace('_', ' ')} {year}",
            sequence_type=sequence_type,
            company=company,
            prefix=prefix,
            padding=5,
        )
        sequence.save()
        sequences[kind] = sequence
    return sequences


def _ensure_payment_term() -> Any:
    from proteus import Model
    from trytond.modules.account_invoice.tests.tools import create_payment_term

    PaymentTerm = Model.get("account.invoice.payment_term")
    existing = PaymentTerm.find([("name", "=", PAYMENT_TERM_NAME)])
    if existing:
        return existing[0]
    payment_term = create_payment_term()
    payment_term.save()
    return payment_term


def _ensure_default_payment_term(payment_term: Any) -> None:
    from proteus import Model

    Configuration = Model.get("account.configuration")
    configuration = Configuration(1)
    if getattr(configuration, "default_customer_payment_term", None) is None:
        configuration.default_customer_payment_term = payment_term
        configuration.save()


def _ensure_books_accounts(company: Any, accounts: dict[str, Any]) -> dict[str, Any]:
    """The coded accounts finance maps to, next to the chart's accounts of the same kind;
    returns every account of the books by code."""
    from proteus import Model

    Account = Model.get("account.account")
    receivable = accounts["receivable"]
    if receivable.code != RECEIVABLE_CODE:
        receivable.code = RECEIVABLE_CODE
        receivable.save()
    like = {
        **dict.fromkeys(REVENUE_ACCOUNTS, accounts["revenue"]),
        **dict.fromkeys(TAX_PAYABLE_ACCOUNTS, accounts["payable"]),
        **{clearing: accounts["cash"] for _, clearing, _ in PAYMENT_JOURNALS.values()},
        EXCHANGE_GAIN_CODE: accounts["revenue"],
        EXCHANGE_LOSS_CODE: accounts["expense"],
    }
    names = {
        **REVENUE_ACCOUNTS,
        **TAX_PAYABLE_ACCOUNTS,
        **{clearing: name for _, clearing, name in PAYMENT_JOURNALS.values()},
        EXCHANGE_GAIN_CODE: "Exchange gains",
        EXCHANGE_LOSS_CODE: "Exchange losses",
    }
    chart = {RECEIVABLE_CODE: receivable}
    for code, name in names.items():
        found = Account.find([("code", "=", code), ("company", "=", company.id)])
        if found:
            chart[code] = found[0]
            continue
        model = like[code]
        account = Account(name=name, code=code, type=model.type, parent=model.parent)
        # A tax payable account holds no party's balance (the chart's payable one does).
        account.party_required = False
        account.reconcile = False
        account.save()
        chart[code] = account
    return chart


def _ensure_products(accounts: dict[str, Any], chart: dict[str, Any]) -> None:
    """One service product per revenue account: its category books on that account."""
    from decimal import Decimal

    from proteus import Model

    Product = Model.get("product.product")
    ProductCategory = Model.get("product.category")
    ProductTemplate = Model.get("product.template")
    Uom = Model.get("product.uom")
    (unit,) = Uom.find([("name", "=", "Unit")])
    for code, (name, revenue_code) in PRODUCTS.items():
        existing = Product.find([("code", "=", code)])
        if existing:
            # Books set up before the coded accounts: the category moves to its account.
            category = existing[0].template.account_category
            if category is not None and category.account_revenue != chart[revenue_code]:
                category.account_revenue = chart[revenue_code]
                category.save()
            continue
        category_name = ACCOUNT_CATEGORY_NAME if code == SERVICE_PRODUCT_CODE else name
        category = ProductCategory(name=category_name)
        category.accounting = True
        category.account_revenue = chart[revenue_code]
        category.account_expense = accounts["expense"]
        category.save()

        template = ProductTemplate(name=SERVICE_PRODUCT_NAME if code == SERVICE_PRODUCT_CODE
                                   else name)  # fmt: skip
        template.type = "service"
        template.default_uom = unit
        template.list_price = Decimal("0")
        template.account_category = category
        # The template code is the prefix of the variant's code; one variant, so they match.
        template.code = code
        template.save()


def _ensure_taxes(company: Any, chart: dict[str, Any]) -> None:
    from decimal import Decimal

    from proteus import Model

    Tax = Model.get("account.tax")
    for name, (rate, account_code) in TAXES.items():
        if Tax.find([("name", "=", name), ("company", "=", company.id)]):
            continue
        tax = Tax(name=name, description=name, type="percentage", rate=Decimal(rate))
        tax.company = company
        tax.invoice_account = chart[account_code]
        tax.credit_note_account = chart[account_code]
        tax.save()


def _ensure_currencies(year: int) -> None:
    from decimal import Decimal

    from proteus import Model

    Currency = Model.get("currency.currency")
    Rate = Model.get("currency.currency.rate")
    for code, (name, digits) in CURRENCIES.items():
        found = Currency.find([("code", "=", code)])
        currency = found[0] if found else Currency(code=code)
        currency.name = name
        currency.digits = digits
        currency.rounding = Decimal(1).scaleb(-digits)
        currency.save()
        steps = {
            dt.date(year + years, month, 1): Decimal(rate)
            for (years, month), rate in RATES.get(code, [])
        }
        existing = {rate.date: rate for rate in Rate.find([("currency", "=", currency.id)])}
        if code == NO_RATE_CURRENCY:
            Rate.delete(list(existing.values()))
            continue
        for rate in existing.values():
            if rate.date not in steps:
                rate.delete()
        for date, value in steps.items():
            rate = existing.get(date) or Rate(currency=currency, date=date)
            rate.rate = value
            rate.save()


def _ensure_payment_journals(chart: dict[str, Any]) -> None:
    from proteus import Model

    Journal = Model.get("account.journal")
    for code, (name, _clearing, _) in PAYMENT_JOURNALS.items():
        if Journal.find([("code", "=", code)]):
            continue
        Journal(name=name, code=code, type="cash").save()


def _ensure_exchange_accounts(chart: dict[str, Any]) -> None:
    """Where Tryton books the difference when a foreign payment is reconciled with an
    invoice converted at another date's rate (its own currency exchange journal)."""
    from proteus import Model

    Configuration = Model.get("account.configuration")
    configuration = Configuration(1)
    configuration.currency_exchange_credit_account = chart[EXCHANGE_GAIN_CODE]
    configuration.currency_exchange_debit_account = chart[EXCHANGE_LOSS_CODE]
    configuration.save()


def _ensure_integration_user(company: Any, login: str, password: str) -> None:
    from proteus import Model

    User = Model.get("res.user")
    Group = Model.get("res.group")
    existing = User.find([("login", "=", login)])
    user = existing[0] if existing else User(login=login)
    user.name = "ledgerbridge integration"
    user.password = password
    for group in Group.find([("name", "in", list(INTEGRATION_GROUPS))]):
        if group not in user.groups:
            user.groups.append(group)
    if company not in user.companies:
        user.companies.append(company)
    user.company = company
    user.save()


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Set up a Tryton database for ledgerbridge")
    sub = parser.add_subparsers(dest="command", required=True)
    setup = sub.add_parser("setup", help="company and accounting (reads credentials on stdin)")
    setup.add_argument("--config", type=Path, required=True)
    setup.add_argument("--database", required=True)
    args = parser.parse_args(argv)
    if args.command == "setup":
        credentials = json.loads(sys.stdin.read())
        setup_company_and_accounting(
            args.config, args.database, credentials["user"], credentials["user_password"]
        )
    return 0


if __name__ == "__main__":
    sys.exit(_main())
