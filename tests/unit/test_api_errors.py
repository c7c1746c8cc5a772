"""Every refusal of the API is one JSON line {"error": ...}, whatever refused it."""

from pathlib import Path

from fastapi.testclient import TestClient

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
