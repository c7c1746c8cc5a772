"""Contract: a refund that billing holds `pending`, as Stripe does for its test card
4000000000007726 (`pm_card_pendingRefund`), through the official SDK; moved on by the
sandbox's control route (Stripe moves it by itself) with the events Stripe sends, in the
shapes the SDK declares, and read by the product's adapter as it then is."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from adapters.billing.stripe import StripeBilling
from sandbox.billing.driver import BillingDriver
from tests.contract.test_stripe_payments import charge_of, open_invoice, shop
from tests.contract.test_stripe_shapes import undeclared
from tests.fixtures.billing import BillingSandbox

PENDING_REFUND_CARD = "pm_card_pendingRefund"


async def charge_paid_by(driver: BillingDriver, tag: str, card: str, amount: int = 5000) -> str:
    customer_id, _ = await shop(driver, tag)
    invoice_id = await open_invoice(driver, customer_id, amount, f"{tag}/inv")
    await driver.pay(invoice_id, idempotency_key=f"{tag}/pay", payment_method=card)
    [payment] = await driver.invoice_payments(invoice_id)
    return str((await charge_of(driver, payment)).id)


def no_undeclared_fields(events: list[dict[str, Any]]) -> None:
    problems = [bad for e in events for bad in undeclared(e["data"]["object"], None, e["type"])]
    assert problems == []


async def test_a_refund_of_the_pending_refund_card_starts_pending_then_succeeds_with_its_events(
    billing_driver: BillingDriver, billing_sandbox: BillingSandbox, stripe_billing: StripeBilling
) -> None:
    charge_id = await charge_paid_by(billing_driver, "pend", PENDING_REFUND_CARD)
    before = len(billing_sandbox.events())

    refund = await billing_driver.refund(charge_id=charge_id, amount=2000, idempotency_key="pend/r")

    assert (refund.status, refund.pending_reason, refund.amount) == ("pending", "processing", 2000)
    charge = await billing_driver.client.v1.charges.retrieve_async(charge_id)
    assert charge.amount_refunded == 2000  # Stripe counts a pending refund as refunded
    [seen] = await stripe_billing.charge_refunds(charge_id)
    assert (seen.refund_id, seen.status) == (refund.id, "pending")
    created = billing_sandbox.events()[before:]
    assert [e["type"] for e in created] == ["refund.created", "charge.refunded"]

    settled = billing_sandbox.settle_refund(str(refund.id), "succeeded")

    assert settled["status"] == "succeeded" and "pending_reason" not in settled
    again = await billing_driver.client.v1.refunds.retrieve_async(str(refund.id))
    assert (again.status, again.amount) == ("succeeded", 2000)
    [seen] = await stripe_billing.charge_refunds(charge_id)
    assert seen.status == "succeeded"
    updates = billing_sandbox.events()[before + len(created) :]
    assert [e["type"] for e in updates] == ["charge.refund.updated", "refund.updated"]
    for update in updates:
        # A Refund names no customer: routing cannot tell whose ledger it is.
        assert update["data"]["object"]["object"] == "refund"
        assert update["data"]["object"]["id"] == refund.id
        assert update["data"]["previous_attributes"] == {"status": "pending"}
    no_undeclared_fields(created + updates)


async def test_a_pending_refund_that_fails_gives_the_money_back_to_the_charge(
    billing_driver: BillingDriver, billing_sandbox: BillingSandbox, stripe_billing: StripeBilling
) -> None:
    charge_id = await charge_paid_by(billing_driver, "pfail", PENDING_REFUND_CARD)
    refund = await billing_driver.refund(charge_id=charge_id, idempotency_key="pfail/r")
    before = len(billing_sandbox.events())

    failed = billing_sandbox.settle_refund(str(refund.id), "failed")

    assert (failed["status"], failed["failure_reason"]) == ("failed", "expired_or_canceled_card")
    txn = await billing_driver.client.v1.balance_transactions.retrieve_async(
        failed["failure_balance_transaction"]
    )
    assert (txn.type, txn.amount, txn.source) == ("refund_failure", 5000, refund.id)
    charge = await billing_driver.client.v1.charges.retrieve_async(charge_id)
    assert (charge.amount_refunded, charge.refunded) == (0, False)
    [seen] = await stripe_billing.charge_refunds(charge_id)
    assert seen.status == "failed"
    events = billing_sandbox.events()[before:]
    assert [e["type"] for e in events] == ["charge.refund.updated", "refund.updated"]
    no_undeclared_fields(events)
    # What failed to go back may be refunded again.
    second = await billing_driver.refund(charge_id=charge_id, idempotency_key="pfail/r2")
    assert (second.amount, second.status) == (5000, "pending")


async def test_only_a_pending_refund_moves_on_and_only_to_an_outcome_stripe_has(
    billing_driver: BillingDriver, billing_sandbox: BillingSandbox
) -> None:
    visa_charge = await charge_paid_by(billing_driver, "pvisa", "pm_card_visa")
    at_once = await billing_driver.refund(charge_id=visa_charge, idempotency_key="pvisa/r")
    pending_charge = await charge_paid_by(billing_driver, "pbad", PENDING_REFUND_CARD)
    pending = await billing_driver.refund(charge_id=pending_charge, idempotency_key="pbad/r")
    before = len(billing_sandbox.events())

    assert at_once.status == "succeeded"
    with pytest.raises(httpx.HTTPStatusError) as not_pending:
        billing_sandbox.settle_refund(str(at_once.id), "failed")
    with pytest.raises(httpx.HTTPStatusError) as bad_status:
        billing_sandbox.settle_refund(str(pending.id), "canceled")
    with pytest.raises(httpx.HTTPStatusError) as unknown:
        billing_sandbox.settle_refund("re_nosuch", "succeeded")

    assert not_pending.value.response.status_code == 400
    assert "only a pending refund" in not_pending.value.response.text
    assert bad_status.value.response.status_code == 400
    assert unknown.value.response.status_code == 404
    still = await billing_driver.client.v1.refunds.retrieve_async(str(pending.id))
    assert still.status == "pending"
    assert len(billing_sandbox.events()) == before  # nothing changed, nothing sent
