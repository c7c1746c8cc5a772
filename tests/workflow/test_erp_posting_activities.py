"""The ERP posting activities on their own (ActivityEnvironment): finance's mapping is
applied before the ERP is asked, and what stops a posting is non-retryable and named."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import cast

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.amendments import ErpPostingActivities, PostDocumentInput, PostPaymentInput
from adapters.mapping_file import MappingFile
from adapters.ports import Ledger
from canonical import LedgerLine, LedgerPosting, PaymentPosting
from canonical.ledger import required_postings
from canonical.mapping import SUPPORT_CREDIT_LINE
from tests.workflow.test_subscription_ledger import (
    FakeErp,
    FakeWorld,
    finance_mapping,
    invoice,
    usd,
)


def activities(world: FakeWorld, with_mapping: bool = True) -> ErpPostingActivities:
    source = MappingFile(world.mapping_path) if with_mapping else None
    return ErpPostingActivities(cast(Ledger, FakeErp(world)), source)


def posting_of(doc_id: str, product: str = "prod_basic") -> PostDocumentInput:
    [posting] = required_postings(invoice(doc_id, "10.00", product=product))
    return PostDocumentInput(posting=posting)


async def test_document_is_posted_with_the_mapped_product_and_account() -> None:
    world = FakeWorld()
    posted = await ActivityEnvironment().run(activities(world).post_ledger_document,
                                             posting_of("in_1"))  # fmt: skip
    assert posted.reference == "in_1"
    [line] = world.erp_postings["in_1"].lines
    assert (line.erp_product, line.revenue_account) == ("SUBSCRIPTION", "4000")


async def test_a_worker_without_a_mapping_refuses_to_post_and_says_why() -> None:
    world = FakeWorld()
    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(
            activities(world, with_mapping=False).post_ledger_document, posting_of("in_1")
        )
    assert (refused.value.type, refused.value.non_retryable) == ("MappingFileError", True)
    assert world.post_calls == 0


async def test_unmapped_lines_are_all_named_at_once_and_the_erp_is_not_asked() -> None:
    world = FakeWorld()
    world.set_mapping(finance_mapping(version=7).model_copy(update={"currencies": []}))
    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(
            activities(world).post_ledger_document, posting_of("in_1", product="prod_x")
        )
    assert (refused.value.type, refused.value.non_retryable) == ("Unmapped", True)
    [details] = refused.value.details
    assert details["missing"] == ["currency USD", "product prod_x (price none, line 'line 0')"]
    assert details["mapping_version"] == 7
    assert world.post_calls == 0


async def test_closed_period_refuses_a_payment_before_the_erp_writes() -> None:
    world = FakeWorld()
    world.period_open = False
    payment = PaymentPosting(
        reference="inpay_1", kind="payment", customer_id="cus_1", applies_to="in_1",
        amount=usd("10.00"), payment_date=datetime(2026, 11, 2, tzinfo=UTC).date(),
        method="card", description="payment",
    )  # fmt: skip
    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(
            activities(world).post_ledger_payment, PostPaymentInput(posting=payment)
        )
    assert (refused.value.type, refused.value.non_retryable) == ("PeriodClosed", True)
    assert world.payment_calls == 0


async def test_support_credit_is_booked_on_the_mapping_support_credits_entry() -> None:
    world = FakeWorld()  # its mapping file is written by render_mapping, read by MappingFile
    posting = LedgerPosting(
        reference="cbtxn_1", kind="credit_note", customer_id="cus_1", currency="USD",
        lines=[LedgerLine(description="Support credit", quantity=Decimal(1),
                          unit_price=Decimal("40.00"), product_id=SUPPORT_CREDIT_LINE)],
        total=usd("40.00"), billing_date=date(2026, 11, 2), description="Support credit",
    )  # fmt: skip
    await ActivityEnvironment().run(
        activities(world).post_ledger_document, PostDocumentInput(posting=posting)
    )
    [line] = world.erp_postings["cbtxn_1"].lines
    assert (line.erp_product, line.revenue_account) == ("REFUND", "4900")
