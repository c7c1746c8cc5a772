"""StripeBilling: the BillingSystem port over Stripe's REST API (or the local sandbox).

Form-encoded requests in Stripe's bracket notation, an explicit Idempotency-Key on every
write (built by the workflow; never invented here, or each activity retry would be a new
write), and every failure mapped onto `adapters.errors`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import httpx
import pydantic
import structlog

from adapters.errors import (
    AdapterError,
    TransientError,
    error_for_status,
    transport_errors_as_transient,
)
from canonical import Customer, PostalAddress, currency_exponent

if TYPE_CHECKING:
    from adapters.ports import BillingSystem

SYSTEM = "billing"
# The API version the mapping below is written against; pinned so an account upgrade in
# the Stripe dashboard cannot change the shapes we read.
STRIPE_API_VERSION = "2026-10-28.endive"
ADDRESS_FIELDS = ("line1", "line2", "city", "postal_code", "state", "country")
# Stripe has no currency parameter on customers (the first subscription, invoice or balance
# transaction fixes it), so the currency asked for at creation waits in this metadata key.
INTENDED_CURRENCY_KEY = "ledgerbridge_currency"

logger = structlog.get_logger(__name__)

Params = Mapping[str, Any]


def encode_form(params: Params | None) -> list[tuple[str, str]]:
    """Stripe's bracket notation: {"metadata": {"k": "v"}} -> [("metadata[k]", "v")].

    Lists become indexed keys (`items[0][price]`), booleans `true`/`false`; None is left out
    and "" is sent as-is, which is how Stripe unsets a field.
    """
    pairs: list[tuple[str, str]] = []
    for key, value in (params or {}).items():
        pairs.extend(_encode_value(str(key), value))
    return pairs


def _encode_value(key: str, value: Any) -> Iterator[tuple[str, str]]:
    if value is None:
        return
    if isinstance(value, Mapping):
        for sub_key, sub_value in value.items():
            yield from _encode_value(f"{key}[{sub_key}]", sub_value)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _encode_value(f"{key}[{index}]", item)
    elif isinstance(value, bool):
        yield key, "true" if value else "false"
    elif isinstance(value, float):
        # Amounts travel as integer minor units; a float here is a bug upstream.
        raise TypeError(f"refusing to send a float for {key}; use int minor units or Decimal")
    elif isinstance(value, int | str | Decimal):
        yield key, str(value)
    else:
        raise TypeError(f"cannot form-encode {type(value).__name__} for {key}")


def _address_params(address: PostalAddress | None) -> dict[str, str] | None:
    if address is None:
        return None
    fields = address.model_dump()
    # Stripe merges address keys on update, so send every key: "" clears what is gone.
    return {name: fields.get(name) or "" for name in ADDRESS_FIELDS}


def customer_from_stripe(data: Mapping[str, Any]) -> Customer:
    """Stripe customer JSON -> canonical Customer (also for `data.object` in webhooks)."""
    customer_id = str(data["id"])
    email = data.get("email") or None
    address = data.get("address")
    postal = None
    if isinstance(address, Mapping) and any(address.get(f) for f in ADDRESS_FIELDS):
        postal = PostalAddress(**{f: address.get(f) or None for f in ADDRESS_FIELDS})
    metadata = data.get("metadata")
    intended = metadata.get(INTENDED_CURRENCY_KEY) if isinstance(metadata, Mapping) else None
    # Stripe's own currency wins once it is fixed; until then, the one we asked for.
    currency = data.get("currency") or intended
    return Customer(
        customer_id=customer_id,
        # A deleted customer comes back as {id, object, deleted}; name is required here.
        name=(data.get("name") or email or customer_id)[:200],
        email=email,
        currency=currency.upper() if currency else None,
        address=postal,
        deleted=bool(data.get("deleted", False)),
    )


class StripeBilling:
    """The billing platform, spoken to as Stripe. One pooled HTTP client per instance."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 10.0) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={
                "Authorization": f"Bearer {api_key}",
                "Stripe-Version": STRIPE_API_VERSION,
                "User-Agent": "ledgerbridge (StripeBilling)",
            },
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
        )

    async def __aenter__(self) -> StripeBilling:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    # customers ---------------------------------------------------------------------------

    async def get_customer(self, customer_id: str) -> Customer:
        data = await self._request(
            "GET", f"/v1/customers/{_segment(customer_id)}", operation="get_customer"
        )
        return self._customer(data, "get_customer")

    async def create_customer(
        self,
        *,
        name: str,
        email: str | None,
        idempotency_key: str,
        currency: str | None = None,
        address: PostalAddress | None = None,
        metadata: Mapping[str, str] | None = None,
        description: str | None = None,
    ) -> Customer:
        """A new billing customer.

        Stripe refuses `currency` on customers and fixes it with the first subscription,
        invoice or balance transaction; the currency given here is kept in metadata
        (`ledgerbridge_currency`) and reported as the customer's currency until then.
        """
        all_metadata = dict(metadata or {})
        if currency is not None:
            # CurrencyError now, rather than store a currency nothing downstream can use.
            currency_exponent(currency)
            all_metadata[INTENDED_CURRENCY_KEY] = currency.lower()
        params = {
            "name": name,
            "email": email,
            "address": _address_params(address),
            "metadata": all_metadata or None,
            "description": description,
        }
        data = await self._request(
            "POST",
            "/v1/customers",
            params,
            idempotency_key=idempotency_key,
            operation="create_customer",
        )
        return self._customer(data, "create_customer")

    async def update_customer(
        self,
        customer_id: str,
        *,
        idempotency_key: str,
        name: str | None = None,
        email: str | None = None,
        address: PostalAddress | None = None,
        metadata: Mapping[str, str | None] | None = None,
        description: str | None = None,
    ) -> Customer:
        """Change the given fields only (None = leave as is). A metadata value of "" or
        None removes that key, as in Stripe."""
        params: dict[str, Any] = {
            "name": name,
            "email": email,
            "address": _address_params(address),
            "description": description,
        }
        if metadata is not None:
            params["metadata"] = {k: ("" if v is None else v) for k, v in metadata.items()}
        data = await self._request(
            "POST",
            f"/v1/customers/{_segment(customer_id)}",
            params,
            idempotency_key=idempotency_key,
            operation="update_customer",
        )
        return self._customer(data, "update_customer")

    async def delete_customer(self, customer_id: str) -> Customer:
        """Delete in billing (idempotent by nature: a second delete answers NotFoundError)."""
        data = await self._request(
            "DELETE", f"/v1/customers/{_segment(customer_id)}", operation="delete_customer"
        )
        return self._customer(data, "delete_customer")

    async def list_customers(
        self, *, email: str | None = None, page_size: int = 100
    ) -> AsyncIterator[Customer]:
        """Every customer, newest first, following Stripe's cursor pages as they are read."""
        params: dict[str, Any] = {"limit": page_size, "email": email}
        while True:
            page = await self._request("GET", "/v1/customers", params, operation="list_customers")
            items = page.get("data") or []
            for item in items:
                yield self._customer(item, "list_customers")
            if not page.get("has_more") or not items:
                return
            params["starting_after"] = items[-1]["id"]

    # transport ---------------------------------------------------------------------------

    def _customer(self, data: Mapping[str, Any], operation: str) -> Customer:
        try:
            return customer_from_stripe(data)
        except (KeyError, TypeError, ValueError, pydantic.ValidationError) as exc:
            # Billing answered something we cannot represent; retrying will not change it.
            raise AdapterError(
                f"unmappable customer from billing: {exc}",
                system=SYSTEM,
                operation=operation,
                remote_answer={"id": data.get("id")} if isinstance(data, Mapping) else None,
            ) from exc

    async def _request(
        self,
        method: str,
        path: str,
        params: Params | None = None,
        idempotency_key: str | None = None,
        *,
        operation: str | None = None,
    ) -> dict[str, Any]:
        """One Stripe call; the JSON answer, or an `adapters.errors` exception."""
        operation = operation or f"{method} {path}"
        form = encode_form(params)
        headers: dict[str, str] = {}
        if method == "POST":
            if idempotency_key:
                headers["Idempotency-Key"] = idempotency_key
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            request = self._client.build_request(
                method, path, content=urlencode(form), headers=headers
            )
        else:
            request = self._client.build_request(
                method, path, params=urlencode(form), headers=headers
            )
        started = time.monotonic()
        with transport_errors_as_transient(SYSTEM, operation):
            response = await self._client.send(request)
        logger.debug(
            "billing call",
            operation=operation,
            method=method,
            path=path,  # ids only; query strings (which may hold emails) are not logged
            status=response.status_code,
            request_id=response.headers.get("request-id"),
            idempotent_replay=response.headers.get("idempotent-replayed") == "true",
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
        if response.is_success:
            try:
                body = response.json()
            except ValueError as exc:
                raise TransientError(
                    "billing answered non-JSON success", system=SYSTEM, operation=operation
                ) from exc
            if not isinstance(body, dict):
                raise AdapterError(
                    "billing answered a non-object", system=SYSTEM, operation=operation
                )
            return body
        raise self._error(response, operation)

    @staticmethod
    def _error(response: httpx.Response, operation: str) -> AdapterError:
        try:
            answer: Any = response.json()
        except ValueError:
            answer = response.text[:500]
        error = answer.get("error") if isinstance(answer, dict) else None
        error = error if isinstance(error, dict) else {}
        message = str(error.get("message") or response.reason_phrase or "billing error")
        code = error.get("code") or error.get("type")
        status = response.status_code
        should_retry = response.headers.get("stripe-should-retry")
        if status == 409 and should_retry == "true":
            # A concurrent request holds the same Idempotency-Key: retry, it is not a duplicate.
            return TransientError(
                message,
                system=SYSTEM,
                operation=operation,
                status=status,
                remote_code=code,
                remote_answer=answer,
            )
        return error_for_status(
            status,
            message,
            system=SYSTEM,
            operation=operation,
            retry_after=response.headers.get("retry-after"),
            remote_code=code,
            remote_answer=answer,
        )


if TYPE_CHECKING:
    # mypy proves the adapter satisfies its port.
    _port_check: type[BillingSystem] = StripeBilling


def _segment(identifier: str) -> str:
    """An id as one path segment: a stray '/' or '?' must not reach another endpoint."""
    if not identifier:
        raise ValueError("empty id")
    return quote(identifier, safe="")


__all__ = [
    "INTENDED_CURRENCY_KEY",
    "STRIPE_API_VERSION",
    "StripeBilling",
    "customer_from_stripe",
    "encode_form",
]
