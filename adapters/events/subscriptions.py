"""Event endpoints: who receives the events out as signed webhooks, which events, and with
which secrets. Pure: the store keeps them, webhooks_out delivers to them, the API checks
what it is given here.

- Secrets are Standard Webhooks' `whsec_` + base64 of random bytes. A rotation puts the new
  one first and keeps the older ones valid until their expiry, so a subscriber can switch
  without losing a delivery; meanwhile every valid secret signs each delivery.
- `event_types` holds CloudEvents types (`com.ledgerbridge.credit.approved.v1`) or prefixes
  written with `.*` (`com.ledgerbridge.credit.*`); empty means every event.
- A URL must be http(s), and must not be the API itself: a webhook to our own API would
  knock on our own doors with our own events.
"""

from __future__ import annotations

import base64
import ipaddress
import secrets as random_source
import socket
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from canonical.facts import BY_TYPE, TYPE_PREFIX

EndpointStatus = Literal["active", "paused"]
ACTIVE: Final = "active"
PAUSED: Final = "paused"

SECRET_PREFIX: Final = "whsec_"  # noqa: S105 - the prefix of every secret, not one
SECRET_BYTES: Final = 32  # within the 24 to 64 bytes Standard Webhooks recommends
ROTATION_OVERLAP: Final = timedelta(hours=24)  # how long a replaced secret still signs
ENDPOINT_ID_PREFIX: Final = "ep_"
ENDPOINT_ID_PATTERN: Final = r"^ep_[0-9a-f]{32}$"
PREFIX_WILDCARD: Final = ".*"
MAX_URL_LENGTH: Final = 2048
MAX_EVENT_TYPES: Final = 50
_LOOPBACK_NAMES: Final = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


class EndpointUrlRefused(ValueError):
    """A URL no webhook may be sent to; the message says why, for the caller."""


class EventTypeUnknown(ValueError):
    """An event type, or a prefix, that names no event ledgerbridge sends."""


@dataclass(frozen=True)
class EndpointSecret:
    """One signing secret; `expires_at` None while it is the current one."""

    secret: str
    created_at: datetime
    expires_at: datetime | None = None

    def valid_at(self, at: datetime) -> bool:
        return self.expires_at is None or at < self.expires_at

    def as_json(self) -> dict[str, Any]:
        return {
            "secret": self.secret,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
        }

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> EndpointSecret:
        expires = value.get("expires_at")
        return cls(
            secret=value["secret"],
            created_at=datetime.fromisoformat(value["created_at"]),
            expires_at=datetime.fromisoformat(expires) if expires else None,
        )


@dataclass(frozen=True)
class EventEndpoint:
    """A subscriber's endpoint as the store holds it (secrets newest first)."""

    id: str
    url: str
    event_types: tuple[str, ...]
    secrets: tuple[EndpointSecret, ...]
    description: str | None
    status: EndpointStatus
    paused_reason: str | None
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime
    created_by: str

    def signing_secrets(self, at: datetime) -> list[str]:
        """The secrets that sign a delivery made at `at`, newest first."""
        return [s.secret for s in self.secrets if s.valid_at(at)]

    def wants(self, event_type: str) -> bool:
        return subscribed(self.event_types, event_type)


def new_secret(size: int = SECRET_BYTES) -> str:
    if not 24 <= size <= 64:
        raise ValueError(f"a secret is 24 to 64 random bytes, not {size}")
    return SECRET_PREFIX + base64.b64encode(random_source.token_bytes(size)).decode()


def new_endpoint_id() -> str:
    return ENDPOINT_ID_PREFIX + random_source.token_hex(16)


def rotated(
    current: Sequence[EndpointSecret],
    new: str,
    at: datetime,
    overlap: timedelta = ROTATION_OVERLAP,
) -> tuple[EndpointSecret, ...]:
    """The secrets after a rotation at `at`: `new` first, the others still valid kept until
    `at + overlap` at the latest (never longer than they were already), expired ones dropped."""
    if overlap < timedelta(0):
        raise ValueError("a rotation's overlap cannot be negative")
    until = at + overlap
    kept = [
        replace(s, expires_at=min(s.expires_at or until, until))
        for s in current
        if s.valid_at(at) and overlap > timedelta(0)
    ]
    return (EndpointSecret(new, at), *kept)


# --- which events an endpoint receives ------------------------------------------------------


def subscribed(event_types: Sequence[str], event_type: str) -> bool:
    if not event_types:
        return True
    return any(
        event_type.startswith(wanted[:-1])
        if wanted.endswith(PREFIX_WILDCARD)
        else event_type == wanted
        for wanted in event_types
    )


def _subscribable() -> tuple[str, ...]:
    """What an endpoint may ask for: every type, each domain's prefix, and all of ours."""
    domains = sorted({event_type.rsplit(".", 2)[0] for event_type in BY_TYPE})
    every = TYPE_PREFIX.rstrip(".") + PREFIX_WILDCARD
    return (*sorted(BY_TYPE), every, *(domain + PREFIX_WILDCARD for domain in domains))


SUBSCRIBABLE: Final = _subscribable()


def checked_event_types(event_types: Sequence[str]) -> tuple[str, ...]:
    """The list as given, without repeats; EventTypeUnknown for anything but a type
    ledgerbridge sends or one of SUBSCRIBABLE's prefixes (a typo would otherwise subscribe
    to nothing, silently)."""
    if len(event_types) > MAX_EVENT_TYPES:
        raise EventTypeUnknown(f"at most {MAX_EVENT_TYPES} event types")
    unique = tuple(dict.fromkeys(event_types))
    for wanted in unique:
        if wanted not in SUBSCRIBABLE:
            kind = "prefix" if wanted.endswith(PREFIX_WILDCARD) else "event type"
            raise EventTypeUnknown(
                f"{kind} {wanted[:130]!r} matches no event ledgerbridge sends "
                f"(types look like {SUBSCRIBABLE[0]}; prefixes like {SUBSCRIBABLE[-1]})"
            )
    return unique


# --- where a webhook may go ------------------------------------------------------------------


def checked_url(url: str, api_host: str, api_port: int) -> str:
    """`url` if a webhook may be sent there; EndpointUrlRefused otherwise."""
    if len(url) > MAX_URL_LENGTH:
        raise EndpointUrlRefused(f"url is longer than {MAX_URL_LENGTH} characters")
    if not url.isprintable() or any(c.isspace() for c in url):
        raise EndpointUrlRefused("url holds spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise EndpointUrlRefused(f"url is not a valid URL: {err}") from None
    if parts.scheme not in ("http", "https"):
        raise EndpointUrlRefused("url must start with http:// or https://")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise EndpointUrlRefused("url names no host")
    if parts.username is not None or parts.password is not None:
        raise EndpointUrlRefused("url must not hold credentials; sign-in is the signature's job")
    if parts.fragment:
        raise EndpointUrlRefused("url must not hold a #fragment (it is never sent)")
    port = port or (443 if parts.scheme == "https" else 80)
    if port == api_port and _same_host(host, api_host):
        raise EndpointUrlRefused(
            f"url points at ledgerbridge's own API ({api_host}:{api_port}): "
            "events are sent to subscribers, never back to the API"
        )
    return url


def _same_host(host: str, api_host: str) -> bool:
    """Whether `host` reaches the API listening on `api_host`: the same name or address, or
    any loopback alias when the API listens on loopback or on every address."""
    if host.lower() == api_host.lower().rstrip("."):
        return True
    api = _address(api_host)
    here = _address(host)
    if api is not None and here is not None and api == here:
        return True
    api_is_local = api_host.lower() in _LOOPBACK_NAMES or (
        api is not None and (api.is_loopback or api.is_unspecified)
    )
    return api_is_local and _is_loopback(host, here)


def _is_loopback(host: str, address: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
    name = host.lower()
    if name in _LOOPBACK_NAMES or name.endswith(".localhost"):  # RFC 6761
        return True
    return address is not None and (address.is_loopback or address.is_unspecified)


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a host names literally, in any form the resolver would take: dotted,
    shortened (127.1), hex or decimal (2130706433), IPv6 and IPv4-mapped IPv6."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        try:  # what inet_aton reads, getaddrinfo reads too
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


__all__ = [
    "ACTIVE",
    "ENDPOINT_ID_PATTERN",
    "PAUSED",
    "ROTATION_OVERLAP",
    "SUBSCRIBABLE",
    "EndpointSecret",
    "EndpointStatus",
    "EndpointUrlRefused",
    "EventEndpoint",
    "EventTypeUnknown",
    "checked_event_types",
    "checked_url",
    "new_endpoint_id",
    "new_secret",
    "rotated",
    "subscribed",
]
