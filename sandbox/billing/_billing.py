"""Stripe's billing lifecycle on the generic engine: subscriptions with prorated amendments,
invoices, invoice items, credit notes and the customer balance.

Every public method is one API operation. It validates first, then changes objects and
records events inside one `engine.atomic()` block, so a refusal leaves nothing behind (and
an Idempotency-Key remembers the refusal, as Stripe does for requests that started work).

Events come in the order Stripe emits them for one request:

    subscription create   customer.updated (currency fixed, first time only),
                          customer.subscription.created, invoice.created, invoice.finalized
                          [, invoice.paid, invoice.payment_succeeded when nothing is due]
                          [, the payment's events when charged: see _payments.py]
    subscription update   invoiceitem.created (credit, charge per changed item),
                          customer.subscription.updated
                          [, invoice.created, invoice.finalized ... with always_invoice]
    finalization          invoice.finalized [, customer_balance_transaction.created,
                          customer.updated when the balance is applied or credited]
                          [, invoice.paid, invoice.payment_succeeded when nothing is due]

Payments, refunds and tax rates are in _payments.py and _tax.py: a `charge_automatically`
subscription needs a payment method (Stripe's answer when there is none, for the default
`payment_behavior=allow_incomplete`, is a 400), its first invoice and its renewals are
charged at once, and a declined card leaves the subscription `incomplete` (first invoice) or
`past_due` (renewal). Simplifications, each visible in the API rather than hidden: no trials,
discounts, Stripe Tax or metered prices, and a subscription's items share one currency and
one interval (changing the interval is refused rather than re-anchored).
Time: `/_sandbox/subscriptions/{id}/advance` moves one subscription's own clock to the end
of its period (a per-subscription test clock); proration dates default to that clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sandbox.billing._currencies import format_amount
from sandbox.billing._engine import SYSTEM, BillingEngine, CallContext, created_filter, new_id
from sandbox.billing._errors import StripeError, missing_param, no_such, param_error
from sandbox.billing._params import (
    Validator,
    boolean,
    currency,
    enum,
    integer,
    merge_metadata,
    metadata,
    obj,
    object_list,
    string,
    string_list,
    validate,
)
from sandbox.billing._payments import Payments
from sandbox.billing._proration import (
    ItemTerms,
    ProrationLine,
    billing_period,
    prorate_change,
)
from sandbox.billing._resources import invoice_line_view
from sandbox.billing._store import CursorNotFound
from sandbox.billing._tax import document_totals, line_taxes, scaled_taxes

MAX_AMOUNT = 99_999_999
MAX_QUANTITY = 10_000_000
ACCOUNT_NAME = "ledgerbridge billing sandbox"
TIMES = "\N{MULTIPLICATION SIGN}"  # as in Stripe line descriptions: "2 TIMES Pro"


def refused(message: str, *, code: str, param: str | None = None) -> StripeError:
    """A business rule said no: Stripe's 400 invalid_request_error."""
    return StripeError(400, message, code=code, param=param)


def _date(timestamp: int) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%d %b %Y")


def _terms(item: Mapping[str, Any] | None) -> ItemTerms | None:
    if item is None:
        return None
    price = item["price"]
    return ItemTerms(price["id"], int(price["unit_amount"]), int(item["quantity"]))


def _pricing(price: Mapping[str, Any] | None, unit_amount: int | None) -> dict[str, Any] | None:
    if price is None:
        return None
    return {
        "price_details": {"price": price["id"], "product": price["product"]},
        "type": "price_details",
        "unit_amount_decimal": str(unit_amount if unit_amount is not None else 0),
    }


# parameter schemas ------------------------------------------------------------------------

_QUANTITY = integer(0, MAX_QUANTITY)
_TAX_RATES = string_list(5)
_SUBSCRIPTION_CREATE: dict[str, Validator] = {
    "customer": string(255, clearable=False),
    "items": object_list(
        {
            "price": string(255, clearable=False),
            "quantity": _QUANTITY,
            "metadata": metadata(),
            "tax_rates": _TAX_RATES,
        }
    ),
    "default_payment_method": string(255, clearable=False),
    "default_tax_rates": _TAX_RATES,
    "payment_behavior": enum("allow_incomplete", "default_incomplete", "error_if_incomplete"),
    "collection_method": enum("charge_automatically", "send_invoice"),
    "days_until_due": integer(0, 730),
    "description": string(500),
    "metadata": metadata(),
    "proration_behavior": enum("always_invoice", "create_prorations", "none"),
}
_PRORATION_BEHAVIOR = enum("always_invoice", "create_prorations", "none")
_SUBSCRIPTION_UPDATE: dict[str, Validator] = {
    "items": object_list(
        {
            "id": string(255, clearable=False),
            "price": string(255, clearable=False),
            "quantity": _QUANTITY,
            "deleted": boolean(),
            "metadata": metadata(),
            "tax_rates": _TAX_RATES,
        }
    ),
    "default_payment_method": string(255),
    "default_tax_rates": _TAX_RATES,
    "payment_behavior": enum("allow_incomplete", "default_incomplete", "error_if_incomplete"),
    "proration_behavior": _PRORATION_BEHAVIOR,
    "proration_date": integer(0),
    "cancel_at_period_end": boolean(),
    "description": string(500),
    "metadata": metadata(),
}
_SUBSCRIPTION_CANCEL: dict[str, Validator] = {
    "prorate": boolean(),
    "invoice_now": boolean(),
    "cancellation_details": obj(
        {
            "comment": string(5000),
            "feedback": enum(
                "customer_service",
                "low_quality",
                "missing_features",
                "other",
                "switched_service",
                "too_complex",
                "too_expensive",
                "unused",
            ),
        }
    ),
}
_INVOICE_CREATE: dict[str, Validator] = {
    "customer": string(255, clearable=False),
    "subscription": string(255, clearable=False),
    "auto_advance": boolean(),
    "collection_method": enum("charge_automatically", "send_invoice"),
    "days_until_due": integer(0, 730),
    "currency": currency(),
    "description": string(1500),
    "metadata": metadata(),
    "pending_invoice_items_behavior": enum("exclude", "include"),
    "default_tax_rates": _TAX_RATES,
}
_INVOICE_ITEM_CREATE: dict[str, Validator] = {
    "customer": string(255, clearable=False),
    "amount": integer(-MAX_AMOUNT, MAX_AMOUNT),
    "currency": currency(),
    "price": string(255, clearable=False),
    "pricing": obj({"price": string(255, clearable=False)}, clearable=False),
    "quantity": integer(1, MAX_QUANTITY),
    "unit_amount": integer(-MAX_AMOUNT, MAX_AMOUNT),
    "description": string(),
    "discountable": boolean(),
    "subscription": string(255, clearable=False),
    "invoice": string(255, clearable=False),
    "metadata": metadata(),
    "period": obj({"start": integer(0), "end": integer(0)}, clearable=False),
    "tax_rates": _TAX_RATES,
}
_CREDIT_NOTE_LINE: dict[str, Validator] = {
    "type": enum("invoice_line_item", "custom_line_item"),
    "invoice_line_item": string(255, clearable=False),
    "amount": integer(1, MAX_AMOUNT),
    "quantity": integer(1, MAX_QUANTITY),
    "unit_amount": integer(0, MAX_AMOUNT),
    "description": string(),
    "metadata": metadata(),
}
_CREDIT_NOTE_CREATE: dict[str, Validator] = {
    "invoice": string(255, clearable=False),
    "lines": object_list(_CREDIT_NOTE_LINE, max_items=100),
    "amount": integer(1, MAX_AMOUNT),
    "reason": enum("duplicate", "fraudulent", "order_change", "product_unsatisfactory"),
    "memo": string(),
    "metadata": metadata(),
    "credit_amount": integer(0, MAX_AMOUNT),
    "refund_amount": integer(0, MAX_AMOUNT),
    "refunds": object_list(
        {"refund": string(255, clearable=False), "amount_refunded": integer(1, MAX_AMOUNT)}
    ),
    "out_of_band_amount": integer(0, MAX_AMOUNT),
}
_BALANCE_TRANSACTION_CREATE: dict[str, Validator] = {
    "amount": integer(-MAX_AMOUNT, MAX_AMOUNT),
    "currency": currency(),
    "description": string(350),
    "metadata": metadata(),
}
_BALANCE_TRANSACTION_UPDATE: dict[str, Validator] = {
    "description": string(350),
    "metadata": metadata(),
}
_LINES_LIST: dict[str, Validator] = {
    "limit": integer(1, 100),
    "starting_after": string(clearable=False),
    "ending_before": string(clearable=False),
}


class BillingOperations:
    def __init__(self, engine: BillingEngine) -> None:
        self.engine = engine
        self.customers = engine.resource("customer")
        self.products = engine.resource("product")
        self.prices = engine.resource("price")
        self.subscriptions = engine.resource("subscription")
        self.invoices = engine.resource("invoice")
        self.invoice_items = engine.resource("invoiceitem")
        self.credit_notes = engine.resource("credit_note")
        self.balance_transactions = engine.resource("customer_balance_transaction")
        self.payments = Payments(self)

    # customers and prices ----------------------------------------------------------------

    def _customer(self, customer_id: str, param: str = "customer") -> dict[str, Any]:
        return self.engine.get(self.customers, customer_id, param=param, status=400)

    def _fix_currency(
        self, customer_id: str, currency_code: str, ctx: CallContext, *, param: str
    ) -> dict[str, Any]:
        """Stripe fixes a customer's currency with its first subscription, invoice (item) or
        balance transaction, and refuses to mix currencies afterwards."""
        customer = self.engine.get(self.customers, customer_id)
        if customer["currency"] is None:
            updated = {**customer, "currency": currency_code}
            self.engine.save(self.customers, customer, updated, ctx)
            return updated
        if customer["currency"] != currency_code:
            raise refused(
                "You cannot combine currencies on a single customer. This customer has had a "
                f"subscription, invoice or balance transaction in {customer['currency']}, but "
                f"you are trying to use {currency_code}.",
                code="currency_mismatch",
                param=param,
            )
        return customer

    def _adjust_balance(
        self,
        customer_id: str,
        amount: int,
        ctx: CallContext,
        *,
        kind: str,
        description: str | None = None,
        invoice: str | None = None,
        credit_note: str | None = None,
        metadata_: Mapping[str, str] | None = None,
        object_id: str | None = None,
    ) -> dict[str, Any]:
        """A customer balance transaction (negative = credit) and the customer's new balance."""
        customer = self.engine.get(self.customers, customer_id)
        ending = int(customer["balance"]) + amount
        transaction = self.engine.insert(
            self.balance_transactions,
            {
                "amount": amount,
                "checkout_session": None,
                "credit_note": credit_note,
                "currency": customer["currency"],
                "customer": customer_id,
                "description": description,
                "ending_balance": ending,
                "invoice": invoice,
                "metadata": dict(metadata_ or {}),
                "type": kind,
            },
            ctx,
            object_id=object_id,
        )
        self.engine.save(self.customers, customer, {**customer, "balance": ending}, ctx)
        return transaction

    def _price(self, price_id: str, param: str) -> dict[str, Any]:
        price = self.engine.get(self.prices, price_id, param=param, status=400)
        if not price["active"]:
            raise refused(
                f"The price specified ({price_id}) is inactive. This field only accepts "
                "active prices.",
                code="price_inactive",
                param=param,
            )
        return price

    def _recurring_price(self, price_id: str, param: str) -> dict[str, Any]:
        price = self._price(price_id, param)
        if price["type"] != "recurring":
            raise refused(
                "The price specified is set to `type=one_time` but this field only accepts "
                "prices with `type=recurring`.",
                code="price_not_recurring",
                param=param,
            )
        return price

    def _product_name(self, product_id: str) -> str:
        found = self.engine.store.get_object(product_id)
        return str(found[0].get("name") or product_id) if found else product_id

    # subscriptions ------------------------------------------------------------------------

    def _sub_now(self, sub: Mapping[str, Any]) -> int:
        """The subscription's own clock: real time plus what `advance` skipped."""
        return self.engine.now() + int(sub.get("_clock_offset", 0))

    def _check_items(
        self,
        prices: list[Mapping[str, Any]],
        *,
        currency_code: str,
        interval: tuple[str, int],
        param: str,
    ) -> None:
        ids = [p["id"] for p in prices]
        if len(set(ids)) != len(ids):
            raise refused(
                "Cannot add multiple subscription items with the same price.",
                code="parameter_invalid",
                param=param,
            )
        for price in prices:
            if price["currency"] != currency_code:
                raise refused(
                    f"All prices of a subscription must share one currency: {price['id']} is "
                    f"in {price['currency']}, the subscription in {currency_code}.",
                    code="currency_mismatch",
                    param=param,
                )
            recurring = price["recurring"]
            if (recurring["interval"], recurring["interval_count"]) != interval:
                raise refused(
                    "All prices of a subscription must share one billing interval; the "
                    "sandbox does not re-anchor a subscription to a new interval.",
                    code="parameter_invalid",
                    param=param,
                )

    def _new_item(
        self,
        subscription_id: str,
        price: Mapping[str, Any],
        quantity: int,
        period: tuple[int, int],
        metadata_: Mapping[str, str] | None,
        tax_rates: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        return {
            "id": new_id("si"),
            "object": "subscription_item",
            "billing_thresholds": None,
            "created": self.engine.now(),
            "current_period_end": period[1],
            "current_period_start": period[0],
            "discounts": [],
            "metadata": merge_metadata({}, metadata_ or {}),
            "price": self.prices.render(price),
            "quantity": quantity,
            "subscription": subscription_id,
            "tax_rates": list(tax_rates or []),
        }

    def create_subscription(self, params: Mapping[str, Any], ctx: CallContext) -> dict[str, Any]:
        clean = validate(params, _SUBSCRIPTION_CREATE, required=("customer", "items"))
        customer = self._customer(clean["customer"])
        entries = []
        for index, spec in enumerate(clean["items"]):
            if "price" not in spec:
                raise missing_param(f"items[{index}][price]")
            price = self._recurring_price(spec["price"], f"items[{index}][price]")
            rates = self.payments.tax_rates_named(
                spec.get("tax_rates") or [], f"items[{index}][tax_rates]"
            )
            entries.append((price, spec.get("quantity", 1), spec.get("metadata"), rates))
        default_rates = self.payments.tax_rates_named(
            clean.get("default_tax_rates") or [], "default_tax_rates"
        )
        default_method = None
        if "default_payment_method" in clean:
            default_method = self.payments.owned_method(
                clean["default_payment_method"], customer["id"], "default_payment_method"
            )["id"]
        first = entries[0][0]
        interval = (first["recurring"]["interval"], first["recurring"]["interval_count"])
        self._check_items(
            [e[0] for e in entries],
            currency_code=first["currency"],
            interval=interval,
            param="items",
        )
        collection_method = clean.get("collection_method", "charge_automatically")
        days_until_due = self._days_until_due(collection_method, clean.get("days_until_due"))
        behavior = clean.get("payment_behavior", "allow_incomplete")
        with self.engine.atomic():
            self._fix_currency(customer["id"], first["currency"], ctx, param="items[0][price]")
            now = self.engine.now()
            period = billing_period(now, interval[0], interval[1], 0)
            sub_id, invoice_id = new_id("sub"), new_id("in")
            items = [self._new_item(sub_id, p, q, period, md, r) for p, q, md, r in entries]
            status = "active"
            if collection_method == "charge_automatically" and behavior == "default_incomplete":
                # Stripe starts it incomplete when the first invoice will ask for money.
                due = int(self.engine.get(self.customers, customer["id"])["balance"])
                for price, quantity, _md, rates in entries:
                    amount = int(price["unit_amount"]) * quantity
                    taxes = line_taxes(amount, rates or default_rates)
                    due += amount + sum(
                        t["amount"] for t in taxes if t["tax_behavior"] == "exclusive"
                    )
                status = "incomplete" if due > 0 else "active"
            sub = self.engine.insert(
                self.subscriptions,
                {
                    "application": None,
                    "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
                    "billing_cycle_anchor": now,
                    "billing_cycle_anchor_config": None,
                    "cancel_at": None,
                    "cancel_at_period_end": False,
                    "canceled_at": None,
                    "cancellation_details": {"comment": None, "feedback": None, "reason": None},
                    "collection_method": collection_method,
                    "currency": first["currency"],
                    "current_period_end": period[1],
                    "current_period_start": period[0],
                    "customer": customer["id"],
                    "days_until_due": days_until_due,
                    "default_payment_method": default_method,
                    "default_source": None,
                    "default_tax_rates": default_rates,
                    "description": clean.get("description"),
                    "discounts": [],
                    "ended_at": None,
                    "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
                    "latest_invoice": invoice_id,
                    "metadata": merge_metadata({}, clean.get("metadata") or {}),
                    "next_pending_invoice_item_invoice": None,
                    "pause_collection": None,
                    "pending_invoice_item_interval": None,
                    "pending_setup_intent": None,
                    "pending_update": None,
                    "schedule": None,
                    "start_date": now,
                    "status": status,
                    "test_clock": None,
                    "trial_end": None,
                    "trial_start": None,
                    "_items": items,
                    "_interval": list(interval),
                    "_cycle": 0,
                    "_clock_offset": 0,
                },
                ctx,
                object_id=sub_id,
            )
            lines = [self._subscription_line(invoice_id, sub, item, period) for item in items]
            self._new_invoice(
                customer["id"],
                ctx,
                invoice_id=invoice_id,
                lines=lines,
                billing_reason="subscription_create",
                subscription=sub,
                period=(now, now),
            )
            invoice = self._finalize(invoice_id, ctx)
            declined = self._collect_subscription_invoice(invoice, sub, behavior, ctx)
            if declined is not None and behavior == "error_if_incomplete":
                raise declined  # Stripe creates nothing then: the block rolls back
            return self.subscriptions.render(self.engine.get(self.subscriptions, sub_id))

    def _collect_subscription_invoice(
        self,
        invoice: Mapping[str, Any],
        sub: Mapping[str, Any],
        behavior: str,
        ctx: CallContext,
    ) -> StripeError | None:
        """Charge a subscription's new invoice at once, as Stripe does for the first invoice,
        renewals and `always_invoice` changes of a `charge_automatically` subscription. The
        card error when declined (the failure stays recorded)."""
        if invoice["status"] != "open" or sub["collection_method"] != "charge_automatically":
            return None
        stored = self.engine.get(self.invoices, invoice["id"])
        if behavior == "default_incomplete":
            # The invoice waits for its payment to be confirmed; an active subscription
            # falls due meanwhile (a new one was created incomplete).
            current = self.engine.get(self.subscriptions, sub["id"])
            if current["status"] == "active" and stored["billing_reason"] != "subscription_create":
                self.engine.save(
                    self.subscriptions, current, {**current, "status": "past_due"}, ctx
                )
            return None
        method = self.payments.default_method(
            stored, self.engine.get(self.subscriptions, sub["id"])
        )
        if method is None:
            if stored["billing_reason"] == "subscription_create":
                raise StripeError(
                    400,
                    "This customer has no attached payment source or default payment method. "
                    "Please consider adding a default payment method. For more information, "
                    "visit https://stripe.com/docs/billing/subscriptions/payment-methods-"
                    "setting#payment-method-priority.",
                    code="resource_missing",
                )
            # A renewal with nothing to charge: the attempt fails, the invoice stays open and
            # the subscription falls due.
            attempted = {
                **stored,
                "attempted": True,
                "attempt_count": int(stored["attempt_count"]) + 1,
            }
            self.engine.store.save_object(attempted)
            self.engine.record_event("invoice.payment_failed", self.invoices.render(attempted), ctx)
            current = self.engine.get(self.subscriptions, sub["id"])
            if current["status"] == "active":
                self.engine.save(
                    self.subscriptions, current, {**current, "status": "past_due"}, ctx
                )
            return None
        _after, error = self.payments.collect(stored, method, ctx)
        return error

    @staticmethod
    def _days_until_due(collection_method: str, days: int | None) -> int | None:
        if collection_method == "send_invoice" and days is None:
            raise missing_param("days_until_due")
        if collection_method == "charge_automatically" and days is not None:
            raise param_error(
                "days_until_due can only be set when collection_method=send_invoice.",
                param="days_until_due",
            )
        return days

    def update_subscription(
        self, subscription_id: str, params: Mapping[str, Any], ctx: CallContext
    ) -> dict[str, Any]:
        clean = validate(params, _SUBSCRIPTION_UPDATE)
        behavior = clean.get("proration_behavior", "create_prorations")
        with self.engine.atomic():
            sub = self.engine.get(self.subscriptions, subscription_id)
            if sub["status"] == "canceled" and set(clean) - {"metadata"}:
                raise refused(
                    "A canceled subscription can only update its metadata.",
                    code="subscription_canceled",
                )
            start, end = sub["current_period_start"], sub["current_period_end"]
            items, changes = self._changed_items(sub, clean.get("items") or [])
            proration_date = clean.get("proration_date", self._sub_now(sub))
            if changes and behavior != "none" and not start <= proration_date <= end:
                raise refused(
                    f"proration_date ({proration_date}) must lie within the subscription's "
                    f"current period ({start} to {end}).",
                    code="parameter_invalid",
                    param="proration_date",
                )
            prorations: list[tuple[ProrationLine, Mapping[str, Any]]] = []
            if behavior != "none":
                for old, new in changes:
                    for line in prorate_change(
                        _terms(old),
                        _terms(new),
                        period_start=start,
                        period_end=end,
                        proration_date=proration_date,
                    ):
                        prorated = old if line.kind == "unused" else new
                        assert prorated is not None  # prorate_change makes no line without terms
                        prorations.append((line, prorated))
            for line, item in prorations:
                self._proration_item(sub, item, line, ctx)
            after = {**sub, "_items": items}
            if "metadata" in clean:
                after["metadata"] = merge_metadata(sub.get("metadata") or {}, clean["metadata"])
            if "description" in clean:
                after["description"] = clean["description"]
            if "default_tax_rates" in clean:
                after["default_tax_rates"] = self.payments.tax_rates_named(
                    clean["default_tax_rates"] or [], "default_tax_rates"
                )
            if "default_payment_method" in clean:
                pm_id = clean["default_payment_method"]
                after["default_payment_method"] = (
                    self.payments.owned_method(pm_id, sub["customer"], "default_payment_method")[
                        "id"
                    ]
                    if pm_id
                    else None
                )
            if "cancel_at_period_end" in clean:
                at_end = clean["cancel_at_period_end"]
                after["cancel_at_period_end"] = at_end
                after["cancel_at"] = end if at_end else None
                after["canceled_at"] = self._sub_now(sub) if at_end else None
            pending = (
                self._pending_items(sub["customer"], subscription_id=sub["id"])
                if behavior == "always_invoice"
                else []
            )
            invoice_id = new_id("in") if pending else None
            if invoice_id:
                after["latest_invoice"] = invoice_id
            self.engine.save(self.subscriptions, sub, after, ctx)
            if invoice_id:
                now = self.engine.now()
                self._new_invoice(
                    sub["customer"],
                    ctx,
                    invoice_id=invoice_id,
                    pending=pending,
                    billing_reason="subscription_update",
                    subscription=after,
                    period=(now, now),
                )
                invoice = self._finalize(invoice_id, ctx)
                payment_behavior = clean.get("payment_behavior", "allow_incomplete")
                declined = self._collect_subscription_invoice(invoice, after, payment_behavior, ctx)
                if declined is not None and payment_behavior == "error_if_incomplete":
                    raise declined  # Stripe leaves the subscription as it was: rolled back
            return self.subscriptions.render(self.engine.get(self.subscriptions, sub["id"]))

    def _changed_items(
        self, sub: Mapping[str, Any], specs: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], list[tuple[dict[str, Any] | None, dict[str, Any] | None]]]:
        """The subscription's items after `items[n]` changes, and (old, new) per change."""
        items = [dict(item) for item in sub["_items"]]
        changes: list[tuple[dict[str, Any] | None, dict[str, Any] | None]] = []
        period = (sub["current_period_start"], sub["current_period_end"])
        for index, spec in enumerate(specs):
            param = f"items[{index}]"
            if "id" in spec:
                position = next((i for i, it in enumerate(items) if it["id"] == spec["id"]), None)
                if position is None:
                    raise no_such("subscription_item", spec["id"], param=f"{param}[id]", status=400)
                old = items[position]
                if spec.get("deleted"):
                    items.pop(position)
                    changes.append((old, None))
                    continue
                new = dict(old)
                if "price" in spec:
                    new["price"] = self.prices.render(
                        self._recurring_price(spec["price"], f"{param}[price]")
                    )
                if "quantity" in spec:
                    new["quantity"] = spec["quantity"]
                if "metadata" in spec:
                    new["metadata"] = merge_metadata(old.get("metadata") or {}, spec["metadata"])
                if "tax_rates" in spec:
                    new["tax_rates"] = self.payments.tax_rates_named(
                        spec["tax_rates"] or [], f"{param}[tax_rates]"
                    )
                items[position] = new
                if _terms(old) != _terms(new):
                    changes.append((old, new))
            else:
                if spec.get("deleted"):
                    raise param_error(
                        f"{param}[deleted] needs {param}[id]: say which item to remove.",
                        param=f"{param}[deleted]",
                    )
                if "price" not in spec:
                    raise missing_param(f"{param}[price]")
                price = self._recurring_price(spec["price"], f"{param}[price]")
                new = self._new_item(
                    sub["id"],
                    price,
                    spec.get("quantity", 1),
                    period,
                    spec.get("metadata"),
                    self.payments.tax_rates_named(
                        spec.get("tax_rates") or [], f"{param}[tax_rates]"
                    ),
                )
                items.append(new)
                changes.append((None, new))
        if not items:
            raise refused(
                "A subscription must keep at least one item; cancel it instead.",
                code="parameter_invalid",
                param="items",
            )
        if changes:
            self._check_items(
                [item["price"] for item in items],
                currency_code=sub["currency"],
                interval=(sub["_interval"][0], sub["_interval"][1]),
                param="items",
            )
        return items, changes

    def cancel_subscription(
        self, subscription_id: str, params: Mapping[str, Any], ctx: CallContext
    ) -> dict[str, Any]:
        clean = validate(params, _SUBSCRIPTION_CANCEL)
        with self.engine.atomic():
            sub = self.engine.get(self.subscriptions, subscription_id)
            if sub["status"] == "canceled":
                raise refused(
                    f"The subscription {subscription_id} is already canceled.",
                    code="subscription_canceled",
                )
            start, end = sub["current_period_start"], sub["current_period_end"]
            now = min(max(self._sub_now(sub), start), end)
            if clean.get("prorate"):
                for item in sub["_items"]:
                    for line in prorate_change(
                        _terms(item), None, period_start=start, period_end=end, proration_date=now
                    ):
                        self._proration_item(sub, item, line, ctx)
            pending = (
                self._pending_items(sub["customer"], subscription_id=sub["id"])
                if clean.get("invoice_now")
                else []
            )
            invoice_id = new_id("in") if pending else None
            details = clean.get("cancellation_details") or {}
            after = {
                **sub,
                "status": "canceled",
                "canceled_at": now,
                "ended_at": now,
                "cancel_at_period_end": False,
                "cancel_at": None,
                "cancellation_details": {
                    "comment": details.get("comment"),
                    "feedback": details.get("feedback"),
                    "reason": "cancellation_requested",
                },
                "latest_invoice": invoice_id or sub["latest_invoice"],
            }
            self.engine.save(
                self.subscriptions, sub, after, ctx, event_type="customer.subscription.deleted"
            )
            if invoice_id:
                real_now = self.engine.now()
                self._new_invoice(
                    sub["customer"],
                    ctx,
                    invoice_id=invoice_id,
                    pending=pending,
                    billing_reason="subscription_update",
                    subscription=after,
                    period=(real_now, real_now),
                )
                self._finalize(invoice_id, ctx)
            return self.subscriptions.render(self.engine.get(self.subscriptions, sub["id"]))

    def advance_subscription(self, subscription_id: str) -> dict[str, Any]:
        """Test control: end the current period now and bill the next cycle, as Stripe's
        renewal would (pending proration items included); or end a subscription that was
        set to cancel at period end."""
        ctx = SYSTEM  # Stripe's own renewals carry no request
        with self.engine.atomic():
            sub = self.engine.get(self.subscriptions, subscription_id)
            if sub["status"] in ("canceled", "incomplete_expired"):
                raise refused(
                    f"The subscription {subscription_id} is {sub['status']}; nothing to advance.",
                    code="subscription_canceled",
                )
            if sub["status"] == "incomplete":
                return self._expire_incomplete(sub, ctx)
            old_start, old_end = sub["current_period_start"], sub["current_period_end"]
            offset = max(int(sub.get("_clock_offset", 0)), old_end - self.engine.now())
            if sub["cancel_at_period_end"]:
                after = {
                    **sub,
                    "status": "canceled",
                    "ended_at": old_end,
                    "canceled_at": sub["canceled_at"] or old_end,
                    "cancellation_details": {
                        **sub["cancellation_details"],
                        "reason": "cancellation_requested",
                    },
                    "_clock_offset": offset,
                }
                self.engine.save(
                    self.subscriptions, sub, after, ctx, event_type="customer.subscription.deleted"
                )
                return {
                    "object": "sandbox.subscription_advance",
                    "subscription": self.subscriptions.render(after),
                    "invoice": None,
                }
            cycle = int(sub["_cycle"]) + 1
            interval, count = sub["_interval"]
            period = billing_period(sub["billing_cycle_anchor"], interval, count, cycle)
            items = [
                {**item, "current_period_start": period[0], "current_period_end": period[1]}
                for item in sub["_items"]
            ]
            invoice_id = new_id("in")
            after = {
                **sub,
                "_items": items,
                "_cycle": cycle,
                "_clock_offset": offset,
                "current_period_start": period[0],
                "current_period_end": period[1],
                "latest_invoice": invoice_id,
            }
            self.engine.save(self.subscriptions, sub, after, ctx)
            pending = self._pending_items(
                sub["customer"], subscription_id=sub["id"], include_unassigned=True
            )
            lines = [self._subscription_line(invoice_id, after, item, period) for item in items]
            self._new_invoice(
                sub["customer"],
                ctx,
                invoice_id=invoice_id,
                pending=pending,
                lines=lines,
                billing_reason="subscription_cycle",
                subscription=after,
                period=(old_start, old_end),
            )
            invoice = self._finalize(invoice_id, ctx)
            self._collect_subscription_invoice(invoice, after, "allow_incomplete", ctx)
            return {
                "object": "sandbox.subscription_advance",
                "subscription": self.subscriptions.render(
                    self.engine.get(self.subscriptions, sub["id"])
                ),
                "invoice": self.invoices.render(self.engine.get(self.invoices, invoice_id)),
            }

    def _expire_incomplete(self, sub: Mapping[str, Any], ctx: CallContext) -> dict[str, Any]:
        """Stripe gives an incomplete subscription 23 hours to be paid; past that (a period
        end always is) it becomes incomplete_expired, a final state, and its unpaid first
        invoice is voided."""
        now = self.engine.now()
        after = {**sub, "status": "incomplete_expired", "ended_at": now}
        self.engine.save(self.subscriptions, sub, after, ctx)
        invoice = self.engine.get(self.invoices, sub["latest_invoice"])
        if invoice["status"] == "open" and int(invoice["amount_paid"]) == 0:
            self.void_invoice(invoice["id"], {}, ctx)  # gives back any balance it applied
        return {
            "object": "sandbox.subscription_advance",
            "subscription": self.subscriptions.render(after),
            "invoice": None,
        }

    # invoice items ------------------------------------------------------------------------

    def _proration_item(
        self,
        sub: Mapping[str, Any],
        item: Mapping[str, Any],
        line: ProrationLine,
        ctx: CallContext,
    ) -> dict[str, Any]:
        price = item["price"]
        verb = "Unused time on" if line.kind == "unused" else "Remaining time on"
        description = (
            f"{verb} {line.terms.quantity} {TIMES} {self._product_name(price['product'])} "
            f"after {_date(line.start)}"
        )
        return self.engine.insert(
            self.invoice_items,
            self._invoice_item_fields(
                customer=sub["customer"],
                currency_code=sub["currency"],
                amount=line.amount,
                description=description,
                price=price,
                quantity=line.terms.quantity,
                unit_amount=line.terms.unit_amount,
                period=(line.start, line.end),
                subscription=sub["id"],
                subscription_item=item["id"],
                proration=True,
                tax_rates=item.get("tax_rates") or sub.get("default_tax_rates") or [],
            ),
            ctx,
        )

    def _invoice_item_fields(
        self,
        *,
        customer: str,
        currency_code: str,
        amount: int,
        description: str | None,
        price: Mapping[str, Any] | None,
        quantity: int,
        unit_amount: int | None,
        period: tuple[int, int],
        subscription: str | None,
        subscription_item: str | None = None,
        proration: bool = False,
        discountable: bool = True,
        metadata_: Mapping[str, str] | None = None,
        invoice: str | None = None,
        tax_rates: Sequence[Mapping[str, Any]] = (),
    ) -> dict[str, Any]:
        parent = None
        if subscription is not None:
            parent = {
                "type": "subscription_details",
                "subscription_details": {
                    "subscription": subscription,
                    "subscription_item": subscription_item,
                },
            }
        return {
            "amount": amount,
            "currency": currency_code,
            "customer": customer,
            "date": self.engine.now(),
            "description": description,
            "discountable": discountable and not proration,
            "discounts": [],
            "invoice": invoice,
            "metadata": merge_metadata({}, metadata_ or {}),
            "parent": parent,
            "period": {"start": period[0], "end": period[1]},
            "price": dict(price) if price is not None else None,
            "pricing": _pricing(price, unit_amount),
            "proration": proration,
            "proration_details": {"credited_items": None},
            "quantity": quantity,
            "subscription": subscription,
            "subscription_item": subscription_item,
            "tax_rates": [dict(r) for r in tax_rates],
            "test_clock": None,
            "unit_amount": unit_amount,
            "unit_amount_decimal": str(unit_amount) if unit_amount is not None else None,
            "_pending": invoice is None,
        }

    def _pending_items(
        self,
        customer_id: str,
        *,
        subscription_id: str | None = None,
        include_unassigned: bool = False,
    ) -> list[dict[str, Any]]:
        """Pending invoice items, oldest first: all of the customer's when no subscription is
        named; else that subscription's (plus those tied to none, for its renewals)."""
        found = self.engine.store.find_objects(
            "invoiceitem", {"customer": customer_id, "_pending": True}
        )
        if subscription_id is None:
            return found
        return [
            item
            for item in found
            if item["subscription"] == subscription_id
            or (include_unassigned and item["subscription"] is None)
        ]

    def create_invoice_item(self, params: Mapping[str, Any], ctx: CallContext) -> dict[str, Any]:
        clean = validate(params, _INVOICE_ITEM_CREATE, required=("customer",))
        customer = self._customer(clean["customer"])
        price_id = clean.get("price") or (clean.get("pricing") or {}).get("price")
        given = [k for k in ("amount", "unit_amount") if k in clean]
        if len(given) + bool(price_id) != 1:
            raise param_error(
                "Give exactly one of amount, price (or pricing[price]) or unit_amount.",
                param="amount",
            )
        if "amount" in clean and "quantity" in clean:
            raise param_error(
                "quantity cannot be combined with amount; use unit_amount or price.",
                param="quantity",
            )
        quantity = clean.get("quantity", 1)
        price = None
        if price_id:
            price = self._price(price_id, "price")
            if price["type"] != "one_time":
                raise refused(
                    "The price specified is set to `type=recurring` but this field only "
                    "accepts prices with `type=one_time`.",
                    code="price_not_one_time",
                    param="price",
                )
            unit_amount: int | None = int(price["unit_amount"])
            amount = int(price["unit_amount"]) * quantity
            currency_code = price["currency"]
            if clean.get("currency", currency_code) != currency_code:
                raise refused(
                    "currency must match the price's currency.",
                    code="currency_mismatch",
                    param="currency",
                )
        elif "unit_amount" in clean:
            unit_amount = clean["unit_amount"]
            amount = clean["unit_amount"] * quantity
            currency_code = clean.get("currency") or customer["currency"]
        else:
            unit_amount = clean["amount"]
            amount = clean["amount"]
            currency_code = clean.get("currency") or customer["currency"]
        if currency_code is None:
            raise missing_param("currency")
        subscription = None
        if "subscription" in clean:
            subscription = self.engine.get(
                self.subscriptions, clean["subscription"], param="subscription", status=400
            )
            if subscription["customer"] != customer["id"] or subscription["status"] == "canceled":
                raise refused(
                    "The subscription must be an active subscription of this customer.",
                    code="parameter_invalid",
                    param="subscription",
                )
        invoice = None
        if "invoice" in clean:
            invoice = self.engine.get(self.invoices, clean["invoice"], param="invoice", status=400)
            if invoice["customer"] != customer["id"] or invoice["status"] != "draft":
                raise refused(
                    "Invoice items can only be added to a draft invoice of the same customer.",
                    code="invoice_not_editable",
                    param="invoice",
                )
        now = self.engine.now()
        period = clean.get("period") or {}
        rates = self.payments.tax_rates_named(clean.get("tax_rates") or [], "tax_rates")
        with self.engine.atomic():
            self._fix_currency(customer["id"], currency_code, ctx, param="currency")
            item = self.engine.insert(
                self.invoice_items,
                self._invoice_item_fields(
                    customer=customer["id"],
                    currency_code=currency_code,
                    amount=amount,
                    description=clean.get("description"),
                    price=self.prices.render(price) if price else None,
                    quantity=quantity,
                    unit_amount=unit_amount,
                    period=(period.get("start", now), period.get("end", now)),
                    subscription=subscription["id"] if subscription else None,
                    discountable=clean.get("discountable", True),
                    metadata_=clean.get("metadata"),
                    invoice=invoice["id"] if invoice else None,
                    tax_rates=rates,
                ),
                ctx,
            )
            if invoice is not None:
                before = self.engine.get(self.invoices, invoice["id"])
                lines = [
                    *before["_lines"],
                    self._item_line(before["id"], item, before.get("default_tax_rates") or []),
                ]
                self.engine.save(
                    self.invoices, before, {**before, **self._totals(lines), "_lines": lines}, ctx
                )
            return self.invoice_items.render(item)

    def delete_invoice_item(self, item_id: str, ctx: CallContext) -> dict[str, Any]:
        with self.engine.atomic():
            item = self.engine.get(self.invoice_items, item_id)
            if not item["_pending"]:
                invoice = self.engine.get(self.invoices, item["invoice"])
                if invoice["status"] != "draft":
                    raise refused(
                        "This invoice item is on a finalized invoice and cannot be deleted.",
                        code="invoice_not_editable",
                    )
                lines = [ln for ln in invoice["_lines"] if ln.get("invoice_item") != item_id]
                self.engine.save(
                    self.invoices,
                    invoice,
                    {**invoice, **self._totals(lines), "_lines": lines},
                    ctx,
                )
            return self.engine.delete(self.invoice_items, item_id, ctx)

    # invoices -----------------------------------------------------------------------------

    def _line(
        self,
        invoice_id: str,
        *,
        amount: int,
        currency_code: str,
        description: str | None,
        period: tuple[int, int],
        price: Mapping[str, Any] | None,
        quantity: int,
        unit_amount: int | None,
        proration: bool,
        subscription: str | None,
        subscription_item: str | None,
        invoice_item: str | None,
        tax_rates: Sequence[Mapping[str, Any]] = (),
    ) -> dict[str, Any]:
        if subscription_item is not None:
            parent = {
                "type": "subscription_item_details",
                "invoice_item_details": None,
                "subscription_item_details": {
                    "invoice_item": invoice_item,
                    "proration": proration,
                    "proration_details": {"credited_items": None},
                    "subscription": subscription,
                    "subscription_item": subscription_item,
                },
            }
        else:
            parent = {
                "type": "invoice_item_details",
                "invoice_item_details": {
                    "invoice_item": invoice_item,
                    "proration": proration,
                    "proration_details": {"credited_items": None},
                    "subscription": subscription,
                },
                "subscription_item_details": None,
            }
        return {
            "id": new_id("il"),
            "object": "line_item",
            "amount": amount,
            "currency": currency_code,
            "description": description,
            "discount_amounts": [],
            "discountable": not proration,
            "discounts": [],
            "invoice": invoice_id,
            "invoice_item": invoice_item,
            "livemode": False,
            "metadata": {},
            "parent": parent,
            "period": {"start": period[0], "end": period[1]},
            "pretax_credit_amounts": [],
            "price": dict(price) if price is not None else None,
            "pricing": _pricing(price, unit_amount),
            "proration": proration,
            "quantity": quantity,
            "subscription": subscription,
            "subscription_item": subscription_item,
            "taxes": line_taxes(amount, tax_rates),
            "type": "subscription" if invoice_item is None else "invoiceitem",
            "_tax_rates": [dict(r) for r in tax_rates],
        }

    def _subscription_line(
        self,
        invoice_id: str,
        sub: Mapping[str, Any],
        item: Mapping[str, Any],
        period: tuple[int, int],
    ) -> dict[str, Any]:
        price = item["price"]
        recurring = price["recurring"]
        every = (
            recurring["interval"]
            if recurring["interval_count"] == 1
            else f"every {recurring['interval_count']} {recurring['interval']}s"
        )
        description = (
            f"{item['quantity']} {TIMES} {self._product_name(price['product'])} "
            f"(at {format_amount(price['unit_amount'], price['currency'])} / {every})"
        )
        return self._line(
            invoice_id,
            amount=int(price["unit_amount"]) * int(item["quantity"]),
            currency_code=sub["currency"],
            description=description,
            period=period,
            price=price,
            quantity=int(item["quantity"]),
            unit_amount=int(price["unit_amount"]),
            proration=False,
            subscription=sub["id"],
            subscription_item=item["id"],
            invoice_item=None,
            tax_rates=item.get("tax_rates") or sub.get("default_tax_rates") or [],
        )

    def _item_line(
        self,
        invoice_id: str,
        item: Mapping[str, Any],
        default_rates: Sequence[Mapping[str, Any]] = (),
    ) -> dict[str, Any]:
        """The invoice's line for an item: its own tax rates, else the invoice's defaults."""
        return self._line(
            invoice_id,
            amount=int(item["amount"]),
            currency_code=item["currency"],
            description=item["description"],
            period=(item["period"]["start"], item["period"]["end"]),
            price=item["price"],
            quantity=int(item["quantity"]),
            unit_amount=item["unit_amount"],
            proration=bool(item["proration"]),
            subscription=item["subscription"],
            subscription_item=item["subscription_item"],
            invoice_item=item["id"],
            tax_rates=item.get("tax_rates") or default_rates,
        )

    @staticmethod
    def _totals(lines: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        totals = document_totals(lines)
        due = max(0, int(totals["total"]))
        return {**totals, "amount_due": due, "amount_remaining": due}

    def _new_invoice(
        self,
        customer_id: str,
        ctx: CallContext,
        *,
        billing_reason: str,
        invoice_id: str | None = None,
        lines: list[dict[str, Any]] | None = None,
        pending: list[dict[str, Any]] | None = None,
        subscription: Mapping[str, Any] | None = None,
        period: tuple[int, int] | None = None,
        currency_code: str | None = None,
        collection_method: str | None = None,
        days_until_due: int | None = None,
        auto_advance: bool = True,
        description: str | None = None,
        metadata_: Mapping[str, str] | None = None,
        default_tax_rates: Sequence[Mapping[str, Any]] = (),
    ) -> dict[str, Any]:
        """A draft invoice (invoice.created): pending items first, then `lines`."""
        customer = self.engine.get(self.customers, customer_id)
        invoice_id = invoice_id or new_id("in")
        all_lines = [self._item_line(invoice_id, item, default_tax_rates) for item in pending or []]
        all_lines.extend(lines or [])
        for item in pending or []:
            # Attaching is bookkeeping: Stripe records no invoiceitem event for it.
            self.engine.store.save_object({**item, "invoice": invoice_id, "_pending": False})
        now = self.engine.now()
        if subscription is not None:
            collection_method = collection_method or subscription["collection_method"]
            days_until_due = subscription["days_until_due"]
        collection_method = collection_method or "charge_automatically"
        period = period or (now, now)
        parent = None
        if subscription is not None:
            parent = {
                "type": "subscription_details",
                "quote_details": None,
                "subscription_details": {
                    "metadata": dict(subscription.get("metadata") or {}),
                    "subscription": subscription["id"],
                },
            }
        fields = {
            "account_country": None,
            "account_name": ACCOUNT_NAME,
            "account_tax_ids": None,
            "amount_overpaid": 0,
            "amount_paid": 0,
            "amount_shipping": 0,
            "application": None,
            "attempt_count": 0,
            "attempted": False,
            "auto_advance": auto_advance,
            "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
            "automatically_finalizes_at": None,
            "billing_reason": billing_reason,
            "collection_method": collection_method,
            "currency": currency_code or customer["currency"],
            "custom_fields": None,
            "customer": customer_id,
            "customer_address": customer.get("address"),
            "customer_email": customer.get("email"),
            "customer_name": customer.get("name"),
            "customer_phone": customer.get("phone"),
            "customer_shipping": None,
            "customer_tax_exempt": customer.get("tax_exempt"),
            "customer_tax_ids": [],
            "days_until_due": days_until_due,
            "default_payment_method": None,
            "default_source": None,
            "default_tax_rates": list(default_tax_rates),
            "description": description,
            "discounts": [],
            "due_date": None,
            "effective_at": None,
            "ending_balance": None,
            "footer": None,
            "from_invoice": None,
            "hosted_invoice_url": None,
            "invoice_pdf": None,
            "issuer": {"type": "self"},
            "last_finalization_error": None,
            "latest_revision": None,
            "metadata": merge_metadata({}, metadata_ or {}),
            "next_payment_attempt": None,
            "number": None,
            "on_behalf_of": None,
            "paid_out_of_band": False,
            "parent": parent,
            "payment_settings": {
                "default_mandate": None,
                "payment_method_options": None,
                "payment_method_types": None,
            },
            "period_end": period[1],
            "period_start": period[0],
            "post_payment_credit_notes_amount": 0,
            "pre_payment_credit_notes_amount": 0,
            "receipt_number": None,
            "rendering": None,
            "shipping_cost": None,
            "shipping_details": None,
            "starting_balance": 0,
            "statement_descriptor": None,
            "status": "draft",
            "status_transitions": {
                "finalized_at": None,
                "marked_uncollectible_at": None,
                "paid_at": None,
                "voided_at": None,
            },
            # Moved under `parent` by Stripe in 2025; kept because consumers still read it.
            "subscription": subscription["id"] if subscription else None,
            "test_clock": None,
            "threshold_reason": None,
            "webhooks_delivered_at": None,
            **self._totals(all_lines),
            "_lines": all_lines,
        }
        return self.engine.insert(self.invoices, fields, ctx, object_id=invoice_id)

    def _finalize(self, invoice_id: str, ctx: CallContext) -> dict[str, Any]:
        """draft -> open: number, customer balance applied, paid at once when nothing is due."""
        invoice = self.engine.get(self.invoices, invoice_id)
        customer = self.engine.get(self.customers, invoice["customer"])
        sequence = int(customer["next_invoice_sequence"])
        # The sequence moves silently: Stripe records no customer.updated for it.
        self.engine.store.save_object({**customer, "next_invoice_sequence": sequence + 1})
        now = self.engine.now()
        starting = int(customer["balance"])
        combined = int(invoice["total"]) + starting
        due, ending = max(0, combined), min(0, combined)
        after = {
            **invoice,
            "status": "open",
            "number": f"{customer['invoice_prefix']}-{sequence:04d}",
            "amount_due": due,
            "amount_remaining": due,
            "starting_balance": starting,
            "ending_balance": ending,
            "effective_at": now,
            "due_date": (
                now + 86400 * int(invoice["days_until_due"])
                if invoice["collection_method"] == "send_invoice"
                else None
            ),
            "status_transitions": {**invoice["status_transitions"], "finalized_at": now},
        }
        self.engine.save(self.invoices, invoice, after, ctx, event_type="invoice.finalized")
        if ending != starting:
            self._adjust_balance(
                invoice["customer"],
                ending - starting,
                ctx,
                kind="applied_to_invoice",
                invoice=invoice_id,
            )
        if due == 0:
            return self._mark_paid(after, ctx)
        return self.invoices.render(after)

    def _mark_paid(
        self, invoice: Mapping[str, Any], ctx: CallContext, *, out_of_band: bool = False
    ) -> dict[str, Any]:
        now = self.engine.now()
        after = {
            **invoice,
            "status": "paid",
            "amount_paid": int(invoice["amount_paid"]) + int(invoice["amount_remaining"]),
            "amount_remaining": 0,
            "paid_out_of_band": out_of_band,
            "status_transitions": {**invoice["status_transitions"], "paid_at": now},
        }
        self.engine.save(self.invoices, invoice, after, ctx, event_type="invoice.paid")
        self.engine.record_event("invoice.payment_succeeded", self.invoices.render(after), ctx)
        self.payments.after_paid(after, ctx)
        return self.invoices.render(after)

    def create_invoice(self, params: Mapping[str, Any], ctx: CallContext) -> dict[str, Any]:
        """A manual draft. As in Stripe since 2022-08-01, pending invoice items join only with
        `pending_invoice_items_behavior=include` (only the named subscription's, if any)."""
        clean = validate(params, _INVOICE_CREATE, required=("customer",))
        customer = self._customer(clean["customer"])
        subscription = None
        if "subscription" in clean:
            subscription = self.engine.get(
                self.subscriptions, clean["subscription"], param="subscription", status=400
            )
            if subscription["customer"] != customer["id"]:
                raise refused(
                    "The subscription belongs to another customer.",
                    code="parameter_invalid",
                    param="subscription",
                )
        currency_code = clean.get("currency") or customer["currency"]
        if currency_code is None:
            raise missing_param("currency")
        collection_method = clean.get("collection_method", "charge_automatically")
        days_until_due = self._days_until_due(collection_method, clean.get("days_until_due"))
        default_rates = self.payments.tax_rates_named(
            clean.get("default_tax_rates") or [], "default_tax_rates"
        )
        with self.engine.atomic():
            self._fix_currency(customer["id"], currency_code, ctx, param="currency")
            pending: list[dict[str, Any]] = []
            if clean.get("pending_invoice_items_behavior", "exclude") == "include":
                pending = self._pending_items(
                    customer["id"],
                    subscription_id=subscription["id"] if subscription else None,
                )
            invoice = self._new_invoice(
                customer["id"],
                ctx,
                billing_reason="manual",
                pending=pending,
                subscription=subscription,
                currency_code=currency_code,
                collection_method=collection_method,
                days_until_due=days_until_due,
                auto_advance=clean.get("auto_advance", False),
                default_tax_rates=default_rates,
                description=clean.get("description"),
                metadata_=clean.get("metadata"),
            )
            return self.invoices.render(invoice)

    def _invoice_in(self, invoice_id: str, allowed: tuple[str, ...], action: str) -> dict[str, Any]:
        invoice = self.engine.get(self.invoices, invoice_id)
        if invoice["status"] not in allowed:
            raise refused(
                f"You can only {action} an invoice that is {' or '.join(allowed)}; invoice "
                f"{invoice_id} is {invoice['status']}.",
                code="invoice_not_editable",
            )
        return invoice

    def finalize_invoice(
        self, invoice_id: str, params: Mapping[str, Any], ctx: CallContext
    ) -> dict[str, Any]:
        clean = validate(params, {"auto_advance": boolean()})
        with self.engine.atomic():
            invoice = self.engine.get(self.invoices, invoice_id)
            if invoice["status"] != "draft":
                raise refused(
                    "This invoice is already finalized, you can't re-finalize a non-draft invoice.",
                    code="invoice_not_editable",
                )
            if "auto_advance" in clean:
                self.engine.store.save_object({**invoice, "auto_advance": clean["auto_advance"]})
            return self._finalize(invoice_id, ctx)

    def pay_invoice(
        self, invoice_id: str, params: Mapping[str, Any], ctx: CallContext
    ) -> dict[str, Any]:
        """Charge what remains with `payment_method` (or the invoice's, subscription's or
        customer's default), or record it `paid_out_of_band`; a draft is finalized first, as
        Stripe does. Nothing to charge is refused; a declined card answers 402 and the failed
        attempt stays recorded (charge, intent, events), as in Stripe."""
        clean = validate(
            params,
            {
                "paid_out_of_band": boolean(),
                "payment_method": string(255, clearable=False),
                "off_session": boolean(),
            },
        )
        if clean.get("paid_out_of_band") and "payment_method" in clean:
            raise param_error(
                "You cannot pass payment_method when paid_out_of_band is true.",
                param="payment_method",
            )
        declined: StripeError | None = None
        with self.engine.atomic():
            invoice = self._invoice_in(invoice_id, ("draft", "open", "uncollectible"), "pay")
            if invoice["status"] == "draft":
                finalized = self._finalize(invoice_id, ctx)
                if finalized["status"] == "paid":
                    return finalized
                invoice = self.engine.get(self.invoices, invoice_id)
            if clean.get("paid_out_of_band"):
                return self.payments.apply_payment(
                    invoice,
                    int(invoice["amount_remaining"]),
                    {"type": "payment_record", "payment_record": new_id("pr")},
                    ctx,
                    out_of_band=True,
                )
            method: dict[str, Any] | None
            if "payment_method" in clean:
                method = self.payments.method_for_charge(
                    clean["payment_method"], invoice["customer"], "payment_method"
                )
            else:
                sub = self.payments._subscription_of(invoice)
                method = self.payments.default_method(invoice, sub)
            if method is None:
                raise refused(
                    "This customer has no attached payment source or default payment method. "
                    "Pass a payment_method, set a default, or pay the invoice with "
                    "paid_out_of_band=true.",
                    code="resource_missing",
                    param="payment_method",
                )
            answer, declined = self.payments.collect(invoice, method, ctx)
        if declined is not None:
            raise declined  # after the block: the failed attempt is kept, as in Stripe
        return answer

    def void_invoice(
        self, invoice_id: str, params: Mapping[str, Any], ctx: CallContext
    ) -> dict[str, Any]:
        validate(params, {})
        with self.engine.atomic():
            invoice = self.engine.get(self.invoices, invoice_id)
            if invoice["status"] == "paid":
                raise refused(
                    f"You cannot void a paid invoice ({invoice['number']}); issue a credit "
                    "note instead.",
                    code="invoice_not_editable",
                )
            invoice = self._invoice_in(invoice_id, ("open", "uncollectible"), "void")
            if int(invoice["amount_paid"]) > 0:
                raise refused(
                    f"Invoice {invoice['number']} has payments ({invoice['amount_paid']} paid); "
                    "an invoice with payments cannot be voided. Refund the payments and issue "
                    "a credit note instead.",
                    code="invoice_not_editable",
                )
            after = {
                **invoice,
                "status": "void",
                "amount_remaining": 0,
                "status_transitions": {
                    **invoice["status_transitions"],
                    "voided_at": self.engine.now(),
                },
            }
            self.engine.save(self.invoices, invoice, after, ctx, event_type="invoice.voided")
            applied = int(invoice["ending_balance"] or 0) - int(invoice["starting_balance"])
            if applied:
                self._adjust_balance(
                    invoice["customer"],
                    -applied,
                    ctx,
                    kind="unapplied_from_invoice",
                    invoice=invoice_id,
                )
            return self.invoices.render(after)

    def mark_uncollectible(
        self, invoice_id: str, params: Mapping[str, Any], ctx: CallContext
    ) -> dict[str, Any]:
        validate(params, {})
        with self.engine.atomic():
            invoice = self._invoice_in(invoice_id, ("open",), "mark uncollectible")
            after = {
                **invoice,
                "status": "uncollectible",
                "status_transitions": {
                    **invoice["status_transitions"],
                    "marked_uncollectible_at": self.engine.now(),
                },
            }
            self.engine.save(
                self.invoices, invoice, after, ctx, event_type="invoice.marked_uncollectible"
            )
            return self.invoices.render(after)

    def delete_invoice(self, invoice_id: str, ctx: CallContext) -> dict[str, Any]:
        """Only drafts can be deleted; their invoice items become pending again."""
        with self.engine.atomic():
            self._invoice_in(invoice_id, ("draft",), "delete")
            for item in self.engine.store.find_objects("invoiceitem", {"invoice": invoice_id}):
                self.engine.store.save_object({**item, "invoice": None, "_pending": True})
            return self.engine.delete(self.invoices, invoice_id, ctx)

    def list_lines(
        self,
        owner: Mapping[str, Any],
        params: Mapping[str, Any],
        url: str,
        view: Callable[[Mapping[str, Any]], dict[str, Any]] = dict,
    ) -> dict[str, Any]:
        """Cursor pages over an invoice's or credit note's lines (in document order)."""
        clean = validate(params, _LINES_LIST)
        lines = list(owner["_lines"])
        limit = clean.get("limit", 10)
        ids = [line["id"] for line in lines]
        try:
            if "starting_after" in clean:
                start = ids.index(clean["starting_after"]) + 1
                page, more = lines[start : start + limit], start + limit < len(lines)
            elif "ending_before" in clean:
                stop = ids.index(clean["ending_before"])
                page, more = lines[max(0, stop - limit) : stop], stop - limit > 0
            else:
                page, more = lines[:limit], limit < len(lines)
        except ValueError:
            cursor = clean.get("starting_after") or clean.get("ending_before")
            raise no_such("line_item", str(cursor), param="starting_after", status=400) from None
        return {
            "object": "list",
            "data": [view(line) for line in page],
            "has_more": more,
            "url": url,
        }

    def invoice_lines(self, invoice_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        invoice = self.engine.get(self.invoices, invoice_id)
        url = f"/v1/invoices/{invoice_id}/lines"
        return self.list_lines(invoice, params, url, invoice_line_view)

    # credit notes -------------------------------------------------------------------------

    def _credit_note_lines(
        self, invoice: Mapping[str, Any], clean: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        credited: dict[str, int] = {}
        for note in self.engine.store.find_objects("credit_note", {"invoice": invoice["id"]}):
            if note["status"] == "void":
                continue
            for line in note["_lines"]:
                if line["invoice_line_item"]:
                    key = line["invoice_line_item"]
                    credited[key] = credited.get(key, 0) + int(line["amount"])
        specs = clean.get("lines")
        if specs is None:
            if "amount" not in clean:
                raise param_error(
                    "One of amount or lines must be provided.",
                    param="lines",
                    code="parameter_missing",
                )
            specs = [
                {
                    "type": "custom_line_item",
                    "amount": clean["amount"],
                    "description": clean.get("memo") or "Credit",
                }
            ]
        invoice_lines = {line["id"]: line for line in invoice["_lines"]}
        lines = []
        for index, spec in enumerate(specs):
            param = f"lines[{index}]"
            if "type" not in spec:
                raise missing_param(f"{param}[type]")
            if spec["type"] == "invoice_line_item":
                if "invoice_line_item" not in spec:
                    raise missing_param(f"{param}[invoice_line_item]")
                target = invoice_lines.get(spec["invoice_line_item"])
                if target is None:
                    raise no_such(
                        "invoice line item",
                        spec["invoice_line_item"],
                        param=f"{param}[invoice_line_item]",
                        status=400,
                    )
                if int(target["amount"]) <= 0:
                    raise refused(
                        "Only invoice lines with a positive amount can be credited.",
                        code="parameter_invalid",
                        param=f"{param}[invoice_line_item]",
                    )
                unit = (target.get("pricing") or {}).get("unit_amount_decimal")
                if "amount" in spec:
                    amount, quantity, unit_amount = spec["amount"], 1, spec["amount"]
                elif "quantity" in spec and unit is not None:
                    quantity, unit_amount = spec["quantity"], int(unit)
                    amount = quantity * unit_amount
                else:
                    amount, quantity = int(target["amount"]), int(target["quantity"] or 1)
                    unit_amount = amount // quantity if amount % quantity == 0 else amount
                    quantity = quantity if unit_amount * quantity == amount else 1
                left = int(target["amount"]) - credited.get(target["id"], 0)
                if amount > left:
                    money = invoice["currency"]
                    raise refused(
                        f"The credit for line {target['id']} ({format_amount(amount, money)}) "
                        f"exceeds what is left to credit on it ({format_amount(left, money)}).",
                        code="amount_too_large",
                        param=f"{param}[amount]",
                    )
                credited[target["id"]] = credited.get(target["id"], 0) + amount
                description = spec.get("description") or target["description"]
                line_item: str | None = target["id"]
                rates = list(target.get("_tax_rates") or [])
                taxes = scaled_taxes(
                    target.get("taxes") or [],
                    amount,
                    int(target["amount"]),
                    {r["id"]: r for r in rates},
                )
            else:
                if not spec.get("description"):
                    raise missing_param(f"{param}[description]")
                if "amount" in spec:
                    amount, quantity, unit_amount = spec["amount"], 1, spec["amount"]
                elif "unit_amount" in spec:
                    quantity, unit_amount = spec.get("quantity", 1), spec["unit_amount"]
                    amount = quantity * unit_amount
                else:
                    raise missing_param(f"{param}[unit_amount]")
                description = spec["description"]
                line_item = None
                rates, taxes = [], []
            if amount <= 0:
                raise param_error("A credit note line must credit a positive amount.", param=param)
            lines.append(
                {
                    "id": new_id("cnli"),
                    "object": "credit_note_line_item",
                    "amount": amount,
                    "description": description,
                    "discount_amount": 0,
                    "discount_amounts": [],
                    "invoice_line_item": line_item,
                    "livemode": False,
                    "metadata": merge_metadata({}, spec.get("metadata") or {}),
                    "pretax_credit_amounts": [],
                    "quantity": quantity,
                    "tax_rates": rates,
                    "taxes": taxes,
                    "type": spec["type"],
                    "unit_amount": unit_amount,
                    "unit_amount_decimal": str(unit_amount),
                }
            )
        return lines

    def create_credit_note(self, params: Mapping[str, Any], ctx: CallContext) -> dict[str, Any]:
        clean = validate(params, _CREDIT_NOTE_CREATE, required=("invoice",))
        with self.engine.atomic():
            invoice = self.engine.get(self.invoices, clean["invoice"], param="invoice", status=400)
            if invoice["status"] not in ("open", "paid"):
                raise refused(
                    "Credit notes can only be issued for open or paid invoices; invoice "
                    f"{invoice['id']} is {invoice['status']}.",
                    code="invoice_not_editable",
                    param="invoice",
                )
            lines = self._credit_note_lines(invoice, clean)
            totals = document_totals(lines)
            total = int(totals["total"])
            if "amount" in clean and "lines" in clean and clean["amount"] != total:
                raise param_error(
                    f"amount ({clean['amount']}) must equal the sum of the lines ({total}).",
                    param="amount",
                )
            earlier = self.engine.store.find_objects("credit_note", {"invoice": invoice["id"]})
            already = sum(int(n["total"]) for n in earlier if n["status"] != "void")
            creditable = int(invoice["total"]) - already
            currency_code = invoice["currency"]
            if total > creditable:
                raise refused(
                    f"The credit note total ({format_amount(total, currency_code)}) exceeds the "
                    f"amount left to credit on invoice {invoice['number']} "
                    f"({format_amount(max(0, creditable), currency_code)}).",
                    code="amount_too_large",
                    param="lines" if "lines" in clean else "amount",
                )
            pre = min(total, int(invoice["amount_remaining"])) if invoice["status"] == "open" else 0
            post = total - pre
            linked = self._linked_refunds(invoice, clean) if "refunds" in clean else None
            # Linked refunds are the note's refunds: they count as its refund amount.
            refunded = int(clean.get("refund_amount", 0))
            if linked is not None:
                refunded = sum(int(entry["amount_refunded"]) for entry in linked)
            outlets = ("credit_amount", "refund_amount", "out_of_band_amount")
            if linked is not None or any(k in clean for k in outlets):
                given = (
                    int(clean.get("credit_amount", 0))
                    + refunded
                    + int(clean.get("out_of_band_amount", 0))
                )
                if given != post:
                    raise refused(
                        f"The sum of credit_amount, refund_amount and out_of_band_amount "
                        f"({given}) must equal the credit note's post-payment amount ({post}).",
                        code="parameter_invalid",
                        param="credit_amount",
                    )
                credit = int(clean.get("credit_amount", 0))
            else:
                credit = post  # the sandbox's default: what was paid goes to the balance
            refunds = linked if linked is not None else self._refund_of_note(invoice, clean, ctx)
            note_id = new_id("cn")
            transaction_id = new_id("cbtxn") if credit else None
            now = self.engine.now()
            note = self.engine.insert(
                self.credit_notes,
                {
                    "amount": total,
                    "amount_shipping": 0,
                    "currency": currency_code,
                    "customer": invoice["customer"],
                    "customer_balance_transaction": transaction_id,
                    "discount_amount": 0,
                    "discount_amounts": [],
                    "effective_at": now,
                    "invoice": invoice["id"],
                    "memo": clean.get("memo"),
                    "metadata": merge_metadata({}, clean.get("metadata") or {}),
                    "number": f"{invoice['number']}-CN-{len(earlier) + 1:02d}",
                    "out_of_band_amount": clean.get("out_of_band_amount"),
                    "pdf": None,
                    "post_payment_amount": post,
                    "pre_payment_amount": pre,
                    "pretax_credit_amounts": [],
                    "reason": clean.get("reason"),
                    "refunds": refunds,
                    "shipping_cost": None,
                    "status": "issued",
                    "subtotal": totals["subtotal"],
                    "subtotal_excluding_tax": totals["subtotal_excluding_tax"],
                    "total": total,
                    "total_excluding_tax": totals["total_excluding_tax"],
                    "total_taxes": totals["total_taxes"],
                    "type": "mixed" if pre and post else ("pre_payment" if pre else "post_payment"),
                    "voided_at": None,
                    "_lines": lines,
                    "_credit_amount": credit,
                },
                ctx,
                object_id=note_id,
            )
            if credit:
                self._adjust_balance(
                    invoice["customer"],
                    -credit,
                    ctx,
                    kind="credit_note",
                    invoice=invoice["id"],
                    credit_note=note_id,
                    object_id=transaction_id,
                )
            after = {
                **invoice,
                "amount_due": int(invoice["amount_due"]) - pre,
                "amount_remaining": int(invoice["amount_remaining"]) - pre,
                "pre_payment_credit_notes_amount": int(invoice["pre_payment_credit_notes_amount"])
                + pre,
                "post_payment_credit_notes_amount": int(invoice["post_payment_credit_notes_amount"])
                + post,
            }
            self.engine.save(self.invoices, invoice, after, ctx)
            if invoice["status"] == "open" and after["amount_remaining"] == 0:
                self._mark_paid(after, ctx)  # Stripe settles an open invoice credited in full
            return self.credit_notes.render(note)

    def _linked_refunds(
        self, invoice: Mapping[str, Any], clean: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        """The existing refunds a credit note's `refunds` links: refunds of the invoice's
        charges, each up to what of it no other credit note names yet. Nothing new is
        refunded; `refund_amount`, when given too, must be their sum."""
        own = {c["id"] for c in self.payments.invoice_charges(invoice["id"])}
        notes = self.engine.store.find_objects("credit_note", {"invoice": invoice["id"]})
        entries: list[dict[str, Any]] = []
        for index, spec in enumerate(clean["refunds"]):
            param = f"refunds[{index}][refund]"
            if "refund" not in spec:
                raise missing_param(param)
            refund = self.engine.get(self.payments.refunds, spec["refund"], param=param, status=400)
            if refund["charge"] not in own:
                raise refused(
                    f"Refund {refund['id']} is not a refund of a payment of invoice "
                    f"{invoice['number']}.",
                    code="parameter_invalid",
                    param=param,
                )
            named = sum(
                int(r["amount_refunded"])
                for n in notes
                if n["status"] != "void"
                for r in n.get("refunds") or []
                if r["refund"] == refund["id"]
            ) + sum(int(e["amount_refunded"]) for e in entries if e["refund"] == refund["id"])
            left = int(refund["amount"]) - named
            amount = int(spec.get("amount_refunded", left))
            if amount > left or amount <= 0:
                raise refused(
                    f"amount_refunded ({amount}) exceeds what is left of refund "
                    f"{refund['id']} to link to a credit note ({left}).",
                    code="amount_too_large",
                    param=f"refunds[{index}][amount_refunded]",
                )
            entries.append(
                {
                    "amount_refunded": amount,
                    "payment_record_refund": None,
                    "refund": refund["id"],
                    "type": "refund",
                }
            )
        linked = sum(int(e["amount_refunded"]) for e in entries)
        if "refund_amount" in clean and linked != clean["refund_amount"]:
            raise refused(
                f"refund_amount ({clean['refund_amount']}) must equal the refunds' "
                f"amount_refunded ({linked}).",
                code="parameter_invalid",
                param="refund_amount",
            )
        return entries

    def _refund_of_note(
        self, invoice: Mapping[str, Any], clean: Mapping[str, Any], ctx: CallContext
    ) -> list[dict[str, Any]]:
        """The refund a credit note's `refund_amount` makes, from the invoice's latest charge
        that still holds enough."""
        wanted = clean.get("refund_amount", 0)
        if not wanted:
            return []
        for charge in reversed(self.payments.invoice_charges(invoice["id"])):
            if int(charge["amount"]) - int(charge["amount_refunded"]) >= wanted:
                refund = self.payments.refund_charge(charge, wanted, ctx, param="refund_amount")
                return [
                    {
                        "amount_refunded": wanted,
                        "payment_record_refund": None,
                        "refund": refund["id"],
                        "type": "refund",
                    }
                ]
        raise refused(
            f"Invoice {invoice['number']} has no charge with "
            f"{format_amount(wanted, invoice['currency'])} left to refund; refund_amount must "
            "come from a card payment of the invoice.",
            code="amount_too_large",
            param="refund_amount",
        )

    def void_credit_note(
        self, note_id: str, params: Mapping[str, Any], ctx: CallContext
    ) -> dict[str, Any]:
        validate(params, {})
        with self.engine.atomic():
            note = self.engine.get(self.credit_notes, note_id)
            if note["status"] == "void":
                raise refused(
                    f"The credit note {note['number']} is already void.",
                    code="credit_note_already_voided",
                )
            invoice = self.engine.get(self.invoices, note["invoice"])
            pre, post = int(note["pre_payment_amount"]), int(note["post_payment_amount"])
            if pre and invoice["status"] != "open":
                raise refused(
                    f"The credit note {note['number']} reduced invoice {invoice['number']} "
                    f"before payment and the invoice is now {invoice['status']}; it can no "
                    "longer be voided.",
                    code="invoice_not_editable",
                )
            if note.get("refunds"):
                raise refused(
                    f"The credit note {note['number']} gave money back (refunds "
                    f"{', '.join(r['refund'] for r in note['refunds'])}); a credit note with "
                    "refunds cannot be voided.",
                    code="credit_note_not_voidable",
                )
            after = {**note, "status": "void", "voided_at": self.engine.now()}
            self.engine.save(self.credit_notes, note, after, ctx, event_type="credit_note.voided")
            invoice_after = {
                **invoice,
                "amount_due": int(invoice["amount_due"]) + pre,
                "amount_remaining": int(invoice["amount_remaining"]) + pre,
                "pre_payment_credit_notes_amount": int(invoice["pre_payment_credit_notes_amount"])
                - pre,
                "post_payment_credit_notes_amount": int(invoice["post_payment_credit_notes_amount"])
                - post,
            }
            self.engine.save(self.invoices, invoice, invoice_after, ctx)
            credit = int(note.get("_credit_amount") or 0)
            if credit:
                self._adjust_balance(
                    note["customer"],
                    credit,
                    ctx,
                    kind="credit_note",
                    description=f"Void of credit note {note['number']}",
                    invoice=invoice["id"],
                    credit_note=note_id,
                )
            return self.credit_notes.render(after)

    def credit_note_lines(self, note_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        note = self.engine.get(self.credit_notes, note_id)
        return self.list_lines(note, params, f"/v1/credit_notes/{note_id}/lines")

    # customer balance ---------------------------------------------------------------------

    def create_balance_transaction(
        self, customer_id: str, params: Mapping[str, Any], ctx: CallContext
    ) -> dict[str, Any]:
        clean = validate(params, _BALANCE_TRANSACTION_CREATE, required=("amount", "currency"))
        if clean["amount"] == 0:
            raise param_error("amount must not be zero.", param="amount")
        with self.engine.atomic():
            customer = self.engine.get(self.customers, customer_id)
            self._fix_currency(customer["id"], clean["currency"], ctx, param="currency")
            transaction = self._adjust_balance(
                customer_id,
                clean["amount"],
                ctx,
                kind="adjustment",
                description=clean.get("description"),
                metadata_=clean.get("metadata"),
            )
            return self.balance_transactions.render(transaction)

    def _balance_transaction(self, customer_id: str, transaction_id: str) -> dict[str, Any]:
        transaction = self.engine.get(self.balance_transactions, transaction_id)
        if transaction["customer"] != customer_id:
            raise no_such("customer_balance_transaction", transaction_id)
        return transaction

    def retrieve_balance_transaction(self, customer_id: str, transaction_id: str) -> dict[str, Any]:
        self.engine.get(self.customers, customer_id)
        return self.balance_transactions.render(
            self._balance_transaction(customer_id, transaction_id)
        )

    def update_balance_transaction(
        self, customer_id: str, transaction_id: str, params: Mapping[str, Any], ctx: CallContext
    ) -> dict[str, Any]:
        clean = validate(params, _BALANCE_TRANSACTION_UPDATE)
        with self.engine.atomic():
            transaction = self._balance_transaction(customer_id, transaction_id)
            after = dict(transaction)
            if "description" in clean:
                after["description"] = clean["description"]
            if "metadata" in clean:
                after["metadata"] = merge_metadata(
                    transaction.get("metadata") or {}, clean["metadata"]
                )
            self.engine.save(self.balance_transactions, transaction, after, ctx)
            return self.balance_transactions.render(after)

    def list_balance_transactions(
        self, customer_id: str, params: Mapping[str, Any], url: str
    ) -> dict[str, Any]:
        """Newest first, as Stripe: `created` (a timestamp or gt/gte/lt/lte), `invoice`,
        `limit`, `starting_after` / `ending_before`."""
        self.engine.get(self.customers, customer_id)
        clean = validate(
            params,
            {**_LINES_LIST, "invoice": string(255, clearable=False), "created": created_filter},
        )
        equals: dict[str, Any] = {"customer": customer_id}
        if "invoice" in clean:
            equals["invoice"] = clean["invoice"]
        cursor = clean.get("starting_after") or clean.get("ending_before")
        if clean.get("starting_after") and clean.get("ending_before"):
            raise param_error(
                "You may only specify one of these parameters: starting_after, ending_before.",
                param="starting_after",
            )
        try:
            page = self.engine.store.list_objects(
                "customer_balance_transaction",
                limit=clean.get("limit", 10),
                starting_after=clean.get("starting_after"),
                ending_before=clean.get("ending_before"),
                equals=equals,
                created=clean.get("created"),
            )
        except CursorNotFound:
            raise no_such(
                "customer_balance_transaction", str(cursor), param="starting_after", status=400
            ) from None
        return {
            "object": "list",
            "data": [self.balance_transactions.render(t) for t in page.items],
            "has_more": page.has_more,
            "url": url,
        }


__all__ = ["BillingOperations", "format_amount", "refused"]
