"""What reconciliation reads from each system, one page at a time (a cursor, never a whole
period in memory or in workflow history)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from canonical.billing import BalanceTransaction, BillingDocument
from canonical.money import Money


class BillingDocumentPage(BaseModel):
    """Invoices or credit notes of a period, oldest first; `next_cursor` None on the last."""

    documents: list[BillingDocument]
    next_cursor: str | None = None


class BalanceCreditPage(BaseModel):
    """A customer's balance adjustments (credits granted and their reversals)."""

    transactions: list[BalanceTransaction]
    next_cursor: str | None = None


class LedgerDocument(BaseModel):
    """A customer invoice or credit note as the ERP holds it, in any state."""

    model_config = ConfigDict(frozen=True)

    erp_document_id: str
    reference: str | None = Field(description="the billing document id we posted it for")
    kind: Literal["invoice", "credit_note"]
    number: str | None
    total: Money = Field(description="positive for both kinds")
    state: str = Field(description="draft | validated | posted | paid | cancelled")
    customer_id: str | None = Field(description="the party's code: the canonical customer id")
    document_date: dt.date | None


class LedgerDocumentPage(BaseModel):
    documents: list[LedgerDocument]
    next_cursor: str | None = None


class TicketCredit(BaseModel):
    """A ticket on which support told the customer a credit was given (tag credit_applied)."""

    model_config = ConfigDict(frozen=True)

    case_id: str
    customer_id: str | None
    amount: Money | None = Field(description="the credit fields of the ticket, when filled in")
    updated_at: AwareDatetime


class TicketCreditPage(BaseModel):
    tickets: list[TicketCredit]
    next_cursor: str | None = None
