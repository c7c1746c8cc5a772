"""Contract: the pages reconciliation reads from billing and support, against the sandboxes
over HTTP. Every document of a period exactly once, across pages and while the system keeps
writing; the period's start inclusive and its end exclusive; metadata written is read back."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from adapters.billing import StripeBilling
from adapters.billing.stripe import IDEMPOTENCY_KEY_METADATA
from adapters.ports import BillingSystem, SupportDesk
from adapters.support import ZendeskSupport
from canonical import BalanceTransaction, BillingDocument, Money
from canonical.reconciliation import BillingDocumentPage, TicketCredit
from sandbox.billing.driver import BillingDriver
from tests.fixtures.billing import BillingSandbox
from tests.fixtures.support import (
    SupportSandbox,
    create_organization,
    create_ticket_with_credit,
)

HOUR = 3600.0
FAR = timedelta(days=30)

PageReader = Callable[[datetime, datetime, str | None, int], Awaitable[BillingDocumentPage]]


def usd(amount: str) -> Money:
    return Money.of(amount, "USD")


def raw(sandbox: BillingSandbox, path: str, **params: Any) -> Any:
    with sandbox.http() as client:
        answer = client.get(path, params=params)
    answer.raise_for_status()
    return answer.json()


async def customer(driver: BillingDriver, name: str) -> str:
    created = await driver.create_customer(
        name, email=f"{name.lower()}@example.test", idempotency_key=f"{name}/customer"
    )
    return created.id


async def open_invoice(
    driver: BillingDriver, port: BillingSystem, customer_id: str, key: str
) -> BillingDocument:
    """A finalized (open) invoice of 100.00 USD, as the port reads it."""
    created = await driver.charge_once(customer_id, 10000, "usd", f"Service {key}", key=key)
    return await port.get_invoice(str(created.id))


async def read_documents(
    read: PageReader, start: datetime, end: datetime, limit: int
) -> tuple[list[str], int]:
    """Every document id of the period, page by page, and how many pages it took."""
    ids: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await read(start, end, cursor, limit)
        pages += 1
        assert len(page.documents) <= limit
        ids.extend(document.document_id for document in page.documents)
        if page.next_cursor is None:
            return ids, pages
        cursor = page.next_cursor


# invoices ---------------------------------------------------------------------------------


async def test_invoice_pages_give_each_invoice_of_the_period_once_oldest_first(
    stripe_billing: StripeBilling, billing_sandbox: BillingSandbox, billing_driver: BillingDriver
) -> None:
    port: BillingSystem = stripe_billing
    buyer = await customer(billing_driver, "Pager")
    await open_invoice(billing_driver, stripe_billing, buyer, "before")
    inside = []
    for number in range(5):
        billing_sandbox.shift_clock(HOUR)
        inside.append(await open_invoice(billing_driver, stripe_billing, buyer, f"in{number}"))
    billing_sandbox.shift_clock(HOUR)
    at_end = await open_invoice(billing_driver, stripe_billing, buyer, "after")

    ids, pages = await read_documents(
        port.invoice_page, inside[0].created_at, at_end.created_at, limit=2
    )

    assert ids == [invoice.document_id for invoice in inside]  # from inclusive, until exclusive
    assert pages == 3


async def test_invoice_pages_start_right_when_nothing_precedes_the_period(
    stripe_billing: StripeBilling, billing_sandbox: BillingSandbox, billing_driver: BillingDriver
) -> None:
    buyer = await customer(billing_driver, "First")
    inside = []
    for number in range(5):
        inside.append(await open_invoice(billing_driver, stripe_billing, buyer, f"in{number}"))
        billing_sandbox.shift_clock(HOUR)
    after = await open_invoice(billing_driver, stripe_billing, buyer, "after")

    ids, pages = await read_documents(
        stripe_billing.invoice_page, inside[0].created_at - FAR, after.created_at, limit=2
    )

    assert ids == [invoice.document_id for invoice in inside]
    assert pages == 3


async def test_invoice_pages_map_drafts_and_every_line(
    stripe_billing: StripeBilling, billing_sandbox: BillingSandbox, billing_driver: BillingDriver
) -> None:
    buyer = await customer(billing_driver, "Lines")
    for number in range(12):  # more lines than Stripe embeds in an invoice (10)
        await billing_driver.add_invoice_item(
            buyer, 100, "usd", f"Line {number}", idempotency_key=f"lines/{number}"
        )
    created = await billing_driver.invoice_pending_items(buyer, idempotency_key="lines/draft")
    draft = await stripe_billing.get_invoice(str(created.id))

    page = await stripe_billing.invoice_page(
        draft.created_at, draft.created_at + timedelta(seconds=1), None, 10
    )

    assert page.documents == [draft]
    assert page.documents[0].status == "draft" and len(page.documents[0].lines) == 12
    assert page.next_cursor is None


async def test_invoice_created_while_paging_is_read_once_on_a_later_page(
    stripe_billing: StripeBilling, billing_sandbox: BillingSandbox, billing_driver: BillingDriver
) -> None:
    buyer = await customer(billing_driver, "Busy")
    await open_invoice(billing_driver, stripe_billing, buyer, "before")
    billing_sandbox.shift_clock(HOUR)
    inside = [await open_invoice(billing_driver, stripe_billing, buyer, f"in{n}") for n in range(3)]
    start, end = inside[0].created_at, inside[0].created_at + FAR

    first = await stripe_billing.invoice_page(start, end, None, 2)
    billing_sandbox.shift_clock(HOUR)
    late = await open_invoice(billing_driver, stripe_billing, buyer, "late")
    ids = [d.document_id for d in first.documents]
    cursor = first.next_cursor
    while cursor is not None:
        page = await stripe_billing.invoice_page(start, end, cursor, 2)
        ids.extend(d.document_id for d in page.documents)
        cursor = page.next_cursor

    assert ids == [*(invoice.document_id for invoice in inside), late.document_id]


async def test_an_empty_period_is_one_empty_last_page(
    stripe_billing: StripeBilling, billing_sandbox: BillingSandbox, billing_driver: BillingDriver
) -> None:
    buyer = await customer(billing_driver, "Quiet")
    invoice = await open_invoice(billing_driver, stripe_billing, buyer, "only")
    later = invoice.created_at + timedelta(hours=1)

    for start in (invoice.created_at - FAR, later):
        page = await stripe_billing.invoice_page(start, start + timedelta(minutes=30), None, 5)
        assert page.documents == [] and page.next_cursor is None


# credit notes -----------------------------------------------------------------------------


async def test_credit_note_pages_give_each_note_once_and_keep_its_metadata(
    stripe_billing: StripeBilling, billing_sandbox: BillingSandbox, billing_driver: BillingDriver
) -> None:
    port: BillingSystem = stripe_billing
    buyer = await customer(billing_driver, "Noted")
    invoice = await open_invoice(billing_driver, stripe_billing, buyer, "noted")
    await stripe_billing.create_credit_note(
        invoice.document_id, usd("1.00"), "Before", None, "cn/before"
    )
    inside = []
    for number in range(3):
        billing_sandbox.shift_clock(HOUR)
        inside.append(
            await port.create_credit_note(
                invoice.document_id,
                usd("2.00"),
                f"Goodwill {number}",
                "product_unsatisfactory",
                f"cn/{number}",
                metadata={"case_id": f"36000{number}"},
            )
        )
    billing_sandbox.shift_clock(HOUR)
    after = await stripe_billing.create_credit_note(
        invoice.document_id, usd("1.00"), "After", None, "cn/after"
    )

    ids, pages = await read_documents(
        port.credit_note_page, inside[0].created_at, after.created_at, limit=2
    )

    assert ids == [note.document_id for note in inside]
    assert pages == 2
    page = await port.credit_note_page(inside[0].created_at, after.created_at, None, 1)
    assert page.documents == [inside[0]]  # mapped as when it was created
    assert page.documents[0].invoice_id == invoice.document_id
    for number, note in enumerate(inside):
        stored = raw(billing_sandbox, f"/v1/credit_notes/{note.document_id}")
        assert stored["metadata"] == {
            "case_id": f"36000{number}",
            IDEMPOTENCY_KEY_METADATA: f"cn/{number}",  # how a retry after a lost answer finds it
        }


# balance adjustments ----------------------------------------------------------------------


async def test_balance_credits_carry_their_kind_and_metadata_written_and_read(
    stripe_billing: StripeBilling, billing_sandbox: BillingSandbox, billing_driver: BillingDriver
) -> None:
    port: BillingSystem = stripe_billing
    buyer = await customer(billing_driver, "Credited")

    granted = await port.create_balance_credit(
        buyer, usd("10.00"), "Support credit", "bal/grant", metadata={"case_id": "360001"}
    )
    reversed_ = await port.reverse_balance_credit(
        buyer,
        usd("10.00"),
        "Support credit taken back",
        "bal/reverse",
        metadata={"case_id": "360001", "reverses": granted.transaction_id},
    )
    plain = await port.create_balance_credit(buyer, usd("1.00"), "No metadata", "bal/plain")

    assert (granted.kind, granted.metadata) == ("adjustment", {"case_id": "360001"})
    assert reversed_.metadata == {"case_id": "360001", "reverses": granted.transaction_id}
    assert reversed_.amount == usd("10.00") and granted.amount == usd("-10.00")
    assert plain.metadata == {}
    stored = raw(
        billing_sandbox, f"/v1/customers/{buyer}/balance_transactions/{granted.transaction_id}"
    )
    assert stored["metadata"] == {"case_id": "360001"}


async def test_balance_credit_pages_give_each_adjustment_of_the_period_once(
    stripe_billing: StripeBilling, billing_sandbox: BillingSandbox, billing_driver: BillingDriver
) -> None:
    port: BillingSystem = stripe_billing
    buyer = await customer(billing_driver, "Ledgered")
    await port.create_balance_credit(buyer, usd("1.00"), "Before", "p/before")
    billing_sandbox.shift_clock(HOUR)
    granted = await port.create_balance_credit(
        buyer, usd("10.00"), "Credit", "p/grant", metadata={"case_id": "42"}
    )
    billing_sandbox.shift_clock(HOUR)
    taken_back = await port.reverse_balance_credit(
        buyer, usd("10.00"), "Reversal", "p/reverse", metadata={"reverses": granted.transaction_id}
    )
    billing_sandbox.shift_clock(HOUR)
    paid = await open_invoice(
        billing_driver, stripe_billing, buyer, "p/invoice"
    )  # uses the 1.00 credit
    await billing_driver.pay(paid.document_id, idempotency_key="p/pay")
    note = await stripe_billing.create_credit_note(
        paid.document_id, usd("5.00"), "Refund to balance", None, "p/note"
    )
    billing_sandbox.shift_clock(HOUR)
    after = await port.create_balance_credit(buyer, usd("1.00"), "After", "p/after")
    other = await customer(billing_driver, "Other")
    await port.create_balance_credit(other, usd("3.00"), "Someone else", "p/other")

    seen: list[BalanceTransaction] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await port.balance_credit_page(
            buyer, granted.created_at, after.created_at, cursor, 2
        )
        pages += 1
        seen.extend(page.transactions)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor

    assert pages == 2
    assert [t.kind for t in seen] == [
        "adjustment",
        "adjustment",
        "applied_to_invoice",
        "credit_note",
    ]
    assert seen[:2] == [granted, taken_back]  # read back as written, metadata included
    assert seen[1].metadata == {"reverses": granted.transaction_id}
    assert seen[2].invoice_id == paid.document_id and seen[2].amount == usd("1.00")
    assert seen[3].credit_note_id == note.document_id and seen[3].amount == usd("-5.00")
    assert all(t.customer_id == buyer for t in seen)


def test_sandbox_lists_balance_transactions_by_created_as_stripe_does(
    billing_sandbox: BillingSandbox,
) -> None:
    with billing_sandbox.http() as client:
        buyer = client.post("/v1/customers", data={"name": "Sdk"}).json()["id"]
        first = client.post(
            f"/v1/customers/{buyer}/balance_transactions",
            data={"amount": -100, "currency": "usd"},
        ).json()
        billing_sandbox.shift_clock(HOUR)
        second = client.post(
            f"/v1/customers/{buyer}/balance_transactions",
            data={"amount": -200, "currency": "usd", "metadata[case_id]": "7"},
        ).json()
    sdk = billing_sandbox.sdk()

    since_second = sdk.v1.customers.balance_transactions.list(
        buyer, {"created": {"gte": second["created"]}}
    )
    before_second = sdk.v1.customers.balance_transactions.list(
        buyer, {"created": {"lt": second["created"]}}
    )
    exactly_first = sdk.v1.customers.balance_transactions.list(buyer, {"created": first["created"]})

    assert [t.id for t in since_second.data] == [second["id"]]
    assert since_second.data[0].metadata.to_dict() == {"case_id": "7"}
    assert [t.id for t in before_second.data] == [first["id"]]
    assert [t.id for t in exactly_first.data] == [first["id"]]


# credit tickets ---------------------------------------------------------------------------


def next_second(after: datetime) -> None:
    """Wait until the wall clock (support's clock) is past the second of `after`."""
    while datetime.now(UTC).replace(microsecond=0) <= after:
        time.sleep(0.02)


def stamp(ticket: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(str(ticket["updated_at"]))


async def read_tickets(
    support: SupportDesk, start: datetime, end: datetime, limit: int
) -> tuple[list[TicketCredit], int]:
    tickets: list[TicketCredit] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await support.credit_ticket_page(start, end, cursor, limit)
        pages += 1
        assert len(page.tickets) <= limit
        tickets.extend(page.tickets)
        if page.next_cursor is None:
            return tickets, pages
        cursor = page.next_cursor


async def test_credit_ticket_pages_give_each_tagged_ticket_once_with_its_customer(
    zendesk_support: ZendeskSupport, support_sandbox: SupportSandbox
) -> None:
    port: SupportDesk = zendesk_support
    acme = create_organization(support_sandbox, "Acme Corp", external_id="cus_acme001")
    globex = create_organization(support_sandbox, "Globex", external_id="cus_globex01")
    tagged = []
    for number in range(5):
        org = acme if number % 2 == 0 else globex
        tagged.append(
            create_ticket_with_credit(
                support_sandbox,
                organization_id=org["id"],
                amount=f"1{number}.50",
                tags=["outage", "credit_applied"],
            )
        )
        create_ticket_with_credit(support_sandbox, organization_id=org["id"], tags=["outage"])
    start = min(stamp(t) for t in tagged)

    found, pages = await read_tickets(port, start, datetime.now(UTC) + FAR, limit=2)

    assert sorted(t.case_id for t in found) == sorted(str(t["id"]) for t in tagged)
    assert len(found) == 5 and pages == 3
    by_case = {t.case_id: t for t in found}
    for number, ticket in enumerate(tagged):
        credit = by_case[str(ticket["id"])]
        assert credit.customer_id == ("cus_acme001" if number % 2 == 0 else "cus_globex01")
        assert credit.amount == Money(amount=Decimal(f"1{number}.50"), currency="EUR")
        assert credit.updated_at == stamp(ticket)


async def test_credit_ticket_page_honours_the_updated_range(
    zendesk_support: ZendeskSupport, support_sandbox: SupportSandbox
) -> None:
    org = create_organization(support_sandbox, "Acme Corp", external_id="cus_acme001")
    early = create_ticket_with_credit(
        support_sandbox, organization_id=org["id"], tags=["credit_applied"]
    )
    next_second(stamp(early))
    late = create_ticket_with_credit(
        support_sandbox, organization_id=org["id"], tags=["credit_applied"]
    )
    assert stamp(late) > stamp(early)

    until_late, _ = await read_tickets(zendesk_support, stamp(early), stamp(late), 10)
    from_late, _ = await read_tickets(zendesk_support, stamp(late), stamp(late) + FAR, 10)
    just_after_early, _ = await read_tickets(
        zendesk_support, stamp(early) + timedelta(milliseconds=1), stamp(late), 10
    )

    assert [t.case_id for t in until_late] == [str(early["id"])]  # until is exclusive
    assert [t.case_id for t in from_late] == [str(late["id"])]  # from is inclusive
    assert just_after_early == []


async def test_ticket_tagged_later_is_found_by_its_new_update_time(
    zendesk_support: ZendeskSupport, support_sandbox: SupportSandbox
) -> None:
    org = create_organization(support_sandbox, "Acme Corp", external_id="cus_acme001")
    created = create_ticket_with_credit(support_sandbox, organization_id=org["id"])
    start = stamp(created)
    assert (await zendesk_support.credit_ticket_page(start, start + FAR, None, 10)).tickets == []

    next_second(stamp(created))
    await zendesk_support.add_tags(str(created["id"]), ["credit_applied"], "tag/1")

    page = await zendesk_support.credit_ticket_page(start, start + FAR, None, 10)
    assert [t.case_id for t in page.tickets] == [str(created["id"])]
    assert page.tickets[0].updated_at > start and page.next_cursor is None
    earlier = await zendesk_support.credit_ticket_page(
        start, start + timedelta(seconds=1), None, 10
    )
    assert earlier.tickets == []


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"amount": None}, "no amount filled in"),
        ({"amount": "twelve"}, "not a number"),
        ({"amount": "-5.00"}, "not positive"),
        ({"currency": None}, "no currency"),
        ({"currency": "XXY"}, "unknown currency"),
        ({"amount": "12.345"}, "more decimals than EUR has"),
    ],
)
async def test_credit_ticket_amount_is_none_when_the_credit_fields_are_unset_or_malformed(
    zendesk_support: ZendeskSupport,
    support_sandbox: SupportSandbox,
    fields: dict[str, str | None],
    why: str,
) -> None:
    org = create_organization(support_sandbox, "Acme Corp", external_id="cus_acme001")
    created = create_ticket_with_credit(
        support_sandbox, organization_id=org["id"], tags=["credit_applied"], **fields
    )

    page = await zendesk_support.credit_ticket_page(stamp(created), stamp(created) + FAR, None, 10)

    [credit] = page.tickets
    assert credit.amount is None, why
    assert credit.case_id == str(created["id"]) and credit.customer_id == "cus_acme001"


async def test_credit_ticket_amount_does_not_need_the_reason(
    zendesk_support: ZendeskSupport, support_sandbox: SupportSandbox
) -> None:
    created = create_ticket_with_credit(
        support_sandbox, organization_id=None, reason=None, tags=["credit_applied"]
    )

    page = await zendesk_support.credit_ticket_page(stamp(created), stamp(created) + FAR, None, 10)

    [credit] = page.tickets
    assert credit.amount == Money(amount=Decimal("120.00"), currency="EUR")
    assert credit.customer_id is None  # no organization: no known customer


async def test_credit_ticket_of_an_organization_without_external_id_has_no_customer(
    zendesk_support: ZendeskSupport, support_sandbox: SupportSandbox
) -> None:
    org = create_organization(support_sandbox, "Walk-in")
    created = create_ticket_with_credit(
        support_sandbox, organization_id=org["id"], tags=["credit_applied"]
    )

    page = await zendesk_support.credit_ticket_page(stamp(created), stamp(created) + FAR, None, 10)

    assert [(t.case_id, t.customer_id) for t in page.tickets] == [(str(created["id"]), None)]


def test_sandbox_search_export_refuses_what_it_cannot_apply(
    support_sandbox: SupportSandbox,
) -> None:
    with support_sandbox.api() as api:
        free_text = api.get(
            "/api/v2/search/export",
            params={"query": "tags:credit_applied outage", "filter[type]": "ticket"},
        )
        no_type = api.get("/api/v2/search/export", params={"query": "tags:credit_applied"})
        bad_time = api.get(
            "/api/v2/search/export",
            params={"query": "updated>=yesterday", "filter[type]": "ticket"},
        )

    for answer in (free_text, no_type, bad_time):
        assert answer.status_code == 400
        assert isinstance(answer.json()["error"], str) and answer.json()["description"]


def test_sandbox_search_export_pages_by_cursor_in_zendesks_shape(
    support_sandbox: SupportSandbox,
) -> None:
    org = create_organization(support_sandbox, "Acme Corp", external_id="cus_acme001")
    tagged = [
        create_ticket_with_credit(support_sandbox, organization_id=org["id"], tags=["vip"])
        for _ in range(3)
    ]
    query = {"query": "tags:vip status:new", "filter[type]": "ticket"}

    with support_sandbox.api() as api:
        first = api.get("/api/v2/search/export.json", params={**query, "page[size]": 2}).json()
        second = api.get(first["links"]["next"]).json()

    assert [r["id"] for r in first["results"]] == [t["id"] for t in tagged[:2]]
    assert {r["result_type"] for r in first["results"]} == {"ticket"}
    assert first["meta"]["has_more"] is True and first["meta"]["after_cursor"]
    assert [r["id"] for r in second["results"]] == [tagged[2]["id"]]
    assert second["meta"]["has_more"] is False and second["links"]["next"] is None


def test_sandbox_search_export_compares_update_times(support_sandbox: SupportSandbox) -> None:
    ticket = create_ticket_with_credit(support_sandbox, organization_id=None, tags=["vip"])
    at = str(ticket["updated_at"])  # 2026-03-01T12:00:00Z
    day = at[:10]

    def ids(terms: str) -> list[int]:
        params = {"query": f"tags:vip {terms}", "filter[type]": "ticket"}
        with support_sandbox.api() as api:
            answer = api.get("/api/v2/search/export", params=params)
        answer.raise_for_status()
        return [r["id"] for r in answer.json()["results"]]

    assert ids(f"updated>={at}") == [ticket["id"]]
    assert ids(f"updated<={at}") == [ticket["id"]]
    assert ids(f"updated>{at}") == []
    assert ids(f"updated<{at}") == []
    assert ids(f"updated>={day} created>={day}") == [ticket["id"]]
    assert ids(f"updated<{day}") == []
