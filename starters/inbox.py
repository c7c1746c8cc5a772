"""`ledgerbridge finance` and `ledgerbridge credits`: finance's inbox (credits waiting for
approval and open exceptions) and support's credit requests, through the API with the
user's key; every refusal is one line and a non-zero exit."""

from __future__ import annotations

import argparse
import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

from adapters.settings import Settings
from starters.console import ApiCallFailed, call_api, echo, money, table

CREDIT = "credit/"
EXCEPTION = "exception/"


def cmd_finance(args: argparse.Namespace, settings: Settings) -> int:
    """Finance's inbox, from the terminal."""
    if args.action == "inbox":
        return _inbox(args, settings)
    if args.action == "show":
        if args.id.startswith(CREDIT):
            _show_credit(settings, args.id, role="finance")
        else:
            _show_exception(settings, args.id)
        return 0
    if args.action in ("approve", "reject") and args.id.startswith(CREDIT):
        body = {"approve": args.action == "approve", "reason": args.reason}
        result = call_api(settings, "post", f"/v1/credits/{args.id}:decide", role="finance",
                          json=body).json()  # fmt: skip
        verdict = "approved" if result["approve"] else "rejected"
        echo(f"{args.id}: {verdict} by {result['approver']} ({result['role']}), recorded in the "
             f"audit trail")  # fmt: skip
        return 0
    if args.action == "approve":
        raise ApiCallFailed(
            f"{args.id} is not a credit waiting for approval; decide exceptions with "
            f"`ledgerbridge finance decide {args.id} retry|compensate|resolve-manually|reject`"
        )
    if not args.id.startswith(EXCEPTION):
        raise ApiCallFailed(f"{args.id} is neither a credit nor a finance exception id")
    decision = "reject" if args.action == "reject" else args.decision.replace("-", "_")
    body = {"decision": decision, "reason": args.reason, "manual_erp_number": args.erp_number}
    result = call_api(
        settings, "post", f"/v1/exceptions/{args.id}:decide", role="finance", json=body
    ).json()
    echo(f"{result['exception_id']}: {result['decision']} by {result['actor']} "
         f"({result['role']}), recorded in the audit trail")  # fmt: skip
    return 0


def _inbox(args: argparse.Namespace, settings: Settings) -> int:
    rows: list[tuple[float, tuple[str, ...]]] = []
    if args.process in (None, "case_to_credit"):
        params = {"customer_id": args.customer} if args.customer else {}
        for item in _every_page(settings, "/v1/approvals", params):
            asked = (
                item["reason"]
                if item["status"] == "unreadable"
                else f"approve? ({'; '.join(item['why'])})"
            )
            rows.append((item["age_hours"], (
                f"{item['age_hours']:.1f} h", "approval", "case_to_credit",
                item["customer_id"] or "-", money(item["amount"]), asked, item["credit_id"],
            )))  # fmt: skip
    params = {"customer_id": args.customer, "process": args.process}
    for item in _every_page(settings, "/v1/exceptions", {k: v for k, v in params.items() if v}):
        rows.append((item["age_hours"], (
            f"{item['age_hours']:.1f} h", "exception", item["process"],
            item["customer_id"] or "-", money(item["amount"]),
            f"{item['asked']} ({item['error'][:60]})", item["exception_id"],
        )))  # fmt: skip
    if not rows:
        echo("inbox is empty: nothing waits for finance")
        return 0
    rows.sort(key=lambda row: -row[0])  # oldest first
    header = ("age", "kind", "process", "customer", "amount", "asked", "id")
    echo(table(header, [cells for _age, cells in rows]))
    return 0


def _every_page(settings: Settings, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Every item of a paged list, following its `Link: rel="next"` to the end."""
    items: list[dict[str, Any]] = []
    while True:
        answer = call_api(settings, "get", path, role="finance", params=params)
        items.extend(answer.json())
        following = answer.links.get("next", {}).get("url")
        if not following:
            return items
        params = {**params, "page_token": parse_qs(urlsplit(following).query)["page_token"][0]}


def _show_exception(settings: Settings, exception_id: str) -> None:
    item = call_api(settings, "get", f"/v1/exceptions/{exception_id}", role="finance").json()
    context = item["context"]
    _fields(
        ("exception", item["exception_id"]), ("status", item["status"]),
        ("process", f"{item['process']} (step {item['step']})"),
        ("origin", item["origin_workflow_id"]), ("customer", item["customer_id"]),
        ("subscription", item["subscription_id"]), ("document", item["invoice_id"]),
        ("case", item["case_id"]), ("amount", money(item["amount"])), ("error", item["error"]),
        ("remote answer", json.dumps(context["remote_answer"])),
        ("correlation id", context["correlation_id"]), ("opened", item["opened_at"]),
        ("asked", item["asked"]),
    )  # fmt: skip
    for decision, effect in (context.get("decision_effects") or {}).items():
        echo(f"{'':>15}  {decision}: {effect}")
    if item["decision"]:
        decision = item["decision"]
        echo(f"{'decided':>15}  {decision['decision']} by {decision['actor']}: "
             f"{decision['reason']}")  # fmt: skip


def _show_credit(settings: Settings, credit_id: str, role: str) -> None:
    state = call_api(settings, "get", f"/v1/credits/{credit_id}", role=role).json()
    request, assessment = state["request"], state["assessment"] or {}
    approval, decision = state["approval"], state["finance_decision"]
    _fields(
        ("credit", state["workflow_id"]), ("status", state["status"]),
        ("case", request["case_id"]), ("customer", state["customer_id"]),
        ("amount", money(request["amount"])), ("reason", request["reason"]),
        ("requested by", request["requested_by"]), ("invoice", request["invoice_id"]),
        ("policy", f"{assessment.get('outcome', '-')}: {'; '.join(assessment.get('reasons', []))}"),
        ("approval", approval and f"{'approved' if approval['approve'] else 'rejected'} by "
                                  f"{approval['approver']}: {approval['reason']}"),
        ("billing credit", state["billing_document"]), ("ERP document", state["erp_number"]),
        ("exception", state["exception_id"]),
        ("finance decided", decision and f"{decision['decision']} by {decision['actor']}: "
                                         f"{decision['reason']}"),
    )  # fmt: skip


def cmd_credits(args: argparse.Namespace, settings: Settings) -> int:
    """Support's side: check a credit with the policy, request it, follow it."""
    if args.action == "show":
        _show_credit(settings, args.id, role="support")
        return 0
    body: dict[str, Any] = {
        "case_id": args.case, "amount": {"amount": args.amount, "currency": args.currency},
        "reason": args.reason, "invoice_id": args.invoice, "request_id": args.request_id,
    }  # fmt: skip
    if args.action == "validate":
        facts = call_api(settings, "post", "/v1/credits:validate", role="support",
                         json=body).json()  # fmt: skip
        _fields(
            ("outcome", facts["outcome"]), ("why", "; ".join(facts["reasons"])),
            ("customer", facts["customer_id"]), ("subscription", facts["subscription_id"]),
            ("monthly", money(facts["monthly_recurring"])),
            ("last 90 days", money(facts["credited_last_90_days"])),
            ("ERP party", facts["erp_party"]), ("ERP period open", facts["erp_period_open"]),
            ("warnings", "; ".join(facts["warnings"]) or "-"),
        )  # fmt: skip
        return 0
    if not body["request_id"]:
        raise ApiCallFailed("--request-id is required, so that sending it twice credits once")
    accepted = call_api(settings, "post", "/v1/credits", role="support", json=body).json()
    echo(f"{accepted['status']}: {accepted['workflow_id']} ({accepted['check']['outcome']}: "
         f"{'; '.join(accepted['check']['reasons'])})")  # fmt: skip
    return 0


def _fields(*pairs: tuple[str, Any]) -> None:
    for label, value in pairs:
        echo(f"{label:>15}  {value if value is not None else '-'}")


def add_parsers(sub: Any) -> None:
    """`finance` and `credits` on the `ledgerbridge` command line."""
    finance = sub.add_parser(
        "finance", help="the finance inbox: credits to approve and exceptions to decide"
    )
    actions = finance.add_subparsers(dest="action", required=True)
    inbox = actions.add_parser("inbox", help="what waits for finance, oldest first")
    inbox.add_argument("--customer", help="only this customer id")
    inbox.add_argument("--process", help="only this process, e.g. amendment_to_erp")
    show = actions.add_parser("show", help="one credit or exception with its full context")
    show.add_argument("id")
    approve = actions.add_parser("approve", help="approve a credit waiting for finance")
    approve.add_argument("id")
    approve.add_argument("--reason", required=True)
    reject = actions.add_parser(
        "reject", help="reject a credit, or decide `reject` on an exception (not to be posted)"
    )
    reject.add_argument("id")
    reject.add_argument("--reason", required=True)
    reject.set_defaults(erp_number=None)
    decide = actions.add_parser("decide", help="decide an exception")
    decide.add_argument("id")
    decide.add_argument("decision", choices=["retry", "compensate", "resolve-manually", "reject"])
    decide.add_argument("--reason", required=True)
    decide.add_argument("--erp-number", help="the ERP document posted by hand (resolve-manually)")

    credits = sub.add_parser("credits", help="support credits: check, request, follow")
    credit_actions = credits.add_subparsers(dest="action", required=True)
    for name, text in (
        ("validate", "what the policy would decide now (starts nothing)"),
        ("request", "request a credit on a ticket"),
    ):
        parser = credit_actions.add_parser(name, help=text)
        parser.add_argument("--case", required=True, help="the support ticket")
        parser.add_argument("--amount", required=True, help="e.g. 45.00")
        parser.add_argument("--currency", required=True, help="ISO 4217, e.g. USD")
        parser.add_argument("--reason", required=True)
        parser.add_argument("--invoice", help="credit this open invoice; default: the next one")
        parser.add_argument("--request-id", help="unique per request on the ticket")
    credit_show = credit_actions.add_parser("show", help="a credit's state, amounts and ids")
    credit_show.add_argument("id")
