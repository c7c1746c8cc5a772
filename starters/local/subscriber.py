"""A local subscriber to ledgerbridge's webhooks out, for the demo: an HTTP endpoint on
loopback that checks each delivery's signature with the `standardwebhooks` library (the
Standard Webhooks reference implementation, not ours), drops a redelivery by its
`webhook-id`, and says what arrived."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook, WebhookVerificationError


class LocalSubscriber:
    def __init__(
        self, echo: Callable[[str], None], refusing: Callable[[], bool] | None = None
    ) -> None:
        self.echo = echo
        self.refusing = refusing  # says when to answer 503 instead (the chaos run's outages)
        self.secret: str | None = None  # set once the endpoint is registered
        self.received: list[str] = []  # event ids, in arrival order, each once
        self.deliveries = 0  # signed deliveries taken, redeliveries included
        self.refused = 0  # deliveries whose signature did not verify
        self.refusals = 0  # deliveries answered 503 on purpose
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/ledgerbridge-events"

    def take(self, body: bytes, headers: dict[str, str]) -> int:
        """The status to answer one delivery with."""
        if self.secret is None:
            return 503  # not ready yet: ledgerbridge retries
        try:
            Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError:
            with self._lock:
                self.refused += 1
            return 400
        if self.refusing is not None and self.refusing():
            with self._lock:
                self.refusals += 1
            return 503
        event = json.loads(body)
        with self._lock:
            self.deliveries += 1
            if event["id"] in self.received:
                return 200  # a redelivery: already taken
            self.received.append(event["id"])
        self.echo(f"  [subscriber] {event['type']} {event['subject']} (signature verified)")
        return 200

    @contextmanager
    def serving(self) -> Iterator[LocalSubscriber]:
        subscriber = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = subscriber.take(body, {k.lower(): v for k, v in self.headers.items()})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
