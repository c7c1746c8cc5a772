"""Act as a customer or a billing admin of Stripe (the sandbox or a real test account).

A thin layer over the official SDK's `stripe.StripeClient`: async calls, the idempotency key
of every write given by the caller (a retried run repeats its keys), no automatic network
retries (a caller that wants them says so), amounts in the currency's smallest unit as Stripe
takes them. It answers the SDK's objects; for anything it does not cover, use `client`.

A customer's currency is Stripe's: fixed by its first subscription, invoice item or balance
transaction (a customer billed in EUR is one subscribed to a EUR price). Payments use
Stripe's test payment methods (`pm_card_visa` succeeds; `pm_card_chargeCustomerFail`
attaches and then declines; `pm_card_chargeDeclined` is declined as soon as it is used).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

import stripe

Interval = Literal["day", "week", "month", "year"]
ProrationBehavior = Literal["create_prorations", "always_invoice", "none"]
CollectionMethod = Literal["charge_automatically", "send_invoice"]
PaymentBehavior = Literal["allow_incomplete", "default_incomplete", "error_if_incomplete"]
TEST_CARD = "pm_card_visa"
DAYS_UNTIL_DUE = 30


class BillingDriver:
    def __init__(
        self, client: stripe.StripeClient, *, http: stripe.HTTPXClient | None = None
    ) -> None:
        self.client = client
        self._http = http  # closed by aclose() when the driver made it

    async def __aenter__(self) -> BillingDriver:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close_async()

    @classmethod
    def connect(
        cls,
        api_key: str,
        base_url: str | None = None,
        *,
        timeout: float = 10.0,
        max_network_retries: int = 0,
    ) -> BillingDriver:
        """A driver of the billing at `base_url` (None: Stripe itself)."""
        addresses: Any = {"api": base_url} if base_url else {}
        http = stripe.HTTPXClient(timeout=timeout)
        client = stripe.StripeClient(
            api_key,
            base_addresses=addresses,
            max_network_retries=max_network_retries,
            http_client=http,
            # The version the SDK's typed models describe, whatever the account's default is.
            stripe_version=stripe.api_version,
        )
        return cls(client, http=http)

    @staticmethod
    def _key(idempotency_key: str) -> Any:
        return {"idempotency_key": idempotency_key}

    # customers ---------------------------------------------------------------------------

    async def create_customer(
        self,
        name: str,
        *,
        idempotency_key: str,
        email: str | None = None,
        description: str | None = None,
        metadata: Mapping[str, str] | None = None,
        address: Mapping[str, str] | None = None,
    ) -> stripe.Customer:
        params: Any = {"name": name}
        optional = {
            "email": email,
            "description": description,
            "metadata": dict(metadata) if metadata else None,
            "address": dict(address) if address else None,
        }
        params.update({k: v for k, v in optional.items() if v is not None})
        return await self.client.v1.customers.create_async(params, self._key(idempotency_key))

    async def update_customer(
        self, customer_id: str, *, idempotency_key: str, **changes: Any
    ) -> stripe.Customer:
        """Change the named fields only; a metadata value of "" removes that key."""
        params: Any = changes
        return await self.client.v1.customers.update_async(
            customer_id, params, self._key(idempotency_key)
        )

    async def delete_customer(self, customer_id: str) -> stripe.Customer:
        return await self.client.v1.customers.delete_async(customer_id)

    async def customers(self, *, email: str | None = None) -> AsyncIterator[stripe.Customer]:
        """Every customer (with that email), newest first, page by page as they are read."""
        params: Any = {"limit": 100, **({"email": email} if email else {})}
        page = await self.client.v1.customers.list_async(params)
        async for customer in page.auto_paging_iter():
            yield customer

    async def balance(self, customer_id: str) -> tuple[int, str | None]:
        """What the customer is owed (negative) or owes, in minor units, and its currency
        (None until billing has fixed one)."""
        customer = await self.client.v1.customers.retrieve_async(customer_id)
        return customer.balance or 0, customer.currency

    # catalog -----------------------------------------------------------------------------

    async def create_product(self, name: str, *, idempotency_key: str) -> stripe.Product:
        return await self.client.v1.products.create_async(
            {"name": name}, self._key(idempotency_key)
        )

    async def create_price(
        self,
        product_id: str,
        unit_amount: int,
        currency: str,
        *,
        idempotency_key: str,
        interval: Interval | None = "month",
        interval_count: int = 1,
        nickname: str | None = None,
    ) -> stripe.Price:
        """A price of `unit_amount` minor units, recurring every `interval_count` `interval`s
        or one-time when `interval` is None."""
        params: Any = {
            "product": product_id,
            "unit_amount": unit_amount,
            "currency": currency.lower(),
        }
        if interval is not None:
            params["recurring"] = {"interval": interval, "interval_count": interval_count}
        if nickname is not None:
            params["nickname"] = nickname
        return await self.client.v1.prices.create_async(params, self._key(idempotency_key))

    async def create_tax_rate(
        self,
        display_name: str,
        percentage: str | float,
        *,
        inclusive: bool,
        idempotency_key: str,
        jurisdiction: str | None = None,
        country: str | None = None,
        tax_type: str | None = None,
    ) -> stripe.TaxRate:
        """A tax rate (`percentage` as a decimal string, e.g. "20" or "8.875")."""
        params: Any = {
            "display_name": display_name,
            "percentage": str(percentage),
            "inclusive": inclusive,
        }
        optional = {"jurisdiction": jurisdiction, "country": country, "tax_type": tax_type}
        params.update({k: v for k, v in optional.items() if v is not None})
        return await self.client.v1.tax_rates.create_async(params, self._key(idempotency_key))

    # payment methods ---------------------------------------------------------------------

    async def attach_payment_method(
        self,
        customer_id: str,
        payment_method: str = TEST_CARD,
        *,
        idempotency_key: str,
        make_default: bool = True,
    ) -> stripe.PaymentMethod:
        """Attach a payment method (a test token makes a new `pm_...`) and, by default, make
        it the customer's default for invoices and subscriptions."""
        method = await self.client.v1.payment_methods.attach_async(
            payment_method, {"customer": customer_id}, self._key(f"{idempotency_key}/attach")
        )
        if make_default:
            await self.set_default_payment_method(
                customer_id, str(method.id), idempotency_key=f"{idempotency_key}/default"
            )
        return method

    async def set_default_payment_method(
        self, customer_id: str, payment_method_id: str, *, idempotency_key: str
    ) -> stripe.Customer:
        params: Any = {"invoice_settings": {"default_payment_method": payment_method_id}}
        return await self.client.v1.customers.update_async(
            customer_id, params, self._key(idempotency_key)
        )

    # subscriptions -----------------------------------------------------------------------

    async def subscribe(
        self,
        customer_id: str,
        price_id: str,
        *,
        idempotency_key: str,
        quantity: int = 1,
        collection_method: CollectionMethod | None = None,
        payment_method: str | None = None,
        tax_rates: list[str] | None = None,
        default_tax_rates: list[str] | None = None,
        payment_behavior: PaymentBehavior | None = None,
    ) -> stripe.Subscription:
        """Subscribe the customer to one price; billing invoices the first period at once.

        Charged automatically when a `payment_method` (attached to the customer) is given or
        `collection_method="charge_automatically"` is asked (then the customer's default
        pays; Stripe refuses when there is none); otherwise billed by invoice, due in
        30 days, and paid later with `pay`. `tax_rates` apply to the item,
        `default_tax_rates` to the whole subscription."""
        item: dict[str, Any] = {"price": price_id, "quantity": quantity}
        if tax_rates:
            item["tax_rates"] = tax_rates
        params: Any = {"customer": customer_id, "items": [item]}
        method = collection_method or ("charge_automatically" if payment_method else "send_invoice")
        params["collection_method"] = method
        if method == "send_invoice":
            params["days_until_due"] = DAYS_UNTIL_DUE
        if payment_method is not None:
            params["default_payment_method"] = payment_method
        if default_tax_rates:
            params["default_tax_rates"] = default_tax_rates
        if payment_behavior is not None:
            params["payment_behavior"] = payment_behavior
        return await self.client.v1.subscriptions.create_async(params, self._key(idempotency_key))

    async def change_plan(
        self,
        subscription_id: str,
        *,
        idempotency_key: str,
        price_id: str | None = None,
        quantity: int | None = None,
        proration_behavior: ProrationBehavior = "create_prorations",
        proration_date: int | None = None,
    ) -> stripe.Subscription:
        """Move the subscription's single item to another price and/or quantity, prorated as
        of `proration_date` (unix seconds; default now)."""
        if price_id is None and quantity is None:
            raise ValueError("give a new price_id, a new quantity, or both")
        current = await self.client.v1.subscriptions.retrieve_async(subscription_id)
        items = current["items"].data
        if len(items) != 1:
            raise ValueError(f"subscription {subscription_id} has {len(items)} items, not one")
        item: dict[str, Any] = {"id": items[0].id}
        if price_id is not None:
            item["price"] = price_id
        if quantity is not None:
            item["quantity"] = quantity
        params: Any = {"items": [item], "proration_behavior": proration_behavior}
        if proration_date is not None:
            params["proration_date"] = proration_date
        return await self.client.v1.subscriptions.update_async(
            subscription_id, params, self._key(idempotency_key)
        )

    async def cancel(
        self, subscription_id: str, *, prorate: bool = False, invoice_now: bool = False
    ) -> stripe.Subscription:
        """Cancel now; with `prorate` the unused time is credited, with `invoice_now` on a
        final invoice. Stripe takes no idempotency key here: a subscription that is already
        canceled is answered as it is."""
        try:
            return await self.client.v1.subscriptions.cancel_async(
                subscription_id, {"prorate": prorate, "invoice_now": invoice_now}
            )
        except stripe.InvalidRequestError:
            current = await self.client.v1.subscriptions.retrieve_async(subscription_id)
            if current.status != "canceled":
                raise
            return current

    # invoices ----------------------------------------------------------------------------

    async def add_invoice_item(
        self,
        customer_id: str,
        amount: int,
        currency: str,
        description: str,
        *,
        idempotency_key: str,
        subscription_id: str | None = None,
        product_id: str | None = None,
    ) -> stripe.InvoiceItem:
        """A pending item of `amount` minor units (negative: a credit) for the next invoice;
        sold as `product_id` when given (through a one-time price of that amount, as Stripe
        names an item's product), else a custom line naming no product."""
        params: Any = {"customer": customer_id, "description": description}
        if product_id is None:
            params.update({"amount": amount, "currency": currency.lower()})
        else:
            price = await self.create_price(
                product_id, amount, currency, interval=None,
                idempotency_key=f"{idempotency_key}/price",
            )  # fmt: skip
            params["pricing"] = {"price": price.id}
        if subscription_id is not None:
            params["subscription"] = subscription_id
        return await self.client.v1.invoice_items.create_async(params, self._key(idempotency_key))

    async def invoice_pending_items(
        self, customer_id: str, *, idempotency_key: str, subscription_id: str | None = None
    ) -> stripe.Invoice:
        """A draft invoice holding the customer's pending items (only the subscription's
        when one is named)."""
        params: Any = {
            "customer": customer_id,
            "pending_invoice_items_behavior": "include",
        }
        if subscription_id is not None:
            params["subscription"] = subscription_id
        return await self.client.v1.invoices.create_async(params, self._key(idempotency_key))

    async def charge_once(
        self,
        customer_id: str,
        amount: int,
        currency: str,
        description: str,
        *,
        key: str,
        product_id: str | None = None,
    ) -> stripe.Invoice:
        """An open invoice of one line of `amount` minor units (of `product_id` when given);
        each step's idempotency key is `key` with the step appended."""
        await self.add_invoice_item(
            customer_id, amount, currency, description, idempotency_key=f"{key}/item",
            product_id=product_id,
        )  # fmt: skip
        draft = await self.invoice_pending_items(customer_id, idempotency_key=f"{key}/draft")
        return await self.finalize(str(draft.id), idempotency_key=f"{key}/finalize")

    async def finalize(self, invoice_id: str, *, idempotency_key: str) -> stripe.Invoice:
        return await self.client.v1.invoices.finalize_invoice_async(
            invoice_id, None, self._key(idempotency_key)
        )

    async def pay(
        self,
        invoice_id: str,
        *,
        idempotency_key: str,
        paid_out_of_band: bool = False,
        payment_method: str | None = TEST_CARD,
    ) -> stripe.Invoice:
        """Pay what remains on the invoice: with `payment_method` (by default Stripe's test
        Visa; None: the invoice's, subscription's or customer's default), or recorded as
        paid outside Stripe. A declined card raises `stripe.CardError`."""
        params: Any = {}
        if paid_out_of_band:
            params["paid_out_of_band"] = True
        elif payment_method is not None:
            params["payment_method"] = payment_method
        return await self.client.v1.invoices.pay_async(
            invoice_id, params or None, self._key(idempotency_key)
        )

    async def pay_part(
        self,
        invoice_id: str,
        amount: int,
        *,
        idempotency_key: str,
        payment_method: str = TEST_CARD,
    ) -> stripe.Invoice:
        """A partial payment as Stripe models it: a confirmed PaymentIntent of `amount` for
        the invoice's customer, then attached to the invoice."""
        invoice = await self.client.v1.invoices.retrieve_async(invoice_id)
        intent_params: Any = {
            "amount": amount,
            "currency": invoice.currency,
            "customer": invoice.customer,
            "payment_method": payment_method,
            "confirm": True,
            "payment_method_types": ["card"],
        }
        intent = await self.client.v1.payment_intents.create_async(
            intent_params, self._key(f"{idempotency_key}/intent")
        )
        attach: Any = {"payment_intent": intent.id}
        return await self.client.v1.invoices.attach_payment_async(
            invoice_id, attach, self._key(f"{idempotency_key}/attach")
        )

    async def invoice_payments(self, invoice_id: str) -> list[stripe.InvoicePayment]:
        """The invoice's payments, oldest first."""
        page = await self.client.v1.invoice_payments.list_async(
            {"invoice": invoice_id, "limit": 100}
        )
        return list(reversed([p async for p in page.auto_paging_iter()]))

    async def refund(
        self,
        *,
        idempotency_key: str,
        charge_id: str | None = None,
        payment_intent_id: str | None = None,
        amount: int | None = None,
        reason: Literal["duplicate", "fraudulent", "requested_by_customer"] | None = None,
    ) -> stripe.Refund:
        """Give back `amount` minor units (default: all that is left) of a charge or of a
        payment intent's charge."""
        if (charge_id is None) == (payment_intent_id is None):
            raise ValueError("give exactly one of charge_id or payment_intent_id")
        params: Any = (
            {"charge": charge_id}
            if charge_id is not None
            else {"payment_intent": payment_intent_id}
        )
        if amount is not None:
            params["amount"] = amount
        if reason is not None:
            params["reason"] = reason
        return await self.client.v1.refunds.create_async(params, self._key(idempotency_key))

    async def void(self, invoice_id: str, *, idempotency_key: str) -> stripe.Invoice:
        return await self.client.v1.invoices.void_invoice_async(
            invoice_id, None, self._key(idempotency_key)
        )

    async def mark_uncollectible(self, invoice_id: str, *, idempotency_key: str) -> stripe.Invoice:
        return await self.client.v1.invoices.mark_uncollectible_async(
            invoice_id, None, self._key(idempotency_key)
        )

    async def credit_notes(self, invoice_id: str) -> list[stripe.CreditNote]:
        """The invoice's credit notes, newest first."""
        page = await self.client.v1.credit_notes.list_async({"invoice": invoice_id, "limit": 100})
        return [note async for note in page.auto_paging_iter()]
