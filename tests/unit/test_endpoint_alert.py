"""The exception an endpoint failing for a day opens: named by id and host, never with the
URL (it may carry the subscriber's token) nor the subscriber's answer, since its opening is
an event other subscribers receive."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adapters.events.subscriptions import ACTIVE, EndpointSecret, EventEndpoint
from adapters.events.webhooks_out import DeliveryOutcome
from adapters.settings import Settings
from workers.events import endpoint_alert

SINCE = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)


class Client:
    def __init__(self) -> None:
        self.started: list[tuple[Any, dict[str, Any]]] = []

    async def start_workflow(self, _workflow: Any, arg: Any, **options: Any) -> None:
        self.started.append((arg, options))


async def test_the_exception_names_the_endpoint_by_id_and_host_only(tmp_path: Path) -> None:
    endpoint = EventEndpoint(
        id="ep_" + "a" * 32, url="https://hooks.example.com/in?token=s3cr3t", event_types=(),
        secrets=(EndpointSecret("whsec_x", SINCE),), description=None, status=ACTIVE,
        paused_reason=None, failing_since=SINCE, created_at=SINCE, updated_at=SINCE,
        created_by="ops",
    )  # fmt: skip
    outcome = DeliveryOutcome(
        "pause_and_alert", endpoint.id, "evt", 40, status_code=500,
        error="HTTP 500: internal detail of theirs", failing_since=SINCE,
    )  # fmt: skip
    client = Client()
    settings = Settings(home=tmp_path, store_url=f"sqlite:///{tmp_path / 's.sqlite'}")
    await endpoint_alert(client, settings)(endpoint, outcome)  # type: ignore[arg-type]
    [(started, options)] = client.started
    message = started.context.error_message
    assert endpoint.id in message and "hooks.example.com" in message and "HTTP 500" in message
    everything = f"{started.model_dump_json()} {options}"
    assert "s3cr3t" not in everything and "internal detail" not in everything
    assert options["id"] == f"exception/event-endpoint/{endpoint.id}/20261206T080000"
