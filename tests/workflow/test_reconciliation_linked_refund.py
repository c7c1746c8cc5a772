"""Reconciliation's loaders over the books of a refund whose own credit note reached the ERP
before billing's credit note named the refund: the refund's credit note, its payment out
and the reversal stand as the ledger posted them, and nothing is reported."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import update

from adapters.ports import (
    BillingDocumentPage,
    BillingRefundPage,
    LedgerDocumentPage,
    LedgerPaymentPage,
)
from adapters.store import IntegrationStore
from adapters.store.models import Posting
from canonical import LinkedRefund, Money, Refund
from canonical.reconciliation import LedgerDocument
from tests.unit.test_posting_policy import FINALIZED, document, line
from tests.workflow.test_reconciliation import DAY, BooksBilling, BooksLedger, load_and_classify

THIRTY = Money.of("30.00", "EUR")
REVERSAL = "re_eur/credited-by/cn_eur"


class LinkedLaterBilling(BooksBilling):
    """The refund of the books' invoice, now named by billing's credit note `cn_eur`."""

    async def credit_note_page(self, *_: Any) -> BillingDocumentPage:
        note = document(
            line("cl1", "30.00").model_copy(update={"amount": THIRTY, "unit_amount": THIRTY}),
            document_id="cn_eur", kind="credit_note", status="issued", invoice_id="in_eur",
            currency="EUR", subtotal=THIRTY, tax=Money.of("0", "EUR"), total=THIRTY,
            refunds=[LinkedRefund(refund_id="re_eur", amount=THIRTY)],
        )  # fmt: skip
        return BillingDocumentPage(documents=[note])

    async def refund_page(self, *_: Any) -> BillingRefundPage:
        page = await super().refund_page()
        named: list[Refund] = [r.model_copy(update={"credit_note_id": "cn_eur"})
                               for r in page.refunds]  # fmt: skip
        return BillingRefundPage(refunds=named)


class LinkedLaterLedger(BooksLedger):
    """The books' ERP, plus the reversal of the refund's credit note and billing's note."""

    async def document_page(self, *_: Any) -> LedgerDocumentPage:
        page = await super().document_page()
        documents = (("3", REVERSAL, "invoice"), ("4", "cn_eur", "credit_note"))
        later = [
            LedgerDocument(
                erp_document_id=erp_id,
                reference=reference,
                kind=kind,  # type: ignore[arg-type]
                number=f"N{erp_id}",
                total=THIRTY,
                state="paid",
                customer_id="cus_1",
                document_date=FINALIZED.date(),
                taxes={},
            )
            for erp_id, reference, kind in documents
        ]
        return LedgerDocumentPage(documents=[*page.documents, *later])


def ledger_journal(store: IntegrationStore) -> None:
    """What the ledger journaled on the day: the refund's credit note, then the reversal."""
    for reference, kind, erp_id in (("re_eur", "credit_note", "2"), (REVERSAL, "invoice", "3")):
        store.record_posting(
            source_system="billing", source_document_id=reference, document_type=kind,
            customer_id="cus_1", erp_document_id=erp_id, erp_number=f"N{erp_id}",
            amount=THIRTY.amount, currency="EUR", workflow_id="customer-ledger/cus_1",
            correlation_id=None,
        )  # fmt: skip
    with store.session() as session:
        session.execute(update(Posting).values(posted_at=DAY.replace(month=11, day=14, hour=12)))


async def test_a_refund_credited_before_billing_named_it_reconciles_without_findings(
    tmp_path: Path,
) -> None:
    found = await load_and_classify(
        tmp_path, LinkedLaterLedger(), LinkedLaterBilling(), ledger_journal
    )
    # invoice, payment, the refund's credit note, its payout, billing's credit note; the
    # reversal agrees with the journal; billing's credit note, asked by no support case, is
    # reported as any such credit note is
    assert found == {"matched": 5, "matched_to_journal": 1, "credit_without_ticket": 1}


TWENTY = Money.of("20.00", "EUR")
PAID_ON_NOTE = "re_eur/paid-out-on/cn_eur"


class PartlyLinkedBilling(BooksBilling):
    """The books' refund of 30, which billing's credit note `cn_eur` of 20 names for 20."""

    def __init__(self) -> None:
        super().__init__()
        self.note = document(
            line("cl1", "20.00").model_copy(update={"amount": TWENTY, "unit_amount": TWENTY}),
            document_id="cn_eur", kind="credit_note", status="issued", invoice_id="in_eur",
            currency="EUR", subtotal=TWENTY, tax=Money.of("0", "EUR"), total=TWENTY,
            refunds=[LinkedRefund(refund_id="re_eur", amount=TWENTY)],
        )  # fmt: skip

    async def credit_note_page(self, *_: Any) -> BillingDocumentPage:
        return BillingDocumentPage(documents=[self.note])

    async def get_credit_note(self, credit_note_id: str) -> Any:
        assert credit_note_id == "cn_eur"
        return self.note

    async def refund_page(self, *_: Any) -> BillingRefundPage:
        page = await super().refund_page()
        return BillingRefundPage(
            refunds=[r.model_copy(update={"credit_note_id": "cn_eur"}) for r in page.refunds]
        )


class PartlyLinkedLedger(BooksLedger):
    """The ERP as the ledger books it: billing's credit note of 20 paid out on for 20, the
    refund's own credit note for the rest (10) and its payout."""

    async def document_page(self, *_: Any) -> LedgerDocumentPage:
        page = await super().document_page()
        docs = [d for d in page.documents if d.reference != "re_eur"]
        ten = Money.of("10.00", "EUR")
        for erp_id, reference, total in (("2", "re_eur", ten), ("4", "cn_eur", TWENTY)):
            docs.append(docs[0].model_copy(update={
                "erp_document_id": erp_id, "reference": reference, "kind": "credit_note",
                "number": f"N{erp_id}", "total": total, "taxes": {}}))  # fmt: skip
        return LedgerDocumentPage(documents=docs)

    async def payment_page(self, *_: Any) -> LedgerPaymentPage:
        page = await super().payment_page()
        inpay, payout = page.payments
        ten = Money.of("10.00", "EUR")
        on_note = payout.model_copy(update={"erp_document_id": "3", "reference": PAID_ON_NOTE,
                                            "amount": TWENTY, "applies_to": "cn_eur"})  # fmt: skip
        return LedgerPaymentPage(
            payments=[inpay, on_note, payout.model_copy(update={"amount": ten})]
        )


def partly_linked_journal(store: IntegrationStore) -> None:
    """The ledger journaled the part paid out on billing's note, then the refund's own credit
    note for the rest."""
    for reference, kind, erp_id, amount in (
        (PAID_ON_NOTE, "refund", "3", "20.00"), ("re_eur", "credit_note", "2", "10.00"),
    ):  # fmt: skip
        store.record_posting(
            source_system="billing", source_document_id=reference, document_type=kind,
            customer_id="cus_1", erp_document_id=erp_id, erp_number=f"N{erp_id}",
            amount=Decimal(amount), currency="EUR", workflow_id="customer-ledger/cus_1",
            correlation_id=None,
        )  # fmt: skip
    with store.session() as session:
        session.execute(update(Posting).values(posted_at=DAY.replace(month=11, day=14, hour=12)))


async def test_a_refund_billing_names_in_part_reconciles_paid_out_on_both_credit_notes(
    tmp_path: Path,
) -> None:
    found = await load_and_classify(
        tmp_path, PartlyLinkedLedger(), PartlyLinkedBilling(), partly_linked_journal
    )
    # invoice, payment, billing's credit note and the part paid out on it, the refund's own
    # credit note and its payout for the rest; billing's credit note, asked by no support
    # case, is reported as any such credit note is
    assert found == {"matched": 6, "credit_without_ticket": 1}
