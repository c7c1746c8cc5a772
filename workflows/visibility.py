"""Custom search attributes (registered on the server by `ledgerbridge up` and compose)."""

from __future__ import annotations

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
    process: str, status: str, *, customer_id: str | None = None, correlation_id: str | None = None
) -> TypedSearchAttributes:
    pairs: list[SearchAttributePair] = [
        SearchAttributePair(BUSINESS_PROCESS, process),
        SearchAttributePair(PROCESS_STATUS, status),
    ]
    if customer_id:
        pairs.append(SearchAttributePair(CUSTOMER_ID, customer_id))
    if correlation_id:
        pairs.append(SearchAttributePair(CORRELATION_ID, correlation_id))
    return TypedSearchAttributes(pairs)
