"""The integration store (SQLAlchemy 2.0 + Alembic)."""

from adapters.store.models import AccountLink, AuditEntry, Posting, WebhookReceipt
from adapters.store.store import AppendOnlyError, DuplicatePostingError, IntegrationStore

__all__ = [
    "AccountLink",
    "AppendOnlyError",
    "AuditEntry",
    "DuplicatePostingError",
    "IntegrationStore",
    "Posting",
    "WebhookReceipt",
]
