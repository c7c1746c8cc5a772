"""What the handlers need, read from the app's state at each request through `Depends`.

`create_app` puts each part on `app.state` once; a handler names the part it needs
(`store: StoreDep`), so a test can hand it a stand-in through `app.dependency_overrides` or
call the handler directly.

The caller's key is read by `require_role(...)`: it declares the HTTP bearer scheme in the
OpenAPI document (so clients and fuzzers know /v1 needs a key) yet reads the header itself,
so a missing or unknown key stays a 401 with the one-line error body.
"""

# No `from __future__ import annotations`: FastAPI must see the Annotated dependencies.
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from adapters.ports import BillingSystem, Ledger, SupportDesk
from adapters.settings import Settings
from adapters.store import IntegrationStore
from canonical.credit import CreditPolicy
from starters.api.auth import ApiKeyring, ApiPrincipal, admit, bearer_key, principal_for_key
from starters.api.intake import Intake
from starters.api.receipts import WebhookReceipts
from starters.api.temporal import TemporalConnection

# Declares the scheme only (auto_error off): the refusal is admit()'s, as for every key.
bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key of LEDGERBRIDGE_API_KEYS: `Authorization: Bearer <key>`.",
)


# Dependencies are coroutines: FastAPI runs a plain `def` one in the thread pool, a thread
# hop per dependency on every request (webhooks included), for what is an attribute read.


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_store(request: Request) -> IntegrationStore:
    store: IntegrationStore = request.app.state.store
    return store


async def get_temporal(request: Request) -> TemporalConnection:
    temporal: TemporalConnection = request.app.state.temporal
    return temporal


async def get_keyring(request: Request) -> ApiKeyring:
    keyring: ApiKeyring = request.app.state.keyring
    return keyring


async def get_billing(request: Request) -> BillingSystem:
    billing: BillingSystem = request.app.state.billing
    return billing


async def get_support(request: Request) -> SupportDesk:
    support: SupportDesk = request.app.state.support
    return support


async def get_ledger(request: Request) -> Ledger:
    ledger: Ledger = request.app.state.ledger
    return ledger


async def get_receipts(request: Request) -> WebhookReceipts:
    receipts: WebhookReceipts = request.app.state.receipts
    return receipts


async def get_policy(request: Request) -> CreditPolicy:
    policy: CreditPolicy = request.app.state.policy
    return policy


async def get_correlation_id(request: Request) -> str:
    """Set by CorrelationMiddleware on every request."""
    correlation_id: str = request.state.correlation_id
    return correlation_id


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[IntegrationStore, Depends(get_store)]
TemporalDep = Annotated[TemporalConnection, Depends(get_temporal)]
KeyringDep = Annotated[ApiKeyring, Depends(get_keyring)]
BillingDep = Annotated[BillingSystem, Depends(get_billing)]
SupportDep = Annotated[SupportDesk, Depends(get_support)]
LedgerDep = Annotated[Ledger, Depends(get_ledger)]
ReceiptsDep = Annotated[WebhookReceipts, Depends(get_receipts)]
PolicyDep = Annotated[CreditPolicy, Depends(get_policy)]
CorrelationIdDep = Annotated[str, Depends(get_correlation_id)]


async def get_intake(temporal: TemporalDep, receipts: ReceiptsDep, settings: SettingsDep) -> Intake:
    return Intake(temporal, receipts, settings.task_queue_prefix)


IntakeDep = Annotated[Intake, Depends(get_intake)]
BearerDeclared = Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)]


def require_role(*roles: str) -> Callable[..., Awaitable[ApiPrincipal]]:
    """A dependency: the caller's principal, if its key holds one of `roles` (any role when
    none is named); 401 without a known, unexpired key, 429 when the key's rate limit is
    spent, 403 with the wrong role."""

    async def principal(
        request: Request, keyring: KeyringDep, _declared: BearerDeclared
    ) -> ApiPrincipal:
        key = bearer_key(request.headers.get("authorization"))
        return admit(keyring, principal_for_key(keyring, key), roles)

    return principal


# The roles of each kind of operation, named once; a test overrides one to act as a caller.
any_role = require_role()
operators = require_role("ops", "finance_admin")
reconcilers = require_role("ops", "finance", "finance_admin")
finance_readers = require_role("finance", "finance_admin", "ops")
finance_deciders = require_role("finance", "finance_admin")
credit_requesters = require_role("support")
credit_checkers = require_role("support", "finance", "finance_admin")
credit_readers = require_role("support", "finance", "finance_admin", "ops")
# Who receives the events out, and with which secrets: operations' alone.
event_operators = require_role("ops")
# Which ERP books an entity from which day: the controller's step (finance_admin), seen by all.
erp_movers = require_role("finance_admin")
