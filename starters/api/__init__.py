"""The HTTP app: signed webhooks and the versioned business API."""

from starters.api.app import create_app

__all__ = ["create_app"]
