"""The billing engine: a generic object store with Stripe's lifecycle, events and deliveries.

A `Resource` describes one Stripe object type (prefix, URL collection, parameter schemas,
how create/update build the object). The engine gives every resource the same CRUD, list
pagination, `<type>.created/updated/deleted` events and webhook delivery scheduling, so a
new object type (product, price, subscription, invoice, credit note) is one Resource plus
any custom actions, which call `engine.save(...)` and `engine.record_event(...)` themselves.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sandbox.billing._errors import StripeError, no_such, param_error
from sandbox.billing._params import (
    Validator,
    as_list,
    integer,
    obj,
    string,
    string_list,
    validate,
)
from sandbox.billing._store import BillingStore, CursorNotFound, Delivery, Page

# The API version the sandbox stamps on events (stripe-python 16 pins this one).
API_VERSION = "2026-10-28.endive"

_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def new_id(prefix: str, length: int = 24) -> str:
    return f"{prefix}_" + "".join(secrets.choice(_ALPHABET) for _ in range(length))


@dataclass(frozen=True)
class SandboxSettings:
    """Knobs of the billing sandbox; the defaults suit `ledgerbridge up` and the demo."""

    api_version: str = API_VERSION
    idempotency_ttl_seconds: float = 24 * 3600
    # Webhook delivery: exponential backoff from `initial` doubling up to `max`, for at most
    # `give_up_after` seconds (Stripe retries for three days).
    webhook_initial_backoff_seconds: float = 1.0
    webhook_max_backoff_seconds: float = 60.0
    webhook_give_up_after_seconds: float = 3 * 24 * 3600
    webhook_timeout_seconds: float = 10.0
    # Stripe promises neither order nor exactly-once; these make the sandbox show it.
    webhook_shuffle: bool = False
    webhook_shuffle_window_seconds: float = 0.5
    webhook_duplicate_rate: float = 0.0
    random_seed: int | None = None


@dataclass(frozen=True)
class CallContext:
    """Who asked: stamped on events as `request` (None for the engine's own actions)."""

    request_id: str | None = None
    idempotency_key: str | None = None


SYSTEM = CallContext()


class Resource:
    """One Stripe object type. Subclasses set the class attributes and `build`/`apply`."""

    object_name: ClassVar[str]  # "customer"
    id_prefix: ClassVar[str]  # "cus"
    collection: ClassVar[str]  # URL segment: /v1/customers
    event_prefix: ClassVar[str | None] = None  # defaults to object_name; None = no events
    emits_events: ClassVar[bool] = True
    # Which generic routes the app serves; objects with side effects (subscriptions,
    # invoices...) are created by their own operations in _billing.py instead.
    routed: ClassVar[bool] = True  # False: no generic route at all (nested collections)
    creatable: ClassVar[bool] = True
    deletable: ClassVar[bool] = True
    updatable: ClassVar[bool] = True
    create_schema: ClassVar[Mapping[str, Validator]] = {}
    create_required: ClassVar[Sequence[str]] = ()
    update_schema: ClassVar[Mapping[str, Validator]] = {}
    # Whether create takes an `id` parameter (Stripe: products do, most objects do not).
    chosen_id: ClassVar[bool] = False
    # List filters: query parameter -> validator; the clean value must equal the same field.
    list_filters: ClassVar[Mapping[str, Validator]] = {}
    # Stored for the sandbox's own rules but absent from the pinned API version's object.
    unpublished: ClassVar[frozenset[str]] = frozenset()

    @property
    def events_named(self) -> str:
        return self.event_prefix or self.object_name

    def build(self, params: dict[str, Any], engine: BillingEngine) -> dict[str, Any]:
        """The new object's own fields (the engine adds id, object, created, livemode)."""
        raise NotImplementedError

    def apply(
        self, current: dict[str, Any], params: dict[str, Any], engine: BillingEngine
    ) -> dict[str, Any]:
        """The object after an update with clean params."""
        raise NotImplementedError

    def list_query(self, clean: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """(equals, excludes) on stored fields for the clean list parameters."""
        return {k: v for k, v in clean.items() if k in self.list_filters}, {}

    def render(self, obj: Mapping[str, Any], *, just_created: bool = False) -> dict[str, Any]:
        """The API view: fields starting with "_" are the sandbox's own bookkeeping."""
        return {k: v for k, v in obj.items() if not k.startswith("_") and k not in self.unpublished}

    def deleted_view(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        return {"id": obj["id"], "object": self.object_name, "deleted": True}


def previous_attributes(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """Stripe's `data.previous_attributes`: old values of what changed; hashes key by key."""
    changed: dict[str, Any] = {}
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old == new or key.startswith("_"):
            continue
        if isinstance(old, dict) and isinstance(new, dict):
            changed[key] = {
                k: old.get(k) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)
            }
        else:
            changed[key] = old
    return changed


_CREATED_RANGE = obj({op: integer() for op in ("gt", "gte", "lt", "lte")}, clearable=False)


def created_filter(value: Any, param: str) -> dict[str, int]:
    """Stripe's `created` list filter: a timestamp, or `created[gte]=...&created[lt]=...`."""
    if isinstance(value, dict):
        return dict(_CREATED_RANGE(value, param) or {})
    return {"eq": integer()(value, param)}


def _list_schema(extra: Mapping[str, Validator]) -> dict[str, Validator]:
    return {
        "limit": integer(1, 100),
        "starting_after": string(clearable=False),
        "ending_before": string(clearable=False),
        "created": created_filter,
        **extra,
    }


def list_envelope(
    page: Page, url: str, render: Callable[[dict[str, Any]], dict[str, Any]]
) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [render(item) for item in page.items],
        "has_more": page.has_more,
        "url": url,
    }


@dataclass
class _DeliveryMode:
    shuffle: bool
    shuffle_window_seconds: float
    duplicate_rate: float
    rng: random.Random = field(default_factory=random.Random)


class BillingEngine:
    def __init__(
        self,
        store: BillingStore,
        settings: SandboxSettings | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings or SandboxSettings()
        # A swappable clock leaves room for Stripe test clocks later.
        self.clock = clock
        self.resources: dict[str, Resource] = {}
        self.delivery_mode = _DeliveryMode(
            shuffle=self.settings.webhook_shuffle,
            shuffle_window_seconds=self.settings.webhook_shuffle_window_seconds,
            duplicate_rate=self.settings.webhook_duplicate_rate,
            rng=random.Random(self.settings.random_seed),
        )
        self._listeners: list[Callable[[], None]] = []

    # wiring ------------------------------------------------------------------------------

    def register(self, resource: Resource) -> None:
        self.resources[resource.object_name] = resource

    def resource(self, object_name: str) -> Resource:
        return self.resources[object_name]

    def on_delivery_scheduled(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def _notify(self) -> None:
        for listener in self._listeners:
            listener()

    def now(self) -> int:
        return int(self.clock())

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """One API call's changes and events, all or nothing; deliveries wake afterwards."""
        with self.store.transaction():
            yield
        self._notify()

    # generic lifecycle -------------------------------------------------------------------

    def create(
        self, resource: Resource, params: Mapping[str, Any], ctx: CallContext
    ) -> dict[str, Any]:
        clean = validate(params, resource.create_schema, required=resource.create_required)
        with self.atomic():
            chosen = clean.pop("id", None) if resource.chosen_id else None
            if chosen is not None and self.store.get_object(chosen) is not None:
                # Stripe keeps an id forever, even once the object is deleted.
                raise StripeError(
                    400,
                    f"{resource.object_name.capitalize()} already exists.",
                    code="resource_already_exists",
                    param="id",
                    saved=False,
                )
            obj = self.insert(resource, resource.build(clean, self), ctx, object_id=chosen)
        return resource.render(obj, just_created=True)

    def insert(
        self,
        resource: Resource,
        fields: Mapping[str, Any],
        ctx: CallContext,
        *,
        object_id: str | None = None,
    ) -> dict[str, Any]:
        """Store a new object (id, object, created, livemode added) and record `.created`."""
        obj = {
            "id": object_id or new_id(resource.id_prefix),
            "object": resource.object_name,
            "created": self.now(),
            "livemode": False,
            **fields,
        }
        with self.store.transaction():
            self.store.insert_object(obj)
            if resource.emits_events:
                self.record_event(f"{resource.events_named}.created", resource.render(obj), ctx)
        return obj

    def get(
        self, resource: Resource, object_id: str, *, param: str = "id", status: int = 404
    ) -> dict[str, Any]:
        """The stored object (deleted ones count as missing). A missing object named by a
        parameter of another call is Stripe's 400 `resource_missing` (status=400)."""
        found = self.store.get_object(object_id) if isinstance(object_id, str) else None
        if found is None or found[1] or found[0]["object"] != resource.object_name:
            raise no_such(resource.object_name, str(object_id), param=param, status=status)
        return found[0]

    def retrieve(self, resource: Resource, object_id: str) -> dict[str, Any]:
        found = self.store.get_object(object_id)
        if found is None or found[0]["object"] != resource.object_name:
            raise no_such(resource.object_name, object_id)
        obj, deleted = found
        return resource.deleted_view(obj) if deleted else resource.render(obj)

    def update(
        self, resource: Resource, object_id: str, params: Mapping[str, Any], ctx: CallContext
    ) -> dict[str, Any]:
        clean = validate(params, resource.update_schema)
        with self.store.transaction():
            current = self.get(resource, object_id)
            updated = resource.apply(dict(current), clean, self)
            self.save(resource, current, updated, ctx)
        self._notify()
        return resource.render(updated)

    def save(
        self,
        resource: Resource,
        before: Mapping[str, Any],
        after: dict[str, Any],
        ctx: CallContext,
        *,
        event_type: str | None = None,
    ) -> None:
        """Store a changed object and record `<type>.updated` (or `event_type`, e.g.
        `invoice.finalized`) when anything visible changed. Only `.updated` events carry
        `previous_attributes`, as in Stripe."""
        changed = previous_attributes(resource.render(before), resource.render(after))
        kind = event_type or f"{resource.events_named}.updated"
        with self.store.transaction():
            self.store.save_object(after)
            if resource.emits_events and changed:
                self.record_event(
                    kind,
                    resource.render(after),
                    ctx,
                    previous=changed if kind.endswith(".updated") else None,
                )

    def delete(self, resource: Resource, object_id: str, ctx: CallContext) -> dict[str, Any]:
        with self.store.transaction():
            obj = self.get(resource, object_id)
            self.store.save_object(obj, deleted=True)
            if resource.emits_events:
                self.record_event(f"{resource.events_named}.deleted", resource.render(obj), ctx)
        self._notify()
        return resource.deleted_view(obj)

    def list_objects(
        self, resource: Resource, params: Mapping[str, Any], url: str
    ) -> dict[str, Any]:
        clean = validate(params, _list_schema(resource.list_filters))
        starting_after, ending_before = clean.get("starting_after"), clean.get("ending_before")
        if starting_after and ending_before:
            raise param_error(
                "You may only specify one of these parameters: starting_after, ending_before.",
                param="starting_after",
            )
        equals, excludes = resource.list_query(clean)
        try:
            page = self.store.list_objects(
                resource.object_name,
                limit=clean.get("limit", 10),
                starting_after=starting_after,
                ending_before=ending_before,
                equals=equals,
                excludes=excludes,
                created=clean.get("created"),
            )
        except CursorNotFound as missing:
            param = "starting_after" if starting_after else "ending_before"
            raise no_such(resource.object_name, str(missing), param=param, status=400) from None
        return list_envelope(page, url, resource.render)

    def patch(
        self, object_id: str, fields: Mapping[str, Any], ctx: CallContext = SYSTEM
    ) -> dict[str, Any]:
        """Change fields as billing itself would (e.g. currency fixed by a first subscription)."""
        found = self.store.get_object(object_id)
        if found is None or found[1]:
            raise StripeError(404, f"No such object: '{object_id}'", code="resource_missing")
        current = found[0]
        protected = {"id", "object", "created", "livemode"} & set(fields)
        if protected:
            raise param_error(
                f"Cannot patch {', '.join(sorted(protected))}", param=sorted(protected)[0]
            )
        resource = self.resource(current["object"])
        with self.store.transaction():
            updated = {**current, **fields}
            self.save(resource, current, updated, ctx)
        self._notify()
        return resource.render(updated)

    # expansions --------------------------------------------------------------------------

    def expand(self, body: dict[str, Any], paths: Any) -> dict[str, Any]:
        """Stripe's `expand[]`: replace the ids at dotted paths (`items.data.price.product`,
        `data.customer` in lists) by the objects they name."""
        if paths is None:
            return body
        for index, path in enumerate(as_list(paths, "expand")):
            if not isinstance(path, str) or not path:
                raise param_error("Invalid expand path", param=f"expand[{index}]")
            body = self._expand_at(body, path.split("."), path)
        return body

    def _expand_at(self, node: Any, parts: list[str], path: str) -> Any:
        if isinstance(node, list):
            return [self._expand_at(item, parts, path) for item in node]
        if not isinstance(node, dict) or not parts:
            return node
        key, rest = parts[0], parts[1:]
        if key not in node:
            raise param_error(f"This property cannot be expanded ({path}).", param="expand")
        value = node[key]
        if isinstance(value, str) and (rest or key != "id"):
            found = self.store.get_object(value)
            if found is not None and found[0].get("object") in self.resources:
                resource = self.resources[found[0]["object"]]
                value = resource.deleted_view(found[0]) if found[1] else resource.render(found[0])
        return {**node, key: self._expand_at(value, rest, path) if rest else value}

    # events ------------------------------------------------------------------------------

    def record_event(
        self,
        event_type: str,
        obj: dict[str, Any],
        ctx: CallContext,
        *,
        previous: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Store an event and schedule its webhook deliveries (inside the caller's transaction)."""
        data: dict[str, Any] = {"object": obj}
        if previous is not None:
            data["previous_attributes"] = previous
        event = {
            "id": new_id("evt"),
            "object": "event",
            "api_version": self.settings.api_version,
            "created": self.now(),
            "data": data,
            "livemode": False,
            "pending_webhooks": 0,
            "request": {"id": ctx.request_id, "idempotency_key": ctx.idempotency_key},
            "type": event_type,
        }
        with self.store.transaction():
            self.store.insert_event(event)
            self.schedule_deliveries(event, reason="event")
        return event

    def render_events(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        pending = self.store.pending_webhooks([e["id"] for e in events])
        return [{**e, "pending_webhooks": pending.get(e["id"], 0)} for e in events]

    def get_event(self, event_id: str) -> dict[str, Any]:
        event = self.store.get_event(event_id)
        if event is None:
            raise no_such("event", event_id)
        return self.render_events([event])[0]

    def list_events(self, params: Mapping[str, Any], url: str) -> dict[str, Any]:
        clean = validate(
            params,
            _list_schema(
                {"type": _event_type_filter, "types": string_list(20), "delivery_success": _ignored}
            ),
        )
        starting_after, ending_before = clean.get("starting_after"), clean.get("ending_before")
        types = [*([clean["type"]] if "type" in clean else []), *clean.get("types", [])]
        try:
            page = self.store.list_events(
                limit=clean.get("limit", 10),
                starting_after=starting_after,
                ending_before=ending_before,
                types=types,
                created=clean.get("created"),
            )
        except CursorNotFound as missing:
            param = "starting_after" if starting_after else "ending_before"
            raise no_such("event", str(missing), param=param, status=400) from None
        rendered = self.render_events(page.items)
        return {"object": "list", "data": rendered, "has_more": page.has_more, "url": url}

    # webhook deliveries ------------------------------------------------------------------

    def endpoints_for(self, event_type: str) -> list[dict[str, Any]]:
        return [
            endpoint
            for endpoint in self.store.all_objects("webhook_endpoint")
            if endpoint.get("status") == "enabled"
            and ("*" in endpoint["enabled_events"] or event_type in endpoint["enabled_events"])
        ]

    def schedule_deliveries(
        self, event: Mapping[str, Any], *, reason: str, endpoint_id: str | None = None
    ) -> list[Delivery]:
        scheduled = []
        now = self.clock()
        for endpoint in self.endpoints_for(event["type"]):
            if endpoint_id is not None and endpoint["id"] != endpoint_id:
                continue
            delay = 0.0
            if self.delivery_mode.shuffle:
                delay = self.delivery_mode.rng.uniform(0, self.delivery_mode.shuffle_window_seconds)
            delivery = Delivery(
                id=new_id("whdel"),
                event_id=event["id"],
                endpoint_id=endpoint["id"],
                reason=reason,
                status="pending",
                created=now,
                next_attempt_at=now + delay,
                attempts=[],
            )
            self.store.insert_delivery(delivery)
            scheduled.append(delivery)
        return scheduled

    def redeliver(self, event_id: str, endpoint_id: str | None = None) -> list[Delivery]:
        event = self.store.get_event(event_id)
        if event is None:
            raise no_such("event", event_id)
        with self.store.transaction():
            scheduled = self.schedule_deliveries(
                event, reason="redelivery", endpoint_id=endpoint_id
            )
        self._notify()
        return scheduled

    def duplicate_delivery(self, delivery: Delivery) -> Delivery:
        """A second delivery of an event already delivered (at-least-once made visible)."""
        now = self.clock()
        copy = Delivery(
            id=new_id("whdel"),
            event_id=delivery.event_id,
            endpoint_id=delivery.endpoint_id,
            reason="duplicate",
            status="pending",
            created=now,
            next_attempt_at=now
            + self.delivery_mode.rng.uniform(0, self.delivery_mode.shuffle_window_seconds),
            attempts=[],
        )
        self.store.insert_delivery(copy)
        self._notify()
        return copy


def _event_type_filter(value: Any, param: str) -> str:
    if not isinstance(value, str) or not value or "*" in value[:-1]:
        raise param_error(f"Invalid event type filter: {value}", param=param)
    return value


def _ignored(value: Any, param: str) -> None:
    return None


__all__ = [
    "API_VERSION",
    "SYSTEM",
    "BillingEngine",
    "CallContext",
    "Resource",
    "SandboxSettings",
    "created_filter",
    "new_id",
]
