"""Process health through every layer: the ERP goes down behind its fault proxy, an amendment
arrives by webhook, and `/v1/health/processes` names the ERP failing and the amendment it holds
up; the ERP comes back, the amendment posts, and the outage clears."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.conftest import API_KEYS, Stack, eventually
from tests.e2e.test_amendments_e2e import invoices_of, posted, subscribe

pytestmark = pytest.mark.e2e


def process_health(stack: Stack) -> dict[str, Any]:
    answer = httpx.get(
        f"{stack.api_url}/v1/health/processes",
        headers={"Authorization": f"Bearer {API_KEYS['ops']}"},
        timeout=15,
    )
    answer.raise_for_status()
    body: dict[str, Any] = answer.json()
    return body


async def test_erp_outage_names_the_amendment_it_holds_up_and_clears_when_back(
    stack: Stack, in_process_worker: None
) -> None:
    stack.erp_faults.add_rule("refuse", path="/*/rpc/*")  # the ERP is unreachable
    _customer, subscription_id, _pro = await subscribe(stack, "Health Outage Co")
    ledger = f"subscription/{subscription_id}"

    async def outage_named() -> dict[str, Any] | None:
        body = process_health(stack)
        outages = [o for o in body["outages"] if o["system"] == "erp" and ledger in o["waiting"]]
        return outages[0] if outages else None

    outage = await eventually(outage_named, "the ERP outage naming the amendment", 60)
    assert outage["holding_up"]["amendment_to_erp"] >= 1
    # The proxy accepts, then resets the connection: the adapter sees its answer lost.
    assert outage["summary"].startswith("ERP dropping answers for ")
    assert " amendment" in outage["summary"] and outage["summary"].endswith(" waiting")
    body = process_health(stack)
    erp = next(s for s in body["systems"] if s["system"] == "erp")
    assert erp["state"] == "failing" and erp["last_failure"] == "lost_answer"
    amendments = next(p for p in body["processes"] if p["process"] == "amendment_to_erp")
    assert amendments["in_flight"] >= 1 and amendments["waiting_on"]["erp"] >= 1

    stack.erp_faults.clear()
    [first] = await invoices_of(stack, subscription_id)
    await posted(stack, first.document_id)

    async def cleared() -> dict[str, Any] | None:
        body = process_health(stack)
        erp = next(s for s in body["systems"] if s["system"] == "erp")
        return body if erp["state"] == "ok" else None

    body = await eventually(cleared, "the ERP seen answering again", 30)
    assert not [o for o in body["outages"] if o["system"] == "erp"]
    erp = next(s for s in body["systems"] if s["system"] == "erp")
    # One recording interval may hold both the last failure and the first answer again.
    assert erp["last_success_at"] >= erp["last_failure_at"]
