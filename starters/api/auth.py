"""API keys bound to roles. Only SHA-256 digests are configured; keys are compared in
constant time and never logged."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

ROLES = frozenset({"support", "finance", "finance_admin", "ops"})


@dataclass(frozen=True)
class ApiPrincipal:
    name: str
    role: str


class ApiKeyring:
    def __init__(self, entries: list[str]) -> None:
        self._digests: list[tuple[bytes, ApiPrincipal]] = []
        for entry in entries:
            name, role, digest = (part.strip() for part in entry.split(":", 2))
            if role not in ROLES:
                raise ValueError(f"API key {name!r}: unknown role {role!r}")
            self._digests.append((bytes.fromhex(digest), ApiPrincipal(name, role)))

    def authenticate(self, key: str | None) -> ApiPrincipal | None:
        if not key:
            return None
        digest = hashlib.sha256(key.encode()).digest()
        found = None
        for candidate, principal in self._digests:
            # Compare against every entry so timing does not reveal which one matched.
            if hmac.compare_digest(candidate, digest):
                found = principal
        return found


def key_entry(name: str, role: str, key: str) -> str:
    """The configuration line for a key: what LEDGERBRIDGE_API_KEYS holds."""
    return f"{name}:{role}:{hashlib.sha256(key.encode()).hexdigest()}"
