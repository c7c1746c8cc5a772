"""Which of a page's billing rows the ERP of a reconciliation run books: the journal, what
the run assigned on earlier pages and the customers' routes, read for the rules of
canonical/reconciliation_erps.py."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from datetime import date

from activities.erp_routing import CustomerEntities
from adapters.store.erp_coexistence import ErpCoexistenceStore
from adapters.store.reconciliation import ExpectedPayment, ExpectedPosting, ReconciliationStore
from canonical.erp_routing import ErpRouting, LegalEntity, ModeChange, NoRoute
from canonical.reconciliation_erps import (
    BillingFact,
    ReceivableScope,
    booking_erp,
    receivable_compared,
    routed_erp,
    settled_erp,
)


@dataclasses.dataclass(frozen=True)
class OwnRows:
    """A page's rows as a run of one ERP loads them."""

    postings: list[ExpectedPosting]  # every one, tagged with the other ERP that books it
    money: list[ExpectedPayment]  # the run's ERP's only
    erp_of: dict[str, str]  # each posting's reference -> the ERP that books it


class RunErps:
    """`entities` reads billing's customers: only runs on billing's queue route customers."""

    def __init__(
        self,
        routing: ErpRouting,
        recon: ReconciliationStore,
        coexistence: ErpCoexistenceStore,
        entities: CustomerEntities | None = None,
    ) -> None:
        self._routing = routing
        self._entities = entities
        self._recon = recon
        self._coexistence = coexistence

    async def own_rows(
        self,
        run_id: str,
        erp: str,
        postings: Sequence[tuple[ExpectedPosting, date]],
        money: Sequence[tuple[ExpectedPayment, date]] = (),
    ) -> OwnRows:
        """Billing's postings (each with the date the posting path routes it by), tagged with
        the other ERP that books them, and the money (payments, payouts) the run's ERP books;
        money follows the document it settles, on this page or an earlier one."""
        facts = [BillingFact(p.reference, p.customer_id, on) for p, on in postings]
        erp_of = await self.erps_of(run_id, erp, facts)
        money_facts = [
            BillingFact(m.reference, m.customer_id, on, settles=m.applies_to) for m, on in money
        ]
        money_erp = await self.erps_of(run_id, erp, money_facts, assigned=erp_of)
        return OwnRows(
            postings=[
                dataclasses.replace(p, other_erp=None if erp_of[p.reference] == erp
                                    else erp_of[p.reference])
                for p, _ in postings
            ],
            money=[m for m, _ in money if money_erp[m.reference] == erp],
            erp_of=erp_of,
        )  # fmt: skip

    async def erps_of(
        self,
        run_id: str,
        erp: str,
        facts: Sequence[BillingFact],
        assigned: Mapping[str, str] | None = None,
    ) -> dict[str, str]:
        """reference -> the ERP that books it, for each fact."""
        if not facts:
            return {}
        references = {f.reference for f in facts} | {f.settles for f in facts if f.settles}
        journaled = await asyncio.to_thread(self._recon.journaled_erps, references)
        known = dict(assigned or {})
        unsettled = [f for f in facts if settled_erp(self._routing, f, journaled, known) is None]
        settles = {f.settles for f in unsettled if f.settles}
        if settles:  # documents an earlier page of this run assigned
            staged = await asyncio.to_thread(self._recon.expected_erps, run_id, settles)
            known.update({ref: other or erp for ref, other in staged.items() if ref not in known})
        routed = [f for f in facts if settled_erp(self._routing, f, journaled, known) is None]
        entities, changes = await self._routes({f.customer_id for f in routed})
        return {
            f.reference: booking_erp(self._routing, f, journaled, known,
                                     entities.get(f.customer_id), changes)
            for f in facts
        }  # fmt: skip

    async def receivables_compared(
        self, erp: str, customer_ids: Iterable[str], *, route: bool, on: date
    ) -> dict[str, ReceivableScope]:
        """Where each customer's receivable is compared (`receivable_compared`); with
        `route`, a customer never journaled is compared where its route books today."""
        customers = set(customer_ids)
        journal = await asyncio.to_thread(self._recon.customer_journal_erps, customers)
        never = {c for c in customers if c not in journal} if route else set()
        entities, changes = await self._routes(never)
        return {
            customer: receivable_compared(
                self._routing, erp, journal.get(customer, set()),
                routed_erp(self._routing, entities.get(customer), changes, on)
                if customer in never else None,
            )
            for customer in customers
        }  # fmt: skip

    async def _routes(
        self, customer_ids: set[str]
    ) -> tuple[dict[str, LegalEntity | None], list[ModeChange]]:
        """Each customer's entity (None: no entity covers it) and every entity's steps."""
        if not customer_ids:
            return {}, []
        if self._entities is None:
            raise RuntimeError("routing customers needs their billing records")
        entities: dict[str, LegalEntity | None] = {}
        for customer_id in sorted(customer_ids):
            try:
                entities[customer_id] = await self._entities.entity(customer_id)
            except NoRoute:
                entities[customer_id] = None
        changes = await asyncio.to_thread(self._coexistence.mode_changes)
        return entities, changes
