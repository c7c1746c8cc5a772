"""The Stripe object types the sandbox serves. Add a Resource here and register it in app.py."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any, ClassVar

from sandbox.billing._engine import BillingEngine, Resource, new_id
from sandbox.billing._params import (
    Validator,
    email,
    enum,
    merge_metadata,
    metadata,
    obj,
    string,
    string_list,
    url,
)

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
    }
    # `currency` is not a parameter: Stripe fixes it with the customer's first subscription,
    # invoice or balance transaction, so a sandbox that accepted it would hide a bug.
    create_schema = _fields
    update_schema = _fields
    list_filters: ClassVar[dict[str, Validator]] = {"email": string(512, clearable=False)}

    def build(self, params: dict[str, Any], engine: BillingEngine) -> dict[str, Any]:
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
                "footer": None,
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
            else:
                updated[key] = value
        return updated


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
