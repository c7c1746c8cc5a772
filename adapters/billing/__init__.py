"""Billing adapters: the BillingSystem port spoken as Stripe."""

from adapters.billing.stripe import (
    INTENDED_CURRENCY_KEY,
    STRIPE_API_VERSION,
    BalanceTransaction,
    StripeBilling,
    balance_transaction_from_stripe,
    credit_note_from_stripe,
    customer_from_stripe,
    invoice_from_stripe,
    invoice_line_from_stripe,
    invoice_subscription_id,
    subscription_from_stripe,
)

__all__ = [
    "INTENDED_CURRENCY_KEY",
    "STRIPE_API_VERSION",
    "BalanceTransaction",
    "StripeBilling",
    "balance_transaction_from_stripe",
    "credit_note_from_stripe",
    "customer_from_stripe",
    "invoice_from_stripe",
    "invoice_line_from_stripe",
    "invoice_subscription_id",
    "subscription_from_stripe",
]
