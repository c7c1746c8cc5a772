"""The shapes of what the API accepts: strict request bodies, dates as ISO strings, and each id
in the shape of the system it is passed on to, so a malformed one is a clear 422 here rather
than a request to another path of that system.

FastAPI validates a body already parsed from JSON (pydantic's Python mode), where strict mode
would refuse a date written as a string: `IsoDate` parses exactly `YYYY-MM-DD` itself, and a
number (`"period_from": 0`, a day of 1970) stays refused.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, WithJsonSchema

from canonical import Money
from canonical.money import CURRENCY_EXPONENTS

# Stripe's ids: a prefix naming the object, then letters and digits; bounded as receipts hold them.
STRIPE_EVENT_ID = r"^evt_[A-Za-z0-9]{1,124}$"
STRIPE_CUSTOMER_ID = r"^cus_[A-Za-z0-9]{1,124}$"
STRIPE_INVOICE_ID = r"^in_[A-Za-z0-9]{1,125}$"
# Zendesk's ticket ids are positive 64-bit integers.
ZENDESK_TICKET_ID = r"^[1-9][0-9]{0,18}$"
_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _iso_day(value: Any) -> Any:
    if not isinstance(value, str):
        return value  # a date already, or refused by the strict date check
    if not _ISO_DAY.fullmatch(value):
        raise ValueError("expected a date as YYYY-MM-DD")
    return date.fromisoformat(value)


IsoDate = Annotated[date, BeforeValidator(_iso_day)]


def _integral_amount(value: Any) -> Any:
    """JSON does not tell 12.0 from 12: an integral number is that integer, exactly; any
    other float is left for Money to refuse."""
    if isinstance(value, dict):
        amount = value.get("amount")
        if (
            isinstance(amount, float) and amount.is_integer() and abs(amount) < 2**53
        ):  # exactly, as documented
            return {**value, "amount": int(amount)}
    return value


# Money as a request may write it: the document says what Money really takes (no float, a
# known currency), so a client built from it never sends what is refused.
MoneyIn = Annotated[
    Money,
    BeforeValidator(_integral_amount),
    WithJsonSchema(
        {
            "type": "object",
            "title": "MoneyIn",
            "properties": {
                "amount": {
                    "anyOf": [
                        # As far as a JSON number holds an integer exactly (2**53).
                        {"type": "integer", "minimum": -(2**53 - 1), "maximum": 2**53 - 1},
                        {"type": "string", "pattern": r"^-?[0-9]{1,15}(\.[0-9]{1,3})?$"},
                    ],
                    "description": 'a decimal amount: an integer, or a string such as "12.50"',
                },
                "currency": {"type": "string", "enum": sorted(CURRENCY_EXPONENTS)},
            },
            "required": ["amount", "currency"],
            "additionalProperties": False,
        }
    ),
]


class StrictBody(BaseModel):
    """A request body: no type coercion (a number is no date, "true" no boolean), no field
    the API does not know."""

    model_config = ConfigDict(strict=True, extra="forbid")


def is_ticket_id(value: str) -> bool:
    return re.fullmatch(ZENDESK_TICKET_ID, value) is not None


__all__ = [
    "STRIPE_CUSTOMER_ID",
    "STRIPE_EVENT_ID",
    "STRIPE_INVOICE_ID",
    "ZENDESK_TICKET_ID",
    "IsoDate",
    "MoneyIn",
    "StrictBody",
    "is_ticket_id",
]
