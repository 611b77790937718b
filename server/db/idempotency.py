"""SQL of idempotency records: the first reply to each (caller, method, key)."""

from __future__ import annotations

import asyncpg

CLAIM = """
INSERT INTO idempotency_records (caller, method, idempotency_key, request_sha256)
VALUES ($1, $2, $3, $4)
ON CONFLICT (caller, method, idempotency_key) DO NOTHING
RETURNING true
"""

LOAD = """
SELECT request_sha256, response FROM idempotency_records
WHERE caller = $1 AND method = $2 AND idempotency_key = $3
"""

STORE = """
UPDATE idempotency_records SET response = $4 WHERE caller = $1 AND method = $2 AND idempotency_key = $3
"""


async def claim(conn: asyncpg.Connection, caller: str, method: str, key: str, request_sha256: bytes) -> bool:
    """True when this transaction owns the key. A concurrent transaction holding the
    same key makes this wait until it commits (then False) or rolls back (then True)."""
    return bool(await conn.fetchval(CLAIM, caller, method, key, request_sha256))


async def load(conn: asyncpg.Connection, caller: str, method: str, key: str) -> asyncpg.Record:
    return await conn.fetchrow(LOAD, caller, method, key)


async def store(conn: asyncpg.Connection, caller: str, method: str, key: str, response: bytes) -> None:
    await conn.execute(STORE, caller, method, key, response)
