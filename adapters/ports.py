"""The ports: what ledgerbridge needs from each external system, named for the capability.

Concrete adapters are named for the product (StripeBilling, ZendeskSupport, TrytonLedger)
and are constructed only by `adapters.bootstrap`. Every method raises the taxonomy of
`adapters.errors`; writes take an explicit idempotency key built by the workflow.
"""

from __future__ import annotations

from typing import Protocol

from canonical import AccountRecord, Customer


class BillingSystem(Protocol):
    """The subscription billing platform (customers are born here)."""

    async def get_customer(self, customer_id: str) -> Customer:
        """The customer as billing knows it now. NotFoundError when billing has none."""
        ...

    async def aclose(self) -> None: ...


class SupportDesk(Protocol):
    """The support platform; a customer is an organization there."""

    async def find_organization(self, customer_id: str) -> AccountRecord | None:
        """The organization whose external id is the customer id, or None."""
        ...

    async def ensure_organization(self, customer: Customer, idempotency_key: str) -> AccountRecord:
        """Create the organization, or correct its name, so it matches the customer."""
        ...

    async def aclose(self) -> None: ...


class Ledger(Protocol):
    """The ERP, the system of financial record; a customer is a party there."""

    async def find_party(self, customer_id: str) -> AccountRecord | None:
        """The party whose code is the customer id, or None."""
        ...

    async def ensure_party(self, customer: Customer) -> AccountRecord:
        """Create the party (lookup-before-create on the code) or correct it to match."""
        ...

    async def aclose(self) -> None: ...


__all__ = ["BillingSystem", "Ledger", "SupportDesk"]
