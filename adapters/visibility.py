"""Custom search attributes (registered on the server by `ledgerbridge up` and compose)."""

from __future__ import annotations

from typing import Any

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

CUSTOMER_ID = SearchAttributeKey.for_keyword("CustomerId")
SUBSCRIPTION_ID = SearchAttributeKey.for_keyword("SubscriptionId")
INVOICE_ID = SearchAttributeKey.for_keyword("InvoiceId")
CASE_ID = SearchAttributeKey.for_keyword("CaseId")
CORRELATION_ID = SearchAttributeKey.for_keyword("CorrelationId")
BUSINESS_PROCESS = SearchAttributeKey.for_keyword("BusinessProcess")
PROCESS_STATUS = SearchAttributeKey.for_keyword("ProcessStatus")
AMOUNT_MINOR = SearchAttributeKey.for_int("AmountMinor")

ALL_KEYS = (
    CUSTOMER_ID,
    SUBSCRIPTION_ID,
    INVOICE_ID,
    CASE_ID,
    CORRELATION_ID,
    BUSINESS_PROCESS,
    PROCESS_STATUS,
    AMOUNT_MINOR,
)


def search_attribute_flags() -> list[str]:
    """`Name=Type` pairs as the temporal CLI and admin tools take them."""
    kinds = {"KEYWORD": "Keyword", "INT": "Int"}
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
