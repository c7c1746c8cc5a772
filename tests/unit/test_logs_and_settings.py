import json
import logging
import os
from pathlib import Path

import pytest
import structlog

from adapters.logs import configure_logging, get_logger
from adapters.settings import Settings


def test_logs_are_json_with_bound_ids_and_no_emails_or_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", "json")
    structlog.contextvars.bind_contextvars(correlation_id="corr-1", workflow_id="account/cus_1")
    try:
        get_logger("test").info(
            "customer synced for ap@northwind.example", name="Jane Doe", customer_id="cus_1"
        )
    finally:
        structlog.contextvars.clear_contextvars()
        logging.getLogger().handlers.clear()
    line = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert line["correlation_id"] == "corr-1" and line["workflow_id"] == "account/cus_1"
    assert line["customer_id"] == "cus_1"
    assert line["name"] == "[redacted]"
    assert "northwind.example" not in line["event"]


def test_defaults_run_the_local_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [v for v in os.environ if v.startswith("LEDGERBRIDGE_")]:
        monkeypatch.delenv(var)
    settings = Settings()
    assert settings.temporal_address == "127.0.0.1:7233"
    assert settings.resolved_store_url.startswith("sqlite:///")
    assert settings.resolved_store_url.endswith(".ledgerbridge/store.sqlite")


def test_secrets_can_come_from_files_named_by_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "erp").write_text("from-a-file\n")
    (tmp_path / "hooks").write_text("whsec_new,whsec_old\n")
    monkeypatch.setenv("LEDGERBRIDGE_ERP_PASSWORD_FILE", str(tmp_path / "erp"))
    monkeypatch.setenv("LEDGERBRIDGE_BILLING_WEBHOOK_SECRETS_FILE", str(tmp_path / "hooks"))
    settings = Settings()
    assert settings.erp_password.get_secret_value() == "from-a-file"
    assert [s.get_secret_value() for s in settings.billing_webhook_secrets] == [
        "whsec_new",
        "whsec_old",
    ]
    assert "from-a-file" not in repr(settings)
