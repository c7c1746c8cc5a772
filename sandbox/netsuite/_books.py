"""The sandbox account's books in SQLite, in tables shaped like NetSuite's SuiteQL tables.

Every record the REST record service writes is also a row of these tables (`customer`,
`transaction`, `transactionline`, `previoustransactionlink`...), so SuiteQL reads what the
record service wrote, as in NetSuite. Column names are SuiteQL's (lowercase); booleans are
'T'/'F' as SuiteQL answers them. Two deliberate simplifications, both in docs/netsuite.md:
dates are ISO text (NetSuite formats a raw date column by the user's preference; read dates
through `TO_CHAR(col, 'YYYY-MM-DD')`, which works on both), and amounts are exact decimal
text, summed by whoever reads them.

The chart, items, tax codes and payment methods are those of the local finance mapping
(`starters/local/catalog.py` ERP_BOOKS; a test holds the two together, since the sandbox
imports nothing of the product).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from decimal import Decimal
from pathlib import Path

ACCOUNT_CURRENCIES = ("USD", "EUR", "GBP", "JPY")
CURRENCY_NAMES = {"USD": "US Dollar", "EUR": "Euro", "GBP": "British pound", "JPY": "Yen"}
CURRENCY_PRECISION = {"USD": 2, "EUR": 2, "GBP": 2, "JPY": 0}
# Units of each currency per USD from (years after this one, month) on: the same steps the
# local Tryton books use, so both ERPs convert a document alike.
RATE_STEPS = {
    "USD": [((-3, 1), "1")],
    "EUR": [((-3, 1), "0.90"), ((0, 1), "0.92"), ((0, 7), "0.95"), ((1, 1), "0.93")],
    "GBP": [((-3, 1), "0.78"), ((0, 1), "0.80"), ((0, 7), "0.79"), ((1, 1), "0.81")],
    "JPY": [((-3, 1), "140"), ((0, 1), "150"), ((0, 7), "155"), ((1, 1), "148")],
}
# id -> (name, parent, base currency, country)
SUBSIDIARIES = {1: ("Parent Company (US)", None, "USD", "US"), 2: ("Europe", 1, "EUR", "FR")}
RECEIVABLE_ACCOUNT = "1200"
# acctnumber -> (name, SuiteQL accttype)
ACCOUNTS = {
    "1100": ("Bank", "Bank"),
    **{f"1150-{c}": (f"Card clearing {c}", "Bank") for c in ACCOUNT_CURRENCIES},
    RECEIVABLE_ACCOUNT: ("Accounts Receivable", "AcctRec"),
    "2200": ("EU VAT payable", "OthCurrLiab"),
    "2210": ("UK VAT payable", "OthCurrLiab"),
    "2220": ("US sales tax payable", "OthCurrLiab"),
    "4000": ("Subscription revenue", "Income"),
    "4100": ("Add-on and usage revenue", "Income"),
    "4200": ("Services revenue", "Income"),
    "4900": ("Refunds (contra revenue)", "Income"),
    "4910": ("Support credits (contra revenue)", "Income"),
}
# itemid -> (display name, income account)
ITEMS = {
    "SUBSCRIPTION": ("Subscription service", "4000"),
    "ADDON": ("Add-ons and usage", "4100"),
    "SERVICES": ("Professional services", "4200"),
    "REFUND": ("Refunds", "4900"),
    "SUPPORT_CREDIT": ("Support credits", "4910"),
}
# tax code name -> (rate, payable account)
TAX_CODES = {
    "VAT 20%": ("20.00", "2200"),
    "VAT 19%": ("19.00", "2200"),
    "UK VAT 20%": ("20.00", "2210"),
    "US sales tax 8.875%": ("8.875", "2220"),
}
# payment method name -> the account money received by it is deposited to by default
PAYMENT_METHODS = {**{f"CARD-{c}": f"1150-{c}" for c in ACCOUNT_CURRENCIES}, "BANK": "1100"}

SCHEMA = """
CREATE TABLE subsidiary (id INTEGER PRIMARY KEY, name TEXT, parent INTEGER, currency INTEGER,
    country TEXT, iselimination TEXT DEFAULT 'F', isinactive TEXT DEFAULT 'F');
CREATE TABLE currency (id INTEGER PRIMARY KEY, symbol TEXT UNIQUE, name TEXT,
    currencyprecision INTEGER, isbasecurrency TEXT, isinactive TEXT DEFAULT 'F');
CREATE TABLE currencyrate (id INTEGER PRIMARY KEY, basecurrency INTEGER,
    transactioncurrency INTEGER, exchangerate TEXT, effectivedate TEXT);
CREATE TABLE accountingperiod (id INTEGER PRIMARY KEY, periodname TEXT, startdate TEXT,
    enddate TEXT, isyear TEXT, isquarter TEXT, isadjust TEXT DEFAULT 'F',
    isposting TEXT, closed TEXT DEFAULT 'F', alllocked TEXT DEFAULT 'F',
    arlocked TEXT DEFAULT 'F', aplocked TEXT DEFAULT 'F', parent INTEGER);
CREATE TABLE account (id INTEGER PRIMARY KEY, acctnumber TEXT UNIQUE, acctname TEXT,
    fullname TEXT, accttype TEXT, isinactive TEXT DEFAULT 'F');
CREATE TABLE item (id INTEGER PRIMARY KEY, itemid TEXT UNIQUE, displayname TEXT,
    itemtype TEXT, incomeaccount INTEGER, isinactive TEXT DEFAULT 'F');
CREATE TABLE salestaxitem (id INTEGER PRIMARY KEY, itemid TEXT UNIQUE, name TEXT, rate TEXT,
    taxaccount INTEGER, isinactive TEXT DEFAULT 'F');
CREATE TABLE paymentmethod (id INTEGER PRIMARY KEY, name TEXT UNIQUE, account INTEGER,
    isinactive TEXT DEFAULT 'F');
CREATE TABLE customer (id INTEGER PRIMARY KEY, entityid TEXT, companyname TEXT,
    externalid TEXT UNIQUE, email TEXT, subsidiary INTEGER, currency INTEGER,
    isinactive TEXT DEFAULT 'F', datecreated TEXT, lastmodifieddate TEXT);
CREATE TABLE customercurrencybalance (customer INTEGER, currency INTEGER,
    PRIMARY KEY (customer, currency));
CREATE TABLE "transaction" (id INTEGER PRIMARY KEY, tranid TEXT, type TEXT,
    recordtype TEXT, externalid TEXT, trandate TEXT, postingperiod INTEGER, entity INTEGER,
    subsidiary INTEGER, currency INTEGER, exchangerate TEXT, foreigntotal TEXT,
    foreignamountremaining TEXT, foreignamountunpaid TEXT, status TEXT, memo TEXT,
    posting TEXT DEFAULT 'T', voided TEXT DEFAULT 'F', account INTEGER,
    paymentmethod INTEGER, createddate TEXT, lastmodifieddate TEXT,
    UNIQUE (recordtype, externalid));
CREATE TABLE transactionline (id INTEGER, "transaction" INTEGER, linesequencenumber INTEGER,
    mainline TEXT, taxline TEXT, item INTEGER, account INTEGER, quantity TEXT, rate TEXT,
    foreignamount TEXT, memo TEXT, entity INTEGER, PRIMARY KEY ("transaction", id));
CREATE TABLE previoustransactionlink (previousdoc INTEGER, nextdoc INTEGER, linktype TEXT,
    foreignamount TEXT, linkdate TEXT, PRIMARY KEY (previousdoc, nextdoc));
CREATE VIEW nexttransactionlink AS SELECT previousdoc, nextdoc, linktype, foreignamount,
    linkdate FROM previoustransactionlink;
-- The record service's own copy of what each record was last written with (not SuiteQL's).
CREATE TABLE _record (recordtype TEXT, id INTEGER, body TEXT, PRIMARY KEY (recordtype, id));
"""
# What SuiteQL may read: the tables above, not the record service's own copy.
SUITEQL_TABLES = frozenset({
    "subsidiary", "currency", "currencyrate", "accountingperiod", "account", "item",
    "salestaxitem", "paymentmethod", "customer", "customercurrencybalance", "transaction",
    "transactionline", "previoustransactionlink", "nexttransactionlink",
})  # fmt: skip


def _rate_steps(code: str, year: int) -> list[tuple[dt.date, Decimal]]:
    return sorted((dt.date(year + years, month, 1), Decimal(units))
                  for (years, month), units in RATE_STEPS[code])  # fmt: skip


def _base_per_unit(code: str, base: str, start: dt.date, year: int) -> Decimal:
    """Units of `base` one unit of `code` buys from `start` on (through USD)."""

    def per_usd(currency: str) -> Decimal:
        return [units for on, units in _rate_steps(currency, year) if on <= start][-1]

    return (per_usd(base) / per_usd(code)).quantize(Decimal("0.0000000001"))


def open_books(path: Path | None, today: dt.date) -> sqlite3.Connection:
    """The account's database: created and set up when new, opened as it is otherwise."""
    fresh = path is None or not Path(path).exists()
    connection = sqlite3.connect(
        ":memory:" if path is None else str(path), check_same_thread=False, isolation_level=None
    )
    connection.row_factory = sqlite3.Row
    connection.execute("PRAGMA foreign_keys = ON")
    if fresh:
        connection.executescript("BEGIN;" + SCHEMA + "COMMIT;")
        _set_up(connection, today)
    return connection


def _set_up(db: sqlite3.Connection, today: dt.date) -> None:
    year = today.year
    db.execute("BEGIN")
    currency_ids = {code: index for index, code in enumerate(ACCOUNT_CURRENCIES, start=1)}
    for code, currency_id in currency_ids.items():
        db.execute(
            "INSERT INTO currency (id, symbol, name, currencyprecision, isbasecurrency) "
            "VALUES (?, ?, ?, ?, ?)",
            (currency_id, code, CURRENCY_NAMES[code], CURRENCY_PRECISION[code],
             "T" if code == "USD" else "F"),
        )  # fmt: skip
    for sub_id, (name, parent, base, country) in SUBSIDIARIES.items():
        db.execute(
            "INSERT INTO subsidiary (id, name, parent, currency, country) VALUES (?, ?, ?, ?, ?)",
            (sub_id, name, parent, currency_ids[base], country),
        )
    bases = sorted({base for _, _, base, _ in SUBSIDIARIES.values()})
    for base in bases:
        for code in ACCOUNT_CURRENCIES:
            starts = sorted({on for currency in (code, base)
                             for on, _ in _rate_steps(currency, year)})  # fmt: skip
            for start in starts:
                db.execute(
                    "INSERT INTO currencyrate (basecurrency, transactioncurrency, exchangerate, "
                    "effectivedate) VALUES (?, ?, ?, ?)",
                    (currency_ids[base], currency_ids[code],
                     str(_base_per_unit(code, base, start, year)), start.isoformat()),
                )  # fmt: skip
    for fiscal_year in (year, year + 1):
        cursor = db.execute(
            "INSERT INTO accountingperiod (periodname, startdate, enddate, isyear, isquarter, "
            "isposting) VALUES (?, ?, ?, 'T', 'F', 'F')",
            (f"FY {fiscal_year}", f"{fiscal_year}-01-01", f"{fiscal_year}-12-31"),
        )
        for month in range(1, 13):
            start = dt.date(fiscal_year, month, 1)
            end = (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
            db.execute(
                "INSERT INTO accountingperiod (periodname, startdate, enddate, isyear, "
                "isquarter, isposting, parent) VALUES (?, ?, ?, 'F', 'F', 'T', ?)",
                (start.strftime("%b %Y"), start.isoformat(),
                 (end - dt.timedelta(days=1)).isoformat(), cursor.lastrowid),
            )  # fmt: skip
    account_ids = {}
    for number, (name, kind) in ACCOUNTS.items():
        cursor = db.execute(
            "INSERT INTO account (acctnumber, acctname, fullname, accttype) VALUES (?, ?, ?, ?)",
            (number, name, f"{number} {name}", kind),
        )
        account_ids[number] = cursor.lastrowid
    for itemid, (name, income) in ITEMS.items():
        db.execute(
            "INSERT INTO item (itemid, displayname, itemtype, incomeaccount) "
            "VALUES (?, ?, 'Service', ?)",
            (itemid, name, account_ids[income]),
        )
    for name, (rate, payable) in TAX_CODES.items():
        db.execute(
            "INSERT INTO salestaxitem (itemid, name, rate, taxaccount) VALUES (?, ?, ?, ?)",
            (name, name, rate, account_ids[payable]),
        )
    for name, account in PAYMENT_METHODS.items():
        db.execute(
            "INSERT INTO paymentmethod (name, account) VALUES (?, ?)", (name, account_ids[account])
        )
    db.execute("COMMIT")


__all__ = [
    "ACCOUNTS",
    "ACCOUNT_CURRENCIES",
    "ITEMS",
    "PAYMENT_METHODS",
    "RECEIVABLE_ACCOUNT",
    "SUBSIDIARIES",
    "SUITEQL_TABLES",
    "TAX_CODES",
    "open_books",
]
