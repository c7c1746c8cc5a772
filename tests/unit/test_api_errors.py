"""Every refusal of the API is one JSON line {"error": ...}, whatever refused it."""

from pathlib import Path

import structlog
from fastapi.testclient import TestClient
from structlog.testing import capture_logs

from adapters.settings import Settings
from starters.api import create_app


def test_unknown_routes_and_missing_keys_answer_one_line_errors(tmp_path: Path) -> None:
    app = create_app(Settings(store_url=f"sqlite:///{tmp_path / 's.sqlite'}", api_keys=[]))
    client = TestClient(app)
    for path, status in (("/nowhere", 404), ("/v1/exceptions", 401), ("/v1/status", 401)):
        response = client.get(path)
        assert response.status_code == status
        assert set(response.json()) == {"error"}
        assert "\n" not in response.json()["error"]
    assert client.post("/healthz").status_code == 405
    assert set(client.post("/healthz").json()) == {"error"}


def test_a_crash_is_logged_with_the_requests_correlation_id(tmp_path: Path) -> None:
    app = create_app(Settings(store_url=f"sqlite:///{tmp_path / 's.sqlite'}", api_keys=[]))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    client = TestClient(app, raise_server_exceptions=False)
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as logs:
        answer = client.get("/boom", headers={"X-Correlation-Id": "corr-1"})
    assert answer.status_code == 500
    [line] = [e for e in logs if e["event"] == "unhandled error"]
    assert (line["path"], line["exc_info"], line["correlation_id"]) == ("/boom", True, "corr-1")
    assert structlog.contextvars.get_contextvars() == {}  # nothing leaks to the next request


def test_every_answer_echoes_its_correlation_id(tmp_path: Path) -> None:
    client = TestClient(
        create_app(Settings(store_url=f"sqlite:///{tmp_path / 's.sqlite'}", api_keys=[]))
    )
    assert (
        client.get("/healthz", headers={"X-Correlation-Id": "corr-2"}).headers["x-correlation-id"]
        == "corr-2"
    )
    made_up = client.get("/healthz").headers["x-correlation-id"]
    assert len(made_up) == 36  # a uuid
