"""Reconciliation's loaders over the books of a refund whose own credit note reached the ERP
before billing's credit note named the refund: the refund's credit note, its payment out
and the reversal stand as the ledger posted them, and nothing is reported."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import update

from adapters.ports import BillingDocumentPage, BillingRefundPage, LedgerDocumentPage
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
