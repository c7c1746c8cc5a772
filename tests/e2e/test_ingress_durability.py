"""Nothing is acknowledged that Temporal has not durably accepted."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
from pydantic import SecretStr

from adapters.billing.webhook_signature import sign_stripe
from adapters.settings import Settings
from adapters.store import IntegrationStore
from starters.api import create_app
from tests.fixtures.servers import free_port, serve_app

SECRET = "whsec_durability_test"


def test_webhook_gets_503_and_is_not_recorded_when_temporal_is_unreachable(
    tmp_path: Path,
) -> None:
    store_url = f"sqlite:///{tmp_path / 'store.sqlite'}"
    settings = Settings(
        home=tmp_path,
        temporal_address=f"127.0.0.1:{free_port()}",  # nothing listens there
        store_url=store_url,
        billing_webhook_secrets=[SecretStr(SECRET)],
        api_keys=[],
    )
    body = json.dumps(
        {
            "id": "evt_while_down",
            "type": "customer.created",
            "created": int(time.time()),
            "data": {"object": {"object": "customer", "id": "cus_while_down"}},
        }
    ).encode()
    headers = {"Stripe-Signature": sign_stripe(body, SECRET, int(time.time()))}

    with serve_app(create_app(settings)) as url:
        response = httpx.post(f"{url}/webhooks/stripe", content=body, headers=headers, timeout=30)

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert IntegrationStore(store_url).webhook_receipt("billing", "evt_while_down") is None
