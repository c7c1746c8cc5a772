"""The console's reconciliation pages over HTTP: roles as the API's reconcilers, the runs, a
run's totals and items with their remedy (filtered, escaped, as CSV), and the start form
(CSRF, origin, bad periods refused in place) reaching the API's own `start_run`."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from adapters.store.reconciliation import ErpDocument, ExpectedPosting, ReconciliationStore
from tests.unit import test_console_pages
from tests.unit.test_console_pages import MARKUP, Console, assert_console_headers
from tests.unit.test_erp_routing_api import ROUTING as TWO_ERPS

console = test_console_pages.console  # the signed-in console over fakes of the API's reads

RUN_ID = "recon/2026-11-01..2026-11-01@20261102T020000"
ODD_REFERENCE = "in_odd" + MARKUP
FORMULA_REFERENCE = "=HYPERLINK(1)"


def seed_run(console: Console) -> None:
    recon = ReconciliationStore(console.store)
    recon.start_run(RUN_ID, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC))

    def expected(reference: str, amount: str, currency: str = "USD") -> ExpectedPosting:
        return ExpectedPosting(reference, "invoice", "cus_Recon1", currency, Decimal(amount),
                               reference, "invoice")  # fmt: skip

    recon.add_expected(RUN_ID, [
        expected("in_agree", "10.00"), expected(ODD_REFERENCE, "12.50"),
        expected(FORMULA_REFERENCE, "7.00", "EUR"), expected("in_differs", "30.00"),
    ])  # fmt: skip
    recon.add_erp(RUN_ID, [
        ErpDocument("1", "in_agree", "invoice", "INV-1", "USD", Decimal("10.00"), "posted"),
        ErpDocument("2", "in_differs", "invoice", "INV-2", "USD", Decimal("31.00"), "posted"),
    ])  # fmt: skip
    recon.classify(RUN_ID)


class RecordingClient:
    """Temporal's client as start_reconciliation uses it: the workflow start is recorded."""

    def __init__(self) -> None:
        self.starts: list[dict[str, Any]] = []

    async def start_workflow(self, _run: Any, arg: Any, **options: Any) -> None:
        self.starts.append({"input": arg, **options})


@pytest.fixture
def started(console: Console, monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The API's start_run and start_reconciliation run for real, up to Temporal's client."""
    client = RecordingClient()

    async def connected() -> RecordingClient:
        return client

    monkeypatch.setattr(console.client.app.state.temporal, "client", connected)  # type: ignore[attr-defined]
    return client.starts


def test_finance_sees_the_runs_a_runs_totals_and_its_items_with_their_remedy(
    console: Console,
) -> None:
    seed_run(console)
    console.sign_in("finance")
    runs = console.client.get("/console/reconciliations")
    assert runs.status_code == 200
    assert_console_headers(runs)
    assert f'href="/console/reconciliations/runs/{RUN_ID}"' in runs.text
    assert 'name="csrf_token"' in runs.text and 'for="r-from"' in runs.text

    page = console.client.get(f"/console/reconciliations/runs/{RUN_ID}")
    assert page.status_code == 200, page.text
    assert_console_headers(page)
    text = page.text
    assert "amount_mismatch" in text and "missing_in_erp" in text and "EUR" in text
    assert "Auto-heal: replay the normal posting path" in text  # a remedy
    assert "Neither the ERP nor the posting journal holds this reference" in text  # what differs
    assert MARKUP not in text and "&lt;script&gt;alert(" in text  # escaped, never run
    assert 'href="/console/customers/cus_Recon1"' in text

    only = console.client.get(f"/console/reconciliations/runs/{RUN_ID}?class=amount_mismatch")
    assert "in_differs" in only.text and "in_agree</td>" not in only.text
    unknown = console.client.get(f"/console/reconciliations/runs/{RUN_ID}?class=%3Cb%3E")
    assert unknown.status_code == 422 and "<b>" not in unknown.text
    missing = console.client.get("/console/reconciliations/runs/recon/none")
    assert missing.status_code == 404


def test_the_csv_holds_every_item_with_its_remedy_and_formulas_stay_text(
    console: Console,
) -> None:
    seed_run(console)
    console.sign_in("ops")
    answer = console.client.get(f"/console/reconciliations/csv/{RUN_ID}")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert {r["reference"] for r in rows} >= {"in_agree", "in_differs", ODD_REFERENCE}
    assert f"'{FORMULA_REFERENCE}" in {r["reference"] for r in rows}
    assert all(r["remedy"] for r in rows)
    one_class = console.client.get(f"/console/reconciliations/csv/{RUN_ID}?class=matched")
    assert [r["reference"] for r in csv.DictReader(io.StringIO(one_class.text))] == ["in_agree"]


def test_support_may_not_see_reconciliation_nor_start_a_run(
    console: Console, started: list[Any]
) -> None:
    seed_run(console)
    csrf = console.sign_in("support")
    for path in ("/console/reconciliations", f"/console/reconciliations/runs/{RUN_ID}",
                 f"/console/reconciliations/csv/{RUN_ID}"):  # fmt: skip
        assert console.client.get(path).status_code == 403, path
    refused = console.client.post(
        "/console/reconciliations", data={"csrf_token": csrf, "period_from": "2026-11-01"},
        headers={"Origin": "http://testserver"},
    )  # fmt: skip
    assert refused.status_code == 403 and started == []
    assert 'href="/console/reconciliations"' not in console.client.get("/console/signed-in").text


def test_a_run_is_started_through_the_api_and_audited_and_a_bad_form_changes_nothing(
    console: Console, started: list[Any]
) -> None:
    csrf = console.sign_in("finance")
    own = {"Origin": "http://testserver"}
    period = {"period_from": "2026-11-01", "period_to": "2026-11-03"}
    assert (
        console.client.post("/console/reconciliations", data=period, headers=own).status_code == 403
    )
    foreign = console.client.post(
        "/console/reconciliations", data={**period, "csrf_token": csrf},
        headers={"Origin": "https://evil.example"},
    )  # fmt: skip
    assert foreign.status_code == 403
    reversed_period = {"period_from": "2026-11-03", "period_to": "2026-11-01"}
    for bad in ({"period_from": "01/11/2026"}, reversed_period, {"period_from": ""}):
        answer = console.client.post(
            "/console/reconciliations", data={**bad, "csrf_token": csrf}, headers=own
        )
        assert answer.status_code == 422, (bad, answer.status_code)
        assert 'role="alert"' in answer.text
    assert started == []
    assert [e for e in console.store.audit_entries() if e.action.startswith("recon")] == []

    answer = console.client.post(
        "/console/reconciliations", data={**period, "csrf_token": csrf}, headers=own,
        follow_redirects=False,
    )  # fmt: skip
    assert answer.status_code == 303, answer.text
    [start] = started
    assert start["input"].period_start == datetime(2026, 11, 1, tzinfo=UTC)
    assert start["input"].period_end == datetime(2026, 11, 4, tzinfo=UTC)
    workflow_id = start["id"]
    [entry] = console.store.audit_entries(workflow_id)
    assert (entry.action, entry.actor) == ("reconciliation.started", "finance-1")
    shown = console.client.get(answer.headers["location"])
    assert f"Started {workflow_id}" in shown.text
    spoofed = console.client.get("/console/reconciliations?started=%3Cb%3Ehi")
    assert spoofed.status_code == 422


def test_each_erp_of_the_routing_gets_its_run_and_the_pages_say_which_erp_a_run_reconciled(
    console: Console, started: list[Any], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "routing.toml").write_text(TWO_ERPS)  # tryton on `erp`, and netsuite
    settings = console.client.app.state.settings  # type: ignore[attr-defined]
    monkeypatch.setattr(settings, "erp_routing", tmp_path / "routing.toml")
    csrf = console.sign_in("finance")
    own = {"Origin": "http://testserver"}
    form = console.client.get("/console/reconciliations").text
    assert '<option value="netsuite"' in form and '<option value="tryton"' in form

    period = {"period_from": "2026-11-01", "period_to": "2026-11-03", "csrf_token": csrf}
    answer = console.client.post("/console/reconciliations", data=period, headers=own,
                                 follow_redirects=False)  # fmt: skip
    assert answer.status_code == 303, answer.text
    # the ERP on the `erp` queue keeps its id; the other is named in its own
    assert [(s["id"], s["input"].erp) for s in started] == [
        ("recon/2026-11-01..2026-11-03", None),
        ("recon/netsuite/2026-11-01..2026-11-03", "netsuite"),
    ]  # fmt: skip
    audited = [(e.subject, e.details["erp"]) for e in console.store.audit_entries()
               if e.action == "reconciliation.started"]  # fmt: skip
    assert sorted(audited) == [("recon/2026-11-01..2026-11-03", "tryton"),
                               ("recon/netsuite/2026-11-01..2026-11-03", "netsuite")]  # fmt: skip
    notice = console.client.get(answer.headers["location"]).text
    assert "recon/2026-11-01..2026-11-03, recon/netsuite/2026-11-01..2026-11-03" in notice

    one = console.client.post("/console/reconciliations", data={**period, "erp": "netsuite"},
                              headers=own, follow_redirects=False)  # fmt: skip
    assert one.status_code == 303 and started[-1]["id"] == "recon/netsuite/2026-11-01..2026-11-03"
    unknown = console.client.post("/console/reconciliations", data={**period, "erp": "sap"},
                                  headers=own)  # fmt: skip
    assert unknown.status_code == 404 and "no ERP &#39;sap&#39;" in unknown.text
    assert len(started) == 3

    run_id = "recon/netsuite/2026-11-01..2026-11-01@20261102T020000"
    ReconciliationStore(console.store).start_run(
        run_id, datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC), "netsuite"
    )
    assert '<td class="erp">netsuite</td>' in console.client.get("/console/reconciliations").text
    page = console.client.get(f"/console/reconciliations/runs/{run_id}")
    assert '<dd class="erp">netsuite</dd>' in page.text
