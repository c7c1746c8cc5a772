"""Signing in to the codec endpoint from a browser: the Temporal Web UI sends cookies, never our
API key, so an operator signs in once at /codec/login and the session cookie decodes."""

from __future__ import annotations

import base64
import json
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from google.protobuf import json_format
from httpx import Response
from pydantic import SecretStr
from structlog.testing import capture_logs
from temporalio.api.common.v1 import Payload

from adapters.bootstrap import build_store
from adapters.codec import AesGcmCodec, new_key_entry
from adapters.settings import Settings
from adapters.store import IntegrationStore
from starters.api import create_app
from starters.api.auth import ApiKeyring, ApiPrincipal, key_entry
from starters.api.codec_session import COOKIE_NAME, CodecSessions

PAYLOAD_KEY = new_key_entry("k1")
OPS_KEY = "lb_test_ops_f3b9c2d17e"
ADMIN_KEY = "lb_test_finance_admin_8a6e0c"
SUPPORT_KEY = "lb_test_support_55d1a0b2"
NEW_OPS_KEY = "lb_test_ops_rotated_c0ffee"
ALL_KEYS = (OPS_KEY, ADMIN_KEY, SUPPORT_KEY, NEW_OPS_KEY)
SECRET = "codec-session-secret-for-tests-0123456789"
UI = "http://127.0.0.1:8233"
NAME = "Philippa Vandersloot"
KEYS = [
    key_entry("ops-1", "ops", OPS_KEY),
    key_entry("admin-1", "finance_admin", ADMIN_KEY),
    key_entry("sup-1", "support", SUPPORT_KEY),
]


def settings_for(tmp_path: Path, api_keys: list[str] = KEYS, **more: Any) -> Settings:
    values: dict[str, Any] = {
        "store_url": f"sqlite:///{tmp_path / 's.sqlite'}",
        "api_keys": api_keys,
        "payload_keys": [SecretStr(PAYLOAD_KEY)],
        "codec_session_secret": SecretStr(SECRET),
        **more,
    }
    return Settings(**values)


def started(
    settings: Settings, base_url: str = "http://testserver"
) -> tuple[TestClient, IntegrationStore]:
    store = build_store(settings)
    store.migrate()
    return TestClient(create_app(settings, store), base_url=base_url), store


def sign_in(client: TestClient, key: str) -> Response:
    return client.post("/codec/login", data={"api_key": key})


def cookie_of(response: Response) -> str:
    header = response.headers["set-cookie"]
    assert header.startswith(f"{COOKIE_NAME}="), header
    return header.split(";", 1)[0].split("=", 1)[1]


async def sealed_payload() -> dict[str, Any]:
    payload = Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(NAME).encode())
    [sealed] = await AesGcmCodec.from_entries([PAYLOAD_KEY]).encode([payload])
    return {"payloads": [json_format.MessageToDict(sealed)]}


def decode_with_cookie(
    client: TestClient, token: str, body: dict[str, Any], origin: str | None = UI
) -> Response:
    """Only the cookie: no Authorization header, as the Web UI sends it."""
    headers = {"Cookie": f"{COOKIE_NAME}={token}", "X-Namespace": "default"}
    if origin is not None:
        headers["Origin"] = origin
    return client.post("/codec/decode", json=body, headers=headers)


def decoded_name(response: Response) -> str:
    assert response.status_code == 200, response.text
    [item] = response.json()["payloads"]
    return str(json.loads(base64.b64decode(item["data"])))


def token_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


def assert_no_key_in(text: str) -> None:
    for key in ALL_KEYS:
        assert key not in text
        assert base64.b64encode(key.encode()).decode().rstrip("=") not in text


# --- the sign-in page -----------------------------------------------------------------


def test_the_sign_in_page_is_a_self_contained_form_asking_for_an_api_key(tmp_path: Path) -> None:
    client, _store = started(settings_for(tmp_path))
    page = client.get("/codec/login")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'name="api_key"' in page.text and 'method="post"' in page.text
    assert "<script" not in page.text and "src=" not in page.text and "https://" not in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert "set-cookie" not in page.headers


async def test_an_ops_key_signs_in_and_the_cookie_alone_decodes_a_payload(tmp_path: Path) -> None:
    client, store = started(settings_for(tmp_path))
    body = await sealed_payload()
    with capture_logs() as logs:
        signed_in = client.post(
            "/codec/login", data={"api_key": OPS_KEY}, headers={"X-Correlation-Id": "corr-login"}
        )
        assert signed_in.status_code == 200, signed_in.text
        assert "ops-1" in signed_in.text and "Include cross-origin credentials" in signed_in.text
        token = cookie_of(signed_in)
        # A fresh client holding only the cookie value: the session is in the cookie.
        decoded = decode_with_cookie(started(settings_for(tmp_path))[0], token, body)
    assert decoded_name(decoded) == NAME
    assert decoded.headers["access-control-allow-origin"] == UI
    assert decoded.headers["access-control-allow-credentials"] == "true"

    attributes = [part.strip().lower() for part in signed_in.headers["set-cookie"].split(";")]
    assert {"httponly", "samesite=lax", "path=/codec", "max-age=28800"} <= set(attributes)
    assert "secure" not in attributes  # plain http: a Secure cookie would never come back
    claims = token_claims(token)
    assert (claims["n"], claims["r"]) == ("ops-1", "ops")
    assert 0 < claims["x"] - time.time() <= 8 * 3600
    assert_no_key_in(token + json.dumps(claims) + json.dumps(logs))
    assert [e["key_name"] for e in logs if e["event"] == "codec decode"] == ["ops-1"]

    [entry] = store.audit_entries("codec/session")
    assert (entry.action, entry.actor, entry.role) == ("codec.signed_in", "ops-1", "ops")
    assert entry.correlation_id == "corr-login"
    assert_no_key_in(json.dumps(entry.details))


async def test_the_browser_keeps_the_cookie_for_the_codec_path_and_sends_it_back(
    tmp_path: Path,
) -> None:
    client, _store = started(settings_for(tmp_path))
    assert sign_in(client, ADMIN_KEY).status_code == 200
    # The client's own cookie jar, as a browser would (domain, path /codec, not Secure).
    decoded = client.post("/codec/decode", json=await sealed_payload(), headers={"Origin": UI})
    assert decoded_name(decoded) == NAME
    assert "Signed in as <strong>admin-1</strong>" in client.get("/codec/login").text


def test_over_https_the_cookie_is_secure(tmp_path: Path) -> None:
    client, _store = started(settings_for(tmp_path), base_url="https://codec.example")
    signed_in = sign_in(client, OPS_KEY)
    attributes = [part.strip().lower() for part in signed_in.headers["set-cookie"].split(";")]
    assert "secure" in attributes
    assert "https://codec.example/codec" in signed_in.text  # the endpoint to give the Web UI


def test_behind_a_tls_proxy_the_cookie_can_be_made_secure_always(tmp_path: Path) -> None:
    client, _store = started(settings_for(tmp_path, codec_cookie_always_secure=True))
    signed_in = sign_in(client, OPS_KEY)  # plain http, as a TLS-ending proxy forwards it
    attributes = [part.strip().lower() for part in signed_in.headers["set-cookie"].split(";")]
    assert "secure" in attributes


@pytest.mark.parametrize(
    ("api_keys", "key", "status", "reason", "actor"),
    [
        (KEYS, SUPPORT_KEY, 403, "role support may not do this", "sup-1"),
        (KEYS, "lb_not_a_configured_key", 401, "missing or unknown API key", "unknown"),
        (KEYS, "", 401, "missing or unknown API key", "unknown"),
        (
            [key_entry("ops-1", "ops", OPS_KEY, date(2020, 1, 31))],
            OPS_KEY,
            401,
            "API key expired on 2020-01-31",
            "ops-1",
        ),
    ],
    ids=["wrong-role", "unknown-key", "no-key", "expired-key"],
)
def test_a_refused_sign_in_sets_no_cookie_and_is_audited_or_logged_without_the_key(
    tmp_path: Path, api_keys: list[str], key: str, status: int, reason: str, actor: str
) -> None:
    client, store = started(settings_for(tmp_path, api_keys))
    with capture_logs() as logs:
        refused = sign_in(client, key)
    assert refused.status_code == status
    assert "set-cookie" not in refused.headers
    assert reason in refused.text and 'name="api_key"' in refused.text  # the form, again
    entries = store.audit_entries("codec/session")
    if status != 403:  # unknown, expired: logged only, so no loop can grow the audit trail
        assert entries == []
    else:
        [entry] = entries
        assert (entry.action, entry.actor) == ("codec.sign_in_refused", actor)
        assert entry.details == {"status": status, "reason": reason}
    [line] = [e for e in logs if e["event"] == "codec sign-in refused"]
    assert line["status"] == status
    assert_no_key_in(refused.text + json.dumps(logs) + json.dumps([e.details for e in entries]))


def test_sign_in_spends_the_key_names_rate_limit(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, api_rate_limit_per_second=0.01, api_rate_burst=1)
    client, _store = started(settings)
    assert sign_in(client, OPS_KEY).status_code == 200
    limited = sign_in(client, OPS_KEY)
    assert limited.status_code == 429 and "set-cookie" not in limited.headers
    assert int(limited.headers["retry-after"]) >= 1


# --- the session at each use ----------------------------------------------------------


def reencoded(token: str, **changes: Any) -> str:
    """The token with its claims changed and its signature kept."""
    version, _payload, signature = token.split(".")
    claims = {**token_claims(token), **changes}
    raw = json.dumps(claims, separators=(",", ":")).encode()
    return f"{version}.{base64.urlsafe_b64encode(raw).rstrip(b'=').decode()}.{signature}"


async def test_a_tampered_or_foreign_signed_cookie_is_refused_401(tmp_path: Path) -> None:
    client, _store = started(settings_for(tmp_path))
    body = await sealed_payload()
    token = cookie_of(sign_in(client, OPS_KEY))
    assert decoded_name(decode_with_cookie(client, token, body)) == NAME  # the control

    flipped = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    longer = reencoded(token, x=token_claims(token)["x"] + 86400)
    other_name = reencoded(token, n="admin-1", r="finance_admin")
    ring = ApiKeyring(KEYS)
    foreign = CodecSessions(ring, b"another-secret-of-at-least-32-chars!!", 3600)
    forged = foreign.issue(OPS_KEY, ApiPrincipal("ops-1", "ops")).token
    for bad in (flipped, longer, other_name, forged, "v1.e30.", "garbage", "v2." + token[3:]):
        refused = decode_with_cookie(client, bad, body)
        assert refused.status_code == 401, (bad, refused.text)
        assert "not recognised" in refused.json()["error"] and NAME not in refused.text


async def test_an_expired_session_is_refused_401(tmp_path: Path) -> None:
    client, _store = started(settings_for(tmp_path))
    ring = ApiKeyring(KEYS)
    nine_hours_ago = CodecSessions(
        ring, SECRET.encode(), 8 * 3600, clock=lambda: time.time() - 9 * 3600
    )
    expired = nine_hours_ago.issue(OPS_KEY, ApiPrincipal("ops-1", "ops")).token
    body = await sealed_payload()
    refused = decode_with_cookie(client, expired, body)
    assert refused.status_code == 401 and "expired" in refused.json()["error"]
    one_hour_ago = CodecSessions(ring, SECRET.encode(), 8 * 3600, clock=lambda: time.time() - 3600)
    fresh = one_hour_ago.issue(OPS_KEY, ApiPrincipal("ops-1", "ops")).token
    assert decoded_name(decode_with_cookie(client, fresh, body)) == NAME  # the control


async def test_a_session_ends_when_its_key_leaves_the_keyring_or_expires(tmp_path: Path) -> None:
    token = cookie_of(sign_in(started(settings_for(tmp_path))[0], OPS_KEY))
    body = await sealed_payload()
    # After a restart with the same secret and keys the session still holds...
    same = started(settings_for(tmp_path))[0]
    assert decoded_name(decode_with_cookie(same, token, body)) == NAME
    # ...but not once ops-1's key was rotated out, though the name ops-1 stays configured...
    rotated = [key_entry("ops-1", "ops", NEW_OPS_KEY), *KEYS[1:]]
    gone = decode_with_cookie(started(settings_for(tmp_path, rotated))[0], token, body)
    assert gone.status_code == 401 and "no longer configured" in gone.json()["error"]
    # ...nor once the key expired, nor when its entry now holds another role.
    expiring = [key_entry("ops-1", "ops", OPS_KEY, date(2020, 1, 31)), *KEYS[1:]]
    expired = decode_with_cookie(started(settings_for(tmp_path, expiring))[0], token, body)
    assert expired.status_code == 401 and "expired on 2020-01-31" in expired.json()["error"]
    demoted = [key_entry("ops-1", "support", OPS_KEY), *KEYS[1:]]
    other_role = decode_with_cookie(started(settings_for(tmp_path, demoted))[0], token, body)
    assert other_role.status_code == 401
    assert NAME not in gone.text + expired.text + other_role.text


async def test_without_a_configured_secret_sessions_end_with_the_process(tmp_path: Path) -> None:
    first = started(settings_for(tmp_path, codec_session_secret=None))[0]
    token = cookie_of(sign_in(first, OPS_KEY))
    body = await sealed_payload()
    assert decoded_name(decode_with_cookie(first, token, body)) == NAME
    restarted = started(settings_for(tmp_path, codec_session_secret=None))[0]
    assert decode_with_cookie(restarted, token, body).status_code == 401


async def test_a_cookie_request_from_another_origin_is_refused_403(tmp_path: Path) -> None:
    client, _store = started(settings_for(tmp_path))
    token = cookie_of(sign_in(client, OPS_KEY))
    body = await sealed_payload()
    for origin in ("https://evil.example", "http://127.0.0.1:8080", "null", None):
        refused = decode_with_cookie(client, token, body, origin=origin)
        assert refused.status_code == 403, origin
        assert "access-control-allow-origin" not in refused.headers
        assert NAME not in refused.text
    # The CSRF guard is for the cookie: a Bearer key is the caller's own choice.
    bearer = client.post("/codec/decode", json=body, headers={"Authorization": f"Bearer {OPS_KEY}"})
    assert decoded_name(bearer) == NAME


async def test_a_bearer_the_keyring_does_not_know_defers_to_the_cookie(tmp_path: Path) -> None:
    """With "Pass the user access token" ticked the UI sends its own OIDC token as Bearer."""
    client, _store = started(settings_for(tmp_path))
    token = cookie_of(sign_in(client, OPS_KEY))
    headers = {
        "Authorization": "Bearer eyJhbGciOiJSUzI1NiJ9.oidc.token",
        "Cookie": f"{COOKIE_NAME}={token}",
        "Origin": UI,
    }
    decoded = client.post("/codec/decode", json=await sealed_payload(), headers=headers)
    assert decoded_name(decoded) == NAME
    support = {**headers, "Authorization": f"Bearer {SUPPORT_KEY}"}  # ours: no fallback
    assert client.post("/codec/decode", json={"payloads": []}, headers=support).status_code == 403


async def test_signing_out_clears_the_cookie_and_is_audited(tmp_path: Path) -> None:
    client, store = started(settings_for(tmp_path))
    assert sign_in(client, OPS_KEY).status_code == 200
    signed_out = client.post("/codec/logout")
    assert signed_out.status_code == 200
    attributes = [p.strip().lower() for p in signed_out.headers["set-cookie"].split(";")]
    assert f"{COOKIE_NAME}=" in signed_out.headers["set-cookie"]
    assert "max-age=0" in attributes and "path=/codec" in attributes
    after = client.post("/codec/decode", json=await sealed_payload(), headers={"Origin": UI})
    assert after.status_code == 401
    actions = [(e.action, e.actor) for e in store.audit_entries("codec/session")]
    assert actions == [("codec.signed_in", "ops-1"), ("codec.signed_out", "ops-1")]


# --- CORS -----------------------------------------------------------------------------


def test_the_web_ui_preflight_allows_credentials_and_the_headers_the_ui_sends(
    tmp_path: Path,
) -> None:
    client, _store = started(settings_for(tmp_path))
    # What the UI's fetch() asks for: its codec call with "Pass the user access token" on.
    asks = {
        "Origin": UI,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,authorization-extras,content-type,"
        "x-namespace",
    }
    for action in ("decode", "encode"):
        preflight = client.options(f"/codec/{action}", headers=asks)
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == UI
        assert preflight.headers["access-control-allow-credentials"] == "true"
        allowed = {
            h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")
        }
        assert set(asks["Access-Control-Request-Headers"].split(",")) <= allowed
        assert "origin" in preflight.headers["vary"].lower()
    foreign = client.options("/codec/decode", headers={**asks, "Origin": "https://evil.example"})
    assert "access-control-allow-credentials" not in foreign.headers


# --- settings -------------------------------------------------------------------------


def test_the_session_secret_comes_from_the_environment_or_a_file_and_must_be_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "secret").write_text(SECRET + "\n")
    monkeypatch.setenv("LEDGERBRIDGE_CODEC_SESSION_SECRET_FILE", str(tmp_path / "secret"))
    monkeypatch.setenv("LEDGERBRIDGE_CODEC_SESSION_MAX_AGE_SECONDS", "600")
    from_file = Settings()
    assert from_file.codec_session_secret == SecretStr(SECRET)
    assert from_file.codec_session_max_age_seconds == 600
    assert SECRET not in repr(from_file)
    assert from_file.to_env()["LEDGERBRIDGE_CODEC_SESSION_SECRET"] == SECRET  # to child processes
    with pytest.raises(ValueError, match="at least 32 characters") as short:
        started(settings_for(tmp_path, codec_session_secret=SecretStr("short-secret")))
    assert "short-secret" not in str(short.value)


def test_the_max_age_setting_sets_the_cookie_and_the_session_expiry(tmp_path: Path) -> None:
    client, _store = started(settings_for(tmp_path, codec_session_max_age_seconds=600))
    signed_in = sign_in(client, OPS_KEY)
    assert "max-age=600" in signed_in.headers["set-cookie"].lower()
    assert 0 < token_claims(cookie_of(signed_in))["x"] - time.time() <= 600


def test_signing_out_without_a_session_audits_nothing(tmp_path: Path) -> None:
    client, store = started(settings_for(tmp_path))
    assert client.post("/codec/logout").status_code == 200  # nobody signed in: nothing audited
    assert store.audit_entries("codec/session") == []


def test_another_sites_page_can_neither_sign_in_nor_sign_out(tmp_path: Path) -> None:
    """Login and logout CSRF: a form posted from a foreign page is refused."""
    client, store = started(settings_for(tmp_path))
    foreign = {"Origin": "https://elsewhere.example"}
    refused = client.post("/codec/login", data={"api_key": OPS_KEY}, headers=foreign)
    assert refused.status_code == 403 and "set-cookie" not in refused.headers
    own = {"Origin": "http://testserver"}  # the API's own page
    signed_in = client.post("/codec/login", data={"api_key": OPS_KEY}, headers=own)
    assert signed_in.status_code == 200 and "set-cookie" in signed_in.headers
    assert client.post("/codec/logout", headers=foreign).status_code == 403
    actions = [e.action for e in store.audit_entries("codec/session")]
    assert actions == ["codec.signed_in"]


def test_a_sign_in_form_with_too_many_fields_is_a_clean_refusal(tmp_path: Path) -> None:
    client, _store = started(settings_for(tmp_path))
    crowded = client.post("/codec/login", data={f"f{n}": "x" for n in range(20)})
    assert crowded.status_code == 400 and "set-cookie" not in crowded.headers
