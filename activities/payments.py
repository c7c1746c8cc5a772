"""Billing's money that moved: an invoice's payments and a charge's refunds, read fresh."""

from __future__ import annotations

from pydantic import BaseModel
from temporalio import activity

from activities._errors import adapter_errors_as_application_errors
from activities._system import SystemActivities
from adapters.ports import BillingSystem
from canonical import Payment, Refund


class InvoicePaymentsInput(BaseModel):
    invoice_id: str


class ChargeRefundsInput(BaseModel):
    charge_id: str


class BillingPaymentActivities(SystemActivities):
    system = "billing"

    def __init__(self, billing: BillingSystem) -> None:
        self._billing = billing

    @activity.defn(name="fetch_invoice_payments")
    async def fetch_invoice_payments(self, request: InvoicePaymentsInput) -> list[Payment]:
        """The invoice's payments in every status, oldest first: the ledger posts the paid
        ones it has not journaled yet, whichever event told it to look."""
        with adapter_errors_as_application_errors():
            return await self._billing.invoice_payments(request.invoice_id)

    @activity.defn(name="fetch_charge_refunds")
    async def fetch_charge_refunds(self, request: ChargeRefundsInput) -> list[Refund]:
        """The charge's refunds, oldest first, each with the invoice payment and credit note
        it belongs to resolved by billing."""
        with adapter_errors_as_application_errors():
            return await self._billing.charge_refunds(request.charge_id)
