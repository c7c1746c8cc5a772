"""The Stripe object types of money that moves: tax rates, payment methods, payment intents,
charges, refunds, balance transactions and invoice payments.

Their side effects (charging, refunding, attaching) live in _payments.py; these classes give
them the generic retrieve/list routes and say which fields a list may filter on.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from sandbox.billing._engine import BillingEngine, Resource
from sandbox.billing._errors import param_error
from sandbox.billing._params import (
    Validator,
    boolean,
    enum,
    merge_metadata,
    metadata,
    obj,
    string,
)

TAX_TYPES = (
    "amusement_tax",
    "communications_tax",
    "gst",
    "hst",
    "igst",
    "jct",
    "lease_tax",
    "pst",
    "qst",
    "retail_delivery_fee",
    "rst",
    "sales_tax",
    "service_tax",
    "vat",
)


def _percentage(value: Any, param: str) -> float:
    """Stripe's tax rate percentage: a decimal number from 0 to 100, up to four places."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise param_error(f"Invalid decimal: {value}", param=param) from None
    if not 0 <= number <= 100:
        raise param_error(f"Invalid {param}: must be between 0 and 100", param=param)
    if "." in str(value) and len(str(value).split(".", 1)[1]) > 4:
        raise param_error(f"Invalid {param}: at most four decimal places", param=param)
    return number


def _country(value: Any, param: str) -> str | None:
    if value == "":
        return None
    if not isinstance(value, str) or len(value) != 2 or not value.isalpha():
        raise param_error(f"Invalid country: {value}", param=param)
    return value.upper()


class TaxRateResource(Resource):
    object_name = "tax_rate"
    id_prefix = "txr"
    collection = "tax_rates"
    deletable = False  # Stripe archives tax rates (active=false); it never deletes them
    create_schema: ClassVar[dict[str, Validator]] = {
        "display_name": string(50, clearable=False),
        "percentage": _percentage,
        "inclusive": boolean(),
        "active": boolean(),
        "country": _country,
        "description": string(),
        "jurisdiction": string(50),
        "metadata": metadata(),
        "state": string(2),
        "tax_type": enum(*TAX_TYPES),
    }
    create_required = ("display_name", "inclusive", "percentage")
    # Percentage and inclusive are not parameters of an update: a rate that billed invoices
    # cannot change what it meant; make a new rate instead.
    update_schema: ClassVar[dict[str, Validator]] = {
        "active": boolean(),
        "country": _country,
        "description": string(),
        "display_name": string(50, clearable=False),
        "jurisdiction": string(50),
        "metadata": metadata(),
        "state": string(2),
        "tax_type": enum(*TAX_TYPES),
    }
    list_filters: ClassVar[dict[str, Validator]] = {"active": boolean(), "inclusive": boolean()}

    def build(self, params: dict[str, Any], engine: BillingEngine) -> dict[str, Any]:
        return {
            "active": params.get("active", True),
            "country": params.get("country"),
            "description": params.get("description"),
            "display_name": params["display_name"],
            "effective_percentage": params["percentage"],
            "flat_amount": None,
            "inclusive": params["inclusive"],
            "jurisdiction": params.get("jurisdiction"),
            "jurisdiction_level": None,
            "metadata": merge_metadata({}, params.get("metadata") or {}),
            "percentage": params["percentage"],
            "rate_type": "percentage",
            "state": params.get("state"),
            "tax_type": params.get("tax_type"),
        }

    def apply(
        self, current: dict[str, Any], params: dict[str, Any], engine: BillingEngine
    ) -> dict[str, Any]:
        updated = dict(current)
        for key, value in params.items():
            if key == "metadata":
                updated["metadata"] = merge_metadata(current.get("metadata") or {}, value)
            else:
                updated[key] = value
        return updated


class PaymentMethodResource(Resource):
    """Stripe's test payment methods; made by attaching a test token (see _payments.py)."""

    object_name = "payment_method"
    id_prefix = "pm"
    collection = "payment_methods"
    emits_events = False  # payment_method.attached / detached are recorded by the actions
    creatable = False
    deletable = False
    update_schema: ClassVar[dict[str, Validator]] = {
        "metadata": metadata(),
        "billing_details": obj(
            {"email": string(800), "name": string(), "phone": string(20)}, clearable=False
        ),
    }
    list_filters: ClassVar[dict[str, Validator]] = {
        "customer": string(255, clearable=False),
        "type": enum("card"),
    }

    def apply(
        self, current: dict[str, Any], params: dict[str, Any], engine: BillingEngine
    ) -> dict[str, Any]:
        updated = dict(current)
        for key, value in params.items():
            if key == "metadata":
                updated["metadata"] = merge_metadata(current.get("metadata") or {}, value)
            else:
                updated[key] = {**current[key], **value}
        return updated

    def render(self, obj: Mapping[str, Any], *, just_created: bool = False) -> dict[str, Any]:
        return super().render(obj)


class _ReadOnly(Resource):
    creatable = False
    updatable = False
    deletable = False


class PaymentIntentResource(Resource):
    object_name = "payment_intent"
    id_prefix = "pi"
    collection = "payment_intents"
    creatable = False  # POST /v1/payment_intents confirms and charges: see _payments.py
    updatable = False
    deletable = False
    list_filters: ClassVar[dict[str, Validator]] = {"customer": string(255, clearable=False)}


class ChargeResource(_ReadOnly):
    object_name = "charge"
    id_prefix = "ch"
    collection = "charges"
    emits_events = False  # charge.succeeded / charge.failed / charge.refunded, not .created
    list_filters: ClassVar[dict[str, Validator]] = {
        "customer": string(255, clearable=False),
        "payment_intent": string(255, clearable=False),
    }


class RefundResource(Resource):
    object_name = "refund"
    id_prefix = "re"
    collection = "refunds"
    unpublished = frozenset({"livemode"})  # a refund has none at the pinned version
    creatable = False  # POST /v1/refunds moves money: see _payments.py
    deletable = False
    update_schema: ClassVar[dict[str, Validator]] = {"metadata": metadata()}
    list_filters: ClassVar[dict[str, Validator]] = {
        "charge": string(255, clearable=False),
        "payment_intent": string(255, clearable=False),
    }

    def apply(
        self, current: dict[str, Any], params: dict[str, Any], engine: BillingEngine
    ) -> dict[str, Any]:
        return {
            **current,
            "metadata": merge_metadata(current.get("metadata") or {}, params.get("metadata")),
        }


class BalanceTransactionResource(_ReadOnly):
    """The account's balance (GET /v1/balance_transactions), not a customer's balance."""

    object_name = "balance_transaction"
    id_prefix = "txn"
    collection = "balance_transactions"
    unpublished = frozenset({"livemode"})  # a balance transaction has none
    emits_events = False
    list_filters: ClassVar[dict[str, Validator]] = {
        "source": string(255, clearable=False),
        "type": enum("charge", "refund", "refund_failure", "payment", "payment_refund"),
        "currency": string(3, clearable=False),
    }


class InvoicePaymentResource(_ReadOnly):
    object_name = "invoice_payment"
    id_prefix = "inpay"
    collection = "invoice_payments"
    emits_events = False  # invoice_payment.paid is recorded when the payment completes
    list_filters: ClassVar[dict[str, Validator]] = {
        "invoice": string(255, clearable=False),
        "status": enum("canceled", "open", "paid"),
        # Stripe's `payment[type]`, `payment[payment_intent]`, `payment[payment_record]`.
        "payment": obj(
            {
                "type": enum("payment_intent", "payment_record"),
                "payment_intent": string(255, clearable=False),
                "payment_record": string(255, clearable=False),
            },
            clearable=False,
        ),
    }

    def list_query(self, clean: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        equals, excludes = super().list_query(clean)
        payment = equals.pop("payment", None) or {}
        if payment and "type" not in payment:
            raise param_error(
                "Missing required param: payment[type].",
                param="payment[type]",
                code="parameter_missing",
            )
        equals.update({f"payment.{key}": value for key, value in payment.items()})
        return equals, excludes


__all__ = [
    "BalanceTransactionResource",
    "ChargeResource",
    "InvoicePaymentResource",
    "PaymentIntentResource",
    "PaymentMethodResource",
    "RefundResource",
    "TaxRateResource",
]
