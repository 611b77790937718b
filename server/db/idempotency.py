"""SQL of idempotency records: the first reply to each (method, key)."""

from __future__ import annotations

import asyncpg

CLAIM = """
INSERT INTO idempotency_records (method, idempotency_key, request_sha256)
VALUES ($1, $2, $3)
ON CONFLICT (method, idempotency_key) DO NOTHING
RETURNING true
"""

LOAD = """
SELECT request_sha256, response FROM idempotency_records WHERE method = $1 AND idempotency_key = $2
"""

STORE = """
UPDATE idempotency_records SET response = $3 WHERE method = $1 AND idempotency_key = $2
"""


async def claim(conn: asyncpg.Connection, method: str, key: str, request_sha256: bytes) -> bool:
    """True when this transaction owns the key. A concurrent transaction holding the
    same key makes this wait until it commits (then False) or rolls back (then True)."""
    return bool(await conn.fetchval(CLAIM, method, key, request_sha256))


async def load(conn: asyncpg.Connection, method: str, key: str) -> asyncpg.Record:
    return await conn.fetchrow(LOAD, method, key)


async def store(conn: asyncpg.Connection, method: str, key: str, response: bytes) -> None:
    await conn.execute(STORE, method, key, response)
