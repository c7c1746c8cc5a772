"""The ports: what ledgerbridge needs from each external system, named for the capability.

Concrete adapters are named for the product (StripeBilling, ZendeskSupport, TrytonLedger)
and are constructed only by `adapters.bootstrap`. Every method raises the taxonomy of
`adapters.errors`; writes take an explicit idempotency key built by the workflow.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from canonical import (
    AccountRecord,
    BalanceTransaction,
    BillingDocument,
    Customer,
    LedgerPosting,
    Money,
    Payment,
    PaymentPosting,
    PostedDocument,
    PostedPayment,
    Refund,
    Subscription,
)
from canonical.entitlements import Entitlements
from canonical.mapping import CatalogEntry
from canonical.reconciliation import (
    BalanceCreditPage,
    BillingDocumentPage,
    BillingPaymentPage,
    BillingRefundPage,
    LedgerDocumentPage,
    LedgerPaymentPage,
    ReceivablePage,
    TicketCreditPage,
)
from canonical.support import SupportCase

if TYPE_CHECKING:  # the NATS client loads only where a broker is used
    from adapters.events.broker import PublishResult, StreamOutcome


class BillingSystem(Protocol):
    """The subscription billing platform (customers are born here)."""

    async def get_customer(self, customer_id: str) -> Customer:
        """The customer as billing knows it now. NotFoundError when billing has none."""
        ...

    async def get_subscription(self, subscription_id: str) -> Subscription: ...

    async def get_invoice(self, invoice_id: str) -> BillingDocument: ...

    async def get_credit_note(self, credit_note_id: str) -> BillingDocument: ...

    def list_invoices(
        self, *, subscription_id: str | None = None
    ) -> AsyncIterator[BillingDocument]:
        """Invoices, newest first (billing's creation order)."""
        ...

    async def active_subscription(self, customer_id: str) -> Subscription | None:
        """The customer's current subscription, if one is active."""
        ...

    async def create_balance_credit(
        self,
        customer_id: str,
        amount: Money,
        description: str,
        idempotency_key: str,
        *,
        metadata: dict[str, str] | None = None,
    ) -> BalanceTransaction:
        """Credit the customer's next invoice by `amount`; `metadata` is stored with it."""
        ...

    async def reverse_balance_credit(
        self,
        customer_id: str,
        amount: Money,
        description: str,
        idempotency_key: str,
        *,
        metadata: dict[str, str] | None = None,
    ) -> BalanceTransaction:
        """Take a balance credit back (compensation); `metadata` is stored with it."""
        ...

    async def create_credit_note(
        self,
        invoice_id: str,
        amount: Money,
        description: str,
        reason: Literal["duplicate", "fraudulent", "order_change", "product_unsatisfactory"] | None,
        idempotency_key: str,
        *,
        metadata: dict[str, str] | None = None,
    ) -> BillingDocument:
        """A credit note against an open or paid invoice; RejectedError when billing refuses.
        `metadata` is stored on it in billing."""
        ...

    async def find_credit_note(
        self, invoice_id: str, idempotency_key: str
    ) -> BillingDocument | None:
        """The credit note `create_credit_note` made on the invoice with this idempotency key,
        if any (its answer may have been lost)."""
        ...

    async def void_credit_note(
        self, credit_note_id: str, *, idempotency_key: str
    ) -> BillingDocument: ...

    async def get_event(self, event_id: str) -> dict[str, Any]:
        """One raw billing event, as billing recorded it."""
        ...

    async def invoice_page(
        self, created_from: datetime, created_until: datetime, cursor: str | None, limit: int
    ) -> BillingDocumentPage:
        """One page of the invoices created in [from, until), oldest first (reconciliation)."""
        ...

    async def credit_note_page(
        self, created_from: datetime, created_until: datetime, cursor: str | None, limit: int
    ) -> BillingDocumentPage:
        """One page of the credit notes created in [from, until), oldest first."""
        ...

    async def balance_credit_page(
        self,
        customer_id: str,
        created_from: datetime,
        created_until: datetime,
        cursor: str | None,
        limit: int,
    ) -> BalanceCreditPage:
        """One page of a customer's balance adjustments created in [from, until)."""
        ...

    def list_events(
        self, *, created_from: datetime, created_until: datetime | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """Raw billing events in a time range, oldest first (backfill and replay)."""
        ...

    # --- money that moved (payments and refunds) --------------------------------------

    async def invoice_payments(self, invoice_id: str) -> list[Payment]:
        """The invoice's payments in every status, oldest first (partial ones included)."""
        ...

    async def get_refund(self, refund_id: str) -> Refund:
        """One refund, with the invoice payment and credit note it belongs to resolved."""
        ...

    async def charge_refunds(self, charge_id: str) -> list[Refund]:
        """The refunds of one charge, oldest first."""
        ...

    async def payment_page(
        self, created_from: datetime, created_until: datetime, cursor: str | None, limit: int
    ) -> BillingPaymentPage:
        """One page of the invoice payments paid in [from, until), oldest first."""
        ...

    async def refund_page(
        self, created_from: datetime, created_until: datetime, cursor: str | None, limit: int
    ) -> BillingRefundPage:
        """One page of the refunds created in [from, until), oldest first."""
        ...

    async def open_receivable_page(self, cursor: str | None, limit: int) -> ReceivablePage:
        """What each customer owes now, per currency: the amount remaining on its open and
        uncollectible invoices plus its balance (negative: credit owed to the customer)."""
        ...

    async def catalog(self) -> list[CatalogEntry]:
        """Products, prices, tax rates and currencies in use: what a mapping must cover."""
        ...

    async def aclose(self) -> None: ...


class SupportDesk(Protocol):
    """The support platform; a customer is an organization there."""

    async def find_organization(self, customer_id: str) -> AccountRecord | None:
        """The organization whose external id is the customer id, or None."""
        ...

    async def ensure_organization(self, customer: Customer, idempotency_key: str) -> AccountRecord:
        """Create the organization, or correct its name, so it matches the customer."""
        ...

    async def ensure_entitlement_fields(self) -> list[str]:
        """Define the organization fields entitlements live in where missing; the ones made."""
        ...

    async def read_entitlements(self, customer_id: str) -> Entitlements | None:
        """The plan, status and paid-through date the customer's organization carries; None
        when none were written yet. NotFoundError when there is no organization."""
        ...

    async def write_entitlements(self, entitlements: Entitlements) -> bool:
        """Make the organization carry these entitlements (looks before it writes); False
        when it already did."""
        ...

    async def get_case(self, case_id: str) -> SupportCase:
        """The case with its customer and the credit asked on it (None when none is).
        NotFoundError for an unknown case; ValidationError naming the field when the
        credit fields are malformed."""
        ...

    async def add_internal_note(self, case_id: str, body: str, idempotency_key: str) -> None:
        """A note only agents see."""
        ...

    async def add_public_reply(self, case_id: str, body: str, idempotency_key: str) -> None:
        """A reply the customer sees."""
        ...

    async def add_tags(self, case_id: str, tags: list[str], idempotency_key: str) -> None:
        """Add tags to the case, keeping the ones it has."""
        ...

    async def credit_ticket_page(
        self, updated_from: datetime, updated_until: datetime, cursor: str | None, limit: int
    ) -> TicketCreditPage:
        """One page of the tickets tagged `credit_applied` updated in [from, until)."""
        ...

    async def aclose(self) -> None: ...


class Ledger(Protocol):
    """The ERP, the system of financial record; a customer is a party there."""

    async def find_party(self, customer_id: str) -> AccountRecord | None:
        """The party whose code is the customer id, or None."""
        ...

    async def ensure_party(self, customer: Customer) -> AccountRecord:
        """Create the party (lookup-before-create on the code) or correct it to match."""
        ...

    async def find_document(self, reference: str) -> PostedDocument | None:
        """The posted (or draft) ERP document carrying this reference, or None."""
        ...

    async def post_document(self, posting: LedgerPosting) -> PostedDocument:
        """Create and post the document, unless one with its reference exists (then return
        that one, posting it if an earlier attempt left it in draft). Never two."""
        ...

    async def is_period_open(self, on: date) -> bool:
        """Whether the ERP accepts postings dated `on`."""
        ...

    async def document_page(
        self, date_from: date, date_to: date, cursor: str | None, limit: int
    ) -> LedgerDocumentPage:
        """One page of the customer invoices and credit notes dated in [from, to], in every
        state (drafts too: a stray draft may be a duplicate), in a stable order."""
        ...

    async def find_payment(self, reference: str) -> PostedPayment | None:
        """The payment or refund the ERP holds for this billing id, or None."""
        ...

    async def post_payment(self, posting: PaymentPosting) -> PostedPayment:
        """Record the money and apply it to the document `applies_to` names (which must be
        posted: NotFoundError otherwise), so an invoice paid in full is paid in the ERP
        too. Idempotent by reference, like `post_document`. RejectedError when the amount
        exceeds what remains open on that document."""
        ...

    async def payment_page(
        self, date_from: date, date_to: date, cursor: str | None, limit: int
    ) -> LedgerPaymentPage:
        """One page of the payments and refunds dated in [from, to], in a stable order."""
        ...

    async def open_receivable_page(self, cursor: str | None, limit: int) -> ReceivablePage:
        """What each party (by code) owes now on its receivable, per document currency."""
        ...

    async def catalog(self) -> list[CatalogEntry]:
        """Products, accounts, taxes, payment journals and currencies a mapping may name."""
        ...

    async def aclose(self) -> None: ...


class EventBroker(Protocol):
    """Where business events go out (DESIGN.md, Events out): a stream that stores each event
    once by its id, so a publish may be repeated whenever its outcome is unknown. The order
    per subject is the order of publishing: publish one at a time, each awaited."""

    async def ensure_stream(self) -> StreamOutcome:
        """Create the stream or bring its settings to ours; safe at every start."""
        ...

    async def publish(
        self, subject: str, body: bytes, msg_id: str, headers: Mapping[str, str] | None = None
    ) -> PublishResult:
        """Stored (or already stored: `duplicate`) once the broker acks; TransientError when
        it is down or does not ack in time."""
        ...

    async def close(self) -> None: ...


__all__ = ["BillingSystem", "EventBroker", "Ledger", "SupportDesk"]
