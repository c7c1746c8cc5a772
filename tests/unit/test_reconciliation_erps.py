"""Which ERP's reconciliation each billing document, payment and refund belongs to, and where
a customer's receivable is compared, once entities are routed to two ERPs."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from canonical.erp_routing import (
    EntityMatch,
    ErpRouting,
    ErpTarget,
    LegalEntity,
    ModeChange,
    single_erp_routing,
)
from canonical.reconciliation_erps import (
    BillingFact,
    booking_erp,
    erp_on_home_queue,
    home_erp,
    receivable_compared,
    routed_erp,
)

ROUTING = ErpRouting(
    version=1,
    erps={"tryton": ErpTarget(kind="tryton", queue="erp"),
          "eu": ErpTarget(kind="tryton", queue="erp-eu")},
    entities=[
        LegalEntity(name="EU", legacy="tryton", target="eu", match=EntityMatch(countries=["DE"])),
        LegalEntity(name="APAC", legacy="eu", match=EntityMatch(currencies=["JPY"])),
        LegalEntity(name="US", legacy="tryton", match=EntityMatch(default=True)),
    ],
)  # fmt: skip
EU, APAC, US = ROUTING.entities
SHADOW_FROM, CUTOVER_FROM = date(2026, 11, 10), date(2026, 11, 20)


def step(entity: str, mode: str, on: date) -> ModeChange:
    return ModeChange(entity=entity, mode=mode, effective_from=on, changed_by="controller",  # type: ignore[arg-type]
                      changed_at=datetime(2026, 11, 1, tzinfo=UTC))  # fmt: skip


# EU went to shadow, then to cutover; a step of another entity's never moves EU's customers.
CHANGES = [step("EU", "shadow", SHADOW_FROM), step("EU", "cutover", CUTOVER_FROM),
           step("US", "shadow", date(2026, 11, 1))]  # fmt: skip


def erp_of(
    fact: BillingFact,
    entity: LegalEntity | None = EU,
    journaled: dict[str, str | None] | None = None,
    assigned: dict[str, str] | None = None,
) -> str:
    return booking_erp(ROUTING, fact, journaled or {}, assigned or {}, entity, CHANGES)


def invoice(on: date, reference: str = "in_1") -> BillingFact:
    return BillingFact(reference, "cus_1", on)


def payment(on: date, settles: str = "in_1") -> BillingFact:
    return BillingFact("inpay_1", "cus_1", on, settles=settles)


@pytest.mark.parametrize(
    ("on", "erp"),
    [
        (date(2026, 11, 9), "tryton"),  # before any step: the legacy ERP
        (SHADOW_FROM, "tryton"),  # in shadow the legacy ERP stays the book of record
        (date(2026, 11, 19), "tryton"),
        (CUTOVER_FROM, "eu"),  # from the cutover's day on, the target books
        (date(2026, 12, 31), "eu"),
    ],
)
def test_a_document_not_journaled_belongs_to_the_erp_its_route_books_on_its_date(
    on: date, erp: str
) -> None:
    assert erp_of(invoice(on)) == erp


def test_other_entities_follow_their_own_steps_and_their_own_erp() -> None:
    assert erp_of(invoice(date(2026, 12, 1)), entity=US) == "tryton"  # US is only in shadow
    assert erp_of(invoice(date(2026, 12, 1)), entity=APAC) == "eu"  # APAC is booked by eu


def test_a_journaled_document_stays_in_the_erp_the_journal_names_whatever_its_route_says() -> None:
    dated_after_cutover = invoice(date(2026, 12, 1))
    assert erp_of(dated_after_cutover, journaled={"in_1": "tryton"}) == "tryton"
    before = invoice(date(2026, 11, 1))
    assert erp_of(before, journaled={"in_1": "eu"}) == "eu"


def test_an_entry_from_before_routing_belongs_to_the_erp_on_the_erp_queue() -> None:
    assert erp_of(invoice(date(2026, 12, 1)), journaled={"in_1": None}) == "tryton"
    moved = ROUTING.model_copy(update={"erps": {
        "eu": ErpTarget(kind="tryton", queue="erp"),
        "tryton": ErpTarget(kind="tryton", queue="erp-tryton"),
    }})  # fmt: skip
    fact = invoice(date(2026, 12, 1))
    assert booking_erp(moved, fact, {"in_1": None}, {}, EU, CHANGES) == "eu"


def test_money_follows_the_document_it_settles_not_its_own_date() -> None:
    after_cutover = date(2026, 12, 1)
    # the invoice was booked before the cutover: its payment goes there too
    assert erp_of(payment(after_cutover), journaled={"in_1": "tryton"}) == "tryton"
    assert erp_of(payment(after_cutover), journaled={"in_1": None}) == "tryton"
    # the invoice is not journaled yet but this run placed it (an earlier page)
    assert erp_of(payment(after_cutover), assigned={"in_1": "tryton"}) == "tryton"
    # journaled money stays where it was booked, whatever its document says
    journaled = {"inpay_1": "eu", "in_1": "tryton"}
    assert erp_of(payment(after_cutover), journaled=journaled) == "eu"


def test_money_whose_document_is_nowhere_yet_follows_the_customers_route_on_its_date() -> None:
    assert erp_of(payment(date(2026, 11, 1), settles="in_unknown")) == "tryton"
    assert erp_of(payment(date(2026, 12, 1), settles="in_unknown")) == "eu"


def test_a_customer_no_entity_covers_is_reconciled_with_the_erp_on_the_erp_queue() -> None:
    assert erp_of(invoice(date(2026, 12, 1)), entity=None) == "tryton"
    assert routed_erp(ROUTING, None, CHANGES, date(2026, 12, 1)) == "tryton"


def test_the_home_erp_is_the_one_on_the_erp_queue_else_the_routings_first() -> None:
    assert (home_erp(ROUTING), erp_on_home_queue(ROUTING)) == ("tryton", "tryton")
    assert home_erp(single_erp_routing()) == "tryton"
    elsewhere = ErpRouting(
        version=1, erps={"eu": ErpTarget(kind="tryton", queue="erp-eu")},
        entities=[LegalEntity(name="EU", legacy="eu", match=EntityMatch(default=True))],
    )  # fmt: skip
    assert (home_erp(elsewhere), erp_on_home_queue(elsewhere)) == ("eu", None)


@pytest.mark.parametrize(
    ("journal_erps", "routed", "in_tryton", "in_eu"),
    [
        # every document in one ERP: compared there, and only there
        ({"eu"}, None, "elsewhere", "compared"),
        ({None, "tryton"}, None, "compared", "elsewhere"),
        # documents in both (an entity in cutover): compared nowhere, counted by both
        ({None, "eu"}, None, "split", "split"),
        ({"tryton", "eu"}, "eu", "split", "split"),
        # never journaled: where its route books today, or where an ERP holds something
        (set(), "eu", "elsewhere", "compared"),
        (set(), None, "compared", "compared"),
    ],
)
def test_a_receivable_is_compared_only_in_the_erp_that_holds_all_the_customers_documents(
    journal_erps: set[str | None], routed: str | None, in_tryton: str, in_eu: str
) -> None:
    assert receivable_compared(ROUTING, "tryton", journal_erps, routed) == in_tryton
    assert receivable_compared(ROUTING, "eu", journal_erps, routed) == in_eu
