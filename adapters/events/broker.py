"""Events out, the broker side: NATS JetStream spoken through nats-py.

One `JetStreamBroker` (one NATS connection) per process. The relay that reads the store's
outbox calls `ensure_stream()` once, then `publish()` each event in outbox order, one at a
time, awaiting each ack; subscribers read through `durable_consumer()`.

Delivery guarantees rest on three things the server does:
- the stream `LEDGERBRIDGE` keeps every `ledgerbridge.>` message on file storage, so a
  broker restart loses nothing it acknowledged;
- its duplicate window drops a message whose `Nats-Msg-Id` it has already stored, so the
  relay may publish again whatever it is unsure of (a lost ack, a crash before marking the
  outbox row) and the stream still holds it once;
- durable pull consumers with explicit acks redeliver what a subscriber did not ack.

A broker that is down or slow never loses an event either: `publish` raises TransientError
and the outbox row stays unpublished until a retry succeeds.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Literal
from urllib.parse import urlsplit

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
    StreamInfo,
)

from adapters.errors import AdapterError, TransientError, error_for_status

log = structlog.get_logger(__name__)

SYSTEM = "broker"
STREAM = "LEDGERBRIDGE"
SUBJECT_ROOT = "ledgerbridge"
STREAM_SUBJECTS = f"{SUBJECT_ROOT}.>"
MSG_ID_HEADER = "Nats-Msg-Id"
# Longer than any outage the relay is expected to ride out before republishing what it was
# unsure of: a republish inside the window is dropped by the server, one after it is stored.
DEFAULT_DUPLICATE_WINDOW_SECONDS = 2 * 24 * 60 * 60.0

# Characters a subject token keeps as they are (NATS's recommended subject characters); every
# other UTF-8 byte of a business id is written `=XX` (two uppercase hex digits).
_TOKEN_SAFE = re.compile(r"[A-Za-z0-9_-]")
_EVENT_TYPE_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPE = re.compile(r"=([0-9A-F]{2})")
# A JetStream API error code the server answers when the stream exists with another config.
_STREAM_NAME_IN_USE = 10058

StreamOutcome = Literal["created", "updated", "unchanged"]


def subject_token(business_id: str) -> str:
    """One NATS subject token that stands for `business_id`, and for no other id.

    Rule: ASCII letters, digits, `-` and `_` stay as they are; every other character
    (`.` which would split the token, `*` and `>` which are wildcards, spaces, `=` itself,
    `$`, anything non-ASCII) becomes `=XX` for each byte of its UTF-8 encoding, `XX` being
    uppercase hex. So `cus_123` stays `cus_123`, `acme.com` becomes `acme=2Ecom`, `a b*`
    becomes `a=20b=2A`. `business_id_from_token` reverses it.
    """
    if not business_id:
        raise ValueError("a business id for a subject token cannot be empty")
    return "".join(
        char if _TOKEN_SAFE.fullmatch(char) else "".join(f"={b:02X}" for b in char.encode())
        for char in business_id
    )


def business_id_from_token(token: str) -> str:
    """The business id `subject_token` encoded into `token`."""
    raw = bytearray()
    position = 0
    for escape in _ESCAPE.finditer(token):
        raw += token[position : escape.start()].encode()
        raw.append(int(escape.group(1), 16))
        position = escape.end()
    raw += token[position:].encode()
    return raw.decode()


def subject_for(event_type: str, subject_id: str) -> str:
    """The subject of one event: `ledgerbridge.<event type>.<business id token>`.

    `event_type` is the CloudEvents type, reverse-DNS and versioned
    (`com.ledgerbridge.credit.approved.v1`): its dots make it a hierarchy subscribers filter
    on (`ledgerbridge.com.ledgerbridge.credit.>`), so each of its parts must already be a
    safe token (letters, digits, `-`, `_`). `subject_id` is the business id the event is
    about (a credit, a subscription), one token by `subject_token`'s rule, so
    `subject_for("com.ledgerbridge.credit.approved.v1", "cr.7")` is
    `ledgerbridge.com.ledgerbridge.credit.approved.v1.cr=2E7`.

    JetStream keeps the order in which it stored messages; the order per subject (per
    business id) is therefore the order the relay published them in, which holds only while
    the relay publishes sequentially, each publish awaited before the next.
    """
    parts = event_type.split(".")
    if not all(_EVENT_TYPE_TOKEN.fullmatch(part) for part in parts):
        raise ValueError(
            f"event type {event_type!r}: each dot-separated part must be letters, digits, "
            "'-' or '_'"
        )
    return ".".join([SUBJECT_ROOT, *parts, subject_token(subject_id)])


@dataclass(frozen=True)
class PublishResult:
    """The server's ack: where the message is stored, and whether it already was."""

    stream: str
    sequence: int
    # True when the server had stored this Nats-Msg-Id already (within the duplicate
    # window): nothing new was stored and `sequence` is the first copy's.
    duplicate: bool


@dataclass(frozen=True)
class Delivery:
    """One message handed to a durable consumer; `ack` it once it is handled for good."""

    subject: str
    body: bytes
    headers: Mapping[str, str]
    stream_sequence: int
    # 1 on first delivery; more when the consumer redelivers (no ack in time, or a nak).
    delivered_count: int
    _message: Msg = dataclasses.field(repr=False)

    @property
    def msg_id(self) -> str | None:
        return self.headers.get(MSG_ID_HEADER)

    async def ack(self) -> None:
        """Acknowledge, waiting for the server to record it: an acked message never comes
        back to this consumer."""
        try:
            await self._message.ack_sync(timeout=5.0)
        except (TimeoutError, nats.errors.Error, OSError) as err:
            raise _transient(err, "ack") from err

    async def nak(self, delay_seconds: float | None = None) -> None:
        """Ask for redelivery, after `delay_seconds` when given."""
        try:
            await self._message.nak(delay=delay_seconds)
        except (nats.errors.Error, OSError) as err:
            raise _transient(err, "nak") from err


class DurableConsumer:
    """A durable pull consumer of the stream: fetch a batch, handle each, ack each."""

    def __init__(
        self, name: str, filter_subject: str, subscription: JetStreamContext.PullSubscription
    ) -> None:
        self.name = name
        self.filter_subject = filter_subject
        self._subscription = subscription

    async def fetch(self, batch: int = 10, wait_seconds: float = 1.0) -> list[Delivery]:
        """Up to `batch` messages, waiting at most `wait_seconds` for them; [] when none
        arrived in that time."""
        try:
            messages = await self._subscription.fetch(batch, timeout=wait_seconds)
        except (nats.errors.TimeoutError, TimeoutError):
            # nats-py ends an empty pull with its own TimeoutError, or, when the wait runs out
            # on its side first, asyncio's (the built-in one, an OSError): nothing came.
            return []
        except nats.js.errors.APIError as err:
            raise _api_error(err, "fetch") from err
        except (nats.errors.Error, OSError) as err:
            raise _transient(err, "fetch") from err
        return [
            Delivery(
                subject=m.subject,
                body=m.data,
                headers=dict(m.headers or {}),
                stream_sequence=m.metadata.sequence.stream,
                delivered_count=m.metadata.num_delivered,
                _message=m,
            )
            for m in messages
        ]

    async def close(self) -> None:
        """Stop fetching here; the durable consumer and its position stay on the server."""
        try:
            await self._subscription.unsubscribe()
        except nats.errors.Error as err:
            log.warning("broker.consumer_unsubscribe_failed", consumer=self.name, error=str(err))


class JetStreamBroker:
    """The stream `LEDGERBRIDGE` on a NATS JetStream server or cluster."""

    def __init__(
        self,
        connection: NATS,
        *,
        duplicate_window_seconds: float = DEFAULT_DUPLICATE_WINDOW_SECONDS,
        replicas: int = 1,
        publish_timeout: float = 5.0,
        stream: str = STREAM,
    ) -> None:
        self._nc = connection
        self._js = connection.jetstream(timeout=publish_timeout)
        self.stream = stream
        self.duplicate_window_seconds = duplicate_window_seconds
        self.replicas = replicas
        self.publish_timeout = publish_timeout

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        duplicate_window_seconds: float = DEFAULT_DUPLICATE_WINDOW_SECONDS,
        replicas: int = 1,
        publish_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        reconnect_wait_seconds: float = 1.0,
        name: str = "ledgerbridge",
    ) -> JetStreamBroker:
        """Connect to `url`: one server, or a cluster's as a comma-separated list.

        Once connected, the client reconnects for ever after a broker restart (publishes in
        between raise TransientError); the first connection gives up after
        `connect_timeout` seconds with TransientError.
        """
        servers = [s.strip() for s in url.split(",") if s.strip()]
        if not servers:
            raise ValueError("no NATS server URL given")
        connection = NATS()

        async def report_error(err: Exception) -> None:
            log.warning("broker.connection_error", error=f"{type(err).__name__}: {err}")

        async def report_disconnected() -> None:
            log.warning("broker.disconnected")

        async def report_reconnected() -> None:
            server = connection.connected_url
            log.info("broker.reconnected", server=server.hostname if server else None)

        try:
            await asyncio.wait_for(
                connection.connect(
                    servers,
                    name=name,
                    connect_timeout=max(1, round(connect_timeout)),
                    reconnect_time_wait=reconnect_wait_seconds,  # type: ignore[arg-type]
                    max_reconnect_attempts=-1,  # an outage delays events, never ends the relay
                    error_cb=report_error,
                    disconnected_cb=report_disconnected,
                    reconnected_cb=report_reconnected,
                ),
                timeout=connect_timeout,
            )
        except (TimeoutError, nats.errors.Error, OSError) as err:
            await connection.close()
            raise TransientError(
                f"cannot reach NATS at {', '.join(map(without_credentials, servers))} "
                f"({type(err).__name__})",
                system=SYSTEM,
                operation="connect",
            ) from err
        return cls(
            connection,
            duplicate_window_seconds=duplicate_window_seconds,
            replicas=replicas,
            publish_timeout=publish_timeout,
        )

    async def __aenter__(self) -> JetStreamBroker:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if not self._nc.is_closed:
            await self._nc.close()

    @property
    def connected(self) -> bool:
        return self._nc.is_connected

    # --- the stream ---------------------------------------------------------------------

    def stream_config(self) -> StreamConfig:
        return StreamConfig(
            name=self.stream,
            description="ledgerbridge business events (outbox relay; CloudEvents 1.0 bodies)",
            subjects=[STREAM_SUBJECTS],
            retention=RetentionPolicy.LIMITS,
            discard=DiscardPolicy.OLD,
            storage=StorageType.FILE,
            num_replicas=self.replicas,
            duplicate_window=self.duplicate_window_seconds,
        )

    async def ensure_stream(self) -> StreamOutcome:
        """Create the stream, or bring its subjects, duplicate window and replicas to ours;
        anything else an operator set on it (limits, placement) stays. Safe to call from
        every process at every start. A stream of that name on memory storage is refused
        (AdapterError, not retryable): only its deletion can move it to file."""
        wanted = self.stream_config()
        try:
            try:
                current = (await self._js.stream_info(self.stream)).config
            except nats.js.errors.NotFoundError:
                try:
                    await self._js.add_stream(wanted)
                    return "created"
                except nats.js.errors.BadRequestError as err:
                    if err.err_code != _STREAM_NAME_IN_USE:  # another process made it first
                        raise
                    current = (await self._js.stream_info(self.stream)).config
            if current.storage != StorageType.FILE:
                raise AdapterError(
                    f"stream {self.stream} keeps messages in {current.storage}, not on file: "
                    "delete it (its messages go with it) so it is created on file storage",
                    system=SYSTEM,
                    operation="ensure_stream",
                )
            if (current.subjects, current.duplicate_window, current.num_replicas) == (
                wanted.subjects,
                wanted.duplicate_window,
                wanted.num_replicas,
            ):
                return "unchanged"
            updated = dataclasses.replace(
                current,
                subjects=wanted.subjects,
                duplicate_window=wanted.duplicate_window,
                num_replicas=wanted.num_replicas,
            )
            await self._js.update_stream(updated)
            return "updated"
        except nats.js.errors.APIError as err:
            raise _api_error(err, "ensure_stream") from err
        except (nats.errors.Error, OSError) as err:
            raise _transient(err, "ensure_stream") from err

    async def stream_info(self) -> StreamInfo:
        """The stream's config, state (messages, sequences) and, in a cluster, its copies."""
        try:
            return await self._js.stream_info(self.stream)
        except nats.js.errors.APIError as err:
            raise _api_error(err, "stream_info") from err
        except (nats.errors.Error, OSError) as err:
            raise _transient(err, "stream_info") from err

    async def consumer_names(self, prefix: str = "") -> list[str]:
        """The stream's durable consumers whose names start with `prefix`."""
        try:
            infos = await self._js.consumers_info(self.stream)
        except nats.js.errors.APIError as err:
            raise _api_error(err, "consumers_info") from err
        except (nats.errors.Error, OSError) as err:
            raise _transient(err, "consumers_info") from err
        return sorted(i.name for i in infos if i.name and i.name.startswith(prefix))

    async def delete_consumer(self, name: str) -> None:
        """Remove a durable consumer and its position (gone already: nothing to do)."""
        try:
            await self._js.delete_consumer(self.stream, name)
        except nats.js.errors.NotFoundError:
            return
        except nats.js.errors.APIError as err:
            raise _api_error(err, "delete_consumer") from err
        except (nats.errors.Error, OSError) as err:
            raise _transient(err, "delete_consumer") from err

    async def stream_message_count(self) -> int:
        """How many messages the stream holds now."""
        return int((await self.stream_info()).state.messages)

    # --- publishing ---------------------------------------------------------------------

    async def publish(
        self,
        subject: str,
        body: bytes,
        msg_id: str,
        headers: Mapping[str, str] | None = None,
    ) -> PublishResult:
        """Store one message in the stream and return the server's ack.

        `msg_id` (the event id) travels as `Nats-Msg-Id`: publishing it again within the
        duplicate window stores nothing and answers `duplicate=True`. Raises TransientError
        when the broker is unreachable, reconnecting or does not ack within
        `publish_timeout` (the message may or may not be stored: publish it again with the
        same id), and RejectedError/ValidationError when the server refuses it.
        """
        if not subject.startswith(f"{SUBJECT_ROOT}.") or any(c in subject for c in " \t*>"):
            raise ValueError(f"{subject!r} is not a subject of the stream (see subject_for)")
        if not msg_id:
            raise ValueError("every event needs a msg_id (its Nats-Msg-Id)")
        given = dict(headers or {})
        if given.get(MSG_ID_HEADER, msg_id) != msg_id:
            raise ValueError(f"headers carry another {MSG_ID_HEADER} than msg_id {msg_id!r}")
        if not self._nc.is_connected:
            # Not buffered for later: the caller keeps the event and publishes it again.
            raise TransientError(
                "not connected to NATS (reconnecting, or closed)",
                system=SYSTEM,
                operation="publish",
            )
        try:
            ack = await self._js.publish(
                subject,
                body,
                timeout=self.publish_timeout,
                stream=self.stream,
                headers={**given, MSG_ID_HEADER: msg_id},
            )
        except nats.errors.TimeoutError as err:
            raise TransientError(
                f"no ack from JetStream within {self.publish_timeout:g} s (maybe stored: "
                "publish again with the same msg id)",
                system=SYSTEM,
                operation="publish",
            ) from err
        except nats.js.errors.NoStreamResponseError as err:
            # No stream listens on the subject: missing (run ensure_stream) or, in a
            # cluster, without a leader for a moment.
            raise TransientError(
                f"no stream answered for {subject} (is {self.stream} created?)",
                system=SYSTEM,
                operation="publish",
            ) from err
        except nats.js.errors.APIError as err:
            raise _api_error(err, "publish") from err
        except (nats.errors.Error, OSError) as err:
            raise _transient(err, "publish") from err
        return PublishResult(stream=ack.stream, sequence=ack.seq, duplicate=bool(ack.duplicate))

    # --- consuming ----------------------------------------------------------------------

    async def durable_consumer(
        self,
        name: str,
        filter_subject: str,
        *,
        ack_wait_seconds: float = 30.0,
        max_deliver: int = -1,
        backoff_seconds: Sequence[float] | None = None,
        max_ack_pending: int = 1000,
        start_time: datetime | None = None,
    ) -> DurableConsumer:
        """The durable pull consumer `name` on `filter_subject` (created, or its settings
        brought to these), bound for fetching.

        Each message is delivered until acked: again after `ack_wait_seconds` without an ack
        (or after each of `backoff_seconds` in turn), at most `max_deliver` times (-1: no
        limit; with a backoff it must exceed the backoff's length). Set `max_ack_pending` to
        1 for a subscriber that must see one subject's messages strictly in order even across
        redeliveries.
        """
        config = ConsumerConfig(
            durable_name=name,
            name=name,
            filter_subject=filter_subject,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ack_wait_seconds,
            max_deliver=max_deliver,
            backoff=list(backoff_seconds) if backoff_seconds else None,
            max_ack_pending=max_ack_pending,
            # From the first message, or (a subscriber registered later) from its start time.
            deliver_policy=DeliverPolicy.BY_START_TIME if start_time else DeliverPolicy.ALL,
            opt_start_time=start_time,
        )
        try:
            await self._js.add_consumer(self.stream, config)
            subscription = await self._js.pull_subscribe_bind(durable=name, stream=self.stream)
        except nats.js.errors.APIError as err:
            raise _api_error(err, "durable_consumer") from err
        except (nats.errors.Error, OSError) as err:
            raise _transient(err, "durable_consumer") from err
        return DurableConsumer(name, filter_subject, subscription)


def _transient(err: BaseException, operation: str) -> TransientError:
    return TransientError(
        f"NATS connection failed ({type(err).__name__}: {err})", system=SYSTEM, operation=operation
    )


def _api_error(err: nats.js.errors.APIError, operation: str) -> AdapterError:
    """A JetStream API error by its HTTP-like code: 503 (JetStream unavailable, no quorum)
    is transient; 400 a request the server refuses; 404 what does not exist."""
    return error_for_status(
        int(err.code or 500),
        err.description or "JetStream API error",
        system=SYSTEM,
        operation=operation,
        remote_code=str(err.err_code) if err.err_code else None,
    )


__all__ = [
    "DEFAULT_DUPLICATE_WINDOW_SECONDS",
    "MSG_ID_HEADER",
    "STREAM",
    "STREAM_SUBJECTS",
    "Delivery",
    "DurableConsumer",
    "JetStreamBroker",
    "PublishResult",
    "StreamOutcome",
    "business_id_from_token",
    "subject_for",
    "subject_token",
]


def without_credentials(server: str) -> str:
    """A server URL fit for a log line: `nats://user:secret@host:4222` -> `nats://host:4222`."""
    parts = urlsplit(server if "://" in server else f"nats://{server}")
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}:{parts.port}" if parts.port else f"{parts.scheme}://{host}"
