"""API keys bound to roles. Only SHA-256 digests are configured; keys are compared in
constant time and never logged."""

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Header, HTTPException

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

    def authenticate(self, key: str | None) -> "ApiPrincipal | None":
        if not key:
            return None
        digest = hashlib.sha256(key.encode()).digest()
        found = None
        for candidate, principal in self._digests:
            # Compare against every entry so timing does not reveal which one matched.
            if hmac.compare_digest(candidate, digest):
                found = principal
        return found


def role_dependency(keyring: ApiKeyring, *roles: str) -> Callable[..., ApiPrincipal]:
    """A FastAPI dependency: the caller's principal, if its key holds one of `roles`
    (any role when none is named); 401 without a known key, 403 with the wrong role."""

    def check(authorization: Annotated[str | None, Header()] = None) -> ApiPrincipal:
        key = None
        if authorization and authorization.lower().startswith("bearer "):
            key = authorization[7:].strip()
        principal = keyring.authenticate(key)
        if principal is None:
            raise HTTPException(401, "missing or unknown API key")
        if roles and principal.role not in roles:
            raise HTTPException(403, f"role {principal.role} may not do this")
        return principal

    return check


def key_entry(name: str, role: str, key: str) -> str:
    """The configuration line for a key: what LEDGERBRIDGE_API_KEYS holds."""
    return f"{name}:{role}:{hashlib.sha256(key.encode()).hexdigest()}"
