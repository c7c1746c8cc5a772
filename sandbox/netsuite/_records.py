"""The record service (`record/v1`): customers and the four receivable transactions.

What it follows (NetSuite Help Center, SuiteTalk REST Web Services):
- create is `POST /record/v1/{type}`, answered 204 with the new record's URL in `Location`
  ("Creating a Record Instance");
- a record is addressed by internal id or by `eid:{externalId}` ("Using External IDs"), and
  `PUT /{type}/eid:{externalId}` creates it when absent and updates it otherwise
  ("Using the Upsert Operation"); PUT with an internal id is no upsert and is refused;
- `PATCH /{type}/{id}` updates the fields it names; sublist lines are added or updated
  (an `apply` line by its `doc`), replaced only for the sublists `?replace=` names
  ("Updating a Record Instance");
- references read `{"id", "refName", "links"}`; sublists are collapsed to their link unless
  `?expandSubResources=true` ("Getting a Record Instance", "Accessing Subresources");
- errors are NetSuite's bodies (`_http.py`).

Accounting rules the sandbox enforces, as a NetSuite account with A/R does: a transaction
posts in the accounting period of its `tranDate` and is refused when that period is closed
or A/R-locked, or when none covers the date; a posted transaction in a closed period cannot
be edited; the currency must be one of the customer's and have a rate to the subsidiary's
base currency on the date; an `apply` line may apply no more than remains due on its
document, and a payment or credit no more than it holds.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sandbox.netsuite._books import RECEIVABLE_ACCOUNT
from sandbox.netsuite._http import (
    NetSuiteError,
    dumps,
    invalid_content,
    loads,
    nonexistent,
    user_error,
)

EID_PREFIX = "eid:"


@dataclass(frozen=True)
class TransactionKind:
    record: str  # the REST record type
    recordtype: str  # SuiteQL's transaction.recordtype
    type: str  # SuiteQL's transaction.type
    prefix: str  # of the tranId the account numbers it with
    ar_sign: int  # +1 when it raises what the customer owes, -1 when it lowers it
    has_lines: bool
    applies_to: str | None  # the SuiteQL type its `apply` lines may name
    # (SuiteQL's status letter, the record service's status id, its name)
    open_status: tuple[str, str, str]
    closed_status: tuple[str, str, str]


TRANSACTIONS = {
    kind.record: kind
    for kind in (
        TransactionKind("invoice", "invoice", "CustInvc", "INV", 1, True, None,
                        ("A", "open", "Open"), ("B", "paidInFull", "Paid In Full")),
        TransactionKind("creditMemo", "creditmemo", "CustCred", "CM", -1, True, "CustInvc",
                        ("A", "open", "Open"), ("B", "fullyApplied", "Fully Applied")),
        TransactionKind("customerPayment", "customerpayment", "CustPymt", "PYMT", -1, False,
                        "CustInvc", ("B", "notDeposited", "Not Deposited"),
                        ("B", "notDeposited", "Not Deposited")),
        TransactionKind("customerRefund", "customerrefund", "CustRfnd", "RFND", 1, False,
                        "CustCred", ("A", "issued", "Issued"), ("A", "issued", "Issued")),
    )
}  # fmt: skip
RECORD_TYPES = ("customer", *TRANSACTIONS)
SUBLISTS = {"customer": ("currencyList",), "invoice": ("item", "taxDetails"),
            "creditMemo": ("item", "taxDetails", "apply"), "customerPayment": ("apply",),
            "customerRefund": ("apply",)}  # fmt: skip
CUSTOMER_FIELDS = frozenset({"externalId", "entityId", "companyName", "email", "subsidiary",
                             "currency", "currencyList", "isInactive"})  # fmt: skip
TRANSACTION_FIELDS = frozenset({"externalId", "entity", "currency", "tranDate", "memo",
                                "subsidiary", "item", "taxDetailsOverride", "taxDetails",
                                "apply", "payment", "account", "paymentMethod",
                                "otherRefNum"})  # fmt: skip


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- reading request values -------------------------------------------------------------


def _ref(value: Any, path: str) -> int:
    """A record reference `{"id": "42"}` as its internal id."""
    ident = value.get("id") if isinstance(value, dict) else None
    try:
        if isinstance(ident, bool) or ident is None:
            raise ValueError(ident)
        return int(str(ident))
    except ValueError:
        raise invalid_content(
            f"You have entered an Invalid Field Value {value!r} for the following field: "
            f"{path.rsplit('.', 1)[-1]}",
            path=path,
        ) from None


def _amount(value: Any, path: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise invalid_content(
            f"You have entered an Invalid Field Value {value!r} for the following field: "
            f"{path.rsplit('.', 1)[-1]}",
            path=path,
        )
    return Decimal(value)


def _lines(value: Any, path: str) -> list[dict[str, Any]]:
    items = value.get("items") if isinstance(value, dict) else None
    if not isinstance(items, list) or not all(isinstance(line, dict) for line in items):
        raise invalid_content(f"The sublist {path} must be an object with an items array",
                              path=path)  # fmt: skip
    return list(items)


def _date(value: Any, path: str) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise invalid_content(
            f"You have entered an Invalid Field Value {value!r} for the following field: {path}",
            path=path,
        ) from None


def _unknown_fields(body: Mapping[str, Any], known: frozenset[str]) -> None:
    unknown = sorted(set(body) - known)
    if unknown:
        raise NetSuiteError(
            400,
            "INVALID_CONTENT",
            f"Error while accessing resource: Invalid field name(s): {', '.join(unknown)}",
            path=unknown[0],
        )


# --- the books ---------------------------------------------------------------------------


class Books:
    """The record service over one account's SQLite books (single-threaded: the event loop)."""

    def __init__(self, db: sqlite3.Connection, base_url: str = "") -> None:
        self.db = db
        self.base_url = base_url

    @contextmanager
    def _write(self) -> Iterator[None]:
        """All of a write or none of it (a refusal leaves the books as they were)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _one(self, sql: str, *args: Any) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.db.execute(sql, args).fetchone()
        return row

    # --- keys ----------------------------------------------------------------------------

    def find(self, record: str, key: str) -> int | None:
        """The internal id `key` names (an id or `eid:...`), None when there is none."""
        if record == "customer":
            sql, kind = "SELECT id FROM customer WHERE {} = ? AND ? IS NULL", None
        else:
            sql = 'SELECT id FROM "transaction" WHERE {} = ? AND recordtype = ?'
            kind = TRANSACTIONS[record].recordtype
        if key.startswith(EID_PREFIX):
            row = self._one(sql.format("externalid"), key[len(EID_PREFIX) :], kind)
        elif key.isdigit():
            row = self._one(sql.format("id"), int(key), kind)
        else:
            raise NetSuiteError(
                400, "INVALID_ID", f"The record instance ID {key!r} is not valid: use an internal "
                "ID or eid:{externalId}.")  # fmt: skip
        return int(row["id"]) if row else None

    def require(self, record: str, key: str) -> int:
        found = self.find(record, key)
        if found is None:
            raise nonexistent(record, key)
        return found

    # --- writes ------------------------------------------------------------------------------

    def create(self, record: str, body: dict[str, Any]) -> int:
        external = body.get("externalId")
        if external is not None and self.find(record, EID_PREFIX + str(external)) is not None:
            raise user_error(f"A {record} record with external ID {external} already exists.")
        return self._save(record, None, body)

    def upsert(self, record: str, key: str, body: dict[str, Any]) -> int:
        if not key.startswith(EID_PREFIX):
            raise NetSuiteError(
                400, "INVALID_PARAMETER", "The upsert operation (PUT) needs an external ID in "
                "the URL: /{type}/eid:{externalId}.")  # fmt: skip
        external = key[len(EID_PREFIX) :]
        if "externalId" in body and str(body["externalId"]) != external:
            raise invalid_content("The externalId in the body differs from the one in the URL",
                                  path="externalId")  # fmt: skip
        existing = self.find(record, key)
        return self._save(record, existing, {**body, "externalId": external})

    def update(self, record: str, key: str, body: dict[str, Any], replace: set[str]) -> int:
        return self._save(record, self.require(record, key), body, replace)

    def _save(
        self,
        record: str,
        existing: int | None,
        body: dict[str, Any],
        replace: set[str] | None = None,
    ) -> int:
        known = CUSTOMER_FIELDS if record == "customer" else TRANSACTION_FIELDS
        _unknown_fields(body, known)
        merged = body if existing is None else self._merged(record, existing, body, replace)
        with self._write():
            if record == "customer":
                return self._save_customer(existing, merged)
            return self._save_transaction(TRANSACTIONS[record], existing, merged)

    def _merged(
        self, record: str, existing: int, body: dict[str, Any], replace: set[str] | None
    ) -> dict[str, Any]:
        """What a record holds after an update: the body's fields over the stored ones, its
        sublist lines added to (or, for `replace`d sublists, instead of) the stored lines."""
        stored = self._stored(record, existing)
        merged = {**stored, **body}
        for sublist in SUBLISTS[record]:
            if sublist not in body or sublist in (replace or set()) or sublist not in stored:
                continue
            old, new = _lines(stored[sublist], sublist), _lines(body[sublist], sublist)
            if sublist == "apply":
                by_doc = {_doc_key(line): line for line in old}
                for line in new:
                    by_doc[_doc_key(line)] = line
                merged[sublist] = {"items": list(by_doc.values())}
            else:
                merged[sublist] = {"items": [*old, *new]}
        return merged

    def _stored(self, record: str, record_id: int) -> dict[str, Any]:
        row = self._one("SELECT body FROM _record WHERE recordtype = ? AND id = ?",
                        record, record_id)  # fmt: skip
        return _from_json(row["body"]) if row else {}

    def _keep(self, record: str, record_id: int, body: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO _record (recordtype, id, body) VALUES (?, ?, ?)",
            (record, record_id, dumps(body)),
        )

    # --- customers -----------------------------------------------------------------------

    def _save_customer(self, existing: int | None, body: dict[str, Any]) -> int:
        name = body.get("companyName")
        if not isinstance(name, str) or not name.strip():
            raise user_error("Please enter value(s) for: Company Name", path="companyName")
        subsidiary = _ref(body.get("subsidiary", {"id": "1"}), "subsidiary")
        sub = self._one("SELECT currency FROM subsidiary WHERE id = ?", subsidiary)
        if sub is None:
            raise invalid_content(f"Invalid subsidiary reference key {subsidiary}.",
                                  path="subsidiary")  # fmt: skip
        currency = _ref(body["currency"], "currency") if "currency" in body else sub["currency"]
        currencies = {currency}
        for index, line in enumerate(_lines(body.get("currencyList", {"items": []}),
                                            "currencyList")):  # fmt: skip
            currencies.add(_ref(line.get("currency"), f"currencyList.items[{index}].currency"))
        for currency_id in currencies:
            if self._one("SELECT id FROM currency WHERE id = ?", currency_id) is None:
                raise invalid_content(f"Invalid currency reference key {currency_id}.",
                                      path="currency")  # fmt: skip
        now = now_iso()
        values = (body.get("entityId") or body.get("externalId") or name, name,
                  body.get("externalId"), body.get("email"), subsidiary, currency,
                  "T" if body.get("isInactive") else "F", now)  # fmt: skip
        if existing is None:
            cursor = self.db.execute(
                "INSERT INTO customer (entityid, companyname, externalid, email, subsidiary, "
                "currency, isinactive, lastmodifieddate, datecreated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*values, now),
            )
            customer_id = int(cursor.lastrowid or 0)
        else:
            customer_id = existing
            self.db.execute(
                "UPDATE customer SET entityid = ?, companyname = ?, externalid = ?, email = ?, "
                "subsidiary = ?, currency = ?, isinactive = ?, lastmodifieddate = ? WHERE id = ?",
                (*values, customer_id),
            )
        for currency_id in currencies:
            self.db.execute(
                "INSERT OR IGNORE INTO customercurrencybalance (customer, currency) VALUES (?, ?)",
                (customer_id, currency_id),
            )
        self._keep("customer", customer_id, body)
        return customer_id

    # --- transactions ----------------------------------------------------------------------

    def _save_transaction(
        self, kind: TransactionKind, existing: int | None, body: dict[str, Any]
    ) -> int:
        if existing is not None:
            self._refuse_in_closed_period(existing)
        entity = _ref(body.get("entity"), "entity")
        customer = self._one("SELECT * FROM customer WHERE id = ?", entity)
        if customer is None:
            raise invalid_content(f"Invalid entity reference key {entity}.", path="entity")
        currency = (
            _ref(body["currency"], "currency") if "currency" in body else customer["currency"]
        )
        if self._one("SELECT 1 FROM customercurrencybalance WHERE customer = ? AND currency = ?",
                     entity, currency) is None:  # fmt: skip
            raise invalid_content(f"Invalid currency reference key {currency} for this customer.",
                                  path="currency")  # fmt: skip
        subsidiary = _ref(body.get("subsidiary", {"id": customer["subsidiary"]}), "subsidiary")
        if subsidiary != customer["subsidiary"]:
            raise invalid_content("The subsidiary is not the customer's.", path="subsidiary")
        tran_date = _date(body.get("tranDate", dt.date.today().isoformat()), "tranDate")
        period = self._open_period(tran_date)
        rate = self._rate(currency, subsidiary, tran_date)
        currency_row = self._one("SELECT currencyprecision FROM currency WHERE id = ?", currency)
        precision = int(currency_row["currencyprecision"]) if currency_row else 2
        lines, total = self._money_lines(kind, body, precision)
        account, method = self._deposit(kind, body)
        now = now_iso()
        header = (kind.type, kind.recordtype, body.get("externalId"), tran_date.isoformat(),
                  period, entity, subsidiary, currency, str(rate), str(kind.ar_sign * total),
                  body.get("memo"), account, method, now)  # fmt: skip
        if existing is None:
            cursor = self.db.execute(
                'INSERT INTO "transaction" (type, recordtype, externalid, trandate, postingperiod,'
                " entity, subsidiary, currency, exchangerate, foreigntotal, memo, account,"
                " paymentmethod, lastmodifieddate, createddate) VALUES"
                " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*header, now),
            )
            tx_id = int(cursor.lastrowid or 0)
            self.db.execute('UPDATE "transaction" SET tranid = ? WHERE id = ?',
                            (f"{kind.prefix}{tx_id}", tx_id))  # fmt: skip
        else:
            tx_id = existing
            self.db.execute(
                'UPDATE "transaction" SET type = ?, recordtype = ?, externalid = ?, trandate = ?,'
                " postingperiod = ?, entity = ?, subsidiary = ?, currency = ?, exchangerate = ?,"
                " foreigntotal = ?, memo = ?, account = ?, paymentmethod = ?,"
                " lastmodifieddate = ? WHERE id = ?",
                (*header, tx_id),
            )
            self.db.execute('DELETE FROM transactionline WHERE "transaction" = ?', (tx_id,))
        self._write_lines(kind, tx_id, entity, total, lines)
        touched = self._apply(kind, tx_id, body, entity, currency, total, tran_date)
        if self._used(tx_id) > total:
            raise user_error(f"The total {total} is less than what is already applied to it.")
        for doc in {tx_id, *touched}:
            self._settle(doc)
        self._keep(kind.record, tx_id, body)
        return tx_id

    def _refuse_in_closed_period(self, tx_id: int) -> None:
        row = self._one(
            'SELECT p.periodname, p.closed, p.arlocked, p.alllocked FROM "transaction" t '
            "JOIN accountingperiod p ON p.id = t.postingperiod WHERE t.id = ?",
            tx_id,
        )
        if row is not None and "T" in (row["closed"], row["arlocked"], row["alllocked"]):
            raise user_error(
                f"You cannot edit this transaction: its accounting period {row['periodname']} "
                "is closed."
            )

    def _open_period(self, on: dt.date) -> int:
        row = self._one(
            "SELECT id, periodname, closed, arlocked, alllocked FROM accountingperiod "
            "WHERE isposting = 'T' AND startdate <= ? AND enddate >= ?",
            on.isoformat(),
            on.isoformat(),
        )
        if row is None:
            raise user_error(f"No accounting period covers the date {on.isoformat()}.",
                             path="tranDate")  # fmt: skip
        if "T" in (row["closed"], row["arlocked"], row["alllocked"]):
            raise user_error(
                f"The accounting period {row['periodname']} is closed: you cannot post a "
                f"transaction dated {on.isoformat()} to it.",
                path="tranDate",
            )
        return int(row["id"])

    def _rate(self, currency: int, subsidiary: int, on: dt.date) -> Decimal:
        row = self._one(
            "SELECT r.exchangerate FROM currencyrate r JOIN subsidiary s ON s.currency = "
            "r.basecurrency WHERE s.id = ? AND r.transactioncurrency = ? AND r.effectivedate <= ?"
            " ORDER BY r.effectivedate DESC LIMIT 1",
            subsidiary,
            currency,
            on.isoformat(),
        )
        if row is None:
            raise user_error(f"No exchange rate for currency {currency} on {on.isoformat()}.")
        return Decimal(row["exchangerate"])

    def _money_lines(
        self, kind: TransactionKind, body: dict[str, Any], precision: int
    ) -> tuple[list[tuple[str, int, int, Decimal, str | None]], Decimal]:
        """(taxline 'T'/'F', item, account, amount, memo) per line, and the total."""
        quantum = Decimal(1).scaleb(-precision)
        lines: list[tuple[str, int, int, Decimal, str | None]] = []
        if kind.has_lines:
            items = _lines(body.get("item"), "item")
            if not items:
                raise user_error("You must enter at least one line item for this transaction.",
                                 path="item")  # fmt: skip
            for index, line in enumerate(items):
                path = f"item.items[{index}]"
                item_id = _ref(line.get("item"), f"{path}.item")
                item = self._one("SELECT incomeaccount, isinactive FROM item WHERE id = ?",
                                 item_id)  # fmt: skip
                if item is None or item["isinactive"] == "T":
                    raise invalid_content(f"Invalid item reference key {item_id}.",
                                          path=f"{path}.item")  # fmt: skip
                if "amount" in line:
                    amount = _amount(line["amount"], f"{path}.amount")
                else:
                    amount = _amount(line.get("quantity", 1), f"{path}.quantity") * _amount(
                        line.get("rate"), f"{path}.rate")  # fmt: skip
                amount = amount.quantize(quantum, ROUND_HALF_UP)
                memo = line.get("description")
                lines.append(("F", item_id, int(item["incomeaccount"]), amount, memo))
            taxes = _lines(body.get("taxDetails", {"items": []}), "taxDetails")
            if taxes and body.get("taxDetailsOverride") is not True:
                raise user_error("Tax details can only be entered with taxDetailsOverride.",
                                 path="taxDetails")  # fmt: skip
            for index, tax in enumerate(taxes):
                path = f"taxDetails.items[{index}]"
                code_id = _ref(tax.get("taxCode"), f"{path}.taxCode")
                code = self._one("SELECT taxaccount FROM salestaxitem WHERE id = ? AND "
                                 "isinactive = 'F'", code_id)  # fmt: skip
                if code is None:
                    raise invalid_content(f"Invalid taxCode reference key {code_id}.",
                                          path=f"{path}.taxCode")  # fmt: skip
                amount = _amount(tax.get("taxAmount"), f"{path}.taxAmount")
                if tax.get("taxBasis") is not None:
                    _amount(tax["taxBasis"], f"{path}.taxBasis")
                basis = tax.get("taxBasis")
                lines.append(("T", code_id, int(code["taxaccount"]),
                              amount.quantize(quantum, ROUND_HALF_UP),
                              None if basis is None else str(basis)))  # fmt: skip
            total = sum((line[3] for line in lines), Decimal(0))
            if total < 0 or (kind.record == "creditMemo" and total == 0):
                raise user_error(f"The total of a {kind.record} cannot be {total}.")
            return lines, total
        if kind.record == "customerPayment":
            total = _amount(body.get("payment"), "payment").quantize(quantum, ROUND_HALF_UP)
        else:
            applied = _lines(body.get("apply", {"items": []}), "apply")
            total = sum((_amount(line.get("amount"), f"apply.items[{i}].amount")
                         for i, line in enumerate(applied) if line.get("apply", True)),
                        Decimal(0)).quantize(quantum, ROUND_HALF_UP)  # fmt: skip
        if total <= 0:
            raise user_error(f"The amount of a {kind.record} must be greater than zero.")
        return lines, total

    def _deposit(
        self, kind: TransactionKind, body: dict[str, Any]
    ) -> tuple[int | None, int | None]:
        """The account money moves through and the payment method, for payments and refunds."""
        if kind.has_lines:
            return None, None
        method_id = _ref(body["paymentMethod"], "paymentMethod") if "paymentMethod" in body \
            else None  # fmt: skip
        method = None
        if method_id is not None:
            method = self._one("SELECT account FROM paymentmethod WHERE id = ? AND "
                               "isinactive = 'F'", method_id)  # fmt: skip
            if method is None:
                raise invalid_content(f"Invalid paymentMethod reference key {method_id}.",
                                      path="paymentMethod")  # fmt: skip
        if "account" in body:
            account_id = _ref(body["account"], "account")
        elif method is not None:
            account_id = int(method["account"])
        else:
            raise user_error("Please enter value(s) for: Account", path="account")
        account = self._one("SELECT accttype FROM account WHERE id = ? AND isinactive = 'F'",
                            account_id)  # fmt: skip
        if account is None or account["accttype"] not in ("Bank", "OthCurrAsset"):
            raise invalid_content(f"Invalid account reference key {account_id}.", path="account")
        return account_id, method_id

    def _write_lines(
        self,
        kind: TransactionKind,
        tx_id: int,
        entity: int,
        total: Decimal,
        lines: list[tuple[str, int, int, Decimal, str | None]],
    ) -> None:
        receivable = self._one("SELECT id FROM account WHERE acctnumber = ?", RECEIVABLE_ACCOUNT)
        assert receivable is not None
        rows: list[tuple[int, str, str, int | None, int, str, str | None]] = [
            (0, "T", "F", None, int(receivable["id"]), str(kind.ar_sign * total), None)
        ]
        for number, (taxline, item, account, amount, memo) in enumerate(lines, start=1):
            rows.append((number, "F", taxline, item, account, str(-kind.ar_sign * amount), memo))
        if not kind.has_lines:
            row = self._one('SELECT account FROM "transaction" WHERE id = ?', tx_id)
            assert row is not None
            rows.append((1, "F", "F", None, row["account"], str(-kind.ar_sign * total), None))
        self.db.executemany(
            'INSERT INTO transactionline (id, "transaction", linesequencenumber, mainline, '
            "taxline, item, account, foreignamount, memo, entity) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(n, tx_id, n, main, tax, item, account, amount, memo, entity)
             for n, main, tax, item, account, amount, memo in rows],
        )  # fmt: skip

    def _apply(
        self,
        kind: TransactionKind,
        tx_id: int,
        body: dict[str, Any],
        entity: int,
        currency: int,
        total: Decimal,
        on: dt.date,
    ) -> set[int]:
        """Write the `apply` lines (the documents this money settles); the documents touched."""
        linked = self.db.execute(
            "SELECT previousdoc FROM previoustransactionlink WHERE nextdoc = ?", (tx_id,)
        )
        before = {int(row["previousdoc"]) for row in linked}
        self.db.execute("DELETE FROM previoustransactionlink WHERE nextdoc = ?", (tx_id,))
        if kind.applies_to is None:
            if "apply" in body:
                raise invalid_content(f"A {kind.record} has no apply sublist.", path="apply")
            return before
        applied = Decimal(0)
        touched = set(before)
        for index, line in enumerate(_lines(body.get("apply", {"items": []}), "apply")):
            path = f"apply.items[{index}]"
            if line.get("apply", True) is False:
                continue
            doc_id = _ref(line.get("doc"), f"{path}.doc")
            doc = self._one('SELECT * FROM "transaction" WHERE id = ?', doc_id)
            if (doc is None or doc["type"] != kind.applies_to or doc["entity"] != entity
                    or doc["currency"] != currency):  # fmt: skip
                raise invalid_content(
                    f"You have entered an Invalid Field Value {doc_id} for the following field: "
                    "doc",
                    path=f"{path}.doc",
                )
            amount = _amount(line.get("amount"), f"{path}.amount")
            due = abs(Decimal(doc["foreigntotal"])) - self._used(doc_id)
            if amount <= 0 or amount > due:
                raise user_error(
                    f"You cannot apply {amount} to {doc['tranid']}: the amount due on it is {due}.",
                    path=f"{path}.amount",
                )
            applied += amount
            self.db.execute(
                "INSERT INTO previoustransactionlink (previousdoc, nextdoc, linktype, "
                "foreignamount, linkdate) VALUES (?, ?, ?, ?, ?)",
                (doc_id, tx_id, "Payment", str(amount), on.isoformat()),
            )
            touched.add(doc_id)
        if applied > total:
            raise user_error(
                f"The total applied ({applied}) is more than the {kind.record} holds ({total}).",
                path="apply",
            )
        return touched

    def _used(self, tx_id: int) -> Decimal:
        """What has settled a transaction: what was applied to it and what it applied."""
        rows = self.db.execute(
            "SELECT foreignamount FROM previoustransactionlink WHERE previousdoc = ? "
            "OR nextdoc = ?",
            (tx_id, tx_id),
        ).fetchall()
        return sum((Decimal(row["foreignamount"]) for row in rows), Decimal(0))

    def _settle(self, tx_id: int) -> None:
        row = self._one('SELECT recordtype, foreigntotal FROM "transaction" WHERE id = ?', tx_id)
        assert row is not None
        kind = next(k for k in TRANSACTIONS.values() if k.recordtype == row["recordtype"])
        remaining = abs(Decimal(row["foreigntotal"])) - self._used(tx_id)
        if kind.record == "customerRefund":
            remaining = Decimal(0)
        status = kind.open_status[0] if remaining > 0 else kind.closed_status[0]
        self.db.execute(
            'UPDATE "transaction" SET foreignamountremaining = ?, foreignamountunpaid = ?, '
            "status = ? WHERE id = ?",
            (str(remaining), str(remaining), status, tx_id),
        )

    # --- reads ---------------------------------------------------------------------------

    def render(self, record: str, record_id: int, *, expand: bool) -> dict[str, Any]:
        if record == "customer":
            return self._render_customer(record_id, expand)
        return self._render_transaction(TRANSACTIONS[record], record_id, expand)

    def render_sublist(self, record: str, record_id: int, sublist: str) -> dict[str, Any]:
        if sublist not in SUBLISTS[record]:
            raise nonexistent(f"{record}/{record_id}", sublist)
        body = self.render(record, record_id, expand=True)
        return dict(body[sublist])

    def _href(self, *parts: object) -> str:
        return "/".join([f"{self.base_url}/services/rest/record/v1", *map(str, parts)])

    def _reference(self, record: str, record_id: int | None, name: str | None) -> Any:
        if record_id is None:
            return None
        return {"links": [{"rel": "self", "href": self._href(record, record_id)}],
                "id": str(record_id), "refName": name or str(record_id)}  # fmt: skip

    def _sublist(
        self, record: str, record_id: int, name: str, items: list[dict[str, Any]], expand: bool
    ) -> dict[str, Any]:
        link = [{"rel": "self", "href": self._href(record, record_id, name)}]
        if not expand:
            return {"links": link}
        return {"links": link, "items": items, "count": len(items), "hasMore": False,
                "offset": 0, "totalResults": len(items)}  # fmt: skip

    def _render_customer(self, customer_id: int, expand: bool) -> dict[str, Any]:
        row = self._one("SELECT * FROM customer WHERE id = ?", customer_id)
        assert row is not None
        currencies = self.db.execute(
            "SELECT c.id, c.symbol FROM customercurrencybalance b JOIN currency c ON c.id = "
            "b.currency WHERE b.customer = ? ORDER BY c.id",
            (customer_id,),
        ).fetchall()
        subsidiary = self._one("SELECT name FROM subsidiary WHERE id = ?", row["subsidiary"])
        currency = self._one("SELECT symbol FROM currency WHERE id = ?", row["currency"])
        body = {
            "links": [{"rel": "self", "href": self._href("customer", customer_id)}],
            "id": str(customer_id),
            "externalId": row["externalid"],
            "entityId": row["entityid"],
            "companyName": row["companyname"],
            "email": row["email"],
            "isInactive": row["isinactive"] == "T",
            "subsidiary": self._reference("subsidiary", row["subsidiary"],
                                          subsidiary["name"] if subsidiary else None),
            "currency": self._reference("currency", row["currency"],
                                        currency["symbol"] if currency else None),
            "dateCreated": row["datecreated"],
            "lastModifiedDate": row["lastmodifieddate"],
            "currencyList": self._sublist(
                "customer", customer_id, "currencyList",
                [{"links": [], "currency": self._reference("currency", c["id"], c["symbol"])}
                 for c in currencies], expand),
        }  # fmt: skip
        return {key: value for key, value in body.items() if value is not None}

    def _render_transaction(
        self, kind: TransactionKind, tx_id: int, expand: bool
    ) -> dict[str, Any]:
        row = self._one(
            "SELECT t.*, c.companyname, c.entityid, cur.symbol, p.periodname, s.name AS subname,"
            ' a.acctnumber, a.acctname, m.name AS methodname FROM "transaction" t'
            " JOIN customer c ON c.id = t.entity JOIN currency cur ON cur.id = t.currency"
            " JOIN accountingperiod p ON p.id = t.postingperiod"
            " JOIN subsidiary s ON s.id = t.subsidiary LEFT JOIN account a ON a.id = t.account"
            " LEFT JOIN paymentmethod m ON m.id = t.paymentmethod WHERE t.id = ?",
            tx_id,
        )
        assert row is not None
        total = abs(Decimal(row["foreigntotal"]))
        remaining = Decimal(row["foreignamountremaining"])
        status = kind.open_status if row["status"] == kind.open_status[0] else kind.closed_status
        body: dict[str, Any] = {
            "links": [{"rel": "self", "href": self._href(kind.record, tx_id)}],
            "id": str(tx_id),
            "externalId": row["externalid"],
            "tranId": row["tranid"],
            "tranDate": row["trandate"],
            "memo": row["memo"],
            "entity": self._reference("customer", row["entity"],
                                      f"{row['entityid']} {row['companyname']}"),
            "currency": self._reference("currency", row["currency"], row["symbol"]),
            "subsidiary": self._reference("subsidiary", row["subsidiary"], row["subname"]),
            "postingPeriod": self._reference("accountingPeriod", row["postingperiod"],
                                             row["periodname"]),
            "exchangeRate": Decimal(row["exchangerate"]),
            "status": {"id": status[1], "refName": status[2]},
            "total": total,
            "createdDate": row["createddate"],
            "lastModifiedDate": row["lastmodifieddate"],
        }  # fmt: skip
        if kind.record == "invoice":
            body |= {"amountRemaining": remaining, "amountPaid": total - remaining}
        elif kind.record in ("creditMemo", "customerPayment"):
            body |= {"applied": total - remaining, "unapplied": remaining}
        if kind.record == "customerPayment":
            body["payment"] = total
        if not kind.has_lines:
            body["account"] = self._reference(
                "account", row["account"], f"{row['acctnumber']} {row['acctname']}"
            )
            body["paymentMethod"] = self._reference("paymentMethod", row["paymentmethod"],
                                                    row["methodname"])  # fmt: skip
        for sublist in SUBLISTS[kind.record]:
            items = self._sublist_items(tx_id, sublist, kind.ar_sign)
            body[sublist] = self._sublist(kind.record, tx_id, sublist, items, expand)
        return {key: value for key, value in body.items() if value is not None}

    def _sublist_items(self, tx_id: int, sublist: str, ar_sign: int) -> list[dict[str, Any]]:
        if sublist == "apply":
            rows = self.db.execute(
                "SELECT l.*, d.tranid, d.type, d.foreigntotal, d.foreignamountremaining FROM "
                'previoustransactionlink l JOIN "transaction" d ON d.id = l.previousdoc '
                "WHERE l.nextdoc = ? ORDER BY l.previousdoc",
                (tx_id,),
            ).fetchall()
            return [{"links": [], "doc": {"id": str(r["previousdoc"])}, "apply": True,
                     "amount": Decimal(r["foreignamount"]), "refNum": r["tranid"],
                     "type": r["type"], "total": abs(Decimal(r["foreigntotal"])),
                     "due": Decimal(r["foreignamountremaining"]), "applyDate": r["linkdate"]}
                    for r in rows]  # fmt: skip
        taxline = "T" if sublist == "taxDetails" else "F"
        rows = self.db.execute(
            "SELECT l.*, i.itemid, s.name AS taxname, a.acctnumber FROM transactionline l "
            "LEFT JOIN item i ON i.id = l.item AND l.taxline = 'F' "
            "LEFT JOIN salestaxitem s ON s.id = l.item AND l.taxline = 'T' "
            "LEFT JOIN account a ON a.id = l.account "
            "WHERE l.\"transaction\" = ? AND l.mainline = 'F' AND l.taxline = ? "
            "AND l.item IS NOT NULL ORDER BY l.linesequencenumber",
            (tx_id, taxline),
        ).fetchall()
        if sublist == "taxDetails":
            return [{"links": [], "taxDetailsReference": str(r["id"]),
                     "taxCode": self._reference("salesTaxItem", r["item"], r["taxname"]),
                     "taxAmount": -ar_sign * Decimal(r["foreignamount"]),
                     **({"taxBasis": Decimal(r["memo"])} if r["memo"] is not None else {})}
                    for r in rows]  # fmt: skip
        return [{"links": [], "line": r["linesequencenumber"],
                 "item": self._reference("item", r["item"], r["itemid"]),
                 "amount": -ar_sign * Decimal(r["foreignamount"]),
                 **({"description": r["memo"]} if r["memo"] is not None else {})}
                for r in rows]  # fmt: skip

    # --- administration ------------------------------------------------------------------

    def set_period_state(self, on: dt.date, closed: bool) -> dict[str, Any]:
        row = self._one(
            "SELECT id, periodname FROM accountingperiod WHERE isposting = 'T' AND "
            "startdate <= ? AND enddate >= ?",
            on.isoformat(),
            on.isoformat(),
        )
        if row is None:
            raise user_error(f"No accounting period covers {on.isoformat()}.")
        flag = "T" if closed else "F"
        with self._write():
            self.db.execute(
                "UPDATE accountingperiod SET closed = ?, arlocked = ?, alllocked = ? WHERE id = ?",
                (flag, flag, flag, row["id"]),
            )
        return {"id": str(row["id"]), "periodName": row["periodname"], "closed": closed}


def _doc_key(line: Mapping[str, Any]) -> str:
    doc = line.get("doc")
    return str(doc.get("id")) if isinstance(doc, dict) else repr(doc)


def _from_json(text: str) -> dict[str, Any]:
    body = loads(text.encode())
    return body if isinstance(body, dict) else {}


__all__ = ["EID_PREFIX", "RECORD_TYPES", "SUBLISTS", "TRANSACTIONS", "Books"]
