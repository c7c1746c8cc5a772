"""AES-GCM payload codec: round trip, fresh nonces, tampering, key rotation, configuration,
and the codec endpoint the Temporal Web UI calls."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from google.protobuf import json_format
from pydantic import SecretStr
from structlog.testing import capture_logs
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.exceptions import ApplicationError

from adapters.codec import (
    ENCODING,
    KEY_ID_KEY,
    NONCE_BYTES,
    AesGcmCodec,
    PayloadDecryptionError,
    PayloadKeyError,
    codec_from_settings,
    new_key_entry,
)
from adapters.settings import Settings
from adapters.temporal import data_converter
from canonical import Customer, Money
from starters.api import create_app
from starters.api.auth import key_entry

K1 = new_key_entry("k1")
K2 = new_key_entry("k2")
NAME, EMAIL, AMOUNT = "Philippa Vandersloot", "philippa@vandersloot.example", "8731.46"
UI = "http://127.0.0.1:8233"


def customer() -> Customer:
    return Customer(customer_id="cus_P1", name=NAME, email=EMAIL, currency="USD")


def plain(value: str) -> Payload:
    return Payload(metadata={"encoding": b"json/plain"}, data=json.dumps(value).encode())


def key_material(entry: str) -> str:
    return entry.split(":", 1)[1]


async def test_pydantic_values_round_trip_and_the_stored_bytes_hold_no_plaintext() -> None:
    converter = data_converter(AesGcmCodec.from_entries([K1]))
    values = [customer(), Money.of(AMOUNT, "USD")]
    encoded = await converter.encode(values)
    for payload in encoded:
        assert dict(payload.metadata) == {"encoding": ENCODING, KEY_ID_KEY: b"k1"}
        for secret in (NAME, EMAIL, AMOUNT, "json/plain", "cus_P1"):
            assert secret.encode() not in payload.SerializeToString()
    assert await converter.decode(encoded, [Customer, Money]) == values


async def test_every_payload_gets_a_fresh_nonce_so_equal_values_encrypt_differently() -> None:
    codec = AesGcmCodec.from_entries([K1])
    encoded = await codec.encode([plain(NAME)] * 200)
    assert len({p.data[:NONCE_BYTES] for p in encoded}) == 200
    assert len({p.data for p in encoded}) == 200
    assert await codec.decode(encoded) == [plain(NAME)] * 200


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda d: d[:-1] + bytes([d[-1] ^ 1]), id="tag"),
        pytest.param(lambda d: d[:20] + bytes([d[20] ^ 1]) + d[21:], id="ciphertext"),
        pytest.param(lambda d: bytes([d[0] ^ 1]) + d[1:], id="nonce"),
        pytest.param(lambda d: d[:NONCE_BYTES], id="truncated"),
    ],
)
async def test_a_tampered_payload_is_refused_naming_its_key_id(tamper: object) -> None:
    codec = AesGcmCodec.from_entries([K1])
    [payload] = await codec.encode([plain(AMOUNT)])
    payload.data = tamper(payload.data)  # type: ignore[operator]
    with pytest.raises(PayloadDecryptionError, match="'k1'"):
        await codec.decode([payload])


async def test_relabelling_a_payload_with_another_configured_key_id_is_refused() -> None:
    codec = AesGcmCodec.from_entries([K2, K1])
    [payload] = await codec.encode([plain(AMOUNT)])
    payload.metadata[KEY_ID_KEY] = b"k1"
    with pytest.raises(PayloadDecryptionError, match="failed authentication"):
        await codec.decode([payload])


async def test_after_rotation_old_payloads_decode_and_new_ones_carry_the_new_key_id() -> None:
    before = AesGcmCodec.from_entries([K1])
    written_before = await before.encode([plain(NAME)])
    after = AesGcmCodec.from_entries([K2, K1])
    assert after.current_key_id == "k2"
    assert await after.decode(written_before) == [plain(NAME)]
    written_after = await after.encode([plain(EMAIL)])
    assert written_after[0].metadata[KEY_ID_KEY] == b"k2"
    # Old workers that only know k1 cannot read k2: deploy the new key as second first.
    with pytest.raises(PayloadDecryptionError, match="'k2'"):
        await before.decode(written_after)


async def test_a_payload_under_an_unknown_key_id_names_that_id_and_never_a_key() -> None:
    [payload] = await AesGcmCodec.from_entries([K1]).encode([plain(AMOUNT)])
    with pytest.raises(PayloadDecryptionError) as refused:
        await AesGcmCodec.from_entries([K2]).decode([payload])
    message = str(refused.value)
    assert "'k1'" in message and "configured: k2" in message
    assert key_material(K1) not in message and key_material(K2) not in message


async def test_payloads_that_are_not_encrypted_pass_through_decode_unchanged() -> None:
    codec = AesGcmCodec.from_entries([K1])
    untouched = [plain(NAME), Payload(metadata={"encoding": b"binary/null"})]
    assert await codec.decode(untouched) == untouched


async def test_with_keys_failure_messages_are_encrypted_too() -> None:
    converter = data_converter(AesGcmCodec.from_entries([K1]))
    failure = Failure()
    await converter.encode_failure(
        ApplicationError(f"credit of {AMOUNT} refused for {NAME}"), failure
    )
    assert NAME.encode() not in failure.SerializeToString()
    assert AMOUNT.encode() not in failure.SerializeToString()
    assert failure.encoded_attributes.metadata[KEY_ID_KEY] == b"k1"
    error = await converter.decode_failure(failure)
    assert str(error) == f"credit of {AMOUNT} refused for {NAME}"


def test_without_keys_there_is_no_codec_and_the_converter_stays_plain_pydantic() -> None:
    assert codec_from_settings(Settings(payload_keys=[])) is None
    assert data_converter(None).payload_codec is None


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("no-colon-here", "entry #1: expected id:base64key"),
        ("k1:not base64!", "'k1': the key is not valid base64"),
        (f"k1:{base64.b64encode(os.urandom(16)).decode()}", "'k1' must be 32 bytes, not 16"),
        (f"bad id:{key_material(K1)}", "entry #1"),
    ],
    ids=["no colon", "not base64", "16 bytes", "space in id"],  # stable under pytest-xdist
)
def test_a_malformed_key_entry_fails_at_start_up_without_quoting_the_key(
    entry: str, expected: str
) -> None:
    with pytest.raises(PayloadKeyError) as refused:
        AesGcmCodec.from_entries([entry])
    assert expected in str(refused.value)
    assert entry.split(":", 1)[-1] not in str(refused.value)


def test_one_key_id_configured_twice_is_refused() -> None:
    with pytest.raises(PayloadKeyError, match="'k1' is configured twice"):
        AesGcmCodec.from_entries([K1, new_key_entry("k1")])


def test_keys_come_from_the_environment_or_a_file_and_never_show_in_a_repr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGERBRIDGE_PAYLOAD_KEYS", json.dumps([K2, K1]))
    from_env = Settings()
    codec = codec_from_settings(from_env)
    assert codec is not None and codec.key_ids == ["k2", "k1"]
    monkeypatch.delenv("LEDGERBRIDGE_PAYLOAD_KEYS")
    (tmp_path / "keys").write_text(f"{K2}\n{K1}\n")
    monkeypatch.setenv("LEDGERBRIDGE_PAYLOAD_KEYS_FILE", str(tmp_path / "keys"))
    from_file = Settings()
    assert from_file.payload_keys == from_env.payload_keys
    for shown in (repr(from_file), repr(codec_from_settings(from_file))):
        assert key_material(K1) not in shown and key_material(K2) not in shown


# --- the codec endpoint -----------------------------------------------------------------

OPS_KEY, SUPPORT_KEY = "lb_test_ops", "lb_test_support"


def api(tmp_path: Path, *payload_keys: str) -> TestClient:
    settings = Settings(
        store_url=f"sqlite:///{tmp_path / 's.sqlite'}",
        api_keys=[key_entry("ops-1", "ops", OPS_KEY), key_entry("sup-1", "support", SUPPORT_KEY)],
        payload_keys=[SecretStr(k) for k in payload_keys],
    )
    return TestClient(create_app(settings))


def as_json(*payloads: Payload) -> dict[str, object]:
    return {"payloads": [json_format.MessageToDict(p) for p in payloads]}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "X-Namespace": "default", "Origin": UI}


async def test_the_endpoint_decodes_and_encodes_in_the_codec_server_json_shape(
    tmp_path: Path,
) -> None:
    [sealed] = await AesGcmCodec.from_entries([K1]).encode([plain(NAME)])
    client = api(tmp_path, K1)
    with capture_logs() as logs:
        decoded = client.post("/codec/decode", json=as_json(sealed), headers=bearer(OPS_KEY))
    assert decoded.status_code == 200, decoded.text
    [item] = decoded.json()["payloads"]
    assert base64.b64decode(item["metadata"]["encoding"]) == b"json/plain"
    assert json.loads(base64.b64decode(item["data"])) == NAME
    assert decoded.headers["access-control-allow-origin"] == UI
    assert NAME not in json.dumps(logs) and logs[-1]["key_name"] == "ops-1"

    encoded = client.post("/codec/encode", json=decoded.json(), headers=bearer(OPS_KEY))
    assert encoded.status_code == 200
    [again] = encoded.json()["payloads"]
    assert base64.b64decode(again["metadata"][KEY_ID_KEY]) == b"k1"
    assert NAME.encode() not in base64.b64decode(again["data"])


async def test_the_endpoint_refuses_without_a_key_or_with_another_role_and_the_ui_sees_why(
    tmp_path: Path,
) -> None:
    [sealed] = await AesGcmCodec.from_entries([K1]).encode([plain(NAME)])
    client = api(tmp_path, K1)
    anonymous = client.post("/codec/decode", json=as_json(sealed), headers={"Origin": UI})
    assert (anonymous.status_code, anonymous.json()) == (
        401,
        {"error": "missing or unknown API key"},
    )
    assert anonymous.headers["access-control-allow-origin"] == UI
    support = client.post("/codec/decode", json=as_json(sealed), headers=bearer(SUPPORT_KEY))
    assert support.status_code == 403
    assert NAME not in anonymous.text + support.text


async def test_the_endpoint_answers_bad_input_and_unknown_keys_with_400(tmp_path: Path) -> None:
    [sealed] = await AesGcmCodec.from_entries([K2]).encode([plain(NAME)])
    client = api(tmp_path, K1)
    unknown = client.post("/codec/decode", json=as_json(sealed), headers=bearer(OPS_KEY))
    assert unknown.status_code == 400 and "'k2'" in unknown.json()["error"]
    garbage = client.post("/codec/decode", content=b"{not json", headers=bearer(OPS_KEY))
    assert garbage.status_code == 400


def test_the_web_ui_preflight_is_allowed_only_from_configured_origins(tmp_path: Path) -> None:
    client = api(tmp_path, K1)
    asks = {"Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-namespace"}  # fmt: skip
    allowed = client.options("/codec/decode", headers={**asks, "Origin": UI})
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == UI
    assert "X-Namespace" in allowed.headers["access-control-allow-headers"]
    assert "POST" in allowed.headers["access-control-allow-methods"]
    other = client.options("/codec/decode", headers={**asks, "Origin": "https://evil.example"})
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers


def test_without_payload_keys_there_is_no_codec_endpoint(tmp_path: Path) -> None:
    response = api(tmp_path).post("/codec/decode", json={"payloads": []}, headers=bearer(OPS_KEY))
    assert response.status_code == 404
