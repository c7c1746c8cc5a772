"""The API's routers one at a time: each mounted alone on a bare app, its dependencies
replaced through `app.dependency_overrides` by fakes that record what the handler asked of
them. The shapes the API accepts (ids, strict bodies) are checked here too, and that a
refused request reaches none of the fakes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import APIRouter, FastAPI, HTTPException
from fastapi.testclient import TestClient
from pydantic import ValidationError
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from adapters.errors import AdapterError, NotFoundError
from adapters.settings import Settings
from canonical import Money
from canonical.credit import CreditPolicy
from starters.api import accounts, credits, dependencies, finance, ops, reconciliation, replay
from starters.api.auth import ApiPrincipal
from starters.api.correlation import CorrelationMiddleware
from starters.api.errors import install_error_handlers
from starters.api.intake import Accepted
from starters.api.temporal import TemporalUnavailable
from starters.api.webhooks import ticket_of
from starters.routing import ProcessStart, account_workflow_id

OPS = ApiPrincipal("ops-1", "ops")


@dataclass
class RecordingStore:
    audit: list[dict[str, Any]] = field(default_factory=list)
    links: dict[str, list[Any]] = field(default_factory=dict)

    def append_audit(self, **entry: Any) -> None:
        self.audit.append(entry)

    def account_links(self, customer_id: str) -> list[Any]:
        return self.links.get(customer_id, [])


@dataclass
class RecordingIntake:
    handed: list[ProcessStart] = field(default_factory=list)
    processes: list[tuple[str, str, str]] = field(default_factory=list)

    async def hand_to_temporal(self, start: ProcessStart) -> bool:
        self.handed.append(start)
        return True

    async def start_process(
        self, start: ProcessStart, source: str, event_id: str, kind: str, *, checked: bool = False
    ) -> Accepted:
        self.processes.append((source, event_id, kind))
        return Accepted(status="accepted", workflow_id=start.workflow_id)

    async def start_processes(
        self, starts: list[ProcessStart], source: str, event_id: str, kind: str
    ) -> Accepted:
        self.handed.extend(starts)
        self.processes.append((source, event_id, kind))
        return Accepted(status="accepted", workflow_id=starts[0].workflow_id)


@dataclass
class FakeBilling:
    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    unreachable: bool = False
    asked: list[str] = field(default_factory=list)

    async def get_event(self, event_id: str) -> dict[str, Any]:
        self.asked.append(event_id)
        if self.unreachable:
            raise AdapterError("connection refused", system="billing", operation="get_event")
        if event_id not in self.events:
            raise NotFoundError(f"no event {event_id}", system="billing", operation="get_event")
        return self.events[event_id]


@dataclass
class FakeSupport:
    asked: list[str] = field(default_factory=list)

    async def get_case(self, case_id: str) -> Any:
        self.asked.append(case_id)
        raise NotFoundError(f"no ticket {case_id}", system="support", operation="get_case")


class Unreachable:
    """A workflow engine out of reach: what a refused request must never get to ask."""

    async def client(self) -> Any:
        raise TemporalUnavailable("unit: no workflow engine")


@dataclass
class Mounted:
    client: TestClient
    store: RecordingStore
    intake: RecordingIntake
    billing: FakeBilling
    support: FakeSupport


def mounted(router: APIRouter, caller: ApiPrincipal = OPS) -> Mounted:
    """`router` alone on an app with the API's error answers; every dependency a fake, every
    role check admitting `caller`."""
    app = FastAPI()
    app.add_middleware(CorrelationMiddleware)
    install_error_handlers(app)
    app.include_router(router)
    parts = Mounted(
        TestClient(app), RecordingStore(), RecordingIntake(), FakeBilling(), FakeSupport()
    )
    settings = Settings(ledger_currencies=["USD"], task_queue_prefix="unit")
    overrides: dict[Callable[..., Any], Callable[..., Any]] = {
        dependencies.get_settings: lambda: settings,
        dependencies.get_store: lambda: parts.store,
        dependencies.get_intake: lambda: parts.intake,
        dependencies.get_billing: lambda: parts.billing,
        dependencies.get_support: lambda: parts.support,
        dependencies.get_ledger: lambda: None,
        dependencies.get_policy: lambda: CreditPolicy(),
        dependencies.get_temporal: lambda: Unreachable(),
    }
    for guard in (
        dependencies.any_role,
        dependencies.operators,
        dependencies.reconcilers,
        dependencies.finance_readers,
        dependencies.finance_deciders,
        dependencies.credit_requesters,
        dependencies.credit_checkers,
        dependencies.credit_readers,
    ):
        overrides[guard] = lambda: caller
    app.dependency_overrides.update(overrides)
    return parts


# --- replay -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "event_id", [".", "..", "evt_1/../../v1/customers", "evt_", "EVT_1", "evt_1 ", "x" * 300]
)
def test_replay_refuses_an_id_billing_could_not_have_made_before_asking_billing(
    event_id: str,
) -> None:
    api = mounted(replay.router)
    response = api.client.post(
        "/v1/billing/events:replay", json={"event_ids": ["evt_ok", event_id]}
    )
    assert response.status_code == 422
    assert response.json()["error"].startswith("body.event_ids.1: String should match pattern")
    assert api.billing.asked == [] and api.store.audit == []


def test_replay_feeds_known_events_and_reports_unknown_ones() -> None:
    api = mounted(replay.router)
    api.billing.events["evt_known"] = {
        "id": "evt_known",
        "type": "customer.created",
        "created": 1_700_000_000,
        "data": {"object": {"id": "cus_A1", "object": "customer"}},
    }
    response = api.client.post(
        "/v1/billing/events:replay", json={"event_ids": ["evt_known", "evt_missing"]}
    )
    assert response.status_code == 200, response.text
    assert [(o["event_id"], o["status"]) for o in response.json()] == [
        ("evt_known", "accepted"),
        ("evt_missing", "unknown"),
    ]
    assert api.intake.processes == [("billing", "evt_known", "customer.created")]
    [audit] = api.store.audit
    assert (audit["action"], audit["details"]) == (
        "billing.events_replayed",
        {"events": 2, "accepted": 1},
    )


def test_replay_asks_to_retry_when_billing_is_out_of_reach() -> None:
    api = mounted(replay.router)
    api.billing.unreachable = True
    response = api.client.post("/v1/billing/events:replay", json={"event_ids": ["evt_1"]})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["error"].startswith("billing could not be read, retry later")
    assert api.store.audit == []


def test_replay_takes_no_field_it_does_not_know() -> None:
    api = mounted(replay.router)
    response = api.client.post(
        "/v1/billing/events:replay", json={"event_ids": ["evt_1"], "force": True}
    )
    assert response.status_code == 422
    assert response.json()["error"].startswith("body.force: Extra inputs are not permitted")


def test_an_unknown_field_named_with_a_line_break_is_refused_on_one_line() -> None:
    api = mounted(replay.router)
    response = api.client.post(
        "/v1/billing/events:replay", json={"event_ids": ["evt_1"], "a\nb": 1}
    )
    assert response.status_code == 422
    assert response.json() == {"error": "body.'a\\nb': Extra inputs are not permitted"}


# --- ledgers ------------------------------------------------------------------------------


class LedgersOf:
    """Temporal listing `running` ledgers, of which `closed` end before they are asked."""

    def __init__(self, running: list[str], closed: set[str]) -> None:
        self.running, self.closed = running, closed
        self.asked: list[tuple[str, str]] = []

    async def client(self) -> Any:
        return self

    async def list_workflows(self, query: str) -> AsyncIterator[Any]:
        assert "ExecutionStatus = 'Running'" in query
        for workflow_id in self.running:
            yield SimpleNamespace(id=workflow_id)

    def get_workflow_handle(self, workflow_id: str) -> Any:
        async def signal(name: str) -> None:
            if workflow_id in self.closed:
                raise RPCError("workflow execution already completed", RPCStatusCode.NOT_FOUND, b"")
            self.asked.append((workflow_id, name))

        return SimpleNamespace(signal=signal)


def test_refresh_asks_every_running_ledger_and_counts_those_closed_meanwhile() -> None:
    api = mounted(ops.router)
    temporal = LedgersOf(["subscription/sub_1", "subscription/sub_2", "customer-ledger/cus_1"],
                         closed={"subscription/sub_2"})  # fmt: skip
    api.client.app.dependency_overrides[dependencies.get_temporal] = lambda: temporal  # type: ignore[attr-defined]
    response = api.client.post("/v1/ledgers:refresh")
    assert response.status_code == 200, response.text
    assert response.json() == {
        "signalled": 2,
        "already_closed": 1,
        "workflow_ids": ["subscription/sub_1", "customer-ledger/cus_1"],
    }
    assert temporal.asked == [
        ("subscription/sub_1", "refresh"),
        ("customer-ledger/cus_1", "refresh"),
    ]


def test_refresh_without_temporal_asks_to_retry() -> None:
    response = mounted(ops.router).client.post("/v1/ledgers:refresh")
    assert response.status_code == 503
    assert response.headers["Retry-After"]


# --- accounts -----------------------------------------------------------------------------


def test_sync_hands_the_account_to_temporal_and_audits_who_asked() -> None:
    api = mounted(accounts.router)
    response = api.client.post("/v1/accounts/cus_A1:sync", headers={"Idempotency-Key": "k-1"})
    assert response.status_code == 202, response.text
    assert response.json()["workflow_id"] == account_workflow_id("cus_A1")
    [start] = api.intake.handed
    assert start.workflow_id == account_workflow_id("cus_A1")
    [audit] = api.store.audit
    assert (audit["actor"], audit["details"]) == ("ops-1", {"request_id": "k-1"})


@pytest.mark.parametrize("customer_id", ["cus_never_seen", "cus_", "CUS_1", "42", "cus_a.b"])
def test_customer_ids_are_billings_shape(customer_id: str) -> None:
    api = mounted(accounts.router)
    for method in ("GET", "POST"):
        suffix = ":sync" if method == "POST" else ""
        response = api.client.request(method, f"/v1/accounts/{customer_id}{suffix}")
        assert response.status_code == 422, (method, customer_id)
        assert response.json()["error"].startswith("path.customer_id: String should match")
    assert api.intake.handed == [] and api.store.audit == []


def test_an_account_never_synced_is_a_404() -> None:
    api = mounted(accounts.router)
    response = api.client.get("/v1/accounts/cus_Unknown1")
    assert response.status_code == 404
    assert response.json() == {"error": "customer cus_Unknown1 has not been synced"}


# --- reconciliation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period_from", "said"),
    [
        (0, "Input should be a valid date"),
        (1_700_000_000, "Input should be a valid date"),
        ("0", "expected a date as YYYY-MM-DD"),
        ("20260101", "expected a date as YYYY-MM-DD"),
        ("2026-01-01T00:00:00", "expected a date as YYYY-MM-DD"),
        ("2026-02-30", "day is out of range for month"),
        (None, "Input should be a valid date"),
    ],
)
def test_a_reconciliation_period_is_a_date_written_as_one(period_from: Any, said: str) -> None:
    api = mounted(reconciliation.router)
    response = api.client.post("/v1/reconciliations", json={"period_from": period_from})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error.startswith("body.period_from: ") and said in error, error
    assert api.store.audit == []


async def test_a_run_that_failed_says_why() -> None:
    """The follow answer carries the failure chain, so `recon run` prints more than 'failed'."""
    rejected = ApplicationError("tax rate txr_9 is not mapped", type="RejectedError")
    activity = ApplicationError("Activity task failed")
    activity.__cause__ = rejected

    class FailedRun:
        async def result(self, **_: Any) -> Any:
            raise WorkflowFailureError(cause=activity)

    said = await reconciliation._failure_of(FailedRun())  # type: ignore[arg-type]
    assert said == "Activity task failed: RejectedError: tax rate txr_9 is not mapped"


def test_an_iso_day_is_still_a_date() -> None:
    body = reconciliation.ReconRequest.model_validate(
        {"period_from": "2026-01-01", "period_to": "2026-01-31"}
    )
    assert (body.period_from, body.period_to) == (date(2026, 1, 1), date(2026, 1, 31))


# --- credits and finance ------------------------------------------------------------------


def credit_body(**changes: Any) -> dict[str, Any]:
    body = {"case_id": "1234", "amount": {"amount": "12.00", "currency": "USD"}, "reason": "x"}
    return {**body, **changes}


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"case_id": "../../users/me"}, "body.case_id"),
        ({"case_id": "0"}, "body.case_id"),
        ({"case_id": "12a"}, "body.case_id"),
        ({"invoice_id": "in_1/../../x"}, "body.invoice_id"),
        ({"invoice_id": "inv_1"}, "body.invoice_id"),
        ({"case_id": 1234}, "body.case_id"),
        ({"amount": {"amount": 12.5, "currency": "USD"}}, "body.amount.amount"),
        ({"reason": ["x"]}, "body.reason"),
        ({"approved": True}, "body.approved"),
    ],
)
def test_a_credit_names_the_ticket_and_invoice_as_support_and_billing_do(
    changes: dict[str, Any], where: str
) -> None:
    api = mounted(credits.router, ApiPrincipal("agent", "support"))
    response = api.client.post("/v1/credits:validate", json=credit_body(**changes))
    assert response.status_code == 422, response.text
    assert response.json()["error"].startswith(f"{where}: "), response.text
    assert api.support.asked == []


def test_a_credit_check_on_a_missing_ticket_is_a_404() -> None:
    api = mounted(credits.router, ApiPrincipal("agent", "support"))
    response = api.client.post("/v1/credits:validate", json=credit_body(invoice_id="in_A1"))
    assert response.status_code == 404
    assert response.json() == {"error": "no support ticket 1234"}
    assert api.support.asked == ["1234"]


async def test_the_credit_check_asks_to_retry_when_support_is_out_of_reach() -> None:
    class Away:
        async def get_case(self, case_id: str) -> Any:
            raise AdapterError("connection refused", system="support", operation="get_case")

    body = credits.CreditBody.model_validate(credit_body())
    with pytest.raises(HTTPException) as refused:
        await credits.check(body, "agent", Away(), None, None, None, CreditPolicy())  # type: ignore[arg-type]
    assert refused.value.status_code == 503
    assert refused.value.headers == {"Retry-After": "5"}


def test_a_decision_is_a_boolean_not_a_word_for_one() -> None:
    with pytest.raises(ValidationError):
        credits.ApprovalBody.model_validate({"approve": "true", "reason": "ok"})
    assert credits.ApprovalBody.model_validate({"approve": True, "reason": "ok"}).approve


def test_the_finance_filters_take_billings_customer_ids_only() -> None:
    api = mounted(finance.router, ApiPrincipal("fin", "finance"))
    for path in ("/v1/exceptions", "/v1/approvals"):
        router_api = api if path == "/v1/exceptions" else mounted(credits.router, OPS)
        response = router_api.client.get(path, params={"customer_id": "x' OR '1'='1"})
        assert response.status_code == 422, path
        assert response.json()["error"].startswith("query.customer_id: String should match")


@pytest.mark.parametrize("amount", [12, "12", "12.00", 12.0])
def test_money_in_a_credit_stays_decimal(amount: Any) -> None:
    body = credits.CreditBody.model_validate(
        credit_body(amount={"amount": amount, "currency": "usd"})
    )
    assert body.amount == Money(amount=Decimal("12.00"), currency="USD")
    assert isinstance(body.amount.amount, Decimal)


@pytest.mark.parametrize("amount", [12.5, 0.1, 1e300, float("nan")])
def test_a_fractional_or_huge_json_number_is_no_amount(amount: float) -> None:
    with pytest.raises(ValidationError, match="money amounts must not be floats"):
        credits.CreditBody.model_validate(credit_body(amount={"amount": amount, "currency": "USD"}))


# --- webhooks -----------------------------------------------------------------------------


@pytest.mark.parametrize("ticket", ["abc", "../tickets", "1.5", "-1"])
def test_a_credit_event_names_its_ticket_by_number(ticket: str) -> None:
    with pytest.raises(HTTPException) as refused:
        ticket_of({"detail": {"id": ticket}}, "event-1")
    assert refused.value.status_code == 400
    assert refused.value.detail == "malformed event: detail.id must be a ticket number"


def test_a_credit_event_about_ticket_42_is_about_ticket_42() -> None:
    assert ticket_of({"detail": {"id": 42}}, "event-1") == "42"
