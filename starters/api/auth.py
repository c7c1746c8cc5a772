"""API keys bound to roles, with optional expiry and a rate limit per key name.

LEDGERBRIDGE_API_KEYS (or the file named by LEDGERBRIDGE_API_KEYS_FILE) holds one entry per key:

    name:role:sha256hex                         never expires
    name:role:sha256hex:2026-12-31              valid through the end of that day, UTC
    name:role:sha256hex:2026-12-31T18:00:00Z    valid until that instant (no offset means UTC)

Only SHA-256 digests are configured (`key_entry` makes the line for a key). A key is
compared against every entry in constant time; keys and digests are never logged nor put in
an error. A malformed entry stops start-up with a ValueError naming the entry.

An expired key is refused with 401 "API key expired on <date>", so its holder knows to ask
for a new one rather than suspect a typo ("missing or unknown API key").

Rotating a key (entries sharing a name must share its role: together they are one principal,
one actor in the audit trail, one rate-limit bucket):
1. Make a new key and add its entry with the same name and role; keep the old entry.
2. Deploy. Old and new key now both authenticate as that principal.
3. Hand the new key to its holder, who switches over.
4. Give the old entry an expiry (e.g. a week out) and deploy; from then on the old key is
   refused as expired. Remove the old entry at a later deploy.

Every authenticated request, allowed or not by its role, takes a token from its name's bucket
(LEDGERBRIDGE_API_RATE_LIMIT_PER_SECOND, LEDGERBRIDGE_API_RATE_BURST); an empty bucket is
answered 429 with Retry-After. Buckets live in this process: each replica limits on its own.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from fastapi import HTTPException

from adapters.logs import get_logger
from adapters.settings import Settings

ROLES = frozenset({"support", "finance", "finance_admin", "ops"})
DEFAULT_RATE_PER_SECOND = 20.0
DEFAULT_RATE_BURST = 40
UNKNOWN_KEY = "missing or unknown API key"

log = get_logger("ledgerbridge.api.auth")

# Parts of a malformed entry are quoted in errors only when they cannot be a key or a digest.
_SHOWABLE_ROLE = re.compile(r"^[a-z_]{1,32}$")
_SHOWABLE_EXPIRY = re.compile(r"^[0-9T:.+\-Z ]{1,40}$")
_SHA256_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


@dataclass(frozen=True)
class ApiPrincipal:
    name: str
    role: str


class ApiKeyExpired(Exception):
    def __init__(self, principal: ApiPrincipal, expired_on: str) -> None:
        super().__init__(f"API key expired on {expired_on}")
        self.principal = principal
        self.expired_on = expired_on


class RateLimitExceeded(Exception):
    def __init__(self, name: str, retry_after: int) -> None:
        super().__init__(f"rate limit exceeded for key {name}")
        self.name = name
        self.retry_after = retry_after


@dataclass(frozen=True)
class _Entry:
    digest: bytes
    principal: ApiPrincipal
    expires_at: datetime | None  # first instant at which the key is refused
    expired_on: str  # what the refusal tells the caller


class KeyRateLimiter:
    """A token bucket per key name: `burst` requests at once, refilled at `per_second`.

    One lock guards all buckets; it is held for a few arithmetic steps, never across an await,
    so it serves both the threadpool (sync dependencies) and the event loop.
    """

    def __init__(
        self, per_second: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not per_second > 0:
            raise ValueError(f"API rate limit must be above 0 requests/s, not {per_second}")
        if burst < 1:
            raise ValueError(f"API rate burst must be at least 1 request, not {burst}")
        self._per_second = float(per_second)
        self._burst = float(burst)
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, refilled at)
        self._refusing: set[str] = set()  # names refused since their last admitted request

    def take(self, name: str) -> None:
        """Spends one of `name`'s tokens; raises RateLimitExceeded when it has none."""
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.get(name, (self._burst, now))
            tokens = min(self._burst, tokens + max(0.0, now - at) * self._per_second)
            # Float noise in `now - at` must not refuse a caller who waited out Retry-After.
            if tokens >= 1 - 1e-9:
                self._buckets[name] = (max(0.0, tokens - 1), now)
                self._refusing.discard(name)
                return
            self._buckets[name] = (tokens, now)
            first_refusal = name not in self._refusing
            self._refusing.add(name)
        # Rounded first so float noise (0.0500000001 s) does not add a whole second.
        retry_after = max(1, math.ceil(round((1 - tokens) / self._per_second, 6)))
        if first_refusal:  # one line per burst of refusals, not one per refused request
            log.warning("API rate limit exceeded", key_name=name, retry_after=retry_after)
        raise RateLimitExceeded(name, retry_after)


class ApiKeyring:
    def __init__(
        self,
        entries: list[str],
        *,
        rate_per_second: float = DEFAULT_RATE_PER_SECOND,
        rate_burst: int = DEFAULT_RATE_BURST,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._entries = [_parse_entry(entry, position) for position, entry in enumerate(entries)]
        _check_consistent(self._entries)
        self._now = now
        self.rate_limiter = KeyRateLimiter(rate_per_second, rate_burst, clock)

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeyring:
        return cls(
            settings.api_keys,
            rate_per_second=settings.api_rate_limit_per_second,
            rate_burst=settings.api_rate_burst,
        )

    def authenticate(self, key: str | None) -> ApiPrincipal | None:
        """The principal holding `key`, None for no key or an unknown one; raises ApiKeyExpired
        for a known key past its expiry."""
        if not key:
            return None
        digest = hashlib.sha256(key.encode()).digest()
        return self.authenticate_matching(lambda known: hmac.compare_digest(known, digest))

    def authenticate_matching(self, matches: Callable[[bytes], bool]) -> ApiPrincipal | None:
        """As `authenticate`, for the configured key whose SHA-256 digest `matches`: how a
        holder of something derived from a key (a codec session) is checked against the
        keyring as it is now, expiry included."""
        found = None
        for entry in self._entries:
            # Test every entry so timing does not reveal which one matched.
            if matches(entry.digest):
                found = entry
        if found is None:
            return None
        if found.expires_at is not None and self._now() >= found.expires_at:
            log.warning("expired API key used", key_name=found.principal.name)
            raise ApiKeyExpired(found.principal, found.expired_on)
        return found.principal


def bearer_key(authorization: str | None) -> str | None:
    """The key of an `Authorization: Bearer <key>` header."""
    if authorization and authorization.lower().startswith("bearer "):
        return authorization[7:].strip() or None
    return None


def principal_for_key(keyring: ApiKeyring, key: str | None) -> ApiPrincipal | None:
    """The holder of `key`, None when unknown; 401 for an expired key."""
    try:
        return keyring.authenticate(key)
    except ApiKeyExpired as expired:
        raise HTTPException(401, str(expired)) from None


def admit(
    keyring: ApiKeyring, principal: ApiPrincipal | None, roles: Sequence[str]
) -> ApiPrincipal:
    """`principal` if it may act in one of `roles` (any role when none is named): 401 without
    one, 429 when its rate limit is spent (allowed by its role or not), 403 with the wrong
    role."""
    if principal is None:
        raise HTTPException(401, UNKNOWN_KEY)
    try:
        keyring.rate_limiter.take(principal.name)
    except RateLimitExceeded as limited:
        headers = {"Retry-After": str(limited.retry_after)}
        raise HTTPException(429, str(limited), headers=headers) from None
    if roles and principal.role not in roles:
        raise HTTPException(403, f"role {principal.role} may not do this")
    return principal


def key_entry(name: str, role: str, key: str, expires: date | datetime | None = None) -> str:
    """The configuration line for a key: what LEDGERBRIDGE_API_KEYS holds."""
    line = f"{name}:{role}:{hashlib.sha256(key.encode()).hexdigest()}"
    return line if expires is None else f"{line}:{expires.isoformat()}"


def _parse_entry(entry: str, position: int) -> _Entry:
    # The expiry comes last and may hold colons itself (18:00:00), hence at most 4 parts.
    parts = [part.strip() for part in entry.split(":", 3)]
    if len(parts) < 3 or not parts[0]:
        # Without a colon the one part may be the key itself: name the entry by position.
        which = f"{parts[0]!r}" if len(parts) > 1 and parts[0] else f"#{position + 1}"
        raise ValueError(f"API key entry {which}: expected name:role:sha256hex[:expiry]")
    name, role, digest = parts[:3]
    if role not in ROLES:
        shown = f" {role!r}" if _SHOWABLE_ROLE.match(role) else ""
        raise ValueError(
            f"API key {name!r}: unknown role{shown}; expected one of {', '.join(sorted(ROLES))}"
        )
    if not _SHA256_HEX.match(digest):
        raise ValueError(f"API key {name!r}: the digest is not 64 hex characters (SHA-256)")
    expires_at, expired_on = _parse_expiry(name, parts[3]) if len(parts) == 4 else (None, "")
    return _Entry(bytes.fromhex(digest), ApiPrincipal(name, role), expires_at, expired_on)


def _parse_expiry(name: str, text: str) -> tuple[datetime, str]:
    """The first instant at which the key is refused, and the date a refusal names."""
    try:
        day = date.fromisoformat(text)
    except ValueError:
        pass
    else:
        if day == date.max:  # 9999-12-31 written to mean "never"
            return datetime.max.replace(tzinfo=UTC), day.isoformat()
        return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1), str(day)
    try:
        moment = datetime.fromisoformat(text)
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        shown = f" {text!r}" if _SHOWABLE_EXPIRY.match(text) else ""
        raise ValueError(
            f"API key {name!r}: expiry{shown} is not an ISO date (2026-12-31) "
            "or datetime (2026-12-31T18:00:00Z)"
        ) from None
    return moment, moment.isoformat()


def _check_consistent(entries: list[_Entry]) -> None:
    role_of: dict[str, str] = {}
    name_of: dict[bytes, str] = {}
    for entry in entries:
        name, role = entry.principal.name, entry.principal.role
        if role_of.setdefault(name, role) != role:
            raise ValueError(
                f"API key {name!r}: entries of one name must share its role "
                f"(found {role_of[name]} and {role}); give a key of another role its own name"
            )
        if entry.digest in name_of:
            raise ValueError(
                f"API key {name!r}: the same key is already configured as {name_of[entry.digest]!r}"
            )
        name_of[entry.digest] = name
