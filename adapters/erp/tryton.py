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
  any other server exception is `"error": [str(exception), traceback]`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import itertools
import json
from collections.abc import Mapping, Sequence
from decimal import Decimal
from types import TracebackType
from typing import Any

import httpx
from pydantic import SecretStr

from adapters.errors import (
    AdapterError,
    AuthenticationError,
    RejectedError,
    TransientError,
    ValidationError,
    error_for_status,
    transport_errors_as_transient,
)
from adapters.logs import get_logger
from canonical import AccountRecord, Customer, PostalAddress

SYSTEM = "erp"
PARTY_FIELDS = ["id", "code", "name"]

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
        await self._ensure_session()
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

    async def _ensure_session(self) -> None:
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


def _party_record(party: Mapping[str, Any]) -> AccountRecord:
    return AccountRecord(
        system=SYSTEM,
        external_id=str(party["id"]),
        customer_id=str(party["code"]),
        name=str(party["name"] or ""),
    )


__all__ = ["TrytonLedger", "tryton_dumps", "tryton_loads"]
