"""The Stripe object types the sandbox serves. Add a Resource here and register it in app.py."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any, ClassVar

from sandbox.billing._engine import SYSTEM, BillingEngine, Resource, new_id
from sandbox.billing._errors import StripeError, no_such, param_error
from sandbox.billing._params import (
    Validator,
    boolean,
    currency,
    email,
    enum,
    integer,
    merge_metadata,
    metadata,
    obj,
    string,
    string_list,
    url,
)
from sandbox.billing._proration import INTERVALS

# Kept on stored invoice lines for the sandbox's rules; since API version 2025-03-31 Stripe
# answers them only under `pricing` and `parent.*_details`.
INVOICE_LINE_UNPUBLISHED = frozenset(
    {"invoice_item", "price", "proration", "subscription_item", "type"}
)


def invoice_line_view(line: Mapping[str, Any]) -> dict[str, Any]:
    """A stored invoice line as the pinned API version answers it."""
    return {
        k: v for k, v in line.items() if k not in INVOICE_LINE_UNPUBLISHED and not k.startswith("_")
    }


# Stripe embeds the first lines of an invoice or credit note; the rest are paged.
EMBEDDED_LINES = 10
# Stripe's longest recurring interval is one year.
MAX_INTERVAL_COUNT = {"day": 365, "week": 52, "month": 12, "year": 1}

ADDRESS_FIELDS = ("city", "country", "line1", "line2", "postal_code", "state")
_ADDRESS = obj({name: string(5000) for name in ADDRESS_FIELDS})


def _address(value: Mapping[str, Any] | None, current: Mapping[str, Any] | None = None) -> Any:
    """Stripe keeps all six keys, null when unknown; an update replaces only keys it names."""
    if value is None:
        return None
    base = dict(current) if current else dict.fromkeys(ADDRESS_FIELDS)
    base.update(value)
    return {name: base.get(name) for name in ADDRESS_FIELDS}


class CustomerResource(Resource):
    object_name = "customer"
    id_prefix = "cus"
    collection = "customers"
    _fields: ClassVar[dict[str, Validator]] = {
        "address": _ADDRESS,
        "description": string(),
        "email": email(),
        "invoice_prefix": string(12),
        "metadata": metadata(),
        "name": string(256),
        "phone": string(20),
        "preferred_locales": string_list(),
        "tax_exempt": enum("exempt", "none", "reverse"),
        "invoice_settings": obj(
            {"default_payment_method": string(255), "footer": string(5000)}, clearable=False
        ),
    }
    # `currency` is not a parameter: Stripe fixes it with the customer's first subscription,
    # invoice or balance transaction, so a sandbox that accepted it would hide a bug.
    create_schema = _fields
    update_schema = _fields
    list_filters: ClassVar[dict[str, Validator]] = {"email": string(512, clearable=False)}

    def build(self, params: dict[str, Any], engine: BillingEngine) -> dict[str, Any]:
        settings = params.get("invoice_settings") or {}
        if settings.get("default_payment_method"):
            # A new customer has no payment method attached yet: attach, then set the default.
            _check_own_payment_method(engine, "", settings["default_payment_method"])
        return {
            "address": _address(params.get("address")),
            "balance": 0,
            "currency": None,
            "default_source": None,
            "delinquent": False,
            "description": params.get("description"),
            "discount": None,
            "email": params.get("email"),
            "invoice_prefix": params.get("invoice_prefix") or secrets.token_hex(4).upper(),
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": None,
                "footer": settings.get("footer"),
                "rendering_options": None,
            },
            "metadata": merge_metadata({}, params.get("metadata") or {}),
            "name": params.get("name"),
            "next_invoice_sequence": 1,
            "phone": params.get("phone"),
            "preferred_locales": params.get("preferred_locales") or [],
            "shipping": None,
            "tax_exempt": params.get("tax_exempt") or "none",
            "test_clock": None,
        }

    def apply(
        self, current: dict[str, Any], params: dict[str, Any], engine: BillingEngine
    ) -> dict[str, Any]:
        updated = dict(current)
        for key, value in params.items():
            if key == "metadata":
                updated["metadata"] = merge_metadata(current.get("metadata") or {}, value)
            elif key == "address":
                updated["address"] = _address(value, current.get("address"))
            elif key == "preferred_locales":
                updated[key] = value or []
            elif key == "tax_exempt":
                updated[key] = value or "none"
            elif key == "invoice_settings":
                settings = dict(current["invoice_settings"])
                for name, setting in value.items():
                    if name == "default_payment_method" and setting is not None:
                        _check_own_payment_method(engine, current["id"], setting)
                    settings[name] = setting
                updated["invoice_settings"] = settings
            else:
                updated[key] = value
        return updated


def _check_own_payment_method(engine: BillingEngine, customer_id: str, pm_id: str) -> None:
    """Stripe's default payment method must be one attached to the customer."""
    found = engine.store.get_object(pm_id)
    if found is None or found[0]["object"] != "payment_method" or found[1]:
        raise no_such(
            "PaymentMethod", pm_id, param="invoice_settings[default_payment_method]", status=400
        )
    if found[0]["customer"] != customer_id:
        raise StripeError(
            400,
            f"The customer does not have a payment method with the ID {pm_id}. The payment "
            "method must be attached to the customer.",
            code="resource_missing",
            param="invoice_settings[default_payment_method]",
        )


class WebhookEndpointResource(Resource):
    object_name = "webhook_endpoint"
    id_prefix = "we"
    collection = "webhook_endpoints"
    emits_events = False
    create_schema: ClassVar[dict[str, Validator]] = {
        "url": url(),
        "enabled_events": string_list(500),
        "api_version": string(64, clearable=False),
        "description": string(),
        "metadata": metadata(),
        "connect": enum("false"),
    }
    create_required = ("url", "enabled_events")
    update_schema: ClassVar[dict[str, Validator]] = {
        "url": url(),
        "enabled_events": string_list(500),
        "description": string(),
        "metadata": metadata(),
        "disabled": enum("true", "false"),
    }

    def build(self, params: dict[str, Any], engine: BillingEngine) -> dict[str, Any]:
        return {
            "api_version": params.get("api_version"),
            "application": None,
            "description": params.get("description"),
            "enabled_events": params["enabled_events"],
            "metadata": merge_metadata({}, params.get("metadata") or {}),
            "secret": params.get("_secret") or "whsec_" + secrets.token_urlsafe(24),
            "status": "enabled",
            "url": params["url"],
            "_configured": bool(params.get("_configured")),
        }

    def apply(
        self, current: dict[str, Any], params: dict[str, Any], engine: BillingEngine
    ) -> dict[str, Any]:
        updated = dict(current)
        for key, value in params.items():
            if key == "metadata":
                updated["metadata"] = merge_metadata(current.get("metadata") or {}, value)
            elif key == "disabled":
                updated["status"] = "disabled" if value == "true" else "enabled"
            else:
                updated[key] = value
        return updated

    def render(self, obj: Mapping[str, Any], *, just_created: bool = False) -> dict[str, Any]:
        # Stripe shows an endpoint's signing secret only in the answer that created it.
        view = super().render(obj)
        if not just_created:
            view.pop("secret", None)
        return view


# catalog ----------------------------------------------------------------------------------


class ProductResource(Resource):
    object_name = "product"
    id_prefix = "prod"
    collection = "products"
    deletable = False  # Stripe deletes only products without prices; not needed here
    chosen_id = True  # "You can optionally override this ID" (Stripe's product create)
    create_schema: ClassVar[dict[str, Validator]] = {
        "id": string(255, clearable=False),
        "name": string(250, clearable=False),
        "description": string(40000),
        "active": boolean(),
        "metadata": metadata(),
        "unit_label": string(12),
    }
    create_required = ("name",)
    update_schema: ClassVar[dict[str, Validator]] = {
        k: v for k, v in create_schema.items() if k != "id"
    }
    list_filters: ClassVar[dict[str, Validator]] = {"active": boolean()}

    def build(self, params: dict[str, Any], engine: BillingEngine) -> dict[str, Any]:
        return {
            "active": params.get("active", True),
            "default_price": None,
            "description": params.get("description"),
            "images": [],
            "marketing_features": [],
            "metadata": merge_metadata({}, params.get("metadata") or {}),
            "name": params["name"],
            "package_dimensions": None,
            "shippable": None,
            "statement_descriptor": None,
            "tax_code": None,
            "type": "service",
            "unit_label": params.get("unit_label"),
            "updated": engine.now(),
            "url": None,
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
        updated["updated"] = engine.now()
        return updated


def _recurring(value: Any, param: str) -> dict[str, Any] | None:
    clean = obj(
        {
            "interval": enum(*INTERVALS),
            "interval_count": integer(1, 365),
            "usage_type": enum("licensed"),
        }
    )(value, param)
    if clean is None:
        return None
    if "interval" not in clean:
        raise param_error(
            f"Missing required param: {param}[interval].",
            param=f"{param}[interval]",
            code="parameter_missing",
        )
    count = clean.get("interval_count", 1)
    if count > MAX_INTERVAL_COUNT[clean["interval"]]:
        raise param_error(
            "The maximum billing interval is one year (1 year, 12 months, 52 weeks or 365 days).",
            param=f"{param}[interval_count]",
        )
    return {
        "interval": clean["interval"],
        "interval_count": count,
        "meter": None,
        "trial_period_days": None,
        "usage_type": "licensed",
    }


class PriceResource(Resource):
    object_name = "price"
    id_prefix = "price"
    collection = "prices"
    deletable = False  # Stripe has no price deletion: deactivate with active=false
    create_schema: ClassVar[dict[str, Validator]] = {
        "currency": currency(),
        "product": string(255, clearable=False),
        "product_data": obj(
            {"name": string(250, clearable=False), "metadata": metadata()}, clearable=False
        ),
        "unit_amount": integer(0, 99_999_999),
        "recurring": _recurring,
        "nickname": string(),
        "metadata": metadata(),
        "active": boolean(),
        "lookup_key": string(200),
        "tax_behavior": enum("exclusive", "inclusive", "unspecified"),
    }
    create_required = ("currency", "unit_amount")
    update_schema: ClassVar[dict[str, Validator]] = {
        "active": boolean(),
        "metadata": metadata(),
        "nickname": string(),
        "lookup_key": string(200),
    }
    list_filters: ClassVar[dict[str, Validator]] = {
        "active": boolean(),
        "currency": currency(),
        "product": string(255, clearable=False),
        "type": enum("one_time", "recurring"),
    }

    def build(self, params: dict[str, Any], engine: BillingEngine) -> dict[str, Any]:
        product_id = params.get("product")
        product_data = params.get("product_data")
        if (product_id is None) == (product_data is None):
            raise param_error(
                "You must specify exactly one of product or product_data.", param="product"
            )
        if product_data is not None:
            if not product_data.get("name"):
                raise param_error(
                    "Missing required param: product_data[name].",
                    param="product_data[name]",
                    code="parameter_missing",
                )
            products = engine.resource("product")
            product_id = engine.insert(
                products,
                products.build({"name": product_data["name"], **product_data}, engine),
                SYSTEM,  # build() knows no request; Stripe would name the price's request
            )["id"]
        else:
            engine.get(engine.resource("product"), str(product_id), param="product", status=400)
        recurring = params.get("recurring")
        return {
            "active": params.get("active", True),
            "billing_scheme": "per_unit",
            "currency": params["currency"],
            "custom_unit_amount": None,
            "lookup_key": params.get("lookup_key"),
            "metadata": merge_metadata({}, params.get("metadata") or {}),
            "nickname": params.get("nickname"),
            "product": product_id,
            "recurring": recurring,
            "tax_behavior": params.get("tax_behavior") or "unspecified",
            "tiers_mode": None,
            "transform_quantity": None,
            "type": "recurring" if recurring else "one_time",
            "unit_amount": params["unit_amount"],
            "unit_amount_decimal": str(params["unit_amount"]),
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


# subscriptions, invoices, credit notes ----------------------------------------------------


def _list_object(url: str, data: list[dict[str, Any]], limit: int | None = None) -> dict[str, Any]:
    shown = data if limit is None else data[:limit]
    return {
        "object": "list",
        "data": shown,
        "has_more": len(shown) < len(data),
        "total_count": len(data),
        "url": url,
    }


class SubscriptionResource(Resource):
    """Created, changed and cancelled by BillingOperations (prorations, invoices)."""

    object_name = "subscription"
    id_prefix = "sub"
    collection = "subscriptions"
    event_prefix = "customer.subscription"
    creatable = False
    updatable = False
    deletable = False
    # On each item since API version 2025-03-31 (items may renew on different days).
    unpublished = frozenset({"current_period_start", "current_period_end"})
    list_filters: ClassVar[dict[str, Validator]] = {
        "customer": string(255, clearable=False),
        "status": enum(
            "active",
            "all",
            "canceled",
            "ended",
            "incomplete",
            "incomplete_expired",
            "past_due",
            "paused",
            "trialing",
            "unpaid",
        ),
        "collection_method": enum("charge_automatically", "send_invoice"),
        "price": string(255, clearable=False),
    }

    def list_query(self, clean: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        equals, excludes = super().list_query(clean)
        equals.pop("price", None)  # matched in items; see BillingOperations.list_subscriptions
        status = equals.pop("status", None)
        if status is None:
            excludes["status"] = "canceled"  # Stripe hides canceled ones unless asked
        elif status == "ended":
            equals["status"] = "canceled"
        elif status != "all":
            equals["status"] = status
        return equals, excludes

    def render(self, obj: Mapping[str, Any], *, just_created: bool = False) -> dict[str, Any]:
        view = super().render(obj)
        view["items"] = _list_object(
            f"/v1/subscription_items?subscription={obj['id']}", list(obj["_items"])
        )
        return view


class InvoiceResource(Resource):
    object_name = "invoice"
    id_prefix = "in"
    collection = "invoices"
    creatable = False
    deletable = False
    # `subscription` lives under parent.subscription_details, `tax` under total_taxes.
    unpublished = frozenset({"subscription", "tax", "days_until_due", "paid_out_of_band"})
    update_schema: ClassVar[dict[str, Validator]] = {
        "auto_advance": boolean(),
        "description": string(1500),
        "footer": string(5000),
        "metadata": metadata(),
    }
    list_filters: ClassVar[dict[str, Validator]] = {
        "customer": string(255, clearable=False),
        "subscription": string(255, clearable=False),
        "status": enum("draft", "open", "paid", "uncollectible", "void"),
        "collection_method": enum("charge_automatically", "send_invoice"),
    }

    def apply(
        self, current: dict[str, Any], params: dict[str, Any], engine: BillingEngine
    ) -> dict[str, Any]:
        if "auto_advance" in params and current["status"] not in ("draft", "open"):
            raise StripeError(
                400,
                f"You can only change auto_advance on draft or open invoices; this invoice "
                f"is {current['status']}.",
                code="invoice_not_editable",
                param="auto_advance",
            )
        updated = dict(current)
        for key, value in params.items():
            if key == "metadata":
                updated["metadata"] = merge_metadata(current.get("metadata") or {}, value)
            else:
                updated[key] = value
        return updated

    def render(self, obj: Mapping[str, Any], *, just_created: bool = False) -> dict[str, Any]:
        view = super().render(obj)
        view["lines"] = _list_object(
            f"/v1/invoices/{obj['id']}/lines",
            [invoice_line_view(line) for line in obj["_lines"]],
            EMBEDDED_LINES,
        )
        return view


class InvoiceItemResource(Resource):
    object_name = "invoiceitem"
    id_prefix = "ii"
    collection = "invoiceitems"
    creatable = False
    deletable = False
    # The pinned version answers these under `pricing` and `parent.subscription_details`;
    # an invoice item has its `date`, no `created`.
    unpublished = frozenset(
        {
            "created",
            "price",
            "subscription",
            "subscription_item",
            "unit_amount",
            "unit_amount_decimal",
        }
    )
    update_schema: ClassVar[dict[str, Validator]] = {
        "description": string(),
        "metadata": metadata(),
    }
    list_filters: ClassVar[dict[str, Validator]] = {
        "customer": string(255, clearable=False),
        "invoice": string(255, clearable=False),
        "pending": boolean(),
    }

    def list_query(self, clean: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        equals, excludes = super().list_query(clean)
        if "pending" in equals:
            equals["_pending"] = equals.pop("pending")
        return equals, excludes

    def apply(
        self, current: dict[str, Any], params: dict[str, Any], engine: BillingEngine
    ) -> dict[str, Any]:
        if "description" in params and not current["_pending"]:
            raise StripeError(
                400,
                "This invoice item is already on an invoice; only its metadata can change.",
                code="invoice_not_editable",
                param="description",
            )
        updated = dict(current)
        for key, value in params.items():
            if key == "metadata":
                updated["metadata"] = merge_metadata(current.get("metadata") or {}, value)
            else:
                updated[key] = value
        return updated


class CreditNoteResource(Resource):
    object_name = "credit_note"
    id_prefix = "cn"
    collection = "credit_notes"
    creatable = False
    deletable = False
    update_schema: ClassVar[dict[str, Validator]] = {"memo": string(), "metadata": metadata()}
    list_filters: ClassVar[dict[str, Validator]] = {
        "customer": string(255, clearable=False),
        "invoice": string(255, clearable=False),
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

    def render(self, obj: Mapping[str, Any], *, just_created: bool = False) -> dict[str, Any]:
        view = super().render(obj)
        view["lines"] = _list_object(
            f"/v1/credit_notes/{obj['id']}/lines", list(obj["_lines"]), EMBEDDED_LINES
        )
        return view


class CustomerBalanceTransactionResource(Resource):
    """Served under /v1/customers/{id}/balance_transactions by BillingOperations."""

    object_name = "customer_balance_transaction"
    id_prefix = "cbtxn"
    collection = "balance_transactions"
    routed = False


def ensure_configured_endpoints(
    engine: BillingEngine, endpoints: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Make the endpoints given at start-up exactly the configured ones, keeping their ids
    across restarts so pending deliveries still find them."""
    resource = engine.resource("webhook_endpoint")
    wanted = {(u, s) for u, s in endpoints}
    kept: list[dict[str, Any]] = []
    with engine.store.transaction():
        for endpoint in engine.store.all_objects("webhook_endpoint"):
            if not endpoint.get("_configured"):
                continue
            if (endpoint["url"], endpoint["secret"]) in wanted:
                wanted.discard((endpoint["url"], endpoint["secret"]))
                kept.append(endpoint)
            else:
                engine.store.save_object(endpoint, deleted=True)
        for endpoint_url, secret in endpoints:
            if (endpoint_url, secret) not in wanted:
                continue
            wanted.discard((endpoint_url, secret))
            obj = {
                "id": new_id(resource.id_prefix),
                "object": "webhook_endpoint",
                "created": engine.now(),
                "livemode": False,
                **resource.build(
                    {
                        "url": endpoint_url,
                        "enabled_events": ["*"],
                        "_secret": secret,
                        "_configured": True,
                    },
                    engine,
                ),
            }
            engine.store.insert_object(obj)
            kept.append(obj)
    return kept
