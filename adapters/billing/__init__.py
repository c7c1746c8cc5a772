"""Billing adapters: the BillingSystem port spoken as Stripe."""

from adapters.billing.stripe import (
    INTENDED_CURRENCY_KEY,
    STRIPE_API_VERSION,
    StripeBilling,
    customer_from_stripe,
    encode_form,
)

__all__ = [
    "INTENDED_CURRENCY_KEY",
    "STRIPE_API_VERSION",
    "StripeBilling",
    "customer_from_stripe",
    "encode_form",
]
