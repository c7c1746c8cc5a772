"""Pure business models of ledgerbridge. No I/O; imports nothing else of ours."""

from canonical.billing import (
    BalanceTransaction,
    BillingDocument,
    DocumentLine,
    LedgerLine,
    LedgerPosting,
    LedgerTax,
    LinkedRefund,
    PostedDocument,
    Subscription,
    SubscriptionItem,
    TaxLine,
)
from canonical.customer import AccountRecord, Customer, PostalAddress, System
from canonical.events import BusinessEvent, EventSource, SubjectIds
from canonical.finance import (
    FINANCE_ROLES,
    Decision,
    DecisionRequest,
    ExceptionContext,
    FinanceDecision,
)
from canonical.money import CURRENCY_EXPONENTS, CurrencyError, Money, currency_exponent
from canonical.payments import (
    Payment,
    PaymentPosting,
    PostedPayment,
    Refund,
    Settlement,
)

__all__ = [
    "CURRENCY_EXPONENTS",
    "FINANCE_ROLES",
    "AccountRecord",
    "BalanceTransaction",
    "BillingDocument",
    "BusinessEvent",
    "CurrencyError",
    "Customer",
    "Decision",
    "DecisionRequest",
    "DocumentLine",
    "EventSource",
    "ExceptionContext",
    "FinanceDecision",
    "LedgerLine",
    "LedgerPosting",
    "LedgerTax",
    "LinkedRefund",
    "Money",
    "Payment",
    "PaymentPosting",
    "PostalAddress",
    "PostedDocument",
    "PostedPayment",
    "Refund",
    "Settlement",
    "SubjectIds",
    "Subscription",
    "SubscriptionItem",
    "System",
    "TaxLine",
    "currency_exponent",
]
