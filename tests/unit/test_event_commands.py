"""`ledgerbridge events` against the real router served over HTTP (uvicorn on a loopback
port), with an ops key, as an operator runs it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from starters.cli import main
from tests.fixtures.servers import serve_app
from tests.unit.test_event_endpoints_api import APPROVED, KEYS, mount


def test_endpoints_are_listed_and_dead_letters_replayed_through_the_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    api = mount(tmp_path, caller=None)  # the real key check: the CLI's key must be ops'
    api.client.headers["Authorization"] = f"Bearer {KEYS['ops']}"
    with serve_app(api.client.app) as base:
        port = base.rsplit(":", 1)[1]
        monkeypatch.setenv("LEDGERBRIDGE_API_HOST", "127.0.0.1")
        monkeypatch.setenv("LEDGERBRIDGE_API_PORT", port)
        monkeypatch.setenv("LEDGERBRIDGE_API_KEY", KEYS["ops"])

        assert main(["events", "endpoints"]) == 0
        assert "no event endpoint registered" in capsys.readouterr().out

        created = api.create(event_types=[APPROVED])
        t0 = datetime(2026, 12, 1, tzinfo=UTC)
        for n in range(3):
            api.endpoints.add_dead_letter(
                endpoint_id=created["id"], event_id=f"e-{n}", event_type=APPROVED,
                subject="credit/1", body=b"{}", attempts=44, last_status=None,
                last_error="no answer within 10 s", first_attempt_at=t0 - timedelta(days=3),
                dead_at=t0 + timedelta(days=n),
            )  # fmt: skip
        api.endpoints.pause_endpoint(created["id"], "410 Gone")

        assert main(["events", "endpoints"]) == 0
        listed = capsys.readouterr().out
        assert created["id"] in listed and "paused (410 Gone)" in listed and APPROVED in listed
        assert created["secret"] not in listed

        replay = ["events", "replay", "--endpoint", created["id"], "--since", "2026-12-02"]
        assert main(replay) == 0
        assert capsys.readouterr().out.startswith(f"2 dead letter(s) of {created['id']}")
        assert [d.event_id for d in api.endpoints.replay_requested(created["id"])] == [
            "e-1", "e-2"]  # fmt: skip

        unknown = ["events", "replay", "--endpoint", "ep_" + "f" * 32, "--since", "2026-12-02"]
        assert main(unknown) == 1
        assert "no event endpoint ep_fff" in capsys.readouterr().err

        monkeypatch.setenv("LEDGERBRIDGE_API_KEY", KEYS["finance_admin"])
        assert main(["events", "endpoints"]) == 1
        assert "403: role finance_admin may not do this" in capsys.readouterr().err
    api.store.dispose()
