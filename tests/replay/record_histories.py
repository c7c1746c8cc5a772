"""Record the committed histories that the replay test runs against.

    .venv/bin/python -m tests.replay.record_histories

Run it only when a new history shape is worth keeping (a new workflow, a new path), never to
"fix" a failing replay: a replay failure means the change would break running workflows.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from canonical import Customer
from tests.fixtures.temporal import TEST_SERVER, register_search_attributes
from tests.workflow.test_account_sync import FakeSystems, running_workers, sync
from workflows.account_sync import AccountSyncWorkflow

HISTORIES = Path(__file__).parent / "histories"


async def record() -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(TEST_SERVER), data_converter=pydantic_data_converter
    )
    await register_search_attributes(env.client)
    systems = FakeSystems()
    systems.customers["cus_REPLAY1"] = Customer(customer_id="cus_REPLAY1", name="Replay Co")
    try:
        async with running_workers(env.client, "replay.", systems):
            for request in ("evt_r1", "evt_r2"):
                await sync(env.client, "replay.", "cus_REPLAY1", request)
            handle = env.client.get_workflow_handle_for(
                AccountSyncWorkflow.run, "account/cus_REPLAY1"
            )
            await handle.result()
            history = await handle.fetch_history()
        HISTORIES.mkdir(exist_ok=True)
        path = HISTORIES / "account_sync_two_requests.json"
        path.write_text(json.dumps(json.loads(history.to_json()), indent=1) + "\n")
        print(f"wrote {path}")
    finally:
        await env.shutdown()
        await asyncio.sleep(0.5)


if __name__ == "__main__":
    asyncio.run(record())
