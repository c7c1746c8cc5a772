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


def test_finance_mapping_is_the_homes_unless_one_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in [v for v in os.environ if v.startswith("LEDGERBRIDGE_")]:
        monkeypatch.delenv(var)
    monkeypatch.setenv("LEDGERBRIDGE_HOME", str(tmp_path / "home"))
    assert Settings().resolved_finance_mapping() == tmp_path / "home" / "finance-mapping.toml"

    monkeypatch.setenv("LEDGERBRIDGE_FINANCE_MAPPING", str(tmp_path / "finance" / "books.toml"))
    assert Settings().resolved_finance_mapping() == tmp_path / "finance" / "books.toml"


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


def test_mappings_and_the_credit_policy_reach_child_processes_intact(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`up` hands its settings to the worker and the API as variables (`to_env`)."""
    policy = {
        "auto_approve_up_to": {"amount": "25.00", "currency": "USD"},
        "approver_limits": {"finance": {"amount": "500", "currency": "USD"}, "lead": None},
    }
    monkeypatch.setenv("LEDGERBRIDGE_CREDIT_POLICY", json.dumps(policy))
    monkeypatch.setenv("LEDGERBRIDGE_SUPPORT_AGENT_IDENTITIES", '{"4242": "alice"}')
    parent = Settings()
    assert str(parent.credit_policy.auto_approve_up_to) == "25.00 USD"
    assert parent.credit_policy.max_share_of_monthly == 1  # unset fields keep their default
    for name, value in parent.to_env().items():
        monkeypatch.setenv(name, value)
    child = Settings()
    assert child.credit_policy == parent.credit_policy
    assert child.support_agent_identities == {"4242": "alice"}
