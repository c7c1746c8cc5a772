"""StripeBilling: the BillingSystem port over Stripe's official SDK (or the local sandbox).

`stripe.StripeClient`'s async methods over its HTTPX client, with the API version pinned, the
SDK's network retries off (Temporal retries the activity), an explicit Idempotency-Key on every
write (built by the workflow; never invented here or by the SDK, or each activity retry would
be a new write), and every failure mapped once by `adapters.errors.error_from_stripe`. Answers
are read as the JSON Stripe sent (`to_dict(for_json=True)`), the same shapes a webhook carries,
so one set of mapping functions serves both. Amounts cross this boundary as integer minor units
and nowhere else: `Money.from_minor` in, `Money.to_minor` out.
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import httpx
import pydantic
import stripe
import structlog

from adapters.errors import AdapterError, NotFoundError, error_for_status, error_from_stripe
from canonical import (
    BalanceTransaction,
    BillingDocument,
    Customer,
    DocumentLine,
    Money,
    PostalAddress,
    Subscription,
    SubscriptionItem,
)
from canonical.reconciliation import BalanceCreditPage, BillingDocumentPage

if TYPE_CHECKING:
    from stripe.params import (
        CreditNoteCreateParams,
        CreditNoteCreateParamsLine,
        CustomerBalanceTransactionCreateParams,
    )

    from adapters.ports import BillingSystem

# Off: it would send our request ids, timings and the host's platform to Stripe on every call.
stripe.enable_telemetry = False

SYSTEM = "billing"
# The API version the mapping below is written against; pinned so an account upgrade in
# the Stripe dashboard cannot change the shapes we read.
STRIPE_API_VERSION = "2026-10-28.endive"
ADDRESS_FIELDS = ("line1", "line2", "city", "postal_code", "state", "country")
# Stripe has no currency parameter on customers (the first subscription, invoice or balance
# transaction fixes it), so the currency asked for at creation waits in this metadata key.
INTENDED_CURRENCY_KEY = "ledgerbridge_currency"
# Every credit note we create carries its Idempotency-Key in this metadata key: a retry whose
# first answer was lost can then find it even where billing would refuse a new one.
IDEMPOTENCY_KEY_METADATA = "ledgerbridge_idempotency_key"
# Stripe's ids: a kind prefix, then letters, digits and underscores (never '/', '.', '?').
STRIPE_ID = re.compile(r"[A-Za-z0-9_]{1,255}")

logger = structlog.get_logger(__name__)

T = TypeVar("T")
# One page of a Stripe list: `await list_call(params=...)`.
ListCall = Callable[..., Awaitable[stripe.ListObject[Any]]]


def customer_from_stripe(data: Mapping[str, Any]) -> Customer:
    """Stripe customer JSON -> canonical Customer (also for `data.object` in webhooks)."""
    customer_id = str(data["id"])
    email = data.get("email") or None
    address = data.get("address")
    postal = None
    if isinstance(address, Mapping) and any(address.get(f) for f in ADDRESS_FIELDS):
        postal = PostalAddress(**{f: address.get(f) or None for f in ADDRESS_FIELDS})
    metadata = data.get("metadata")
    intended = metadata.get(INTENDED_CURRENCY_KEY) if isinstance(metadata, Mapping) else None
    # Stripe's own currency wins once it is fixed; until then, the one we asked for.
    currency = data.get("currency") or intended
    return Customer(
        customer_id=customer_id,
        # A deleted customer comes back as {id, object, deleted}; name is required here.
        name=(data.get("name") or email or customer_id)[:200],
        email=email,
        currency=currency.upper() if currency else None,
        address=postal,
        deleted=bool(data.get("deleted", False)),
    )


def _timestamp(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value is not None else None


def _day(value: Any) -> date | None:
    moment = _timestamp(value)
    return moment.date() if moment is not None else None


def _id_of(value: Any) -> str | None:
    """An id whether Stripe answered it bare or expanded into its object."""
    if isinstance(value, Mapping):
        found = value.get("id")
        return str(found) if found is not None else None
    return str(value) if value is not None else None


def _nested(data: Mapping[str, Any], *path: str) -> Any:
    """data[a][b]... or None where a level is missing or not an object."""
    value: Any = data
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def invoice_subscription_id(invoice: Mapping[str, Any]) -> str | None:
    """The subscription that billed an invoice: `parent.subscription_details.subscription`
    (the top-level `subscription` left the invoice in API version 2025-03-31)."""
    return _id_of(_nested(invoice, "parent", "subscription_details", "subscription"))


def _line_is_proration(line: Mapping[str, Any]) -> bool:
    """`parent.*_details.proration` (the line's own `proration` left in 2025-03-31)."""
    return any(
        _nested(line, "parent", details, "proration")
        for details in ("subscription_item_details", "invoice_item_details")
    )


def _line_price_id(line: Mapping[str, Any]) -> str | None:
    return _id_of(_nested(line, "pricing", "price_details", "price"))


def _quantity_and_unit(
    amount_minor: int, quantity: Any, unit_minor: Any, currency: str
) -> tuple[Decimal, Money]:
    """A line's quantity and unit amount such that quantity * unit == amount, always.

    Lines whose amount is not a whole number of units (prorations: a fraction of a period)
    read as one unit of their amount; the quantity they prorated stays in the description.
    """
    count = int(quantity) if quantity else 1
    if unit_minor is not None:
        unit = Decimal(str(unit_minor))
        if unit == unit.to_integral_value() and int(unit) * count == amount_minor:
            return Decimal(count), Money.from_minor(int(unit), currency)
    return Decimal(1), Money.from_minor(amount_minor, currency)


def invoice_line_from_stripe(line: Mapping[str, Any], currency: str) -> DocumentLine:
    """One Stripe invoice line item -> DocumentLine (a proration credit stays negative)."""
    amount = int(line["amount"])
    proration = _line_is_proration(line)
    unit_minor = None if proration else _nested(line, "pricing", "unit_amount_decimal")
    quantity, unit_amount = _quantity_and_unit(amount, line.get("quantity"), unit_minor, currency)
    period = line.get("period")
    if not isinstance(period, Mapping):
        period = {}
    return DocumentLine(
        line_id=str(line["id"]),
        description=str(line.get("description") or ""),
        quantity=quantity,
        unit_amount=unit_amount,
        amount=Money.from_minor(amount, currency),
        proration=proration,
        price_id=_line_price_id(line),
        period_start=_day(period.get("start")),
        period_end=_day(period.get("end")),
    )


def invoice_from_stripe(
    data: Mapping[str, Any], lines: Sequence[Mapping[str, Any]] | None = None
) -> BillingDocument:
    """Stripe invoice JSON -> BillingDocument(kind="invoice"). `lines` are all the invoice's
    lines when the embedded first page was not all of them."""
    currency = str(data["currency"]).upper()
    raw_lines = lines if lines is not None else (data.get("lines") or {}).get("data") or []
    transitions = data.get("status_transitions") or {}
    remaining = data.get("amount_remaining")
    return BillingDocument(
        document_id=str(data["id"]),
        kind="invoice",
        status=data["status"],
        number=data.get("number"),
        customer_id=str(_id_of(data["customer"])),
        subscription_id=invoice_subscription_id(data),
        billing_reason=data.get("billing_reason"),
        currency=currency,
        lines=[invoice_line_from_stripe(line, currency) for line in raw_lines],
        subtotal=Money.from_minor(int(data["subtotal"]), currency),
        tax=Money.from_minor(_exclusive_tax(data), currency),
        total=Money.from_minor(int(data["total"]), currency),
        amount_remaining=(
            Money.from_minor(int(remaining), currency) if remaining is not None else None
        ),
        created_at=datetime.fromtimestamp(int(data["created"]), UTC),
        finalized_at=_timestamp(transitions.get("finalized_at")),
        voided_at=_timestamp(transitions.get("voided_at")),
    )


def _exclusive_tax(invoice: Mapping[str, Any]) -> int:
    """The tax added on top of the subtotal (`total_taxes`, exclusive ones: inclusive tax is
    already inside the subtotal), so subtotal + tax is the total before discounts."""
    return sum(
        int(tax["amount"])
        for tax in invoice.get("total_taxes") or []
        if tax.get("tax_behavior") == "exclusive"
    )


def credit_note_from_stripe(
    data: Mapping[str, Any],
    lines: Sequence[Mapping[str, Any]] | None = None,
    *,
    subscription_id: str | None = None,
) -> BillingDocument:
    """Stripe credit note JSON -> BillingDocument(kind="credit_note"): positive amounts
    credited; `billing_reason` carries the credit note's `reason`; issued = finalized."""
    currency = str(data["currency"]).upper()
    raw_lines = lines if lines is not None else (data.get("lines") or {}).get("data") or []
    document_lines = []
    for line in raw_lines:
        amount = int(line["amount"])
        quantity, unit_amount = _quantity_and_unit(
            amount, line.get("quantity"), line.get("unit_amount"), currency
        )
        document_lines.append(
            DocumentLine(
                line_id=str(line["id"]),
                description=str(line.get("description") or ""),
                quantity=quantity,
                unit_amount=unit_amount,
                amount=Money.from_minor(amount, currency),
            )
        )
    created = datetime.fromtimestamp(int(data["created"]), UTC)
    return BillingDocument(
        document_id=str(data["id"]),
        kind="credit_note",
        status=data["status"],
        number=data.get("number"),
        customer_id=str(_id_of(data["customer"])),
        subscription_id=subscription_id,
        invoice_id=_id_of(data.get("invoice")),
        billing_reason=data.get("reason"),
        currency=currency,
        lines=document_lines,
        subtotal=Money.from_minor(int(data["subtotal"]), currency),
        tax=Money.from_minor(int(data["total"]) - int(data["subtotal"]), currency),
        total=Money.from_minor(int(data["total"]), currency),
        created_at=created,
        finalized_at=_timestamp(data.get("effective_at")) or created,
        voided_at=_timestamp(data.get("voided_at")),
    )


def subscription_from_stripe(data: Mapping[str, Any]) -> Subscription:
    """Stripe subscription JSON -> Subscription. Item descriptions are the product names
    when `items.data.price.product` was expanded, else the price nickname or product id."""
    currency = str(data["currency"]).upper()
    items = []
    for item in (data.get("items") or {}).get("data") or []:
        price = item["price"]
        product = price.get("product")
        product_id = str(_id_of(product))
        name = product.get("name") if isinstance(product, Mapping) else None
        recurring = price.get("recurring") or {}
        items.append(
            SubscriptionItem(
                item_id=str(item["id"]),
                price_id=str(price["id"]),
                product_id=product_id,
                description=str(name or price.get("nickname") or product_id),
                quantity=int(item.get("quantity") or 0),
                unit_amount=Money.from_minor(int(price["unit_amount"]), currency),
                interval=recurring.get("interval", "month"),
                interval_count=int(recurring.get("interval_count") or 1),
            )
        )
    raw_items = (data.get("items") or {}).get("data") or []
    # The period is on each item since API version 2025-03-31 (no longer on the subscription).
    period_start = min(int(item["current_period_start"]) for item in raw_items)
    period_end = max(int(item["current_period_end"]) for item in raw_items)
    return Subscription(
        subscription_id=str(data["id"]),
        customer_id=str(_id_of(data["customer"])),
        status=data["status"],
        currency=currency,
        items=items,
        current_period_start=datetime.fromtimestamp(period_start, UTC),
        current_period_end=datetime.fromtimestamp(period_end, UTC),
        cancel_at_period_end=bool(data.get("cancel_at_period_end")),
        canceled_at=_timestamp(data.get("canceled_at")),
        created_at=datetime.fromtimestamp(int(data["created"]), UTC),
    )


def balance_transaction_from_stripe(data: Mapping[str, Any]) -> BalanceTransaction:
    currency = str(data["currency"]).upper()
    return BalanceTransaction(
        transaction_id=str(data["id"]),
        customer_id=str(_id_of(data["customer"])),
        amount=Money.from_minor(int(data["amount"]), currency),
        ending_balance=Money.from_minor(int(data["ending_balance"]), currency),
        description=data.get("description"),
        invoice_id=_id_of(data.get("invoice")),
        credit_note_id=_id_of(data.get("credit_note")),
        created_at=datetime.fromtimestamp(int(data["created"]), UTC),
        kind=data.get("type"),
        metadata=_metadata(data.get("metadata")),
    )


def _metadata(value: Any) -> dict[str, str]:
    """Stripe metadata as text keys and values (Stripe stores strings; None is no metadata)."""
    if not isinstance(value, Mapping):
        return {}
    return {str(key): str(item) for key, item in value.items()}


class _ForeignAnswer(Exception):
    def __init__(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        super().__init__(f"HTTP {status}")
        self.status, self.headers, self.body = status, headers, body


class _StripeHTTPClient(stripe.HTTPXClient):
    """The SDK's HTTPX client with one check it lacks: an error answer whose `error` is not
    Stripe's error object (a gateway or proxy in front of billing) makes the SDK fail reading
    it (AttributeError), so such an answer is raised as it is, to be taken by its status."""

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        content, status, answered = await super().request_async(method, url, headers, post_data)
        if status >= 400 and _foreign_error(content):
            raise _ForeignAnswer(status, answered, content)
        return content, status, answered


def _foreign_error(content: bytes) -> bool:
    """JSON whose `error` is there but not an object; what is not JSON the SDK reports itself."""
    try:
        body = json.loads(content)
    except ValueError:
        return False
    return isinstance(body, dict) and "error" in body and not isinstance(body["error"], dict)


class StripeBilling:
    """The billing platform, spoken to through the official stripe SDK. One pooled HTTP
    client per instance."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 10.0) -> None:
        self._http = _StripeHTTPClient(timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)))
        self._stripe = stripe.StripeClient(
            api_key,
            stripe_version=STRIPE_API_VERSION,
            base_addresses={"api": base_url.rstrip("/")},
            max_network_retries=0,
            http_client=self._http,
        )
        self._v1 = self._stripe.v1

    async def __aenter__(self) -> StripeBilling:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.close_async()

    # customers ---------------------------------------------------------------------------

    async def get_customer(self, customer_id: str) -> Customer:
        """The customer as billing knows it now (a deleted one reads as `deleted`)."""
        operation = "get_customer"
        customer_id = _checked_id(customer_id, "cus_", operation)
        data = await self._call(operation, self._v1.customers.retrieve_async(customer_id))
        return self._mapped(customer_from_stripe, data, operation)

    # subscriptions -----------------------------------------------------------------------

    # Product names for SubscriptionItem.description (four levels: Stripe's expansion limit).
    _SUBSCRIPTION_EXPAND = "items.data.price.product"

    async def get_subscription(self, subscription_id: str) -> Subscription:
        operation = "get_subscription"
        subscription_id = _checked_id(subscription_id, "sub_", operation)
        data = await self._call(
            operation,
            self._v1.subscriptions.retrieve_async(
                subscription_id, params={"expand": [self._SUBSCRIPTION_EXPAND]}
            ),
        )
        return self._mapped(subscription_from_stripe, data, operation)

    async def active_subscription(self, customer_id: str) -> Subscription | None:
        """The customer's newest active (or trialing, past-due) subscription, if any."""
        operation = "active_subscription"
        page = await self._call(
            operation,
            self._v1.subscriptions.list_async(
                params={
                    "customer": customer_id,
                    "limit": 10,
                    "expand": [f"data.{self._SUBSCRIPTION_EXPAND}"],
                }
            ),
        )
        for data in page.get("data") or []:
            if data.get("status") in ("active", "trialing", "past_due"):
                return self._mapped(subscription_from_stripe, data, operation)
        return None

    # invoices ----------------------------------------------------------------------------

    async def get_invoice(self, invoice_id: str) -> BillingDocument:
        operation = "get_invoice"
        invoice_id = _checked_id(invoice_id, "in_", operation)
        data = await self._call(operation, self._v1.invoices.retrieve_async(invoice_id))
        return await self._invoice(data, operation)

    async def list_invoices(
        self,
        *,
        customer_id: str | None = None,
        subscription_id: str | None = None,
        status: str | None = None,
        created_from: datetime | None = None,
        created_until: datetime | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[BillingDocument]:
        """Invoices, newest first, following cursor pages (created_until is exclusive)."""
        params = {
            "limit": page_size,
            "customer": customer_id,
            "subscription": subscription_id,
            "status": status,
            "created": _created_range(created_from, created_until),
        }
        async for item in self._pages(self._v1.invoices.list_async, params, "list_invoices"):
            yield await self._invoice(item, "list_invoices")

    # credit notes ------------------------------------------------------------------------

    async def get_credit_note(self, credit_note_id: str) -> BillingDocument:
        operation = "get_credit_note"
        credit_note_id = _checked_id(credit_note_id, "cn_", operation)
        data = await self._call(operation, self._v1.credit_notes.retrieve_async(credit_note_id))
        return await self._credit_note(data, operation)

    async def create_credit_note(
        self,
        invoice_id: str,
        amount: Money,
        description: str,
        reason: Literal["duplicate", "fraudulent", "order_change", "product_unsatisfactory"] | None,
        idempotency_key: str,
        *,
        invoice_line_id: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> BillingDocument:
        """Credit `amount` on a finalized invoice: against one of its lines when
        `invoice_line_id` is given, else as a custom line. On an open invoice it reduces
        what is due; on a paid one billing credits the customer balance. Billing refuses
        (RejectedError) drafts, void invoices and more than is left to credit. `metadata`
        is stored on the credit note in billing (BillingDocument does not carry it), with
        the idempotency key (see `find_credit_note`)."""
        operation = "create_credit_note"
        invoice_id = _checked_id(invoice_id, "in_", operation)
        if amount.amount <= 0:
            raise ValueError("a credit note credits a positive amount")
        line: CreditNoteCreateParamsLine
        if invoice_line_id is not None:
            line = {
                "type": "invoice_line_item",
                "invoice_line_item": invoice_line_id,
                "amount": amount.to_minor(),
                "description": description,
            }
        else:
            line = {
                "type": "custom_line_item",
                "unit_amount": amount.to_minor(),
                "quantity": 1,
                "description": description,
            }
        invoice = await self._call(operation, self._v1.invoices.retrieve_async(invoice_id))
        if str(invoice.get("currency", "")).upper() != amount.currency:
            raise ValueError(
                f"invoice {invoice_id} is in {str(invoice.get('currency')).upper()}, "
                f"the credit in {amount.currency}"
            )
        params: CreditNoteCreateParams = {
            "invoice": invoice_id,
            "lines": [line],
            "metadata": {**(metadata or {}), IDEMPOTENCY_KEY_METADATA: idempotency_key},
        }
        if reason is not None:
            params["reason"] = reason
        data = await self._call(
            operation,
            self._v1.credit_notes.create_async(params=params, options=_write(idempotency_key)),
        )
        return await self._credit_note(data, operation, invoice=invoice)

    async def find_credit_note(
        self, invoice_id: str, idempotency_key: str
    ) -> BillingDocument | None:
        """The credit note `create_credit_note` made on the invoice with this idempotency key,
        if any: after a lost answer the invoice may be settled by it, and billing would refuse
        the retry's new one before it looked at the key."""
        operation = "find_credit_note"
        params = {"invoice": invoice_id, "limit": 100}
        async for item in self._pages(self._v1.credit_notes.list_async, params, operation):
            if _nested(item, "metadata", IDEMPOTENCY_KEY_METADATA) == idempotency_key:
                return await self._credit_note(item, operation)
        return None

    async def void_credit_note(
        self, credit_note_id: str, *, idempotency_key: str
    ) -> BillingDocument:
        operation = "void_credit_note"
        credit_note_id = _checked_id(credit_note_id, "cn_", operation)
        data = await self._call(
            operation,
            self._v1.credit_notes.void_credit_note_async(
                credit_note_id, options=_write(idempotency_key)
            ),
        )
        return await self._credit_note(data, operation)

    # customer balance --------------------------------------------------------------------

    async def create_balance_credit(
        self,
        customer_id: str,
        amount: Money,
        description: str,
        idempotency_key: str,
        *,
        metadata: dict[str, str] | None = None,
    ) -> BalanceTransaction:
        """Credit the customer's balance by `amount` (positive): billing applies it to the
        next finalized invoice. Stripe records it as a negative balance transaction;
        `metadata` (e.g. the support case) is stored on it."""
        if amount.amount <= 0:
            raise ValueError("a balance credit is a positive amount")
        return await self._balance_transaction(
            customer_id, -amount.to_minor(), amount.currency, description, idempotency_key,
            "create_balance_credit", metadata,
        )  # fmt: skip

    async def reverse_balance_credit(
        self,
        customer_id: str,
        amount: Money,
        description: str,
        idempotency_key: str,
        *,
        metadata: dict[str, str] | None = None,
    ) -> BalanceTransaction:
        """Take back a balance credit (compensation): a positive balance transaction."""
        if amount.amount <= 0:
            raise ValueError("the credit to reverse is a positive amount")
        return await self._balance_transaction(
            customer_id, amount.to_minor(), amount.currency, description, idempotency_key,
            "reverse_balance_credit", metadata,
        )  # fmt: skip

    async def _balance_transaction(
        self,
        customer_id: str,
        minor: int,
        currency: str,
        description: str,
        idempotency_key: str,
        operation: str,
        metadata: Mapping[str, str] | None,
    ) -> BalanceTransaction:
        customer_id = _checked_id(customer_id, "cus_", operation)
        params: CustomerBalanceTransactionCreateParams = {
            "amount": minor,
            "currency": currency.lower(),
            "description": description,
        }
        if metadata:  # an empty mapping sends nothing (`metadata=""` would unset every key)
            params["metadata"] = dict(metadata)
        data = await self._call(
            operation,
            self._v1.customers.balance_transactions.create_async(
                customer_id, params=params, options=_write(idempotency_key)
            ),
        )
        return self._mapped(balance_transaction_from_stripe, data, operation)

    # reconciliation pages ----------------------------------------------------------------
    #
    # One page of a period at a time, oldest first, with a cursor that stays valid while
    # billing keeps writing. Stripe lists newest first; `ending_before=<id>` answers the
    # documents just newer than <id>, so walking towards newer documents from the newest
    # one before the period, with the period as a `created` filter, reads each document
    # once: the cursor is the id of the newest document given so far, a document created
    # while paging lands after it (read on a later page when still inside the period) and
    # nothing already given moves. See `_oldest_first_page`.

    async def invoice_page(
        self, created_from: datetime, created_until: datetime, cursor: str | None, limit: int
    ) -> BillingDocumentPage:
        """Up to `limit` (at most 100) invoices created in [from, until), oldest first, in
        every status (drafts too), with all their lines. `cursor` is None for the first page,
        then the `next_cursor` of the page before; `next_cursor` is None on the last page.
        Pass the same period with a cursor. A draft invoice deleted in billing after it was
        given as the last of a page leaves its cursor unknown (NotFoundError): read the
        period again."""
        operation = "invoice_page"
        items, next_cursor = await self._oldest_first_page(
            self._v1.invoices.list_async, created_from, created_until, cursor, limit, operation
        )
        documents = [await self._invoice(item, operation) for item in items]
        return BillingDocumentPage(documents=documents, next_cursor=next_cursor)

    async def credit_note_page(
        self, created_from: datetime, created_until: datetime, cursor: str | None, limit: int
    ) -> BillingDocumentPage:
        """Up to `limit` (at most 100) credit notes created in [from, until), oldest first,
        issued and void, with all their lines; cursor as in `invoice_page`."""
        operation = "credit_note_page"
        items, next_cursor = await self._oldest_first_page(
            self._v1.credit_notes.list_async,
            created_from,
            created_until,
            cursor,
            limit,
            operation,
            # The credited invoice names the subscription: one list call, not one per note.
            expand=["data.invoice"],
        )
        documents = []
        for item in items:
            invoice = item.get("invoice")
            documents.append(
                await self._credit_note(
                    item, operation, invoice=invoice if isinstance(invoice, Mapping) else None
                )
            )
        return BillingDocumentPage(documents=documents, next_cursor=next_cursor)

    async def balance_credit_page(
        self,
        customer_id: str,
        created_from: datetime,
        created_until: datetime,
        cursor: str | None,
        limit: int,
    ) -> BalanceCreditPage:
        """Up to `limit` (at most 100) of the customer's balance transactions created in
        [from, until), oldest first, of every type (`kind`: adjustment, applied_to_invoice,
        credit_note...) with their metadata; cursor as in `invoice_page`."""
        operation = "balance_credit_page"
        customer_id = _checked_id(customer_id, "cus_", operation)
        items, next_cursor = await self._oldest_first_page(
            functools.partial(self._v1.customers.balance_transactions.list_async, customer_id),
            created_from,
            created_until,
            cursor,
            limit,
            operation,
        )
        transactions = [
            self._mapped(balance_transaction_from_stripe, item, operation) for item in items
        ]
        return BalanceCreditPage(transactions=transactions, next_cursor=next_cursor)

    # events ------------------------------------------------------------------------------

    async def get_event(self, event_id: str) -> dict[str, Any]:
        """One event as billing recorded it (the authority when replaying)."""
        operation = "get_event"
        event_id = _checked_id(event_id, "evt_", operation)
        return await self._call(operation, self._v1.events.retrieve_async(event_id))

    async def list_events(
        self,
        *,
        created_from: datetime,
        created_until: datetime | None = None,
        types: Sequence[str] | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[dict[str, Any]]:
        """Every event with created_from <= created < created_until, oldest first.

        Stripe lists newest first; walking towards newer events is `ending_before` from an
        event older than the range (the newest one before `created_from`). When there is
        none, the range reaches back to the first event and is read newest first, then
        given back reversed.
        """
        operation = "list_events"
        list_call = self._v1.events.list_async
        filters: dict[str, Any] = {
            "created": _created_range(created_from, created_until),
            "types": list(types) if types else None,
        }
        anchor_page = await self._list(
            list_call,
            {"limit": 1, "created": {"lt": _whole_second(created_from)}, "types": filters["types"]},
            operation,
        )
        anchor = anchor_page.get("data") or []
        if not anchor:
            backlog = [
                e async for e in self._pages(list_call, {**filters, "limit": page_size}, operation)
            ]
            for event in reversed(backlog):
                yield event
            return
        cursor = str(anchor[0]["id"])
        while True:
            page = await self._list(
                list_call, {**filters, "limit": page_size, "ending_before": cursor}, operation
            )
            items = page.get("data") or []
            for event in reversed(items):
                yield event
            if not page.get("has_more") or not items:
                return
            cursor = str(items[0]["id"])

    # paging ------------------------------------------------------------------------------

    async def _list(
        self, list_call: ListCall, params: Mapping[str, Any], operation: str
    ) -> dict[str, Any]:
        """One page of a Stripe list; parameters that are None are not sent."""
        sent = {key: value for key, value in params.items() if value is not None}
        return await self._call(operation, list_call(params=sent))

    async def _pages(
        self, list_call: ListCall, params: Mapping[str, Any], operation: str
    ) -> AsyncIterator[dict[str, Any]]:
        """Every item of a Stripe list, newest first, page by page."""
        params = dict(params)
        while True:
            page = await self._list(list_call, params, operation)
            items = page.get("data") or []
            for item in items:
                yield item
            if not page.get("has_more") or not items:
                return
            params["starting_after"] = items[-1]["id"]

    async def _oldest_first_page(
        self,
        list_call: ListCall,
        created_from: datetime,
        created_until: datetime,
        cursor: str | None,
        limit: int,
        operation: str,
        *,
        expand: list[str] | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a Stripe list restricted to created in [from, until), oldest first,
        and the cursor of the next page (None when this is the last).

        The cursor is the id of the newest item given so far; the next page is
        `ending_before=<cursor>` (the items just newer than it, which Stripe answers newest
        first: reversed here) with `has_more` telling whether newer ones remain. The first
        page starts from the newest item created before the period. When there is none (the
        period reaches back to the first item ever), the period is read newest first once,
        keeping only the oldest `limit` items in memory.
        """
        if limit < 1:
            raise ValueError("a page holds at least one item")
        size = min(limit, 100)  # Stripe's largest page
        filters: dict[str, Any] = {
            "created": _created_range(created_from, created_until),
            "expand": expand,
        }
        if cursor is None:
            anchor_page = await self._list(
                list_call, {"created": {"lt": _whole_second(created_from)}, "limit": 1}, operation
            )
            anchor = anchor_page.get("data") or []
            if not anchor:
                return await self._oldest_by_reading_back(list_call, filters, size, operation)
            cursor = str(anchor[0]["id"])
        page = await self._list(
            list_call, {**filters, "limit": size, "ending_before": cursor}, operation
        )
        items = list(reversed(page.get("data") or []))
        if not items or not page.get("has_more"):
            return items, None
        return items, str(items[-1]["id"])

    async def _oldest_by_reading_back(
        self, list_call: ListCall, filters: dict[str, Any], size: int, operation: str
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The oldest `size` items matching `filters` (no item precedes them to start from)."""
        oldest: deque[dict[str, Any]] = deque(maxlen=size)
        seen = 0
        async for item in self._pages(list_call, {**filters, "limit": 100}, operation):
            oldest.append(item)  # newest first: what stays at the end is the oldest
            seen += 1
        items = list(reversed(oldest))
        return items, str(items[-1]["id"]) if seen > size else None

    # documents ---------------------------------------------------------------------------

    async def _all_lines(
        self, data: Mapping[str, Any], line_items: ListCall, operation: str
    ) -> list[Any]:
        """All of a document's lines: the embedded first page, then the rest by cursor."""
        embedded = data.get("lines") or {}
        lines = list(embedded.get("data") or [])
        if embedded.get("has_more") and lines:
            params = {"limit": 100, "starting_after": lines[-1]["id"]}
            async for line in self._pages(line_items, params, operation):
                lines.append(line)
        return lines

    async def _invoice(self, data: Mapping[str, Any], operation: str) -> BillingDocument:
        invoice_id = _answered_id(str(data.get("id")), "in_", operation)
        line_items = functools.partial(self._v1.invoices.line_items.list_async, invoice_id)
        lines = await self._all_lines(data, line_items, operation)
        return self._mapped(lambda d: invoice_from_stripe(d, lines), data, operation)

    async def _credit_note(
        self,
        data: Mapping[str, Any],
        operation: str,
        *,
        invoice: Mapping[str, Any] | None = None,
    ) -> BillingDocument:
        credit_note_id = _answered_id(str(data.get("id")), "cn_", operation)
        line_items = functools.partial(self._v1.credit_notes.line_items.list_async, credit_note_id)
        lines = await self._all_lines(data, line_items, operation)
        if invoice is None and data.get("invoice"):
            invoice_id = _answered_id(str(_id_of(data["invoice"])), "in_", operation)
            invoice = await self._call(operation, self._v1.invoices.retrieve_async(invoice_id))
        subscription_id = invoice_subscription_id(invoice) if invoice else None
        return self._mapped(
            lambda d: credit_note_from_stripe(d, lines, subscription_id=subscription_id),
            data,
            operation,
        )

    def _mapped(self, mapper: Callable[[Any], T], data: Mapping[str, Any], operation: str) -> T:
        try:
            return mapper(data)
        except (KeyError, TypeError, ValueError, pydantic.ValidationError) as exc:
            # Billing answered something we cannot represent; retrying will not change it.
            raise AdapterError(
                f"unmappable {data.get('object', 'object')} from billing: {exc}",
                system=SYSTEM,
                operation=operation,
                remote_answer={"id": data.get("id")} if isinstance(data, Mapping) else None,
            ) from exc

    # transport ---------------------------------------------------------------------------

    async def _call(
        self, operation: str, request: Awaitable[stripe.StripeObject]
    ) -> dict[str, Any]:
        """One Stripe call; the JSON Stripe answered, or an `adapters.errors` exception."""
        started = time.monotonic()
        try:
            answer = await request
        except stripe.StripeError as err:
            raise error_from_stripe(err, SYSTEM, operation) from err
        except _ForeignAnswer as foreign:
            raise error_for_status(
                foreign.status,
                f"billing's gateway answered HTTP {foreign.status} (not a Stripe error)",
                system=SYSTEM,
                operation=operation,
                retry_after=foreign.headers.get("retry-after"),
                remote_answer=foreign.body[:500].decode("utf-8", "replace"),
            ) from None
        response = answer.last_response
        logger.debug(
            "billing call",
            operation=operation,  # ids only: parameters (which may hold emails) are not logged
            request_id=response.request_id if response else None,
            idempotent_replay=bool(
                response and response.headers.get("idempotent-replayed") == "true"
            ),
            duration_ms=round((time.monotonic() - started) * 1000, 1),
        )
        return answer.to_dict(for_json=True)


if TYPE_CHECKING:
    # mypy proves the adapter satisfies its port.
    _port_check: type[BillingSystem] = StripeBilling


def _write(idempotency_key: str) -> stripe.RequestOptions:
    """Request options of a write: the workflow's key (the SDK would invent a new one per
    call, and a retried activity would then write twice)."""
    if not idempotency_key or not idempotency_key.strip():
        raise ValueError("every write to billing needs the workflow's idempotency key")
    return {"idempotency_key": idempotency_key}


def _checked_id(identifier: str, prefix: str, operation: str) -> str:
    """An id of Stripe's shape, or NotFoundError before any call: no such object can exist,
    and an id like '..' would otherwise reach another endpoint once the path is normalised."""
    if not (identifier.startswith(prefix) and STRIPE_ID.fullmatch(identifier)):
        raise NotFoundError(
            f"{identifier[:80]!r} is not a billing id of the form {prefix}...",
            system=SYSTEM,
            operation=operation,
        )
    return identifier


def _answered_id(identifier: str, prefix: str, operation: str) -> str:
    """An id billing itself answered, checked before it goes into a path: a malformed one is an
    answer we cannot represent (not a missing object), and retrying will not change it."""
    try:
        return _checked_id(identifier, prefix, operation)
    except NotFoundError as err:
        raise AdapterError(
            f"unmappable answer from billing: {err.message}", system=SYSTEM, operation=operation
        ) from None


def _whole_second(moment: datetime) -> int:
    """The first whole second at or after `moment`: Stripe's `created` is whole seconds, so
    created >= moment is created >= this, and created < moment is created < this."""
    if moment.tzinfo is None:
        raise ValueError("datetimes sent to billing must be timezone-aware")
    return math.ceil(moment.timestamp())


def _created_range(start: datetime | None, end: datetime | None) -> dict[str, int] | None:
    """Stripe's `created[gte]` / `created[lt]` filter (start inclusive, end exclusive)."""
    bounds = {}
    if start is not None:
        bounds["gte"] = _whole_second(start)
    if end is not None:
        bounds["lt"] = _whole_second(end)
    return bounds or None


__all__ = [
    "IDEMPOTENCY_KEY_METADATA",
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
