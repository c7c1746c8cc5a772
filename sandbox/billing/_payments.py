"""Money that moves, as Stripe moves it: payment methods, charging invoices, payment intents,
charges, the account's balance transactions, invoice payments and refunds.

Test payment methods are Stripe's documented test tokens. Attaching one to a customer makes a
new `pm_...`, as Stripe does; the declined cards are refused at attach (Stripe validates a
card when it is saved), and `pm_card_chargeCustomerFail` attaches but declines every charge:

    pm_card_visa, pm_card_mastercard, pm_card_amex    succeed
    pm_card_chargeDeclined                           card_declined / generic_decline
    pm_card_chargeDeclinedInsufficientFunds          card_declined / insufficient_funds
    pm_card_chargeCustomerFail                       attaches; charges: generic_decline
    pm_card_pendingRefund                            succeed; refunds start `pending`

A successful charge makes, in this order and within the one request: a PaymentIntent
(`payment_intent.created`), a Charge with its balance transaction (`charge.succeeded`), the
intent succeeded (`payment_intent.succeeded`), the invoice payment (`invoice_payment.paid`)
and the invoice's new state (`invoice.updated`, or `invoice.paid` + `invoice.payment_succeeded`
once nothing remains). A declined one: `payment_intent.created`, `charge.failed`,
`payment_intent.payment_failed`, `invoice.payment_failed` (and `invoice.updated`).

The account settles in USD. A charge in another currency is converted at the fixed rate
table below (the sandbox's stand-in for Stripe's daily rates), the balance transaction
carries that `exchange_rate`, and the fee is Stripe's US card price: 2.9 % + 30 cents of the
settled amount. Refunds give back the settled amount at the charge's rate, with no fee.

Invoice payments name what paid: `payment.type="payment_intent"` with the intent (its
`latest_charge` is the charge), or `payment_record` for an invoice paid out of band (the
`pr_...` record itself is not served). Partial payments are Stripe's: a confirmed
PaymentIntent attached with `POST /v1/invoices/{id}/attach_payment`.

A refund of a `pm_card_pendingRefund` charge starts `pending` (`pending_reason`
`processing`), as with Stripe's test card 4000000000007726, and stays so until it is moved
on. Stripe moves it on by itself and has no endpoint for it; here the sandbox-only control
route `POST /_sandbox/refunds/{id}/settle` (`{"status": "succeeded" | "failed"}`, never
called by the product) does, sending `charge.refund.updated` and `refund.updated` as Stripe
does. A failed refund gives the money back to the balance (`refund_failure`) and to what is
refundable on its charge.

Not modelled, and so never answered: 3-D Secure and other customer actions, unconfirmed
intents, disputes, payouts, the payment records API, and Stripe's handling of an invoice
below the minimum charge (Stripe credits it to the customer's balance; here it is charged).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

from sandbox.billing._currencies import CURRENCY_DECIMALS, format_amount
from sandbox.billing._engine import SYSTEM, CallContext, new_id
from sandbox.billing._errors import StripeError, missing_param, no_such, param_error
from sandbox.billing._params import (
    Validator,
    boolean,
    currency,
    enum,
    integer,
    merge_metadata,
    metadata,
    string,
    string_list,
    validate,
)

if TYPE_CHECKING:
    from sandbox.billing._billing import BillingOperations

ACCOUNT_CURRENCY = "usd"
# Units of USD per unit of each currency the sandbox accepts: fixed (not market) rates, so
# tests can state exact settled amounts. EUR 1.10, GBP 1.25 and JPY 0.0070 are the ones
# the contract tests pin.
_RATES = """
AED 0.27   AUD 0.66   BRL 0.18   CAD 0.73   CHF 1.15   CNY 0.14     CZK 0.044  DKK 0.15
EUR 1.10   GBP 1.25   HKD 0.128  ILS 0.27   INR 0.012  ISK 0.0073   MXN 0.055  MYR 0.22
NOK 0.094  NZD 0.60   PHP 0.018  PLN 0.25   RON 0.22   SAR 0.27     SEK 0.095  SGD 0.75
THB 0.029  TRY 0.03   TWD 0.031  USD 1      ZAR 0.054  CLP 0.0011   JPY 0.0070 KRW 0.00075
VND 0.00004 XAF 0.0017 XOF 0.0017 BHD 2.65  JOD 1.41   KWD 3.25     OMR 2.60   TND 0.32
"""
_PAIRS = _RATES.split()
USD_PER_UNIT: dict[str, Decimal] = {
    code.lower(): Decimal(rate) for code, rate in zip(_PAIRS[::2], _PAIRS[1::2], strict=True)
}
# Stripe's minimum charge per currency (minor units); others must convert to 50 US cents.
MINIMUM_CHARGE: dict[str, int] = {
    "usd": 50, "aud": 50, "brl": 50, "cad": 50, "chf": 50, "czk": 1500, "dkk": 250,
    "eur": 50, "gbp": 30, "hkd": 400, "inr": 50, "jpy": 50, "mxn": 1000, "myr": 200,
    "nok": 300, "nzd": 50, "pln": 200, "ron": 200, "sek": 300, "sgd": 50, "thb": 1000,
    "aed": 200,
}  # fmt: skip
FEE_PERCENT = Decimal("2.9")
FEE_FIXED_CENTS = 30
MAX_AMOUNT = 99_999_999
SETTLEMENT_DAYS = 2


@dataclass(frozen=True)
class TestCard:
    brand: str
    last4: str
    decline_code: str | None = None  # declined when charged
    declined_on_attach: bool = False
    refunds_pending: bool = False  # a refund of its charges starts `pending`


TEST_CARDS: dict[str, TestCard] = {
    "pm_card_visa": TestCard("visa", "4242"),
    "pm_card_mastercard": TestCard("mastercard", "4444"),
    "pm_card_amex": TestCard("amex", "8431"),
    "pm_card_chargeDeclined": TestCard("visa", "0002", "generic_decline", True),
    "pm_card_chargeDeclinedInsufficientFunds": TestCard("visa", "9995", "insufficient_funds", True),
    "pm_card_chargeCustomerFail": TestCard("visa", "0341", "generic_decline"),
    "pm_card_pendingRefund": TestCard("visa", "7726", refunds_pending=True),
}
# What a pending refund may become when moved on, and the failure Stripe's test cards give.
REFUND_OUTCOMES = ("succeeded", "failed")
REFUND_FAILURE_REASON = "expired_or_canceled_card"
DECLINE_MESSAGES = {
    "generic_decline": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
}


def _minor_to_major(amount: int, currency_code: str) -> Decimal:
    return Decimal(amount).scaleb(-CURRENCY_DECIMALS[currency_code.upper()])


def settle(amount: int, currency_code: str) -> tuple[int, Decimal | None]:
    """`amount` minor units of `currency_code` in the account's cents, and the rate used."""
    if currency_code == ACCOUNT_CURRENCY:
        return amount, None
    rate = USD_PER_UNIT.get(currency_code)
    if rate is None:
        raise StripeError(
            400,
            f"The sandbox account cannot settle charges in {currency_code.upper()}: its rate "
            f"table has {', '.join(sorted(c.upper() for c in USD_PER_UNIT))}.",
            code="currency_not_supported",
            param="currency",
        )
    cents = (_minor_to_major(amount, currency_code) * rate * 100).quantize(
        Decimal(1), rounding=ROUND_HALF_UP
    )
    return int(cents), rate


def card_fee(settled_cents: int) -> int:
    percent = (Decimal(settled_cents) * FEE_PERCENT / 100).quantize(
        Decimal(1), rounding=ROUND_HALF_UP
    )
    return int(percent) + FEE_FIXED_CENTS


def _card_error(code: str, decline_code: str | None, message: str, **extra: Any) -> StripeError:
    details: dict[str, Any] = {**extra}
    if decline_code:
        details["decline_code"] = decline_code
    return StripeError(402, message, type="card_error", code=code, extra=details)


_ATTACH: dict[str, Validator] = {"customer": string(255, clearable=False)}
_PAYMENT_INTENT_CREATE: dict[str, Validator] = {
    "amount": integer(1, MAX_AMOUNT),
    "currency": currency(),
    "customer": string(255, clearable=False),
    "payment_method": string(255, clearable=False),
    "confirm": boolean(),
    "off_session": boolean(),
    "description": string(1000),
    "metadata": metadata(),
    "payment_method_types": string_list(20),
}
_REFUND_CREATE: dict[str, Validator] = {
    "charge": string(255, clearable=False),
    "payment_intent": string(255, clearable=False),
    "amount": integer(1, MAX_AMOUNT),
    "reason": enum("duplicate", "fraudulent", "requested_by_customer"),
    "metadata": metadata(),
}


class Payments:
    """The money operations; `billing` supplies invoices and subscriptions."""

    def __init__(self, billing: BillingOperations) -> None:
        self.billing = billing
        self.engine = billing.engine
        self.payment_methods = self.engine.resource("payment_method")
        self.payment_intents = self.engine.resource("payment_intent")
        self.charges = self.engine.resource("charge")
        self.refunds = self.engine.resource("refund")
        self.balance = self.engine.resource("balance_transaction")
        self.invoice_payments = self.engine.resource("invoice_payment")
        self.tax_rates = self.engine.resource("tax_rate")

    # tax rates ---------------------------------------------------------------------------

    def tax_rates_named(self, ids: list[str], param: str) -> list[dict[str, Any]]:
        """Active tax rate objects for `ids`, as invoices and subscriptions carry them."""
        found = []
        for index, rate_id in enumerate(ids):
            rate = self.engine.get(self.tax_rates, rate_id, param=f"{param}[{index}]", status=400)
            if not rate["active"]:
                raise StripeError(
                    400,
                    f"Tax rate {rate_id} is archived (active=false) and cannot be applied.",
                    code="parameter_invalid",
                    param=f"{param}[{index}]",
                )
            found.append(self.tax_rates.render(rate))
        if len({r["id"] for r in found}) != len(found):
            raise param_error(f"{param} names a tax rate twice.", param=param)
        if len({bool(r["inclusive"]) for r in found}) > 1:
            raise param_error(
                f"{param} mixes inclusive and exclusive tax rates; a line's rates must all be "
                "inclusive or all exclusive.",
                param=param,
            )
        return found

    # payment methods ---------------------------------------------------------------------

    def _new_card(self, token: str, card: TestCard, customer: str | None) -> dict[str, Any]:
        return self.engine.insert(
            self.payment_methods,
            {
                "allow_redisplay": "unspecified",
                "billing_details": {
                    "address": {
                        "city": None,
                        "country": None,
                        "line1": None,
                        "line2": None,
                        "postal_code": None,
                        "state": None,
                    },
                    "email": None,
                    "name": None,
                    "phone": None,
                    "tax_id": None,
                },
                "card": {
                    "brand": card.brand,
                    "checks": {
                        "address_line1_check": None,
                        "address_postal_code_check": None,
                        "cvc_check": "pass",
                    },
                    "country": "US",
                    "display_brand": card.brand,
                    "exp_month": 12,
                    "exp_year": 2034,
                    "fingerprint": token[-16:],
                    "funding": "credit",
                    "generated_from": None,
                    "last4": card.last4,
                    "networks": {"available": [card.brand], "preferred": None},
                    "regulated_status": "unregulated",
                    "three_d_secure_usage": {"supported": True},
                    "wallet": None,
                },
                "customer": customer,
                "metadata": {},
                "type": "card",
                "_token": token,
            },
            SYSTEM,
        )

    def attach_payment_method(
        self, pm_id: str, params: Mapping[str, Any], ctx: CallContext
    ) -> dict[str, Any]:
        clean = validate(params, _ATTACH, required=("customer",))
        customer = self.billing._customer(clean["customer"])
        card = TEST_CARDS.get(pm_id)
        if card is not None and card.declined_on_attach:
            # Stripe checks a card when it is saved; a declined card never becomes a pm_.
            raise _card_error(
                "card_declined",
                card.decline_code,
                DECLINE_MESSAGES[card.decline_code or "generic_decline"],
            )
        with self.engine.atomic():
            if card is not None:
                method = self._new_card(pm_id, card, customer["id"])
            else:
                method = self.engine.get(self.payment_methods, pm_id)
                if method["customer"] is None:
                    # Here only a detached method or one made for a single charge is loose.
                    raise StripeError(
                        400,
                        "This PaymentMethod was previously used without being attached to a "
                        "Customer or was detached from a Customer, and may not be used again.",
                        code="payment_method_unexpected_state",
                    )
                if method["customer"] != customer["id"]:
                    raise StripeError(
                        400,
                        "The payment method you provided has already been attached to a customer.",
                        code="payment_method_unexpected_state",
                    )
                return self.payment_methods.render(method)  # attached already: as it is
            rendered = self.payment_methods.render(method)
            self.engine.record_event("payment_method.attached", rendered, ctx)
            return rendered

    def detach_payment_method(
        self, pm_id: str, params: Mapping[str, Any], ctx: CallContext
    ) -> dict[str, Any]:
        validate(params, {})
        with self.engine.atomic():
            method = self.engine.get(self.payment_methods, pm_id)
            if method["customer"] is None:
                raise StripeError(
                    400,
                    "The payment method you provided is not attached to a customer so "
                    "detachment is impossible.",
                    code="payment_method_unexpected_state",
                )
            customer = self.engine.get(self.billing.customers, method["customer"])
            after = {**method, "customer": None}
            self.engine.store.save_object(after)
            settings = customer["invoice_settings"]
            if settings.get("default_payment_method") == pm_id:
                self.engine.save(
                    self.billing.customers,
                    customer,
                    {**customer, "invoice_settings": {**settings, "default_payment_method": None}},
                    ctx,
                )
            rendered = self.payment_methods.render(after)
            self.engine.record_event("payment_method.detached", rendered, ctx)
            return rendered

    def customer_payment_methods(
        self, customer_id: str, params: Mapping[str, Any], url: str
    ) -> dict[str, Any]:
        self.engine.get(self.billing.customers, customer_id)
        clean = dict(params)
        clean["customer"] = customer_id
        return self.engine.list_objects(self.payment_methods, clean, url)

    def owned_method(self, pm_id: str, customer_id: str, param: str) -> dict[str, Any]:
        """A payment method attached to the customer, as subscriptions and defaults need."""
        found = self.engine.store.get_object(pm_id)
        if found is None or found[0]["object"] != "payment_method":
            raise no_such("PaymentMethod", pm_id, param=param, status=400)
        if found[0]["customer"] != customer_id:
            raise StripeError(
                400,
                f"The customer does not have a payment method with the ID {pm_id}. The "
                "payment method must be attached to the customer.",
                code="resource_missing",
                param=param,
            )
        return found[0]

    def method_for_charge(self, pm_id: str, customer_id: str, param: str) -> dict[str, Any]:
        """A payment method named on a charge: the customer's own, or a test token (Stripe
        makes a fresh, unattached method from it for this charge)."""
        card = TEST_CARDS.get(pm_id)
        if card is not None:
            return self._new_card(pm_id, card, None)
        return self.owned_method(pm_id, customer_id, param)

    def default_method(
        self, invoice: Mapping[str, Any], sub: Mapping[str, Any] | None
    ) -> dict[str, Any] | None:
        """Stripe's order: the invoice's, the subscription's, then the customer's default."""
        customer = self.engine.get(self.billing.customers, invoice["customer"])
        for pm_id in (
            invoice.get("default_payment_method"),
            sub.get("default_payment_method") if sub else None,
            customer["invoice_settings"].get("default_payment_method"),
        ):
            if pm_id:
                found = self.engine.store.get_object(pm_id)
                if found is not None and not found[1]:
                    return found[0]
        return None

    # charging ----------------------------------------------------------------------------

    def _charge(
        self,
        *,
        amount: int,
        currency_code: str,
        customer_id: str | None,
        method: Mapping[str, Any],
        description: str | None,
        metadata_: Mapping[str, str] | None,
        ctx: CallContext,
    ) -> tuple[dict[str, Any], dict[str, Any], StripeError | None]:
        """A confirmed PaymentIntent and its Charge; the card error when declined."""
        card = TEST_CARDS.get(method.get("_token", ""), TestCard("visa", "4242"))
        settled, rate = settle(amount, currency_code)  # refuses unsettleable currencies first
        now = self.engine.now()
        pi_id, charge_id = new_id("pi"), new_id("ch")
        intent = self.engine.insert(
            self.payment_intents,
            {
                "amount": amount,
                "amount_capturable": 0,
                "amount_details": {"tip": {}},
                "amount_received": 0,
                "application": None,
                "application_fee_amount": None,
                "automatic_payment_methods": None,
                "canceled_at": None,
                "cancellation_reason": None,
                "capture_method": "automatic",
                "client_secret": f"{pi_id}_secret_{new_id('s', 16)[2:]}",
                "confirmation_method": "automatic",
                "currency": currency_code,
                "customer": customer_id,
                "description": description,
                "last_payment_error": None,
                "latest_charge": None,
                "metadata": dict(metadata_ or {}),
                "next_action": None,
                "on_behalf_of": None,
                "payment_method": method["id"],
                "payment_method_options": {},
                "payment_method_types": ["card"],
                "processing": None,
                "receipt_email": None,
                "review": None,
                "setup_future_usage": None,
                "shipping": None,
                "source": None,
                "statement_descriptor": None,
                "statement_descriptor_suffix": None,
                "status": "requires_confirmation",
                "transfer_data": None,
                "transfer_group": None,
            },
            ctx,
            object_id=pi_id,
        )
        declined = card.decline_code
        txn_id = None
        if not declined:
            fee = card_fee(settled)
            txn_id = self.engine.insert(
                self.balance,
                {
                    "amount": settled,
                    "available_on": now + SETTLEMENT_DAYS * 86400,
                    "balance_type": "payments",
                    "currency": ACCOUNT_CURRENCY,
                    "description": description,
                    "exchange_rate": float(rate) if rate is not None else None,
                    "fee": fee,
                    "fee_details": [
                        {
                            "amount": fee,
                            "application": None,
                            "currency": ACCOUNT_CURRENCY,
                            "description": "Stripe processing fees",
                            "type": "stripe_fee",
                        }
                    ],
                    "net": settled - fee,
                    "reporting_category": "charge",
                    "source": charge_id,
                    "status": "pending",
                    "type": "charge",
                },
                ctx,
            )["id"]
        charge = self.engine.insert(
            self.charges,
            {
                "amount": amount,
                "amount_captured": 0 if declined else amount,
                "amount_refunded": 0,
                "application": None,
                "application_fee": None,
                "application_fee_amount": None,
                "balance_transaction": txn_id,
                "billing_details": method["billing_details"],
                "calculated_statement_descriptor": "LEDGERBRIDGE",
                "captured": not declined,
                "currency": currency_code,
                "customer": customer_id,
                "description": description,
                "disputed": False,
                "failure_balance_transaction": None,
                "failure_code": "card_declined" if declined else None,
                "failure_message": DECLINE_MESSAGES[declined] if declined else None,
                "fraud_details": {},
                "metadata": dict(metadata_ or {}),
                "on_behalf_of": None,
                "outcome": {
                    "advice_code": None,
                    "network_advice_code": None,
                    "network_decline_code": None,
                    "network_status": "declined_by_network" if declined else "approved_by_network",
                    "reason": declined,
                    "risk_level": "normal",
                    "risk_score": 20,
                    "seller_message": (
                        "The bank did not return any further details with this decline."
                        if declined
                        else "Payment complete."
                    ),
                    "type": "issuer_declined" if declined else "authorized",
                },
                "paid": not declined,
                "payment_intent": pi_id,
                "payment_method": method["id"],
                "payment_method_details": {
                    "card": {
                        "brand": card.brand,
                        "country": "US",
                        "exp_month": 12,
                        "exp_year": 2034,
                        "funding": "credit",
                        "last4": card.last4,
                        "network": card.brand,
                    },
                    "type": "card",
                },
                "receipt_email": None,
                "receipt_number": None,
                "receipt_url": None,
                "refunded": False,
                "review": None,
                "shipping": None,
                "source": None,
                "source_transfer": None,
                "statement_descriptor": None,
                "statement_descriptor_suffix": None,
                "status": "failed" if declined else "succeeded",
                "transfer_data": None,
                "transfer_group": None,
            },
            ctx,
            object_id=charge_id,
        )
        rendered_charge = self.charges.render(charge)
        error = None
        if declined:
            message = DECLINE_MESSAGES[declined]
            last_error = {
                "charge": charge_id,
                "code": "card_declined",
                "decline_code": declined,
                "doc_url": "https://stripe.com/docs/error-codes/card-declined",
                "message": message,
                "payment_method": self.payment_methods.render(method),
                "type": "card_error",
            }
            self.engine.record_event("charge.failed", rendered_charge, ctx)
            after = {
                **intent,
                "status": "requires_payment_method",
                "latest_charge": charge_id,
                "last_payment_error": last_error,
                "payment_method": None,
            }
            self.engine.store.save_object(after)
            self.engine.record_event(
                "payment_intent.payment_failed", self.payment_intents.render(after), ctx
            )
            error = _card_error("card_declined", declined, message, charge=charge_id)
        else:
            self.engine.record_event("charge.succeeded", rendered_charge, ctx)
            after = {
                **intent,
                "status": "succeeded",
                "amount_received": amount,
                "latest_charge": charge_id,
            }
            self.engine.store.save_object(after)
            self.engine.record_event(
                "payment_intent.succeeded", self.payment_intents.render(after), ctx
            )
        return after, charge, error

    def _invoice_payment(
        self,
        invoice: Mapping[str, Any],
        amount: int,
        payment: dict[str, Any],
        ctx: CallContext,
    ) -> dict[str, Any]:
        now = self.engine.now()
        existing = self.engine.store.find_objects("invoice_payment", {"invoice": invoice["id"]})
        record = self.engine.insert(
            self.invoice_payments,
            {
                "amount_paid": amount,
                "amount_requested": amount,
                "currency": invoice["currency"],
                "invoice": invoice["id"],
                "is_default": not existing,
                "payment": {
                    "charge": None,
                    "payment_intent": None,
                    "payment_record": None,
                    **payment,
                },
                "status": "paid",
                "status_transitions": {"canceled_at": None, "paid_at": now},
            },
            ctx,
        )
        self.engine.record_event("invoice_payment.paid", self.invoice_payments.render(record), ctx)
        return record

    def apply_payment(
        self,
        invoice: Mapping[str, Any],
        amount: int,
        payment: dict[str, Any],
        ctx: CallContext,
        *,
        out_of_band: bool = False,
    ) -> dict[str, Any]:
        """Record an invoice payment of `amount` and the invoice's new state."""
        self._invoice_payment(invoice, amount, payment, ctx)
        remaining = int(invoice["amount_remaining"]) - amount
        after = {
            **invoice,
            "amount_paid": int(invoice["amount_paid"]) + amount,
            "amount_remaining": remaining,
        }
        if remaining > 0:
            self.engine.save(self.billing.invoices, invoice, after, ctx)
            return self.billing.invoices.render(after)
        return self.billing._mark_paid(after, ctx, out_of_band=out_of_band)

    def collect(
        self,
        invoice: Mapping[str, Any],
        method: Mapping[str, Any],
        ctx: CallContext,
    ) -> tuple[dict[str, Any], StripeError | None]:
        """Charge what remains on an open invoice with `method`; the invoice after it and,
        when the card was declined, the card error (the failure is kept, as in Stripe)."""
        amount = int(invoice["amount_remaining"])
        intent, _charge, error = self._charge(
            amount=amount,
            currency_code=invoice["currency"],
            customer_id=invoice["customer"],
            method=method,
            description=(
                "Subscription creation"
                if invoice["billing_reason"] == "subscription_create"
                else f"Payment for Invoice {invoice['number']}"
            ),
            metadata_=None,
            ctx=ctx,
        )
        attempted = {
            **invoice,
            "attempted": True,
            "attempt_count": int(invoice["attempt_count"]) + 1,
        }
        self.engine.store.save_object(attempted)
        sub = self._subscription_of(attempted)
        if error is not None:
            self.engine.record_event(
                "invoice.payment_failed", self.billing.invoices.render(attempted), ctx
            )
            if sub is not None and sub["status"] in ("active", "trialing", "incomplete"):
                status = (
                    "incomplete"
                    if attempted["billing_reason"] == "subscription_create"
                    else "past_due"
                )
                if status != sub["status"]:
                    self.engine.save(
                        self.billing.subscriptions, sub, {**sub, "status": status}, ctx
                    )
            payment_intent = self.payment_intents.render(intent)
            error.extra["payment_intent"] = payment_intent
            return self.billing.invoices.render(attempted), error
        paid = self.apply_payment(
            attempted,
            amount,
            # Stripe names the intent only: `charge` is for charges made without one.
            {"type": "payment_intent", "payment_intent": intent["id"]},
            ctx,
        )
        return paid, None

    def _subscription_of(self, invoice: Mapping[str, Any]) -> dict[str, Any] | None:
        sub_id = invoice.get("subscription")
        if not sub_id:
            return None
        found = self.engine.store.get_object(sub_id)
        return found[0] if found else None

    def after_paid(self, invoice: Mapping[str, Any], ctx: CallContext) -> None:
        """A paid invoice brings an incomplete or past-due subscription back to active."""
        sub = self._subscription_of(invoice)
        if (
            sub is not None
            and sub["status"] in ("incomplete", "past_due", "unpaid")
            and (sub.get("latest_invoice") == invoice["id"] or sub["status"] != "incomplete")
        ):
            self.engine.save(self.billing.subscriptions, sub, {**sub, "status": "active"}, ctx)

    # payment intents (partial payments) --------------------------------------------------

    def create_payment_intent(
        self, params: Mapping[str, Any], ctx: CallContext
    ) -> tuple[dict[str, Any], StripeError | None]:
        clean = validate(params, _PAYMENT_INTENT_CREATE, required=("amount", "currency"))
        types = clean.get("payment_method_types") or ["card"]
        if types != ["card"]:
            raise param_error(
                "The sandbox takes card payments only: payment_method_types=[card].",
                param="payment_method_types",
            )
        customer_id = clean.get("customer")
        if customer_id is not None:
            self.billing._customer(customer_id)
        self._check_minimum(clean["amount"], clean["currency"])
        if not clean.get("confirm"):
            raise param_error(
                "The sandbox creates confirmed PaymentIntents only: pass confirm=true with a "
                "payment_method.",
                param="confirm",
            )
        if "payment_method" not in clean:
            raise missing_param("payment_method")
        with self.engine.atomic():
            if customer_id is not None:
                method = self.method_for_charge(
                    clean["payment_method"], customer_id, "payment_method"
                )
            else:
                card = TEST_CARDS.get(clean["payment_method"])
                if card is None:
                    raise no_such(
                        "PaymentMethod", clean["payment_method"], param="payment_method", status=400
                    )
                method = self._new_card(clean["payment_method"], card, None)
            intent, _charge, error = self._charge(
                amount=clean["amount"],
                currency_code=clean["currency"],
                customer_id=customer_id,
                method=method,
                description=clean.get("description"),
                metadata_=merge_metadata({}, clean.get("metadata") or {}),
                ctx=ctx,
            )
            rendered = self.payment_intents.render(intent)
        if error is not None:
            error.extra["payment_intent"] = rendered
        return rendered, error

    @staticmethod
    def _check_minimum(amount: int, currency_code: str) -> None:
        """Stripe refuses a PaymentIntent below its minimum charge amount."""
        minimum = MINIMUM_CHARGE.get(currency_code)
        if minimum is not None:
            if amount < minimum:
                raise StripeError(
                    400,
                    f"Amount must be at least {format_amount(minimum, currency_code)}",
                    code="amount_too_small",
                    param="amount",
                    saved=False,
                )
        elif settle(amount, currency_code)[0] < MINIMUM_CHARGE[ACCOUNT_CURRENCY]:
            raise StripeError(
                400,
                "Amount must convert to at least 50 cents. "
                f"{format_amount(amount, currency_code)} converts to approximately "
                f"{format_amount(settle(amount, currency_code)[0], ACCOUNT_CURRENCY)}.",
                code="amount_too_small",
                param="amount",
                saved=False,
            )

    def attach_payment(
        self, invoice_id: str, params: Mapping[str, Any], ctx: CallContext
    ) -> dict[str, Any]:
        """`POST /v1/invoices/{id}/attach_payment`: a succeeded PaymentIntent pays (part of)
        an open invoice. Paying more than remains is refused."""
        clean = validate(
            params,
            {"payment_intent": string(255, clearable=False), "payment_record": string(255)},
        )
        if "payment_record" in clean:
            raise param_error(
                "The sandbox attaches PaymentIntents only; payment records are not served.",
                param="payment_record",
            )
        if "payment_intent" not in clean:
            raise missing_param("payment_intent")
        with self.engine.atomic():
            invoice = self.engine.get(self.billing.invoices, invoice_id)
            intent = self.engine.get(
                self.payment_intents, clean["payment_intent"], param="payment_intent", status=400
            )
            if invoice["status"] != "open":
                raise StripeError(
                    400,
                    f"Payments can only be attached to open invoices; invoice {invoice_id} is "
                    f"{invoice['status']}.",
                    code="invoice_not_editable",
                    param="payment_intent",
                )
            if intent["status"] != "succeeded":
                raise StripeError(
                    400,
                    "The sandbox attaches only succeeded PaymentIntents; this one is "
                    f"{intent['status']}.",
                    code="payment_intent_unexpected_state",
                    param="payment_intent",
                )
            if self.engine.store.find_objects(
                "invoice_payment", {"payment.payment_intent": intent["id"]}
            ):
                raise StripeError(
                    400,
                    f"The PaymentIntent {intent['id']} is already attached to an invoice.",
                    code="payment_intent_unexpected_state",
                    param="payment_intent",
                )
            if intent["currency"] != invoice["currency"] or intent["customer"] not in (
                None,
                invoice["customer"],
            ):
                raise StripeError(
                    400,
                    "The PaymentIntent's currency and customer must match the invoice's.",
                    code="parameter_invalid",
                    param="payment_intent",
                )
            remaining = int(invoice["amount_remaining"])
            if int(intent["amount"]) > remaining:
                raise StripeError(
                    400,
                    f"The PaymentIntent's amount ({intent['amount']}) exceeds the amount "
                    f"remaining on invoice {invoice['number']} ({remaining}).",
                    code="amount_too_large",
                    param="payment_intent",
                )
            return self.apply_payment(
                invoice,
                int(intent["amount"]),
                {"type": "payment_intent", "payment_intent": intent["id"]},
                ctx,
            )

    # refunds -----------------------------------------------------------------------------

    def refund_charge(
        self,
        charge: Mapping[str, Any],
        amount: int | None,
        ctx: CallContext,
        *,
        reason: str | None = None,
        metadata_: Mapping[str, str | None] | None = None,
        param: str = "amount",
    ) -> dict[str, Any]:
        """Give back `amount` (default: what is left) of a succeeded charge."""
        if charge["status"] != "succeeded":
            raise StripeError(
                400,
                f"Charge {charge['id']} did not succeed; there is nothing to refund.",
                code="charge_not_refundable",
            )
        left = int(charge["amount"]) - int(charge["amount_refunded"])
        if left <= 0:
            raise StripeError(
                400,
                f"Charge {charge['id']} has already been refunded.",
                code="charge_already_refunded",
            )
        amount = left if amount is None else amount
        if amount > left:
            raise StripeError(
                400,
                f"Refund amount ({format_amount(amount, charge['currency'])}) is greater than "
                f"unrefunded amount on charge ({format_amount(left, charge['currency'])})",
                code="amount_too_large",
                param=param,
            )
        charge_txn = self.engine.get(self.balance, charge["balance_transaction"])
        rate = charge_txn["exchange_rate"]
        if rate is None:
            settled = amount
        else:
            settled = int(
                (_minor_to_major(amount, charge["currency"]) * Decimal(str(rate)) * 100).quantize(
                    Decimal(1), rounding=ROUND_HALF_UP
                )
            )
        pending = self._refunds_start_pending(charge)
        refund_id = new_id("re")
        txn = self.engine.insert(
            self.balance,
            {
                "amount": -settled,
                "available_on": self.engine.now(),
                "balance_type": "payments",
                "currency": ACCOUNT_CURRENCY,
                "description": "REFUND FOR CHARGE",
                "exchange_rate": rate,
                "fee": 0,
                "fee_details": [],
                "net": -settled,
                "reporting_category": "refund",
                "source": refund_id,
                "status": "available",
                "type": "refund",
            },
            ctx,
        )
        refund = self.engine.insert(
            self.refunds,
            {
                "amount": amount,
                "balance_transaction": txn["id"],
                "charge": charge["id"],
                "currency": charge["currency"],
                "description": None,
                "destination_details": {
                    "card": {
                        "reference_status": "pending",
                        "reference_type": "acquirer_reference_number",
                        "type": "refund",
                    },
                    "type": "card",
                },
                "metadata": merge_metadata({}, metadata_ or {}),
                "payment_intent": charge["payment_intent"],
                "reason": reason,
                "receipt_number": None,
                "source_transfer_reversal": None,
                "status": "pending" if pending else "succeeded",
                "transfer_reversal": None,
                **({"pending_reason": "processing"} if pending else {}),
            },
            ctx,
            object_id=refund_id,
        )
        refunded = int(charge["amount_refunded"]) + amount
        after = {**charge, "amount_refunded": refunded, "refunded": refunded == charge["amount"]}
        self.engine.store.save_object(after)
        self.engine.record_event("charge.refunded", self.charges.render(after), ctx)
        return refund

    def _refunds_start_pending(self, charge: Mapping[str, Any]) -> bool:
        method_id = charge.get("payment_method")
        if not method_id:
            return False
        method = self.engine.store.get_object(method_id)
        token = method[0].get("_token", "") if method is not None else ""
        return TEST_CARDS.get(token, TestCard("visa", "4242")).refunds_pending

    def settle_refund(self, refund_id: str, outcome: str, ctx: CallContext) -> dict[str, Any]:
        """Move a pending refund on, as Stripe does by itself (sandbox control only)."""
        if outcome not in REFUND_OUTCOMES:
            raise param_error(
                f"status must be one of {', '.join(REFUND_OUTCOMES)}, not {outcome!r}",
                param="status",
            )
        with self.engine.atomic():
            refund = self.engine.get(self.refunds, refund_id)
            if refund["status"] != "pending":
                raise StripeError(
                    400,
                    f"Refund {refund_id} is {refund['status']}; only a pending refund moves on.",
                    code="refund_not_pending",
                )
            after = {k: v for k, v in refund.items() if k != "pending_reason"}
            after["status"] = outcome
            if outcome == "failed":
                after.update(self._fail_refund(refund, ctx))
            self.engine.store.save_object(after)
            rendered = self.refunds.render(after)
            previous = {"status": "pending"}
            self.engine.record_event("charge.refund.updated", rendered, ctx, previous=previous)
            self.engine.record_event("refund.updated", rendered, ctx, previous=previous)
        return rendered

    def _fail_refund(self, refund: Mapping[str, Any], ctx: CallContext) -> dict[str, Any]:
        """The money comes back: to the balance, and to what the charge may still refund."""
        given = self.engine.get(self.balance, refund["balance_transaction"])
        txn = self.engine.insert(
            self.balance,
            {
                "amount": -int(given["amount"]),
                "available_on": self.engine.now(),
                "balance_type": "payments",
                "currency": given["currency"],
                "description": "REFUND FAILURE",
                "exchange_rate": given["exchange_rate"],
                "fee": 0,
                "fee_details": [],
                "net": -int(given["net"]),
                "reporting_category": "refund_failure",
                "source": refund["id"],
                "status": "available",
                "type": "refund_failure",
            },
            ctx,
        )
        charge = self.engine.get(self.charges, refund["charge"])
        refunded = int(charge["amount_refunded"]) - int(refund["amount"])
        self.engine.store.save_object({**charge, "amount_refunded": refunded, "refunded": False})
        return {"failure_balance_transaction": txn["id"], "failure_reason": REFUND_FAILURE_REASON}

    def create_refund(self, params: Mapping[str, Any], ctx: CallContext) -> dict[str, Any]:
        clean = validate(params, _REFUND_CREATE)
        if ("charge" in clean) == ("payment_intent" in clean):
            raise param_error(
                "You must pass exactly one of charge or payment_intent.", param="charge"
            )
        with self.engine.atomic():
            if "charge" in clean:
                charge = self.engine.get(self.charges, clean["charge"], param="charge", status=400)
            else:
                intent = self.engine.get(
                    self.payment_intents,
                    clean["payment_intent"],
                    param="payment_intent",
                    status=400,
                )
                if intent["status"] != "succeeded" or not intent["latest_charge"]:
                    raise StripeError(
                        400,
                        f"PaymentIntent {intent['id']} has no successful charge to refund.",
                        code="charge_not_refundable",
                        param="payment_intent",
                    )
                charge = self.engine.get(self.charges, intent["latest_charge"])
            refund = self.refund_charge(
                charge,
                clean.get("amount"),
                ctx,
                reason=clean.get("reason"),
                metadata_=clean.get("metadata"),
            )
            return self.refunds.render(refund)

    def invoice_charges(self, invoice_id: str) -> list[dict[str, Any]]:
        """The succeeded charges that paid the invoice, oldest first."""
        charges = []
        for record in self.engine.store.find_objects("invoice_payment", {"invoice": invoice_id}):
            intent_id = record["payment"].get("payment_intent")
            charge_id = (
                self.engine.get(self.payment_intents, intent_id)["latest_charge"]
                if intent_id
                else record["payment"].get("charge")
            )
            if charge_id:
                charges.append(self.engine.get(self.charges, charge_id))
        return charges


__all__ = ["ACCOUNT_CURRENCY", "TEST_CARDS", "USD_PER_UNIT", "Payments", "card_fee", "settle"]
