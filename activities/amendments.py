"""Activities of amendment-to-ERP: read billing documents, post them (and the payments and
refunds that settle them) on finance's mapping, journal them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal, Protocol

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._errors import adapter_errors_as_application_errors
from activities._system import SystemActivities
from adapters import metrics
from adapters.mapping_file import MappingFileError
from adapters.ports import BillingSystem, Ledger
from adapters.store import DuplicatePostingError, IntegrationStore
from canonical import (
    AccountRecord,
    BillingDocument,
    LedgerPosting,
    PaymentPosting,
    PostedDocument,
    PostedPayment,
    Subscription,
)
from canonical.mapping import FinanceMapping, Unmapped, map_document, map_payment


class FetchDocumentInput(BaseModel):
    kind: Literal["invoice", "credit_note"]
    document_id: str


class FetchSubscriptionInput(BaseModel):
    subscription_id: str


class EarlierInvoicesInput(BaseModel):
    subscription_id: str
    invoice_id: str
    limit: int = 50


class PostDocumentInput(BaseModel):
    posting: LedgerPosting


class PostPaymentInput(BaseModel):
    posting: PaymentPosting


class JournalLookupInput(BaseModel):
    reference: str


class JournalEntry(BaseModel):
    reference: str
    document_type: str
    customer_id: str
    erp_document_id: str
    erp_number: str | None
    amount: Decimal
    currency: str
    workflow_id: str
    # The ERP that booked it and the entity it was booked for (None: before routing).
    erp: str | None = None
    entity: str | None = None


class RecordJournalInput(BaseModel):
    entry: JournalEntry
    correlation_id: str
    # Billing's event time (unix seconds) of what was posted: the billing-to-ERP latency.
    billing_event_created: int | None = None


class AccountLinksInput(BaseModel):
    customer_id: str


class BillingDocumentActivities(SystemActivities):
    system = "billing"

    def __init__(self, billing: BillingSystem) -> None:
        self._billing = billing

    @activity.defn(name="fetch_billing_document")
    async def fetch_billing_document(self, request: FetchDocumentInput) -> BillingDocument:
        with adapter_errors_as_application_errors():
            if request.kind == "invoice":
                return await self._billing.get_invoice(request.document_id)
            return await self._billing.get_credit_note(request.document_id)

    @activity.defn(name="earlier_invoice_ids")
    async def earlier_invoice_ids(self, request: EarlierInvoicesInput) -> list[str]:
        """Finalized invoices of the subscription created before this one, oldest first:
        billing's own order, whatever order their webhooks arrived in."""
        earlier: list[str] = []
        seen_current = False
        with adapter_errors_as_application_errors():
            async for invoice in self._billing.list_invoices(
                subscription_id=request.subscription_id
            ):
                if invoice.document_id == request.invoice_id:
                    seen_current = True
                elif seen_current and invoice.was_finalized:
                    earlier.append(invoice.document_id)
                    if len(earlier) >= request.limit:
                        break
        return earlier[::-1]

    @activity.defn(name="fetch_subscription")
    async def fetch_subscription(self, request: FetchSubscriptionInput) -> Subscription:
        with adapter_errors_as_application_errors():
            return await self._billing.get_subscription(request.subscription_id)


class FinanceMappingSource(Protocol):
    """Finance's mapping as it is now (`adapters.mapping_file.MappingFile`)."""

    def current(self) -> FinanceMapping: ...


class ErpPostingActivities(SystemActivities):
    """Posts on finance's mapping as it is at the moment of posting: a `retry` after finance
    fixed the file posts with the fix. What the mapping lacks is never guessed."""

    system = "erp"

    def __init__(self, ledger: Ledger, finance_mapping: FinanceMappingSource | None = None) -> None:
        self._ledger = ledger
        self._finance_mapping = finance_mapping

    @activity.defn(name="post_ledger_document")
    async def post_ledger_document(self, request: PostDocumentInput) -> PostedDocument:
        """Idempotent by reference: a retry after a lost answer finds the first document.

        The ERP posts with today's date, so today's period must be open; checked here, in
        the same call, because every extra round trip to the ERP costs its throughput.
        """
        mapping = self._mapping()
        with _unmapped_as_application_error():
            posting = map_document(request.posting, mapping)
        with adapter_errors_as_application_errors():
            await self._require_open_period()
            return await self._ledger.post_document(posting)

    @activity.defn(name="post_ledger_payment")
    async def post_ledger_payment(self, request: PostPaymentInput) -> PostedPayment:
        """A payment in or a refund out, applied to its ERP document; idempotent by reference
        like documents, on the payment journal finance maps its method and currency to."""
        mapping = self._mapping()
        with _unmapped_as_application_error():
            posting = map_payment(request.posting, mapping)
        with adapter_errors_as_application_errors():
            await self._require_open_period()
            return await self._ledger.post_payment(posting)

    async def _require_open_period(self) -> None:
        today = datetime.now(UTC).date()
        if not await self._ledger.is_period_open(today):
            raise ApplicationError(
                f"the ERP period of {today} is closed", type="PeriodClosed", non_retryable=True
            )

    def _mapping(self) -> FinanceMapping:
        """Finance's mapping now; an unreadable file is finance's to fix, not to retry."""
        if self._finance_mapping is None:
            raise ApplicationError(
                "this worker was started without finance's mapping file",
                type="MappingFileError",
                non_retryable=True,
            )
        try:
            return self._finance_mapping.current()
        except MappingFileError as err:
            raise ApplicationError(
                str(err), {"error": str(err)}, type="MappingFileError", non_retryable=True
            ) from err


@contextmanager
def _unmapped_as_application_error() -> Iterator[None]:
    """Unmapped names every gap at once, so finance fixes the file in one go."""
    try:
        yield
    except Unmapped as err:
        raise ApplicationError(
            str(err),
            {"reference": err.reference, "missing": err.missing, "mapping_version": err.version},
            type="Unmapped",
            non_retryable=True,
        ) from err


class JournalActivities(SystemActivities):
    """The posting journal and cross-references; on the workflow queue (the store is ours)."""

    system = "store"

    def __init__(self, store: IntegrationStore) -> None:
        self._store = store

    @activity.defn(name="find_journal_entry")
    def find_journal_entry(self, request: JournalLookupInput) -> JournalEntry | None:
        posting = self._store.find_posting("billing", request.reference)
        if posting is None:
            return None
        return JournalEntry(
            reference=posting.source_document_id,
            document_type=posting.document_type,
            customer_id=posting.customer_id,
            erp_document_id=posting.erp_document_id,
            erp_number=posting.erp_number,
            amount=posting.amount,
            currency=posting.currency,
            workflow_id=posting.workflow_id,
            erp=posting.erp,
            entity=posting.entity,
        )

    @activity.defn(name="record_journal_entry")
    def record_journal_entry(self, request: RecordJournalInput) -> None:
        entry = request.entry
        try:
            self._store.record_posting(
                source_system="billing",
                source_document_id=entry.reference,
                document_type=entry.document_type,
                customer_id=entry.customer_id,
                erp_document_id=entry.erp_document_id,
                erp_number=entry.erp_number,
                amount=entry.amount,
                currency=entry.currency,
                workflow_id=entry.workflow_id,
                correlation_id=request.correlation_id,
                erp=entry.erp,
                entity=entry.entity,
            )
        except DuplicatePostingError as err:
            raise ApplicationError(
                str(err), type="DuplicatePostingError", non_retryable=True
            ) from err
        metrics.document_posted(
            entry.workflow_id,
            entry.document_type,
            entry.currency,
            entry.erp_document_id,
            request.billing_event_created,
        )

    @activity.defn(name="account_links")
    def account_links(self, request: AccountLinksInput) -> list[AccountRecord]:
        return self._store.account_links(request.customer_id)
