"""Contact data (name, email, phone) encrypted at rest with AES-256-GCM.

Each stored value is `v1:<key id>:<base64(nonce | ciphertext+tag)>`; the column name is
the associated data, so a value cannot be moved to another column unnoticed. Several
keys may be configured; new values use the active one, old values keep naming theirs
until `python -m server.rotate_contact_keys` re-encrypts them. Look-ups use a keyed
hash (HMAC-SHA256) of the normalized value, never the value.

Keys come from settings, never from the repository:

    CONTACT_KEYS      "id=base64key,id2=base64key2" (32-byte keys)
    CONTACT_KEY_ID    the id new values are encrypted with
    CONTACT_HASH_KEY  base64 key of the look-up hash
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PREFIX = "v1"


class ContactKeyError(ValueError):
    pass


class ContactCipher:
    def __init__(self, keys: Mapping[str, bytes], active_key_id: str, hash_key: bytes) -> None:
        if active_key_id not in keys:
            raise ContactKeyError(f"CONTACT_KEY_ID {active_key_id!r} is not among CONTACT_KEYS")
        for key_id, key in keys.items():
            if len(key) != 32 or not key_id.isalnum():
                raise ContactKeyError(f"CONTACT_KEYS: key {key_id!r} must be 32 bytes with an alphanumeric id")
        if len(hash_key) < 32:
            raise ContactKeyError("CONTACT_HASH_KEY must be at least 32 bytes")
        self._keys = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.active_key_id = active_key_id
        self._hash_key = hash_key

    def encrypt(self, value: str, column: str) -> str:
        nonce = secrets.token_bytes(12)
        sealed = self._keys[self.active_key_id].encrypt(nonce, value.encode(), column.encode())
        return f"{PREFIX}:{self.active_key_id}:{base64.b64encode(nonce + sealed).decode()}"

    def decrypt(self, stored: str, column: str) -> str:
        try:
            prefix, key_id, body = stored.split(":", 2)
            raw = base64.b64decode(body, validate=True)
            if prefix != PREFIX:
                raise ValueError(prefix)
            return self._keys[key_id].decrypt(raw[:12], raw[12:], column.encode()).decode()
        except (ValueError, KeyError, InvalidTag, binascii.Error) as error:
            raise ContactKeyError(f"cannot decrypt {column}: {type(error).__name__}") from None

    def key_id_of(self, stored: str) -> str | None:
        """The key a stored value was sealed with; None for a value not encrypted."""
        parts = stored.split(":", 2)
        return parts[1] if len(parts) == 3 and parts[0] == PREFIX else None

    def lookup_hash(self, value: str) -> bytes:
        normalized = value.strip().lower()
        return hmac.new(self._hash_key, normalized.encode(), hashlib.sha256).digest()


def from_env(env: Mapping[str, str] | None = None) -> ContactCipher:
    env = os.environ if env is None else env
    raw_keys = env.get("CONTACT_KEYS") or ""
    if not raw_keys:
        raise ContactKeyError("CONTACT_KEYS is not set: contact data is encrypted at rest and needs a key")
    keys = {}
    for item in raw_keys.split(","):
        key_id, _, encoded = item.strip().partition("=")
        try:
            keys[key_id] = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise ContactKeyError(f"CONTACT_KEYS: key {key_id!r} is not base64") from None
    try:
        hash_key = base64.b64decode(env.get("CONTACT_HASH_KEY") or "", validate=True)
    except binascii.Error:
        raise ContactKeyError("CONTACT_HASH_KEY is not base64") from None
    return ContactCipher(keys, env.get("CONTACT_KEY_ID") or next(iter(keys)), hash_key)


def generate_env() -> dict[str, str]:
    """Fresh random keys, for a development machine's first run or a test run."""
    return {"CONTACT_KEYS": "k1=" + base64.b64encode(secrets.token_bytes(32)).decode(), "CONTACT_KEY_ID": "k1",
            "CONTACT_HASH_KEY": base64.b64encode(secrets.token_bytes(32)).decode()}


def development_env(var_dir: Path) -> dict[str, str]:
    """Keys for one development machine or benchmark folder: made once, kept in
    VAR_DIR/secrets.env (owner only), never in the repository."""
    path = var_dir / "secrets.env"
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text("".join(f"{k}={v}\n" for k, v in generate_env().items()))
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


_current: ContactCipher | None = None


def configure(cipher: ContactCipher) -> None:
    global _current
    _current = cipher


def current() -> ContactCipher:
    """The process's cipher, set once at start (server, bot, commands, tests)."""
    cipher = _current
    if cipher is None:
        cipher = from_env()
        configure(cipher)
    return cipher
