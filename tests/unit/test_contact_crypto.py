"""Contact data sealed with AES-GCM under a named key, bound to its column."""

from __future__ import annotations

import base64
import secrets

import pytest

from server.contact_crypto import ContactCipher, ContactKeyError, from_env, generate_env


def cipher(active="k1", **keys):
    keys = keys or {"k1": secrets.token_bytes(32)}
    return ContactCipher(keys, active, secrets.token_bytes(32))


def test_round_trip_names_its_key_and_never_shows_the_value():
    c = cipher()
    sealed = c.encrypt("li.lei@example.com", "contact_email")
    assert sealed.startswith("v1:k1:") and "li.lei" not in sealed
    assert c.decrypt(sealed, "contact_email") == "li.lei@example.com"
    assert c.encrypt("same", "contact_email") != c.encrypt("same", "contact_email")  # fresh nonce


def test_a_value_moved_to_another_column_or_tampered_with_does_not_open():
    c = cipher()
    sealed = c.encrypt("+8613800138000", "contact_phone")
    with pytest.raises(ContactKeyError):
        c.decrypt(sealed, "contact_email")
    body = base64.b64decode(sealed.split(":", 2)[2])
    tampered = "v1:k1:" + base64.b64encode(body[:-1] + bytes([body[-1] ^ 1])).decode()
    with pytest.raises(ContactKeyError):
        c.decrypt(tampered, "contact_phone")


def test_old_keys_still_open_their_values_after_rotation():
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    before = ContactCipher({"k1": old}, "k1", b"h" * 32).encrypt("Wang Fang", "contact_name")
    after = ContactCipher({"k1": old, "k2": new}, "k2", b"h" * 32)
    assert after.decrypt(before, "contact_name") == "Wang Fang"
    assert after.key_id_of(after.encrypt("x", "contact_name")) == "k2"


def test_lookup_hash_is_keyed_and_normalized():
    c = cipher()
    assert c.lookup_hash(" Li.Lei@Example.com ") == c.lookup_hash("li.lei@example.com")
    assert cipher().lookup_hash("li.lei@example.com") != c.lookup_hash("li.lei@example.com")


def test_missing_or_bad_keys_are_named():
    with pytest.raises(ContactKeyError, match="CONTACT_KEYS"):
        from_env({})
    with pytest.raises(ContactKeyError, match="32 bytes"):
        from_env({"CONTACT_KEYS": "k1=" + base64.b64encode(b"short").decode(),
                   "CONTACT_HASH_KEY": base64.b64encode(b"x" * 32).decode()})
    env = generate_env()
    with pytest.raises(ContactKeyError, match="CONTACT_KEY_ID"):
        from_env({**env, "CONTACT_KEY_ID": "k9"})
    assert from_env(env).active_key_id == "k1"
