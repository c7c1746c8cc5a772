"""Payload encryption on the dev server: our workflows run on a client and worker with the codec;
the history the server stores, read raw by a client without it, holds no names, emails or
amounts; the codec endpoint the Web UI calls decrypts a payload of that history for an
operator's key, or a browser signed in with one, and for no one else."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from google.protobuf import json_format
from google.protobuf.message import Message
from pydantic import SecretStr
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from adapters.codec import ENCODING, KEY_ID_KEY, new_key_entry
from adapters.settings import Settings
from adapters.temporal import connect_for
from adapters.visibility import ALL_KEYS
from canonical import Customer
from canonical.credit import CreditPolicy
from starters.api import create_app
from starters.api.auth import key_entry
from starters.routing import credit_start, start_once
from tests.workflow.test_account_sync import FakeSystems, running_workers, sync
from tests.workflow.test_case_to_credit import FakeDesk, credit, running
from workflows.account_sync import ENTITLEMENTS_PATCH, AccountSyncWorkflow
from workflows.case_to_credit import (
    CREDIT_FACTS_ONCE,
    CREDIT_RELEASES,
    STANDING_FROM_ENTITLEMENTS,
    CaseToCreditWorkflow,
)
from workflows.erp_postings import POSTING_PATCHES

pytestmark = pytest.mark.e2e

PAYLOAD_KEY = new_key_entry("k-e2e")
OPS_KEY = "lb_test_ops_codec"
NAME, EMAIL = "Ottoline Quarrington-Vexley", "ottoline@quarrington-vexley.example"
AMOUNT = "43.17"  # auto-approved: under 50 USD and 10 % of 900 monthly
# Ours, and the one the SDK sets on a patched run (it names the patch, no business data).
SEARCH_ATTRIBUTES = {key.name for key in ALL_KEYS} | {"TemporalChangeVersion"}

# Patches and releases of the workflows in these histories (their markers are written outside
# the codec).
KNOWN_PATCHES = {CREDIT_FACTS_ONCE, STANDING_FROM_ENTITLEMENTS, ENTITLEMENTS_PATCH,
                 *POSTING_PATCHES, *CREDIT_RELEASES}  # fmt: skip


LOCAL_ACTIVITY_MARKER = {"seq", "attempt", "activity_id", "activity_type", "complete_time",
                         "backoff", "original_schedule_time", "activation_index"}  # fmt: skip


def settings_with_key(env: WorkflowEnvironment, tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path / "home",
        temporal_address=env.client.service_client.config.target_host,
        store_url=f"sqlite:///{tmp_path / 'store.sqlite'}",
        payload_keys=[SecretStr(PAYLOAD_KEY)],
        api_keys=[key_entry("ops-1", "ops", OPS_KEY)],
    )


def payloads_in(message: Message, path: str = "") -> Iterator[tuple[str, Payload]]:
    """Every Payload anywhere in a protobuf message, with the field path that holds it."""
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        here = f"{path}.{field.name}"
        if field.message_type.GetOptions().map_entry:  # search attributes, memo, header
            items = [(f"{here}[{key}]", item) for key, item in value.items()]
        elif field.is_repeated:
            items = [(here, item) for item in value]
        else:
            items = [(here, value)]
        for item_path, item in items:
            if isinstance(item, Payload):
                yield item_path, item
            elif isinstance(item, Message):
                yield from payloads_in(item, item_path)


def assert_stored_history_holds_no_plaintext(history: WorkflowHistory) -> set[str]:
    """Checks the raw history; returns the search attribute names it carries in plaintext."""
    raw = b"".join(event.SerializeToString() for event in history.events)
    for secret in (NAME, EMAIL, AMOUNT):
        assert secret.encode() not in raw, f"{secret!r} stored in plaintext"
    indexed: set[str] = set()
    encrypted = 0
    for event in history.events:
        for path, payload in payloads_in(event):
            if ".search_attributes.indexed_fields[" in path:
                # Search attributes are indexed by the server, so never encrypted: ids only.
                indexed.add(path.rsplit("[", 1)[1].rstrip("]"))
                continue
            if path.endswith("marker_recorded_event_attributes.details[patch-data].payloads"):
                # The SDK's core writes a patch marker itself, outside the codec: it holds the
                # patch's name (ours, never business data), which is all it may hold.
                assert json.loads(payload.data)["id"] in KNOWN_PATCHES, f"{path}: {payload.data!r}"
                continue
            if path.endswith("marker_recorded_event_attributes.details[data].payloads"):
                # So is a local activity's marker (the route): which activity ran, its attempt
                # and times, nothing of its input or result (those go through the codec).
                assert set(json.loads(payload.data)) <= LOCAL_ACTIVITY_MARKER, payload.data
                continue
            assert payload.metadata["encoding"] == ENCODING, f"{path} is not encrypted"
            assert payload.metadata[KEY_ID_KEY] == b"k-e2e"
            encrypted += 1
    assert encrypted >= 5  # input, summary, activity inputs and results, the result
    assert indexed <= SEARCH_ATTRIBUTES
    return indexed


async def test_account_sync_history_on_the_server_holds_no_customer_name_or_email(
    dev_server_env: WorkflowEnvironment, queue_prefix: str, tmp_path: Path
) -> None:
    settings = settings_with_key(dev_server_env, tmp_path)
    encrypting = await connect_for(settings)
    plain: Client = dev_server_env.client  # pydantic converter, no codec: what the server holds
    systems = FakeSystems()
    customer_id = f"cus_{uuid.uuid4().hex[:12]}"
    systems.customers[customer_id] = Customer(
        customer_id=customer_id, name=NAME, email=EMAIL, currency="USD"
    )
    async with running_workers(encrypting, queue_prefix, systems):
        workflow_id = await sync(encrypting, queue_prefix, customer_id, f"evt_{customer_id}")
        result = await encrypting.get_workflow_handle_for(
            AccountSyncWorkflow.run, workflow_id
        ).result()

    assert result.status == "in_sync" and {r.name for r in result.records} == {NAME}
    assert systems.parties[customer_id].name == NAME  # the activities saw the real values
    history = await plain.get_workflow_handle(workflow_id).fetch_history()
    assert_stored_history_holds_no_plaintext(history)
    with pytest.raises(Exception, match="binary/encrypted"):
        await plain.get_workflow_handle(workflow_id).result()


async def test_credit_history_holds_no_amount_and_the_codec_endpoint_decrypts_it_for_ops_only(
    dev_server_env: WorkflowEnvironment, queue_prefix: str, tmp_path: Path
) -> None:
    settings = settings_with_key(dev_server_env, tmp_path)
    encrypting = await connect_for(settings)
    case_id = f"c{uuid.uuid4().hex[:10]}"
    request = credit(AMOUNT, case_id=case_id, reason=f"outage reported by {NAME}")
    start = credit_start(request, CreditPolicy(), "corr-encrypted", customer_id="cus_1")
    desk = FakeDesk()
    async with running(encrypting, queue_prefix, desk):
        assert await start_once(encrypting, start, queue_prefix)
        state = await encrypting.get_workflow_handle_for(
            CaseToCreditWorkflow.run, start.workflow_id
        ).result()

    assert state.status == "applied" and str(desk.applied[0].amount.amount) == AMOUNT
    history = await dev_server_env.client.get_workflow_handle(start.workflow_id).fetch_history()
    indexed = assert_stored_history_holds_no_plaintext(history)
    # Known and by design: the indexed AmountMinor search attribute stays readable (and
    # searchable) in minor units; every payload holding the amount itself is encrypted.
    assert "AmountMinor" in indexed

    started = history.events[0].workflow_execution_started_event_attributes
    body = {"payloads": [json_format.MessageToDict(p) for p in started.input.payloads]}
    api = TestClient(create_app(settings))
    ui = {"Origin": "http://localhost:8233", "X-Namespace": "default"}
    refused = api.post("/codec/decode", json=body, headers=ui)
    assert refused.status_code == 401 and AMOUNT not in refused.text
    decoded = api.post(
        "/codec/decode", json=body, headers={**ui, "Authorization": f"Bearer {OPS_KEY}"}
    )
    assert decoded.status_code == 200, decoded.text
    assert decoded.headers["access-control-allow-origin"] == "http://localhost:8233"
    [item] = decoded.json()["payloads"]
    workflow_input = json.loads(base64.b64decode(item["data"]))
    assert workflow_input["request"]["amount"]["amount"] == AMOUNT
    assert workflow_input["request"]["reason"] == f"outage reported by {NAME}"

    # The Web UI's way: a browser signed in once at /codec/login decodes with its cookie alone.
    with TestClient(create_app(settings)) as browser:  # lifespan: the store holds the audit
        signed_in = browser.post("/codec/login", data={"api_key": OPS_KEY})
        assert signed_in.status_code == 200 and OPS_KEY not in signed_in.headers["set-cookie"]
        by_cookie = browser.post("/codec/decode", json=body, headers=ui)
    assert by_cookie.status_code == 200, by_cookie.text
    [item] = by_cookie.json()["payloads"]
    assert json.loads(base64.b64decode(item["data"]))["request"]["amount"]["amount"] == AMOUNT
