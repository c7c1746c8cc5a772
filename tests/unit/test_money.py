from decimal import Decimal

import pytest
from pydantic import ValidationError

from canonical import CurrencyError, Money
from starters.console import money


@pytest.mark.parametrize(
    ("minor", "currency", "amount"),
    [(1999, "USD", "19.99"), (1234, "JPY", "1234"), (12345, "KWD", "12.345"), (-500, "EUR", "-5")],
)
def test_minor_units_follow_the_currency_exponent(minor: int, currency: str, amount: str) -> None:
    money = Money.from_minor(minor, currency)
    assert money.amount == Decimal(amount)
    assert money.to_minor() == minor


def test_an_amount_finer_than_the_currency_is_refused_not_rounded() -> None:
    with pytest.raises(CurrencyError, match="finer than"):
        Money.of("10.005", "USD").to_minor()
    with pytest.raises(CurrencyError):
        Money.of("1.5", "JPY").to_minor()


def test_floats_are_refused() -> None:
    with pytest.raises(ValidationError, match="floats"):
        Money(amount=0.1, currency="USD")  # type: ignore[arg-type]


def test_unknown_currency_is_refused() -> None:
    with pytest.raises(ValidationError, match="unsupported currency"):
        Money.of("1", "XYZ")


def test_currency_is_normalised_to_upper_case() -> None:
    assert Money.of("1", "usd").currency == "USD"


def test_arithmetic_stays_exact_and_within_one_currency() -> None:
    total = Money.of("0.10", "USD") + Money.of("0.20", "USD")
    assert total == Money.of("0.30", "USD")
    assert -total == Money.of("-0.30", "USD")
    assert Money.of("1", "USD") > Money.zero("USD")
    with pytest.raises(CurrencyError, match="cannot combine"):
        Money.of("1", "USD") + Money.of("1", "EUR")


def test_quantized_uses_bankers_rounding() -> None:
    assert Money.of("0.125", "USD").quantized().amount == Decimal("0.12")
    assert Money.of("0.135", "USD").quantized().amount == Decimal("0.14")


def test_json_round_trip_keeps_the_decimal_exact() -> None:
    money = Money.of("12.345", "KWD")
    text = money.model_dump_json()
    assert text == '{"amount":"12.345","currency":"KWD"}'
    assert Money.model_validate_json(text) == money


def test_from_minor_needs_an_int() -> None:
    with pytest.raises(TypeError):
        Money.from_minor(19.99, "USD")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Money.from_minor(True, "USD")


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        ("45.000000", "USD", "45.00 USD"),  # as the store's numeric(24, 6) gives it back
        ("45", "USD", "45.00 USD"),
        ("1000.000000", "JPY", "1000 JPY"),
        ("1.5", "KWD", "1.500 KWD"),
        ("-12.500000", "EUR", "-12.50 EUR"),
    ],
)
def test_money_prints_with_the_currency_decimals(amount: str, currency: str, text: str) -> None:
    assert str(Money.of(amount, currency)) == text


def test_the_console_prints_an_api_amount_with_the_currency_decimals() -> None:
    assert money({"amount": "45.000000", "currency": "USD"}) == "45.00 USD"
    assert money({"amount": "1000.000000", "currency": "JPY"}) == "1000 JPY"
    assert money({"amount": "1.5", "currency": "KWD"}) == "1.500 KWD"
    assert money({"amount": "7.1", "currency": "XYZ"}) == "7.1 XYZ"  # unknown: as given
    assert money(None) == "-"
