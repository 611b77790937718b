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


# The statement prologue every Write starts with: the idempotency record, claimed and
# given its reply. A row this request's own locked-mode transaction claimed earlier has
# no reply yet and gets it; a concurrent duplicate's row (committed with its reply)
# is left alone and `claim` stays empty, so nothing else in the statement happens.
_CLAIM_CTE = """
claim AS (
    INSERT INTO idempotency_records (caller, method, idempotency_key, request_sha256, response)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (caller, method, idempotency_key) DO UPDATE SET response = EXCLUDED.response
        WHERE idempotency_records.response IS NULL AND idempotency_records.request_sha256 = EXCLUDED.request_sha256
    RETURNING 1
)"""


def write_statement(ctes: str, done: str, detail: str, also: str = "true") -> str:
    """A Write (server/core/commands.py): the claim, then `ctes` (which may use $6 on,
    and must write nothing unless `claim` has a row), then a last SELECT that is false
    when a duplicate holds the key, true when the CTE named `done` wrote its row and the
    SQL condition `also` holds (every other row the command decided to write was
    written), and otherwise a serialization failure that undoes the whole statement."""
    return f"""
WITH {_CLAIM_CTE},
{ctes}
SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM claim) THEN false
            WHEN EXISTS (SELECT 1 FROM {done}) AND ({also}) THEN true
            ELSE credit_write_conflict('{detail}') END"""


async def claim(conn: asyncpg.Connection, caller: str, method: str, key: str, request_sha256: bytes) -> bool:
    """True when this transaction owns the key. A concurrent transaction holding the
    same key makes this wait until it commits (then False) or rolls back (then True)."""
    return bool(await conn.fetchval(CLAIM, caller, method, key, request_sha256))


async def load(conn: asyncpg.Connection, caller: str, method: str, key: str) -> asyncpg.Record:
    return await conn.fetchrow(LOAD, caller, method, key)


async def store(conn: asyncpg.Connection, caller: str, method: str, key: str, response: bytes) -> None:
    await conn.execute(STORE, caller, method, key, response)
