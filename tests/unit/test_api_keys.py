"""API keys: expiry, rotation, malformed entries and the per-key rate limit."""

import hashlib
import sys
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from structlog.testing import capture_logs

from adapters.settings import Settings
from starters.api import create_app
from starters.api.auth import (
    ApiKeyExpired,
    ApiKeyring,
    ApiPrincipal,
    KeyRateLimiter,
    RateLimitExceeded,
    key_entry,
)
from starters.api.dependencies import require_role

ALICE_OLD = "lb_alice_old_key_0123456789"
ALICE_NEW = "lb_alice_new_key_9876543210"
BOB = "lb_bob_key_abcdefghijklmnop"


def digest_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class FakeClock:
    """Monotonic seconds that move only when a test moves them."""

    def __init__(self) -> None:
        self.seconds = 1000.0

    def __call__(self) -> float:
        return self.seconds

    def advance(self, seconds: float) -> None:
        self.seconds += seconds


class FakeNow:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


MIDYEAR = utc(2026, 6, 1)


def keyring(
    entries: list[str],
    now: datetime = MIDYEAR,
    clock: FakeClock | None = None,
    per_second: float = 20.0,
    burst: int = 40,
) -> ApiKeyring:
    return ApiKeyring(
        entries,
        rate_per_second=per_second,
        rate_burst=burst,
        clock=clock or FakeClock(),
        now=FakeNow(now),
    )


class Handled:
    """A tiny app whose one handler counts the requests that reached it."""

    def __init__(self, ring: ApiKeyring, *roles: str) -> None:
        self.calls = 0
        app = FastAPI()
        app.state.keyring = ring
        guard = require_role(*roles)

        @app.get("/guarded")
        def guarded(principal: Annotated[ApiPrincipal, Depends(guard)]) -> dict[str, str]:
            self.calls += 1
            return {"name": principal.name, "role": principal.role}

        self.client = TestClient(app)

    def get(self, key: str | None) -> tuple[int, dict[str, str], dict[str, str]]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        response = self.client.get("/guarded", headers=headers)
        return response.status_code, response.json(), dict(response.headers)


# --- expiry -------------------------------------------------------------------------------


def test_three_part_entry_never_expires() -> None:
    ring = keyring([key_entry("alice", "finance", ALICE_OLD)], now=utc(9999, 12, 31))
    assert ring.authenticate(ALICE_OLD) == ApiPrincipal("alice", "finance")


def test_date_expiry_keeps_the_key_valid_through_the_end_of_that_day_utc() -> None:
    entries = [f"alice:finance:{digest_of(ALICE_OLD)}:2026-12-31"]
    last_moment = utc(2026, 12, 31, 23, 59, 59, 999999)
    assert keyring(entries, now=last_moment).authenticate(ALICE_OLD) is not None
    with pytest.raises(ApiKeyExpired, match=r"^API key expired on 2026-12-31$"):
        keyring(entries, now=utc(2027, 1, 1)).authenticate(ALICE_OLD)


def test_datetime_expiry_refuses_the_key_from_that_instant() -> None:
    entries = [f"alice:finance:{digest_of(ALICE_OLD)}:2026-12-31T18:00:00Z"]
    just_before = utc(2026, 12, 31, 17, 59, 59, 999999)
    assert keyring(entries, now=just_before).authenticate(ALICE_OLD) is not None
    with pytest.raises(ApiKeyExpired, match=r"^API key expired on 2026-12-31T18:00:00\+00:00$"):
        keyring(entries, now=utc(2026, 12, 31, 18)).authenticate(ALICE_OLD)


def test_datetime_expiry_without_offset_is_utc_and_with_offset_is_converted() -> None:
    naive = [f"alice:finance:{digest_of(ALICE_OLD)}:2026-12-31T18:00:00"]
    offset = [f"alice:finance:{digest_of(ALICE_OLD)}:2026-12-31T18:00:00+02:00"]
    assert keyring(naive, now=utc(2026, 12, 31, 17, 59)).authenticate(ALICE_OLD) is not None
    assert keyring(offset, now=utc(2026, 12, 31, 15, 59)).authenticate(ALICE_OLD) is not None
    with pytest.raises(ApiKeyExpired, match="2026-12-31T16:00:00"):
        keyring(offset, now=utc(2026, 12, 31, 16)).authenticate(ALICE_OLD)


def test_key_entry_writes_an_expiry_the_keyring_reads_back() -> None:
    entry = key_entry("alice", "finance", ALICE_OLD, expires=date(2026, 12, 31))
    assert entry == f"alice:finance:{digest_of(ALICE_OLD)}:2026-12-31"
    with pytest.raises(ApiKeyExpired):
        keyring([entry], now=utc(2027, 1, 1)).authenticate(ALICE_OLD)


def test_expired_and_unknown_keys_get_distinct_401_messages_and_never_reach_the_handler() -> None:
    entries = [f"alice:finance:{digest_of(ALICE_OLD)}:2026-12-31", key_entry("bob", "ops", BOB)]
    app = Handled(keyring(entries, now=utc(2027, 1, 1)))
    assert app.get(ALICE_OLD)[:2] == (401, {"detail": "API key expired on 2026-12-31"})
    assert app.get("lb_never_issued")[:2] == (401, {"detail": "missing or unknown API key"})
    assert app.get(None)[:2] == (401, {"detail": "missing or unknown API key"})
    assert app.calls == 0
    assert app.get(BOB)[:2] == (200, {"name": "bob", "role": "ops"})
    assert app.calls == 1


def test_the_real_app_answers_an_expired_key_in_its_one_line_error_format(tmp_path: Path) -> None:
    settings = Settings(
        store_url=f"sqlite:///{tmp_path / 's.sqlite'}",
        api_keys=[f"alice:ops:{digest_of(ALICE_OLD)}:2020-01-01"],
    )
    client = TestClient(create_app(settings))
    response = client.get("/v1/status", headers={"Authorization": f"Bearer {ALICE_OLD}"})
    assert (response.status_code, response.json()) == (
        401,
        {"error": "API key expired on 2020-01-01"},
    )


def test_expired_key_use_is_logged_by_name_without_key_or_digest() -> None:
    ring = keyring([f"alice:finance:{digest_of(ALICE_OLD)}:2026-12-31"], now=utc(2027, 1, 1))
    with capture_logs() as logs, pytest.raises(ApiKeyExpired):
        ring.authenticate(ALICE_OLD)
    assert [entry["key_name"] for entry in logs] == ["alice"]
    assert ALICE_OLD not in repr(logs) and digest_of(ALICE_OLD) not in repr(logs)


# --- rotation -----------------------------------------------------------------------------


def test_old_and_new_key_authenticate_as_one_principal_until_the_old_one_expires() -> None:
    entries = [
        f"alice:finance:{digest_of(ALICE_OLD)}:2026-12-31",
        key_entry("alice", "finance", ALICE_NEW),
    ]
    during = keyring(entries, now=utc(2026, 12, 31, 12))
    assert during.authenticate(ALICE_OLD) == during.authenticate(ALICE_NEW)
    assert during.authenticate(ALICE_NEW) == ApiPrincipal("alice", "finance")
    after = keyring(entries, now=utc(2027, 1, 1))
    assert after.authenticate(ALICE_NEW) == ApiPrincipal("alice", "finance")
    with pytest.raises(ApiKeyExpired):
        after.authenticate(ALICE_OLD)


def test_rotated_keys_share_one_rate_limit_bucket() -> None:
    entries = [key_entry("alice", "finance", ALICE_OLD), key_entry("alice", "finance", ALICE_NEW)]
    app = Handled(keyring(entries, per_second=1, burst=2))
    assert app.get(ALICE_OLD)[0] == 200
    assert app.get(ALICE_NEW)[0] == 200
    assert app.get(ALICE_OLD)[0] == 429
    assert app.get(ALICE_NEW)[0] == 429


# --- malformed entries --------------------------------------------------------------------

DIGEST = digest_of(ALICE_OLD)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("alice:finance", r"'alice'.*expected name:role:sha256hex\[:expiry\]"),
        (DIGEST, r"entry #1: expected name:role:sha256hex"),
        (ALICE_OLD, r"entry #1: expected name:role:sha256hex"),
        (f":finance:{DIGEST}", r"entry #1: expected name:role:sha256hex"),
        (f"alice:fiance:{DIGEST}", r"'alice': unknown role 'fiance'; expected one of"),
        (f"alice:{DIGEST}:finance", r"'alice': unknown role; expected one of"),
        (f"alice:finance:{DIGEST[:40]}", r"'alice': the digest is not 64 hex characters"),
        (f"alice:finance:{ALICE_OLD}", r"'alice': the digest is not 64 hex characters"),
        (f"alice:finance:{DIGEST}:2026-13-01", r"'alice': expiry '2026-13-01' is not an ISO date"),
        (f"alice:finance:{DIGEST}:next-week", r"'alice': expiry is not an ISO date"),
        (f"alice:finance:{DIGEST}:{digest_of(BOB)}", r"'alice': expiry is not an ISO date"),
    ],
)
def test_malformed_entry_fails_at_start_up_naming_the_entry_but_never_its_secret(
    entry: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        ApiKeyring([entry])
    for secret in (DIGEST, DIGEST[:40], ALICE_OLD, digest_of(BOB)):
        assert secret not in str(raised.value)


def test_one_name_with_two_roles_is_refused_at_start_up() -> None:
    entries = [key_entry("alice", "finance", ALICE_OLD), key_entry("alice", "ops", ALICE_NEW)]
    with pytest.raises(ValueError, match=r"'alice': entries of one name must share its role"):
        ApiKeyring(entries)


def test_one_key_under_two_names_is_refused_at_start_up() -> None:
    entries = [key_entry("alice", "finance", ALICE_OLD), key_entry("bob", "ops", ALICE_OLD)]
    with pytest.raises(ValueError, match=r"'bob': the same key is already configured as 'alice'"):
        ApiKeyring(entries)


def test_keys_with_datetime_expiry_can_come_from_a_secrets_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "keys").write_text(
        f"alice:finance:{digest_of(ALICE_OLD)}:2026-12-31T18:00:00Z\n"
        f"{key_entry('alice', 'finance', ALICE_NEW)}\n"
    )
    monkeypatch.delenv("LEDGERBRIDGE_API_KEYS", raising=False)
    monkeypatch.setenv("LEDGERBRIDGE_API_KEYS_FILE", str(tmp_path / "keys"))
    ring = ApiKeyring(Settings().api_keys, now=FakeNow(utc(2026, 12, 31, 18)))
    assert ring.authenticate(ALICE_NEW) == ApiPrincipal("alice", "finance")
    with pytest.raises(ApiKeyExpired):
        ring.authenticate(ALICE_OLD)


# --- rate limit ---------------------------------------------------------------------------


def test_over_the_limit_answers_429_with_retry_after_and_never_reaches_the_handler() -> None:
    clock = FakeClock()
    app = Handled(keyring([key_entry("alice", "finance", ALICE_OLD)], clock=clock, burst=3))
    assert [app.get(ALICE_OLD)[0] for _ in range(3)] == [200, 200, 200]
    status, body, headers = app.get(ALICE_OLD)
    assert (status, body) == (429, {"detail": "rate limit exceeded for key alice"})
    assert headers["retry-after"] == "1"
    assert app.calls == 3
    clock.advance(0.05)  # one token at 20/s
    assert app.get(ALICE_OLD)[0] == 200
    assert app.get(ALICE_OLD)[0] == 429
    assert app.calls == 4


def test_retry_after_is_whole_seconds_until_the_next_token() -> None:
    clock = FakeClock()
    limiter = KeyRateLimiter(per_second=0.25, burst=1, clock=clock)
    limiter.take("alice")
    with pytest.raises(RateLimitExceeded) as raised:
        limiter.take("alice")
    assert raised.value.retry_after == 4
    clock.advance(1.5)
    with pytest.raises(RateLimitExceeded) as raised:
        limiter.take("alice")
    assert raised.value.retry_after == 3  # 2.5 s to go, rounded up
    clock.advance(2.5)
    limiter.take("alice")


def test_retry_after_is_at_least_one_second_even_when_a_token_is_microseconds_away() -> None:
    clock = FakeClock()
    limiter = KeyRateLimiter(per_second=1, burst=1, clock=clock)
    limiter.take("alice")
    clock.advance(0.9999999)
    with pytest.raises(RateLimitExceeded) as raised:
        limiter.take("alice")
    assert raised.value.retry_after == 1


def test_bucket_refills_to_burst_and_no_further() -> None:
    clock = FakeClock()
    limiter = KeyRateLimiter(per_second=2, burst=3, clock=clock)
    for _ in range(3):
        limiter.take("alice")
    clock.advance(3600)
    for _ in range(3):
        limiter.take("alice")
    with pytest.raises(RateLimitExceeded):
        limiter.take("alice")


def test_each_key_name_has_its_own_bucket() -> None:
    entries = [key_entry("alice", "finance", ALICE_OLD), key_entry("bob", "ops", BOB)]
    app = Handled(keyring(entries, per_second=1, burst=1))
    assert app.get(ALICE_OLD)[0] == 200
    assert app.get(ALICE_OLD)[0] == 429
    assert app.get(BOB)[0] == 200


def test_wrong_role_is_403_never_reaches_the_handler_and_still_spends_a_token() -> None:
    app = Handled(keyring([key_entry("bob", "ops", BOB)], burst=2), "finance")
    assert app.get(BOB)[:2] == (403, {"detail": "role ops may not do this"})
    assert app.get(BOB)[0] == 403
    assert app.get(BOB)[0] == 429
    assert app.calls == 0


def test_concurrent_requests_get_exactly_the_burst_while_the_clock_stands_still() -> None:
    # Switching threads every microsecond makes a read-modify-write race show up if unlocked.
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    limiter = KeyRateLimiter(per_second=1, burst=2000, clock=FakeClock())
    admitted: list[int] = []
    start = threading.Barrier(8)

    def hammer() -> None:
        start.wait()
        for _ in range(500):
            try:
                limiter.take("alice")
            except RateLimitExceeded:
                continue
            admitted.append(1)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(previous)
    assert len(admitted) == 2000


def test_each_burst_of_refusals_is_logged_once_by_name() -> None:
    clock = FakeClock()
    limiter = KeyRateLimiter(per_second=1, burst=1, clock=clock)
    with capture_logs() as logs:
        for _burst in range(2):
            limiter.take("alice")
            for _ in range(5):
                with pytest.raises(RateLimitExceeded):
                    limiter.take("alice")
            clock.advance(1)
    assert [(entry["event"], entry["key_name"]) for entry in logs] == [
        ("API rate limit exceeded", "alice"),
        ("API rate limit exceeded", "alice"),
    ]


@pytest.mark.parametrize(("per_second", "burst"), [(0, 40), (-1, 40), (20, 0)])
def test_a_limit_that_admits_nothing_is_refused_at_start_up(per_second: float, burst: int) -> None:
    with pytest.raises(ValueError, match="API rate"):
        KeyRateLimiter(per_second, burst)


def test_rate_limit_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LEDGERBRIDGE_API_RATE_LIMIT_PER_SECOND", raising=False)
    monkeypatch.delenv("LEDGERBRIDGE_API_RATE_BURST", raising=False)
    defaults = Settings()
    assert (defaults.api_rate_limit_per_second, defaults.api_rate_burst) == (20.0, 40)
    monkeypatch.setenv("LEDGERBRIDGE_API_RATE_LIMIT_PER_SECOND", "0.5")
    monkeypatch.setenv("LEDGERBRIDGE_API_RATE_BURST", "1")
    monkeypatch.setenv("LEDGERBRIDGE_API_KEYS", f'["{key_entry("alice", "ops", ALICE_OLD)}"]')
    ring = ApiKeyring.from_settings(Settings())
    ring.rate_limiter.take("alice")
    with pytest.raises(RateLimitExceeded) as raised:
        ring.rate_limiter.take("alice")
    assert raised.value.retry_after == 2


def test_rate_limit_settings_must_be_positive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGERBRIDGE_API_RATE_BURST", "0")
    with pytest.raises(ValueError, match="api_rate_burst"):
        Settings()


def test_time_passing_alone_does_not_expire_a_key_without_an_expiry() -> None:
    now = FakeNow(MIDYEAR)
    ring = ApiKeyring([key_entry("alice", "finance", ALICE_OLD)], now=now)
    now.at += timedelta(days=365 * 50)
    assert ring.authenticate(ALICE_OLD) is not None
