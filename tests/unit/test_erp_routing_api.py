"""/v1/erp on a bare app over a real SQLite store and a real routing file: the entities and
where each stands, the controller's steps (audited, in one transaction), and the one-line
refusals of a step that goes backwards, skips, is dated in the past or is not the
controller's. The CLI goes through the same API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from adapters.settings import Settings
from adapters.store import IntegrationStore
from adapters.store.erp_coexistence import MODE_CHANGED, ErpCoexistenceStore
from canonical import Money
from canonical.shadow_report import ShadowDifference, ShadowReport
from starters.api import dependencies, erp_routing
from starters.api.auth import ApiKeyring, key_entry
from starters.api.correlation import CorrelationMiddleware
from starters.api.errors import install_error_handlers

ROUTING = """version = 2
[erps.tryton]
kind = "tryton"
queue = "erp"
[erps.netsuite]
kind = "netsuite"
queue = "erp-netsuite"
[[entities]]
name = "EU"
legacy = "tryton"
target = "netsuite"
match = { countries = ["DE"], currencies = ["EUR"] }
[[entities]]
name = "US"
legacy = "tryton"
match = { default = true }
"""
KEYS = {role: f"lb_unit_{role}" for role in ("support", "finance", "finance_admin", "ops")}
TODAY = datetime.now(UTC).date()


def as_role(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[role]}"}


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, IntegrationStore]]:
    app = FastAPI()
    app.add_middleware(CorrelationMiddleware)
    install_error_handlers(app)
    app.include_router(erp_routing.router)
    store = IntegrationStore(f"sqlite:///{tmp_path / 'store.sqlite'}")
    store.migrate()
    (tmp_path / "erp-routing.toml").write_text(ROUTING)
    settings = Settings(erp_routing=tmp_path / "erp-routing.toml")
    keyring = ApiKeyring([key_entry(f"{role}-1", role, key) for role, key in KEYS.items()])
    overrides: dict[Callable[..., Any], Callable[..., Any]] = {
        dependencies.get_settings: lambda: settings,
        dependencies.get_store: lambda: store,
        dependencies.get_keyring: lambda: keyring,
    }
    app.dependency_overrides.update(overrides)
    yield TestClient(app), store
    store.dispose()


def step(client: TestClient, entity: str, mode: str, on: Any, role: str = "finance_admin") -> Any:
    body = {"mode": mode, "effective_from": str(on), "reason": "phase 2 of the move"}
    return client.post(f"/v1/erp/entities/{entity}/mode", json=body, headers=as_role(role))


def report(store: IntegrationStore, differences: int) -> None:
    ErpCoexistenceStore(store).record_shadow_report(ShadowReport(
        entity="EU", day=TODAY, book_erp="tryton", target_erp="netsuite", compared=3,
        differences=[ShadowDifference(reference=f"in_{n}", kind="invoice",
                                      problem="missing_in_target", book=Money.of("5", "EUR"),
                                      target=None) for n in range(differences)],
        made_at=datetime.now(UTC),
    ))  # fmt: skip


def test_entities_say_which_erp_books_them_today(api: tuple[TestClient, IntegrationStore]) -> None:
    client, _ = api
    listed = client.get("/v1/erp/entities", headers=as_role("finance")).json()
    assert [(e["name"], e["mode"], e["books_today"], e["shadowed_to"], e["target"])
            for e in listed] == [("EU", "legacy", "tryton", None, "netsuite"),
                                 ("US", "legacy", "tryton", None, None)]  # fmt: skip


def test_shadow_then_cutover_are_taken_and_audited(
    api: tuple[TestClient, IntegrationStore],
) -> None:
    client, store = api
    shadow = step(client, "EU", "shadow", TODAY)
    assert shadow.status_code == 200, shadow.text
    assert (shadow.json()["mode"], shadow.json()["shadowed_to"]) == ("shadow", "netsuite")
    later = TODAY + timedelta(days=3)
    no_report = step(client, "EU", "cutover", later)
    assert no_report.status_code == 409 and "no shadow report yet" in no_report.json()["error"]
    report(store, differences=1)
    unclean = step(client, "EU", "cutover", later)
    assert unclean.status_code == 409 and "lists 1 differences" in unclean.json()["error"]
    report(store, differences=0)  # the day's report made again, clean
    listed = client.get("/v1/erp/entities/EU/shadow-reports", headers=as_role("ops")).json()
    assert [(r["day"], r["differences"]) for r in listed] == [(TODAY.isoformat(), [])]
    cutover = step(client, "EU", "cutover", later)
    assert cutover.status_code == 200, cutover.text
    assert cutover.json()["books_today"] == "tryton"  # not yet: from its day on
    assert [(s["mode"], s["effective_from"]) for s in cutover.json()["steps"]] == [
        ("shadow", TODAY.isoformat()), ("cutover", later.isoformat())]  # fmt: skip
    audit = [(a.action, a.subject, a.actor, a.details["mode"]) for a in store.audit_entries()]
    assert audit == [(MODE_CHANGED, "erp/entity/EU", "finance_admin-1", "shadow"),
                     (MODE_CHANGED, "erp/entity/EU", "finance_admin-1", "cutover")]  # fmt: skip


@pytest.mark.parametrize(
    ("entity", "mode", "on", "status", "said"),
    [
        ("EU", "cutover", TODAY, 409, "goes to shadow first"),
        ("EU", "shadow", TODAY - timedelta(days=1), 409, "in the past"),
        ("US", "shadow", TODAY, 409, "no target ERP"),
        ("APAC", "shadow", TODAY, 404, "no legal entity APAC"),
        ("EU", "legacy", TODAY, 422, "mode"),
        ("EU", "shadow", "2026-02-30", 422, "day is out of range for month"),
        ("EU", "shadow", "tomorrow", 422, "effective_from"),
    ],
)
def test_a_step_that_may_not_be_taken_changes_nothing_and_says_why(
    api: tuple[TestClient, IntegrationStore], entity: str, mode: str, on: Any, status: int,
    said: str,
) -> None:  # fmt: skip
    client, store = api
    refused = step(client, entity, mode, on)
    assert refused.status_code == status, refused.text
    assert said in refused.json()["error"]
    assert (ErpCoexistenceStore(store).mode_changes(), store.audit_entries()) == ([], [])


def test_a_step_back_after_shadow_is_refused(api: tuple[TestClient, IntegrationStore]) -> None:
    client, store = api
    assert step(client, "EU", "shadow", TODAY).status_code == 200
    again = step(client, "EU", "shadow", TODAY + timedelta(days=1))
    assert again.status_code == 409 and "forward only" in again.json()["error"]
    assert len(ErpCoexistenceStore(store).mode_changes("EU")) == 1


@pytest.mark.parametrize("role", ["support", "finance", "ops"])
def test_only_the_controller_takes_a_step(
    api: tuple[TestClient, IntegrationStore], role: str
) -> None:
    client, store = api
    assert step(client, "EU", "shadow", TODAY, role=role).status_code == 403
    assert client.post("/v1/erp/entities/EU/mode", json={}).status_code == 401
    assert ErpCoexistenceStore(store).mode_changes() == []
