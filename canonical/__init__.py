"""Pure business models of ledgerbridge. No I/O; imports nothing else of ours."""

from canonical.customer import AccountRecord, Customer, PostalAddress, System
from canonical.events import BusinessEvent, EventSource, SubjectIds
from canonical.money import CURRENCY_EXPONENTS, CurrencyError, Money, currency_exponent

__all__ = [
    "CURRENCY_EXPONENTS",
    "AccountRecord",
    "BusinessEvent",
    "CurrencyError",
    "Customer",
    "EventSource",
    "Money",
    "PostalAddress",
    "SubjectIds",
    "System",
    "currency_exponent",
]
