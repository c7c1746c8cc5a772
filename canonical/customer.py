"""The customer, known the same way in billing, support and the ERP."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from canonical.money import currency_exponent

# The canonical customer id is the billing customer id: customers are born in billing,
# and every other system stores it (ERP party code, support organization external id).
CUSTOMER_ID_PATTERN = r"^[A-Za-z0-9_\-]{3,64}$"

System = Literal["billing", "support", "erp"]


class PostalAddress(BaseModel):
    model_config = ConfigDict(frozen=True)

    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    postal_code: str | None = None
    state: str | None = None
    country: str | None = Field(default=None, description="ISO 3166-1 alpha-2")


class Customer(BaseModel):
    """A paying customer as ledgerbridge understands it."""

    SCHEMA_VERSION: ClassVar[int] = 1
    model_config = ConfigDict(frozen=True)

    customer_id: str = Field(pattern=CUSTOMER_ID_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    email: str | None = None
    currency: str | None = Field(default=None, description="ISO 4217, the billing currency")
    address: PostalAddress | None = None
    legal_entity: str | None = Field(
        default=None, max_length=32, description="the legal entity billing names for it"
    )
    deleted: bool = False

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.upper()
        currency_exponent(value)
        return value


class AccountRecord(BaseModel):
    """How one system knows a customer: its own id for it and what it holds."""

    SCHEMA_VERSION: ClassVar[int] = 1
    model_config = ConfigDict(frozen=True)

    system: System
    external_id: str
    customer_id: str
    name: str
    email: str | None = None

    def differs_from(self, customer: Customer) -> list[str]:
        """Field names that disagree with the customer (what a sync must correct)."""
        drift = []
        if self.customer_id != customer.customer_id:
            drift.append("customer_id")
        if self.name != customer.name:
            drift.append("name")
        if self.email is not None and customer.email is not None and self.email != customer.email:
            drift.append("email")
        return drift
