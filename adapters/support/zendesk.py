"""ZendeskSupport: the SupportDesk port over the Zendesk REST API v2.

A customer is a Zendesk organization whose `external_id` is the canonical customer id.
Every failure surfaces as the taxonomy of `adapters.errors`.
"""

from __future__ import annotations

from typing import Any

import httpx

from adapters.errors import (
    AdapterError,
    ConflictError,
    error_for_status,
    transport_errors_as_transient,
)
from canonical import AccountRecord, Customer

SYSTEM = "support"


def _record(org: dict[str, Any]) -> AccountRecord:
    return AccountRecord(
        system=SYSTEM,
        external_id=str(org["id"]),
        customer_id=str(org.get("external_id") or ""),
        name=str(org["name"]),
    )


def _is_duplicate(error: AdapterError, field: str) -> bool:
    """Whether a 422 RecordInvalid says `field` is already taken."""
    answer = error.remote_answer
    if error.status != 422 or not isinstance(answer, dict):
        return False
    details = answer.get("details")
    if not isinstance(details, dict):
        return False
    return any(
        isinstance(item, dict) and item.get("error") == "DuplicateValue"
        for item in details.get(field) or []
    )


class ZendeskSupport:
    """The support desk, spoken to as Zendesk with an API token."""

    def __init__(
        self,
        base_url: str,
        email: str,
        api_token: str,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            auth=httpx.BasicAuth(f"{email}/token", api_token),
            # Connecting should be quick; a slow answer gets the whole budget.
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
            headers={"Accept": "application/json", "User-Agent": "ledgerbridge"},
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> ZendeskSupport:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- the port --------------------------------------------------------------------

    async def find_organization(self, customer_id: str) -> AccountRecord | None:
        org = await self._find(customer_id, "find_organization")
        return None if org is None else _record(org)

    async def ensure_organization(self, customer: Customer, idempotency_key: str) -> AccountRecord:
        operation = "ensure_organization"
        org = await self._find(customer.customer_id, operation)
        if org is None:
            org = await self._create(customer, idempotency_key, operation)
        if org["name"] != customer.name:
            org = await self._rename(org, customer, operation)
        return _record(org)

    # -- steps -----------------------------------------------------------------------

    async def _find(self, customer_id: str, operation: str) -> dict[str, Any] | None:
        answer = await self._call(
            "GET",
            "/api/v2/organizations/search.json",
            operation,
            params={"external_id": customer_id},
        )
        # Zendesk matches loosely elsewhere; only an exact external id is this customer.
        found = [
            org for org in answer.get("organizations", []) if org.get("external_id") == customer_id
        ]
        if len(found) > 1:
            raise ConflictError(
                f"{len(found)} support organizations carry external id {customer_id!r}",
                system=SYSTEM,
                operation=operation,
                remote_answer={"organization_ids": [org["id"] for org in found]},
            )
        return found[0] if found else None

    async def _create(
        self, customer: Customer, idempotency_key: str, operation: str
    ) -> dict[str, Any]:
        body = {"organization": {"name": customer.name, "external_id": customer.customer_id}}
        try:
            response = await self._send(
                "POST",
                "/api/v2/organizations.json",
                operation,
                json=body,
                headers={"Idempotency-Key": idempotency_key},
            )
        except AdapterError as err:
            if not (_is_duplicate(err, "external_id") or _is_duplicate(err, "name")):
                raise
            # Another worker may have created it between our search and our create.
            raced = await self._find(customer.customer_id, operation)
            if raced is not None:
                return raced
            if _is_duplicate(err, "name"):
                raise await self._name_taken(customer, operation, err) from err
            raise
        org = dict(response.json()["organization"])
        if response.headers.get("x-idempotency-lookup") == "hit":
            # A replayed answer is as old as the first call; read what the org is now.
            current = await self._find(customer.customer_id, operation)
            if current is not None:
                return current
        return org

    async def _rename(
        self, org: dict[str, Any], customer: Customer, operation: str
    ) -> dict[str, Any]:
        try:
            answer = await self._call(
                "PUT",
                f"/api/v2/organizations/{org['id']}.json",
                operation,
                json={"organization": {"name": customer.name}},
            )
        except AdapterError as err:
            if _is_duplicate(err, "name"):
                raise await self._name_taken(customer, operation, err) from err
            raise
        return dict(answer["organization"])

    async def _name_taken(
        self, customer: Customer, operation: str, cause: AdapterError
    ) -> ConflictError:
        """The conflict to report when another organization holds the customer's name."""
        holder: dict[str, Any] | None = None
        try:
            answer = await self._call(
                "GET",
                "/api/v2/organizations/search.json",
                operation,
                params={"name": customer.name},
            )
            holders = answer.get("organizations") or []
            holder = holders[0] if holders else None
        except AdapterError:
            holder = None  # the conflict itself is what matters; the lookup is a courtesy
        held_by = (
            f"organization {holder['id']} (external id {holder.get('external_id')!r})"
            if holder
            else "another organization"
        )
        # The name stays out of the message: it may be a person's name.
        return ConflictError(
            f"cannot give customer {customer.customer_id!r} its support organization:"
            f" the name is already taken by {held_by}",
            system=SYSTEM,
            operation=operation,
            status=cause.status,
            remote_code="DuplicateValue",
            remote_answer={
                "answer": cause.remote_answer,
                "holder_id": holder["id"] if holder else None,
                "holder_external_id": holder.get("external_id") if holder else None,
            },
        )

    # -- HTTP ------------------------------------------------------------------------

    async def _call(self, method: str, path: str, operation: str, **kwargs: Any) -> dict[str, Any]:
        response = await self._send(method, path, operation, **kwargs)
        return dict(response.json())

    async def _send(self, method: str, path: str, operation: str, **kwargs: Any) -> httpx.Response:
        with transport_errors_as_transient(SYSTEM, operation):
            response = await self._client.request(method, path, **kwargs)
        if response.is_success:
            return response
        raise self._error(response, operation)

    @staticmethod
    def _error(response: httpx.Response, operation: str) -> AdapterError:
        answer: Any
        try:
            answer = response.json()
        except ValueError:
            answer = response.text[:500]
        code: str | None = None
        message = f"HTTP {response.status_code}"
        if isinstance(answer, dict):
            error = answer.get("error")
            if isinstance(error, dict):  # some Zendesk endpoints nest {"title", "message"}
                code = error.get("title")
                message = str(error.get("message") or code or message)
            elif isinstance(error, str):
                code = error
                message = str(answer.get("description") or error)
        return error_for_status(
            response.status_code,
            message,
            system=SYSTEM,
            operation=operation,
            retry_after=response.headers.get("retry-after"),
            remote_code=code,
            remote_answer=answer,
        )


__all__ = ["ZendeskSupport"]
