"""What reconciliation reads from each system, one page at a time (a cursor, never a whole
period in memory or in workflow history), and the classes of what it finds."""

from __future__ import annotations

import datetime as dt
from typing import Final, Literal, get_args

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from canonical.billing import BalanceTransaction, BillingDocument
from canonical.money import Money
from canonical.payments import Payment, Refund

# The classes of finding, what finance is told to do about each, and what healing does.
ReconClass = Literal[
    "matched",
    "matched_to_journal",
    "missing_in_erp",
    "posted_but_absent",
    "rejected_by_finance",
    "amount_mismatch",
    "duplicate_in_erp",
    "orphan_in_erp",
    "credit_without_ticket",
    "ticket_credit_without_billing",
    "payment_missing_in_erp",
    "refund_missing_in_erp",
    "payment_amount_mismatch",
    "tax_differs",
    "receivable_differs",
]
MATCHED: Final = "matched"
MATCHED_TO_JOURNAL: Final = "matched_to_journal"
MISSING_IN_ERP: Final = "missing_in_erp"
POSTED_BUT_ABSENT: Final = "posted_but_absent"
# Billing holds it, the ERP does not, and the journal says finance rejected its posting (an
# entry of `canonical.ledger.REJECTED_POSTING_PREFIX`): explained, never replayed. (A
# `manual:` entry without the ERP document stays posted_but_absent: the ERP should hold it.)
REJECTED_BY_FINANCE: Final = "rejected_by_finance"
AMOUNT_MISMATCH: Final = "amount_mismatch"
DUPLICATE_IN_ERP: Final = "duplicate_in_erp"
ORPHAN_IN_ERP: Final = "orphan_in_erp"
CREDIT_WITHOUT_TICKET: Final = "credit_without_ticket"
TICKET_CREDIT_WITHOUT_BILLING: Final = "ticket_credit_without_billing"
# Money that moved: a payment or refund billing holds that the ERP lacks, or holds otherwise.
# (Duplicates, orphans and journaled-but-absent payments share the documents' classes; the
# item's kind says payment or refund.)
PAYMENT_MISSING_IN_ERP: Final = "payment_missing_in_erp"
REFUND_MISSING_IN_ERP: Final = "refund_missing_in_erp"
PAYMENT_AMOUNT_MISMATCH: Final = "payment_amount_mismatch"
# Totals compared, not documents: tax per ERP tax and currency over the documents both
# systems hold for the period, and what each customer owes now per currency.
TAX_DIFFERS: Final = "tax_differs"
RECEIVABLE_DIFFERS: Final = "receivable_differs"
CLASSES: Final[tuple[ReconClass, ...]] = get_args(ReconClass)
# Billing's tax of a rate finance's mapping does not name is compared under this prefix and
# the rate id: no ERP tax has such a name, so it shows as a difference naming the rate.
UNMAPPED_TAX_PREFIX: Final = "unmapped tax rate "

REMEDIES: Final[dict[ReconClass, str]] = {
    MATCHED: "None: billing and the ERP agree.",
    MATCHED_TO_JOURNAL: "None: the ERP holds what we journaled; billing lists it elsewhere.",
    MISSING_IN_ERP: "Auto-heal: replay the normal posting path for the billing document.",
    POSTED_BUT_ABSENT: "Finance exception: the journal records a posting the ERP does not hold.",
    REJECTED_BY_FINANCE: "None: finance rejected its posting in the exception the detail names; "
    "post it by hand if that decision changes.",
    AMOUNT_MISMATCH: "Finance exception: correct the ERP document or the billing document.",
    DUPLICATE_IN_ERP: "Finance exception: cancel or credit the extra ERP documents.",
    ORPHAN_IN_ERP: "Finance exception: trace the ERP document's origin or reverse it.",
    CREDIT_WITHOUT_TICKET: "Finance exception: confirm who granted the credit in billing.",
    TICKET_CREDIT_WITHOUT_BILLING: "Finance exception: the requested credit never reached billing.",
    PAYMENT_MISSING_IN_ERP: "Auto-heal: replay the invoice's payment event to its ledger.",
    REFUND_MISSING_IN_ERP: "Auto-heal: replay the charge's refund event to the customer's ledger.",
    PAYMENT_AMOUNT_MISMATCH: "Finance exception: correct the ERP payment or refund (amount, "
    "currency or the document it is applied to).",
    TAX_DIFFERS: "Finance exception: correct the ERP tax lines, or finance's tax mapping.",
    RECEIVABLE_DIFFERS: "Finance exception: find the unposted or extra receivable entries "
    "(the report's other items for the customer usually name them).",
}
# What a later healing step does with each class.
IN_AGREEMENT: Final = frozenset({MATCHED, MATCHED_TO_JOURNAL})
HEALABLE: Final = frozenset({MISSING_IN_ERP, PAYMENT_MISSING_IN_ERP, REFUND_MISSING_IN_ERP})
# Differences finance has already decided: reported, neither healed nor handed back to finance.
EXPLAINED: Final = frozenset({REJECTED_BY_FINANCE})
EXCEPTIONS: Final = frozenset(set(CLASSES) - IN_AGREEMENT - HEALABLE - EXPLAINED)


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
    taxes: dict[str, Money] = Field(
        default_factory=dict,
        description="tax per ERP tax name, in the document's direction (against it: negative)",
    )


class LedgerDocumentPage(BaseModel):
    documents: list[LedgerDocument]
    next_cursor: str | None = None


class BillingPaymentPage(BaseModel):
    """Invoice payments (status paid) made in a period, oldest first."""

    payments: list[Payment]
    next_cursor: str | None = None


class BillingRefundPage(BaseModel):
    """Refunds (status succeeded) created in a period, oldest first."""

    refunds: list[Refund]
    next_cursor: str | None = None


class LedgerPayment(BaseModel):
    """A payment received or a refund paid out, as the ERP holds it."""

    model_config = ConfigDict(frozen=True)

    erp_document_id: str
    reference: str | None = Field(description="the billing payment or refund id")
    kind: Literal["payment", "refund"]
    amount: Money = Field(description="positive for both kinds")
    applies_to: str | None = Field(description="reference of the ERP document it settles")
    customer_id: str | None
    payment_date: dt.date | None
    state: str


class LedgerPaymentPage(BaseModel):
    payments: list[LedgerPayment]
    next_cursor: str | None = None


class Receivable(BaseModel):
    """What one customer owes in one currency (negative: what is owed to the customer)."""

    model_config = ConfigDict(frozen=True)

    customer_id: str
    amount: Money


class ReceivablePage(BaseModel):
    receivables: list[Receivable]
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


# The reconciliation workflow's messages (here, not in its module, so the sandbox does not
# build them again for every run it holds).


class ReconProgress(BaseModel):
    """Where a run is: carried across continue-as-new instead of any document."""

    run_id: str
    period_start: dt.datetime
    period_end: dt.datetime
    cursors: dict[str, str] = {}  # the next page of each source being read
    done: list[str] = []  # sources read completely
    loaded: dict[str, int] = {}
    # The ERP reconciled and its queue; None for runs from before routing (the `erp` queue).
    erp: str | None = None
    erp_queue: str | None = None
    # Where the ERP's pages are read; None for runs from before read queues (on `erp_queue`).
    erp_read_queue: str | None = None
    compares_tickets: bool = True


class ReconciliationInput(BaseModel):
    # None: the UTC day before the run starts (the nightly schedule's case).
    period_start: dt.datetime | None = None
    period_end: dt.datetime | None = None
    # The routing's ERP to reconcile; None: the ERP on the `erp` queue.
    erp: str | None = None
    heal_limit: int = 50  # missing postings, payments and refunds replayed per run
    exception_limit: int = 20  # finance exceptions opened per run (the report holds the rest)
    page_size: int = 200  # billing's pages: Stripe gives at most 100 of them
    invoice_parts: int = 4  # the period's invoices read on this many cursors side by side
    # The ERP's and support's pages: their APIs give more (NetSuite's SuiteQL and Zendesk's
    # export up to 1,000; Tryton any), and each page is a round trip through Temporal.
    erp_page_size: int = 1000
    support_page_size: int = 1000
    ledger_currencies: list[str] = ["USD"]
    # Continue as new once the history passes this many events (a run stays under 2,000).
    continue_after_events: int = 1_500
    progress: ReconProgress | None = None


class ReconciliationResult(BaseModel):
    run_id: str
    period_start: dt.datetime
    period_end: dt.datetime
    loaded: dict[str, int]
    counts: dict[str, int]
    in_agreement: int
    healed: int
    exceptions_opened: list[str]
    unexplained: int
    erp: str | None = None  # the ERP reconciled; None for runs from before routing
