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
from adapters.metrics import adapter_call
from canonical import (
    BalanceTransaction,
    BillingDocument,
    Customer,
    DocumentLine,
    LinkedRefund,
    Money,
    Payment,
    PostalAddress,
    Refund,
    Settlement,
    Subscription,
    SubscriptionItem,
    TaxLine,
)
from canonical.mapping import CatalogEntry
from canonical.reconciliation import (
    BalanceCreditPage,
    BillingDocumentPage,
    BillingPaymentPage,
    BillingRefundPage,
    Receivable,
    ReceivablePage,
)

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
# The legal entity that books a customer, when billing names it (the ERP routing's first rule).
LEGAL_ENTITY_KEY = "legal_entity"
# Every credit note we create carries its Idempotency-Key in this metadata key: a retry whose
# first answer was lost can then find it even where billing would refuse a new one.
IDEMPOTENCY_KEY_METADATA = "ledgerbridge_idempotency_key"
# Stripe's ids: a kind prefix, then letters, digits and underscores (never '/', '.', '?').
STRIPE_ID = re.compile(r"[A-Za-z0-9_]{1,255}")
# How an invoice payment was made, by the kind of object behind it: a payment record is a
# payment made outside Stripe (Stripe's "paid out of band"); the others name their charge.
OUT_OF_BAND = "out_of_band"
# Tax rates by (billing URL, rate id), for the life of the process: Stripe never changes a
# rate's percentage (a new rate is made instead), so one read per rate is enough.
_TAX_RATES: dict[tuple[str, str], dict[str, Any]] = {}

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
    if not isinstance(metadata, Mapping):
        metadata = {}
    intended = metadata.get(INTENDED_CURRENCY_KEY)
    # Stripe's own currency wins once it is fixed; until then, the one we asked for.
    currency = data.get("currency") or intended
    return Customer(
        customer_id=customer_id,
        # A deleted customer comes back as {id, object, deleted}; name is required here.
        name=(data.get("name") or email or customer_id)[:200],
        email=email,
        currency=currency.upper() if currency else None,
        address=postal,
        legal_entity=metadata.get(LEGAL_ENTITY_KEY) or None,
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


def _line_product_id(line: Mapping[str, Any]) -> str | None:
    return _id_of(_nested(line, "pricing", "price_details", "product"))


def tax_rate_ids(*holders: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> set[str]:
    """The tax rate ids named by the `taxes` / `total_taxes` of documents and lines."""
    found: set[str] = set()
    for holder in holders:
        items = [holder] if isinstance(holder, Mapping) else list(holder)
        for item in items:
            for key in ("taxes", "total_taxes"):
                for tax in item.get(key) or []:
                    rate = _nested(tax, "tax_rate_details", "tax_rate")
                    if rate:
                        found.add(str(_id_of(rate)))
    return found


def tax_line_from_stripe(
    tax: Mapping[str, Any], rates: Mapping[str, Mapping[str, Any]], currency: str
) -> TaxLine:
    """One entry of a line's `taxes` or a document's `total_taxes` -> TaxLine, with the
    rate's percentage, jurisdiction and name from its TaxRate (`rates`, by id). Billing's
    own amount, never recomputed; KeyError when the rate is not in `rates`."""
    rate_id = str(_id_of(tax["tax_rate_details"]["tax_rate"]))
    rate = rates[rate_id]
    behavior = tax["tax_behavior"]
    if behavior not in ("inclusive", "exclusive"):
        raise ValueError(f"tax of rate {rate_id} has tax_behavior {behavior!r}")
    return TaxLine(
        rate_id=rate_id,
        display_name=rate.get("display_name") or None,
        jurisdiction=rate.get("jurisdiction") or None,
        # JSON gives the percentage as a number (8.875): its text is the exact figure.
        percentage=Decimal(str(rate["percentage"])),
        inclusive=behavior == "inclusive",
        taxable_amount=Money.from_minor(int(tax["taxable_amount"]), currency),
        amount=Money.from_minor(int(tax["amount"]), currency),
    )


def _tax_lines(
    taxes: Any, rates: Mapping[str, Mapping[str, Any]] | None, currency: str
) -> list[TaxLine]:
    taxes = taxes or []
    if taxes and rates is None:
        raise ValueError("taxes named without their tax rates")
    return [tax_line_from_stripe(tax, rates or {}, currency) for tax in taxes]


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


def invoice_line_from_stripe(
    line: Mapping[str, Any],
    currency: str,
    tax_rates: Mapping[str, Mapping[str, Any]] | None = None,
) -> DocumentLine:
    """One Stripe invoice line item -> DocumentLine (a proration credit stays negative), with
    its price, product and taxes per rate (`tax_rates`: the TaxRates it names, by id)."""
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
        product_id=_line_product_id(line),
        period_start=_day(period.get("start")),
        period_end=_day(period.get("end")),
        tax_lines=_tax_lines(line.get("taxes"), tax_rates, currency),
    )


def invoice_from_stripe(
    data: Mapping[str, Any],
    lines: Sequence[Mapping[str, Any]] | None = None,
    tax_rates: Mapping[str, Mapping[str, Any]] | None = None,
) -> BillingDocument:
    """Stripe invoice JSON -> BillingDocument(kind="invoice"). `lines` are all the invoice's
    lines when the embedded first page was not all of them; `tax_rates` the TaxRates its
    taxes name, by id (needed as soon as it has tax: a tax's percentage is on its rate).
    `tax` is all of its tax, inclusive and exclusive (`total_taxes`)."""
    currency = str(data["currency"]).upper()
    raw_lines = lines if lines is not None else (data.get("lines") or {}).get("data") or []
    transitions = data.get("status_transitions") or {}
    remaining = data.get("amount_remaining")
    paid = data.get("amount_paid")
    tax_lines = _tax_lines(data.get("total_taxes"), tax_rates, currency)
    return BillingDocument(
        document_id=str(data["id"]),
        kind="invoice",
        status=data["status"],
        number=data.get("number"),
        customer_id=str(_id_of(data["customer"])),
        subscription_id=invoice_subscription_id(data),
        billing_reason=data.get("billing_reason"),
        currency=currency,
        lines=[invoice_line_from_stripe(line, currency, tax_rates) for line in raw_lines],
        subtotal=Money.from_minor(int(data["subtotal"]), currency),
        tax=_tax_total(tax_lines, currency),
        total=Money.from_minor(int(data["total"]), currency),
        tax_lines=tax_lines,
        amount_paid=Money.from_minor(int(paid), currency) if paid is not None else None,
        amount_remaining=(
            Money.from_minor(int(remaining), currency) if remaining is not None else None
        ),
        created_at=datetime.fromtimestamp(int(data["created"]), UTC),
        finalized_at=_timestamp(transitions.get("finalized_at")),
        voided_at=_timestamp(transitions.get("voided_at")),
    )


def _tax_total(tax_lines: Sequence[TaxLine], currency: str) -> Money:
    """All of a document's tax: inclusive tax (already inside the subtotal) and exclusive."""
    return Money(amount=sum((t.amount.amount for t in tax_lines), Decimal(0)), currency=currency)


def credit_note_from_stripe(
    data: Mapping[str, Any],
    lines: Sequence[Mapping[str, Any]] | None = None,
    *,
    subscription_id: str | None = None,
    tax_rates: Mapping[str, Mapping[str, Any]] | None = None,
    invoice_lines: Sequence[Mapping[str, Any]] = (),
) -> BillingDocument:
    """Stripe credit note JSON -> BillingDocument(kind="credit_note"): positive amounts
    credited; `billing_reason` carries the credit note's `reason`; issued = finalized.

    A line crediting an invoice line takes that line's price and product (Stripe names them
    only on the invoice line: `invoice_lines`, the credited invoice's lines); a custom line
    has none. `tax_rates` as for invoices."""
    currency = str(data["currency"]).upper()
    raw_lines = lines if lines is not None else (data.get("lines") or {}).get("data") or []
    credited = {str(line.get("id")): line for line in invoice_lines}
    document_lines = []
    for line in raw_lines:
        amount = int(line["amount"])
        quantity, unit_amount = _quantity_and_unit(
            amount, line.get("quantity"), line.get("unit_amount"), currency
        )
        source = credited.get(str(_id_of(line.get("invoice_line_item"))), {})
        document_lines.append(
            DocumentLine(
                line_id=str(line["id"]),
                description=str(line.get("description") or ""),
                quantity=quantity,
                unit_amount=unit_amount,
                amount=Money.from_minor(amount, currency),
                price_id=_line_price_id(source),
                product_id=_line_product_id(source),
                tax_lines=_tax_lines(line.get("taxes"), tax_rates, currency),
            )
        )
    tax_lines = _tax_lines(data.get("total_taxes"), tax_rates, currency)
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
        tax=_tax_total(tax_lines, currency),
        total=Money.from_minor(int(data["total"]), currency),
        tax_lines=tax_lines,
        created_at=created,
        finalized_at=_timestamp(data.get("effective_at")) or created,
        voided_at=_timestamp(data.get("voided_at")),
        refunds=linked_refunds(data, currency),
        out_of_band_amount=(
            Money.from_minor(int(data["out_of_band_amount"]), currency)
            if data.get("out_of_band_amount")
            else None
        ),
    )


def linked_refunds(credit_note: Mapping[str, Any], currency: str) -> list[LinkedRefund]:
    """The refunds a credit note names (`refunds[]`, with the part of each that applies to
    it): made by the note, or made before and linked to it later. The pinned API version
    no longer sends the single `refund` of older versions."""
    return [
        LinkedRefund(
            refund_id=str(_id_of(entry.get("refund"))),
            amount=Money.from_minor(int(entry["amount_refunded"]), currency),
        )
        for entry in credit_note.get("refunds") or []
        if entry.get("refund")
    ]


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


def settlement_from_stripe(balance_transaction: Mapping[str, Any]) -> Settlement:
    """A charge's balance transaction -> Settlement: amount, fee and net in the account's
    currency, and the rate Stripe converted at when the charge was in another currency."""
    currency = str(balance_transaction["currency"]).upper()
    rate = balance_transaction.get("exchange_rate")
    return Settlement(
        balance_transaction_id=str(balance_transaction["id"]),
        amount=Money.from_minor(int(balance_transaction["amount"]), currency),
        fee=Money.from_minor(int(balance_transaction["fee"]), currency),
        net=Money.from_minor(int(balance_transaction["net"]), currency),
        # JSON gives the rate as a number: its text is Stripe's figure, never a float here.
        exchange_rate=Decimal(str(rate)) if rate is not None else None,
        available_on=_day(balance_transaction.get("available_on")),
    )


def payment_method_of(invoice_payment: Mapping[str, Any], charge: Mapping[str, Any] | None) -> str:
    """How the money came: the charge's payment method type (card, sepa_debit, ...), or
    `out_of_band` for a payment recorded outside Stripe (a payment record)."""
    kind = _nested(invoice_payment, "payment", "type")
    if kind == "payment_record":
        return OUT_OF_BAND
    method = _nested(charge, "payment_method_details", "type") if charge else None
    if not method:
        raise ValueError(f"invoice payment {invoice_payment.get('id')} names no charge method")
    return str(method)


def payment_from_stripe(
    data: Mapping[str, Any],
    customer_id: str,
    *,
    method: str,
    charge: Mapping[str, Any] | None = None,
) -> Payment:
    """Stripe invoice payment JSON -> Payment. The invoice payment does not name its
    customer (its invoice does) nor its method (its charge does): both come from the caller.
    `amount` is what was paid once paid, else what was asked."""
    currency = str(data["currency"]).upper()
    status = data["status"]
    paid = data.get("amount_paid")
    amount = int(paid) if status == "paid" and paid is not None else int(data["amount_requested"])
    payment_intent = _nested(data, "payment", "payment_intent")
    balance_transaction = charge.get("balance_transaction") if charge else None
    return Payment(
        payment_id=str(data["id"]),
        invoice_id=str(_id_of(data["invoice"])),
        customer_id=customer_id,
        status=status,
        amount=Money.from_minor(amount, currency),
        method=method,
        payment_intent_id=_id_of(payment_intent),
        charge_id=_id_of(charge) if charge else _id_of(_nested(data, "payment", "charge")),
        paid_at=_timestamp(_nested(data, "status_transitions", "paid_at")),
        settlement=(
            settlement_from_stripe(balance_transaction)
            if isinstance(balance_transaction, Mapping)
            else None
        ),
    )


def refund_from_stripe(
    data: Mapping[str, Any],
    customer_id: str,
    *,
    payment_id: str | None = None,
    invoice_id: str | None = None,
    credit_note_id: str | None = None,
) -> Refund:
    """Stripe refund JSON -> Refund; what it gives back (the invoice payment, its invoice)
    and the credit note that made it are found by the caller (a refund names only its
    charge and payment intent)."""
    currency = str(data["currency"]).upper()
    return Refund(
        refund_id=str(data["id"]),
        charge_id=str(_id_of(data["charge"])),
        payment_intent_id=_id_of(data.get("payment_intent")),
        payment_id=payment_id,
        invoice_id=invoice_id,
        customer_id=customer_id,
        status=data["status"],
        amount=Money.from_minor(int(data["amount"]), currency),
        reason=data.get("reason"),
        credit_note_id=credit_note_id,
        created_at=datetime.fromtimestamp(int(data["created"]), UTC),
    )


def credit_note_of_refund(credit_notes: Sequence[Mapping[str, Any]], refund_id: str) -> str | None:
    """The credit note whose `refunds[].refund` names the refund (the one that made it)."""
    for note in credit_notes:
        for entry in note.get("refunds") or []:
            if _id_of(entry.get("refund")) == refund_id:
                return str(note["id"])
    return None


def catalog_from_stripe(
    products: Sequence[Mapping[str, Any]],
    prices: Sequence[Mapping[str, Any]],
    tax_rates: Sequence[Mapping[str, Any]],
) -> list[CatalogEntry]:
    """What a finance mapping must cover: products, prices (each naming its product as
    `parent`), tax rates, and the currencies the prices charge in."""
    names = {str(p["id"]): str(p.get("name") or "") for p in products}
    entries = [
        CatalogEntry(kind="product", key=str(p["id"]), name=names[str(p["id"])],
                     active=bool(p.get("active", True)))
        for p in products
    ]  # fmt: skip
    for price in prices:
        product_id = str(_id_of(price["product"]))
        entries.append(
            CatalogEntry(
                kind="price",
                key=str(price["id"]),
                name=str(price.get("nickname") or names.get(product_id, "")),
                active=bool(price.get("active", True)),
                parent=product_id,
            )
        )
    for rate in tax_rates:
        where = f" {rate['jurisdiction']}" if rate.get("jurisdiction") else ""
        kind = "incl." if rate.get("inclusive") else "excl."
        entries.append(
            CatalogEntry(
                kind="tax_rate",
                key=str(rate["id"]),
                name=f"{rate.get('display_name') or 'Tax'}{where} "
                f"{Decimal(str(rate['percentage'])).normalize():f}% ({kind})",
                active=bool(rate.get("active", True)),
            )
        )
    currencies = sorted({str(price["currency"]).upper() for price in prices})
    entries += [CatalogEntry(kind="currency", key=c, name=c) for c in currencies]
    return entries


def receivables_from_stripe(
    customer: Mapping[str, Any], open_invoices: Sequence[Mapping[str, Any]]
) -> list[Receivable]:
    """What one customer owes per currency: the amount remaining on its open and
    uncollectible invoices, plus its balance (Stripe's sign: negative is credit owed to the
    customer). Currencies where that is zero give no row."""
    owed: dict[str, int] = {}
    for invoice in open_invoices:
        currency = str(invoice["currency"]).upper()
        owed[currency] = owed.get(currency, 0) + int(invoice.get("amount_remaining") or 0)
    balance = int(customer.get("balance") or 0)
    if balance:
        if not customer.get("currency"):
            raise ValueError(f"customer {customer.get('id')} has a balance but no currency")
        currency = str(customer["currency"]).upper()
        owed[currency] = owed.get(currency, 0) + balance
    customer_id = str(customer["id"])
    return [
        Receivable(customer_id=customer_id, amount=Money.from_minor(minor, currency))
        for currency, minor in sorted(owed.items())
        if minor
    ]


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

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`transport` replaces the network (httpx.MockTransport in unit tests of mapping
        code); contract tests reach billing over HTTP."""
        self._http = _StripeHTTPClient(timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)))
        if transport is not None:
            self._http._client_async = httpx.AsyncClient(transport=transport)
        self._stripe = stripe.StripeClient(
            api_key,
            stripe_version=STRIPE_API_VERSION,
            base_addresses={"api": base_url.rstrip("/")},
            max_network_retries=0,
            http_client=self._http,
        )
        self._v1 = self._stripe.v1
        self._base_url = base_url.rstrip("/")

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

    # money that moved: invoice payments and refunds -------------------------------------

    async def invoice_payments(self, invoice_id: str) -> list[Payment]:
        """The invoice's payments in every status, oldest first, partial ones included; for
        a charge, its method and settlement (balance transaction). NotFoundError when billing
        does not know the invoice."""
        operation = "invoice_payments"
        invoice_id = _checked_id(invoice_id, "in_", operation)
        invoice = await self._call(operation, self._v1.invoices.retrieve_async(invoice_id))
        customer_id = str(_id_of(invoice.get("customer")))
        params = {"invoice": invoice_id, "limit": 100}
        newest_first = [
            item async for item in self._pages(self._v1.invoice_payments.list_async, params,
                                               operation)
        ]  # fmt: skip
        return [
            await self._payment(item, customer_id, operation) for item in reversed(newest_first)
        ]

    async def payment_page(
        self, created_from: datetime, created_until: datetime, cursor: str | None, limit: int
    ) -> BillingPaymentPage:
        """Up to `limit` (at most 100) paid invoice payments created in [from, until), oldest
        first; cursor as in `invoice_page`. Stripe filters invoice payments by creation, not
        by payment time: one created before the period and paid in it belongs to the period
        it was created in."""
        operation = "payment_page"
        items, next_cursor = await self._oldest_first_page(
            self._v1.invoice_payments.list_async,
            created_from,
            created_until,
            cursor,
            limit,
            operation,
            where={"status": "paid"},
        )
        customers: dict[str, str] = {}
        payments = []
        for item in items:
            invoice_id = _answered_id(str(_id_of(item.get("invoice"))), "in_", operation)
            if invoice_id not in customers:
                invoice = await self._call(operation, self._v1.invoices.retrieve_async(invoice_id))
                customers[invoice_id] = str(_id_of(invoice.get("customer")))
            payments.append(await self._payment(item, customers[invoice_id], operation))
        return BillingPaymentPage(payments=payments, next_cursor=next_cursor)

    async def get_refund(self, refund_id: str) -> Refund:
        """One refund, with the invoice payment it gives back and the credit note that made
        it (if one did) found in billing."""
        operation = "get_refund"
        refund_id = _checked_id(refund_id, "re_", operation)
        data = await self._call(operation, self._v1.refunds.retrieve_async(refund_id))
        return (await self._refunds([data], operation))[0]

    async def charge_refunds(self, charge_id: str) -> list[Refund]:
        """The refunds of one charge in every status, oldest first."""
        operation = "charge_refunds"
        charge_id = _checked_id(charge_id, "ch_", operation)
        params = {"charge": charge_id, "limit": 100}
        newest_first = [
            item async for item in self._pages(self._v1.refunds.list_async, params, operation)
        ]
        return await self._refunds(list(reversed(newest_first)), operation)

    async def refund_page(
        self, created_from: datetime, created_until: datetime, cursor: str | None, limit: int
    ) -> BillingRefundPage:
        """Up to `limit` (at most 100) refunds created in [from, until), oldest first, of
        which the succeeded ones are given (Stripe's list has no status filter: a page may
        hold fewer than it read); cursor as in `invoice_page`."""
        operation = "refund_page"
        items, next_cursor = await self._oldest_first_page(
            self._v1.refunds.list_async, created_from, created_until, cursor, limit, operation
        )
        succeeded = [item for item in items if item.get("status") == "succeeded"]
        return BillingRefundPage(
            refunds=await self._refunds(succeeded, operation), next_cursor=next_cursor
        )

    async def open_receivable_page(self, cursor: str | None, limit: int) -> ReceivablePage:
        """What each customer owes now, per currency: the amount remaining on its open and
        uncollectible invoices plus its balance (negative: credit owed to the customer).

        Pages over customers, not invoices, so that one customer's figure is whole on one
        page: up to `limit` (at most 100) customers in billing's order (newest first),
        `cursor` the last customer of the page before (`starting_after`: a customer created
        while paging lands before it and is left for the next run, nothing given moves).
        Each customer costs two invoice lists (open, uncollectible). Customers owing nothing
        give no row, so a page may hold fewer rows than customers."""
        operation = "open_receivable_page"
        if limit < 1:
            raise ValueError("a page holds at least one item")
        if cursor is not None:
            cursor = _checked_id(cursor, "cus_", operation)
        page = await self._list(
            self._v1.customers.list_async,
            {"limit": min(limit, 100), "starting_after": cursor},
            operation,
        )
        customers = page.get("data") or []
        receivables: list[Receivable] = []
        for customer in customers:
            customer_id = _answered_id(str(customer.get("id")), "cus_", operation)
            open_invoices = []
            for status in ("open", "uncollectible"):
                params = {"customer": customer_id, "status": status, "limit": 100}
                async for invoice in self._pages(self._v1.invoices.list_async, params, operation):
                    open_invoices.append(invoice)
            receivables += self._mapped(
                functools.partial(receivables_from_stripe, open_invoices=open_invoices),
                customer,
                operation,
            )
        next_cursor = str(customers[-1]["id"]) if customers and page.get("has_more") else None
        return ReceivablePage(receivables=receivables, next_cursor=next_cursor)

    async def catalog(self) -> list[CatalogEntry]:
        """Products, prices and tax rates, archived ones too (an existing subscription may
        still bill them), and the currencies the prices charge in."""
        operation = "catalog"
        everything = {"limit": 100}
        products = [
            p async for p in self._pages(self._v1.products.list_async, everything, operation)
        ]
        prices = [p async for p in self._pages(self._v1.prices.list_async, everything, operation)]
        rates = [r async for r in self._pages(self._v1.tax_rates.list_async, everything, operation)]
        try:
            return catalog_from_stripe(products, prices, rates)
        except (KeyError, TypeError, ValueError, pydantic.ValidationError) as exc:
            raise AdapterError(
                f"unmappable catalog from billing: {exc}", system=SYSTEM, operation=operation
            ) from exc

    async def _payment(self, data: Mapping[str, Any], customer_id: str, operation: str) -> Payment:
        """An invoice payment with its charge (method, settlement) read where it has one."""
        charge = await self._charge_of(data, operation)
        return self._mapped(
            lambda d: payment_from_stripe(
                d, customer_id, method=_method_or_pending(d, charge), charge=charge
            ),
            data,
            operation,
        )

    async def _charge_of(self, payment: Mapping[str, Any], operation: str) -> dict[str, Any] | None:
        """The charge behind a paid invoice payment, its balance transaction expanded: a
        payment intent's latest charge, or the charge itself; None for a payment recorded
        outside Stripe or one not paid yet."""
        if payment.get("status") != "paid":
            return None
        details = payment.get("payment") or {}
        if details.get("type") == "payment_intent" and details.get("payment_intent"):
            intent_id = _answered_id(str(_id_of(details["payment_intent"])), "pi_", operation)
            intent = await self._call(
                operation,
                self._v1.payment_intents.retrieve_async(
                    intent_id, params={"expand": ["latest_charge.balance_transaction"]}
                ),
            )
            charge = intent.get("latest_charge")
            return dict(charge) if isinstance(charge, Mapping) else None
        if details.get("type") == "charge" and details.get("charge"):
            charge_id = _answered_id(str(_id_of(details["charge"])), "ch_", operation)
            return await self._call(
                operation,
                self._v1.charges.retrieve_async(
                    charge_id, params={"expand": ["balance_transaction"]}
                ),
            )
        return None

    async def _refunds(self, refunds: Sequence[Mapping[str, Any]], operation: str) -> list[Refund]:
        """Refunds with what they give back found in billing: the invoice payment of their
        payment intent (`invoice_payments?payment[payment_intent]=`), or of their charge when
        it was made without one (`payment[type]=charge`, the older shape), and the credit note
        of that invoice whose `refunds` names them. Lookups are shared by refunds of one charge.
        A payment intent that paid several invoices leaves the payment unresolved (None):
        which invoice a refund gives back is then finance's to say."""
        paid_by_intent: dict[str, list[dict[str, Any]]] = {}
        paid_by_charge: dict[str, dict[str, list[dict[str, Any]]]] = {}  # per customer
        notes_by_invoice: dict[str, list[dict[str, Any]]] = {}
        customers_by_charge: dict[str, str] = {}
        resolved = []
        for data in refunds:
            customer_id = _id_of(data.get("customer"))
            if not customer_id:
                customer_id = await self._charge_customer(data, customers_by_charge, operation)
            intent_id = _id_of(data.get("payment_intent"))
            charge_id = _id_of(data.get("charge"))
            paid: list[dict[str, Any]] = []
            if intent_id:
                intent_id = _answered_id(intent_id, "pi_", operation)
                if intent_id not in paid_by_intent:
                    params = {"payment": {"type": "payment_intent", "payment_intent": intent_id},
                              "status": "paid", "limit": 100}  # fmt: skip
                    paid_by_intent[intent_id] = [
                        p async for p in self._pages(
                            self._v1.invoice_payments.list_async, params, operation
                        )
                    ]  # fmt: skip
                paid = paid_by_intent[intent_id]
            elif charge_id:
                charge_id = _answered_id(charge_id, "ch_", operation)
                if customer_id not in paid_by_charge:
                    paid_by_charge[customer_id] = await self._payments_by_charge(
                        customer_id, operation
                    )
                paid = paid_by_charge[customer_id].get(charge_id, [])
            payment = paid[0] if len(paid) == 1 else None
            invoice_id = _id_of(payment.get("invoice")) if payment else None
            credit_note_id = None
            if invoice_id:
                invoice_id = _answered_id(invoice_id, "in_", operation)
                if invoice_id not in notes_by_invoice:
                    params = {"invoice": invoice_id, "limit": 100}
                    notes_by_invoice[invoice_id] = [
                        n async for n in self._pages(
                            self._v1.credit_notes.list_async, params, operation
                        )
                    ]  # fmt: skip
                credit_note_id = credit_note_of_refund(
                    notes_by_invoice[invoice_id], str(data.get("id"))
                )
            mapper = functools.partial(
                refund_from_stripe,
                customer_id=customer_id,
                payment_id=_id_of(payment.get("id")) if payment else None,
                invoice_id=invoice_id,
                credit_note_id=credit_note_id,
            )
            resolved.append(self._mapped(mapper, data, operation))
        return resolved

    async def _payments_by_charge(
        self, customer_id: str, operation: str
    ) -> dict[str, list[dict[str, Any]]]:
        """A customer's paid invoice payments made by a charge without a payment intent
        (`payment[type]=charge`), by charge id. Stripe lists invoice payments by invoice or
        payment intent only, so this reads the customer's invoices that were paid something,
        then their payments: only for refunds of such a charge, which are rare."""
        by_charge: dict[str, list[dict[str, Any]]] = {}
        invoices = {"customer": customer_id, "limit": 100}
        async for invoice in self._pages(self._v1.invoices.list_async, invoices, operation):
            if not invoice.get("amount_paid"):
                continue
            invoice_id = _answered_id(str(invoice.get("id")), "in_", operation)
            paid = {"invoice": invoice_id, "status": "paid", "limit": 100}
            async for p in self._pages(self._v1.invoice_payments.list_async, paid, operation):
                details = p.get("payment") or {}
                if details.get("type") == "charge" and details.get("charge"):
                    by_charge.setdefault(str(_id_of(details["charge"])), []).append(p)
        return by_charge

    async def _charge_customer(
        self, refund: Mapping[str, Any], known: dict[str, str], operation: str
    ) -> str:
        """The customer of a refund that does not name one: its charge's."""
        charge_id = _answered_id(str(_id_of(refund.get("charge"))), "ch_", operation)
        if charge_id not in known:
            charge = await self._call(operation, self._v1.charges.retrieve_async(charge_id))
            customer = _id_of(charge.get("customer"))
            if not customer:
                raise AdapterError(
                    f"refund {refund.get('id')} gives back charge {charge_id}, which has no "
                    "customer: ledgerbridge books only customers' money",
                    system=SYSTEM,
                    operation=operation,
                    remote_answer={"id": refund.get("id"), "charge": charge_id},
                )
            known[charge_id] = customer
        return known[charge_id]

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
        where: Mapping[str, Any] | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a Stripe list restricted to created in [from, until), oldest first,
        and the cursor of the next page (None when this is the last).

        The cursor is the id of the newest item given so far; the next page is
        `ending_before=<cursor>` (the items just newer than it, which Stripe answers newest
        first: reversed here) with `has_more` telling whether newer ones remain. The first
        page starts from the newest item created before the period. When there is none (the
        period reaches back to the first item ever), the period is read newest first once,
        keeping only the oldest `limit` items in memory. `where` filters (e.g. a status)
        apply to the starting item too, so the walk stays within the filtered list.
        """
        if limit < 1:
            raise ValueError("a page holds at least one item")
        size = min(limit, 100)  # Stripe's largest page
        filters: dict[str, Any] = {
            **(where or {}),
            "created": _created_range(created_from, created_until),
            "expand": expand,
        }
        if cursor is None:
            anchor_page = await self._list(
                list_call,
                {**(where or {}), "created": {"lt": _whole_second(created_from)}, "limit": 1},
                operation,
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

    async def _invoice_lines(self, data: Mapping[str, Any], operation: str) -> list[Any]:
        invoice_id = _answered_id(str(data.get("id")), "in_", operation)
        line_items = functools.partial(self._v1.invoices.line_items.list_async, invoice_id)
        return await self._all_lines(data, line_items, operation)

    async def _invoice(self, data: Mapping[str, Any], operation: str) -> BillingDocument:
        lines = await self._invoice_lines(data, operation)
        rates = await self._tax_rates(tax_rate_ids(data, lines), operation)
        return self._mapped(lambda d: invoice_from_stripe(d, lines, rates), data, operation)

    async def _tax_rates(self, rate_ids: set[str], operation: str) -> dict[str, dict[str, Any]]:
        """The TaxRates by id, each read from billing once per process (see `_TAX_RATES`)."""
        rates = {}
        for rate_id in sorted(rate_ids):
            key = (self._base_url, rate_id)
            if key not in _TAX_RATES:
                checked = _answered_id(rate_id, "txr_", operation)
                _TAX_RATES[key] = await self._call(
                    operation, self._v1.tax_rates.retrieve_async(checked)
                )
            rates[rate_id] = _TAX_RATES[key]
        return rates

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
        # Lines crediting an invoice line name their product only through that line.
        credits_invoice_lines = any(line.get("invoice_line_item") for line in lines)
        invoice_lines = (
            await self._invoice_lines(invoice, operation)
            if invoice is not None and credits_invoice_lines
            else []
        )
        rates = await self._tax_rates(tax_rate_ids(data, lines), operation)
        return self._mapped(
            lambda d: credit_note_from_stripe(
                d,
                lines,
                subscription_id=subscription_id,
                tax_rates=rates,
                invoice_lines=invoice_lines,
            ),
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
        with adapter_call(SYSTEM, operation):
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


def _method_or_pending(payment: Mapping[str, Any], charge: Mapping[str, Any] | None) -> str:
    """The payment's method; `pending` for one not paid yet (no charge says how, nothing
    is posted for it)."""
    if payment.get("status") != "paid":
        return "pending"
    return payment_method_of(payment, charge)


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
    "OUT_OF_BAND",
    "STRIPE_API_VERSION",
    "BalanceTransaction",
    "StripeBilling",
    "balance_transaction_from_stripe",
    "catalog_from_stripe",
    "credit_note_from_stripe",
    "credit_note_of_refund",
    "customer_from_stripe",
    "invoice_from_stripe",
    "invoice_line_from_stripe",
    "invoice_subscription_id",
    "linked_refunds",
    "payment_from_stripe",
    "payment_method_of",
    "receivables_from_stripe",
    "refund_from_stripe",
    "settlement_from_stripe",
    "subscription_from_stripe",
    "tax_line_from_stripe",
    "tax_rate_ids",
]
