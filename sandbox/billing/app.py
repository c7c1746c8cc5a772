"""The Stripe-compatible billing sandbox as a FastAPI app.

Every `/v1` call goes through one pipeline, in Stripe's order: injected faults, API key,
form decoding, Idempotency-Key (POST), then the operation and any `expand[]`. `/_sandbox/*`
is test control and needs no key: health, faults, webhook deliveries, redelivery, delivery
mode, patches, advancing a subscription to its next billing cycle, and moving a pending
refund on.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import Response

from sandbox.billing._billing import BillingOperations
from sandbox.billing._engine import (
    SYSTEM,
    BillingEngine,
    CallContext,
    Resource,
    SandboxSettings,
    new_id,
)
from sandbox.billing._errors import StripeError
from sandbox.billing._params import decode_params
from sandbox.billing._payment_resources import (
    BalanceTransactionResource,
    ChargeResource,
    InvoicePaymentResource,
    PaymentIntentResource,
    PaymentMethodResource,
    RefundResource,
    TaxRateResource,
)
from sandbox.billing._resources import (
    CreditNoteResource,
    CustomerBalanceTransactionResource,
    CustomerResource,
    InvoiceItemResource,
    InvoiceResource,
    PriceResource,
    ProductResource,
    SubscriptionResource,
    WebhookEndpointResource,
    ensure_configured_endpoints,
)
from sandbox.billing._store import BillingStore, StoredResponse
from sandbox.billing._webhooks import WebhookDispatcher

MAX_IDEMPOTENCY_KEY_LENGTH = 255

Operation = Callable[[Request, dict[str, Any], CallContext], dict[str, Any]]


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        content=json.dumps(body, indent=2),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


@dataclass
class Fault:
    status: int
    remaining: int
    retry_after: float | None = None
    path_prefix: str = "/v1/"
    method: str | None = None


class FaultInjector:
    """The next N matching API calls answer `status` instead of doing anything."""

    ALLOWED = frozenset({429, 500, 502, 503, 504})

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._lock = threading.Lock()

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(f) for f in self._faults]

    def take(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if path.startswith(fault.path_prefix) and fault.method in (None, method):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    @staticmethod
    def error(fault: Fault) -> StripeError:
        headers = {"Stripe-Should-Retry": "true"}
        if fault.retry_after is not None:
            seconds = fault.retry_after
            headers["Retry-After"] = str(int(seconds)) if seconds == int(seconds) else str(seconds)
        if fault.status == 429:
            return StripeError(
                429,
                "Too many requests hit the API too quickly. We recommend an exponential "
                "backoff of your requests.",
                code="rate_limit",
                headers=headers,
                saved=False,
            )
        return StripeError(
            fault.status,
            "An error occurred with our connection to Stripe. Request was retried.",
            type="api_error",
            headers=headers,
            saved=False,
        )


@dataclass
class SandboxState:
    """What tests and the entry point reach through `app.state.billing`."""

    engine: BillingEngine
    store: BillingStore
    dispatcher: WebhookDispatcher
    billing: BillingOperations
    faults: FaultInjector
    api_keys: list[str]
    # Requests whose Idempotency-Key is being worked on (Stripe answers 409 to a second one).
    in_flight: set[tuple[str, str]]


def _api_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip() or None
    if scheme.lower() == "basic":
        # curl -u sk_test_...: sends the key as the user name with an empty password.
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[0] or None
    return None


def _authenticate(request: Request, api_keys: list[str]) -> str:
    key = _api_key(request)
    challenge = {"WWW-Authenticate": 'Bearer realm="Stripe"'}
    if key is None:
        raise StripeError(
            401,
            "You did not provide an API key. You need to provide your API key in the "
            "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
            "YOUR_SECRET_KEY').",
            code="api_key_missing",
            headers=challenge,
            saved=False,
        )
    if key not in api_keys:
        shown = f"{key[:8]}{'*' * 4}{key[-4:]}" if len(key) > 12 else "****"
        raise StripeError(
            401,
            f"Invalid API Key provided: {shown}",
            code="api_key_invalid",
            headers=challenge,
            saved=False,
        )
    return key


async def _params(request: Request) -> dict[str, Any]:
    pairs = list(request.query_params.multi_items())
    if request.method == "POST":
        body = (await request.body()).decode("utf-8", errors="replace")
        pairs.extend(parse_qsl(body, keep_blank_values=True))
    return decode_params(pairs)


def _fingerprint(method: str, path: str, params: dict[str, Any]) -> str:
    canonical = json.dumps([method, path, params], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _stripe_endpoint(
    sandbox: SandboxState, operation: Operation
) -> Callable[..., Awaitable[Response]]:
    engine = sandbox.engine

    def expanded(request: Request, params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        return engine.expand(operation(request, params, ctx), params.get("expand"))

    async def endpoint(request: Request) -> Response:
        request_id = new_id("req", 14)
        headers = {
            "Request-Id": request_id,
            "Stripe-Version": request.headers.get("stripe-version", engine.settings.api_version),
        }
        idempotency_key = (
            request.headers.get("idempotency-key") if request.method == "POST" else None
        )
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        try:
            fault = sandbox.faults.take(request.method, request.url.path)
            if fault is not None:
                raise FaultInjector.error(fault)
            api_key = _authenticate(request, sandbox.api_keys)
            params = await _params(request)
            ctx = CallContext(request_id=request_id, idempotency_key=idempotency_key)
            if idempotency_key is None:
                return _json(expanded(request, params, ctx), headers=headers)
            return _idempotent(
                sandbox, request, api_key, idempotency_key, params, ctx, expanded, headers
            )
        except StripeError as err:
            return _json(err.body(), err.status, {**headers, **err.headers})

    return endpoint


def _idempotent(
    sandbox: SandboxState,
    request: Request,
    api_key: str,
    key: str,
    params: dict[str, Any],
    ctx: CallContext,
    operation: Operation,
    headers: dict[str, str],
) -> Response:
    if len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise StripeError(
            400,
            f"Idempotency-Key must be at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters.",
            type="idempotency_error",
            saved=False,
        )
    engine = sandbox.engine
    scope = hashlib.sha256(api_key.encode()).hexdigest()[:16]
    fingerprint = _fingerprint(request.method, request.url.path, params)
    now = engine.clock()
    stored = engine.store.get_idempotent(scope, key, now - engine.settings.idempotency_ttl_seconds)
    if stored is not None:
        if stored.fingerprint != fingerprint:
            raise StripeError(
                400,
                "Keys for idempotent requests can only be used with the same parameters they "
                f"were first used with. Try using a key other than '{key}' if you meant to "
                "execute a different request.",
                type="idempotency_error",
                saved=False,
            )
        replay_headers = {
            **headers,
            "Idempotent-Replayed": "true",
            "Original-Request": stored.request_id,
        }
        return Response(
            content=stored.body,
            status_code=stored.status,
            media_type="application/json",
            headers=replay_headers,
        )
    if (scope, key) in sandbox.in_flight:
        raise StripeError(
            409,
            "There is currently another in-progress request using this Idempotent Key (that "
            "probably means you submitted twice, and the other request is still going "
            "through): " + key + ". Please try again later.",
            type="idempotency_error",
            headers={"Stripe-Should-Retry": "true"},
            saved=False,
        )
    sandbox.in_flight.add((scope, key))
    try:
        try:
            status, body = 200, operation(request, params, ctx)
        except StripeError as err:
            if not err.saved:
                raise
            status, body = err.status, err.body()
        text = json.dumps(body, indent=2)
        engine.store.save_idempotent(
            scope, key, StoredResponse(fingerprint, status, text, ctx.request_id or ""), now
        )
    finally:
        sandbox.in_flight.discard((scope, key))
    return Response(
        content=text, status_code=status, media_type="application/json", headers=headers
    )


def _register_resource(app: FastAPI, sandbox: SandboxState, resource: Resource) -> None:
    if not resource.routed:
        return
    engine = sandbox.engine
    base = f"/v1/{resource.collection}"

    def create(request: Request, params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        return engine.create(resource, params, ctx)

    def list_all(request: Request, params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        return engine.list_objects(resource, params, base)

    def retrieve(request: Request, params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        return engine.retrieve(resource, request.path_params["object_id"])

    def update(request: Request, params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        return engine.update(resource, request.path_params["object_id"], params, ctx)

    def delete(request: Request, params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        return engine.delete(resource, request.path_params["object_id"], ctx)

    name = resource.object_name
    if resource.creatable:
        app.add_api_route(
            base, _stripe_endpoint(sandbox, create), methods=["POST"], name=f"create_{name}"
        )
    app.add_api_route(
        base, _stripe_endpoint(sandbox, list_all), methods=["GET"], name=f"list_{name}s"
    )
    item = base + "/{object_id}"
    app.add_api_route(
        item, _stripe_endpoint(sandbox, retrieve), methods=["GET"], name=f"retrieve_{name}"
    )
    if resource.updatable:
        app.add_api_route(
            item, _stripe_endpoint(sandbox, update), methods=["POST"], name=f"update_{name}"
        )
    if resource.deletable:
        app.add_api_route(
            item, _stripe_endpoint(sandbox, delete), methods=["DELETE"], name=f"delete_{name}"
        )


def _route(
    app: FastAPI, sandbox: SandboxState, method: str, path: str, operation: Operation, name: str
) -> None:
    app.add_api_route(path, _stripe_endpoint(sandbox, operation), methods=[method], name=name)


def _register_billing(app: FastAPI, sandbox: SandboxState) -> None:
    """The operations with side effects: subscriptions, invoices, credit notes, balance."""
    billing = sandbox.billing

    def path_id(request: Request, name: str = "object_id") -> str:
        return str(request.path_params[name])

    routes: list[tuple[str, str, Operation, str]] = [
        (
            "POST",
            "/v1/subscriptions",
            lambda r, p, c: billing.create_subscription(p, c),
            "create_subscription",
        ),
        (
            "POST",
            "/v1/subscriptions/{object_id}",
            lambda r, p, c: billing.update_subscription(path_id(r), p, c),
            "update_subscription",
        ),
        (
            "DELETE",
            "/v1/subscriptions/{object_id}",
            lambda r, p, c: billing.cancel_subscription(path_id(r), p, c),
            "cancel_subscription",
        ),
        ("POST", "/v1/invoices", lambda r, p, c: billing.create_invoice(p, c), "create_invoice"),
        (
            "DELETE",
            "/v1/invoices/{object_id}",
            lambda r, p, c: billing.delete_invoice(path_id(r), c),
            "delete_invoice",
        ),
        (
            "POST",
            "/v1/invoices/{object_id}/finalize",
            lambda r, p, c: billing.finalize_invoice(path_id(r), p, c),
            "finalize_invoice",
        ),
        (
            "POST",
            "/v1/invoices/{object_id}/pay",
            lambda r, p, c: billing.pay_invoice(path_id(r), p, c),
            "pay_invoice",
        ),
        (
            "POST",
            "/v1/invoices/{object_id}/void",
            lambda r, p, c: billing.void_invoice(path_id(r), p, c),
            "void_invoice",
        ),
        (
            "POST",
            "/v1/invoices/{object_id}/mark_uncollectible",
            lambda r, p, c: billing.mark_uncollectible(path_id(r), p, c),
            "mark_uncollectible_invoice",
        ),
        (
            "GET",
            "/v1/invoices/{object_id}/lines",
            lambda r, p, c: billing.invoice_lines(path_id(r), p),
            "list_invoice_lines",
        ),
        (
            "POST",
            "/v1/invoiceitems",
            lambda r, p, c: billing.create_invoice_item(p, c),
            "create_invoiceitem",
        ),
        (
            "DELETE",
            "/v1/invoiceitems/{object_id}",
            lambda r, p, c: billing.delete_invoice_item(path_id(r), c),
            "delete_invoiceitem",
        ),
        (
            "POST",
            "/v1/credit_notes",
            lambda r, p, c: billing.create_credit_note(p, c),
            "create_credit_note",
        ),
        (
            "POST",
            "/v1/credit_notes/{object_id}/void",
            lambda r, p, c: billing.void_credit_note(path_id(r), p, c),
            "void_credit_note",
        ),
        (
            "GET",
            "/v1/credit_notes/{object_id}/lines",
            lambda r, p, c: billing.credit_note_lines(path_id(r), p),
            "list_credit_note_lines",
        ),
        (
            "POST",
            "/v1/customers/{customer_id}/balance_transactions",
            lambda r, p, c: billing.create_balance_transaction(path_id(r, "customer_id"), p, c),
            "create_customer_balance_transaction",
        ),
        (
            "GET",
            "/v1/customers/{customer_id}/balance_transactions",
            lambda r, p, c: billing.list_balance_transactions(
                path_id(r, "customer_id"), p, r.url.path
            ),
            "list_customer_balance_transactions",
        ),
        (
            "GET",
            "/v1/customers/{customer_id}/balance_transactions/{object_id}",
            lambda r, p, c: billing.retrieve_balance_transaction(
                path_id(r, "customer_id"), path_id(r)
            ),
            "retrieve_customer_balance_transaction",
        ),
        (
            "POST",
            "/v1/customers/{customer_id}/balance_transactions/{object_id}",
            lambda r, p, c: billing.update_balance_transaction(
                path_id(r, "customer_id"), path_id(r), p, c
            ),
            "update_customer_balance_transaction",
        ),
    ]
    payments = billing.payments

    def create_payment_intent(r: Request, p: dict[str, Any], c: CallContext) -> dict[str, Any]:
        intent, declined = payments.create_payment_intent(p, c)
        if declined is not None:
            raise declined  # 402: the declined intent and charge are kept, as in Stripe
        return intent

    routes += [
        (
            "POST",
            "/v1/payment_methods/{object_id}/attach",
            lambda r, p, c: payments.attach_payment_method(path_id(r), p, c),
            "attach_payment_method",
        ),
        (
            "POST",
            "/v1/payment_methods/{object_id}/detach",
            lambda r, p, c: payments.detach_payment_method(path_id(r), p, c),
            "detach_payment_method",
        ),
        (
            "GET",
            "/v1/customers/{customer_id}/payment_methods",
            lambda r, p, c: payments.customer_payment_methods(
                path_id(r, "customer_id"), p, r.url.path
            ),
            "list_customer_payment_methods",
        ),
        ("POST", "/v1/payment_intents", create_payment_intent, "create_payment_intent"),
        (
            "POST",
            "/v1/invoices/{object_id}/attach_payment",
            lambda r, p, c: payments.attach_payment(path_id(r), p, c),
            "attach_payment_to_invoice",
        ),
        ("POST", "/v1/refunds", lambda r, p, c: payments.create_refund(p, c), "create_refund"),
    ]
    for method, path, operation, name in routes:
        _route(app, sandbox, method, path, operation, name)


def _register_events(app: FastAPI, sandbox: SandboxState) -> None:
    engine = sandbox.engine

    def list_events(request: Request, params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        return engine.list_events(params, "/v1/events")

    def retrieve_event(
        request: Request, params: dict[str, Any], ctx: CallContext
    ) -> dict[str, Any]:
        return engine.get_event(request.path_params["event_id"])

    app.add_api_route(
        "/v1/events", _stripe_endpoint(sandbox, list_events), methods=["GET"], name="list_events"
    )
    app.add_api_route(
        "/v1/events/{event_id}",
        _stripe_endpoint(sandbox, retrieve_event),
        methods=["GET"],
        name="retrieve_event",
    )


def _register_unknown(app: FastAPI, sandbox: SandboxState) -> None:
    def unrecognized(request: Request, params: dict[str, Any], ctx: CallContext) -> dict[str, Any]:
        raise StripeError(
            404,
            f"Unrecognized request URL ({request.method}: {request.url.path}). Please see "
            "https://stripe.com/docs or we can help at https://support.stripe.com/.",
        )

    app.add_api_route(
        "/v1/{rest:path}",
        _stripe_endpoint(sandbox, unrecognized),
        methods=["GET", "POST", "DELETE", "PUT", "PATCH"],
        include_in_schema=False,
    )


def _register_sandbox_control(app: FastAPI, sandbox: SandboxState) -> None:
    engine = sandbox.engine

    @app.get("/_sandbox/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/_sandbox/faults")
    async def add_fault(request: Request) -> Response:
        spec = await request.json()
        status = spec.get("status")
        count = spec.get("count", 1)
        retry_after = spec.get("retry_after")
        if status not in FaultInjector.ALLOWED or not isinstance(count, int) or count < 1:
            return _json(
                {"error": f"status must be one of {sorted(FaultInjector.ALLOWED)}, count >= 1"}, 400
            )
        if retry_after is not None and (
            not isinstance(retry_after, int | float) or retry_after < 0
        ):
            return _json({"error": "retry_after must be a non-negative number"}, 400)
        fault = Fault(
            status=status,
            remaining=count,
            retry_after=retry_after,
            path_prefix=spec.get("path_prefix", "/v1/"),
            method=spec.get("method"),
        )
        sandbox.faults.add(fault)
        return _json({"faults": sandbox.faults.pending()})

    @app.get("/_sandbox/faults")
    async def list_faults() -> dict[str, Any]:
        return {"faults": sandbox.faults.pending()}

    @app.delete("/_sandbox/faults")
    async def clear_faults() -> dict[str, Any]:
        sandbox.faults.clear()
        return {"faults": []}

    @app.get("/_sandbox/webhooks/deliveries")
    async def deliveries(
        request: Request,
        event_id: str | None = None,
        endpoint_id: str | None = None,
        status: str | None = None,
    ) -> Response:
        unknown = set(request.query_params) - {"event_id", "endpoint_id", "status"}
        if unknown:
            # A misspelt filter must not silently answer every delivery.
            return _json({"error": f"unknown filters: {', '.join(sorted(unknown))}"}, 400)
        found = engine.store.list_deliveries(
            event_id=event_id, endpoint_id=endpoint_id, status=status
        )
        return _json({"object": "list", "data": [d.as_json() for d in found]})

    @app.post("/_sandbox/webhooks/redeliver/{event_id}")
    async def redeliver(event_id: str, endpoint_id: str | None = None) -> Response:
        try:
            scheduled = engine.redeliver(event_id, endpoint_id)
        except StripeError as err:
            return _json(err.body(), err.status)
        return _json({"object": "list", "data": [d.as_json() for d in scheduled]})

    @app.post("/_sandbox/webhooks/mode")
    async def delivery_mode(request: Request) -> Response:
        spec = await request.json()
        mode = engine.delivery_mode
        if "shuffle" in spec:
            mode.shuffle = bool(spec["shuffle"])
        if "shuffle_window_seconds" in spec:
            mode.shuffle_window_seconds = float(spec["shuffle_window_seconds"])
        if "duplicate_rate" in spec:
            rate = float(spec["duplicate_rate"])
            if not 0 <= rate <= 1:
                return _json({"error": "duplicate_rate must be between 0 and 1"}, 400)
            mode.duplicate_rate = rate
        if "seed" in spec:
            mode.rng.seed(spec["seed"])
        return _json(
            {
                "shuffle": mode.shuffle,
                "shuffle_window_seconds": mode.shuffle_window_seconds,
                "duplicate_rate": mode.duplicate_rate,
            }
        )

    @app.post("/_sandbox/subscriptions/{subscription_id}/advance")
    async def advance_subscription(subscription_id: str) -> Response:
        """Time travel for tests and the demo: end the current period now and issue the next
        cycle's invoice (with pending prorations), as Stripe's renewal would."""
        try:
            return _json(sandbox.billing.advance_subscription(subscription_id))
        except StripeError as err:
            return _json(err.body(), err.status)

    @app.post("/_sandbox/refunds/{refund_id}/settle")
    async def settle_refund(refund_id: str, request: Request) -> Response:
        """Move a pending refund on (`{"status": "succeeded" | "failed"}`), as Stripe does by
        itself some time after a refund of its test card 4000000000007726; Stripe has no
        endpoint for it, so the product never calls this."""
        spec = await request.json()
        if not isinstance(spec, dict):
            return _json({"error": "body must be a JSON object"}, 400)
        try:
            return _json(
                sandbox.billing.payments.settle_refund(refund_id, str(spec.get("status")), SYSTEM)
            )
        except StripeError as err:
            return _json(err.body(), err.status)

    @app.post("/_sandbox/objects/{object_id}")
    async def patch_object(object_id: str, request: Request) -> Response:
        """Change fields as billing itself would, recording `<type>.updated`."""
        fields = await request.json()
        if not isinstance(fields, dict):
            return _json({"error": "body must be a JSON object of fields"}, 400)
        try:
            return _json(engine.patch(object_id, fields))
        except StripeError as err:
            return _json(err.body(), err.status)


def create_app(
    state_path: Path | None,
    api_keys: list[str],
    webhook_endpoints: list[tuple[str, str]] | None = None,
    *,
    settings: SandboxSettings | None = None,
) -> FastAPI:
    """A billing sandbox keeping its state in SQLite at `state_path` (memory when None).

    `webhook_endpoints` are (url, secret) pairs that receive every event; they are kept
    with stable ids across restarts so pending deliveries resume.
    """
    if not api_keys:
        raise ValueError("the billing sandbox needs at least one API key")
    store = BillingStore(state_path)
    engine = BillingEngine(store, settings)
    served: tuple[Resource, ...] = (
        CustomerResource(),
        WebhookEndpointResource(),
        ProductResource(),
        PriceResource(),
        SubscriptionResource(),
        InvoiceResource(),
        InvoiceItemResource(),
        CreditNoteResource(),
        CustomerBalanceTransactionResource(),
        TaxRateResource(),
        PaymentMethodResource(),
        PaymentIntentResource(),
        ChargeResource(),
        RefundResource(),
        BalanceTransactionResource(),
        InvoicePaymentResource(),
    )
    for kind in served:
        engine.register(kind)
    ensure_configured_endpoints(engine, list(webhook_endpoints or []))
    sandbox = SandboxState(
        engine=engine,
        store=store,
        dispatcher=WebhookDispatcher(engine),
        billing=BillingOperations(engine),
        faults=FaultInjector(),
        api_keys=list(api_keys),
        in_flight=set(),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await sandbox.dispatcher.start()
        try:
            yield
        finally:
            await sandbox.dispatcher.stop()
            store.close()

    app = FastAPI(
        title="ledgerbridge billing sandbox (Stripe-compatible)",
        lifespan=lifespan,
        docs_url="/_sandbox/docs",
        redoc_url=None,
        openapi_url="/_sandbox/openapi.json",
    )
    app.state.billing = sandbox
    _register_sandbox_control(app, sandbox)
    _register_billing(app, sandbox)
    for resource in engine.resources.values():
        _register_resource(app, sandbox, resource)
    _register_events(app, sandbox)
    _register_unknown(app, sandbox)
    return app


__all__ = ["Fault", "FaultInjector", "SandboxState", "create_app"]
