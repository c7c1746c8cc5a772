"""The currencies the sandbox accepts and their decimal places, as Stripe's API counts them.

Stripe charges in the currency's smallest unit; its documentation lists the zero-decimal and
three-decimal currencies, every other supported one has two decimals.

ISK is zero-decimal as money but Stripe's API takes it in two decimals for backwards
compatibility (an amount of ISK 100 is sent as 10000), so the API table counts it as two.
"""

from __future__ import annotations

from decimal import Decimal

_TWO_DECIMALS = (
    "AED AUD BRL CAD CHF CNY CZK DKK EUR GBP HKD ILS INR ISK MXN "
    "MYR NOK NZD PHP PLN RON SAR SEK SGD THB TRY TWD USD ZAR"
)
_ZERO_DECIMALS = "CLP JPY KRW VND XAF XOF"
_THREE_DECIMALS = "BHD JOD KWD OMR TND"

CURRENCY_DECIMALS: dict[str, int] = {
    **dict.fromkeys(_TWO_DECIMALS.split(), 2),
    **dict.fromkeys(_ZERO_DECIMALS.split(), 0),
    **dict.fromkeys(_THREE_DECIMALS.split(), 3),
}


def format_amount(minor: int, currency_code: str) -> str:
    """`1234, "usd"` -> "12.34 USD", as the sandbox's messages show amounts."""
    exponent = CURRENCY_DECIMALS.get(currency_code.upper(), 2)
    return f"{format(Decimal(minor).scaleb(-exponent), 'f')} {currency_code.upper()}"
