"""NetSuite's token-based authentication signs the URL the caller calls: behind the local
stack's fault proxy (demo, chaos runs) the signature must still verify, and a lost answer to
an external-id upsert must leave one record, as NetSuite's upserts promise."""

from __future__ import annotations

import uuid

from adapters.erp import NetSuiteLedger
from canonical import Customer
from tests.fixtures.faults import serve_fault_proxy
from tests.fixtures.netsuite import NetSuiteServer


async def test_signed_calls_verify_through_the_proxy_and_a_lost_upsert_answer_leaves_one(
    netsuite_server: NetSuiteServer,
) -> None:
    with serve_fault_proxy(netsuite_server.url) as proxy:
        c = netsuite_server.credentials
        ledger = NetSuiteLedger(proxy.url, c.account_id, c.consumer_key, c.consumer_secret,
                                c.token_id, c.token_secret)  # fmt: skip
        try:
            customer = Customer(customer_id=f"cus_{uuid.uuid4().hex[:12]}", name="Proxy GmbH")
            assert await ledger.find_party(customer.customer_id) is None  # signed, verified
            proxy.set_rules([{"mode": "drop", "method": "PUT", "count": 1}])
            try:
                await ledger.ensure_party(customer)
            except Exception:
                await ledger.ensure_party(customer)
            found = await ledger.find_party(customer.customer_id)
            assert found is not None and found.name == "Proxy GmbH"
            assert proxy.stats()["faults"]["drop"] == 1  # the answer was lost indeed
        finally:
            await ledger.aclose()
