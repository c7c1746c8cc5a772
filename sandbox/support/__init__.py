"""A Zendesk-compatible support server (REST API v2 subset) for local stacks and tests.

Organizations (a customer is an organization with `external_id` = canonical customer id),
tickets with comments, tags and custom fields, API-token auth, Idempotency-Key on ticket
creation only (as Zendesk documents it), cursor pagination, paths with or without `.json`,
429 + Retry-After, and event webhooks (`zen:event-type:organization.created`,
`organization.name_changed`, `ticket.created`, `ticket.comment_added`…) delivered to the
webhooks subscribed to their type, signed like Zendesk and delivered at least once. State
lives in SQLite.
"""

from sandbox.support.app import create_app

__all__ = ["create_app"]
