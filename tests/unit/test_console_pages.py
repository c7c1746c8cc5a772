"""The finance console over HTTP: its pages' security headers, sign-in and its cookie, CSRF
and cross-site refusals, expired sessions, escaping, roles, and decisions sent once.

The console calls the API's own operations (starters/api/finance.py, credits.py); here those
are replaced by fakes that record what they were asked, so a refused form is seen to reach
none of them. The real workflows answer in tests/browser."""

from __future__ import annotations

import asyncio
import html
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi import HTTPException
from fastapi.testclient import TestClient
from pydantic import SecretStr

from adapters.bootstrap import build_store
from adapters.settings import Settings
from adapters.store import IntegrationStore
from canonical import ExceptionContext, FinanceDecision, Money
from canonical.credit import CreditApproval, CreditRequest, CreditState
from starters.api import create_app, credits, finance
from starters.api.auth import ApiPrincipal, key_entry
from starters.api.console import ConsoleRefusal, audit
from starters.api.console.pages import Decided, DecisionsOnce
from starters.api.console.session import SESSION_COOKIE, ConsoleSessions
from starters.api.temporal import ItemsPage

KEYS = {
    "finance": "lb_console_finance_5f1c",
    "finance_admin": "lb_console_admin_77ab",
    "ops": "lb_console_ops_0c3d",
    "support": "lb_console_support_9e2f",
}
SECRET = "console-session-secret-for-tests-0123456789"
EXCEPTION_ID = "exception/credit/41/goodwill-1/1"
MARKUP = '<script>alert("x")</script><img src=x onerror=alert(1)>'


@dataclass
class FakeOperations:
    """Stands in for the API's operations the console calls; records each decision."""

    decided: list[tuple[str, str, str]] = field(default_factory=list)
    refusal: str | None = None
    error_text: str = "rejected: invoice in_1 is already paid"

    def context(self) -> ExceptionContext:
        return ExceptionContext(
            process="case_to_credit",
            origin_workflow_id="credit/41/goodwill-1",
            origin_run_id="run-origin",
            step="apply_credit",
            customer_id="cus_Console1",
            case_id="41",
            amount=Money.of("8.00", "USD"),
            error_type="rejected",
            error_message=self.error_text,
            remote_answer={"error": {"message": self.error_text}},
            correlation_id="corr-1",
            allowed_decisions=["compensate", "reject"],
            decision_effects={
                "compensate": "credit the next invoice instead",
                "reject": "no credit; the ticket is told why",
            },
        )

    def summary(self, age_hours: float = 30.0) -> finance.ExceptionSummary:
        context = self.context()
        return finance.ExceptionSummary(
            exception_id=EXCEPTION_ID, status="reminded", process=context.process,
            step=context.step, customer_id=context.customer_id, subscription_id=None,
            invoice_id="in_1", case_id="41", amount=context.amount,
            error=f"rejected: {context.error_message}", asked="compensate | reject",
            opened_at=datetime.now(UTC) - timedelta(hours=age_hours), age_hours=age_hours,
        )  # fmt: skip

    async def open_exceptions(
        self, _temporal: Any, *_filters: Any, min_amount: Decimal | None = None, **_page: Any
    ) -> ItemsPage[Any]:
        return fake_page([self.summary()], min_amount)

    async def count_exceptions(
        self, _temporal: Any, _process: Any, _customer: Any, hours: float | None,
        min_amount: Decimal | None,
    ) -> int:  # fmt: skip
        return fake_count([self.summary()], hours, min_amount)

    def approvals(self) -> list[credits.ApprovalSummary]:
        return [
            credits.ApprovalSummary(
                credit_id="credit/52/r-1", status="escalated", case_id="52",
                customer_id="cus_Console2", amount=Money.of("1500.00", "USD"),
                requested_by="agent-1", reason="outage", invoice_id=None,
                why=["over the auto-approve threshold"],
                opened_at=datetime.now(UTC) - timedelta(hours=80), age_hours=80.0,
            )
        ]  # fmt: skip

    async def pending_approvals(
        self, _temporal: Any, *_filters: Any, min_amount: Decimal | None = None, **_page: Any
    ) -> ItemsPage[Any]:
        return fake_page(self.approvals(), min_amount)

    async def count_approvals(
        self, _temporal: Any, _customer: Any, hours: float | None, min_amount: Decimal | None
    ) -> int:
        return fake_count(self.approvals(), hours, min_amount)

    async def exception_detail(self, _temporal: Any, exception_id: str) -> Any:
        if exception_id != EXCEPTION_ID:
            raise HTTPException(404, f"no finance exception {exception_id}")
        return finance.ExceptionDetail(
            **self.summary().model_dump(), context=self.context(), decision=None,
            origin_workflow_id="credit/41/goodwill-1", run_id="run-1",
        )  # fmt: skip

    async def decide(
        self, _temporal: Any, exception_id: str, body: Any, principal: ApiPrincipal
    ) -> FinanceDecision:
        if self.refusal:
            raise HTTPException(409, f"decision refused: {self.refusal}")
        self.decided.append((exception_id, body.decision, principal.name))
        return FinanceDecision(
            exception_id=exception_id, decision=body.decision, reason=body.reason,
            actor=principal.name, role=principal.role, decided_at=datetime.now(UTC),
        )  # fmt: skip


@dataclass
class Console:
    client: TestClient
    store: IntegrationStore
    ops: FakeOperations
    now: list[float]

    def sign_in(self, role: str) -> str:
        """Signs in with the role's key; returns the session's CSRF token."""
        form = self.client.get("/console/sign-in")
        token = hidden(form.text, "csrf_token")
        answer = self.client.post(
            "/console/sign-in", data={"api_key": KEYS[role], "csrf_token": token},
            headers={"Origin": "http://testserver"}, follow_redirects=False,
        )  # fmt: skip
        assert answer.status_code == 303, answer.text
        page = self.client.get("/console/signed-in")
        return hidden(page.text, "csrf_token")

    def decide(self, csrf: str | None, key: str = "idem-key-0001", **more: Any) -> Any:
        data = {"decision": "compensate", "reason": "credit the next invoice",
                "idempotency_key": key, **more}  # fmt: skip
        if csrf is not None:
            data["csrf_token"] = csrf
        headers = more.pop("headers", None) or {"Origin": "http://testserver"}
        data.pop("headers", None)
        return self.client.post(f"/console/decide/{EXCEPTION_ID}", data=data, headers=headers)


def fake_page(rows: list[Any], min_amount: Decimal | None) -> ItemsPage[Any]:
    """One page holding every row at least `min_amount` (the visibility query's filter)."""
    kept = [r for r in rows if min_amount is None or r.amount.amount >= min_amount]
    return ItemsPage(kept, None, len(kept))


def fake_count(rows: list[Any], hours: float | None, min_amount: Decimal | None) -> int:
    return sum(r.age_hours >= (hours or 0) for r in fake_page(rows, min_amount).items)


def hidden(page: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]+)"', page)
    assert found, f"no {name} in the page"
    return found.group(1)


@pytest.fixture
def console(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Console:
    settings = Settings(
        home=tmp_path,
        store_url=f"sqlite:///{tmp_path / 'store.sqlite'}",
        api_keys=[key_entry(f"{role}-1", role, key) for role, key in KEYS.items()],
        console_session_secret=SecretStr(SECRET),
        temporal_address="127.0.0.1:1",
    )
    store = build_store(settings)
    store.migrate()
    ops = FakeOperations()
    monkeypatch.setattr(finance, "open_exceptions", ops.open_exceptions)
    monkeypatch.setattr(finance, "exception_detail", ops.exception_detail)
    monkeypatch.setattr(finance, "decide", ops.decide)
    monkeypatch.setattr(credits, "pending_approvals", ops.pending_approvals)
    monkeypatch.setattr(finance, "count_exceptions", ops.count_exceptions)
    monkeypatch.setattr(credits, "count_approvals", ops.count_approvals)
    app = create_app(settings, store)
    now = [1_900_000_000.0]
    app.state.console_sessions = ConsoleSessions(
        app.state.keyring, SECRET.encode(), 600, clock=lambda: now[0]
    )
    return Console(TestClient(app), store, ops, now)


def assert_console_headers(answer: Any) -> None:
    csp = answer.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
    assert "unsafe-inline" not in csp and "default-src 'none'" in csp
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["referrer-policy"] == "same-origin"
    assert answer.headers["cache-control"] == "no-store"


def test_every_console_page_carries_the_security_headers_and_is_never_cached(
    console: Console,
) -> None:
    assert_console_headers(console.client.get("/console/sign-in"))
    console.sign_in("finance")
    for path in (
        "/console/inbox", "/console/inbox/items", f"/console/items/{EXCEPTION_ID}",
        "/console/audit", "/console/audit.csv", "/console/items/exception/none/1",
    ):  # fmt: skip
        answer = console.client.get(path)
        assert_console_headers(answer)
    page = console.client.get("/console/inbox").text
    assert "<script>" not in page.replace('<script src="/console/static/console.js"', "")
    assert "style=" not in page  # the CSP allows no inline style either


def test_sign_in_gives_an_http_only_strict_cookie_that_is_secure_over_https(
    console: Console,
) -> None:
    form = console.client.get("/console/sign-in")
    token = hidden(form.text, "csrf_token")
    answer = console.client.post(
        "/console/sign-in", data={"api_key": KEYS["finance"], "csrf_token": token},
        headers={"Origin": "http://testserver"}, follow_redirects=False,
    )  # fmt: skip
    cookie = [
        c for c in answer.headers.get_list("set-cookie") if c.startswith(f"{SESSION_COOKIE}=")
    ]
    assert cookie and "HttpOnly" in cookie[0] and "SameSite=strict" in cookie[0]
    assert "Path=/console" in cookie[0] and "Secure" not in cookie[0]
    assert KEYS["finance"] not in cookie[0]
    assert answer.headers["location"] == "/console/inbox"

    https = TestClient(console.client.app, base_url="https://testserver")
    form = https.get("/console/sign-in")
    answer = https.post(
        "/console/sign-in",
        data={"api_key": KEYS["finance"], "csrf_token": hidden(form.text, "csrf_token")},
        headers={"Origin": "https://testserver"}, follow_redirects=False,
    )  # fmt: skip
    [cookie] = [
        c for c in answer.headers.get_list("set-cookie") if c.startswith(f"{SESSION_COOKIE}=")
    ]
    assert "Secure" in cookie


def test_a_wrong_key_or_a_sign_in_without_its_token_or_from_another_site_is_refused(
    console: Console,
) -> None:
    token = hidden(console.client.get("/console/sign-in").text, "csrf_token")
    wrong = console.client.post("/console/sign-in", data={"api_key": "nope", "csrf_token": token})
    assert wrong.status_code == 401 and "missing or unknown API key" in wrong.text
    no_token = console.client.post("/console/sign-in", data={"api_key": KEYS["finance"]})
    assert no_token.status_code == 403
    foreign = console.client.post(
        "/console/sign-in", data={"api_key": KEYS["finance"], "csrf_token": token},
        headers={"Origin": "https://evil.example"},
    )  # fmt: skip
    assert foreign.status_code == 403 and "evil.example" in foreign.text
    for answer in (wrong, no_token, foreign):
        assert f"{SESSION_COOKIE}=" not in answer.headers.get("set-cookie", "")
    assert [e.action for e in console.store.audit_entries("console/session")] == []


def test_a_decision_without_its_csrf_token_or_from_another_origin_changes_nothing(
    console: Console,
) -> None:
    csrf = console.sign_in("finance")
    assert console.decide(None).status_code == 403
    assert console.decide("forged-token").status_code == 403
    foreign = console.decide(csrf, headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    opaque = console.decide(csrf, headers={"Origin": "null"})
    assert opaque.status_code == 403
    cross_site = console.decide(
        csrf, headers={"Origin": "http://testserver", "Sec-Fetch-Site": "cross-site"}
    )
    assert cross_site.status_code == 403
    assert console.ops.decided == []
    assert console.decide(csrf).status_code == 200
    assert console.ops.decided == [(EXCEPTION_ID, "compensate", "finance-1")]


def test_an_expired_session_is_refused_and_changes_nothing(console: Console) -> None:
    csrf = console.sign_in("finance")
    console.now[0] += 601
    refused = console.decide(csrf)
    assert refused.status_code == 401 and "expired" in refused.text
    assert console.ops.decided == []
    page = console.client.get("/console/inbox", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/console/sign-in")
    assert "expired" in console.client.get(page.headers["location"]).text
    assert console.client.get("/console/inbox/items").status_code == 401


def test_markup_in_an_exception_is_shown_as_text_never_run(console: Console) -> None:
    console.ops.error_text = MARKUP
    console.sign_in("finance")
    for path in ("/console/inbox", "/console/inbox/items", f"/console/items/{EXCEPTION_ID}"):
        page = console.client.get(path).text
        assert "<script>alert" not in page and "<img src=x" not in page, path
        assert "&lt;script&gt;alert(" in page, path


def test_support_sees_no_inbox_and_a_decision_posted_anyway_is_refused(
    console: Console,
) -> None:
    csrf = console.sign_in("support")
    home = console.client.get("/console/signed-in").text
    assert 'href="/console/inbox"' not in home
    inbox = console.client.get("/console/inbox")
    assert inbox.status_code == 403 and "role support may not" in inbox.text
    assert EXCEPTION_ID not in inbox.text
    assert console.client.get(f"/console/items/{EXCEPTION_ID}").status_code == 403
    assert console.decide(csrf).status_code == 403
    assert console.ops.decided == []


def test_ops_reads_an_item_without_a_decide_form_and_is_refused_if_it_posts_one(
    console: Console,
) -> None:
    csrf = console.sign_in("ops")
    page = console.client.get(f"/console/items/{EXCEPTION_ID}")
    assert page.status_code == 200 and "credit the next invoice instead" in page.text
    assert 'action="/console/decide/' not in page.text
    assert console.decide(csrf).status_code == 403 and console.ops.decided == []


def test_a_double_submit_decides_once(console: Console) -> None:
    csrf = console.sign_in("finance")
    first = console.decide(csrf, key="same-key-123")
    second = console.decide(csrf, key="same-key-123")
    assert first.status_code == second.status_code == 200
    assert "compensate by finance-1" in first.text and "compensate by finance-1" in second.text
    assert console.ops.decided == [(EXCEPTION_ID, "compensate", "finance-1")]
    assert console.decide(csrf, key="no").status_code == 422  # too short to be one of ours


def test_a_refused_decision_is_shown_in_place_with_the_form_kept(console: Console) -> None:
    console.ops.refusal = "8.00 USD is over the finance approval limit"
    csrf = console.sign_in("finance")
    answer = console.decide(csrf, reason="keep <this> reason")
    assert answer.status_code == 409
    assert "Refused: decision refused: 8.00 USD is over the finance approval limit" in answer.text
    assert "keep &lt;this&gt; reason" in answer.text and 'action="/console/decide/' in answer.text
    assert console.decide(csrf, decision="bogus").status_code == 422


def test_the_inbox_lists_approvals_and_exceptions_with_counts_ages_and_filters(
    console: Console,
) -> None:
    console.sign_in("finance")
    page = console.client.get("/console/inbox").text
    assert "1 approvals" in page and "1 exceptions" in page
    assert "2 over 24 h" in page and "1 over 72 h" in page
    assert 'class="age-72" data-item="credit/52/r-1"' in page
    assert 'class="age-24" data-item="exception/credit/41/goodwill-1/1"' in page
    assert page.index("credit/52/r-1") < page.index(EXCEPTION_ID)  # oldest first
    by_amount = console.client.get("/console/inbox?sort=amount&order=asc").text
    assert by_amount.index(EXCEPTION_ID) < by_amount.index("credit/52/r-1")
    big = console.client.get("/console/inbox?min_amount=100").text
    assert "credit/52/r-1" in big and EXCEPTION_ID not in big
    exceptions = console.client.get("/console/inbox?kind=exception").text
    assert "credit/52/r-1" not in exceptions and EXCEPTION_ID in exceptions
    bad = console.client.get("/console/inbox", params={"customer": "x' OR 1=1"})
    assert bad.status_code == 422 and "customer" in bad.text
    assert 'aria-live="polite"' in page and 'data-refresh="/console/inbox/items?' in page


def test_the_audit_trail_is_searched_by_actor_action_customer_and_date_and_exported(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = console.store
    store.append_audit(actor="finance-1", role="finance", action="exception.compensate",
                       subject=EXCEPTION_ID, reason="=HYPERLINK(\"x\")")  # fmt: skip
    store.append_audit(actor="admin-1", role="finance_admin", action="credit.approved",
                       subject="credit/52/r-1", reason="ok")  # fmt: skip
    store.append_audit(actor="ops-1", role="ops", action="account.sync_requested",
                       subject="account/cus_Console3")  # fmt: skip

    async def subjects(_temporal: Any, customer_id: str) -> list[str]:
        return [EXCEPTION_ID] if customer_id == "cus_Console1" else []

    monkeypatch.setattr(audit, "customer_subjects", subjects)
    console.sign_in("finance")

    def subjects_on(query: str) -> list[str]:
        page = console.client.get(f"/console/audit?{query}")
        assert page.status_code == 200, page.text
        return re.findall(r"<td>((?:exception|credit|account)/[^<]+)</td>", page.text)

    assert subjects_on("actor=admin-1") == ["credit/52/r-1"]
    assert subjects_on("action=exception.") == [EXCEPTION_ID]
    assert subjects_on("customer=cus_Console1") == [EXCEPTION_ID]
    assert subjects_on("customer=cus_Console3") == ["account/cus_Console3"]
    today = datetime.now(UTC).date()
    # The three rows and the sign-in's own row.
    assert len(subjects_on(f"since={today}&until={today}")) == 3
    assert "console.signed_in" in console.client.get(f"/console/audit?since={today}").text
    assert subjects_on(f"until={today - timedelta(days=1)}") == []
    assert console.client.get("/console/audit?since=yesterday").status_code == 422
    exported = console.client.get("/console/audit.csv?actor=finance-1&action=exception.")
    assert exported.headers["content-type"].startswith("text/csv")
    assert "attachment" in exported.headers["content-disposition"]
    lines = exported.text.strip().splitlines()
    assert lines[0].startswith("id,occurred_at,actor") and len(lines) == 2
    assert "'=HYPERLINK" in lines[1]  # a formula is exported as text


def test_a_credit_is_approved_through_the_credit_update_and_its_refusal_shown(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    credit_id = "credit/52/r-1"
    asked: list[tuple[str, bool, str, str]] = []

    async def state(_temporal: Any, wanted: str) -> Any:
        assert wanted == credit_id
        return CreditState(
            workflow_id=credit_id, status="awaiting_approval", customer_id="cus_Console2",
            request=CreditRequest(
                case_id="52", request_id="r-1", organization_id="9", requested_by="agent-1",
                amount=Money.of("1500.00", "USD"), reason="outage <b>long</b>",
            ),
            assessment=None, approval=None, billing_document=None, erp_number=None,
            exception_id=None,
        )  # fmt: skip

    async def decide(_temporal: Any, wanted: str, body: Any, who: ApiPrincipal) -> Any:
        if who.role == "finance":
            raise HTTPException(409, "decision refused: 1500.00 USD is over the finance limit")
        asked.append((wanted, body.approve, body.reason, who.name))
        return CreditApproval(approve=body.approve, reason=body.reason, approver=who.name,
                              role=who.role)  # fmt: skip

    monkeypatch.setattr(credits, "credit_state", state)
    monkeypatch.setattr(credits, "decide_approval", decide)
    csrf = console.sign_in("finance")
    page = console.client.get(f"/console/items/{credit_id}")
    assert page.status_code == 200 and "outage &lt;b&gt;long&lt;/b&gt;" in page.text
    assert 'value="approve"' in page.text and 'value="compensate"' not in page.text

    def post(csrf: str, decision: str, key: str) -> Any:
        return console.client.post(
            f"/console/decide/{credit_id}",
            data={"decision": decision, "reason": "ok", "idempotency_key": key,
                  "csrf_token": csrf},
            headers={"Origin": "http://testserver"},
        )  # fmt: skip

    refused = post(csrf, "approve", "credit-key-1")
    assert refused.status_code == 409 and "over the finance limit" in refused.text
    assert post(csrf, "compensate", "credit-key-2").status_code == 422
    assert asked == []
    admin_csrf = console.sign_in("finance_admin")
    approved = post(admin_csrf, "approve", "credit-key-1")
    assert approved.status_code == 200 and "approved by finance_admin-1" in approved.text
    assert asked == [(credit_id, True, "ok", "finance_admin-1")]


async def test_two_submits_of_one_form_at_once_decide_once_and_a_refusal_frees_the_form() -> None:
    once = DecisionsOnce()
    calls: list[str] = []
    gate = asyncio.Event()

    async def decide() -> Decided:
        calls.append("decide")
        await gate.wait()
        return Decided("decided once")

    first = asyncio.create_task(once.once(("finance-1", "key-1"), decide))
    second = asyncio.create_task(once.once(("finance-1", "key-1"), decide))
    await asyncio.sleep(0.01)
    gate.set()
    assert (await first).message == (await second).message == "decided once"
    assert calls == ["decide"]

    async def refused() -> Decided:
        raise ConsoleRefusal(409, "already decided")

    with pytest.raises(ConsoleRefusal):
        await once.once(("finance-1", "key-2"), refused)
    assert (await once.once(("finance-1", "key-2"), decide)).message == "decided once"


def test_the_inbox_counts_every_item_and_links_the_next_and_previous_pages(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str | None] = []

    async def first_of_many(_temporal: Any, *_filters: Any, **page: Any) -> ItemsPage[Any]:
        asked.append(page["page_token"])
        return ItemsPage(console.ops.approvals(), "dG9rZW4tMg==", 250)

    monkeypatch.setattr(credits, "pending_approvals", first_of_many)
    console.sign_in("finance")
    page = console.client.get("/console/inbox").text
    assert "<strong>251</strong> waiting" in page and "250 approvals" in page
    assert "This page shows 2 of 251" in page and 'rel="prev"' not in page
    following = re.search(r'<a rel="next" href="([^"]+)"', page)
    assert following, "no next page"
    later = console.client.get(html.unescape(following.group(1))).text
    assert asked == [None, "dG9rZW4tMg=="]  # the next page continues the approvals' list
    assert EXCEPTION_ID not in later  # the exceptions' list ended on the first page
    assert "<strong>251</strong> waiting" in later
    back = re.search(r'<a rel="prev" href="([^"]+)"', later)
    assert back and "approvals_page" not in back.group(1) and "back=" not in back.group(1)
    assert console.client.get("/console/inbox?approvals_page=x'%20OR%201").status_code == 422
