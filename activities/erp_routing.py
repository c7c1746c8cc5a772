"""Activities that say which ERP books a document or a payment (canonical/erp_routing.py),
and that journal what an entity in shadow also sent to its target ERP."""

from __future__ import annotations

import asyncio
import time
from datetime import date

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities._errors import adapter_errors_as_application_errors
from activities._system import SystemActivities
from activities.amendments import JournalEntry
from adapters.ports import BillingSystem, Ledger
from adapters.store import IntegrationStore
from adapters.store.erp_coexistence import ErpCoexistenceStore
from canonical import Customer
from canonical.erp_routing import (
    ErpRouting,
    LegalEntity,
    NoRoute,
    PostingRoute,
    entity_of,
    mode_on,
    route_on,
    sole_entity,
)
from canonical.reconciliation_erps import HOME_QUEUE, erp_on_home_queue
from canonical.shadow_report import ErpRecord, RecordToCompare, ShadowReport, ShadowScope

# How long a customer's billing record is trusted for routing: its country, currency or
# entity changes rarely, and a posting should not cost a billing read each.
CUSTOMER_TTL_SECONDS = 300.0
# Records a shadow report reads at once from one ERP.
READS_AT_ONCE = 5


class RoutePostingInput(BaseModel):
    customer_id: str
    on: date
    # A document already journaled stays where it was booked (e.g. posted again to apply it).
    reference: str | None = None


class RoutePaymentInput(BaseModel):
    customer_id: str
    applies_to: str
    on: date


class CustomerEntities:
    """The legal entity of each customer, from its billing record (trusted a while): what
    routing reads of billing, for the posting path and for reconciliation alike."""

    def __init__(self, billing: BillingSystem, routing: ErpRouting) -> None:
        self._billing = billing
        self._routing = routing
        self._customers: dict[str, tuple[float, Customer]] = {}

    async def entity(self, customer_id: str) -> LegalEntity:
        """NoRoute when no entity of the routing covers the customer."""
        only = sole_entity(self._routing)
        if only is not None:
            return only  # one ERP for everyone: no need to read the customer
        return entity_of(self._routing, await self._customer(customer_id))

    async def _customer(self, customer_id: str) -> Customer:
        now = time.monotonic()
        cached = self._customers.get(customer_id)
        if cached is not None and now - cached[0] < CUSTOMER_TTL_SECONDS:
            return cached[1]
        with adapter_errors_as_application_errors():
            customer = await self._billing.get_customer(customer_id)
        if len(self._customers) > 10_000:
            self._customers.clear()
        self._customers[customer_id] = (now, customer)
        return customer


class ErpRoutingActivities(SystemActivities):
    """A route needs the customer's billing record (its entity, country and currency; kept a
    while) and the entity's steps from our store. Local activities of the workflow's worker;
    on billing's queue for runs from before that (`LOCAL_ROUTE_PATCH`)."""

    system = "billing"
    runs_locally = True

    def __init__(
        self, billing: BillingSystem, store: IntegrationStore, routing: ErpRouting
    ) -> None:
        self._coexistence = ErpCoexistenceStore(store)
        self._store = store
        self._routing = routing
        self._entities = CustomerEntities(billing, routing)
        # One entity, booked by one ERP for everyone: every route is the same, read nothing.
        only = sole_entity(routing)
        self._one_route = route_on(routing, only, [], date.min) if only is not None else None

    @activity.defn(name="route_erp_posting")
    async def route_erp_posting(self, request: RoutePostingInput) -> PostingRoute:
        """Where a document of the customer dated `on` is booked (and shadowed); where it
        was, once journaled. NoRoute, not retried, when no entity covers the customer:
        finance adds it to a route."""
        if self._one_route is not None:
            return self._one_route
        if request.reference is not None:
            booked = await self._journaled_route(request.reference, request.customer_id)
            if booked is not None:
                return booked
        entity = await self._entity(request.customer_id)
        changes = await asyncio.to_thread(self._coexistence.mode_changes, entity.name)
        return route_on(self._routing, entity, changes, request.on)

    @activity.defn(name="route_erp_payment")
    async def route_erp_payment(self, request: RoutePaymentInput) -> PostingRoute:
        """Money follows the document it settles: booked where that document was booked,
        shadowed where it was shadowed, whatever the entity's mode is now."""
        if self._one_route is not None:
            return self._one_route
        booked = await self._journaled_route(request.applies_to, request.customer_id)
        if booked is not None:
            return booked
        # Not journaled yet (the ledger waits for its document first): the document's own
        # route on the payment's date.
        return await self.route_erp_posting(
            RoutePostingInput(customer_id=request.customer_id, on=request.on)
        )

    async def _journaled_route(self, reference: str, customer_id: str) -> PostingRoute | None:
        """The route a journaled document took: the ERP that booked it and, if it was
        shadowed, the ERP that has its copy. One journaled before routing (no entity) was
        booked by the ERP on the `erp` queue, and was never shadowed."""
        entry = await asyncio.to_thread(self._store.find_posting, "billing", reference)
        if entry is None:
            return None
        book = entry.erp or self._erp_on_home_queue()
        if entry.entity is None:
            entity_name = (await self._entity(customer_id)).name
            return PostingRoute(entity=entity_name, mode="legacy", book=book,
                                book_queue=self._routing.erps[book].queue)  # fmt: skip
        shadows = await asyncio.to_thread(
            self._coexistence.shadow_postings, entry.entity, [reference]
        )
        shadow = shadows.get(reference)
        entity = self._routing.entity(entry.entity)
        cutover = entity is not None and book == entity.target
        return PostingRoute(
            entity=entry.entity,
            mode="shadow" if shadow else ("cutover" if cutover else "legacy"),
            book=book,
            book_queue=self._routing.erps[book].queue,
            shadow=shadow.erp if shadow else None,
            shadow_queue=self._routing.erps[shadow.erp].queue if shadow else None,
        )

    async def _entity(self, customer_id: str) -> LegalEntity:
        try:
            return await self._entities.entity(customer_id)
        except NoRoute as err:
            raise ApplicationError(
                str(err),
                {"customer_id": customer_id, "routing_version": err.version},
                type="NoRoute",
                non_retryable=True,
            ) from err

    def _erp_on_home_queue(self) -> str:
        """The ERP on the `erp` queue: journal entries from before routing were booked there."""
        erp = erp_on_home_queue(self._routing)
        if erp is not None:
            return erp
        raise ApplicationError(
            f"the ERP routing has no ERP on the {HOME_QUEUE!r} queue, where entries from before "
            "routing were booked",
            type="NoRoute",
            non_retryable=True,
        )


class ShadowScopeInput(BaseModel):
    entity: str | None = Field(description="None: every entity in shadow on the day")
    day: date


class ReadRecordsInput(BaseModel):
    records: list[RecordToCompare]


class ShadowJournalActivities(SystemActivities):
    """The shadow journal and reports, on the workflow queue (the store is ours)."""

    system = "store"

    def __init__(self, store: IntegrationStore, routing: ErpRouting) -> None:
        self._coexistence = ErpCoexistenceStore(store)
        self._routing = routing

    @activity.defn(name="shadow_report_scopes")
    def shadow_report_scopes(self, request: ShadowScopeInput) -> list[ShadowScope]:
        """Per entity (the one named, else each in shadow on the day or that sent anything to
        its target that day): what it sent to its target on the day."""
        scopes = []
        for entity in self._routing.entities:
            if entity.target is None or request.entity not in (None, entity.name):
                continue
            sent = self._coexistence.shadowed_on(entity.name, request.day)
            changes = self._coexistence.mode_changes(entity.name)
            in_shadow = mode_on(changes, request.day)[0] == "shadow"
            if request.entity is None and not (sent or in_shadow):
                continue
            scopes.append(ShadowScope(
                entity=entity.name, day=request.day, book_erp=entity.legacy,
                book_queue=self._routing.erps[entity.legacy].queue, target_erp=entity.target,
                target_queue=self._routing.erps[entity.target].queue,
                records=[RecordToCompare(reference=row.source_document_id,
                                         kind=row.document_type)  # type: ignore[arg-type]
                         for row in sent],
            ))  # fmt: skip
        return scopes

    @activity.defn(name="record_shadow_report")
    def record_shadow_report(self, report: ShadowReport) -> None:
        self._coexistence.record_shadow_report(report)

    @activity.defn(name="record_shadow_posting")
    def record_shadow_posting(self, entry: JournalEntry) -> None:
        """What the target ERP holds for a document (`entry.erp`: the target)."""
        self._coexistence.record_shadow_posting(entry)


class ErpShadowActivities(SystemActivities):
    """Reads one ERP's copy of documents, payments and refunds by reference (each ERP of the
    routing registers it on its own queue)."""

    system = "erp"

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    @activity.defn(name="read_erp_records")
    async def read_erp_records(self, request: ReadRecordsInput) -> list[ErpRecord]:
        """A few side by side (the NetSuite adapter also keeps to the account's slots)."""
        gate = asyncio.Semaphore(READS_AT_ONCE)
        with adapter_errors_as_application_errors():
            found = await asyncio.gather(*(self._read(r, gate) for r in request.records))
        return [record for record in found if record is not None]

    async def _read(self, record: RecordToCompare, gate: asyncio.Semaphore) -> ErpRecord | None:
        async with gate:
            return await self._read_one(record)

    async def _read_one(self, record: RecordToCompare) -> ErpRecord | None:
        if record.kind in ("invoice", "credit_note"):
            document = await self._ledger.find_document(record.reference)
            if document is None:
                return None
            return ErpRecord(reference=record.reference, kind=document.kind,
                             total=document.total, erp_number=document.erp_number)  # fmt: skip
        payment = await self._ledger.find_payment(record.reference)
        if payment is None:
            return None
        return ErpRecord(reference=record.reference, kind=payment.kind, total=payment.amount,
                         erp_number=payment.erp_number)  # fmt: skip
