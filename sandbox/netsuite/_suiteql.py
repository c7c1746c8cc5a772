"""SuiteQL (`POST /services/rest/query/v1/suiteql`), run as read-only SQL on the books.

What it follows (NetSuite Help Center, "Executing SuiteQL Queries Through REST Web Services"
and "Collection Paging"): the body is `{"q": "<query>"}`; the request must carry
`Prefer: transient`; `limit` (1-1000, default 1000) and `offset` page the result, the offset a
multiple of the limit; the answer is `{"links", "count", "hasMore", "items", "offset",
"totalResults"}`, each item a row with lowercase column names and `"links": []`, its values
as strings, its null columns left out; SuiteQL reads, it never writes.

The query runs on SQLite under an authorizer that allows reading the SuiteQL tables and
calling functions, and denies every other action (a write, a pragma, an attach, a read of
the record service's own tables). Oracle-style helpers SuiteQL offers are registered:
`NVL`, `TO_CHAR(date, 'YYYY-MM-DD')`, `TO_DATE(text, 'YYYY-MM-DD')`. What SQLite does not
parse (`BUILTIN.DF`, `FETCH FIRST`, `ROWNUM`) is refused as an invalid query.
"""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from typing import Any
from urllib.parse import urlencode

from sandbox.netsuite._books import SUITEQL_TABLES
from sandbox.netsuite._http import NetSuiteError

MAX_LIMIT = 1000
# SuiteQL names a table and a column `transaction`, a reserved word in SQLite: it is quoted
# wherever it stands outside a string literal.
_LITERALS = re.compile(r"('(?:[^']|'')*')")
_TRANSACTION_WORD = re.compile(r'(?<![\w"])transaction(?![\w"])', re.IGNORECASE)
_READ_ONLY_START = re.compile(r"^\s*(select|with)\b", re.IGNORECASE)
_FORMATS = {"YYYY-MM-DD": "%Y-%m-%d", "MM/DD/YYYY": "%m/%d/%Y", "DD.MM.YYYY": "%d.%m.%Y"}


def invalid_query(detail: str) -> NetSuiteError:
    return NetSuiteError(
        400,
        "INVALID_PARAMETER",
        f"Invalid search query. Detailed unprocessed description follows. {detail}",
    )


def _to_char(value: Any, fmt: str) -> str | None:
    if value is None:
        return None
    text = str(value)
    pattern = _FORMATS.get(str(fmt).upper())
    if pattern is None:
        return text
    try:
        return dt.date.fromisoformat(text[:10]).strftime(pattern)
    except ValueError:
        return text


def _to_date(value: Any, fmt: str) -> str | None:
    if value is None:
        return None
    pattern = _FORMATS.get(str(fmt).upper())
    if pattern is None:
        raise ValueError(f"unsupported date format {fmt!r}")
    return dt.datetime.strptime(str(value), pattern).date().isoformat()


def register_functions(db: sqlite3.Connection) -> None:
    db.create_function("NVL", 2, lambda value, other: other if value is None else value)
    db.create_function("TO_CHAR", 2, _to_char, deterministic=True)
    db.create_function("TO_DATE", 2, _to_date, deterministic=True)


def _authorizer(action: int, arg1: str | None, arg2: str | None, *_: Any) -> int:
    if action == sqlite3.SQLITE_SELECT:
        return sqlite3.SQLITE_OK
    if action == sqlite3.SQLITE_READ:
        return sqlite3.SQLITE_OK if (arg1 or "").lower() in SUITEQL_TABLES else sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_FUNCTION:
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def _sqlite_dialect(query: str) -> str:
    parts = _LITERALS.split(query)
    return "".join(part if index % 2 else _TRANSACTION_WORD.sub('"transaction"', part)
                   for index, part in enumerate(parts))  # fmt: skip


def _value(value: Any) -> str:
    return str(value)


def run_suiteql(
    db: sqlite3.Connection, query: Any, limit: int, offset: int, self_url: str
) -> dict[str, Any]:
    """One page of a SuiteQL query's rows, in NetSuite's answer shape."""
    if not isinstance(query, str) or not query.strip():
        raise invalid_query("The request body must carry the query in q.")
    if not 1 <= limit <= MAX_LIMIT:
        raise NetSuiteError(400, "INVALID_PARAMETER",
                            f"The limit must be between 1 and {MAX_LIMIT}.")  # fmt: skip
    if offset < 0 or offset % limit:
        raise NetSuiteError(400, "INVALID_PARAMETER",
                            "The offset must be a non-negative multiple of the limit.")  # fmt: skip
    statement = _sqlite_dialect(query.strip().rstrip(";"))
    if not _READ_ONLY_START.match(statement):
        raise invalid_query("Only SELECT queries are supported by SuiteQL.")
    db.set_authorizer(_authorizer)
    try:
        total = db.execute(f"SELECT count(*) FROM ({statement})").fetchone()[0]  # noqa: S608
        cursor = db.execute(
            f"SELECT * FROM ({statement}) LIMIT ? OFFSET ?",  # noqa: S608
            (limit, offset),
        )
        columns = [column[0].lower() for column in cursor.description]
        rows = cursor.fetchall()
    except sqlite3.DatabaseError as err:
        raise invalid_query(str(err)) from None
    except sqlite3.Warning as err:  # e.g. two statements in one query
        raise invalid_query(str(err)) from None
    finally:
        db.set_authorizer(None)
    items = [
        {"links": [], **{name: _value(value) for name, value in zip(columns, row, strict=True)
                         if value is not None}}
        for row in rows
    ]  # fmt: skip
    has_more = offset + len(items) < total

    def page(rel: str, at: int) -> dict[str, str]:
        return {"rel": rel, "href": f"{self_url}?{urlencode({'limit': limit, 'offset': at})}"}

    links = [page("self", offset)]
    if offset > 0:
        links.insert(0, page("previous", max(0, offset - limit)))
        links.insert(0, page("first", 0))
    if has_more:
        links.insert(0, page("next", offset + limit))
        last = ((total - 1) // limit) * limit
        links.insert(0, page("last", last))
    return {
        "links": links,
        "count": len(items),
        "hasMore": has_more,
        "items": items,
        "offset": offset,
        "totalResults": total,
    }


__all__ = ["MAX_LIMIT", "invalid_query", "register_functions", "run_suiteql"]
