"""Payload encryption: AES-256-GCM on every payload Temporal stores, keys rotated by id.

Keys are configured as `id:base64key` entries (LEDGERBRIDGE_PAYLOAD_KEYS), 32 bytes each; the
first entry is the current key. Every payload is encrypted with the current key; a payload is
decrypted with whichever configured key its `encryption-key-id` names, so after a rotation
(new key first, old keys kept) histories written under the old key still read.

An encrypted payload carries only:
    metadata  encoding=binary/encrypted, encryption-key-id=<id>
    data      12-byte nonce || AES-GCM(serialized original payload), key id as associated data
The original metadata (json/plain, message type) is inside the ciphertext, so the server sees
neither the values nor what kind of values they are.

Key material never appears in a repr, a log line or an error; key ids do (they are not secret).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

if TYPE_CHECKING:
    from adapters.settings import Settings

ENCODING = b"binary/encrypted"
ENCODING_KEY = "encoding"
KEY_ID_KEY = "encryption-key-id"
KEY_BYTES = 32
NONCE_BYTES = 12
_KEY_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


class PayloadKeyError(ValueError):
    """A payload key entry is malformed (raised at start-up, never naming key material)."""


class PayloadDecryptionError(ValueError):
    """An encrypted payload could not be decrypted: unknown key id, tampered or truncated."""


class AesGcmCodec(PayloadCodec):
    """Encrypts with the first key, decrypts with any key by id; plain payloads pass through."""

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise PayloadKeyError("payload encryption needs at least one key")
        self._keys: dict[str, AESGCM] = {}
        for key_id, key in keys:
            if not _KEY_ID.match(key_id):
                raise PayloadKeyError(
                    "payload key id must be 1-64 of A-Z a-z 0-9 . _ - "
                    f"(entry #{len(self._keys) + 1})"
                )
            if key_id in self._keys:
                raise PayloadKeyError(f"payload key id {key_id!r} is configured twice")
            if len(key) != KEY_BYTES:
                raise PayloadKeyError(
                    f"payload key {key_id!r} must be {KEY_BYTES} bytes, not {len(key)}"
                )
            self._keys[key_id] = AESGCM(key)
        self.current_key_id = keys[0][0]

    @classmethod
    def from_entries(cls, entries: Sequence[str]) -> AesGcmCodec:
        """From `id:base64key` lines, the first being the current key."""
        return cls([_parse_entry(entry, position) for position, entry in enumerate(entries)])

    @property
    def key_ids(self) -> list[str]:
        return list(self._keys)

    def __repr__(self) -> str:
        return f"AesGcmCodec(current={self.current_key_id!r}, keys={self.key_ids!r})"

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        key_id = self.current_key_id
        nonce = os.urandom(NONCE_BYTES)  # fresh per payload: a repeated nonce breaks GCM
        sealed = self._keys[key_id].encrypt(nonce, payload.SerializeToString(), key_id.encode())
        return Payload(
            metadata={ENCODING_KEY: ENCODING, KEY_ID_KEY: key_id.encode()},
            data=nonce + sealed,
        )

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get(ENCODING_KEY) != ENCODING:
            return payload  # written before encryption was switched on, or never encoded
        raw_id = payload.metadata.get(KEY_ID_KEY)
        if raw_id is None:
            raise PayloadDecryptionError(f"encrypted payload has no {KEY_ID_KEY} metadata")
        key_id = raw_id.decode(errors="replace")
        aead = self._keys.get(key_id)
        if aead is None:
            raise PayloadDecryptionError(
                f"payload is encrypted with key id {key_id!r}, which is not configured "
                f"(configured: {', '.join(self._keys)}); add that key to "
                "LEDGERBRIDGE_PAYLOAD_KEYS after the current one"
            )
        data = payload.data
        if len(data) <= NONCE_BYTES:
            raise PayloadDecryptionError(f"payload under key id {key_id!r} is truncated")
        try:
            plain = aead.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], raw_id)
        except InvalidTag:
            raise PayloadDecryptionError(
                f"payload under key id {key_id!r} failed authentication (tampered, or another "
                "key under the same id)"
            ) from None
        original = Payload()
        original.ParseFromString(plain)
        return original


def codec_from_settings(settings: Settings) -> AesGcmCodec | None:
    """The codec when payload keys are configured; None keeps payloads in plain JSON."""
    if not settings.payload_keys:
        return None
    return AesGcmCodec.from_entries([k.get_secret_value() for k in settings.payload_keys])


def new_key_entry(key_id: str) -> str:
    """A fresh `id:base64key` entry (for operators and tests)."""
    return f"{key_id}:{base64.b64encode(os.urandom(KEY_BYTES)).decode()}"


def _parse_entry(entry: str, position: int) -> tuple[str, bytes]:
    key_id, sep, encoded = entry.strip().partition(":")
    if not sep or not key_id.strip():
        # Without a colon the entry may be a bare key: name it by position only.
        raise PayloadKeyError(f"payload key entry #{position + 1}: expected id:base64key")
    key_id = key_id.strip()
    shown = repr(key_id) if _KEY_ID.match(key_id) else f"entry #{position + 1}"
    try:
        key = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise PayloadKeyError(f"payload key {shown}: the key is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise PayloadKeyError(f"payload key {shown} must be {KEY_BYTES} bytes, not {len(key)}")
    return key_id, key
