"""A Stripe-compatible billing server for the subset ledgerbridge uses (see DESIGN.md).

`create_app(state_path, api_keys, webhook_endpoints)` builds the ASGI app;
`python -m sandbox.billing` serves it. Customers, products and prices, tax rates,
subscriptions with prorated amendments, invoices, invoice items, credit notes, the customer
balance, payment methods (Stripe's test cards), invoice payments by card, partial or out of
band, payment intents, charges, the account's balance transactions (USD, fixed rates),
refunds, events and signed webhooks; `POST /_sandbox/subscriptions/{id}/advance` bills (and
charges) a subscription's next cycle.
"""

from sandbox.billing._billing import BillingOperations
from sandbox.billing._engine import API_VERSION, BillingEngine, Resource, SandboxSettings
from sandbox.billing.app import Fault, FaultInjector, SandboxState, create_app

__all__ = [
    "API_VERSION",
    "BillingEngine",
    "BillingOperations",
    "Fault",
    "FaultInjector",
    "Resource",
    "SandboxSettings",
    "SandboxState",
    "create_app",
]
