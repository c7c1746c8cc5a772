"""The AsyncAPI document of the events out: every fact has its channel, operation and
message, every reference resolves inside the document, and a real event of each fact, as the
envelope builds it, is valid against its message's payload schema."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from adapters.events.asyncapi import asyncapi_document
from adapters.events.envelope import envelope
from canonical.customer import AccountRecord
from canonical.facts import (
    FACTS,
    AccountSynced,
    CreditApplied,
    CreditApproved,
    CreditRejected,
    DocumentPosted,
    ExceptionDecided,
    ExceptionOpened,
    Fact,
    PaymentPosted,
    ReconciliationFinished,
)
from canonical.money import Money

AT = datetime(2026, 12, 7, 9, 30, tzinfo=UTC)
EUR = Money.of("12.50", "EUR")
DECIDED = {"actor": "fin", "role": "finance", "reason": "ok", "amount": EUR, "decided_at": AT}
EXAMPLES: dict[type[Fact], Fact] = {
    AccountSynced: AccountSynced(customer_id="cus_1", records=[
        AccountRecord(system="erp", external_id="7", customer_id="cus_1", name="A")]),
    DocumentPosted: DocumentPosted(
        customer_id="cus_1", billing_document_id="in_1", document_type="invoice",
        erp_document_id="7", erp_number="INV7", manual=False, amount=EUR,
        workflow_id="subscription/sub_1"),
    PaymentPosted: PaymentPosted(
        customer_id="cus_1", billing_payment_id="py_1", kind="payment", erp_document_id="8",
        manual=False, amount=EUR, workflow_id="subscription/sub_1"),
    CreditApproved: CreditApproved(credit_id="credit/1/r", case_id="1", automatically=False,
                                   **DECIDED),
    CreditRejected: CreditRejected(credit_id="credit/1/r", case_id=None, **DECIDED),
    CreditApplied: CreditApplied(
        credit_id="credit/1/r", customer_id="cus_1", billing_document_id="cn_1",
        erp_document_id="9", erp_number=None, amount=EUR),
    ExceptionOpened: ExceptionOpened(
        exception_id="exception/credit/1/r/1", process="case_to_credit",
        origin_workflow_id="credit/1/r", step="apply_credit", customer_id="cus_1",
        subscription_id=None, invoice_id="in_1", case_id="1", amount=EUR,
        error_type="RejectedError", error_message="invoice already paid",
        allowed_decisions=["compensate", "reject"], opened_at=AT),
    ExceptionDecided: ExceptionDecided(
        exception_id="exception/credit/1/r/1", process="case_to_credit",
        origin_workflow_id="credit/1/r", decision="compensate", manual_erp_number=None,
        **DECIDED),
    ReconciliationFinished: ReconciliationFinished(
        run_id="recon/2026-12-06@20261207T020000", status="done", healed=1,
        exceptions_opened=0, finished_at=AT),
}  # fmt: skip


def address_of(event_type: str) -> str:
    return f"ledgerbridge.{event_type}.{{subject}}"


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return asyncapi_document(address_of)


def test_every_fact_has_a_channel_an_operation_and_a_message(document: dict[str, Any]) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert set(EXAMPLES) == set(FACTS)
    for fact in FACTS:
        message = document["components"]["messages"][fact.__name__]
        assert message["name"] == fact.event_type()
        [channel] = [c for c in document["channels"].values() if c["title"] == fact.event_type()]
        assert channel["address"] == address_of(fact.event_type())
        operation = document["operations"][f"send{fact.__name__}"]
        assert operation["action"] == "send"


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return own + [r for value in node.values() for r in _refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in _refs(value)]
    return []


def test_every_reference_resolves_inside_the_document(document: dict[str, Any]) -> None:
    refs = _refs(document)
    assert refs
    for ref in refs:
        assert ref.startswith("#/"), ref
        node: Any = document
        for part in ref[2:].split("/"):
            assert part in node, f"{ref} does not resolve"
            node = node[part]


@pytest.mark.parametrize("fact", FACTS, ids=lambda f: f.__name__)
def test_an_event_of_each_fact_is_valid_against_its_message(
    document: dict[str, Any], fact: type[Fact]
) -> None:
    event = envelope(EXAMPLES[fact], workflow_id="w", step="s", subject="sub", time=AT,
                     correlation_id="corr")  # fmt: skip
    instance = json.loads(event.body)
    schema = {**document, "$ref": f"#/components/messages/{fact.__name__}/payload"}
    validator = Draft202012Validator(schema)
    assert list(validator.iter_errors(instance)) == []
    # and one of another fact's type is not
    other = next(f for f in FACTS if f is not fact)
    wrong = {**instance, "type": other.event_type()}
    assert list(validator.iter_errors(wrong)) != []
    # nor one whose data lacks what the fact requires
    required = schema["components"]["schemas"][fact.__name__]["required"]
    lacking = {**instance, "data": {k: v for k, v in instance["data"].items() if k != required[0]}}
    assert list(validator.iter_errors(lacking)) != []
