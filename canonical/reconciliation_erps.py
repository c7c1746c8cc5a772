"""Which ERP's reconciliation each billing fact belongs to, once entities are routed to several
ERPs (canonical/erp_routing.py). A run reconciles one ERP: it compares that ERP's pages with
the documents, payments, refunds, tax and receivables that ERP books, and nothing else.

- A document, payment or refund journaled already belongs to the ERP the journal names; an
  entry from before routing (`erp` None) to the ERP on the `erp` queue, the only ERP there was.
- Money not journaled yet follows the document it settles, where that one is journaled or
  assigned: the ledger posts a payment where its document was booked.
- Anything else belongs to the ERP its customer's route books a document of its date in, the
  rule the posting path applies (`ErpRoutingActivities.route_erp_posting`); a customer no
  entity covers, to the ERP on the `erp` queue (nothing could post it: that run reports it).

Receivables are compared per customer, where all the customer's documents are: see
`receivable_compared`.

Pure: the reconciliation activities gather the journal, the entities and their steps, and
the unit tests call these directly.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal

from canonical.erp_routing import ErpRouting, LegalEntity, ModeChange, route_on

# The queue of the one ERP ledgerbridge posted to before routing.
HOME_QUEUE = "erp"


def home_erp(routing: ErpRouting) -> str:
    """The ERP on the `erp` queue, which booked every journal entry from before routing; the
    routing's first ERP when none polls that queue."""
    for name, erp in routing.erps.items():
        if erp.queue == HOME_QUEUE:
            return name
    return next(iter(routing.erps))


def erp_on_home_queue(routing: ErpRouting) -> str | None:
    """The ERP on the `erp` queue, if one is: what a run that names no ERP reconciles."""
    return next((name for name, erp in routing.erps.items() if erp.queue == HOME_QUEUE), None)


def journaled_erp(routing: ErpRouting, erp: str | None) -> str:
    """The ERP that booked a journal entry: its own, or the `erp` queue's before routing."""
    return erp if erp is not None else home_erp(routing)


@dataclass(frozen=True, slots=True)
class BillingFact:
    """One thing billing says the ERP must hold: a document's posting (`settles` None), or a
    payment, refund payout or out-of-band payout (`settles`: the document it is applied to)."""

    reference: str
    customer_id: str
    on: date  # the date the posting path routes it by
    settles: str | None = None


def settled_erp(
    routing: ErpRouting,
    fact: BillingFact,
    journaled: Mapping[str, str | None],
    assigned: Mapping[str, str],
) -> str | None:
    """The ERP the journal puts the fact in (itself, else the document it settles), or the
    ERP the document it settles was assigned to in this run; None when only its customer's
    route can tell. `journaled`: reference -> the journal's `erp` (None before routing)."""
    if fact.reference in journaled:
        return journaled_erp(routing, journaled[fact.reference])
    if fact.settles is None:
        return None
    if fact.settles in journaled:
        return journaled_erp(routing, journaled[fact.settles])
    return assigned.get(fact.settles)


def routed_erp(
    routing: ErpRouting, entity: LegalEntity | None, changes: Sequence[ModeChange], on: date
) -> str:
    """The ERP that books a document of the entity dated `on` (`route_on`, the posting path's
    own rule); `entity` None (no entity covers the customer): the home ERP."""
    if entity is None:
        return home_erp(routing)
    steps = [change for change in changes if change.entity == entity.name]
    return route_on(routing, entity, steps, on).book


def booking_erp(
    routing: ErpRouting,
    fact: BillingFact,
    journaled: Mapping[str, str | None],
    assigned: Mapping[str, str],
    entity: LegalEntity | None,
    changes: Sequence[ModeChange],
) -> str:
    """The ERP whose reconciliation the fact belongs to (see the module's rules)."""
    settled = settled_erp(routing, fact, journaled, assigned)
    if settled is not None:
        return settled
    return routed_erp(routing, entity, changes, fact.on)


ReceivableScope = Literal["compared", "elsewhere", "split"]


def receivable_compared(
    routing: ErpRouting, run_erp: str, journal_erps: Collection[str | None], routed: str | None
) -> ReceivableScope:
    """Whether the run of `run_erp` compares a customer's receivable with billing's.

    Billing knows one figure per customer and currency (amount remaining plus balance); each
    ERP knows what the customer owes in its own books. The figure is compared where all of
    the customer's documents are booked: its journal entries (`journal_erps`, None for an
    entry from before routing) all name this ERP; a customer never journaled, where its route
    books today's documents (`routed`; None: compared where the ERP holds it, its receivable
    there being unexplained by any posting of ours).

    A customer whose documents are booked in two ERPs (an entity in cutover: documents dated
    before the change stay open in the legacy ERP, later ones go to the target) is compared
    in neither run ("split"). Summing both ERPs' receivables against billing looks right but
    is not: every entity reaches cutover through shadow, whose documents and payments the
    target ERP holds as copies of the legacy ERP's book of record, so the sum counts each
    document open from the shadow period twice; nor can one ERP's figure be split per
    document, since neither side reports it per document. These customers stay covered
    document by document (every document, payment and refund is compared in the ERP that
    books it, which is what makes a receivable agree), and each run counts them
    (`receivables_not_compared`). The journal keeps naming both ERPs, so they stay uncompared
    even once the legacy ERP holds nothing open for them; customers the entity gains after
    its cutover are compared in the target. Journal entries of finance's decisions
    (`manual:`, `rejected:`) carry no ERP and count as the `erp` queue's ERP's.
    """
    erps = {journaled_erp(routing, erp) for erp in journal_erps}
    if not erps:
        return "compared" if routed in (None, run_erp) else "elsewhere"
    if erps == {run_erp}:
        return "compared"
    return "split" if run_erp in erps else "elsewhere"
