"""The finance inbox read from visibility alone, on the dev server with the real workflows
(their activities replaced by same-named doubles): every item reachable a page at a time,
counts of all, and no workflow asked anything per row (a recording client interceptor)."""

from __future__ import annotations

import asyncio
import random
import uuid
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

import pytest
from temporalio.client import (
    Client,
    CountWorkflowsInput,
    Interceptor,
    ListWorkflowsInput,
    OutboundInterceptor,
    QueryWorkflowInput,
    WorkflowExecutionAsyncIterator,
    WorkflowExecutionCount,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from adapters import visibility
from adapters.task_queues import task_queue
from adapters.workflow_starts import start_once
from canonical import Money
from canonical.credit import CreditPolicy
from starters.api import credits, finance
from starters.api.console import inbox
from starters.api.temporal import TemporalConnection
from starters.routing import credit_start
from tests.workflow.test_case_to_credit import FakeDesk, credit, running
from tests.workflow.test_finance_exception import CONTEXT
from workflows.finance_exception import FinanceExceptionInput, FinanceExceptionWorkflow


class Recorder(Interceptor):
    """Counts what the client asks of Temporal: lists, counts and workflow queries."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        calls = self.calls

        class Recording(OutboundInterceptor):
            def list_workflows(self, input: ListWorkflowsInput) -> WorkflowExecutionAsyncIterator:
                calls.append("list")
                return super().list_workflows(input)

            async def count_workflows(self, input: CountWorkflowsInput) -> WorkflowExecutionCount:
                calls.append("count")
                return await super().count_workflows(input)

            async def query_workflow(self, input: QueryWorkflowInput) -> Any:
                calls.append("query")
                return await super().query_workflow(input)

        return Recording(next)


class Connected(TemporalConnection):
    """The API's connection, already connected to the given client."""

    def __init__(self, client: Client) -> None:
        self._connected = client

    async def client(self) -> Client:
        return self._connected


async def until_counted(temporal: Connected, customer_id: str) -> None:
    """Visibility shows every item with its row (the process filter needs the upsert)."""
    for _ in range(100):
        approvals = await credits.count_approvals(temporal, customer_id)
        exceptions = await finance.count_exceptions(temporal, "case_to_credit", customer_id)
        if (approvals, exceptions) == (2, 3):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"visibility shows {approvals} approvals, {exceptions} exceptions")


async def test_the_inbox_pages_through_every_item_counts_all_and_queries_no_workflow(
    dev_server_env: WorkflowEnvironment, queue_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, desk = dev_server_env, FakeDesk()
    customer_id = f"cus_T{uuid.uuid4().hex[:12]}"
    desk.organization_customer = customer_id
    recorder = Recorder()
    recording = Client(
        env.client.service_client,
        namespace=env.client.namespace,
        data_converter=pydantic_data_converter,
        interceptors=[recorder],
    )
    temporal = Connected(recording)
    exception_ids = [f"exception/{queue_prefix}{n}" for n in range(3)]
    context = CONTEXT.model_copy(update={"customer_id": customer_id})
    async with running(env.client, queue_prefix, desk):
        for n in range(2):
            request = credit("200.00", case_id=str(random.randint(10**11, 10**12)),
                             request_id=f"r{n}")  # fmt: skip
            start = credit_start(request, CreditPolicy(), "corr-inbox", customer_id)
            assert await start_once(env.client, start, queue_prefix)
        for exception_id in exception_ids:
            await env.client.start_workflow(
                FinanceExceptionWorkflow.run,
                FinanceExceptionInput(context=context),
                id=exception_id,
                task_queue=task_queue(queue_prefix),
                search_attributes=visibility.start_attributes(
                    "finance_exception", "open", customer_id=customer_id, amount_minor=4500
                ),
            )
        await until_counted(temporal, customer_id)
        recorder.calls.clear()

        # The API's read: two pages of exceptions, every one reached once, counted in all.
        first = await finance.open_exceptions(temporal, None, customer_id, page_size=2)
        assert (len(first.items), first.total) == (2, 3) and first.next_token
        second = await finance.open_exceptions(
            temporal, None, customer_id, page_size=2, page_token=first.next_token
        )
        assert (len(second.items), second.total, second.next_token) == (1, 3, None)
        rows = first.items + second.items
        assert sorted(r.exception_id for r in rows) == sorted(exception_ids)
        row = rows[0]
        assert (row.process, row.step, row.asked) == (
            "case_to_credit",
            CONTEXT.step,
            "retry | reject",
        )
        assert row.amount == Money.of("45.00", "USD") and row.error == "ValidationError"
        approvals = await credits.pending_approvals(temporal, customer_id, page_size=1)
        assert (len(approvals.items), approvals.total) == (1, 2) and approvals.next_token
        [approval] = approvals.items
        assert approval.amount == Money.of("200.00", "USD")
        assert approval.why == ["above the auto-approval threshold"]
        assert approval.status == "awaiting_approval" and approval.customer_id == customer_id
        assert recorder.calls.count("query") == 0
        assert recorder.calls.count("list") == 3  # one per page, not one per row

        # The console: a page of each list, the rest one "next" away, counts of all.
        monkeypatch.setattr(inbox, "PAGE_SIZE", 2)
        filters = inbox.InboxFilters(customer=customer_id)
        page = await inbox.read_inbox(temporal, filters)
        assert (len(page.rows), page.approvals, page.exceptions) == (4, 2, 3)
        assert (page.over_24h, page.over_72h) == (0, 0)
        following = filters.next_query(page)
        assert following is not None
        later = inbox.InboxFilters.model_validate(dict(parse_qsl(following)))
        beyond = await inbox.read_inbox(temporal, later)
        assert (beyond.approvals, beyond.exceptions) == (2, 3)
        [last] = beyond.rows
        assert last.item_id in exception_ids and last.item_id not in {r.item_id for r in page.rows}
        assert later.next_query(beyond) is None
        back = later.previous_query()
        assert back is not None and "approvals_page" not in back and "back=" not in back
        big = await inbox.read_inbox(
            temporal, filters.model_copy(update={"min_amount": Decimal(100)})
        )
        assert (big.approvals, big.exceptions) == (2, 0)  # 45.00 USD is under 100
        assert recorder.calls.count("query") == 0

        for execution in [e async for e in env.client.list_workflows(
            f"CustomerId = '{customer_id}' AND ExecutionStatus = 'Running'"
        )]:  # fmt: skip
            await env.client.get_workflow_handle(execution.id).terminate("test over")
