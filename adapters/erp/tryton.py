"""TrytonLedger: the Ledger port over Tryton 8.2 JSON-RPC.

Wire facts (verified against trytond 8.2.1):

- endpoint `POST {base_url}/{database}/rpc/` with `{"id", "method", "params"}`; the
  database-less `POST {base_url}/rpc/` answers `common.server.version`;
- `common.db.login` `[login, {"password": ...}]` returns `[user_id, session, bus_url]`;
  later calls send `Authorization: Session base64("login:user_id:session")`;
- model calls take the context as the last parameter; it must carry `company` and
  `companies` (from `model.res.user.get_preferences(True, {})`);
- an expired or unknown session is HTTP 401 (a method that is not RPC-exposed is 403);
  a refused login is 401, too many failed logins 429, an unknown database 404,
  a locked/unavailable database 503, a server-side timeout 504;
- business errors come back with HTTP 200 and `"error": ["UserError", [message,
  description, domain]]` (or `UserWarning`, `ConcurrencyException`, `LoginException`);
  any other server exception is `"error": [str(exception), traceback]`;
- a party's `account_receivable` reads as None unless set on the party itself (the
  company default lives in `account.configuration.default_account_receivable`);
- `account.invoice.post` on an already posted invoice is a no-op; posting numbers a
  customer invoice from the strict invoice sequence, or from the credit-note sequence
  when every line is <= 0 and the total < 0, and fills an empty `invoice_date` with the
  ERP's today;
- Tryton 8.2 converts a foreign invoice at its `currency_date`, which is the invoice date
  (or today), not the accounting date; a currency's `rate` read with `date` in the context
  is the latest rate on or before that date, None when there is none;
- manual invoice taxes (`account.invoice.tax`, `manual`) survive posting untouched when the
  lines carry no taxes; an invoice line must carry the invoice's `currency` and `company`;
- a posted invoice accepts `payment_lines` writes; the `account.move.reconcile_lines`
  wizard (create / execute "start" with `active_model`/`active_ids` / delete) reconciles
  with an exchange-difference move, and the reconciliation marks the invoice paid (its
  queued `process` runs at the end of the request when no queue worker is configured);
- dotted fields in `search_read` and `read` come back nested (`"move.origin"` as
  `row["move."]`); through a one2many or many2many as a list of dicts with their ids, to any
  depth (`"payment_lines.move.number"` as `row["payment_lines."][i]["move."]["number"]`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import itertools
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from types import TracebackType
from typing import Any, Literal

import httpx
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
    AuthenticationError,
    ConflictError,
    NotFoundError,
    RejectedError,
    TransientError,
    ValidationError,
    error_for_status,
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
    PostalAddress,
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
# The ERP product every invoice line is booked against (the ERP database's setup creates it).
SERVICE_PRODUCT_CODE = "SUBSCRIPTION"
OPEN_PERIOD_TRUSTED_SECONDS = 60.0
ERP_TODAY_TRUSTED_SECONDS = 60.0
PARTY_FIELDS = ["id", "code", "name"]
INVOICE_FIELDS = [
    "id",
    "number",
    "state",
    "reference",
    "total_amount",
    "invoice_date",
    "sequence_type_cache",
    "party.code",
    "currency.code",
    "tax_amount",
]
# What settling a document reads of it besides INVOICE_FIELDS.
SETTLE_FIELDS = ["amount_to_pay", "account", "party", "currency", "payment_lines", "lines_to_pay"]
# Whether each of a document's receivable and payment lines is reconciled yet, read with the
# document, so reconciling it needs no search first (`_reconcilable_lines`).
RECONCILED_FIELDS = ["lines_to_pay.reconciliation", "payment_lines.reconciliation"]
# What posting gave a payment's move, read with the document it is applied to (`_as_posted`).
APPLIED_MOVE_FIELDS = ["payment_lines.move.number", "payment_lines.move.state"]
# What a payment or refund reads as: its receivable line, with the move around it.
PAYMENT_LINE_FIELDS = [
    "id",
    "debit",
    "credit",
    "amount_second_currency",
    "second_currency.code",
    "party.code",
    "reconciliation",
    "move",
    "move.description",
    "move.number",
    "move.state",
    "move.date",
    "move.origin",
]
# States in which an invoice is in the books; `post` turns the two others into one of these.
BOOKED_STATES = ("posted", "paid")
POSTABLE_STATES = ("draft", "validated")

log = get_logger(__name__)


# --- the Tryton JSON codec ------------------------------------------------------------


def _encode(obj: Any) -> Any:
    """json `default` hook: Tryton's typed objects (`{"__class__": ...}`)."""
    if isinstance(obj, Decimal):
        return {"__class__": "Decimal", "decimal": str(obj)}
    if isinstance(obj, dt.datetime):
        # Tryton stores naive UTC datetimes; aware values are converted, naive ones trusted.
        if obj.tzinfo is not None:
            obj = obj.astimezone(dt.UTC).replace(tzinfo=None)
        return {
            "__class__": "datetime",
            "year": obj.year,
            "month": obj.month,
            "day": obj.day,
            "hour": obj.hour,
            "minute": obj.minute,
            "second": obj.second,
            "microsecond": obj.microsecond,
        }
    if isinstance(obj, dt.date):
        return {"__class__": "date", "year": obj.year, "month": obj.month, "day": obj.day}
    if isinstance(obj, dt.time):
        return {
            "__class__": "time",
            "hour": obj.hour,
            "minute": obj.minute,
            "second": obj.second,
            "microsecond": obj.microsecond,
        }
    if isinstance(obj, dt.timedelta):
        return {"__class__": "timedelta", "seconds": obj.total_seconds()}
    if isinstance(obj, bytes | bytearray):
        return {"__class__": "bytes", "base64": base64.b64encode(obj).decode("ascii")}
    if isinstance(obj, set | frozenset):
        return list(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable for Tryton")


def _decode_object(obj: dict[str, Any]) -> Any:
    """json `object_hook`: the inverse of `_encode`; datetimes come back aware in UTC."""
    kind = obj.get("__class__")
    if kind is None:
        return obj
    if kind == "Decimal":
        return Decimal(obj["decimal"])
    if kind == "date":
        return dt.date(obj["year"], obj["month"], obj["day"])
    if kind == "datetime":
        return dt.datetime(
            obj["year"],
            obj["month"],
            obj["day"],
            obj["hour"],
            obj["minute"],
            obj["second"],
            obj.get("microsecond", 0),
            tzinfo=dt.UTC,
        )
    if kind == "time":
        return dt.time(obj["hour"], obj["minute"], obj["second"], obj.get("microsecond", 0))
    if kind == "timedelta":
        return dt.timedelta(seconds=obj["seconds"])
    if kind == "bytes":
        return base64.b64decode(obj["base64"])
    return obj


def tryton_dumps(payload: Any) -> str:
    """JSON text as Tryton reads it (Decimal, date, datetime... as typed objects)."""
    return json.dumps(payload, default=_encode, separators=(",", ":"))


def tryton_loads(text: str | bytes) -> Any:
    """Python values from Tryton JSON text (Decimal, date, datetime... restored)."""
    return json.loads(text, object_hook=_decode_object)


# --- the JSON-RPC session ---------------------------------------------------------------


class _TrytonRpc:
    """One Tryton JSON-RPC session over a pooled client: login, context, re-login on 401."""

    def __init__(
        self,
        base_url: str,
        database: str,
        user: str,
        password: str,
        *,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.database = database
        self._user = user
        self._password = password
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            transport=transport,
        )
        self._ids = itertools.count(1)
        self._login_lock = asyncio.Lock()
        self._authorization: str | None = None
        self._context: dict[str, Any] = {}
        # Bumped on every login so concurrent callers that saw the same 401 re-login once.
        self._epoch = 0

    @property
    def context(self) -> dict[str, Any]:
        return dict(self._context)

    async def server_version(self) -> str:
        return str(await self._post("/rpc/", "common.server.version", []))

    async def call(
        self, method: str, args: Sequence[Any], context: Mapping[str, Any] | None = None
    ) -> Any:
        """Call `method` (e.g. `model.party.party.search`) with the session's context last."""
        await self.ensure_session()
        for attempt in (1, 2):
            # Snapshot which session this attempt uses, so a 401 re-logs in only if still current.
            authorization, epoch = self._authorization, self._epoch
            params = [*args, {**self._context, **(context or {})}]
            try:
                return await self._post(self._db_path, method, params, authorization=authorization)
            except AdapterError as err:
                if err.status == 403 and attempt == 2:
                    # Still refused with a fresh session: the method is not exposed over RPC.
                    raise ValidationError(
                        f"{method} is not callable over RPC",
                        system=SYSTEM,
                        operation=method,
                        status=403,
                    ) from err
                # 401 is an expired session; a 403 may be one too, so re-login once for both.
                if attempt == 2 or err.status not in (401, 403):
                    raise
                log.info("tryton session refused, logging in again", database=self.database)
                await self._relogin(epoch)
        raise AssertionError("unreachable")  # pragma: no cover

    async def login(self) -> None:
        async with self._login_lock:
            await self._login()

    async def logout(self) -> None:
        authorization, self._authorization = self._authorization, None
        if authorization is None:
            return
        # Best effort: an unreachable server forgets the session by itself after the timeout.
        with contextlib.suppress(AdapterError):
            await self._post(
                self._db_path,
                "common.db.logout",
                [],
                authorization=authorization,
                request_timeout=2.0,
            )

    async def aclose(self) -> None:
        await self.logout()
        await self._client.aclose()

    @property
    def _db_path(self) -> str:
        return f"/{self.database}/rpc/"

    async def ensure_session(self) -> None:
        if self._authorization is None:
            async with self._login_lock:
                if self._authorization is None:
                    await self._login()

    async def _relogin(self, seen_epoch: int) -> None:
        async with self._login_lock:
            if self._epoch == seen_epoch:
                await self._login()

    async def _login(self) -> None:
        try:
            await self._open_session()
        except BaseException:
            # No half-open session: the next call starts with a fresh login.
            self._authorization = None
            raise

    async def _open_session(self) -> None:
        try:
            result = await self._post(
                self._db_path, "common.db.login", [self._user, {"password": self._password}]
            )
        except AdapterError as err:
            if err.status == 401:
                raise AuthenticationError(
                    "the ERP refused the integration user's credentials",
                    system=SYSTEM,
                    operation="common.db.login",
                    status=401,
                ) from None
            raise
        user_id, session = result[0], result[1]
        token = base64.b64encode(f"{self._user}:{user_id}:{session}".encode()).decode("ascii")
        authorization = f"Session {token}"
        preferences = await self._post(
            self._db_path,
            "model.res.user.get_preferences",
            [True, {}],
            authorization=authorization,
        )
        if not preferences.get("company") or not preferences.get("companies"):
            raise AuthenticationError(
                "the ERP integration user has no company; invoices cannot be posted",
                system=SYSTEM,
                operation="model.res.user.get_preferences",
            )
        self._context = dict(preferences)
        self._authorization = authorization
        self._epoch += 1

    async def _post(
        self,
        path: str,
        method: str,
        params: list[Any],
        *,
        authorization: str | None = None,
        request_timeout: float | None = None,
    ) -> Any:
        with adapter_call(SYSTEM, method):
            return await self._rpc(path, method, params, authorization, request_timeout)

    async def _rpc(
        self,
        path: str,
        method: str,
        params: list[Any],
        authorization: str | None,
        request_timeout: float | None,
    ) -> Any:
        headers = {"Authorization": authorization} if authorization else {}
        body = tryton_dumps({"id": next(self._ids), "method": method, "params": params})
        with transport_errors_as_transient(SYSTEM, method):
            response = await self._client.post(
                path,
                content=body,
                headers=headers,
                timeout=request_timeout
                if request_timeout is not None
                else httpx.USE_CLIENT_DEFAULT,
            )
        if response.status_code != 200:
            raise error_for_status(
                response.status_code,
                response.reason_phrase or f"HTTP {response.status_code}",
                system=SYSTEM,
                operation=method,
                retry_after=response.headers.get("Retry-After"),
                remote_answer=response.text[:500] or None,
            )
        try:
            payload = tryton_loads(response.content)
        except ValueError as err:
            raise TransientError(
                "the ERP answered something that is not JSON",
                system=SYSTEM,
                operation=method,
                status=response.status_code,
                remote_answer=response.text[:500],
            ) from err
        if not isinstance(payload, dict):
            raise TransientError(
                "the ERP answered an unexpected JSON document",
                system=SYSTEM,
                operation=method,
                remote_answer=payload,
            )
        if payload.get("error") is not None:
            raise _error_from_body(payload["error"], method)
        return payload.get("result")


def _error_from_body(error: Any, method: str) -> AdapterError:
    """The taxonomy member for a Tryton error answer (HTTP 200 with `error`)."""
    kind, args = (error[0], error[1]) if isinstance(error, list) and len(error) == 2 else (None, [])
    common: dict[str, Any] = {"system": SYSTEM, "operation": method, "remote_answer": error}
    if kind == "UserError":
        message, description, domain = _three(args)
        text = _join(message, description)
        # A domain names the fields the request got wrong; otherwise a business rule said no.
        cls = ValidationError if domain else RejectedError
        return cls(text, remote_code="UserError", **common)
    if kind == "UserWarning":
        name, message, description = _three(args)
        # An integration cannot click "ok" on a warning: it is a rejection until someone does.
        return RejectedError(
            _join(message, description), remote_code=f"UserWarning:{name}", **common
        )
    if kind == "ConcurrencyException":
        return TransientError(str(args), remote_code="ConcurrencyException", **common)
    if kind == "LoginException":
        message = args[1] if isinstance(args, list) and len(args) > 1 else str(args)
        return AuthenticationError(str(message), remote_code="LoginException", **common)
    # Any other server exception: a bug or a bad call on our side; retrying will not help.
    text = str(kind if kind is not None else error)
    return RejectedError(f"ERP server error: {text}", remote_code="ServerError", **common)


def _three(args: Any) -> tuple[Any, Any, Any]:
    padded = [*(args if isinstance(args, list) else [args]), None, None, None]
    return padded[0], padded[1], padded[2]


def _join(message: Any, description: Any) -> str:
    return " - ".join(str(part) for part in (message, description) if part)


# --- the adapter ----------------------------------------------------------------------


class TrytonLedger:
    """The Ledger port on a Tryton ERP: parties keyed by `code` = canonical customer id."""

    def __init__(
        self,
        base_url: str,
        database: str,
        user: str,
        password: str | SecretStr,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        secret = password.get_secret_value() if isinstance(password, SecretStr) else password
        self._rpc = _TrytonRpc(
            base_url, database, user, secret, timeout=timeout, transport=transport
        )
        self._country_ids: dict[str, int | None] = {}
        self._invoicing: _InvoicingSetup | None = None
        self._invoicing_lock = asyncio.Lock()
        self._currency_ids: dict[str, int] = {}
        self._codes: dict[tuple[_CodeKind, str], _BooksEntry] = {}
        self._open_periods: dict[dt.date, float] = {}
        self._open_period_ids: dict[dt.date, tuple[int, float]] = {}
        self._fiscal_years: list[tuple[dt.date, dt.date]] = []
        self._today: tuple[dt.date, float] | None = None
        # One posting per reference at a time in this process (see `post_document`).
        self._posting_locks = PostingLocks()

    async def __aenter__(self) -> TrytonLedger:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def context(self) -> dict[str, Any]:
        """The Tryton context sent with every call (company, companies, language...)."""
        return self._rpc.context

    async def health(self) -> bool:
        """True when the Tryton server answers `common.server.version`."""
        try:
            await self._rpc.server_version()
        except AdapterError:
            return False
        return True

    async def server_version(self) -> str:
        return await self._rpc.server_version()

    async def login(self) -> None:
        """Log in now (otherwise the first call does); raises AuthenticationError."""
        await self._rpc.login()

    async def call(
        self, model_method: str, *args: Any, context: Mapping[str, Any] | None = None
    ) -> Any:
        """Call a Tryton RPC method, e.g. `call("model.account.invoice.post", [42])`.

        The session context (company, companies) is appended as the last parameter;
        `context` adds or overrides keys for this call only.
        """
        return await self._rpc.call(model_method, args, context)

    async def find_party(self, customer_id: str) -> AccountRecord | None:
        party = await self._find_party_row(customer_id)
        return _party_record(party) if party else None

    async def ensure_party(self, customer: Customer) -> AccountRecord:
        party = await self._find_party_row(customer.customer_id)
        if party is None:
            party = await self._create_party(customer)
        elif party["name"] != customer.name:
            await self.call("model.party.party.write", [party["id"]], {"name": customer.name})
            party = {**party, "name": customer.name}
        return _party_record(party)

    # --- documents ------------------------------------------------------------------

    async def find_document(self, reference: str) -> PostedDocument | None:
        """The customer invoice or credit note carrying `reference`, in whatever state.

        Several is a finding (our reference is meant to be unique and Tryton does not
        enforce it): ConflictError naming them, never a silent pick.
        """
        row = _single(await self._invoice_rows(reference), reference, "find_document")
        return _posted_document(row, kind=None, created_now=False) if row else None

    async def post_document(self, posting: LedgerPosting) -> PostedDocument:
        """Create and post the ERP document for `posting`, exactly once per reference.

        Lookup-before-create on the reference makes a retry after a lost answer adopt what
        the earlier attempt left: a posted document is returned, a draft is posted.
        Concurrent calls for one reference queue on a per-reference lock in this process;
        across processes the re-check after create (`_adopt_created`) backs off.

        Each line books on its mapped ERP product and revenue account (no tax computed by
        the ERP); billing's tax of each rate becomes a manual invoice tax of the mapped ERP
        tax with billing's exact base and amount, so the ERP's tax and total are billing's
        to the minor unit.

        Dates (`_invoice_date`): Tryton numbers from a strict sequence, refusing a customer
        document dated before one already numbered in it or dated in its future, and it
        converts a foreign document at its invoice date. A document in the company
        currency is dated by posting (the ERP's today: always in order). A foreign one is
        dated the billing date, or the nearest date Tryton accepts (today for a date in the
        ERP's future, the latest numbered document's date for one reaching the ERP late)
        when that date's rate is the billing date's; otherwise RejectedError
        `out_of_sequence` naming both dates (finance decides), nothing created.
        """
        refuse_unmapped(posting, "post_document")
        async with self._posting_locks.of(posting.reference):
            existing = _single(
                await self._invoice_rows(posting.reference), posting.reference, "post_document"
            )
            if existing is not None:
                posted = await self._adopt_existing(existing, posting)
            else:
                posted = await self._create_and_post(posting)
            if posted.kind == "credit_note" and posting.applies_to:
                await self._apply_credit(int(posted.erp_document_id), posting)
            return posted

    async def _apply_credit(self, credit_id: int, posting: LedgerPosting) -> None:
        """A credit note that credits an invoice still open in the ERP settles it there, as
        billing takes it off that invoice's amount remaining: its receivable line is added
        to the invoice's payments (Tryton's own "pay with a credit note"), and the two are
        reconciled once nothing remains, so neither stays open in the receivables' aging.

        Only when the whole credit fits what the invoice has open: a larger one (billing
        splits it into a pre- and a post-payment part, the latter a customer credit) and a
        credit on a paid invoice stay open on their own, as the customer's credit. Safe to
        repeat: what is applied already is not applied twice."""
        operation = "post_document"
        assert posting.applies_to is not None
        rows = await self._invoice_rows(posting.applies_to)
        target = _single(rows, posting.applies_to, operation)
        if target is None or target["state"] not in BOOKED_STATES:
            log.info("credit note's invoice not open in the ERP: the credit stays open",
                     reference=posting.reference, applies_to=posting.applies_to)  # fmt: skip
            return
        invoice = await self._settled_document(target["id"])
        credit = await self._settled_document(credit_id)
        lines = _reconcilable_lines({**credit, "payment_lines": []})
        to_add = [line for line in lines if line not in invoice["payment_lines"]]
        if to_add:
            if invoice["state"] == "paid" or abs(credit["total_amount"]) > invoice["amount_to_pay"]:
                return
            try:
                await self.call(
                    "model.account.invoice.write",
                    [invoice["id"]],
                    {"payment_lines": [("add", to_add)]},
                )
            except RejectedError:
                applied = (await self._settled_document(invoice["id"]))["payment_lines"]
                if not set(to_add) <= set(applied):
                    raise
            invoice = await self._settled_document(invoice["id"])
        if invoice["state"] != "paid" and not invoice["amount_to_pay"]:
            await self._reconcile_settled(invoice)

    async def is_period_open(self, on: dt.date) -> bool:
        """An open standard period of the company covers `on`, in an open fiscal year.

        An open answer is trusted for a minute (postings ask for every document); a period
        closed meanwhile still stops the posting, by Tryton's own refusal.
        """
        if self._open_periods.get(on, 0.0) > time.monotonic():
            return True
        periods = await self.call(
            "model.account.period.search_read",
            [
                ("start_date", "<=", on),
                ("end_date", ">=", on),
                ("fiscalyear.company", "=", await self._company_id()),
                ("type", "=", "standard"),
            ],
            0,
            1,
            # The period Tryton itself would pick (`account.period.find`).
            [("start_date", "DESC")],
            ["state", "fiscalyear.state"],
        )
        if not periods:
            return False
        period = periods[0]
        fiscal_year = period.get("fiscalyear.") or {}
        is_open = bool(period["state"] == "open" and fiscal_year.get("state") == "open")
        if is_open:
            self._open_periods[on] = time.monotonic() + OPEN_PERIOD_TRUSTED_SECONDS
        return is_open

    async def document_page(
        self, date_from: dt.date, date_to: dt.date, cursor: str | None, limit: int
    ) -> LedgerDocumentPage:
        """One page of the customer invoices and credit notes of [date_from, date_to], by id.

        Every state counts (draft, validated, posted, paid, cancelled): a stray draft may be a
        duplicate. A document is in the range by its `invoice_date`; one without (a draft
        never posted) is in it by the UTC day of its `create_date`, and reads with
        `document_date` None. `cursor` is the last id seen; ids only grow, so documents
        created while paging land on a later page, never shift an earlier one. One RPC
        call: the taxes (per ERP tax name, in the document's direction: `_ledger_document`)
        ride along as dotted fields.
        """
        operation = "document_page"
        check_page(date_from, date_to, limit, operation)
        after_id = cursor_id(cursor, operation)
        rows = await self.call(
            "model.account.invoice.search_read",
            [
                ("type", "=", "out"),
                ("company", "=", await self._company_id()),
                ("id", ">", after_id),
                _document_date_domain(date_from, date_to),
            ],
            0,
            limit,
            [("id", "ASC")],
            # `party.code` and the taxes ride along in the same call: no second read.
            [*INVOICE_FIELDS, "taxes.amount", "taxes.description", "taxes.tax.name"],
        )
        documents = [_ledger_document(row, operation) for row in rows]
        # A short page is the last; a full one may be too, and the next page then says so.
        next_cursor = documents[-1].erp_document_id if len(documents) == limit else None
        return LedgerDocumentPage(documents=documents, next_cursor=next_cursor)

    async def _document_books(self, posting: LedgerPosting) -> _DocumentBooks:
        """The ERP ids the mapped names of a posting stand for (each read once)."""
        operation = "post_document"
        lines = []
        for line in posting.lines:
            assert line.erp_product and line.revenue_account  # post_document refused others
            product = await self._books_code("product", line.erp_product, operation)
            account = await self._books_code("account", line.revenue_account, operation)
            lines.append(_LineBooks(product.id, int(product.values["default_uom"]), account.id))
        taxes = []
        for tax in posting.taxes:
            assert tax.erp_tax
            found = await self._books_code("tax", tax.erp_tax, operation)
            taxes.append(
                _TaxBooks(
                    found.id,
                    int(found.values["invoice_account"]),
                    int(found.values["credit_note_account"]),
                )
            )
        return _DocumentBooks(lines, taxes)

    # --- payments and refunds -----------------------------------------------------------

    async def find_payment(self, reference: str) -> PostedPayment | None:
        """The payment or refund move carrying `reference` (its description), any state.

        Several is a finding, as for documents: ConflictError naming them.
        """
        rows = await self._payment_lines([("move.description", "=", reference)])
        row = _single(rows, reference, "find_payment")
        if row is None:
            return None
        documents = await self._documents_of([row])
        return _posted_payment(
            row,
            documents.get(_origin_id((row.get("move.") or {}).get("origin"))),
            created_now=False,
        )

    async def post_payment(self, posting: PaymentPosting) -> PostedPayment:
        """Record the money and apply it to the document `applies_to` names, once per
        reference (lookup before create, a draft an earlier attempt left is adopted).

        A payment is a move in the mapped (cash) journal, dated the payment date: the
        mapped clearing account against the document's receivable, converted at that
        date's rate when the document is foreign, its origin the document. Its receivable
        line joins the document's payment lines (what Tryton's own pay wizard does), and
        once nothing remains to pay, the document's receivable lines are reconciled by
        Tryton's reconcile wizard, which books any exchange difference and marks the
        document paid. A refund is the same with the money going out, on a credit note.
        """
        operation = "post_payment"
        refuse_unmapped(posting, operation)
        async with self._posting_locks.of(posting.reference):
            rows = await self._payment_lines([("move.description", "=", posting.reference)])
            existing = _single(rows, posting.reference, operation)
            document = await self._document_to_settle(posting)
            if existing is not None:
                return await self._adopt_payment(existing, document, posting)
            return await self._create_payment(document, posting)

    async def payment_page(
        self, date_from: dt.date, date_to: dt.date, cursor: str | None, limit: int
    ) -> LedgerPaymentPage:
        """One page of the payments and refunds dated in [date_from, date_to], in every
        state, by id (the cursor is the last receivable line id seen). Two RPC calls: the
        receivable lines of the cash journals' moves, then the documents they settle."""
        operation = "payment_page"
        check_page(date_from, date_to, limit, operation)
        after_id = cursor_id(cursor, operation)
        rows = await self._payment_lines(
            [
                ("id", ">", after_id),
                ("move.date", ">=", date_from),
                ("move.date", "<=", date_to),
            ],
            limit=limit,
        )
        documents = await self._documents_of(rows)
        payments = [
            _ledger_payment(row, documents.get(_origin_id((row.get("move.") or {}).get("origin"))))
            for row in rows
        ]
        next_cursor = str(rows[-1]["id"]) if len(rows) == limit else None
        return LedgerPaymentPage(payments=payments, next_cursor=next_cursor)

    async def open_receivable_page(self, cursor: str | None, limit: int) -> ReceivablePage:
        """What each party (by code) owes now, per document currency: the sum of its
        unreconciled posted receivable lines, in the document's currency (the second
        currency where a line has one). Parties owing nothing are left out. The cursor is
        the last party id of the previous page. Two RPC calls."""
        operation = "open_receivable_page"
        check_limit(limit, operation)
        setup = await self._invoicing_setup()
        after_id = cursor_id(cursor, operation)
        parties = await self.call(
            "model.party.party.search",
            [("id", ">", after_id), ("code", "!=", None)],
            0,
            limit,
            [("id", "ASC")],
            context={"active_test": False},
        )
        if not parties:
            return ReceivablePage(receivables=[], next_cursor=None)
        lines = await self.call(
            "model.account.move.line.search_read",
            [
                ("party", "in", parties),
                ("account.type.receivable", "=", True),
                ("reconciliation", "=", None),
                ("move.state", "=", "posted"),
                ("move.company", "=", await self._company_id()),
            ],
            0,
            None,
            [("id", "ASC")],
            ["party", "party.code", "debit", "credit", "amount_second_currency",
             "second_currency.code"],
        )  # fmt: skip
        owed: dict[tuple[int, str, str], Decimal] = {}
        for line in lines:
            code, amount = _line_amount(line, setup.company_currency)
            key = (int(line["party"]), str((line.get("party.") or {}).get("code")), code)
            owed[key] = owed.get(key, Decimal(0)) + amount
        receivables = [
            Receivable(customer_id=party_code, amount=Money(amount=amount, currency=currency))
            for (_, party_code, currency), amount in sorted(owed.items())
            if amount
        ]
        next_cursor = str(parties[-1]) if len(parties) == limit else None
        return ReceivablePage(receivables=receivables, next_cursor=next_cursor)

    async def catalog(self) -> list[CatalogEntry]:
        """Products, coded accounts, taxes, payment (cash) journals and currencies: what a
        finance mapping may name. A currency without any rate reads as inactive."""
        company_id = await self._company_id()
        products = await self.call(
            "model.product.product.search_read",
            [("code", "!=", None)],
            0,
            None,
            [("code", "ASC")],
            ["code", "rec_name", "active"],
        )
        accounts = await self.call(
            "model.account.account.search_read",
            [("code", "!=", None), ("company", "=", company_id), ("type", "!=", None)],
            0,
            None,
            [("code", "ASC")],
            ["code", "name", "closed"],
        )
        taxes = await self.call(
            "model.account.tax.search_read",
            [("company", "=", company_id), ("parent", "=", None)],
            0,
            None,
            [("name", "ASC")],
            ["name", "description", "active"],
        )
        journals = await self.call(
            "model.account.journal.search_read",
            [("type", "=", "cash")],
            0,
            None,
            [("code", "ASC")],
            ["code", "name", "active"],
        )
        currencies = await self.call(
            "model.currency.currency.search_read",
            [],
            0,
            None,
            [("code", "ASC")],
            ["code", "name", "active", "rates"],
        )
        entries = [
            CatalogEntry(kind="product", key=row["code"], name=row["rec_name"] or "",
                         active=bool(row["active"]))
            for row in products
        ]  # fmt: skip
        entries += [
            CatalogEntry(kind="account", key=row["code"], name=row["name"] or "",
                         active=not row["closed"])
            for row in accounts
        ]  # fmt: skip
        entries += [
            CatalogEntry(kind="tax", key=row["name"], name=row["description"] or "",
                         active=bool(row["active"]))
            for row in taxes
        ]  # fmt: skip
        entries += [
            CatalogEntry(kind="journal", key=row["code"] or row["name"], name=row["name"] or "",
                         active=bool(row["active"]))
            for row in journals
        ]  # fmt: skip
        entries += [
            CatalogEntry(kind="currency", key=row["code"], name=row["name"] or "",
                         active=bool(row["active"] and row["rates"]))
            for row in currencies
        ]  # fmt: skip
        return entries

    async def _payment_lines(
        self, domain: list[Any], *, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """The receivable lines of payment moves (cash journals) matching `domain`."""
        rows = await self.call(
            "model.account.move.line.search_read",
            [
                ("move.journal.type", "=", "cash"),
                ("account.type.receivable", "=", True),
                ("move.description", "!=", None),
                ("move.company", "=", await self._company_id()),
                *domain,
            ],
            0,
            limit,
            [("id", "ASC")],
            PAYMENT_LINE_FIELDS,
        )
        return list(rows)

    async def _documents_of(self, rows: list[dict[str, Any]]) -> dict[int | None, dict[str, Any]]:
        ids = sorted(
            {i for row in rows if (i := _origin_id((row.get("move.") or {}).get("origin")))}
        )
        if not ids:
            return {}
        documents = await self.call(
            "model.account.invoice.read",
            ids,
            [*INVOICE_FIELDS, *SETTLE_FIELDS],
        )
        return {int(row["id"]): dict(row) for row in documents}

    async def _document_to_settle(self, posting: PaymentPosting) -> dict[str, Any]:
        """The posted ERP document `applies_to` names, checked against the posting."""
        operation = "post_payment"
        rows = await self.call(
            "model.account.invoice.search_read",
            [("type", "=", "out"), ("reference", "=", posting.applies_to)],
            0,
            None,
            [("id", "ASC")],
            [*INVOICE_FIELDS, *SETTLE_FIELDS, *RECONCILED_FIELDS],
        )
        row = _single(list(rows), posting.applies_to, operation)
        if row is None or row["state"] not in BOOKED_STATES:
            state = "no document" if row is None else f"only a {row['state']} document"
            raise NotFoundError(
                f"the ERP has {state} for {posting.applies_to!r}: {posting.kind} "
                f"{posting.reference} waits until it is posted",
                system=SYSTEM,
                operation=operation,
            )
        wanted = "invoice" if posting.kind == "payment" else "credit_note"
        problems = []
        if _document_kind(row) != wanted:
            problems.append(f"a {posting.kind} settles a {wanted}, not a {_document_kind(row)}")
        currency = (row.get("currency.") or {}).get("code")
        if currency != posting.amount.currency.upper():
            problems.append(f"document in {currency}, {posting.kind} in {posting.amount.currency}")
        party = (row.get("party.") or {}).get("code")
        if party != posting.customer_id:
            problems.append(f"document of {party}, {posting.kind} of {posting.customer_id}")
        if problems:
            raise RejectedError(
                f"{posting.reference} cannot settle ERP document {row['id']} "
                f"({posting.applies_to}): {'; '.join(problems)}",
                system=SYSTEM,
                operation=operation,
                remote_code="mismatch",
                remote_answer=_jsonable(row),
            )
        return dict(row)

    async def _create_payment(
        self, document: dict[str, Any], posting: PaymentPosting
    ) -> PostedPayment:
        operation = "post_payment"
        remaining = abs(document["amount_to_pay"])
        if posting.amount.amount > remaining:
            raise RejectedError(
                f"{posting.kind} {posting.reference} of {posting.amount} exceeds the "
                f"{remaining} {posting.amount.currency} open on {posting.applies_to}",
                system=SYSTEM,
                operation=operation,
                remote_code="overpayment",
                remote_answer={"open": str(remaining), "amount": str(posting.amount.amount)},
            )
        assert posting.journal and posting.clearing_account  # post_payment refused others
        journal = await self._books_code("journal", posting.journal, operation)
        if journal.values.get("type") != "cash":
            raise RejectedError(
                f"ERP journal {posting.journal!r} is not a cash (payment) journal",
                system=SYSTEM,
                operation=operation,
                remote_code="unknown_erp_code",
                remote_answer={"kind": "journal", "code": posting.journal},
            )
        clearing = await self._books_code("account", posting.clearing_account, operation)
        setup = await self._invoicing_setup()
        company_amount = await self._company_amount(posting, setup)
        period_id = await self._period_id(posting.payment_date, operation)
        values = _payment_move_values(
            posting,
            document,
            journal_id=journal.id,
            clearing_account_id=clearing.id,
            period_id=period_id,
            company_id=await self._company_id(),
            company_amount=company_amount,
            foreign=posting.amount.currency.upper() != setup.company_currency,
        )
        (move_id,) = await self.call("model.account.move.create", [values])
        rows = await self._payment_lines([("move.description", "=", posting.reference)])
        others = [row["move"] for row in rows if row["move"] != move_id]
        if others:
            with contextlib.suppress(AdapterError):
                await self.call("model.account.move.delete", [move_id])
            raise TransientError(
                f"another ERP payment ({others}) was created for {posting.reference!r} "
                "concurrently; this draft was withdrawn, retry adopts it",
                system=SYSTEM,
                operation=operation,
                remote_code="concurrent_create",
            )
        (row,) = [row for row in rows if row["move"] == move_id]
        posted = await self._adopt_payment(row, document, posting, created_now=True)
        log.info(
            "posted ERP payment",
            reference=posting.reference,
            kind=posting.kind,
            erp_document_id=move_id,
            applies_to=posting.applies_to,
            applied_state=posted.applied_document_state,
        )
        return posted

    async def _adopt_payment(
        self,
        row: dict[str, Any],
        document: dict[str, Any],
        posting: PaymentPosting,
        *,
        created_now: bool = False,
    ) -> PostedPayment:
        """Finish what a payment needs, from wherever an earlier attempt stopped: post the
        move, apply its receivable line to the document, reconcile once fully paid."""
        operation = "post_payment"
        if _origin_id((row.get("move.") or {}).get("origin")) != document["id"]:
            raise RejectedError(
                f"ERP payment {row['move']} for {posting.reference!r} settles another "
                f"document than {posting.applies_to!r}",
                system=SYSTEM,
                operation=operation,
                remote_code="mismatch",
                remote_answer=_jsonable(row),
            )
        amount = _payment_amount(row, posting.kind)
        if amount != posting.amount.amount:
            raise RejectedError(
                f"ERP payment {row['move']} for {posting.reference!r} is of {amount}, "
                f"not {posting.amount.amount}",
                system=SYSTEM,
                operation=operation,
                remote_code="mismatch",
                remote_answer=_jsonable(row),
            )
        # Each step may race another writer finishing the same payment: Tryton then refuses
        # (already posted, already applied, already reconciled); what it holds decides.
        if (row.get("move.") or {}).get("state") != "posted":
            try:
                await self.call("model.account.move.post", [row["move"]])
            except RejectedError:
                (move,) = await self.call("model.account.move.read", [row["move"]], ["state"])
                if move["state"] != "posted":
                    raise
        # `document` was read by this call (`_document_to_settle`) after the lookup found or
        # before it created this move; only the move changed since, so it is not read again.
        settles = False
        if row["id"] not in document["payment_lines"] and document["state"] != "paid":
            try:
                await self.call(
                    "model.account.invoice.write",
                    [document["id"]],
                    {"payment_lines": [("add", [row["id"]])]},
                )
            except RejectedError:
                if row["id"] not in (await self._settled_document(document["id"]))["payment_lines"]:
                    raise
            # What was open before, all of it in this payment: nothing remains (the amounts
            # are the document currency's on both sides). Otherwise the read below decides.
            settles = abs(document["amount_to_pay"]) == posting.amount.amount
            document = {**document, "payment_lines": [*document["payment_lines"], row["id"]]}
        if settles:
            await self._reconcile_settled(document)
        document = await self._settled_document(document["id"], *APPLIED_MOVE_FIELDS)
        if document["state"] != "paid" and not document["amount_to_pay"]:
            # Settled by more than this payment (another one meanwhile, an earlier attempt).
            await self._reconcile_settled(document)
            document = await self._settled_document(document["id"], *APPLIED_MOVE_FIELDS)
        return _posted_payment(
            await self._as_posted(row, document), document, created_now=created_now
        )

    async def _as_posted(self, row: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
        """The payment's line as posted: its move's number and state as the document's last
        read holds them among its payment lines; read again when it is not among them."""
        lines: list[dict[str, Any]] = document.get("payment_lines.") or []
        applied = next((line for line in lines if line["id"] == row["id"]), {})
        move = applied.get("move.") or {}
        if not move.get("number"):
            (row,) = await self._payment_lines([("id", "=", row["id"])])
            return row
        return {
            **row,
            "reconciliation": applied.get("reconciliation"),
            "move.": {**(row.get("move.") or {}), "number": move["number"], "state": move["state"]},
        }

    async def _reconcile_settled(self, document: dict[str, Any]) -> None:
        """Reconcile a document nothing remains on; a refusal is fine once it reads paid
        (another writer reconciled it)."""
        try:
            await self._reconcile(document)
        except RejectedError:
            if (await self._settled_document(document["id"]))["state"] != "paid":
                raise

    async def _settled_document(self, document_id: int, *extra: str) -> dict[str, Any]:
        (document,) = await self.call(
            "model.account.invoice.read",
            [document_id],
            [
                *INVOICE_FIELDS,
                "amount_to_pay",
                "payment_lines",
                "lines_to_pay",
                *RECONCILED_FIELDS,
                *extra,
            ],
        )
        return dict(document)

    async def _reconcile(self, document: dict[str, Any]) -> None:
        """Reconcile a fully paid document's receivable lines with its payment lines, by
        Tryton's own wizard: it books an exchange difference (foreign documents paid at
        another rate) and the reconciliation marks the document paid."""
        lines = _reconcilable_lines(document)
        if not lines:
            return
        context = {"active_model": "account.move.line", "active_ids": lines,
                   "active_id": lines[0]}  # fmt: skip
        wizard = "wizard.account.move.reconcile_lines"
        session, _, _ = await self.call(f"{wizard}.create")
        try:
            await self.call(f"{wizard}.execute", session, {}, "start", context=context)
        finally:
            with contextlib.suppress(AdapterError):
                await self.call(f"{wizard}.delete", session)

    async def _company_amount(self, posting: PaymentPosting, setup: _InvoicingSetup) -> Decimal:
        """The posting's amount in the company currency at the payment date's ERP rate."""
        code = posting.amount.currency.upper()
        if code == setup.company_currency:
            return posting.amount.amount
        currency_id = await self._currency_id(code, setup, posting.payment_date)
        rate = await self._rate(code, currency_id, setup, posting.payment_date)
        unit = Decimal(1).scaleb(-setup.company_digits)
        # Tryton's Currency.compute rounds half-even to the target currency.
        return (posting.amount.amount / rate).quantize(unit, rounding=ROUND_HALF_EVEN)

    async def _period_id(self, on: dt.date, operation: str) -> int:
        """The open period a move dated `on` goes in, trusted for a minute like
        `is_period_open` (a period closed meanwhile: Tryton refuses the move itself)."""
        known = self._open_period_ids.get(on)
        if known is not None and known[1] > time.monotonic():
            return known[0]
        periods = await self.call(
            "model.account.period.search",
            [
                ("start_date", "<=", on),
                ("end_date", ">=", on),
                ("fiscalyear.company", "=", await self._company_id()),
                ("type", "=", "standard"),
                ("state", "=", "open"),
            ],
            0,
            1,
            [("start_date", "DESC")],
        )
        if not periods:
            raise RejectedError(
                f"the ERP has no open period for {on.isoformat()}; reopen the period",
                system=SYSTEM,
                operation=operation,
                remote_code="period_closed",
            )
        self._open_period_ids[on] = (
            int(periods[0]),
            time.monotonic() + OPEN_PERIOD_TRUSTED_SECONDS,
        )
        return int(periods[0])

    async def _invoice_rows(self, reference: str) -> list[dict[str, Any]]:
        rows = await self.call(
            "model.account.invoice.search_read",
            [("type", "=", "out"), ("reference", "=", reference)],
            0,
            None,
            [("id", "ASC")],
            INVOICE_FIELDS,
        )
        return list(rows)

    async def _adopt_existing(self, row: dict[str, Any], posting: LedgerPosting) -> PostedDocument:
        """A document an earlier attempt (or someone) made: verify it, post it if in draft."""
        operation = "post_document"
        state = row["state"]
        if state == "cancelled":
            raise RejectedError(
                f"ERP document {row['id']} for reference {posting.reference!r} is cancelled; "
                "a new one would be a second document for the same reference",
                system=SYSTEM,
                operation=operation,
                remote_code="cancelled",
                remote_answer=_jsonable(row),
            )
        _verify_matches(row, posting, operation)
        if state in POSTABLE_STATES:
            log.info(
                "posting the ERP draft an earlier attempt left",
                reference=posting.reference,
                erp_document_id=row["id"],
            )
            await self._date_draft(row, posting)
            row = await self._post_invoice(row["id"], posting)
        return _posted_document(row, kind=posting.kind, created_now=False)

    async def _date_draft(self, row: Mapping[str, Any], posting: LedgerPosting) -> None:
        """Give an adopted draft the invoice date a new document gets now (`_invoice_date`):
        the date it was left with may since have fallen behind the sequence, or be another
        rate's than the billing date's. Refused as a new one would be, the draft unchanged."""
        setup = await self._invoicing_setup()
        currency_id = await self._currency_id(posting.currency, setup, posting.billing_date)
        invoice_date = await self._invoice_date(posting, currency_id, setup)
        if row.get("invoice_date") != invoice_date:
            await self.call(
                "model.account.invoice.write", [row["id"]], {"invoice_date": invoice_date}
            )

    async def _create_and_post(self, posting: LedgerPosting) -> PostedDocument:
        operation = "post_document"
        party = await self._invoicing_party(posting.customer_id)
        setup = await self._invoicing_setup()
        currency_id = await self._currency_id(posting.currency, setup, posting.billing_date)
        company_id = await self._company_id()
        books = await self._document_books(posting)
        invoice_date = await self._invoice_date(posting, currency_id, setup)
        values = _invoice_values(posting, party, setup, currency_id, company_id, books)
        if invoice_date is not None:
            values["invoice_date"] = invoice_date
        (invoice_id,) = await self.call("model.account.invoice.create", [values])
        created = await self._adopt_created(invoice_id, posting)
        try:
            _verify_matches(created, posting, operation)
        except RejectedError:
            # Never numbered, so removing it leaves no hole; the rejection carries its total.
            with contextlib.suppress(AdapterError):
                await self.call("model.account.invoice.delete", [invoice_id])
            raise
        posted = await self._post_invoice(invoice_id, posting)
        log.info(
            "posted ERP document",
            reference=posting.reference,
            kind=posting.kind,
            erp_document_id=invoice_id,
            erp_number=posted["number"],
        )
        return _posted_document(posted, kind=posting.kind, created_now=True)

    async def _adopt_created(self, invoice_id: int, posting: LedgerPosting) -> dict[str, Any]:
        """Our fresh draft, unless another writer created one for the reference meanwhile.

        Of two creates for one reference, the one whose re-check runs last sees both, so
        at most one of them goes on to post; the other deletes its draft and retries,
        which then adopts the survivor.
        """
        rows = await self._invoice_rows(posting.reference)
        ours = [row for row in rows if row["id"] == invoice_id]
        others = [row["id"] for row in rows if row["id"] != invoice_id]
        if ours and not others:
            return ours[0]
        if others:
            with contextlib.suppress(AdapterError):
                await self.call("model.account.invoice.delete", [invoice_id])
            raise TransientError(
                f"another ERP document ({others}) was created for reference "
                f"{posting.reference!r} concurrently; this draft was withdrawn, retry adopts it",
                system=SYSTEM,
                operation="post_document",
                remote_code="concurrent_create",
            )
        raise TransientError(
            f"ERP document {invoice_id} for {posting.reference!r} vanished after create",
            system=SYSTEM,
            operation="post_document",
        )

    async def _post_invoice(self, invoice_id: int, posting: LedgerPosting) -> dict[str, Any]:
        try:
            await self.call("model.account.invoice.post", [invoice_id])
        except RejectedError:
            # Another writer posting the same draft at the same moment makes Tryton refuse
            # ("cannot modify ... posted"): posted is what we wanted, so verify and adopt.
            rows = await self.call("model.account.invoice.read", [invoice_id], ["state"])
            if not rows or rows[0]["state"] not in BOOKED_STATES:
                raise
            log.info(
                "ERP document was posted concurrently by another writer",
                reference=posting.reference,
                erp_document_id=invoice_id,
            )
        rows = await self.call("model.account.invoice.read", [invoice_id], INVOICE_FIELDS)
        if not rows:
            raise TransientError(
                f"ERP document {invoice_id} vanished while posting",
                system=SYSTEM,
                operation="post_document",
            )
        row = dict(rows[0])
        if row["state"] not in BOOKED_STATES:
            raise RejectedError(
                f"ERP document {invoice_id} is {row['state']!r} after posting",
                system=SYSTEM,
                operation="post_document",
                remote_answer=_jsonable(row),
            )
        # Posting must not change the amount; if it did, the books now say something else.
        _verify_matches(row, posting, "post_document")
        return row

    async def _invoicing_party(self, customer_id: str) -> _InvoicingParty:
        rows = await self.call(
            "model.party.party.search_read",
            [("code", "=", customer_id)],
            0,
            1,
            None,
            # The addresses ride along: one call, not a second search for them.
            ["id", "account_receivable", "customer_payment_term", "addresses.invoice",
             "addresses.sequence", "addresses.active"],
            context={"active_test": False},
        )  # fmt: skip
        if not rows:
            raise NotFoundError(
                f"the ERP has no party with code {customer_id!r}; sync the account first",
                system=SYSTEM,
                operation="post_document",
            )
        party = rows[0]
        # An active address (read with the party's `active_test` off, so filtered here), in
        # Tryton's address order: sequence (empty first), then id.
        addresses = sorted(
            (a for a in party.get("addresses.") or [] if a.get("active")),
            key=lambda a: (a.get("sequence") is not None, a.get("sequence") or 0, a["id"]),
        )
        if not addresses:
            raise RejectedError(
                f"ERP party {party['id']} ({customer_id}) has no address to invoice",
                system=SYSTEM,
                operation="post_document",
            )
        # What Tryton's own `address_get(type="invoice")` picks: the invoice one, else the first.
        address = next((a for a in addresses if a.get("invoice")), addresses[0])
        return _InvoicingParty(
            id=party["id"],
            address_id=address["id"],
            account_receivable=party.get("account_receivable"),
            payment_term=party.get("customer_payment_term"),
        )

    async def _invoicing_setup(self) -> _InvoicingSetup:
        """What every customer invoice needs, read once from the ERP's configuration."""
        if self._invoicing is not None:
            return self._invoicing
        async with self._invoicing_lock:
            if self._invoicing is None:
                self._invoicing = await self._read_invoicing_setup()
            return self._invoicing

    async def _read_invoicing_setup(self) -> _InvoicingSetup:
        operation = "post_document"
        company_id = await self._company_id()
        (company,) = await self.call(
            "model.company.company.read",
            [company_id],
            ["currency", "currency.code", "currency.digits"],
        )
        journals = await self.call(
            "model.account.journal.search", [("type", "=", "revenue")], 0, 1, [("id", "ASC")]
        )
        (configuration,) = await self.call(
            "model.account.configuration.read",
            [1],
            ["default_account_receivable", "default_customer_payment_term"],
        )
        if not journals or not configuration["default_account_receivable"]:
            raise RejectedError(
                "the ERP lacks a revenue journal or a default receivable account; "
                "bootstrap the ERP database",
                system=SYSTEM,
                operation=operation,
            )
        currency = company.get("currency.") or {}
        return _InvoicingSetup(
            company_currency_id=company["currency"],
            company_currency=str(currency.get("code") or ""),
            company_digits=int(currency.get("digits") or 2),
            journal_id=journals[0],
            default_receivable_id=configuration["default_account_receivable"],
            default_payment_term_id=configuration["default_customer_payment_term"],
        )

    async def _currency_id(self, code: str, setup: _InvoicingSetup, on: dt.date) -> int:
        """The ERP currency of `code`, refused unless the ERP has a rate for `on` (the
        date its amounts are converted at into the company's currency)."""
        code = code.upper()
        if code == setup.company_currency:
            return setup.company_currency_id
        if code not in self._currency_ids:
            rows = await self.call(
                "model.currency.currency.search_read",
                [("code", "=", code)],
                0,
                1,
                None,
                ["id"],
            )
            if not rows:
                raise RejectedError(
                    f"the ERP has no currency {code}",
                    system=SYSTEM,
                    operation="post_document",
                    remote_code="unknown_currency",
                )
            self._currency_ids[code] = rows[0]["id"]
        currency_id = self._currency_ids[code]
        await self._rate(code, currency_id, setup, on)
        return currency_id

    async def _invoice_date(
        self, posting: LedgerPosting, currency_id: int, setup: _InvoicingSetup
    ) -> dt.date | None:
        """The invoice date to create the document with (None: posting's today, for the
        company currency); see `post_document`."""
        if currency_id == setup.company_currency_id:
            return None
        today = await self._erp_today()
        # Tryton refuses a customer invoice dated in the future, and one dated before a
        # document its sequence already numbered.
        wanted = min(posting.billing_date, today)
        date = await self._latest_numbered_date(posting.kind, wanted) or wanted
        if date == posting.billing_date:
            return date
        code = posting.currency.upper()
        at_billing = await self._rate(code, currency_id, setup, posting.billing_date)
        if await self._rate(code, currency_id, setup, date) == at_billing:
            return date
        why = (
            "is in the ERP's future"
            if posting.billing_date > today
            else f"comes before a document the ERP already numbered on {date.isoformat()}"
        )
        raise RejectedError(
            f"{posting.reference} is dated {posting.billing_date.isoformat()}, which {why}; "
            f"dated {date.isoformat()} it would convert {code} at another rate. Post it by "
            "hand or let finance decide",
            system=SYSTEM,
            operation="post_document",
            remote_code="out_of_sequence",
            remote_answer={"billing_date": posting.billing_date.isoformat(),
                           "erp_date": date.isoformat(), "currency": code},
        )  # fmt: skip

    async def _latest_numbered_date(
        self, kind: Literal["invoice", "credit_note"], after: dt.date
    ) -> dt.date | None:
        """The latest invoice date after `after` of a numbered customer document of this
        kind in the fiscal year of `after` (the strict sequence Tryton checks)."""
        company_id = await self._company_id()
        year_end = next((end for start, end in self._fiscal_years if start <= after <= end), None)
        if year_end is None:
            years = await self.call(
                "model.account.fiscalyear.search_read",
                [("company", "=", company_id)],
                0,
                None,
                None,
                ["start_date", "end_date"],
            )
            # Fiscal years are few and never move: read once, again only for a new one.
            self._fiscal_years = [(year["start_date"], year["end_date"]) for year in years]
            year_end = next(
                (end for start, end in self._fiscal_years if start <= after <= end), None
            )
        if year_end is None:
            return None  # Tryton refuses the date itself, with its own reason
        rows = await self.call(
            "model.account.invoice.search_read",
            [
                ("type", "=", "out"),
                ("company", "=", company_id),
                ("number", "!=", None),
                ("sequence_type_cache", "=", kind),
                ("invoice_date", ">", after),
                ("invoice_date", "<=", year_end),
            ],
            0,
            1,
            [("invoice_date", "DESC")],
            ["invoice_date"],
        )
        return rows[0]["invoice_date"] if rows else None

    async def _erp_today(self) -> dt.date:
        """The ERP's date, trusted for a minute (asked for every document posted)."""
        if self._today is not None and self._today[1] > time.monotonic():
            return self._today[0]
        today = await self.call("model.ir.date.today")
        if not isinstance(today, dt.date):
            raise TransientError(
                f"the ERP's date reads {today!r}", system=SYSTEM, operation="ir.date.today"
            )
        self._today = (today, time.monotonic() + ERP_TODAY_TRUSTED_SECONDS)
        return today

    async def _rate(
        self, code: str, currency_id: int, setup: _InvoicingSetup, on: dt.date
    ) -> Decimal:
        """Units of `code` per unit of the company currency on `on`, the ERP's own rate
        (the latest dated on or before `on`). Rates change: asked each time."""
        rows = await self.call(
            "model.currency.currency.read",
            [currency_id, setup.company_currency_id],
            ["rate"],
            context={"date": on},
        )
        rates = {row["id"]: row.get("rate") for row in rows}
        rate, company_rate = rates.get(currency_id), rates.get(setup.company_currency_id)
        if not rate or not company_rate:
            raise RejectedError(
                f"the ERP has no exchange rate from {code} to {setup.company_currency} "
                f"for {on.isoformat()}",
                system=SYSTEM,
                operation="exchange_rate",
                remote_code="no_exchange_rate",
                remote_answer={"currency": code, "date": on.isoformat()},
            )
        return Decimal(rate) / Decimal(company_rate)

    async def _books_code(self, kind: _CodeKind, code: str, operation: str) -> _BooksEntry:
        """The ERP record a mapping names (product or account code, tax name, journal code
        or name), read once per adapter; RejectedError `unknown_erp_code` naming it."""
        key = (kind, code)
        if key in self._codes:
            return self._codes[key]
        model, domain, fields = _CODE_LOOKUPS[kind]
        company_id = await self._company_id()
        found = None
        for clause in domain(code, company_id):
            rows = await self.call(f"model.{model}.search_read", clause, 0, 2, None, fields)
            if len(rows) == 1:
                found = rows[0]
                break
        if found is None:
            raise RejectedError(
                f"the ERP has no {kind} {code!r} (finance mapping names it); add it to the "
                "ERP or correct the mapping",
                system=SYSTEM,
                operation=operation,
                remote_code="unknown_erp_code",
                remote_answer={"kind": kind, "code": code},
            )
        entry = _BooksEntry(id=int(found["id"]), values=dict(found))
        self._codes[key] = entry
        return entry

    async def _company_id(self) -> int:
        await self._rpc.ensure_session()
        company = self._rpc.context.get("company")
        if not isinstance(company, int):
            raise AuthenticationError(
                "the ERP session carries no company", system=SYSTEM, operation="company"
            )
        return company

    async def aclose(self) -> None:
        await self._rpc.aclose()

    async def _find_party_row(self, customer_id: str) -> dict[str, Any] | None:
        rows = await self.call(
            "model.party.party.search_read",
            [("code", "=", customer_id)],
            0,
            1,
            None,
            PARTY_FIELDS,
            # Inactive parties still own their code: creating another would be refused.
            context={"active_test": False},
        )
        return rows[0] if rows else None

    async def _create_party(self, customer: Customer) -> dict[str, Any]:
        # Invoices need an invoice address, so every party gets one, even an empty one.
        address = await self._address_values(customer.address)
        values = {
            "name": customer.name,
            "code": customer.customer_id,
            "addresses": [("create", [address])],
        }
        try:
            (party_id,) = await self.call("model.party.party.create", [values])
        except RejectedError:
            # Someone (or our own timed-out earlier try) created it meanwhile: verify, adopt.
            existing = await self._find_party_row(customer.customer_id)
            if existing is None:
                raise
            if existing["name"] != customer.name:
                await self.call(
                    "model.party.party.write", [existing["id"]], {"name": customer.name}
                )
                existing = {**existing, "name": customer.name}
            return existing
        return {"id": party_id, "code": customer.customer_id, "name": customer.name}

    async def _address_values(self, address: PostalAddress | None) -> dict[str, Any]:
        if address is None:
            return {}
        values: dict[str, Any] = {}
        street = "\n".join(line for line in (address.line1, address.line2) if line)
        if street:
            values["street_unstructured"] = street
        if address.city:
            values["city"] = address.city
        if address.postal_code:
            values["postal_code"] = address.postal_code
        if address.country:
            country_id = await self._country_id(address.country)
            if country_id is not None:
                values["country"] = country_id
        return values

    async def _country_id(self, code: str) -> int | None:
        """The ERP's country id for an ISO code, or None when the ERP has no such country."""
        code = code.upper()
        if code not in self._country_ids:
            ids = await self.call("model.country.country.search", [("code", "=", code)], 0, 1)
            self._country_ids[code] = ids[0] if ids else None
        return self._country_ids[code]


@dataclass(frozen=True)
class _InvoicingSetup:
    company_currency_id: int
    company_currency: str
    company_digits: int
    journal_id: int
    default_receivable_id: int
    default_payment_term_id: int | None


@dataclass(frozen=True)
class _InvoicingParty:
    id: int
    address_id: int
    account_receivable: int | None
    payment_term: int | None


_CodeKind = Literal["product", "account", "tax", "journal"]


@dataclass(frozen=True)
class _BooksEntry:
    id: int
    values: dict[str, Any]


@dataclass(frozen=True)
class _LineBooks:
    product_id: int
    unit_id: int
    account_id: int


@dataclass(frozen=True)
class _TaxBooks:
    tax_id: int
    invoice_account_id: int
    credit_note_account_id: int


@dataclass(frozen=True)
class _DocumentBooks:
    lines: list[_LineBooks]
    taxes: list[_TaxBooks]


def _by_code(code: str, company_id: int) -> list[list[Any]]:
    return [[("code", "=", code)]]


def _account_by_code(code: str, company_id: int) -> list[list[Any]]:
    return [[("code", "=", code), ("company", "=", company_id), ("closed", "!=", True)]]


def _tax_by_name(name: str, company_id: int) -> list[list[Any]]:
    return [[("name", "=", name), ("company", "=", company_id), ("parent", "=", None)]]


def _journal_by_code_or_name(code: str, company_id: int) -> list[list[Any]]:
    # A code is what finance should name; a journal's name is accepted when it is unique.
    return [[("code", "=", code)], [("name", "=", code)]]


_CODE_LOOKUPS: dict[_CodeKind, tuple[str, Any, list[str]]] = {
    "product": ("product.product", _by_code, ["id", "default_uom"]),
    "account": ("account.account", _account_by_code, ["id", "type.receivable"]),
    "tax": ("account.tax", _tax_by_name, ["id", "invoice_account", "credit_note_account"]),
    "journal": ("account.journal", _journal_by_code_or_name, ["id", "type"]),
}


def _invoice_values(
    posting: LedgerPosting,
    party: _InvoicingParty,
    setup: _InvoicingSetup,
    currency_id: int,
    company_id: int,
    books: _DocumentBooks,
) -> dict[str, Any]:
    """The `account.invoice.create` values of a posting (see `post_document`)."""
    # Tryton's credit note is an invoice whose lines are all negative.
    sign = -1 if posting.kind == "credit_note" else 1
    lines: list[dict[str, Any]] = [
        {
            "type": "line",
            # The invoice's lines are in its currency and company (Tryton's line domain).
            "currency": currency_id,
            "company": company_id,
            "product": line_books.product_id,
            "unit": line_books.unit_id,
            "account": line_books.account_id,
            "quantity": _quantity(line.quantity * sign),
            "unit_price": line.unit_price,
            "description": line.description,
            # No tax computed by the ERP: billing's own amounts follow as manual taxes.
            "taxes": [],
        }
        for line, line_books in zip(posting.lines, books.lines, strict=True)
    ]
    taxes = [
        {
            "manual": True,
            "tax": tax_books.tax_id,
            "description": tax.description,
            "base": tax.base * sign,
            "amount": tax.amount * sign,
            # Tryton's own choice: the invoice account for a positive base, else the
            # credit-note account.
            "account": tax_books.invoice_account_id
            if tax.base * sign >= 0
            else tax_books.credit_note_account_id,
        }
        for tax, tax_books in zip(posting.taxes, books.taxes, strict=True)
    ]
    values: dict[str, Any] = {
        "type": "out",
        "company": company_id,
        "party": party.id,
        "invoice_address": party.address_id,
        # Resolved here: the party's own account, else the company default (the party
        # field reads None when it only inherits the default).
        "account": party.account_receivable or setup.default_receivable_id,
        "journal": setup.journal_id,
        "currency": currency_id,
        "reference": posting.reference,
        "description": _description(posting),
        "lines": [("create", lines)],
    }
    if taxes:
        values["taxes"] = [("create", taxes)]
    payment_term = party.payment_term or setup.default_payment_term_id
    if payment_term:
        values["payment_term"] = payment_term
    return values


def _quantity(quantity: Decimal) -> int | Decimal:
    # Tryton's quantity is a Float field; whole numbers travel as ints, exactly.
    return int(quantity) if quantity == quantity.to_integral_value() else quantity


def _description(posting: LedgerPosting) -> str:
    billing_date = posting.billing_date.isoformat()
    if billing_date in posting.description:
        return posting.description
    return f"{posting.description} (billed {billing_date})"


def _expected_erp_total(posting: LedgerPosting) -> Decimal:
    amount = posting.total.amount
    return -amount if posting.kind == "credit_note" else amount


def _expected_erp_tax(posting: LedgerPosting) -> Decimal:
    amount = sum((tax.amount for tax in posting.taxes), Decimal(0))
    return -amount if posting.kind == "credit_note" else amount


def _verify_matches(row: Mapping[str, Any], posting: LedgerPosting, operation: str) -> None:
    """Refuse an ERP document that does not say what the posting says (never accept it)."""
    problems = []
    expected = _expected_erp_total(posting)
    if row.get("total_amount") != expected:
        problems.append(f"total {row.get('total_amount')} instead of {expected}")
    expected_tax = _expected_erp_tax(posting)
    if "tax_amount" in row and row["tax_amount"] != expected_tax:
        problems.append(f"tax {row['tax_amount']} instead of {expected_tax}")
    currency = (row.get("currency.") or {}).get("code")
    if currency != posting.currency.upper():
        problems.append(f"currency {currency} instead of {posting.currency.upper()}")
    party = (row.get("party.") or {}).get("code")
    if party != posting.customer_id:
        problems.append(f"party {party} instead of {posting.customer_id}")
    if problems:
        raise RejectedError(
            f"ERP document {row.get('id')} for reference {posting.reference!r} does not match "
            f"the posting: {'; '.join(problems)}",
            system=SYSTEM,
            operation=operation,
            remote_code="mismatch",
            remote_answer=_jsonable(row),
        )


def _single(rows: list[dict[str, Any]], reference: str, operation: str) -> dict[str, Any] | None:
    if len(rows) > 1:
        ids = [row["id"] for row in rows]
        raise ConflictError(
            f"the ERP holds {len(rows)} documents with reference {reference!r}: ids {ids}",
            system=SYSTEM,
            operation=operation,
            remote_code="duplicate_reference",
            remote_answer=_jsonable(rows),
        )
    return rows[0] if rows else None


def _posted_document(
    row: Mapping[str, Any],
    *,
    kind: Literal["invoice", "credit_note"] | None,
    created_now: bool,
) -> PostedDocument:
    return PostedDocument(
        reference=str(row["reference"]),
        kind=kind or _document_kind(row),
        erp_document_id=str(row["id"]),
        erp_number=row.get("number") or None,
        total=_document_total(row, "read_document"),
        state=str(row["state"]),
        created_now=created_now,
    )


def _document_kind(row: Mapping[str, Any]) -> Literal["invoice", "credit_note"]:
    # Tryton's own classification once numbered; before that, the sign says it.
    cached = row.get("sequence_type_cache")
    total = row["total_amount"]
    return "credit_note" if cached == "credit_note" or (not cached and total < 0) else "invoice"


def _document_total(row: Mapping[str, Any], operation: str) -> Money:
    """The document's total, positive for both kinds (a credit note is negative in Tryton)."""
    currency = (row.get("currency.") or {}).get("code")
    try:
        return Money(amount=abs(row["total_amount"]), currency=str(currency))
    except (CurrencyError, ValueError) as err:
        raise RejectedError(
            f"ERP document {row['id']} is in a currency ledgerbridge does not know: {currency}",
            system=SYSTEM,
            operation=operation,
            remote_answer=_jsonable(row),
        ) from err


def _ledger_document(row: Mapping[str, Any], operation: str) -> LedgerDocument:
    """A document as reconciliation compares it: its total positive for both kinds and its
    tax per ERP tax name in the same direction, sign kept. Tryton's credit note is negative,
    so its tax is negated like its total: a credit note's own tax reads positive, and a tax
    running against its document (a proration credit's on an invoice) reads negative on
    either kind. Reconciliation signs both by kind (`erp_taxes`), which gives back the ERP's
    own signed amount: a credit note's tax counts against an invoice's."""
    total = _document_total(row, operation)
    kind = _document_kind(row)
    direction = -1 if kind == "credit_note" else 1
    taxes: dict[str, Decimal] = {}
    for tax in row.get("taxes.") or []:
        name = str((tax.get("tax.") or {}).get("name") or tax.get("description") or "")
        taxes[name] = taxes.get(name, Decimal(0)) + direction * Decimal(tax["amount"])
    return LedgerDocument(
        erp_document_id=str(row["id"]),
        reference=row.get("reference") or None,
        kind=kind,
        number=row.get("number") or None,
        total=total,
        state=str(row["state"]),
        customer_id=(row.get("party.") or {}).get("code") or None,
        document_date=row.get("invoice_date"),
        taxes={
            name: Money(amount=amount, currency=total.currency) for name, amount in taxes.items()
        },
    )


def _origin_id(origin: Any) -> int | None:
    """The invoice id of a move's origin (`"account.invoice,42"`), None for any other."""
    if isinstance(origin, str) and origin.startswith("account.invoice,"):
        with contextlib.suppress(ValueError):
            return int(origin.split(",", 1)[1])
    return None


def _line_amount(line: Mapping[str, Any], company_currency: str) -> tuple[str, Decimal]:
    """A receivable line's signed amount (debit positive) in its document's currency."""
    second = (line.get("second_currency.") or {}).get("code")
    if second and line.get("amount_second_currency") is not None:
        return str(second), Decimal(line["amount_second_currency"])
    return company_currency, Decimal(line["debit"]) - Decimal(line["credit"])


def _payment_amount(row: Mapping[str, Any], kind: Literal["payment", "refund"]) -> Decimal:
    """Positive: a payment credits the receivable, a refund debits it."""
    second = row.get("amount_second_currency")
    amount = Decimal(second) if second is not None else Decimal(row["debit"] - row["credit"])
    return -amount if kind == "payment" else amount


def _reconcilable_lines(document: Mapping[str, Any]) -> list[int]:
    """A document's receivable and payment lines not reconciled yet, as read with it
    (RECONCILED_FIELDS); a line added since that read (a payment just applied) is not."""
    read = [*(document.get("lines_to_pay.") or []), *(document.get("payment_lines.") or [])]
    reconciled = {line["id"] for line in read if line.get("reconciliation") is not None}
    ids = dict.fromkeys([*document["lines_to_pay"], *document["payment_lines"]])
    return [line for line in ids if line not in reconciled]


def _payment_kind(row: Mapping[str, Any]) -> Literal["payment", "refund"]:
    return "payment" if row["credit"] > 0 else "refund"


def _payment_move_values(
    posting: PaymentPosting,
    document: Mapping[str, Any],
    *,
    journal_id: int,
    clearing_account_id: int,
    period_id: int,
    company_id: int,
    company_amount: Decimal,
    foreign: bool,
) -> dict[str, Any]:
    """The `account.move.create` values of a payment (money in: the clearing account
    debited, the receivable credited) or a refund (the other way round)."""
    money_in = posting.kind == "payment"
    amount = posting.amount.amount
    receivable: dict[str, Any] = {
        "account": document["account"],
        "party": document["party"],
        "debit": Decimal(0) if money_in else company_amount,
        "credit": company_amount if money_in else Decimal(0),
        "description": posting.description,
    }
    clearing: dict[str, Any] = {
        "account": clearing_account_id,
        "debit": company_amount if money_in else Decimal(0),
        "credit": Decimal(0) if money_in else company_amount,
        "description": posting.description,
    }
    if foreign:
        currency = document["currency"]
        receivable |= {"amount_second_currency": -amount if money_in else amount,
                       "second_currency": currency}  # fmt: skip
        clearing |= {"amount_second_currency": amount if money_in else -amount,
                     "second_currency": currency}  # fmt: skip
    return {
        "company": company_id,
        "journal": journal_id,
        "period": period_id,
        "date": posting.payment_date,
        # The reference: what lookup-before-create finds (Tryton moves have no other).
        "description": posting.reference,
        "origin": f"account.invoice,{document['id']}",
        "lines": [("create", [receivable, clearing])],
    }


def _posted_payment(
    row: Mapping[str, Any], document: Mapping[str, Any] | None, *, created_now: bool
) -> PostedPayment:
    kind = _payment_kind(row)
    move = row.get("move.") or {}
    currency = (row.get("second_currency.") or {}).get("code")
    if currency is None and document is not None:
        currency = (document.get("currency.") or {}).get("code")
    return PostedPayment(
        reference=str(move.get("description")),
        kind=kind,
        erp_document_id=str(row["move"]),
        erp_number=move.get("number") or None,
        amount=Money(amount=_payment_amount(row, kind), currency=str(currency)),
        applies_to=str((document or {}).get("reference") or ""),
        applied_document_state=str((document or {}).get("state") or "unknown"),
        created_now=created_now,
    )


def _ledger_payment(row: Mapping[str, Any], document: Mapping[str, Any] | None) -> LedgerPayment:
    kind = _payment_kind(row)
    move = row.get("move.") or {}
    currency = (row.get("second_currency.") or {}).get("code")
    if currency is None and document is not None:
        currency = (document.get("currency.") or {}).get("code")
    return LedgerPayment(
        erp_document_id=str(row["move"]),
        reference=move.get("description") or None,
        kind=kind,
        amount=Money(amount=_payment_amount(row, kind), currency=str(currency)),
        applies_to=(document or {}).get("reference") or None,
        customer_id=(row.get("party.") or {}).get("code") or None,
        payment_date=move.get("date"),
        state=str(move.get("state") or ""),
    )


def _document_date_domain(date_from: dt.date, date_to: dt.date) -> list[Any]:
    """Dated by `invoice_date`; an undated draft by the UTC day it was created."""
    created_from = dt.datetime.combine(date_from, dt.time(), tzinfo=dt.UTC)
    created_until = dt.datetime.combine(date_to + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    return [
        "OR",
        [("invoice_date", ">=", date_from), ("invoice_date", "<=", date_to)],
        [
            ("invoice_date", "=", None),
            ("create_date", ">=", created_from),
            ("create_date", "<", created_until),
        ],
    ]


def _jsonable(value: Any) -> Any:
    """An ERP answer as plain JSON (for error details that end up in workflow history)."""
    return json.loads(tryton_dumps(value))


def _party_record(party: Mapping[str, Any]) -> AccountRecord:
    return AccountRecord(
        system=SYSTEM,
        external_id=str(party["id"]),
        customer_id=str(party["code"]),
        name=str(party["name"] or ""),
    )


__all__ = ["TrytonLedger", "tryton_dumps", "tryton_loads"]
