"""The outbox: which business fact each journal, audit, cross-reference or reconciliation
write records, written as its event in the same transaction (so a fact is never recorded
without its event, nor an event sent for a fact that rolled back).

The facts are read off the rows being written, so no workflow passes anything new: the
activities that journal and audit are unchanged, and so is every workflow's history.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.orm import Session

from adapters.events.envelope import OutgoingEvent, envelope, read_event
from adapters.store.models import BusinessEventRow, OutboxEvent, Posting, insert_for, utcnow
from canonical.customer import AccountRecord
from canonical.facts import (
    AccountSynced,
    CreditApplied,
    CreditApproved,
    CreditRejected,
    DocumentPosted,
    ExceptionDecided,
    ExceptionOpened,
    PaymentPosted,
    ReconciliationFinished,
)
from canonical.ledger import MANUAL_POSTING_PREFIX, REJECTED_POSTING_PREFIX
from canonical.money import Money

PAYMENT_KINDS = ("payment", "refund")
OPENED = "exception.opened"
# What an exception's opening audit row keeps in its details: the fact's fields.
OPENED_FIELDS = (
    "process",
    "origin_workflow_id",
    "step",
    "customer_id",
    "subscription_id",
    "invoice_id",
    "case_id",
    "error_type",
    "error_message",
    "allowed_decisions",
)
CREDIT_WORKFLOW_PREFIX = "credit/"


def posting_events(posting: Posting) -> list[OutgoingEvent]:
    """A journal entry's facts: the document or payment posted (not when finance rejected
    it: that is the exception's decision), and a credit applied when a credit's credit note
    is posted."""
    reference, workflow_id = posting.source_document_id, posting.workflow_id
    if posting.erp_document_id.startswith(REJECTED_POSTING_PREFIX):
        return []
    manual = posting.erp_document_id.startswith(MANUAL_POSTING_PREFIX)
    money = Money.of(posting.amount, posting.currency)
    common = {"workflow_id": workflow_id, "step": f"journal/{reference}",
              "time": posting.posted_at, "correlation_id": posting.correlation_id}  # fmt: skip
    if posting.document_type in PAYMENT_KINDS:
        payment = PaymentPosted(
            customer_id=posting.customer_id, billing_payment_id=reference,
            kind=posting.document_type, erp_document_id=posting.erp_document_id,  # type: ignore[arg-type]
            manual=manual, amount=money, workflow_id=workflow_id,
        )  # fmt: skip
        return [envelope(payment, subject=reference, **common)]  # type: ignore[arg-type]
    posted = DocumentPosted(
        customer_id=posting.customer_id, billing_document_id=reference,
        document_type=posting.document_type, erp_document_id=posting.erp_document_id,
        erp_number=posting.erp_number, manual=manual, amount=money, workflow_id=workflow_id,
    )  # fmt: skip
    events = [envelope(posted, subject=reference, **common)]  # type: ignore[arg-type]
    if workflow_id.startswith(CREDIT_WORKFLOW_PREFIX) and posting.document_type == "credit_note":
        applied = CreditApplied(
            credit_id=workflow_id, customer_id=posting.customer_id,
            billing_document_id=reference, erp_document_id=posting.erp_document_id,
            erp_number=posting.erp_number, amount=money,
        )  # fmt: skip
        events.append(envelope(applied, subject=workflow_id, **common))  # type: ignore[arg-type]
    return events


def audit_events(
    *,
    actor: str,
    role: str,
    action: str,
    subject: str,
    reason: str | None,
    amount: Decimal | None,
    currency: str | None,
    correlation_id: str | None,
    details: dict[str, Any],
    at: datetime,
) -> list[OutgoingEvent]:
    """The decisions of the audit trail that are business facts: a credit approved or
    rejected, a finance exception decided. Other audit rows (sign-ins, starts) are not."""
    money = Money.of(amount, currency) if amount is not None and currency else None
    common = {"workflow_id": subject, "step": f"audit/{action}", "time": at,
              "correlation_id": correlation_id, "subject": subject}  # fmt: skip
    decided = {"actor": actor, "role": role, "reason": reason, "amount": money,
               "decided_at": at}  # fmt: skip
    if action in ("credit.approved", "credit.auto_approved"):
        approved = CreditApproved(
            credit_id=subject, case_id=details.get("case_id"),
            automatically=action == "credit.auto_approved", **decided,
        )  # fmt: skip
        return [envelope(approved, **common)]  # type: ignore[arg-type]
    if action == "credit.rejected":
        rejected = CreditRejected(credit_id=subject, case_id=details.get("case_id"), **decided)
        return [envelope(rejected, **common)]  # type: ignore[arg-type]
    if action == OPENED:
        opened = ExceptionOpened(
            exception_id=subject, amount=money, opened_at=at,
            **{field: details.get(field) for field in OPENED_FIELDS},
        )  # fmt: skip
        return [envelope(opened, **common)]  # type: ignore[arg-type]
    if action.startswith("exception."):
        exception = ExceptionDecided(
            exception_id=subject, process=details.get("process"),
            origin_workflow_id=details.get("origin_workflow_id"),
            decision=action.removeprefix("exception."),
            manual_erp_number=details.get("manual_erp_number"), **decided,
        )  # fmt: skip
        return [envelope(exception, **common)]  # type: ignore[arg-type]
    return []


def account_events(
    customer_id: str,
    records: Sequence[AccountRecord],
    workflow_id: str | None,
    step: str | None,
    at: datetime,
) -> list[OutgoingEvent]:
    """A sync's outcome. `step` names the sync (the activity's run and id, the same on a
    retry); without one (a write outside a workflow), the ids alone name it."""
    synced = AccountSynced(customer_id=customer_id, records=list(records))
    named_by = step or "links/" + ",".join(f"{r.system}={r.external_id}" for r in records)
    return [envelope(synced, workflow_id=workflow_id or f"account/{customer_id}",
                     step=named_by, subject=customer_id, time=at)]  # fmt: skip


def reconciliation_events(
    run_id: str, status: str, healed: int, exceptions: int, at: datetime
) -> list[OutgoingEvent]:
    finished = ReconciliationFinished(
        run_id=run_id, status=status, healed=healed,  # type: ignore[arg-type]
        exceptions_opened=exceptions, finished_at=at,
    )  # fmt: skip
    return [envelope(finished, workflow_id=run_id, step="finished", subject=run_id, time=at)]


def add_events(target: Session | Connection, events: Iterable[OutgoingEvent]) -> None:
    """Into the outbox, inside the caller's transaction; an id already there is kept as it
    is (the same fact recorded again by a retried activity)."""
    rows = [
        {"event_id": e.event_id, "event_type": e.event_type, "subject": e.subject,
         "body": e.body.decode(), "created_at": utcnow()}
        for e in events
    ]  # fmt: skip
    if not rows:
        return
    insert = _insert_for(target)
    target.execute(insert(OutboxEvent).values(rows).on_conflict_do_nothing(
        index_elements=["event_id"]))  # fmt: skip


def _insert_for(target: Session | Connection) -> Any:
    bind = target.get_bind() if isinstance(target, Session) else target
    return insert_for(bind.dialect.name)


@dataclass(frozen=True)
class PendingEvent:
    """An outbox row the relay has yet to publish."""

    seq: int
    event_id: str
    event_type: str
    subject: str
    body: bytes


def unpublished(connection: Connection, limit: int) -> list[PendingEvent]:
    """The oldest events not yet published, in the order they were recorded."""
    rows = connection.execute(
        select(OutboxEvent.seq, OutboxEvent.event_id, OutboxEvent.event_type,
               OutboxEvent.subject, OutboxEvent.body)
        .where(OutboxEvent.published_at.is_(None)).order_by(OutboxEvent.seq).limit(limit)
    )  # fmt: skip
    return [PendingEvent(r.seq, r.event_id, r.event_type, r.subject, r.body.encode()) for r in rows]


def mark_published(connection: Connection, seqs: Sequence[int]) -> None:
    if seqs:
        connection.execute(
            update(OutboxEvent).where(OutboxEvent.seq.in_(seqs)).values(published_at=utcnow())
        )


def purge_published(connection: Connection, before: datetime) -> int:
    """Remove events published before `before`; returns how many. Unpublished ones stay."""
    result = connection.execute(
        delete(OutboxEvent).where(OutboxEvent.published_at.is_not(None),
                                  OutboxEvent.published_at < before)
    )  # fmt: skip
    return int(result.rowcount or 0)


def append_business_events(connection: Connection, bodies: Iterable[bytes]) -> int:
    """Each event's analytics row, once by id; returns how many were new."""
    rows = []
    for body in bodies:
        event = read_event(body)
        data = event.get_data()
        fields = data if isinstance(data, dict) else {}
        amount = fields.get("amount")
        money = Money.model_validate(amount) if isinstance(amount, dict) else None
        occurred = event.get_time() or utcnow()
        rows.append({
            "event_id": event.get_id(), "event_type": event.get_type(),
            "subject": event.get_subject() or "", "customer_id": fields.get("customer_id"),
            "amount_minor": money.to_minor() if money else None,
            "currency": money.currency if money else None, "occurred_at": occurred,
            "correlation_id": event.get_attributes().get("correlationid"), "data": fields,
            "received_at": utcnow(),
        })  # fmt: skip
    if not rows:
        return 0
    insert = _insert_for(connection)
    statement = (
        insert(BusinessEventRow).values(rows)
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(BusinessEventRow.event_id)
    )  # fmt: skip
    return len(connection.execute(statement).all())
