"""StripeBilling refuses ids not of Stripe's shape before any HTTP call.

The adapter points at a port nothing listens on: a call that went out would fail as
TransientError ("cannot reach billing"), so NotFoundError proves no request was made.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import pytest
import pytest_asyncio

from adapters.billing import StripeBilling
from adapters.errors import NotFoundError, TransientError
from canonical import Money
from tests.fixtures.servers import free_port

SINCE = datetime(2026, 1, 1, tzinfo=UTC)
UNTIL = datetime(2026, 2, 1, tzinfo=UTC)
CREDIT = Money.of("10.00", "USD")

Call = Callable[[StripeBilling, str], Awaitable[object]]

# Each method that puts an id into a URL path, and a well-formed id of its kind.
METHODS: dict[str, tuple[Call, str]] = {
    "get_customer": (lambda b, i: b.get_customer(i), "cus_NffrFeUfNV2Hib"),
    "get_subscription": (lambda b, i: b.get_subscription(i), "sub_1MowQVLkdIwHu7ix"),
    "get_invoice": (lambda b, i: b.get_invoice(i), "in_1MtHbELkdIwHu7ix"),
    "get_credit_note": (lambda b, i: b.get_credit_note(i), "cn_1MxvRqLkdIwHu7ix"),
    "void_credit_note": (
        lambda b, i: b.void_credit_note(i, idempotency_key="k"),
        "cn_1MxvRqLkdIwHu7ix",
    ),
    "create_credit_note": (
        lambda b, i: b.create_credit_note(i, CREDIT, "Credit", None, "k"),
        "in_1MtHbELkdIwHu7ix",
    ),
    "create_balance_credit": (
        lambda b, i: b.create_balance_credit(i, CREDIT, "Credit", "k"),
        "cus_NffrFeUfNV2Hib",
    ),
    "reverse_balance_credit": (
        lambda b, i: b.reverse_balance_credit(i, CREDIT, "Credit", "k"),
        "cus_NffrFeUfNV2Hib",
    ),
    "balance_credit_page": (
        lambda b, i: b.balance_credit_page(i, SINCE, UNTIL, None, 10),
        "cus_NffrFeUfNV2Hib",
    ),
    "get_event": (lambda b, i: b.get_event(i), "evt_1NG8Du2eZvKYlo2CUI79vXWy"),
    "invoice_payments": (lambda b, i: b.invoice_payments(i), "in_1MtHbELkdIwHu7ix"),
    "get_refund": (lambda b, i: b.get_refund(i), "re_1Nispe2eZvKYlo2Cd31jOCgZ"),
    "charge_refunds": (lambda b, i: b.charge_refunds(i), "ch_3MmlLrLkdIwHu7ix0snN0B15"),
    "open_receivable_page": (lambda b, i: b.open_receivable_page(i, 10), "cus_NffrFeUfNV2Hib"),
}

MALFORMED = [".", "..", "", "cus_../v1/events", "in_1?limit=1", "evt_%2e%2e", "evt_a b", "x" * 300]


@pytest_asyncio.fixture
async def unreachable_billing() -> AsyncIterator[StripeBilling]:
    async with StripeBilling(f"http://127.0.0.1:{free_port()}", "sk_test_x", timeout=2.0) as b:
        yield b


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("bad_id", MALFORMED)
async def test_malformed_id_is_not_found_without_a_call(
    unreachable_billing: StripeBilling, method: str, bad_id: str
) -> None:
    call, _ = METHODS[method]

    with pytest.raises(NotFoundError) as refused:
        await call(unreachable_billing, bad_id)

    assert refused.value.operation == method and refused.value.status is None


@pytest.mark.parametrize("method", sorted(METHODS))
async def test_id_of_another_kind_is_not_found_without_a_call(
    unreachable_billing: StripeBilling, method: str
) -> None:
    call, good = METHODS[method]
    other_prefix = "in_" if good.startswith("ch_") else "ch_"
    other_kind = other_prefix + good.split("_", 1)[1]

    with pytest.raises(NotFoundError):
        await call(unreachable_billing, other_kind)


@pytest.mark.parametrize("method", sorted(METHODS))
async def test_well_formed_id_is_sent(unreachable_billing: StripeBilling, method: str) -> None:
    call, good = METHODS[method]

    with pytest.raises(TransientError, match="cannot reach billing"):
        await call(unreachable_billing, good)
