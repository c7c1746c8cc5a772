"""Business facts ledgerbridge tells other systems about: what each event out says.

Each fact has a CloudEvents type `com.ledgerbridge.<domain>.<fact>.v<N>` and a canonical
model as its data. The version in the type is the data model's SCHEMA_VERSION: a subscriber
filtering on `...posted.v1` never receives data of another shape. The envelope itself (id,
source, subject, time, the correlation id) is the adapters' (adapters/events/envelope.py).
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from canonical.customer import AccountRecord
from canonical.money import Money

TYPE_PREFIX = "com.ledgerbridge."


class _Fact(BaseModel):
    SCHEMA_VERSION: ClassVar[int] = 1
    DOMAIN: ClassVar[str]
    FACT: ClassVar[str]
    model_config = ConfigDict(frozen=True, extra="forbid")

    @classmethod
    def event_type(cls) -> str:
        return f"{TYPE_PREFIX}{cls.DOMAIN}.{cls.FACT}.v{cls.SCHEMA_VERSION}"


class AccountSynced(_Fact):
    """A customer is known in every system: the ids each holds it under."""

    DOMAIN: ClassVar[str] = "account"
    FACT: ClassVar[str] = "synced"

    customer_id: str
    records: list[AccountRecord]


class DocumentPosted(_Fact):
    """A billing document (invoice, credit note, balance credit) is in the ERP, once."""

    DOMAIN: ClassVar[str] = "ledger"
    FACT: ClassVar[str] = "document_posted"

    customer_id: str
    billing_document_id: str
    document_type: str = Field(description="invoice, credit_note, …, as the journal has it")
    erp_document_id: str
    erp_number: str | None
    manual: bool = Field(description="finance posted it by hand and gave its number")
    amount: Money
    workflow_id: str


class PaymentPosted(_Fact):
    """A payment or a refund is applied in the ERP to the document it settles, once."""

    DOMAIN: ClassVar[str] = "ledger"
    FACT: ClassVar[str] = "payment_posted"

    customer_id: str
    billing_payment_id: str
    kind: Literal["payment", "refund"]
    erp_document_id: str
    manual: bool
    amount: Money
    workflow_id: str


class _CreditDecision(_Fact):
    DOMAIN: ClassVar[str] = "credit"

    credit_id: str = Field(description="the credit's workflow id, credit/{case}/{request}")
    case_id: str | None
    actor: str
    role: str
    reason: str | None
    amount: Money | None
    decided_at: AwareDatetime


class CreditApproved(_CreditDecision):
    """A support credit approved, by policy (auto) or by finance; applying it follows."""

    FACT: ClassVar[str] = "approved"

    automatically: bool = Field(description="within policy: nobody had to approve it")


class CreditRejected(_CreditDecision):
    """Finance rejected a support credit: nothing is applied."""

    FACT: ClassVar[str] = "rejected"


class CreditApplied(_Fact):
    """A credit is in billing and its credit note in the ERP."""

    DOMAIN: ClassVar[str] = "credit"
    FACT: ClassVar[str] = "applied"

    credit_id: str
    customer_id: str
    billing_document_id: str
    erp_document_id: str
    erp_number: str | None
    amount: Money


class ExceptionOpened(_Fact):
    """A process could not go on by itself: finance has an exception to decide."""

    DOMAIN: ClassVar[str] = "finance"
    FACT: ClassVar[str] = "exception_opened"

    exception_id: str
    process: str
    origin_workflow_id: str
    step: str
    customer_id: str | None
    subscription_id: str | None
    invoice_id: str | None
    case_id: str | None
    amount: Money | None
    error_type: str
    error_message: str
    allowed_decisions: list[str]
    opened_at: AwareDatetime


class ExceptionDecided(_Fact):
    """Finance decided a finance exception."""

    DOMAIN: ClassVar[str] = "finance"
    FACT: ClassVar[str] = "exception_decided"

    exception_id: str
    process: str | None
    origin_workflow_id: str | None
    decision: str
    actor: str
    role: str
    reason: str | None
    manual_erp_number: str | None
    amount: Money | None
    decided_at: AwareDatetime


class ReconciliationFinished(_Fact):
    """A reconciliation run is over: what it found, healed and sent to finance."""

    DOMAIN: ClassVar[str] = "reconciliation"
    FACT: ClassVar[str] = "finished"

    run_id: str
    status: Literal["done", "failed"]
    healed: int
    exceptions_opened: int
    finished_at: AwareDatetime


FACTS: tuple[type[_Fact], ...] = (
    AccountSynced,
    DocumentPosted,
    PaymentPosted,
    CreditApproved,
    CreditRejected,
    CreditApplied,
    ExceptionOpened,
    ExceptionDecided,
    ReconciliationFinished,
)
BY_TYPE: dict[str, type[_Fact]] = {fact.event_type(): fact for fact in FACTS}
Fact = _Fact
