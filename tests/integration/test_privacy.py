"""The database holds no contact data in clear, and keys rotate without losing any."""

from __future__ import annotations

import base64
import secrets
import uuid

from server import contact_crypto
from server.db.accounts import rotate_contacts


async def test_raw_rows_hold_no_name_email_or_phone_in_clear(api, pool):
    account = await api.open_account(limit_minor=100_000, email="zhang.wei@example.com", phone="+8613912345678")
    async with pool.acquire() as conn:
        raw = await conn.fetchrow("SELECT * FROM accounts WHERE account_id = $1", uuid.UUID(account.account_id))
        dump = await conn.fetchval("SELECT row_to_json(a)::text FROM accounts a WHERE account_id = $1",
                                   uuid.UUID(account.account_id))
        events = await conn.fetchval("SELECT string_agg(detail::text || reason, ' ') FROM account_events "
                                     "WHERE account_id = $1", uuid.UUID(account.account_id))
    for secret in ("zhang.wei", "example.com", "13912345678", "Wang Fang"):
        assert secret not in dump and secret not in (events or "")
    assert raw["contact_email"].startswith("v1:")
    cipher = contact_crypto.current()
    assert raw["contact_email_hash"] == cipher.lookup_hash("zhang.wei@example.com")
    # The service itself still reads it.
    assert (await api.account(account.account_id)).account_id == account.account_id


async def test_rotation_rewrites_every_value_under_the_new_key(api, pool):
    accounts = [await api.open_account(limit_minor=100_000) for _ in range(3)]
    old = contact_crypto.current()
    new_key = secrets.token_bytes(32)
    keys = {key_id: base64.b64decode(v) for key_id, v in
            (item.split("=", 1) for item in __import__("os").environ["CONTACT_KEYS"].split(","))}
    rotated = contact_crypto.ContactCipher({**keys, "k2": new_key}, "k2",
                                           base64.b64decode(__import__("os").environ["CONTACT_HASH_KEY"]))
    contact_crypto.configure(rotated)
    try:
        async with pool.acquire() as conn:
            async with conn.transaction():
                assert await rotate_contacts(conn, 100) >= 3
            async with conn.transaction():
                assert await rotate_contacts(conn, 100) == 0
            rows = await conn.fetch("SELECT contact_name, contact_email FROM accounts")
        assert all(r["contact_email"].startswith("v1:k2:") for r in rows)
        for account in accounts:
            assert (await api.account(account.account_id)).account_id == account.account_id
        # Once rotated, the old key alone can no longer read them.
        assert old.key_id_of(rows[0]["contact_email"]) == "k2"
    finally:
        contact_crypto.configure(old)


async def test_rotation_rewrites_payment_instrument_tokens_too(api, pool):
    from credit.v1 import repayment_pb2
    from server.db.payment_orders import remaining_to_rotate, rotate_tokens, token

    account = await api.open_account(limit_minor=100_000)
    bound = await api.repayment.BindPaymentMethod(repayment_pb2.BindPaymentMethodRequest(
        account_id=account.account_id, kind=repayment_pb2.PAYMENT_METHOD_KIND_CARD, token="card-6222-4321",
        idempotency_key=uuid.uuid4().hex), timeout=10)
    method_id, account_id = uuid.UUID(bound.payment_method_id), uuid.UUID(account.account_id)
    old = contact_crypto.current()
    keys = {key_id: base64.b64decode(v) for key_id, v in
            (item.split("=", 1) for item in __import__("os").environ["CONTACT_KEYS"].split(","))}
    contact_crypto.configure(contact_crypto.ContactCipher(
        {**keys, "k2": secrets.token_bytes(32)}, "k2", base64.b64decode(__import__("os").environ["CONTACT_HASH_KEY"])))
    try:
        async with pool.acquire() as conn:
            assert await remaining_to_rotate(conn) == 1
            async with conn.transaction():
                assert await rotate_tokens(conn, 100) == 1
            assert await remaining_to_rotate(conn) == 0
            stored = await conn.fetchval("SELECT token FROM payment_methods WHERE payment_method_id = $1", method_id)
            assert stored.startswith("v1:k2:") and "4321" not in stored
            assert await token(conn, method_id, account_id) == "card-6222-4321"
    finally:
        contact_crypto.configure(old)
