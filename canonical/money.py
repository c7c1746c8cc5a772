"""Money: a Decimal amount in an ISO 4217 currency.

Integer minor units exist only at system boundaries that speak them (Stripe); the
currency's exponent decides the conversion, never a hard-coded 100.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, field_validator

# ISO 4217 minor-unit exponents. Anything not listed here is refused rather than guessed.
_TWO_DECIMALS = (
    "AED AUD BRL CAD CHF CNY CZK DKK EUR GBP HKD ILS INR MXN "
    "MYR NOK NZD PHP PLN RON SAR SEK SGD THB TRY TWD USD ZAR"
)
_NO_DECIMALS = "CLP ISK JPY KRW VND XAF XOF"
_THREE_DECIMALS = "BHD JOD KWD OMR TND"
CURRENCY_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(_TWO_DECIMALS.split(), 2),
    **dict.fromkeys(_NO_DECIMALS.split(), 0),
    **dict.fromkeys(_THREE_DECIMALS.split(), 3),
}


class CurrencyError(ValueError):
    """A currency we do not know, or an amount finer than the currency allows."""


def currency_exponent(currency: str) -> int:
    try:
        return CURRENCY_EXPONENTS[currency.upper()]
    except KeyError:
        raise CurrencyError(f"unsupported currency {currency!r}") from None


class Money(BaseModel):
    """An exact amount of one currency. Immutable; arithmetic only within one currency."""

    SCHEMA_VERSION: ClassVar[int] = 1
    model_config = ConfigDict(frozen=True)

    amount: Decimal
    currency: str

    @field_validator("currency")
    @classmethod
    def _known_currency(cls, value: str) -> str:
        value = value.upper()
        currency_exponent(value)
        return value

    @field_validator("amount", mode="before")
    @classmethod
    def _no_floats(cls, value: Any) -> Any:
        if isinstance(value, float):
            raise ValueError("money amounts must not be floats; pass a Decimal, int or string")
        return value

    @field_validator("amount")
    @classmethod
    def _finite(cls, value: Decimal) -> Decimal:
        if not value.is_finite():
            raise ValueError("money amounts must be finite")
        return value

    @classmethod
    def of(cls, amount: Decimal | int | str, currency: str) -> Money:
        try:
            return cls(amount=Decimal(amount), currency=currency)
        except InvalidOperation:
            raise ValueError(f"not a decimal amount: {amount!r}") from None

    @classmethod
    def zero(cls, currency: str) -> Money:
        return cls(amount=Decimal(0), currency=currency)

    @classmethod
    def from_minor(cls, minor: int, currency: str) -> Money:
        if isinstance(minor, bool) or not isinstance(minor, int):
            raise TypeError(f"minor units must be an int, got {type(minor).__name__}")
        exponent = currency_exponent(currency)
        return cls(amount=Decimal(minor).scaleb(-exponent), currency=currency)

    @property
    def exponent(self) -> int:
        return currency_exponent(self.currency)

    def to_minor(self) -> int:
        """Integer minor units; refuses to silently drop a fraction of the smallest unit."""
        scaled = self.amount.scaleb(self.exponent)
        if scaled != scaled.to_integral_value():
            raise CurrencyError(
                f"{self.amount} {self.currency} is finer than the currency's "
                f"{self.exponent} decimal places"
            )
        return int(scaled)

    def quantized(self) -> Money:
        """Rounded to the currency's precision, banker's rounding (as ledgers do)."""
        quantum = Decimal(1).scaleb(-self.exponent)
        return Money(
            amount=self.amount.quantize(quantum, rounding=ROUND_HALF_EVEN), currency=self.currency
        )

    def _same_currency(self, other: Money) -> None:
        if self.currency != other.currency:
            raise CurrencyError(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(amount=self.amount + other.amount, currency=self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(amount=self.amount - other.amount, currency=self.currency)

    def __neg__(self) -> Money:
        return Money(amount=-self.amount, currency=self.currency)

    def __lt__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount < other.amount

    def __le__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount <= other.amount

    def __gt__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount > other.amount

    def __ge__(self, other: Money) -> bool:
        self._same_currency(other)
        return self.amount >= other.amount

    def __str__(self) -> str:
        return f"{self.quantized().amount} {self.currency}"
