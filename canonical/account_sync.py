"""The account sync's messages: what starts and signals it, what it answers and returns.

Here, not in the workflow's module, so the sandbox does not build these models again for
every run it holds.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from canonical.customer import AccountRecord
from canonical.entitlements import Entitlements


class SyncRequest(BaseModel):
    """Why a sync was asked for: a billing event or an operator's request."""

    request_id: str = Field(description="billing event id or API request id; dedupe key")
    reason: str = Field(description="e.g. customer.updated, api")
    correlation_id: str
    requested_at: datetime | None = None
    subscription_id: str | None = Field(
        default=None, description="the subscription a billing event named, if any"
    )


class AccountSyncInput(BaseModel):
    customer_id: str
    request: SyncRequest | None = None  # usually none: the request arrives by signal-with-start


class AccountSyncResult(BaseModel):
    customer_id: str
    status: str  # in_sync | unknown_in_billing | deleted_in_billing
    passes: int
    handled_requests: list[str]
    records: list[AccountRecord] = []
    entitlements: Entitlements | None = None


class AccountSyncStatus(BaseModel):
    customer_id: str
    status: str
    passes: int
    pending_requests: int
    records: list[AccountRecord]
    entitlements: Entitlements | None = None
