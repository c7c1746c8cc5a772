"""Which ERP books which legal entity, and where each entity stands in its move to a new ERP.

Finance and the platform team decide it together in the routing file (see
`adapters.routing_file`): each ERP ledgerbridge posts to, with the task queue its worker
polls; each legal entity, with the customers it covers and the ERP that books it (`legacy`)
and, for an entity on the move, the ERP it moves to (`target`). Where an entity stands is
not in the file: it changes at run time with `ledgerbridge erp mode`, one audited step at a
time, always forward, never into the past:

- `legacy`: the legacy ERP books the entity (the start, and where an entity with no target
  stays);
- `shadow`: the legacy ERP stays the book of record; the same postings also go to the
  target, and a daily shadow report lists every document and total that differs;
- `cutover`: the target books every document dated from the change's date on; documents
  dated before it stay where they were booked, and their payments follow them there.

Pure: the routing activities, the API, the CLI and the tests all read these.
"""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from canonical.customer import Customer

ErpMode = Literal["legacy", "shadow", "cutover"]
MODES: tuple[ErpMode, ...] = ("legacy", "shadow", "cutover")
# The ERP a deployment without a routing file posts to, on the queue it always had.
DEFAULT_ERP = "tryton"
DEFAULT_ENTITY = "default"
ERP_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
ENTITY_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,31}$"
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class ErpTarget(BaseModel):
    """One ERP ledgerbridge posts to: its kind of adapter and the activity queue of its
    worker (each ERP has its own queue and limits, so one cannot starve the other)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["tryton", "netsuite"]
    queue: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,47}$")


class EntityMatch(BaseModel):
    """The customers an entity covers: a customer whose billing record names the entity
    (`legal_entity` metadata) belongs to it first; then one listed by id; then by the
    country of its address; then by its billing currency. `default` takes the rest."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    customers: list[str] = Field(default_factory=list)
    countries: list[str] = Field(default_factory=list)
    currencies: list[str] = Field(default_factory=list)
    default: bool = False

    @field_validator("countries")
    @classmethod
    def _countries(cls, value: list[str]) -> list[str]:
        return _codes(value, _COUNTRY, "an ISO 3166-1 alpha-2 country code")

    @field_validator("currencies")
    @classmethod
    def _currencies(cls, value: list[str]) -> list[str]:
        return _codes(value, _CURRENCY, "an ISO 4217 currency code")


def _codes(value: list[str], pattern: re.Pattern[str], what: str) -> list[str]:
    codes = [code.upper() for code in value]
    for code in codes:
        if not pattern.match(code):
            raise ValueError(f"{code!r} is not {what}")
    return codes


class LegalEntity(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=ENTITY_NAME_PATTERN)
    legacy: str = Field(description="the ERP that books the entity until its cutover")
    target: str | None = Field(default=None, description="the ERP the entity moves to")
    match: EntityMatch = Field(default_factory=EntityMatch)


class ErpRouting(BaseModel):
    """The routing file. Without one, every customer is the `default` entity, booked by the
    one ERP on the `erp` queue (what ledgerbridge did before it knew of a second ERP)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: int = Field(ge=1)
    erps: dict[str, ErpTarget]
    entities: list[LegalEntity]

    @model_validator(mode="after")
    def _consistent(self) -> ErpRouting:
        for name in self.erps:
            if not re.match(ERP_NAME_PATTERN, name):
                raise ValueError(f"ERP name {name!r} must match {ERP_NAME_PATTERN}")
        queues = [erp.queue for erp in self.erps.values()]
        if len(set(queues)) != len(queues):
            raise ValueError("two ERPs share a task queue: each needs its own")
        names = [entity.name for entity in self.entities]
        if len(set(names)) != len(names):
            raise ValueError("an entity is named twice")
        for entity in self.entities:
            for erp in (entity.legacy, entity.target):
                if erp is not None and erp not in self.erps:
                    raise ValueError(f"entity {entity.name} names ERP {erp!r}, not in [erps]")
            if entity.target == entity.legacy:
                raise ValueError(f"entity {entity.name} moves to the ERP it is on")
        if sum(entity.match.default for entity in self.entities) > 1:
            raise ValueError("more than one entity is the default")
        return self

    def entity(self, name: str) -> LegalEntity | None:
        return next((e for e in self.entities if e.name == name), None)

    def erp_names(self) -> list[str]:
        return list(self.erps)


def single_erp_routing() -> ErpRouting:
    """The routing of a deployment without a routing file."""
    return ErpRouting(
        version=1,
        erps={DEFAULT_ERP: ErpTarget(kind="tryton", queue="erp")},
        entities=[
            LegalEntity(name=DEFAULT_ENTITY, legacy=DEFAULT_ERP, match=EntityMatch(default=True))
        ],
    )


def sole_entity(routing: ErpRouting) -> LegalEntity | None:
    """The one entity that covers every customer and never moves, if the routing is that:
    then every document has the same route, whoever its customer."""
    only = routing.entities[0] if len(routing.entities) == 1 else None
    return only if only is not None and only.match.default and only.target is None else None


class NoRoute(ValueError):
    """No entity of the routing covers the customer: nothing is posted until one does."""

    def __init__(self, customer: Customer, version: int) -> None:
        country = customer.address.country if customer.address else None
        super().__init__(
            f"no legal entity of ERP routing version {version} covers customer "
            f"{customer.customer_id} (legal_entity {customer.legal_entity or '-'}, country "
            f"{country or '-'}, currency {customer.currency or '-'}): add it to a route"
        )
        self.customer_id = customer.customer_id
        self.version = version


def entity_of(routing: ErpRouting, customer: Customer) -> LegalEntity:
    """The entity that books the customer: its own `legal_entity` first, then the first
    entity listing it by id, by country, by currency, then the default. NoRoute otherwise,
    also when the customer names an entity the routing does not have."""
    if customer.legal_entity:
        named = routing.entity(customer.legal_entity)
        if named is None:
            raise NoRoute(customer, routing.version)
        return named
    country = (
        customer.address.country.upper() if customer.address and customer.address.country else None
    )
    currency = customer.currency.upper() if customer.currency else None
    checks = (
        lambda m: customer.customer_id in m.customers,
        lambda m: country is not None and country in m.countries,
        lambda m: currency is not None and currency in m.currencies,
        lambda m: m.default,
    )
    for covers in checks:
        for entity in routing.entities:
            if covers(entity.match):
                return entity
    raise NoRoute(customer, routing.version)


class ModeChange(BaseModel):
    """One step of an entity's move, as `ledgerbridge erp mode` recorded it."""

    model_config = ConfigDict(frozen=True)

    entity: str
    mode: ErpMode
    effective_from: date
    changed_by: str
    changed_at: datetime
    reason: str | None = None


def mode_on(changes: list[ModeChange], on: date) -> tuple[ErpMode, date | None]:
    """The entity's mode for a document dated `on`, and since when: the latest change in
    effect on that date (`legacy` before any)."""
    current: tuple[ErpMode, date | None] = ("legacy", None)
    for change in sorted(changes, key=lambda c: (c.effective_from, c.changed_at)):
        if change.effective_from <= on:
            current = (change.mode, change.effective_from)
    return current


def mode_change_refusal(
    entity: LegalEntity | None, changes: list[ModeChange], mode: str, effective_from: date,
    today: date, last_shadow_report: tuple[date, int] | None = None,
) -> str | None:  # fmt: skip
    """Why this step may not be taken, in one line; None when it may. Forward only, one
    step at a time (legacy, shadow, cutover), never dated in the past nor before the last
    step, and only for an entity that has an ERP to move to. Cutover only on a clean
    shadow report: `last_shadow_report` is the day of the entity's latest one and how many
    differences it listed."""
    if entity is None:
        return "no such legal entity in the ERP routing"
    if mode not in MODES:
        return f"mode must be one of {', '.join(MODES)}"
    if entity.target is None:
        return f"entity {entity.name} has no target ERP to move to: it stays on {entity.legacy}"
    if effective_from < today:
        return f"--from {effective_from} is in the past (today is {today})"
    latest = max(changes, key=lambda c: (c.effective_from, c.changed_at), default=None)
    current: ErpMode = latest.mode if latest else "legacy"
    step = MODES.index(mode) - MODES.index(current)  # type: ignore[arg-type]
    if step <= 0:
        return (
            f"entity {entity.name} is in {current}: a move goes forward only, never back to {mode}"
        )
    if step > 1:
        following = MODES[MODES.index(current) + 1]
        return f"entity {entity.name} is in {current}: it goes to {following} first"
    if latest is not None and effective_from < latest.effective_from:
        return f"--from {effective_from} is before the {current} step's {latest.effective_from}"
    if mode == "cutover":
        return _unshadowed(entity, last_shadow_report)
    return None


def _unshadowed(entity: LegalEntity, last_shadow_report: tuple[date, int] | None) -> str | None:
    if last_shadow_report is None:
        return f"entity {entity.name} has no shadow report yet: run one before its cutover"
    day, differences = last_shadow_report
    if differences:
        return (
            f"the shadow report of {entity.name} for {day} lists {differences} differences: "
            "cut over on a clean one"
        )
    return None


class PostingRoute(BaseModel):
    """Where one document goes: the ERP that books it (the book of record) and, while its
    entity is in shadow, the ERP that receives the same posting to compare."""

    model_config = ConfigDict(frozen=True)

    entity: str
    mode: ErpMode
    book: str
    book_queue: str
    shadow: str | None = None
    shadow_queue: str | None = None


def route_on(
    routing: ErpRouting, entity: LegalEntity, changes: list[ModeChange], on: date
) -> PostingRoute:
    """Where a document of the entity dated `on` goes."""
    mode, _ = mode_on(changes, on) if entity.target else ("legacy", None)
    book = entity.target if mode == "cutover" and entity.target else entity.legacy
    shadow = entity.target if mode == "shadow" else None
    return PostingRoute(
        entity=entity.name,
        mode=mode,
        book=book,
        book_queue=routing.erps[book].queue,
        shadow=shadow,
        shadow_queue=routing.erps[shadow].queue if shadow else None,
    )
