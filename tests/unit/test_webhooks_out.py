"""Signed webhooks out: the retry schedule as pure functions, and each kind of answer from a
real HTTP server on a loopback port (no mock transport), with the signatures checked by the
Standard Webhooks reference library as a subscriber would check them."""

from __future__ import annotations

import base64
import json
import random
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from adapters.events.envelope import envelope
from adapters.events.subscriptions import (
    EndpointSecret,
    EndpointUrlRefused,
    EventEndpoint,
    EventTypeUnknown,
    checked_event_types,
    checked_url,
    new_secret,
    rotated,
    subscribed,
)
from adapters.events.webhooks_out import (
    CONTENT_TYPE,
    RETRY_WINDOW,
    deliver,
    failing_too_long,
    nominal_delay,
    nominal_elapsed,
    past_retry_window,
    retry_delay,
    signed_headers,
)
from canonical.facts import ReconciliationFinished
from tests.fixtures.servers import free_port

FINISHED = "com.ledgerbridge.reconciliation.finished.v1"
NOW = datetime(2026, 12, 8, 12, tzinfo=UTC)

# --- the schedule ---------------------------------------------------------------------------


def test_the_nominal_delay_doubles_from_five_seconds_up_to_two_hours() -> None:
    assert [nominal_delay(n) for n in range(1, 6)] == [5, 10, 20, 40, 80]
    assert nominal_delay(11) == 5 * 2**10 and nominal_delay(12) == 7200
    assert nominal_delay(10_000) == 7200  # no overflow however long it goes


def test_each_delay_is_jittered_within_a_fifth_of_its_nominal_length() -> None:
    rng = random.Random(7)
    for attempt in (1, 3, 8, 40):
        delays = [retry_delay(attempt, rng) for _ in range(200)]
        nominal = nominal_delay(attempt)
        assert all(0.8 * nominal <= d <= 1.2 * nominal for d in delays)
        assert len({round(d, 6) for d in delays}) > 100  # really spread, not one value


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError, match="count from 1"):
        retry_delay(0)


def test_the_schedule_spans_three_days_in_a_few_dozen_attempts() -> None:
    attempts = next(n for n in range(1, 500) if nominal_elapsed(n) >= RETRY_WINDOW)
    assert 40 <= attempts <= 50
    assert nominal_elapsed(1) == timedelta(0) and nominal_elapsed(3) == timedelta(seconds=15)


def test_the_retry_window_closes_three_days_after_the_first_attempt() -> None:
    first = NOW - timedelta(days=3)
    assert past_retry_window(first, NOW)
    assert not past_retry_window(first + timedelta(seconds=1), NOW)


def test_an_endpoint_fails_too_long_after_24_hours_of_failures() -> None:
    assert not failing_too_long(None, NOW)
    assert not failing_too_long(NOW - timedelta(hours=23, minutes=59), NOW)
    assert failing_too_long(NOW - timedelta(hours=24), NOW)


# --- endpoints: secrets, event types, URLs ------------------------------------------------


def test_a_new_secret_is_whsec_and_base64_of_24_to_64_random_bytes() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    assert len(base64.b64decode(new_secret(64)[6:])) == 64 and new_secret() != new_secret()
    with pytest.raises(ValueError, match="24 to 64"):
        new_secret(16)


def test_a_rotation_with_no_overlap_drops_the_old_secret_at_once() -> None:
    old = EndpointSecret("whsec_old", NOW - timedelta(days=9))
    assert [s.secret for s in rotated([old], "whsec_new", NOW, timedelta(0))] == ["whsec_new"]
    expired = EndpointSecret("whsec_gone", NOW - timedelta(days=9), NOW - timedelta(seconds=1))
    kept = rotated([old, expired], "whsec_new", NOW)
    assert [(s.secret, s.expires_at) for s in kept] == [
        ("whsec_new", None), ("whsec_old", NOW + timedelta(hours=24))]  # fmt: skip


def test_event_types_are_types_or_prefixes_and_empty_means_all() -> None:
    assert subscribed([], FINISHED)
    assert subscribed([FINISHED], FINISHED)
    assert subscribed(["com.ledgerbridge.reconciliation.*"], FINISHED)
    assert not subscribed(["com.ledgerbridge.credit.*"], FINISHED)
    assert not subscribed(["com.ledgerbridge.reconciliation"], FINISHED)  # no silent prefix
    assert checked_event_types([FINISHED, FINISHED, "com.ledgerbridge.*"]) == (
        FINISHED, "com.ledgerbridge.*")  # fmt: skip


@pytest.mark.parametrize(
    "wanted", ["com.ledgerbridge.credit.aproved.v1", "com.other.*", "*", FINISHED + ".*"]
)
def test_an_event_type_that_matches_nothing_is_refused(wanted: str) -> None:
    with pytest.raises(EventTypeUnknown, match="matches no event ledgerbridge sends"):
        checked_event_types([wanted])


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/webhooks/stripe",
        "http://localhost:8080/",
        "http://LOCALHOST.:8080/",
        "http://api.localhost:8080/",
        "http://127.1:8080/",
        "http://2130706433:8080/",
        "http://0x7f.0.0.1:8080/",
        "http://[::1]:8080/",
        "http://[::ffff:127.0.0.1]:8080/",
        "http://0.0.0.0:8080/",
    ],
)
def test_a_url_pointing_at_the_api_itself_is_refused(url: str) -> None:
    with pytest.raises(EndpointUrlRefused, match="ledgerbridge's own API"):
        checked_url(url, "127.0.0.1", 8080)


def test_the_apis_own_address_is_refused_whatever_it_listens_on() -> None:
    with pytest.raises(EndpointUrlRefused, match="own API"):
        checked_url("https://hooks.example.com/in", "hooks.example.com", 443)
    with pytest.raises(EndpointUrlRefused, match="own API"):
        checked_url("http://localhost:9000/x", "0.0.0.0", 9000)  # every address, loopback too
    with pytest.raises(EndpointUrlRefused, match="own API"):
        checked_url("http://10.0.0.5/", "10.0.0.5", 80)  # the default port counts


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9090/hooks",  # another port on this machine: a local subscriber
        "https://subscriber.example/hooks?token=abc",
        "http://10.0.0.5:8080/",  # another host, the API's port
    ],
)
def test_a_subscribers_url_is_accepted(url: str) -> None:
    assert checked_url(url, "127.0.0.1", 8080) == url


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("ftp://subscriber.example/", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("subscriber.example/hooks", "http:// or https://"),
        ("https:///nohost", "names no host"),
        ("https://user:pw@subscriber.example/", "credentials"),
        ("https://subscriber.example/#x", "fragment"),
        ("https://subscriber.example:99999/", "not a valid URL"),
        ("https://subscriber.example/a b", "spaces"),
        ("https://subscriber.example/" + "a" * 2048, "longer than"),
    ],
)
def test_a_url_no_webhook_can_go_to_is_refused_with_the_reason(url: str, said: str) -> None:
    with pytest.raises(EndpointUrlRefused, match=said):
        checked_url(url, "127.0.0.1", 8080)


# --- deliveries to a real server ------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Subscriber:
    """A loopback HTTP server answering by path, recording what it was sent."""

    port: int
    received: list[Received] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


ANSWERS: dict[str, tuple[int, dict[str, str], bytes]] = {
    "/ok": (200, {"Content-Type": "application/json"}, b'{"received": true}'),
    "/garbage": (200, {"Content-Type": "application/json"}, b"\x00\xff not json {{{"),
    "/accepted": (202, {}, b""),
    "/gone": (410, {}, b"endpoint removed"),
    "/boom": (500, {}, b"Internal Server Error\n  at line 3"),
    "/busy": (429, {"Retry-After": "120"}, b"slow down"),
    "/unavailable": (503, {"Retry-After": "999999"}, b"maintenance"),
    "/bad": (400, {}, b'{"error": "unknown field"}'),
    "/moved": (302, {"Location": "http://127.0.0.1:1/elsewhere"}, b""),
}
HANG_SECONDS = 3.0


@pytest.fixture(scope="module")
def subscriber() -> Iterator[Subscriber]:
    served = Subscriber(free_port())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            served.received.append(Received(self.path, headers, body))
            if self.path == "/hang":
                time.sleep(HANG_SECONDS)
                return
            status, extra, answer = ANSWERS[self.path]
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", served.port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served
    server.shutdown()
    server.server_close()


def event_body(run: str = "recon/2026-12-01") -> bytes:
    finished = ReconciliationFinished(
        run_id=run, status="done", healed=2, exceptions_opened=1, finished_at=NOW
    )
    return envelope(finished, workflow_id=run, step="finished", subject=run, time=NOW).body


def endpoint_at(url: str, **changes: object) -> EventEndpoint:
    secret = EndpointSecret(new_secret(), NOW - timedelta(days=30))
    endpoint = EventEndpoint(
        id="ep_" + "a" * 32, url=url, event_types=(), secrets=(secret,), description=None,
        status="active", paused_reason=None, failing_since=None,
        created_at=NOW - timedelta(days=30), updated_at=NOW - timedelta(days=30),
        created_by="ops-1",
    )  # fmt: skip
    return replace(endpoint, **changes)  # type: ignore[arg-type]


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def last(subscriber: Subscriber, path: str) -> Received:
    return [r for r in subscriber.received if r.path == path][-1]


async def test_a_delivery_is_the_cloudevent_signed_with_every_secret_of_a_rotation(
    subscriber: Subscriber, http: httpx.AsyncClient
) -> None:
    """Both secrets of a rotation verify the delivery, as the subscriber's library checks it;
    a secret the endpoint never had does not."""
    first = endpoint_at(subscriber.url("/ok"))
    old = first.secrets[0].secret
    after_rotation = replace(first, secrets=rotated(first.secrets, new_secret(), datetime.now(UTC)))
    new = after_rotation.secrets[0].secret
    body = event_body()

    outcome = await deliver(after_rotation, body, 1, http)

    assert (outcome.decision, outcome.status_code, outcome.delivered) == ("ack", 200, True)
    sent = last(subscriber, "/ok")
    assert sent.body == body and sent.headers["content-type"] == CONTENT_TYPE
    event_id = json.loads(body)["id"]
    assert sent.headers["webhook-id"] == event_id == outcome.event_id
    signatures = sent.headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    assert abs(int(sent.headers["webhook-timestamp"]) - time.time()) < 5
    for secret in (new, old):
        assert Webhook(secret).verify(sent.body, sent.headers)["id"] == event_id
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(sent.body, sent.headers)
    tampered = sent.body.replace(b'"healed": 2', b'"healed": 3')
    assert tampered != sent.body
    with pytest.raises(WebhookVerificationError):
        Webhook(new).verify(tampered, sent.headers)


async def test_a_secret_past_its_overlap_no_longer_signs(
    subscriber: Subscriber, http: httpx.AsyncClient
) -> None:
    ended = EndpointSecret(new_secret(), NOW - timedelta(days=9), datetime.now(UTC) - timedelta(1))
    current = EndpointSecret(new_secret(), NOW)
    await deliver(
        endpoint_at(subscriber.url("/ok"), secrets=(current, ended)), event_body(), 1, http
    )
    sent = last(subscriber, "/ok")
    assert len(sent.headers["webhook-signature"].split(" ")) == 1
    Webhook(current.secret).verify(sent.body, sent.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(ended.secret).verify(sent.body, sent.headers)


def test_the_signature_header_holds_the_librarys_signature_for_each_secret() -> None:
    secrets = [new_secret(), new_secret()]
    headers = signed_headers("evt-1", b"{}", secrets, NOW)
    expected = [Webhook(s).sign("evt-1", NOW, b"{}") for s in secrets]
    assert headers == {"webhook-id": "evt-1", "webhook-timestamp": str(int(NOW.timestamp())),
                       "webhook-signature": " ".join(expected)}  # fmt: skip
    with pytest.raises(ValueError, match="without a valid secret"):
        signed_headers("evt-1", b"{}", [], NOW)


@pytest.mark.parametrize("path", ["/ok", "/garbage", "/accepted"])
async def test_any_2xx_is_delivered_whatever_its_body_says(
    subscriber: Subscriber, http: httpx.AsyncClient, path: str
) -> None:
    failing = endpoint_at(subscriber.url(path), failing_since=NOW - timedelta(hours=30))
    outcome = await deliver(failing, event_body(), 7, http, now=NOW)
    assert (outcome.decision, outcome.error, outcome.failing_since) == ("ack", None, None)
    assert outcome.delivered and outcome.elapsed_ms is not None


async def test_410_gone_pauses_the_endpoint_at_once(
    subscriber: Subscriber, http: httpx.AsyncClient
) -> None:
    outcome = await deliver(endpoint_at(subscriber.url("/gone")), event_body(), 1, http, now=NOW)
    assert (outcome.decision, outcome.status_code) == ("pause", 410)
    assert "410 Gone" in (outcome.error or "") and outcome.failing_since == NOW


@pytest.mark.parametrize("path", ["/boom", "/busy", "/unavailable"])
async def test_a_server_error_or_429_is_retried_with_backoff(
    subscriber: Subscriber, http: httpx.AsyncClient, path: str
) -> None:
    outcome = await deliver(endpoint_at(subscriber.url(path)), event_body(), 3, http, now=NOW)
    assert outcome.decision == "retry" and not outcome.subscriber_error
    assert outcome.error is not None and outcome.error.startswith(f"HTTP {outcome.status_code}:")
    assert "\n" not in outcome.error
    assert outcome.failing_since == NOW  # the first failure starts the clock
    assert outcome.retry_after is not None
    if path == "/boom":
        assert 16 <= outcome.retry_after <= 24  # 20 s ±20 %
    elif path == "/busy":
        assert outcome.retry_after == 120  # the subscriber asked for longer: granted
    else:
        assert outcome.retry_after == 7200  # asked for far longer: capped


async def test_another_4xx_is_retried_but_says_the_subscriber_refused_it(
    subscriber: Subscriber, http: httpx.AsyncClient
) -> None:
    outcome = await deliver(endpoint_at(subscriber.url("/bad")), event_body(), 1, http, now=NOW)
    assert (outcome.decision, outcome.status_code, outcome.subscriber_error) == ("retry", 400, True)
    assert "the subscriber refused it" in (outcome.error or "")
    assert 4 <= (outcome.retry_after or 0) <= 6


async def test_a_redirect_is_not_followed(subscriber: Subscriber, http: httpx.AsyncClient) -> None:
    outcome = await deliver(endpoint_at(subscriber.url("/moved")), event_body(), 1, http, now=NOW)
    assert (outcome.decision, outcome.status_code, outcome.subscriber_error) == ("retry", 302, True)


async def test_a_subscriber_that_hangs_is_retried_after_the_timeout(
    subscriber: Subscriber, http: httpx.AsyncClient
) -> None:
    started = time.monotonic()
    outcome = await deliver(
        endpoint_at(subscriber.url("/hang")), event_body(), 2, http, now=NOW, timeout_seconds=0.3
    )
    assert time.monotonic() - started < HANG_SECONDS - 1
    assert (outcome.decision, outcome.status_code) == ("retry", None)
    assert outcome.error == "no answer within 0.3 s" and not outcome.subscriber_error


async def test_nobody_listening_is_retried(http: httpx.AsyncClient) -> None:
    outcome = await deliver(
        endpoint_at(f"http://127.0.0.1:{free_port()}/"), event_body(), 1, http, now=NOW
    )
    assert (outcome.decision, outcome.status_code) == ("retry", None)
    assert (outcome.error or "").startswith("ConnectError")


async def test_an_endpoint_failing_for_24_hours_is_paused_with_an_alert(
    subscriber: Subscriber, http: httpx.AsyncClient
) -> None:
    since = NOW - timedelta(hours=24, seconds=1)
    failing = endpoint_at(subscriber.url("/boom"), failing_since=since)
    outcome = await deliver(failing, event_body(), 30, http, now=NOW)
    assert (outcome.decision, outcome.failing_since) == ("pause_and_alert", since)
    recent = replace(failing, failing_since=NOW - timedelta(hours=23))
    assert (await deliver(recent, event_body(), 30, http, now=NOW)).decision == "retry"


async def test_an_event_failing_three_days_after_its_first_attempt_is_dead_lettered(
    subscriber: Subscriber, http: httpx.AsyncClient
) -> None:
    endpoint = endpoint_at(subscriber.url("/bad"))  # the endpoint takes others: not failing
    first = NOW - RETRY_WINDOW
    outcome = await deliver(endpoint, event_body(), 44, http, first_attempt_at=first, now=NOW)
    assert (outcome.decision, outcome.status_code) == ("dead_letter", 400)
    # Just before: one last retry, at the window's end rather than after it.
    almost = await deliver(endpoint, event_body(), 44, http,
                           first_attempt_at=first + timedelta(seconds=60), now=NOW)  # fmt: skip
    assert (almost.decision, almost.retry_after) == ("retry", 60)
    # Without the first attempt's time, it is reckoned from the attempt along the schedule.
    reckoned = await deliver(endpoint, event_body(), 60, http, now=NOW)
    assert reckoned.decision == "dead_letter"


async def test_a_paused_endpoint_or_an_event_it_does_not_want_is_not_sent(
    subscriber: Subscriber, http: httpx.AsyncClient
) -> None:
    before = len(subscriber.received)
    paused = endpoint_at(subscriber.url("/ok"), status="paused", paused_reason="410 Gone")
    outcome = await deliver(paused, event_body(), 1, http)
    assert (outcome.decision, outcome.sent) == ("pause", False)
    other = endpoint_at(subscriber.url("/ok"), event_types=("com.ledgerbridge.credit.*",))
    skipped = await deliver(other, event_body(), 1, http)
    assert (skipped.decision, skipped.sent, skipped.delivered) == ("ack", False, False)
    assert len(subscriber.received) == before


async def test_a_body_that_is_no_cloudevent_is_refused_before_anything_is_sent(
    http: httpx.AsyncClient,
) -> None:
    with pytest.raises(ValueError, match="not a structured CloudEvent"):
        await deliver(endpoint_at("http://127.0.0.1:1/"), b"[]", 1, http)
