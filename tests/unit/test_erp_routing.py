"""Which entity a customer belongs to, which ERP books its documents on a day, and which
steps of a move to a new ERP are refused."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from adapters.mapping_file import MappingFileError
from adapters.routing_file import load_routing
from canonical import Customer
from canonical.customer import PostalAddress
from canonical.erp_routing import (
    EntityMatch,
    ErpRouting,
    ErpTarget,
    LegalEntity,
    ModeChange,
    NoRoute,
    entity_of,
    mode_change_refusal,
    route_on,
    single_erp_routing,
)

ROUTING = ErpRouting(
    version=3,
    erps={"tryton": ErpTarget(kind="tryton", queue="erp"),
          "netsuite": ErpTarget(kind="netsuite", queue="erp-netsuite")},
    entities=[
        LegalEntity(name="EU", legacy="tryton", target="netsuite",
                    match=EntityMatch(countries=["de", "FR"], currencies=["EUR"])),
        LegalEntity(name="UK", legacy="tryton", match=EntityMatch(customers=["cus_uk1"],
                                                                  currencies=["GBP"])),
        LegalEntity(name="US", legacy="tryton", match=EntityMatch(default=True)),
    ],
)  # fmt: skip
TODAY = date(2026, 12, 7)


def customer(
    customer_id: str = "cus_1", country: str | None = None, currency: str | None = None,
    legal_entity: str | None = None,
) -> Customer:  # fmt: skip
    address = PostalAddress(country=country) if country else None
    return Customer(customer_id=customer_id, name="Acme", currency=currency, address=address,
                    legal_entity=legal_entity)  # fmt: skip


def step(mode: str, on: date, at: int = 0) -> ModeChange:
    return ModeChange(entity="EU", mode=mode, effective_from=on, changed_by="controller",  # type: ignore[arg-type]
                      changed_at=datetime(2026, 12, 1, 9, at, tzinfo=UTC))  # fmt: skip


@pytest.mark.parametrize(
    ("who", "entity"),
    [
        (customer(legal_entity="UK", country="DE"), "UK"),  # billing's own entity first
        (customer("cus_uk1", country="DE"), "UK"),  # then by id, before the country
        (customer(country="DE"), "EU"),
        (customer(country="fr", currency="USD"), "EU"),  # country before currency
        (customer(currency="EUR"), "EU"),
        (customer(currency="GBP"), "UK"),
        (customer(country="US", currency="USD"), "US"),  # the default takes the rest
    ],
)
def test_a_customer_belongs_to_the_first_entity_that_covers_it(who: Customer, entity: str) -> None:
    assert entity_of(ROUTING, who).name == entity


def test_a_customer_no_entity_covers_is_refused_with_what_routing_looked_at() -> None:
    no_default = ROUTING.model_copy(update={"entities": ROUTING.entities[:2]})
    with pytest.raises(
        NoRoute, match=r"version 3 covers customer cus_9 .*country JP, currency JPY"
    ):
        entity_of(no_default, customer("cus_9", country="JP", currency="JPY"))
    with pytest.raises(NoRoute, match="legal_entity APAC"):
        entity_of(ROUTING, customer(legal_entity="APAC"))


def test_documents_route_by_their_own_date_through_shadow_and_cutover() -> None:
    eu = ROUTING.entities[0]
    steps = [step("shadow", date(2026, 12, 7)), step("cutover", date(2027, 1, 1), at=1)]
    before = route_on(ROUTING, eu, steps, date(2026, 12, 6))
    assert (before.mode, before.book, before.shadow) == ("legacy", "tryton", None)
    shadowed = route_on(ROUTING, eu, steps, date(2026, 12, 31))
    assert (shadowed.mode, shadowed.book, shadowed.shadow) == ("shadow", "tryton", "netsuite")
    assert (shadowed.book_queue, shadowed.shadow_queue) == ("erp", "erp-netsuite")
    after = route_on(ROUTING, eu, steps, date(2027, 1, 1))
    assert (after.mode, after.book, after.book_queue, after.shadow) == (
        "cutover", "netsuite", "erp-netsuite", None)  # fmt: skip


def test_an_entity_without_a_target_stays_on_its_legacy_erp() -> None:
    route = route_on(ROUTING, ROUTING.entities[2], [], TODAY)
    assert (route.entity, route.mode, route.book, route.shadow) == ("US", "legacy", "tryton", None)


@pytest.mark.parametrize(
    ("steps", "mode", "on", "refusal"),
    [
        ([], "cutover", TODAY, "goes to shadow first"),
        ([], "shadow", date(2026, 12, 6), "in the past"),
        ([step("shadow", TODAY)], "shadow", TODAY, "forward only"),
        ([step("shadow", TODAY), step("cutover", TODAY, 1)], "shadow", TODAY, "forward only"),
        ([step("shadow", date(2026, 12, 20))], "cutover", date(2026, 12, 10), "before the shadow"),
        ([], "legacy", TODAY, "forward only"),
        ([], "live", TODAY, "mode must be one of"),
    ],
)
def test_a_step_backwards_skipping_or_into_the_past_is_refused(
    steps: list[ModeChange], mode: str, on: date, refusal: str
) -> None:
    why = mode_change_refusal(ROUTING.entities[0], steps, mode, on, TODAY)
    assert why is not None and refusal in why


def test_the_next_step_from_today_on_is_taken() -> None:
    eu = ROUTING.entities[0]
    assert mode_change_refusal(eu, [], "shadow", TODAY, TODAY) is None
    shadowed = [step("shadow", TODAY)]
    assert mode_change_refusal(eu, shadowed, "cutover", date(2027, 1, 1), TODAY, (TODAY, 0)) is None


def test_cutover_waits_for_a_clean_shadow_report() -> None:
    eu, shadowed = ROUTING.entities[0], [step("shadow", TODAY)]
    none_yet = mode_change_refusal(eu, shadowed, "cutover", TODAY, TODAY)
    assert none_yet is not None and "no shadow report yet" in none_yet
    lists = mode_change_refusal(eu, shadowed, "cutover", TODAY, TODAY, (TODAY, 2))
    assert lists is not None and "lists 2 differences" in lists


def test_an_entity_that_does_not_move_or_does_not_exist_takes_no_step() -> None:
    assert "no target ERP" in (
        mode_change_refusal(ROUTING.entities[2], [], "shadow", TODAY, TODAY) or ""
    )
    assert "no such legal entity" in (mode_change_refusal(None, [], "shadow", TODAY, TODAY) or "")


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"erps": {"tryton": ErpTarget(kind="tryton", queue="erp"),
                   "netsuite": ErpTarget(kind="netsuite", queue="erp")}}, "share a task queue"),
        ({"entities": [LegalEntity(name="EU", legacy="sap")]}, r"not in \[erps\]"),
        ({"entities": [LegalEntity(name="EU", legacy="tryton", target="tryton")]},
         "moves to the ERP it is on"),
        ({"entities": [LegalEntity(name="EU", legacy="tryton")] * 2}, "named twice"),
        ({"entities": [LegalEntity(name=n, legacy="tryton", match=EntityMatch(default=True))
                       for n in ("A", "B")]}, "more than one entity is the default"),
    ],
)  # fmt: skip
def test_an_inconsistent_routing_is_refused(change: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        ErpRouting.model_validate({**ROUTING.model_dump(), **change})


def test_without_a_routing_file_one_erp_books_everyone_on_the_erp_queue() -> None:
    routing = load_routing(None)
    assert routing == single_erp_routing()
    route = route_on(routing, entity_of(routing, customer()), [], TODAY)
    assert (route.book_queue, route.shadow) == ("erp", None)


def test_the_routing_file_is_read_and_a_typo_named(tmp_path: Path) -> None:
    path = tmp_path / "erp-routing.toml"
    path.write_text(
        'version = 1\n[erps.tryton]\nkind = "tryton"\nqueue = "erp"\n'
        '[[entities]]\nname = "US"\nlegacy = "tryton"\nmatch = { default = true }\n'
    )
    assert load_routing(path).entities[0].name == "US"
    path.write_text(path.read_text().replace("match =", "matches ="))
    with pytest.raises(MappingFileError, match=r"entities\.0\.matches"):
        load_routing(path)
    with pytest.raises(MappingFileError, match="does not exist"):
        load_routing(tmp_path / "missing.toml")
