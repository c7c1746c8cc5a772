"""`ledgerbridge chaos` as a user runs it: a private stack, business driven through webhooks
while the worker is SIGKILLed, the Temporal server restarted and billing, support and the ERP
misbehave behind their fault proxies, the books checked after."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from temporalio.client import WorkflowExecutionStatus

from adapters.store.models import Posting
from canonical import BillingDocument, Money
from canonical.reconciliation import LedgerDocument
from sandbox.faults import MODES
from starters.local.chaos import Checker, WorkflowRecord, _ids_in
from starters.local.expectations import ExpectedDocument

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def figure(output: str, name: str) -> str:
    found = re.search(rf"^{re.escape(name)}\s+(\S+)", output, re.MULTILINE)
    assert found, f"no figure {name!r} in:\n{output}"
    return found.group(1)


def faults_fired(output: str, system: str) -> dict[str, int]:
    """What the fault proxy in front of `system` injected, by mode, per the figures."""
    found = re.search(r"^faults injected\s+(.+)$", output, re.MULTILINE)
    assert found, f"no figure 'faults injected' in:\n{output}"
    modes = "|".join(MODES)
    return {m: int(n) for m, n in re.findall(rf"\b{system} ({modes}) (\d+)", found.group(1))}


@pytest.mark.timeout(420)
def test_chaos_run_with_kills_restarts_and_faults_on_every_system_keeps_the_books_exact() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGERBRIDGE_")}
    # The ERP template is bootstrapped once and kept with the tests' other Tryton templates.
    env["LEDGERBRIDGE_ERP_TEMPLATE_CACHE"] = str(PROJECT_ROOT / ".ledgerbridge" / "cache")
    run = subprocess.run(
        [str(BIN / "ledgerbridge"), "chaos", "--events", "20", "--seed", "7", "--kills", "1"],
        env=env, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=360,
    )  # fmt: skip
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    assert "chaos: all invariants hold" in output
    assert figure(output, "events driven") == "20"
    assert int(figure(output, "worker kills")) >= 1
    assert figure(output, "server restarts") == "1"
    assert figure(output, "duplicates found") == "0"
    assert figure(output, "lost events") == "0"
    for number in range(1, 13):
        assert re.search(rf"^PASS\s+{number} ", output, re.MULTILINE), output
    assert "SIGKILL NATS server" in output and "NATS SIGKILL 1" in output
    # The books: customers of every profile in turn, card payments, payments and refunds judged.
    assert re.search(r"^customers\s+USD card \d", output, re.MULTILINE), output
    assert re.search(r"^money driven\s+", output, re.MULTILINE), output
    assert "chaos: SIGKILL worker" in output and "SIGTERM Temporal dev server" in output
    assert re.search(r"erp outages [1-9]", output) and "temporal restart 1" in output
    for system in ("billing", "support", "erp"):
        assert re.search(rf"{system} outages [1-9]", output), output
        assert sum(faults_fired(output, system).values()) > 0, (system, output)


# --- the judge itself: a checker that cannot fail would prove nothing ----------------------


async def test_an_event_the_subscriber_never_took_fails_the_events_invariant(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from starters.local import chaos

    monkeypatch.setattr(chaos, "EVENTS_OUT_WITHIN", 0.0)
    outbox = [SimpleNamespace(event_id=i) for i in ("e1", "e2", "e3")]
    store = SimpleNamespace(outbox_events=lambda: outbox, unpublished_events=lambda limit: [],
                            business_events=lambda: [SimpleNamespace(event_id=i)
                                                     for i in ("e1", "e2", "e3")])  # fmt: skip
    subscriber = SimpleNamespace(received=["e1", "e3"], deliveries=3, refused=0)
    run = SimpleNamespace(settings=None, client=None, billing=None, subscriber=subscriber,
                          adapters=SimpleNamespace(store=store))  # fmt: skip
    checker = Checker(run)  # type: ignore[arg-type]
    ok, name, detail = await checker._events_out_once()
    assert not ok and name.startswith("11 ")
    assert "2 at the subscriber" in detail and "3 in the analytics table" in detail
    assert checker.violations == ["event e2 never reached the subscriber"]
    subscriber.received.append("e2")
    ok, _, detail = await Checker(run)._events_out_once()  # type: ignore[arg-type]
    assert ok and "3 at the subscriber, each once (0 redeliveries dropped by id)" in detail


def _checker(postings: list[Posting] | None = None, held: dict[str, str] | None = None) -> Checker:
    store = SimpleNamespace(postings=lambda: postings or [])
    run = SimpleNamespace(settings=None, client=None, billing=None,
                          adapters=SimpleNamespace(store=store))  # fmt: skip
    checker = Checker(run)  # type: ignore[arg-type]
    checker.held = dict(held or {})
    return checker


def _expected(reference: str, amount: str = "90.00") -> ExpectedDocument:
    return ExpectedDocument(reference, "invoice", "USD", Decimal(amount))


def _erp(reference: str, erp_id: int, amount: str = "90.00") -> LedgerDocument:
    return LedgerDocument(erp_document_id=str(erp_id), reference=reference, kind="invoice",
                          number=f"INV-{erp_id}", total=Money.of(amount, "USD"), state="posted",
                          customer_id="cus_1", document_date=None)  # fmt: skip


def test_checker_fails_a_reference_posted_twice_and_counts_the_duplicate() -> None:
    checker = _checker()
    ok, _, detail = checker._one_erp_document_each(
        {"in_1": _expected("in_1")}, [_erp("in_1", 1), _erp("in_1", 2)]
    )
    assert not ok and "1 twice" in detail
    assert checker.duplicates == 1
    assert checker.violations == ["in_1: 2 ERP documents (INV-1, INV-2)"]


def test_checker_excuses_a_missing_document_only_when_an_open_exception_holds_it() -> None:
    expected = {"in_1": _expected("in_1"), "in_2": _expected("in_2")}
    assert _checker(held={"in_1": "exc/1", "in_2": "exc/1"})._one_erp_document_each(expected, [])[0]
    checker = _checker(held={"in_1": "exc/1"})
    ok, _, _ = checker._one_erp_document_each(expected, [])
    assert not ok and checker.violations == ["in_2: 0 ERP documents (none)"]


def test_checker_wants_what_the_mapping_cannot_book_unposted_and_held_by_finance() -> None:
    expected = {"in_1": ExpectedDocument("in_1", "invoice", "EUR", Decimal("75.00"))}
    checker = _checker(held={"in_1": "exc/1"})
    checker.awaiting_finance = {"in_1"}
    assert checker._one_erp_document_each(expected, [])[0]
    posted = _erp("in_1", 1, "75.00").model_copy(update={"total": Money.of("75.00", "EUR")})
    assert not checker._one_erp_document_each(expected, [posted])[0]
    assert checker.violations == ["in_1: finance's mapping cannot book it, yet the ERP holds INV-1"]
    unheld = _checker()
    unheld.awaiting_finance = {"in_1"}
    assert not unheld._one_erp_document_each(expected, [])[0]
    assert unheld.violations == ["in_1: 75.00 EUR waits on no open finance exception"]


def test_checker_fails_an_erp_orphan_and_a_different_amount() -> None:
    checker = _checker()
    ok, _, _ = checker._one_erp_document_each(
        {"in_1": _expected("in_1")}, [_erp("in_1", 1, "80.00"), _erp("in_9", 2)]
    )
    assert not ok
    assert len(checker.violations) == 2 and "mirrors no billing document" in checker.violations[1]


def test_checker_fails_totals_that_differ_between_journal_erp_and_billing() -> None:
    journal = [Posting(amount=Decimal("90.00"), currency="USD", document_type="invoice",
                       erp_document_id="1")]  # fmt: skip
    assert _checker(journal)._totals_agree({"in_1": _expected("in_1")}, [_erp("in_1", 1)])[0]
    ok, _, detail = _checker(journal)._totals_agree(
        {"in_1": _expected("in_1")}, [_erp("in_1", 1, "80.00")]
    )
    assert not ok and "USD journal 90.00 ? ERP 80.00" in detail


def test_checker_fails_invoices_posted_out_of_billing_order() -> None:
    def invoice(number: str) -> BillingDocument:
        zero = Money.of("90.00", "USD")
        return BillingDocument(document_id=f"in_{number}", kind="invoice", status="open",
                               number=f"ABC-{number}", customer_id="cus_1", subscription_id="sub_1",
                               currency="USD", lines=[], subtotal=zero, tax=Money.of("0", "USD"),
                               total=zero, created_at=datetime.now(UTC))  # fmt: skip

    documents = [invoice("0001"), invoice("0002")]
    in_order = [_erp("in_0001", 5), _erp("in_0002", 6)]
    assert _checker()._billing_order_kept(documents, in_order)[0]
    reversed_order = [_erp("in_0001", 6), _erp("in_0002", 5)]
    assert not _checker()._billing_order_kept(documents, reversed_order)[0]


def _run(run_id: str, status: WorkflowExecutionStatus) -> Any:
    return SimpleNamespace(run_id=run_id, status=status, start_time=datetime.now(UTC))


def test_an_accepted_event_counts_as_done_only_when_its_process_finished_it() -> None:
    checker = _checker()
    checker.open_exceptions = {"exception/subscription/sub_1/1"}
    done = _run("r1", WorkflowExecutionStatus.COMPLETED)
    account = WorkflowRecord("account/cus_1", [done], {"r1": {"evt_1", "evt_2"}},
                             {"r1": {"handled_requests": ["evt_1"]}})  # fmt: skip
    assert checker._verdict(account, "evt_1", [done]) == "done"
    assert checker._verdict(account, "evt_2", [done]) != "done"  # received, never handled

    running = _run("r2", WorkflowExecutionStatus.RUNNING)
    ledger = WorkflowRecord("subscription/sub_1", [running], {"r2": {"evt_3"}})
    ledger.state = {"status": "waiting", "pending_events": 0, "blocked_by": None}
    assert checker._verdict(ledger, "evt_3", [running]) == "done"
    ledger.state = {"status": "waiting", "pending_events": 2, "blocked_by": None}
    assert checker._verdict(ledger, "evt_3", [running]) not in ("done", "held")
    ledger.state = {"status": "blocked", "blocked_by": "exception/subscription/sub_1/1"}
    assert checker._verdict(ledger, "evt_3", [running]) == "held"
    ledger.state = {"status": "blocked", "blocked_by": "exception/subscription/sub_1/2"}
    assert checker._verdict(ledger, "evt_3", [running]) not in ("done", "held")  # decided


def test_ids_are_found_in_signals_starts_and_continued_runs() -> None:
    started = {"request": {"request_id": "evt_9", "case_id": "7"}, "policy": {}}
    continued = {"pending": [{"event_id": "evt_1"}], "seen_event_ids": ["evt_0", "evt_1"]}
    assert _ids_in(started) == {"evt_9"}
    assert _ids_in(continued) == {"evt_0", "evt_1"}


def _support_checker(
    customers: dict[str, str], organizations: dict[str, str], notes: dict[str, list[str]]
) -> Checker:
    """A checker over a billing with these customers (id -> name) and a support holding these
    organizations (external id -> name) and credit tickets (id -> internal notes)."""

    async def listed_customers() -> Any:
        for customer_id, name in customers.items():
            yield SimpleNamespace(id=customer_id, name=name)  # as the stripe SDK lists them

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v2/organizations.json":
            listed = [{"external_id": c, "name": n} for c, n in organizations.items()]
            return httpx.Response(200, json={"organizations": listed, "next_page": None})
        case_id = request.url.path.split("/")[4]
        comments = [{"body": "the customer asks for a credit", "public": True}]
        comments += [{"body": body, "public": False} for body in notes[case_id]]
        return httpx.Response(200, json={"comments": comments})

    run = SimpleNamespace(
        settings=None, client=None, billing=None,
        driver=SimpleNamespace(customers=listed_customers),
        credit_tickets=list(notes),
        support_api=lambda: httpx.AsyncClient(base_url="http://support",
                                              transport=httpx.MockTransport(answer)),
    )  # fmt: skip
    return Checker(run)  # type: ignore[arg-type]


async def test_checker_fails_a_note_written_twice_and_a_customer_support_never_got() -> None:
    customers = {"cus_1": "Acme", "cus_2": "Globex"}
    once = {"7": ["Credit applied (cbtxn_1)"], "8": ["Credit applied (cbtxn_2)"]}
    ok, _, detail = await _support_checker(customers, customers, once)._support_written_once()
    assert ok and "2 with their organization" in detail and "0 twice" in detail

    twice = {"7": ["Credit applied (cbtxn_1)", "Credit applied (cbtxn_1)"]}
    checker = _support_checker(customers, {"cus_1": "Acme (old name)"}, twice)
    ok, _, detail = await checker._support_written_once()
    assert not ok and "1 twice" in detail and "1 without" in detail and "1 misnamed" in detail
    assert checker.duplicates == 1 and checker.lost == 1
    assert len(checker.violations) == 3
