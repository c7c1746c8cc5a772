"""Custom search attributes (registered on the server by `ledgerbridge up` and compose)."""

from __future__ import annotations

import json
from typing import Any

from temporalio.common import (
    SearchAttributeKey,
    SearchAttributePair,
    SearchAttributeUpdate,
    TypedSearchAttributes,
)

from canonical import Money

CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
SUBSCRIPTION_ID = SearchAttributeKey.for_keyword("SubscriptionId")
INVOICE_ID = SearchAttributeKey.for_keyword("InvoiceId")
CASE_ID = SearchAttributeKey.for_keyword("CaseId")
CORRELATION_ID = SearchAttributeKey.for_keyword("CorrelationId")
BUSINESS_PROCESS = SearchAttributeKey.for_keyword("BusinessProcess")
PROCESS_STATUS = SearchAttributeKey.for_keyword("ProcessStatus")
AMOUNT_MINOR = SearchAttributeKey.for_int("AmountMinor")
# What an inbox row shows, so the list answers from visibility alone (no workflow query per
# row). Visibility is not encrypted: codes and ids only, never names, free text or amounts
# in decimals (AmountMinor + Currency carry the amount, as AmountMinor always has).
CURRENCY = SearchAttributeKey.for_keyword("Currency")
ORIGIN_PROCESS = SearchAttributeKey.for_keyword("OriginProcess")
INBOX_SUMMARY = SearchAttributeKey.for_text("InboxSummary")
# The patch under which workflows upsert the row attributes (runs before it have none).
INBOX_ROW_PATCH = "inbox-row-in-visibility"
SUMMARY_LIMIT = 1000  # characters: far below the server's 2 KB per search attribute value

ALL_KEYS = (
    CUSTOMER_ID,
    SUBSCRIPTION_ID,
    INVOICE_ID,
    CASE_ID,
    CORRELATION_ID,
    BUSINESS_PROCESS,
    PROCESS_STATUS,
    AMOUNT_MINOR,
    CURRENCY,
    ORIGIN_PROCESS,
    INBOX_SUMMARY,
)


def search_attribute_flags() -> list[str]:
    """`Name=Type` pairs as the temporal CLI and admin tools take them."""
    kinds = {"KEYWORD": "Keyword", "INT": "Int", "TEXT": "Text"}
    return [f"{key.name}={kinds[key.indexed_value_type.name]}" for key in ALL_KEYS]


def start_attributes(
    process: str,
    status: str,
    *,
    customer_id: str | None = None,
    correlation_id: str | None = None,
    subscription_id: str | None = None,
    invoice_id: str | None = None,
    case_id: str | None = None,
    amount_minor: int | None = None,
) -> TypedSearchAttributes:
    """The search attributes a run starts with: business process, status and its ids."""
    pairs: list[SearchAttributePair[Any]] = [
        SearchAttributePair(BUSINESS_PROCESS, process),
        SearchAttributePair(PROCESS_STATUS, status),
    ]
    keyword_values = (
        (CUSTOMER_ID, customer_id),
        (CORRELATION_ID, correlation_id),
        (SUBSCRIPTION_ID, subscription_id),
        (INVOICE_ID, invoice_id),
        (CASE_ID, case_id),
    )
    pairs.extend(SearchAttributePair(key, value) for key, value in keyword_values if value)
    if amount_minor is not None:
        pairs.append(SearchAttributePair(AMOUNT_MINOR, amount_minor))
    return TypedSearchAttributes(pairs)


def inbox_summary(**fields: str | list[str]) -> str:
    """The short, code-only summary an inbox row shows (JSON), cut to fit visibility."""
    text = json.dumps(fields, separators=(",", ":"), sort_keys=True)
    while len(text) > SUMMARY_LIMIT and fields:
        longest = max(fields, key=lambda k: len(json.dumps(fields[k])))
        value = fields[longest]
        fields[longest] = value[: len(value) // 2]
        text = json.dumps(fields, separators=(",", ":"), sort_keys=True)
    return text


def read_inbox_summary(value: str | None) -> dict[str, Any]:
    """`inbox_summary`'s fields; {} for a run that has none (started before it existed)."""
    if not value:
        return {}
    try:
        fields = json.loads(value)
    except ValueError:
        return {}
    return fields if isinstance(fields, dict) else {}


def amount_of(attributes: TypedSearchAttributes) -> Money | None:
    """The amount a run's attributes carry (AmountMinor in its Currency), if both are set."""
    minor, currency = attributes.get(AMOUNT_MINOR), attributes.get(CURRENCY)
    return Money.from_minor(minor, currency) if minor is not None and currency else None


def credit_row(currency: str, why: list[str]) -> list[SearchAttributeUpdate[Any]]:
    """What a credit waiting for approval shows in the inbox; `why` carries no amounts."""
    return [CURRENCY.value_set(currency), INBOX_SUMMARY.value_set(inbox_summary(why=why))]


def exception_row(
    process: str, step: str, error_type: str, asked: list[str], currency: str | None
) -> list[SearchAttributeUpdate[Any]]:
    """What an open exception shows in the inbox: the process it holds up, the failed step,
    the error's type (its message may carry remote data: it stays on the item page) and
    the decisions asked."""
    updates: list[SearchAttributeUpdate[Any]] = [
        ORIGIN_PROCESS.value_set(process),
        INBOX_SUMMARY.value_set(inbox_summary(step=step, error=error_type, asked=asked)),
    ]
    if currency:
        updates.append(CURRENCY.value_set(currency))
    return updates
