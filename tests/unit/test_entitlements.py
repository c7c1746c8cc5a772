"""Entitlements from billing's subscription and invoices: the pure rules, without I/O."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from canonical import BillingDocument, DocumentLine, Money, Subscription, SubscriptionItem
from canonical.entitlements import Entitlements, entitlements_from_billing, paid_through

T0 = datetime(2026, 11, 1, tzinfo=UTC)
USD = Money.of("90", "USD")


def item(name: str, quantity: int = 1) -> SubscriptionItem:
    return SubscriptionItem(item_id=f"si_{name}", price_id="price_1", product_id="prod_1",
                            description=name, quantity=quantity, unit_amount=USD,
                            interval="month")  # fmt: skip


def subscription(*items: SubscriptionItem, status: str = "active") -> Subscription:
    return Subscription(subscription_id="sub_1", customer_id="cus_1", status=status,  # type: ignore[arg-type]
                        currency="USD", items=list(items), current_period_start=T0,
                        current_period_end=T0 + timedelta(30), created_at=T0)  # fmt: skip


def invoice(status: str, *period_ends: date, kind: str = "invoice") -> BillingDocument:
    lines = [DocumentLine(line_id=f"il_{n}", description="Pro", quantity=Decimal(1),
                          unit_amount=USD, amount=USD, period_end=end)
             for n, end in enumerate(period_ends)]  # fmt: skip
    return BillingDocument(document_id="in_1", kind=kind, status=status, customer_id="cus_1",  # type: ignore[arg-type]
                           currency="USD", lines=lines, subtotal=USD, tax=Money.zero("USD"),
                           total=USD, created_at=T0)  # fmt: skip


def test_the_plan_names_every_item_and_its_quantity() -> None:
    found = entitlements_from_billing("cus_1", subscription(item("Pro"), item("Seats", 3)), [], T0)
    assert found.plan == "Pro, Seats x3"
    assert (found.status, found.paid_through) == ("active", None)


def test_paid_through_is_the_latest_period_end_of_the_newest_paid_invoice() -> None:
    newest_first = [
        invoice("open", date(2026, 12, 31)),
        invoice("paid", date(2026, 11, 30), date(2026, 11, 15)),  # a proration line ends earlier
        invoice("paid", date(2026, 10, 31)),
    ]
    assert paid_through(newest_first) == date(2026, 11, 30)


def test_nothing_paid_is_paid_through_nothing() -> None:
    assert (
        paid_through([invoice("open", date(2026, 12, 31)), invoice("void", date(2026, 11, 30))])
        is None
    )


def test_no_subscription_reads_as_such() -> None:
    none = entitlements_from_billing("cus_1", None, [], T0)
    assert none.standing() == (None, None, None, None)
    assert none.describe() == "no subscription"


def test_the_same_standing_at_another_moment_needs_no_write() -> None:
    first = Entitlements(customer_id="cus_1", plan=" Pro ", status="active", as_of=T0)
    later = Entitlements(customer_id="cus_1", plan="Pro", status="active", as_of=T0 + timedelta(1))
    assert first.plan == "Pro"  # text is kept as support keeps it
    assert first.same_standing(later)
    assert not first.same_standing(later.model_copy(update={"status": "past_due"}))
    assert not first.same_standing(None)
