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
  ERP's today.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import itertools
import json
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from types import TracebackType
from typing import Any, Literal

import httpx
from pydantic import SecretStr

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
from canonical import (
    AccountRecord,
    CurrencyError,
    Customer,
    LedgerPosting,
    Money,
    PostalAddress,
    PostedDocument,
)
from canonical.reconciliation import LedgerDocument, LedgerDocumentPage

SYSTEM = "erp"
# The ERP product every invoice line is booked against (the ERP database's setup creates it).
SERVICE_PRODUCT_CODE = "SUBSCRIPTION"
OPEN_PERIOD_TRUSTED_SECONDS = 60.0
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
        self._open_periods: dict[dt.date, float] = {}
        # One posting per reference at a time in this process (see `post_document`).
        self._posting_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

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
        """
        lock = self._posting_locks.get(posting.reference)
        if lock is None:
            lock = self._posting_locks[posting.reference] = asyncio.Lock()
        async with lock:
            existing = _single(
                await self._invoice_rows(posting.reference), posting.reference, "post_document"
            )
            if existing is not None:
                return await self._adopt_existing(existing, posting)
            return await self._create_and_post(posting)

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
        created while paging land on a later page, never shift an earlier one. One RPC call.
        """
        operation = "document_page"
        if limit < 1:
            raise ValidationError(
                f"page limit must be at least 1, not {limit}", system=SYSTEM, operation=operation
            )
        if date_from > date_to:
            raise ValidationError(
                f"date range {date_from}..{date_to} is empty", system=SYSTEM, operation=operation
            )
        after_id = _cursor_id(cursor, operation)
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
            # `party.code` rides along in the same call: no second read for the customers.
            INVOICE_FIELDS,
        )
        documents = [_ledger_document(row, operation) for row in rows]
        # A short page is the last; a full one may be too, and the next page then says so.
        next_cursor = documents[-1].erp_document_id if len(documents) == limit else None
        return LedgerDocumentPage(documents=documents, next_cursor=next_cursor)

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
            row = await self._post_invoice(row["id"], posting)
        return _posted_document(row, kind=posting.kind, created_now=False)

    async def _create_and_post(self, posting: LedgerPosting) -> PostedDocument:
        operation = "post_document"
        party = await self._invoicing_party(posting.customer_id)
        setup = await self._invoicing_setup()
        currency_id = await self._currency_id(posting.currency, setup)
        company_id = await self._company_id()
        values = _invoice_values(posting, party, setup, currency_id, company_id)
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
            ["id", "account_receivable", "customer_payment_term"],
            context={"active_test": False},
        )
        if not rows:
            raise NotFoundError(
                f"the ERP has no party with code {customer_id!r}; sync the account first",
                system=SYSTEM,
                operation="post_document",
            )
        party = rows[0]
        addresses = await self.call(
            "model.party.address.search_read",
            [("party", "=", party["id"])],
            0,
            None,
            [("sequence", "ASC"), ("id", "ASC")],
            ["invoice"],
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
            "model.company.company.read", [company_id], ["currency", "currency.code"]
        )
        journals = await self.call(
            "model.account.journal.search", [("type", "=", "revenue")], 0, 1, [("id", "ASC")]
        )
        (configuration,) = await self.call(
            "model.account.configuration.read",
            [1],
            ["default_account_receivable", "default_customer_payment_term"],
        )
        products = await self.call(
            "model.product.product.search_read",
            [("code", "=", SERVICE_PRODUCT_CODE)],
            0,
            1,
            None,
            ["default_uom", "template.account_category.account_revenue"],
        )
        if not journals or not products or not configuration["default_account_receivable"]:
            raise RejectedError(
                "the ERP lacks a revenue journal, a default receivable account or the service "
                f"product {SERVICE_PRODUCT_CODE!r}; bootstrap the ERP database",
                system=SYSTEM,
                operation=operation,
            )
        product = products[0]
        category = (product.get("template.") or {}).get("account_category.") or {}
        if not category.get("account_revenue"):
            raise RejectedError(
                f"the service product {SERVICE_PRODUCT_CODE!r} has no revenue account",
                system=SYSTEM,
                operation=operation,
            )
        return _InvoicingSetup(
            company_currency_id=company["currency"],
            company_currency=str((company.get("currency.") or {}).get("code") or ""),
            journal_id=journals[0],
            default_receivable_id=configuration["default_account_receivable"],
            default_payment_term_id=configuration["default_customer_payment_term"],
            product_id=product["id"],
            unit_id=product["default_uom"],
            revenue_account_id=category["account_revenue"],
        )

    async def _currency_id(self, code: str, setup: _InvoicingSetup) -> int:
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
        # Rates change with time: asked each time, for today's date (the ERP's default).
        (rate,) = await self.call("model.currency.currency.read", [currency_id], ["rate"])
        if not rate.get("rate"):
            raise RejectedError(
                f"the ERP has no exchange rate from {code} to {setup.company_currency} today",
                system=SYSTEM,
                operation="post_document",
                remote_code="no_exchange_rate",
            )
        return currency_id

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
    journal_id: int
    default_receivable_id: int
    default_payment_term_id: int | None
    product_id: int
    unit_id: int
    revenue_account_id: int


@dataclass(frozen=True)
class _InvoicingParty:
    id: int
    address_id: int
    account_receivable: int | None
    payment_term: int | None


def _invoice_values(
    posting: LedgerPosting,
    party: _InvoicingParty,
    setup: _InvoicingSetup,
    currency_id: int,
    company_id: int,
) -> dict[str, Any]:
    """The `account.invoice.create` values of a posting.

    No `invoice_date`: posting fills it with the ERP's today, so a draft left by a failed
    attempt and posted days later still keeps the strict sequence chronological. The
    billing date stays readable in the description.
    """
    # Tryton's credit note is an invoice whose lines are all negative.
    sign = -1 if posting.kind == "credit_note" else 1
    lines = [
        {
            "type": "line",
            "product": setup.product_id,
            "unit": setup.unit_id,
            "account": setup.revenue_account_id,
            "quantity": _quantity(line.quantity * sign),
            "unit_price": line.unit_price,
            "description": line.description,
        }
        for line in posting.lines
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


def _verify_matches(row: Mapping[str, Any], posting: LedgerPosting, operation: str) -> None:
    """Refuse an ERP document that does not say what the posting says (never accept it)."""
    problems = []
    expected = _expected_erp_total(posting)
    if row.get("total_amount") != expected:
        problems.append(f"total {row.get('total_amount')} instead of {expected}")
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
    return LedgerDocument(
        erp_document_id=str(row["id"]),
        reference=row.get("reference") or None,
        kind=_document_kind(row),
        number=row.get("number") or None,
        total=_document_total(row, operation),
        state=str(row["state"]),
        customer_id=(row.get("party.") or {}).get("code") or None,
        document_date=row.get("invoice_date"),
    )


def _cursor_id(cursor: str | None, operation: str) -> int:
    """The last id a previous page returned (0 before the first page)."""
    if cursor is None:
        return 0
    try:
        return int(cursor)
    except ValueError:
        raise ValidationError(
            f"not an ERP document page cursor: {cursor!r}", system=SYSTEM, operation=operation
        ) from None


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
