"""A NetSuite-compatible ERP server (SuiteTalk REST web services subset) for local stacks and
tests.

Customers, invoices, credit memos, customer payments and customer refunds through the record
service (`record/v1`, external-id upserts), SuiteQL over tables shaped like NetSuite's, OAuth
1.0a token-based authentication (HMAC-SHA256) on every call, NetSuite's error bodies, the
account's concurrency limit, accounting periods that close, and the books of the local finance
mapping. docs/netsuite.md says what each behaviour follows and what is not modelled.
"""

from sandbox.netsuite._auth import Credentials
from sandbox.netsuite.app import DEFAULT_CONCURRENCY_LIMIT, create_app

__all__ = ["DEFAULT_CONCURRENCY_LIMIT", "Credentials", "create_app"]
