"""Typed configuration, read once from LEDGERBRIDGE_* variables.

Defaults run the local stack (`ledgerbridge up`). A secret may also be given as a file:
LEDGERBRIDGE_<NAME>_FILE=/path names a file whose content is the value (Docker/K8s secrets).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from pydantic import (
    Field,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from canonical.credit import CreditPolicy

ENV_PREFIX = "LEDGERBRIDGE_"

# Development-only credentials of the local counterparts; real deployments set their own.
LOCAL_BILLING_API_KEY = "sk_test_ledgerbridge_local"
LOCAL_BILLING_WEBHOOK_SECRET = "whsec_ledgerbridge_local"  # noqa: S105
LOCAL_SUPPORT_TOKEN = "zendesk_ledgerbridge_local"  # noqa: S105
LOCAL_SUPPORT_WEBHOOK_SECRET = "zdsec_ledgerbridge_local"  # noqa: S105
LOCAL_ERP_PASSWORD = "ledgerbridge-erp-Local-2026"  # noqa: S105
# The local NetSuite sandbox's account and its one integration token (64 hex characters each,
# as NetSuite issues them).
LOCAL_NETSUITE_ACCOUNT_ID = "LEDGERBRIDGE_SB1"
LOCAL_NETSUITE_CONSUMER_KEY = "0649b938ccafd387d3f3b2666f53b68a8034b6af72dccc6620a8e8d34afece8e"
LOCAL_NETSUITE_CONSUMER_SECRET = "52193528e61e3d7822793ccf81d9f63974bd369e48a0695f9f18c883de2fe1be"  # noqa: S105
LOCAL_NETSUITE_TOKEN_ID = "df5faf72a8b9a931ae193e309627d76292ac4066d377b5d4bb741ca02d08acde"  # noqa: S105
LOCAL_NETSUITE_TOKEN_SECRET = "c91a1bcaab70e5113a9b6741429f3385bb2e75ae19778fa9e52553889b948afc"  # noqa: S105


# The finance mapping's name under `home` when LEDGERBRIDGE_FINANCE_MAPPING is not set.
ERP_ROUTING_FILE = "erp-routing.toml"
FINANCE_MAPPING_FILE = "finance-mapping.toml"

# Settings whose None is spelled "none" (their default is not None).
NONE_AS_TEXT = frozenset({"erp_template_cache"})


def _user_cache_dir() -> Path | None:
    """$XDG_CACHE_HOME/ledgerbridge, else ~/.cache/ledgerbridge; None (no cache) for a user
    without a home (a container's arbitrary uid)."""
    if cache := os.environ.get("XDG_CACHE_HOME"):
        return Path(cache) / "ledgerbridge"
    try:
        return Path.home() / ".cache" / "ledgerbridge"
    except (KeyError, RuntimeError):
        return None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    home: Path = Path(".ledgerbridge")

    # Temporal
    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_ui_port: int = 8233
    # Prefix of every task queue ("" in production; unique per test so tests never mix)
    task_queue_prefix: str = ""

    # Integration store: SQLite under `home` unless a URL is given
    store_url: str | None = None

    # Billing (Stripe API)
    billing_url: str = "http://127.0.0.1:12111"
    billing_api_key: SecretStr = SecretStr(LOCAL_BILLING_API_KEY)
    billing_webhook_secrets: list[SecretStr] = [SecretStr(LOCAL_BILLING_WEBHOOK_SECRET)]

    # Support (Zendesk API)
    support_url: str = "http://127.0.0.1:12112"
    support_email: str = "ledgerbridge@support.local"
    support_api_token: SecretStr = SecretStr(LOCAL_SUPPORT_TOKEN)
    support_webhook_secrets: list[SecretStr] = [SecretStr(LOCAL_SUPPORT_WEBHOOK_SECRET)]
    # Who each support agent is, by Zendesk user id: the API key name the same person holds.
    # A credit asked on a ticket names its assignee so; separation of duties then stops that
    # person approving it with their finance key. Unmapped agents are "zendesk-agent:<id>".
    support_agent_identities: dict[str, str] = {}

    # Finance's rules for support credits, as JSON: caps as shares of the monthly amount,
    # the auto-approval threshold, approver limits per role (canonical/credit.py has the
    # fields and defaults), e.g. '{"auto_approve_up_to": {"amount": "25", "currency": "USD"}}'
    credit_policy: CreditPolicy = CreditPolicy()

    # ERP (Tryton JSON-RPC)
    erp_url: str = "http://127.0.0.1:8000"
    erp_database: str = "ledgerbridge"
    erp_user: str = "ledgerbridge"
    erp_password: SecretStr = SecretStr(LOCAL_ERP_PASSWORD)
    # Where `ledgerbridge up` keeps a bootstrapped Tryton database to copy into fresh homes
    # (the first bootstrap takes 15-30 s, a copy 0.01 s); "none" turns the cache off
    erp_template_cache: Path | None = Field(default_factory=lambda: _user_cache_dir())
    # Second ERP (NetSuite SuiteTalk REST, token-based authentication): the account's REST
    # base URL (https://<account>.suitetalk.api.netsuite.com in production), its id (the OAuth
    # realm), the integration's consumer and the access token; `netsuite_concurrency` is the
    # requests in flight the adapter allows itself (the account's limit: 5 on a standard tier),
    # and so the activities a worker runs at once on a NetSuite queue
    netsuite_url: str = "http://127.0.0.1:12113"
    netsuite_account_id: str = LOCAL_NETSUITE_ACCOUNT_ID
    netsuite_consumer_key: str = LOCAL_NETSUITE_CONSUMER_KEY
    netsuite_consumer_secret: SecretStr = SecretStr(LOCAL_NETSUITE_CONSUMER_SECRET)
    netsuite_token_id: str = LOCAL_NETSUITE_TOKEN_ID
    netsuite_token_secret: SecretStr = SecretStr(LOCAL_NETSUITE_TOKEN_SECRET)
    netsuite_concurrency: PositiveInt = 5
    # The subsidiary new NetSuite customers belong to (its base currency is the books')
    netsuite_subsidiary: str = "1"
    # The local stack puts a fault-injection proxy in front of the ERP, billing and support
    # on these ports (the worker and the API call them through it; `ledgerbridge up` only)
    erp_proxy_port: int = 8009
    netsuite_proxy_port: int = 8012
    billing_proxy_port: int = 8010
    support_proxy_port: int = 8011
    # Currencies ledgers started with; only steps recorded before finance's mapping became the
    # one source of currencies (`mapping-currencies`) replay with it
    ledger_currencies: list[str] = ["USD"]
    # Finance's mapping file (products, tax rates, payment journals: adapters/mapping_file.py);
    # unset, `home`/finance-mapping.toml (the one `ledgerbridge up` writes)
    finance_mapping: Path | None = None
    # Which ERP books which legal entity (canonical/erp_routing.py; adapters/routing_file.py);
    # unset: one ERP, Tryton, books every customer, on the `erp` queue
    erp_routing: Path | None = None

    # Events out (NATS JetStream, adapters/events): the servers, comma-separated for a
    # cluster; the monitoring port `ledgerbridge up` gives its server (health at /healthz)
    # Not NATS' own 4222/8222: a developer's machine often runs a NATS of its own there.
    nats_url: str = "nats://127.0.0.1:4322"
    nats_monitor_port: int = Field(default=8322, ge=1, le=65535)
    # A message republished with a Nats-Msg-Id the stream stored within this window is
    # dropped (the relay republishes what it was unsure of: lost acks, restarts)
    nats_stream_duplicate_window_seconds: PositiveFloat = 2 * 24 * 60 * 60.0
    # Copies of the stream: 1 on one server, 3 on docker-compose.yml's three-node cluster
    nats_stream_replicas: int = Field(default=1, ge=1, le=5)
    # Published events are kept in the outbox this long (what was sent, for an audit or a
    # replay by hand), then removed; unpublished ones are never removed
    events_outbox_keep_days: int = Field(default=30, ge=1, le=3650)

    # Worker tuning (bench/README.md has the measurements behind the defaults): activities
    # per second the whole fleet may start against each system, ERP calls in flight per worker
    # process, and workflows kept in a worker's cache (evicted ones are replayed on demand)
    worker_billing_per_second: PositiveFloat = 50.0
    worker_support_per_second: PositiveFloat = 10.0
    worker_erp_per_second: PositiveFloat = 10.0
    worker_erp_concurrency: PositiveInt = 2
    # Reconciliation's ERP page reads, on each ERP's read queue (`erp-read`)
    worker_erp_read_per_second: PositiveFloat = 10.0
    worker_erp_read_concurrency: PositiveInt = 2
    worker_max_cached_workflows: int = Field(default=1000, ge=0)
    # Workflow tasks one worker runs at once, and its long polls per task queue
    worker_workflow_task_slots: int = Field(default=100, ge=2)  # the cache needs two
    worker_workflow_pollers: int = Field(default=5, ge=2)  # sticky polling needs two
    worker_activity_pollers: PositiveInt = 5
    # Prometheus on each worker process, on this host (0 = off): ledgerbridge's metrics at
    # http://{host}:{metrics port}/metrics and the Temporal SDK's on their own port. Several
    # worker processes on one host each need their own two ports (`ledgerbridge up` picks
    # free ones).
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)
    worker_sdk_metrics_port: int = Field(default=0, ge=0, le=65535)

    # Reconciliation: the nightly schedule (the previous UTC day, at this local hour)
    recon_hour: int = Field(default=2, ge=0, le=23)
    recon_timezone: str = "UTC"
    recon_heal_limit: int = Field(default=50, ge=0)
    recon_exception_limit: int = Field(default=20, ge=0)

    # API and webhooks
    api_host: str = "127.0.0.1"
    api_port: int = 8080
    webhook_tolerance_seconds: int = 300
    webhook_max_bytes: int = 256 * 1024
    # API keys as "name:role:sha256-of-key[:expiry]"; the keys themselves are never stored
    api_keys: list[str] = []
    # Per key name: a token bucket refilled at this rate, holding at most `burst` requests
    api_rate_limit_per_second: PositiveFloat = 20.0
    api_rate_burst: PositiveInt = 40

    # Payload encryption: "id:base64key" entries (32-byte AES keys), the first encrypts, all
    # decrypt (rotation). None configured: payloads stay plain JSON. See adapters/codec.py.
    payload_keys: list[SecretStr] = []
    # Browser origins allowed to call the codec endpoint (the Temporal Web UI)
    codec_cors_origins: list[str] = ["http://127.0.0.1:8233", "http://localhost:8233"]
    # Signs the Web UI's codec sign-in cookies (at least 32 characters); unset, a random secret
    # per process: sessions then end on restart. See starters/api/codec_session.py.
    codec_session_secret: SecretStr | None = None
    codec_session_max_age_seconds: PositiveInt = 8 * 60 * 60
    # Mark the sign-in cookie Secure whatever the request's scheme: behind a proxy that ends
    # TLS and forwards plain HTTP (unset, the cookie is Secure when the request was https)
    codec_cookie_always_secure: bool = False
    # Signs the finance console's session cookies (at least 32 characters); unset, a random
    # secret per process: sessions then end on restart. See starters/api/console/session.py.
    console_session_secret: SecretStr | None = None
    console_session_max_age_seconds: PositiveInt = 8 * 60 * 60
    # The Temporal Web UI as the browser reaches it, for the console's links to a run
    # (unset: http://<the Temporal host>:<temporal_ui_port>)
    temporal_ui_url: str | None = None

    # Traces: OTLP over HTTP to this base URL (the collector's, e.g. http://127.0.0.1:4318);
    # unset, the standard OTEL_EXPORTER_OTLP_ENDPOINT; neither set, tracing is off
    otel_exporter_otlp_endpoint: str | None = None

    # Logging
    log_level: str = "INFO"
    log_format: str = "json"

    @field_validator("erp_template_cache", mode="before")
    @classmethod
    def _none_turns_the_cache_off(cls, value: Any) -> Any:
        return None if isinstance(value, str) and value.strip().lower() in ("", "none") else value

    @model_validator(mode="before")
    @classmethod
    def _secrets_from_files(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for name in (
            "billing_api_key",
            "billing_webhook_secrets",
            "support_api_token",
            "support_webhook_secrets",
            "erp_password",
            "netsuite_consumer_secret",
            "netsuite_token_secret",
            "store_url",
            "api_keys",
            "payload_keys",
            "codec_session_secret",
            "console_session_secret",
        ):
            file_var = f"{ENV_PREFIX}{name.upper()}_FILE"
            if file_var in os.environ and name not in data:
                data[name] = Path(os.environ[file_var]).read_text().strip()
                if name.endswith(("_secrets", "_keys")):
                    data[name] = [s.strip() for s in re.split(r"[,\n]", data[name]) if s.strip()]
        return data

    def to_env(self) -> dict[str, str]:
        """LEDGERBRIDGE_* variables that give a child process exactly these settings."""
        env = {}
        as_json = self.model_dump(mode="json")  # mappings and models as their JSON
        for name, value in self.model_dump().items():
            if value is None:
                if name in NONE_AS_TEXT:  # turned off, where the default is on
                    env[f"{ENV_PREFIX}{name.upper()}"] = "none"
                continue
            if isinstance(value, list):
                plain = [v.get_secret_value() if isinstance(v, SecretStr) else v for v in value]
                text = json.dumps(plain)
            elif isinstance(value, dict):
                text = json.dumps(as_json[name])
            elif isinstance(value, SecretStr):
                text = value.get_secret_value()
            else:
                text = str(value)
            env[f"{ENV_PREFIX}{name.upper()}"] = text
        return env

    @property
    def resolved_store_url(self) -> str:
        return self.store_url or f"sqlite:///{(self.home / 'store.sqlite').resolve()}"

    def resolved_erp_routing(self) -> Path | None:
        """The routing file named, else the local stack's under `home` when `up` wrote one;
        None: one ERP books everyone."""
        if self.erp_routing is not None:
            return self.erp_routing
        local = self.home / ERP_ROUTING_FILE
        return local if local.exists() else None

    def resolved_finance_mapping(self) -> Path:
        """Finance's mapping file: LEDGERBRIDGE_FINANCE_MAPPING, else the one under `home`
        (which `ledgerbridge up` writes for the local stack)."""
        return self.finance_mapping or self.home / FINANCE_MAPPING_FILE
