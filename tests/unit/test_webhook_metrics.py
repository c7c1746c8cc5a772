"""Each webhook delivery moves the right counters, through the API app (`create_app`, its
real signature checks and error answers); only the hand-over to Temporal is a fake, so its
answer (accepted, duplicate, Temporal down) is the test's to choose. /metrics shows them."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from adapters.billing.webhook_signature import sign_stripe
from adapters.metrics import sample
from adapters.settings import Settings
from starters.api import create_app, dependencies
from starters.api.intake import Accepted
from starters.api.temporal import TemporalUnavailable
from starters.routing import ProcessStart
from tests.fixtures.servers import free_port

SECRET = "whsec_metrics_unit"
ANSWERED = "ledgerbridge_webhooks_answered_total"


@dataclass
class ScriptedIntake:
    """Answers what the test says; `None` plays Temporal being out of reach."""

    status: str | None = "accepted"

    async def start_processes(
        self, starts: list[ProcessStart], source: str, event_id: str, kind: str
    ) -> Accepted:
        if self.status is None:
            raise TemporalUnavailable("unit: no workflow engine")
        return Accepted(status=self.status, workflow_id=starts[0].workflow_id)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, ScriptedIntake]]:
    settings = Settings(
        home=tmp_path,
        temporal_address=f"127.0.0.1:{free_port()}",  # nothing listens: /metrics says so
        store_url=f"sqlite:///{tmp_path / 'store.sqlite'}",
        billing_webhook_secrets=[SecretStr(SECRET)],
        webhook_max_bytes=4096,
        api_keys=[],
    )
    app = create_app(settings)
    intake = ScriptedIntake()
    app.dependency_overrides[dependencies.get_intake] = lambda: intake
    with TestClient(app) as client:
        yield client, intake


def _event(event_id: str) -> bytes:
    return json.dumps(
        {
            "id": event_id,
            "type": "customer.created",
            "created": int(time.time()),
            "data": {"object": {"object": "customer", "id": "cus_metrics"}},
        }
    ).encode()


def _post(client: TestClient, body: bytes, secret: str = SECRET) -> int:
    headers = {"Stripe-Signature": sign_stripe(body, secret, int(time.time()))}
    return client.post("/webhooks/stripe", content=body, headers=headers).status_code


def _answered(outcome: str, reason: str = "none") -> float:
    return sample(ANSWERED, {"source": "billing", "outcome": outcome, "reason": reason})


def _moved(deliver: object, outcome: str, reason: str = "none") -> None:
    """`deliver()` moves received and exactly this outcome's counter by one."""
    received = sample("ledgerbridge_webhooks_received_total", {"source": "billing"})
    before = _answered(outcome, reason)
    acks = sample(
        "ledgerbridge_webhook_acknowledgement_seconds_count",
        {"source": "billing", "outcome": outcome},
    )
    deliver()  # type: ignore[operator]
    assert sample("ledgerbridge_webhooks_received_total", {"source": "billing"}) == received + 1
    assert _answered(outcome, reason) == before + 1
    assert (
        sample(
            "ledgerbridge_webhook_acknowledgement_seconds_count",
            {"source": "billing", "outcome": outcome},
        )
        == acks + 1
    )


def test_an_accepted_webhook_counts_as_accepted(api: tuple[TestClient, ScriptedIntake]) -> None:
    client, _ = api
    _moved(lambda: _post(client, _event("evt_m_accepted")) == 200 or pytest.fail(), "accepted")


def test_a_duplicate_webhook_counts_as_duplicate(api: tuple[TestClient, ScriptedIntake]) -> None:
    client, intake = api
    intake.status = "duplicate"
    _moved(lambda: _post(client, _event("evt_m_dup")) == 200 or pytest.fail(), "duplicate")


def test_a_bad_signature_counts_as_refused_for_its_signature(
    api: tuple[TestClient, ScriptedIntake],
) -> None:
    client, _ = api
    body = _event("evt_m_forged")
    _moved(
        lambda: _post(client, body, "whsec_wrong") == 400 or pytest.fail(), "refused", "signature"
    )


def test_a_malformed_event_counts_as_refused_malformed(
    api: tuple[TestClient, ScriptedIntake],
) -> None:
    client, _ = api
    _moved(lambda: _post(client, b"[1, 2") == 400 or pytest.fail(), "refused", "malformed")


def test_an_oversized_body_counts_as_refused_too_large(
    api: tuple[TestClient, ScriptedIntake],
) -> None:
    client, _ = api
    body = b'{"id": "' + b"x" * 5000 + b'"}'
    _moved(lambda: _post(client, body) == 413 or pytest.fail(), "refused", "too_large")


def test_temporal_down_counts_as_unavailable(api: tuple[TestClient, ScriptedIntake]) -> None:
    client, intake = api
    intake.status = None
    _moved(
        lambda: _post(client, _event("evt_m_down")) == 503 or pytest.fail(),
        "unavailable",
        "temporal",
    )


def test_metrics_show_the_deliveries_and_that_waiting_work_could_not_be_read(
    api: tuple[TestClient, ScriptedIntake],
) -> None:
    client, _ = api
    _post(client, _event("evt_m_shown"))
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    answered = families["ledgerbridge_webhooks_answered"].samples
    assert any(
        s.labels == {"source": "billing", "outcome": "accepted", "reason": "none"} and s.value >= 1
        for s in answered
    )
    # Temporal is out of reach: the gauges say the read failed, the scrape still answers.
    assert families["ledgerbridge_waiting_work_read_ok"].samples[0].value == 0
    assert "ledgerbridge_finance_exceptions_open" in families
