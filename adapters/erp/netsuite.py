"""NetSuiteLedger: the Ledger port over NetSuite's SuiteTalk REST web services.

Wire facts it relies on (NetSuite Help Center, SuiteTalk REST Web Services; the local
`sandbox/netsuite` answers the same, docs/netsuite.md has the details):

- records live under `{base}/services/rest/record/v1/{type}`; a record is addressed by its
  internal id or by `eid:{externalId}`; `PUT .../{type}/eid:{externalId}` upserts (creates
  when absent, updates otherwise) and answers 204 with the record's URL in `Location`;
- `GET` reads a record, its references as `{"id", "refName"}`, its sublists expanded with
  `?expandSubResources=true`; amounts are JSON numbers (read here as Decimal, never float);
- SuiteQL is `POST {base}/services/rest/query/v1/suiteql` `{"q": ...}` with `Prefer:
  transient`, paged by `limit` (at most 1000) and `offset`, answered `{"items", "hasMore",
  "totalResults", ...}` with lowercase columns, every value a string and null columns left
  out; SuiteQL has no bind parameters, so every literal here is quoted by `_literal`;
- every call is signed with token-based authentication (OAuth 1.0a, HMAC-SHA256, `realm` =
  the account id); a refused one is 401 `INVALID_LOGIN`;
- errors are `{"status", "o:errorDetails": [{"detail", "o:errorCode"}]}`; past the account's
  concurrency limit a request is refused with 429.

How ledgerbridge's ids become NetSuite's: a customer's external id is the canonical customer
id; a document's or payment's external id is the posting's reference (the billing id). Both
pass through `external_id`, which escapes what a URL path segment cannot carry (a reversal's
`/void`) reversibly, so the external id is the key of the upsert and a lost answer is harmless:
the retry finds (or upserts) the same record, never a second one.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import time
import weakref
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from types import TracebackType
from typing import Any, Literal

import httpx
from oauthlib.oauth1 import Client as OAuth1Client
from oauthlib.oauth1.rfc5849 import SIGNATURE_HMAC_SHA256, SIGNATURE_TYPE_AUTH_HEADER
from pydantic import SecretStr

from adapters.erp._postings import (
    PostingLocks,
    check_limit,
    check_page,
    cursor_id,
    refuse_unmapped,
)
from adapters.errors import (
    AdapterError,
    ConflictError,
    NotFoundError,
    RateLimitedError,
    RejectedError,
    ValidationError,
    error_for_status,
    parse_retry_after,
    transport_errors_as_transient,
)
from adapters.logs import get_logger
from adapters.metrics import adapter_call
from canonical import (
    AccountRecord,
    CurrencyError,
    Customer,
    LedgerPosting,
    Money,
    PaymentPosting,
    PostedDocument,
    PostedPayment,
)
from canonical.mapping import CatalogEntry
from canonical.reconciliation import (
    LedgerDocument,
    LedgerDocumentPage,
    LedgerPayment,
    LedgerPaymentPage,
    Receivable,
    ReceivablePage,
)

SYSTEM = "erp"
RECORD_PATH = "/services/rest/record/v1"
SUITEQL_PATH = "/services/rest/query/v1/suiteql"
SUITEQL_MAX_LIMIT = 1000
# NetSuite's 400 codes for a request malformed for it; any other 400 code is a business rule
# of the account refusing it (USER_ERROR: a closed period, more applied than is due...).
MALFORMED_CODES = frozenset(
    {
        "INVALID_CONTENT",
        "INVALID_PARAMETER",
        "INVALID_HEADER",
        "INVALID_ID",
        "INVALID_URL",
        "INVALID_FIELD",
        "INVALID_RECORD_TYPE",
        "INVALID_METHOD",
    }
)
# SuiteQL transaction types, and the record types of the record service.
INVOICE, CREDIT_MEMO, PAYMENT, REFUND = "CustInvc", "CustCred", "CustPymt", "CustRfnd"
RECORD_OF = {
    "invoice": "invoice",
    "credit_note": "creditMemo",
    "payment": "customerPayment",
    "refund": "customerRefund",
}
# NetSuite's status of a receivable document, in the words the Ledger port uses (Tryton's):
# a document nothing remains due on is "paid", any other posted one "posted".
# Every request holds one of the account's few concurrency slots, so what changes rarely is
# not asked again for a while: an open period (a posting into one closed meanwhile is still
# refused by NetSuite, as USER_ERROR), a customer already upserted as it is now.
OPEN_PERIOD_TTL_SECONDS = 60.0
PARTY_TTL_SECONDS = 300.0
SETTLED_STATUSES = frozenset({"paidInFull", "fullyApplied"})
SETTLED_LETTER = "B"  # SuiteQL's status letter of a paid invoice / fully applied credit memo
_EID_SAFE = re.compile(rb"[A-Za-z0-9_.\-]")

log = get_logger(__name__)


# --- ids and values -----------------------------------------------------------------------


def external_id(reference: str) -> str:
    """The NetSuite external id of a ledgerbridge id: every byte outside `[A-Za-z0-9_.-]`
    (the `/` of `in_1/void`, the `~` itself) written `~XX`, so it is one path segment and
    maps back to exactly one reference."""
    return "".join(
        chr(byte) if _EID_SAFE.fullmatch(bytes([byte])) else f"~{byte:02X}"
        for byte in reference.encode("utf-8")
    )


def reference_of(external: str) -> str:
    """The ledgerbridge id an external id was made from (`external_id` reversed)."""
    return re.sub(
        rb"~([0-9A-F]{2})", lambda m: bytes([int(m.group(1), 16)]), external.encode("utf-8")
    ).decode("utf-8")


def _literal(value: str) -> str:
    """A SuiteQL string literal (SuiteQL takes no bind parameters)."""
    return "'" + value.replace("'", "''") + "'"


def _date_literal(on: dt.date) -> str:
    return f"TO_DATE('{on.isoformat()}', 'YYYY-MM-DD')"


_NUMBER = "\u0001number:"


def _to_wire(value: Any) -> Any:
    if isinstance(value, Decimal):
        return _NUMBER + format(value, "f")
    if isinstance(value, Mapping):
        return {key: _to_wire(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_to_wire(item) for item in value]
    return value


def wire_json(payload: Any) -> bytes:
    """The JSON NetSuite reads: a Decimal is the JSON number it is, to the last digit."""
    text = json.dumps(_to_wire(payload), ensure_ascii=False)
    return re.sub(r'"\\u0001number:(-?\d+(?:\.\d+)?)"', r"\1", text).encode("utf-8")


def _unexpected(operation: str, what: str, answer: Any) -> ValidationError:
    return ValidationError(
        f"NetSuite answered {operation} with an unexpected shape: {what}",
        system=SYSTEM,
        operation=operation,
        remote_code="unexpected_answer",
        remote_answer=_jsonable(answer),
    )


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _field(record: Any, name: str, operation: str) -> Any:
    if not isinstance(record, Mapping) or record.get(name) is None:
        raise _unexpected(operation, f"no {name!r}", record)
    return record[name]


def _decimal(value: Any, name: str, operation: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | str | Decimal):
        raise _unexpected(operation, f"{name} is not an amount ({value!r})", value)
    try:
        return Decimal(value)
    except InvalidOperation:
        raise _unexpected(operation, f"{name} is not an amount ({value!r})", value) from None


def _ref_id(record: Mapping[str, Any], name: str, operation: str) -> str:
    return str(_field(_field(record, name, operation), "id", operation))


def _ref_name(record: Mapping[str, Any], name: str, operation: str) -> str:
    return str(_field(_field(record, name, operation), "refName", operation))


def _money(amount: Decimal, currency: str, operation: str) -> Money:
    try:
        return Money(amount=amount, currency=currency)
    except (CurrencyError, ValueError) as err:
        raise RejectedError(
            f"NetSuite holds an amount in a currency ledgerbridge does not know: {currency}",
            system=SYSTEM,
            operation=operation,
        ) from err


# --- signing and the HTTP session ---------------------------------------------------------


class NetSuiteTokenAuth(httpx.Auth):
    """Token-based authentication on every request."""

    # httpx has no OAuth 1.0a; oauthlib computes the signature, this only carries its header.
    def __init__(
        self,
        account_id: str,
        consumer_key: str,
        consumer_secret: str,
        token_id: str,
        token_secret: str,
    ) -> None:
        self._client = OAuth1Client(
            consumer_key,
            client_secret=consumer_secret,
            resource_owner_key=token_id,
            resource_owner_secret=token_secret,
            signature_method=SIGNATURE_HMAC_SHA256,
            signature_type=SIGNATURE_TYPE_AUTH_HEADER,
            realm=account_id,
        )

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        # The JSON body is not part of an OAuth 1.0a signature (only form bodies are).
        _, headers, _ = self._client.sign(str(request.url), request.method)
        request.headers["Authorization"] = headers["Authorization"]
        yield request


# One semaphore per account (and event loop): the account's concurrency limit is shared by
# every NetSuiteLedger of the process that talks to it with the same limit.
_ACCOUNT_SLOTS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, str, int], asyncio.Semaphore]
] = weakref.WeakKeyDictionary()


def _account_slots(base_url: str, account_id: str, limit: int) -> asyncio.Semaphore:
    per_loop = _ACCOUNT_SLOTS.setdefault(asyncio.get_running_loop(), {})
    key = (base_url, account_id, limit)
    if key not in per_loop:
        per_loop[key] = asyncio.Semaphore(limit)
    return per_loop[key]


def _error_from_answer(response: httpx.Response, operation: str) -> AdapterError:
    """The taxonomy member for a NetSuite error answer, with its `o:errorCode` and detail."""
    status = response.status_code
    try:
        body = json.loads(response.content)
    except ValueError:
        body = None
    details = body.get("o:errorDetails") if isinstance(body, dict) else None
    first = details[0] if isinstance(details, list) and details else None
    if isinstance(first, dict) and isinstance(first.get("detail"), str):
        message, code = first["detail"], first.get("o:errorCode")
    else:
        message = f"NetSuite answered HTTP {status} without an error body"
        code, body = None, (body if body is not None else response.text[:500])
    common: dict[str, Any] = {
        "system": SYSTEM,
        "operation": operation,
        "status": status,
        "remote_code": code,
        "remote_answer": _jsonable(body),
    }
    if status == 429:
        retry = parse_retry_after(response.headers.get("Retry-After"))
        return RateLimitedError(message, retry_after=retry, **common)
    if status == 400:
        malformed = code in MALFORMED_CODES or code is None
        return (ValidationError if malformed else RejectedError)(message, **common)
    return error_for_status(
        status,
        message,
        system=SYSTEM,
        operation=operation,
        remote_code=code,
        remote_answer=common["remote_answer"],
    )


@dataclass(frozen=True)
class _Chart:
    """The account's names the mapping uses, as internal ids (read once)."""

    currencies: dict[str, str]  # symbol -> id
    items: dict[str, tuple[str, str]]  # itemid -> (id, income account number)
    accounts: dict[str, str]  # acctnumber -> id
    tax_codes: dict[str, str]  # name -> id
    payment_methods: dict[str, str]  # name -> id


class NetSuiteLedger:
    """The Ledger port on a NetSuite account: customers keyed by external id = customer id,
    documents and payments by external id = the posting's reference."""

    def __init__(
        self,
        base_url: str,
        account_id: str,
        consumer_key: str,
        consumer_secret: str | SecretStr,
        token_id: str,
        token_secret: str | SecretStr,
        *,
        concurrency: int = 5,
        subsidiary: str = "1",
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        def plain(secret: str | SecretStr) -> str:
            return secret.get_secret_value() if isinstance(secret, SecretStr) else secret

        self.account_id = account_id
        self._concurrency = concurrency
        self._subsidiary = subsidiary
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            headers={"Accept": "application/json", "Content-Type": "application/json"},
            auth=NetSuiteTokenAuth(
                account_id, consumer_key, plain(consumer_secret), token_id, plain(token_secret)
            ),
            transport=transport,
        )
        self._chart: _Chart | None = None
        self._chart_lock = asyncio.Lock()
        # One posting per reference at a time in this process (see `post_document`).
        self._posting_locks = PostingLocks()
        self._open_periods: dict[dt.date, float] = {}  # day -> when it was found open
        self._parties: dict[Customer, tuple[float, AccountRecord]] = {}

    async def __aenter__(self) -> NetSuiteLedger:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- the wire ------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        operation: str,
        *,
        body: Any = None,
        params: Mapping[str, str | int] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """One request within the account's concurrency limit; an error answer raised as the
        taxonomy says."""
        async with _account_slots(str(self._client.base_url), self.account_id, self._concurrency):
            with adapter_call(SYSTEM, operation), transport_errors_as_transient(SYSTEM, operation):
                response = await self._client.request(
                    method,
                    path,
                    content=None if body is None else wire_json(body),
                    params=params,
                    headers=headers,
                )
                if response.status_code >= 400:
                    raise _error_from_answer(response, operation)
        return response

    def _json(self, response: httpx.Response, operation: str) -> dict[str, Any]:
        try:
            answer = json.loads(response.content, parse_float=Decimal)
        except ValueError:
            raise _unexpected(operation, "a body that is not JSON", response.text[:500]) from None
        if not isinstance(answer, dict):
            raise _unexpected(operation, "a JSON body that is not an object", answer)
        return answer

    async def _record(
        self, record: str, key: str, operation: str, *, expand: bool = False
    ) -> dict[str, Any] | None:
        """The record `key` names (internal id or `eid:...`), None when NetSuite has none."""
        params = {"expandSubResources": "true"} if expand else None
        try:
            response = await self._call(
                "GET", f"{RECORD_PATH}/{record}/{key}", operation, params=params
            )
        except NotFoundError:
            return None
        return self._json(response, operation)

    async def _upsert(
        self, record: str, reference: str, body: Mapping[str, Any], operation: str
    ) -> None:
        await self._call(
            "PUT", f"{RECORD_PATH}/{record}/eid:{external_id(reference)}", operation, body=body
        )

    async def _suiteql(
        self, query: str, operation: str, *, limit: int = SUITEQL_MAX_LIMIT, offset: int = 0
    ) -> dict[str, Any]:
        response = await self._call(
            "POST",
            SUITEQL_PATH,
            operation,
            body={"q": query},
            params={"limit": limit, "offset": offset},
            headers={"Prefer": "transient"},
        )
        answer = self._json(response, operation)
        items = answer.get("items")
        if not isinstance(items, list) or not all(isinstance(row, dict) for row in items):
            raise _unexpected(operation, "no list of rows in 'items'", answer)
        if not isinstance(answer.get("hasMore"), bool):
            raise _unexpected(operation, "no boolean 'hasMore'", answer)
        return answer

    async def _dated_page(
        self,
        select: str,
        types: tuple[str, ...],
        date_from: dt.date,
        date_to: dt.date,
        cursor: str | None,
        limit: int,
        operation: str,
    ) -> dict[str, Any]:
        """One SuiteQL page of transactions of `types` dated in [from, to], by internal id
        after the cursor's (ids only grow: what is created while paging lands on a later
        page, never shifts an earlier one)."""
        check_page(date_from, date_to, limit, operation)
        after = cursor_id(cursor, operation)
        listed = ", ".join(_literal(kind) for kind in types)
        return await self._suiteql(
            f"{select} WHERE t.type IN ({listed}) AND t.trandate >= {_date_literal(date_from)} "
            f"AND t.trandate <= {_date_literal(date_to)} AND t.id > {after} ORDER BY t.id",
            operation,
            limit=min(limit, SUITEQL_MAX_LIMIT),
        )

    async def _suiteql_rows(self, query: str, operation: str) -> list[dict[str, Any]]:
        """Every row of a query, page after page."""
        rows: list[dict[str, Any]] = []
        while True:
            answer = await self._suiteql(query, operation, offset=len(rows))
            rows += answer["items"]
            if not answer["hasMore"] or not answer["items"]:
                return rows

    # --- the account's names -----------------------------------------------------------------

    async def _books(self) -> _Chart:
        if self._chart is None:
            async with self._chart_lock:
                if self._chart is None:
                    self._chart = await self._read_chart()
        return self._chart

    async def _read_chart(self) -> _Chart:
        operation = "read_chart"

        async def pairs(query: str, key: str, value: str) -> dict[str, str]:
            rows = await self._suiteql_rows(query, operation)
            return {str(_field(r, key, operation)): str(_field(r, value, operation)) for r in rows}

        items = await self._suiteql_rows(
            "SELECT i.id, i.itemid, a.acctnumber FROM item i "
            "LEFT JOIN account a ON a.id = i.incomeaccount ORDER BY i.id",
            operation,
        )
        return _Chart(
            currencies=await pairs("SELECT id, symbol FROM currency ORDER BY id", "symbol", "id"),
            items={
                str(_field(r, "itemid", operation)): (
                    str(_field(r, "id", operation)),
                    str(r.get("acctnumber") or ""),
                )
                for r in items
            },
            accounts=await pairs(
                "SELECT id, acctnumber FROM account ORDER BY id", "acctnumber", "id"
            ),
            tax_codes=await pairs("SELECT id, name FROM salestaxitem ORDER BY id", "name", "id"),
            payment_methods=await pairs(
                "SELECT id, name FROM paymentmethod ORDER BY id", "name", "id"
            ),
        )

    def _unknown_code(self, kind: str, code: str, operation: str) -> RejectedError:
        return RejectedError(
            f"NetSuite has no {kind} {code!r}: the finance mapping names what the account lacks",
            system=SYSTEM,
            operation=operation,
            remote_code="unknown_erp_code",
            remote_answer={"kind": kind, "code": code},
        )

    async def _currency_id(self, currency: str, operation: str) -> str:
        chart = await self._books()
        found = chart.currencies.get(currency.upper())
        if found is None:
            raise self._unknown_code("currency", currency.upper(), operation)
        return found

    # --- customers -------------------------------------------------------------------------------

    async def find_party(self, customer_id: str) -> AccountRecord | None:
        row = await self._record("customer", f"eid:{external_id(customer_id)}", "find_party")
        return _party_record(row, customer_id, "find_party") if row else None

    async def ensure_party(self, customer: Customer) -> AccountRecord:
        """Upsert the customer (external id = customer id) unless it already reads as the
        customer does. Its currency list holds every currency of the account, so a document in
        any of them can be posted to it; a concurrent ensure upserts the same record."""
        known = self._parties.get(customer)
        if known is not None and time.monotonic() - known[0] < PARTY_TTL_SECONDS:
            return known[1]
        party = await self._ensure_party(customer)
        if len(self._parties) > 10_000:
            self._parties.clear()
        self._parties[customer] = (time.monotonic(), party)
        return party

    async def _ensure_party(self, customer: Customer) -> AccountRecord:
        operation = "ensure_party"
        key = f"eid:{external_id(customer.customer_id)}"
        row = await self._record("customer", key, operation)
        if row is not None and row.get("companyName") == customer.name:
            return _party_record(row, customer.customer_id, operation)
        chart = await self._books()
        body: dict[str, Any] = {
            "entityId": customer.customer_id,
            "companyName": customer.name,
            "currencyList": {
                "items": [
                    {"currency": {"id": currency_id}} for currency_id in chart.currencies.values()
                ]
            },
        }
        if row is None:
            body["subsidiary"] = {"id": self._subsidiary}
            if customer.currency and customer.currency in chart.currencies:
                body["currency"] = {"id": chart.currencies[customer.currency]}
        if customer.email:
            body["email"] = customer.email
        await self._upsert("customer", customer.customer_id, body, operation)
        row = await self._record("customer", key, operation)
        if row is None:
            raise _unexpected(operation, "the customer it just upserted is not found", key)
        return _party_record(row, customer.customer_id, operation)

    async def _customer_internal_id(self, customer_id: str, operation: str) -> str:
        row = await self._record("customer", f"eid:{external_id(customer_id)}", operation)
        if row is None:
            raise NotFoundError(
                f"NetSuite has no customer {customer_id!r}: sync the account first",
                system=SYSTEM,
                operation=operation,
            )
        return str(_field(row, "id", operation))

    # --- documents -------------------------------------------------------------------------------

    async def find_document(self, reference: str) -> PostedDocument | None:
        """The invoice or credit memo whose external id is `reference`. NetSuite keeps external
        ids unique per record type, so an invoice and a credit memo could both carry one:
        that is a ConflictError naming them, never a pick."""
        operation = "find_document"
        rows = await self._suiteql_rows(
            f"{_DOCUMENT_SELECT} WHERE t.type IN ('{INVOICE}', '{CREDIT_MEMO}') "
            f"AND t.externalid = {_literal(external_id(reference))} ORDER BY t.id",
            operation,
        )
        if len(rows) > 1:
            raise ConflictError(
                f"NetSuite holds {len(rows)} documents with external id {reference!r}",
                system=SYSTEM,
                operation=operation,
                remote_code="duplicate_reference",
                remote_answer=rows,
            )
        if not rows:
            return None
        document = _ledger_document(rows[0], {}, operation)
        return PostedDocument(
            reference=reference,
            kind=document.kind,
            erp_document_id=document.erp_document_id,
            erp_number=document.number,
            total=document.total,
            state=document.state,
            created_now=False,
        )

    async def post_document(self, posting: LedgerPosting) -> PostedDocument:
        """Upsert the invoice or credit memo whose external id is the posting's reference,
        dated the billing date (NetSuite numbers without a strict date sequence and converts
        at the rate of that date). Never two: the upsert's key is the reference.

        Looks before it upserts: an upsert of an existing record would update it, and a
        posted document that says something else than this posting (another total, currency
        or customer) must not be overwritten silently: that is a ConflictError naming both,
        nothing written. What an earlier attempt posted with the same content is returned as
        it is (`created_now` False). Concurrent calls for one reference queue on a lock in
        this process; across processes two upserts of one reference write one record.

        Each line books on its mapped NetSuite item, whose income account must be the mapped
        revenue account (NetSuite books a line on its item's account: a mapping that says
        otherwise is a ValidationError before anything is written). Billing's tax of each
        rate is a tax detail line of the mapped tax code with billing's exact base and
        amount (`taxDetailsOverride`), so NetSuite's tax and total are billing's.

        A credit note that names the invoice it credits is applied to it when the invoice is
        still open for at least the credit (else it stays open as the customer's credit),
        also when an earlier attempt made it and stopped before applying it."""
        operation = "post_document"
        refuse_unmapped(posting, operation)
        record = RECORD_OF[posting.kind]
        key = f"eid:{external_id(posting.reference)}"
        async with self._posting_locks.of(posting.reference):
            customer = await self._customer_internal_id(posting.customer_id, operation)
            row = await self._record(record, key, operation)
            created_now = row is None
            if row is None:
                body = await self._document_body(posting, customer, operation)
                await self._upsert(record, posting.reference, body, operation)
                row = await self._record(record, key, operation)
                if row is None:
                    raise _unexpected(operation, "the document it just upserted is not found", key)
            posted = _posted_document(row, posting, created_now=created_now)
            _refuse_different(row, posted, posting, customer, operation)
            if posting.kind == "credit_note" and posting.applies_to:
                await self._apply_credit(row, posting)
            if created_now:
                log.info(
                    "posted NetSuite document",
                    reference=posting.reference,
                    kind=posting.kind,
                    erp_document_id=posted.erp_document_id,
                )
            return posted

    async def _document_body(
        self, posting: LedgerPosting, customer: str, operation: str
    ) -> dict[str, Any]:
        chart = await self._books()
        lines = []
        for line in posting.lines:
            assert line.erp_product and line.revenue_account  # unmapped() refused others
            item = chart.items.get(line.erp_product)
            if item is None:
                raise self._unknown_code("item", line.erp_product, operation)
            if item[1] != line.revenue_account:
                raise ValidationError(
                    f"NetSuite books item {line.erp_product} on account {item[1]}, the mapping "
                    f"says {line.revenue_account}: correct the mapping or the item",
                    system=SYSTEM,
                    operation=operation,
                    remote_code="mapping_mismatch",
                )
            lines.append(
                {
                    "item": {"id": item[0]},
                    "quantity": line.quantity,
                    "rate": line.unit_price,
                    "amount": line.quantity * line.unit_price,
                    "description": line.description,
                }
            )
        taxes = []
        for tax in posting.taxes:
            assert tax.erp_tax
            code = chart.tax_codes.get(tax.erp_tax)
            if code is None:
                raise self._unknown_code("tax code", tax.erp_tax, operation)
            taxes.append({"taxCode": {"id": code}, "taxBasis": tax.base, "taxAmount": tax.amount})
        body: dict[str, Any] = {
            "entity": {"id": customer},
            "currency": {"id": await self._currency_id(posting.currency, operation)},
            "tranDate": posting.billing_date.isoformat(),
            "memo": posting.description[:999],
            "item": {"items": lines},
        }
        if taxes:
            body |= {"taxDetailsOverride": True, "taxDetails": {"items": taxes}}
        return body

    async def _apply_credit(self, credit: dict[str, Any], posting: LedgerPosting) -> None:
        """Apply a credit memo nothing was applied from yet to the open invoice it credits,
        when the whole credit fits what remains due there (see `post_document`)."""
        operation = "post_document"
        assert posting.applies_to is not None
        total = _decimal(_field(credit, "total", operation), "total", operation)
        unapplied = _decimal(_field(credit, "unapplied", operation), "unapplied", operation)
        if unapplied != total:
            return  # applied already (by an earlier attempt) or refunded
        invoice = await self._record("invoice", f"eid:{external_id(posting.applies_to)}", operation)
        if invoice is None:
            log.info(
                "credit note's invoice not in NetSuite: the credit stays open",
                reference=posting.reference,
                applies_to=posting.applies_to,
            )
            return
        due = _decimal(_field(invoice, "amountRemaining", operation), "amountRemaining", operation)
        same = _ref_id(invoice, "entity", operation) == _ref_id(credit, "entity", operation) and (
            _ref_id(invoice, "currency", operation) == _ref_id(credit, "currency", operation)
        )
        if not same or due < total:
            return
        credit_id = str(_field(credit, "id", operation))
        line = {
            "doc": {"id": str(_field(invoice, "id", operation))},
            "apply": True,
            "amount": total,
        }
        await self._call(
            "PATCH",
            f"{RECORD_PATH}/creditMemo/{credit_id}",
            operation,
            body={"apply": {"items": [line]}},
        )

    async def is_period_open(self, on: dt.date) -> bool:
        """An open posting period covers `on` (not closed, nor locked for receivables). An
        open one is not asked again for OPEN_PERIOD_TTL_SECONDS; a closed one always is."""
        found_open = self._open_periods.get(on)
        if found_open is not None and time.monotonic() - found_open < OPEN_PERIOD_TTL_SECONDS:
            return True
        rows = await self._suiteql_rows(
            "SELECT id, closed, arlocked, alllocked FROM accountingperiod WHERE isposting = 'T' "
            f"AND startdate <= {_date_literal(on)} AND enddate >= {_date_literal(on)}",
            "is_period_open",
        )
        is_open = bool(rows) and all(
            row.get(flag, "F") == "F"
            for row in rows
            for flag in ("closed", "arlocked", "alllocked")
        )
        if is_open:
            self._open_periods[on] = time.monotonic()
        return is_open

    async def document_page(
        self, date_from: dt.date, date_to: dt.date, cursor: str | None, limit: int
    ) -> LedgerDocumentPage:
        """One page of the invoices and credit memos dated in [date_from, date_to] by internal
        id (ids only grow: a document created while paging lands on a later page). `cursor` is
        the last id seen. Two SuiteQL calls: the documents, then their tax lines."""
        operation = "document_page"
        answer = await self._dated_page(
            _DOCUMENT_SELECT, (INVOICE, CREDIT_MEMO), date_from, date_to, cursor, limit, operation
        )
        rows = answer["items"]
        taxes = await self._document_taxes(
            [str(_field(r, "id", operation)) for r in rows], operation
        )
        documents = [_ledger_document(row, taxes, operation) for row in rows]
        next_cursor = documents[-1].erp_document_id if answer["hasMore"] and documents else None
        return LedgerDocumentPage(documents=documents, next_cursor=next_cursor)

    async def _document_taxes(
        self, ids: Sequence[str], operation: str
    ) -> dict[str, dict[str, Decimal]]:
        """Per document id: its tax per tax code name, in the document's own sense."""
        if not ids:
            return {}
        listed = ", ".join(str(int(i)) for i in ids)
        rows = await self._suiteql_rows(
            "SELECT tl.transaction AS doc, t.type, s.name, tl.foreignamount FROM transactionline "
            "tl JOIN transaction t ON t.id = tl.transaction JOIN salestaxitem s ON s.id = tl.item"
            f" WHERE tl.taxline = 'T' AND tl.transaction IN ({listed})",
            operation,
        )
        taxes: dict[str, dict[str, Decimal]] = {}
        for row in rows:
            # Lines are stored against the receivable: an invoice's tax is a credit (negative).
            sign = -1 if _field(row, "type", operation) == INVOICE else 1
            amount = sign * _decimal(
                _field(row, "foreignamount", operation), "foreignamount", operation
            )
            per = taxes.setdefault(str(_field(row, "doc", operation)), {})
            name = str(_field(row, "name", operation))
            per[name] = per.get(name, Decimal(0)) + amount
        return taxes

    # --- payments --------------------------------------------------------------------------------

    async def find_payment(self, reference: str) -> PostedPayment | None:
        operation = "find_payment"
        rows = await self._suiteql_rows(
            f"{_PAYMENT_SELECT} WHERE t.type IN ('{PAYMENT}', '{REFUND}') "
            f"AND t.externalid = {_literal(external_id(reference))} ORDER BY t.id",
            operation,
        )
        if not rows:
            return None
        payment = _ledger_payment(rows[0], operation)
        return PostedPayment(
            reference=reference,
            kind=payment.kind,
            erp_document_id=payment.erp_document_id,
            erp_number=rows[0].get("tranid"),
            amount=payment.amount,
            applies_to=payment.applies_to or "",
            applied_document_state=_state_of_letter(rows[0].get("docstatus")),
            created_now=False,
        )

    async def post_payment(self, posting: PaymentPosting) -> PostedPayment:
        """Upsert the customer payment (or refund) whose external id is the posting's
        reference, applied to the invoice (or credit memo) `applies_to` names: NotFoundError
        when NetSuite holds no such document, RejectedError when the amount exceeds what
        remains due on it (NetSuite's own rule too), or when the document is of the other kind,
        currency or customer. Looks before it upserts, as `post_document` does: an existing
        payment of another amount is a ConflictError, never overwritten."""
        operation = "post_payment"
        refuse_unmapped(posting, operation)
        record = RECORD_OF[posting.kind]
        key = f"eid:{external_id(posting.reference)}"
        async with self._posting_locks.of(posting.reference):
            document = await self._document_to_settle(posting, operation)
            row = await self._record(record, key, operation, expand=True)
            created_now = row is None
            if row is None:
                body = await self._payment_body(posting, document, operation)
                await self._upsert(record, posting.reference, body, operation)
                row = await self._record(record, key, operation, expand=True)
                if row is None:
                    raise _unexpected(operation, "the payment it just upserted is not found", key)
            _refuse_other_payment(row, document, posting, operation)
            settled = await self._record(
                RECORD_OF[_settles(posting)], str(_field(document, "id", operation)), operation
            )
            return PostedPayment(
                reference=posting.reference,
                kind=posting.kind,
                erp_document_id=str(_field(row, "id", operation)),
                erp_number=row.get("tranId"),
                amount=posting.amount,
                applies_to=posting.applies_to,
                applied_document_state=_state_of(settled or document, operation),
                created_now=created_now,
            )

    async def _document_to_settle(self, posting: PaymentPosting, operation: str) -> dict[str, Any]:
        wanted = _settles(posting)
        key = f"eid:{external_id(posting.applies_to)}"
        document = await self._record(RECORD_OF[wanted], key, operation)
        if document is None:
            other: Literal["invoice", "credit_note"] = (
                "credit_note" if wanted == "invoice" else "invoice"
            )
            if await self._record(RECORD_OF[other], key, operation) is not None:
                raise RejectedError(
                    f"{posting.reference} cannot settle {posting.applies_to}: a "
                    f"{posting.kind} settles a {wanted}, not a {other}",
                    system=SYSTEM,
                    operation=operation,
                    remote_code="mismatch",
                )
            raise NotFoundError(
                f"NetSuite has no {wanted} for {posting.applies_to!r}: {posting.kind} "
                f"{posting.reference} waits until it is posted",
                system=SYSTEM,
                operation=operation,
            )
        problems = []
        currency = _ref_name(document, "currency", operation)
        if currency != posting.amount.currency.upper():
            problems.append(f"document in {currency}, {posting.kind} in {posting.amount.currency}")
        customer = await self._customer_internal_id(posting.customer_id, operation)
        if _ref_id(document, "entity", operation) != customer:
            problems.append(f"document of another customer than {posting.customer_id}")
        if problems:
            raise RejectedError(
                f"{posting.reference} cannot settle {posting.applies_to}: {'; '.join(problems)}",
                system=SYSTEM,
                operation=operation,
                remote_code="mismatch",
                remote_answer=_jsonable(document),
            )
        return document

    async def _payment_body(
        self, posting: PaymentPosting, document: dict[str, Any], operation: str
    ) -> dict[str, Any]:
        due_field = "amountRemaining" if posting.kind == "payment" else "unapplied"
        due = _decimal(_field(document, due_field, operation), due_field, operation)
        if posting.amount.amount > due:
            raise RejectedError(
                f"{posting.kind} {posting.reference} of {posting.amount} exceeds the {due} "
                f"{posting.amount.currency} open on {posting.applies_to}",
                system=SYSTEM,
                operation=operation,
                remote_code="overpayment",
                remote_answer={"open": str(due), "amount": str(posting.amount.amount)},
            )
        chart = await self._books()
        assert posting.journal and posting.clearing_account  # unmapped() refused others
        method = chart.payment_methods.get(posting.journal)
        if method is None:
            raise self._unknown_code("payment method", posting.journal, operation)
        account = chart.accounts.get(posting.clearing_account)
        if account is None:
            raise self._unknown_code("account", posting.clearing_account, operation)
        body: dict[str, Any] = {
            "entity": {"id": _ref_id(document, "entity", operation)},
            "currency": {"id": _ref_id(document, "currency", operation)},
            "tranDate": posting.payment_date.isoformat(),
            "memo": posting.description[:999],
            "paymentMethod": {"id": method},
            "account": {"id": account},
            "apply": {
                "items": [
                    {
                        "doc": {"id": str(_field(document, "id", operation))},
                        "apply": True,
                        "amount": posting.amount.amount,
                    }
                ]
            },
        }
        if posting.kind == "payment":
            body["payment"] = posting.amount.amount
        return body

    async def payment_page(
        self, date_from: dt.date, date_to: dt.date, cursor: str | None, limit: int
    ) -> LedgerPaymentPage:
        """One page of the customer payments and refunds dated in [date_from, date_to], by
        internal id, each with the reference of the document it is applied to."""
        operation = "payment_page"
        answer = await self._dated_page(
            _PAYMENT_SELECT, (PAYMENT, REFUND), date_from, date_to, cursor, limit, operation
        )
        payments: dict[str, LedgerPayment] = {}
        for row in answer["items"]:
            payment = _ledger_payment(row, operation)
            payments.setdefault(payment.erp_document_id, payment)
        listed = list(payments.values())
        next_cursor = listed[-1].erp_document_id if answer["hasMore"] and listed else None
        return LedgerPaymentPage(payments=listed, next_cursor=next_cursor)

    async def open_receivable_page(self, cursor: str | None, limit: int) -> ReceivablePage:
        """What each customer (by external id) owes now, per transaction currency: what
        remains due on its invoices, less what remains unapplied of its credit memos and
        payments. Customers owing nothing are left out; the cursor is the last customer id
        of the previous page. Two SuiteQL calls (more when a page holds over 1000 documents)."""
        operation = "open_receivable_page"
        check_limit(limit, operation)
        after = cursor_id(cursor, operation)
        answer = await self._suiteql(
            f"SELECT id, externalid FROM customer WHERE externalid IS NOT NULL AND id > {after} "
            "ORDER BY id",
            operation,
            limit=min(limit, SUITEQL_MAX_LIMIT),
        )
        customers = answer["items"]
        if not customers:
            return ReceivablePage(receivables=[], next_cursor=None)
        ids = ", ".join(str(int(_field(c, "id", operation))) for c in customers)
        rows = await self._suiteql_rows(
            "SELECT c.externalid AS customer, cur.symbol AS currency, t.type, "
            "t.foreignamountremaining AS remaining FROM transaction t "
            "JOIN customer c ON c.id = t.entity JOIN currency cur ON cur.id = t.currency "
            f"WHERE t.entity IN ({ids}) AND t.type IN ('{INVOICE}', '{CREDIT_MEMO}', "
            f"'{PAYMENT}') ORDER BY t.id",
            operation,
        )
        owed: dict[tuple[str, str], Decimal] = {}
        for row in rows:
            sign = 1 if _field(row, "type", operation) == INVOICE else -1
            key = (
                reference_of(str(_field(row, "customer", operation))),
                str(_field(row, "currency", operation)),
            )
            remaining = _decimal(row.get("remaining", "0"), "foreignamountremaining", operation)
            owed[key] = owed.get(key, Decimal(0)) + sign * remaining
        receivables = [
            Receivable(customer_id=customer, amount=_money(amount, currency, operation))
            for (customer, currency), amount in sorted(owed.items())
            if amount
        ]
        next_cursor = str(_field(customers[-1], "id", operation)) if answer["hasMore"] else None
        return ReceivablePage(receivables=receivables, next_cursor=next_cursor)

    async def catalog(self) -> list[CatalogEntry]:
        """Items, accounts, tax codes, payment methods (the port's journals) and currencies
        (active when the account has an exchange rate for it)."""
        operation = "catalog"
        queries = {
            "product": "SELECT itemid AS key, displayname AS name, isinactive FROM item",
            "account": "SELECT acctnumber AS key, acctname AS name, isinactive FROM account",
            "tax": "SELECT name AS key, name, isinactive FROM salestaxitem",
            "journal": "SELECT name AS key, name, isinactive FROM paymentmethod",
            "currency": "SELECT c.symbol AS key, c.name, CASE WHEN c.isinactive = 'F' AND "
            "EXISTS (SELECT 1 FROM currencyrate r WHERE r.transactioncurrency = c.id) "
            "THEN 'F' ELSE 'T' END AS isinactive FROM currency c",
        }
        entries = []
        for kind, query in queries.items():
            for row in await self._suiteql_rows(f"{query} ORDER BY key", operation):
                entries.append(
                    CatalogEntry(
                        kind=kind,
                        key=str(_field(row, "key", operation)),
                        name=str(row.get("name") or ""),
                        active=row.get("isinactive") != "T",
                    )
                )
        return entries


# --- reading NetSuite's answers -----------------------------------------------------------

_DOCUMENT_SELECT = (
    "SELECT t.id, t.tranid, t.type, t.externalid, TO_CHAR(t.trandate, 'YYYY-MM-DD') AS trandate,"
    " t.foreigntotal, t.status, c.externalid AS customer, cur.symbol AS currency"
    " FROM transaction t JOIN customer c ON c.id = t.entity"
    " JOIN currency cur ON cur.id = t.currency"
)
_PAYMENT_SELECT = (
    "SELECT t.id, t.tranid, t.type, t.externalid, TO_CHAR(t.trandate, 'YYYY-MM-DD') AS trandate,"
    " t.foreigntotal, c.externalid AS customer, cur.symbol AS currency,"
    " d.externalid AS appliesto, d.status AS docstatus"
    " FROM transaction t JOIN customer c ON c.id = t.entity"
    " JOIN currency cur ON cur.id = t.currency"
    " LEFT JOIN previoustransactionlink l ON l.nextdoc = t.id"
    " LEFT JOIN transaction d ON d.id = l.previousdoc"
)


def _settles(posting: PaymentPosting) -> Literal["invoice", "credit_note"]:
    return "invoice" if posting.kind == "payment" else "credit_note"


def _state_of(document: Mapping[str, Any], operation: str) -> str:
    status = _field(_field(document, "status", operation), "id", operation)
    return "paid" if status in SETTLED_STATUSES else "posted"


def _state_of_letter(letter: Any) -> str:
    if letter is None:
        return "unknown"
    return "paid" if letter == SETTLED_LETTER else "posted"


def _party_record(row: Mapping[str, Any], customer_id: str, operation: str) -> AccountRecord:
    return AccountRecord(
        system=SYSTEM,
        external_id=str(_field(row, "id", operation)),
        customer_id=customer_id,
        name=str(row.get("companyName") or ""),
        email=row.get("email"),
    )


def _posted_document(
    row: Mapping[str, Any], posting: LedgerPosting, *, created_now: bool
) -> PostedDocument:
    operation = "post_document"
    total = _decimal(_field(row, "total", operation), "total", operation)
    return PostedDocument(
        reference=posting.reference,
        kind=posting.kind,
        erp_document_id=str(_field(row, "id", operation)),
        erp_number=row.get("tranId"),
        total=_money(total, _ref_name(row, "currency", operation), operation),
        state=_state_of(row, operation),
        created_now=created_now,
    )


def _refuse_different(
    row: Mapping[str, Any],
    posted: PostedDocument,
    posting: LedgerPosting,
    customer: str,
    operation: str,
) -> None:
    """A document NetSuite holds for this reference that says something else than the
    posting (total, currency, customer = its internal id) is never accepted nor overwritten."""
    problems = []
    if posted.total != posting.total:
        problems.append(f"total {posted.total} instead of {posting.total}")
    entity = _ref_id(row, "entity", operation)
    if entity != customer:
        problems.append(f"customer {entity} instead of {customer} ({posting.customer_id})")
    if problems:
        raise _mismatch(
            f"NetSuite document {posted.erp_document_id} for reference "
            f"{posting.reference!r} does not match the posting: "
            f"{'; '.join(problems)}",
            row,
            operation,
        )


def _mismatch(message: str, row: Mapping[str, Any], operation: str) -> ConflictError:
    return ConflictError(
        f"{message}: not overwritten",
        system=SYSTEM,
        operation=operation,
        remote_code="mismatch",
        remote_answer=_jsonable(row),
    )


def _refuse_other_payment(
    row: Mapping[str, Any], document: Mapping[str, Any], posting: PaymentPosting, operation: str
) -> None:
    """A payment NetSuite holds for this reference of another amount, or applied to another
    document, is never accepted nor overwritten."""
    problems = []
    amount = _decimal(_field(row, "total", operation), "total", operation)
    if amount != posting.amount.amount:
        problems.append(f"of {amount}, not {posting.amount.amount}")
    applied = _field(_field(row, "apply", operation), "items", operation)
    applied_to = {_ref_id(line, "doc", operation) for line in applied}
    if str(_field(document, "id", operation)) not in applied_to:
        problems.append(f"applied to {sorted(applied_to)}, not to {posting.applies_to}")
    if problems:
        raise _mismatch(
            f"NetSuite payment {row.get('id')} for {posting.reference!r} is {'; '.join(problems)}",
            row,
            operation,
        )


def _ledger_document(
    row: Mapping[str, Any], taxes: Mapping[str, Mapping[str, Decimal]], operation: str
) -> LedgerDocument:
    doc_id = str(_field(row, "id", operation))
    kind: Literal["invoice", "credit_note"] = (
        "credit_note" if _field(row, "type", operation) == CREDIT_MEMO else "invoice"
    )
    currency = str(_field(row, "currency", operation))
    total = _money(
        abs(_decimal(_field(row, "foreigntotal", operation), "foreigntotal", operation)),
        currency,
        operation,
    )
    customer = row.get("customer")
    return LedgerDocument(
        erp_document_id=doc_id,
        reference=reference_of(str(row["externalid"])) if row.get("externalid") else None,
        kind=kind,
        number=row.get("tranid"),
        total=total,
        state=_state_of_letter(row.get("status")),
        customer_id=reference_of(str(customer)) if customer else None,
        document_date=dt.date.fromisoformat(str(row["trandate"])) if row.get("trandate") else None,
        taxes={
            name: _money(amount, currency, operation)
            for name, amount in taxes.get(doc_id, {}).items()
        },
    )


def _ledger_payment(row: Mapping[str, Any], operation: str) -> LedgerPayment:
    kind: Literal["payment", "refund"] = (
        "payment" if _field(row, "type", operation) == PAYMENT else "refund"
    )
    amount = abs(_decimal(_field(row, "foreigntotal", operation), "foreigntotal", operation))
    customer, applies_to = row.get("customer"), row.get("appliesto")
    return LedgerPayment(
        erp_document_id=str(_field(row, "id", operation)),
        reference=reference_of(str(row["externalid"])) if row.get("externalid") else None,
        kind=kind,
        amount=_money(amount, str(_field(row, "currency", operation)), operation),
        applies_to=reference_of(str(applies_to)) if applies_to else None,
        customer_id=reference_of(str(customer)) if customer else None,
        payment_date=dt.date.fromisoformat(str(row["trandate"])) if row.get("trandate") else None,
        state="posted",
    )


__all__ = ["NetSuiteLedger", "NetSuiteTokenAuth", "external_id", "reference_of", "wire_json"]
