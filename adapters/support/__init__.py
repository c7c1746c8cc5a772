"""Support platform adapters (the SupportDesk port)."""

from adapters.support.zendesk import ZendeskSupport

__all__ = ["ZendeskSupport"]
