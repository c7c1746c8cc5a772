"""The subscription ledger with an entity in shadow, its two ERPs in memory on their own
queues: the book of record is posted and journaled first, the same documents and payments
then reach the target; a target that refuses for good is journaled as a failed shadow and
never holds up the book of record."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.amendments import JournalEntry
from activities.erp_routing import RoutePaymentInput, RoutePostingInput
from adapters.task_queues import task_queue
from canonical.erp_routing import PostingRoute
from canonical.shadow_report import SHADOW_FAILED_PREFIX
from tests.workflow.test_subscription_ledger import (
    FakeWorld,
    decision,
    deliver,
    event,
    exception_handle,
    invoice,
    until,
)
from workflows.finance_exception import FinanceExceptionWorkflow
from workflows.subscription_ledger import SubscriptionLedgerWorkflow

SHADOW = PostingRoute(entity="EU", mode="shadow", book="tryton", book_queue="erp",
                      shadow="netsuite", shadow_queue="erp-netsuite")  # fmt: skip


class ShadowedWorld(FakeWorld):
    """The book of record's world, a second world for the target ERP, and the routes."""

    def __init__(self) -> None:
        super().__init__()
        self.target = FakeWorld()
        self.shadows: dict[str, JournalEntry] = {}
        self.routed: list[str] = []

    def route(self) -> PostingRoute:
        """Every document's and payment's route in this world."""
        return SHADOW

    def activities(self) -> dict[str, list[Callable[..., Any]]]:
        own = super().activities()

        @activity.defn(name="route_erp_posting")
        async def route_erp_posting(request: RoutePostingInput) -> PostingRoute:
            self.routed.append(request.reference or "")
            return self.route()

        @activity.defn(name="route_erp_payment")
        async def route_erp_payment(request: RoutePaymentInput) -> PostingRoute:
            return self.route()

        @activity.defn(name="record_shadow_posting")
        async def record_shadow_posting(entry: JournalEntry) -> None:
            self.shadows[entry.reference] = entry

        return {
            **own,
            "": [*own[""], record_shadow_posting, route_erp_posting, route_erp_payment],
            "billing": [*own["billing"], route_erp_posting, route_erp_payment],
            "erp-netsuite": self.target.activities()["erp"],
        }


@asynccontextmanager
async def running(client: Client, prefix: str, world: ShadowedWorld) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        for queue, activities in world.activities().items():
            await stack.enter_async_context(Worker(
                client, task_queue=task_queue(prefix, queue) if queue else task_queue(prefix),
                workflows=[SubscriptionLedgerWorkflow, FinanceExceptionWorkflow] if not queue
                else [], activities=activities,
            ))  # fmt: skip
        yield


async def test_the_book_of_record_posts_first_and_the_target_gets_the_same_document(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, ShadowedWorld()
    world.documents["in_1"] = invoice("in_1", "30.00")
    async with running(env.client, queue_prefix, world):
        await deliver(env.client, queue_prefix, event("evt_1", "in_1", 100))
        await until(lambda: "in_1" in world.shadows, env, "the shadow journaled")
    assert (world.journal["in_1"].erp, world.journal["in_1"].entity) == ("tryton", "EU")
    assert world.target.erp["in_1"].total == world.erp["in_1"].total
    shadow = world.shadows["in_1"]
    assert (shadow.erp, shadow.entity, shadow.erp_document_id) == ("netsuite", "EU", "1")
    assert world.routed == ["in_1"]  # asked with the reference: a journaled one keeps its ERP


async def test_a_target_that_refuses_for_good_is_journaled_failed_and_holds_nothing_up(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, ShadowedWorld()
    world.target.post_failures = [("ValidationError", True)]  # the first copy is refused
    world.documents["in_1"] = invoice("in_1", "30.00", minute=1)
    world.documents["in_2"] = invoice("in_2", "40.00", minute=2)
    async with running(env.client, queue_prefix, world):
        await deliver(env.client, queue_prefix, event("evt_1", "in_1", 100))
        await deliver(env.client, queue_prefix, event("evt_2", "in_2", 200))
        await until(lambda: "in_2" in world.shadows, env, "the second shadow journaled")
    assert set(world.journal) == {"in_1", "in_2"}  # the book of record has both
    failed = world.shadows["in_1"]
    assert failed.erp_document_id == f"{SHADOW_FAILED_PREFIX}ValidationError"
    assert "in_1" not in world.target.erp and "in_2" in world.target.erp
    assert not world.audit  # no finance exception: the shadow report lists it instead


async def test_what_finance_posts_by_hand_is_journaled_with_the_erp_that_books_it(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    """Reconciliation judges a journal entry in the run of its ERP: a decision's entry names
    the ERP the document would have been booked by, as a posting's does."""
    env, world = time_skipping_env, ShadowedWorld()
    world.documents["in_m"] = invoice("in_m", "25.00")
    world.post_failures = [("ValidationError", True)]
    async with running(env.client, queue_prefix, world):
        workflow_id = await deliver(env.client, queue_prefix, event("evt_m", "in_m", 100))
        exception = await exception_handle(env, workflow_id)
        await exception.execute_update(
            FinanceExceptionWorkflow.decide,
            decision("resolve_manually", manual_erp_number="INV-MANUAL-7"),
        )
        await until(lambda: "in_m" in world.journal, env, "manual journal entry")
    entry = world.journal["in_m"]
    assert (entry.erp_number, entry.erp, entry.entity) == ("INV-MANUAL-7", "tryton", "EU")
    assert world.shadows == {}  # nothing was posted, so nothing was copied


class UnroutedWorld(ShadowedWorld):
    """No entity covers the customer: the route refuses, as the routing activity does."""

    def route(self) -> PostingRoute:
        raise ApplicationError("no legal entity covers cus_1", type="NoRoute", non_retryable=True)


async def test_a_customer_no_route_covers_waits_on_finance_naming_the_route(
    time_skipping_env: WorkflowEnvironment, queue_prefix: str
) -> None:
    env, world = time_skipping_env, UnroutedWorld()
    world.documents["in_n"] = invoice("in_n", "25.00")
    async with running(env.client, queue_prefix, world):
        workflow_id = await deliver(env.client, queue_prefix, event("evt_n", "in_n", 100))
        exception = await exception_handle(env, workflow_id)
        state = await exception.query(FinanceExceptionWorkflow.state)
        # Nothing left waiting on this test's queues: the shared test server would stop
        # skipping time at the reminder for a worker that is gone.
        await exception.terminate("test done")
        await env.client.get_workflow_handle(workflow_id).terminate("test done")
    assert (state.context.step, state.context.error_type) == ("route_erp_posting", "NoRoute")
    assert world.erp == {} and world.journal == {}
