"""SQL of idempotency records: the first reply to each (caller, method, key), kept in
the bucket of the account the request acts on (its shard, once sharded). A request
that names no account finds it first; OpenAccount uses the id of the account it will
create (server.domain.accounts.account_id_of_customer). NO_ACCOUNT is the bucket of a
method that acts on no account (none today; records whose account could not be told
when migration 0013 filled the column are there too)."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from server.db import one

NO_ACCOUNT = UUID(int=0)

CLAIM = """
INSERT INTO idempotency_records (account_id, caller, method, idempotency_key, request_sha256)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (account_id, caller, method, idempotency_key) DO NOTHING
RETURNING true
"""

LOAD = """
SELECT request_sha256, response FROM idempotency_records
WHERE account_id = $1 AND caller = $2 AND method = $3 AND idempotency_key = $4
"""

STORE = """
UPDATE idempotency_records SET response = $5
WHERE account_id = $1 AND caller = $2 AND method = $3 AND idempotency_key = $4
"""


# The statement prologue every Write starts with: the idempotency record, claimed in the
# bucket of the Write's account ($6) and given its reply. A row this request's own
# locked-mode transaction claimed earlier has no reply yet and gets it; a concurrent
# duplicate's row (committed with its reply) is left alone and `claim` stays empty, so
# nothing else in the statement happens.
_CLAIM_CTE = """
claim AS (
    INSERT INTO idempotency_records (account_id, caller, method, idempotency_key, request_sha256, response)
    VALUES ($6, $1, $2, $3, $4, $5)
    ON CONFLICT (account_id, caller, method, idempotency_key) DO UPDATE SET response = EXCLUDED.response
        WHERE idempotency_records.response IS NULL AND idempotency_records.request_sha256 = EXCLUDED.request_sha256
    RETURNING 1
)"""


def write_statement(ctes: str, done: str, detail: str, also: str = "true") -> str:
    """A Write (server/core/commands.py): the claim, then `ctes` (which may use $6 on:
    $6 is the account, the record's bucket and the row whose version the write checks;
    they must write nothing unless `claim` has a row), then a last SELECT that is false
    when a duplicate holds the key, true when the CTE named `done` wrote its row and the
    SQL condition `also` holds (every other row the command decided to write was
    written), and otherwise a serialization failure that undoes the whole statement."""
    return f"""
WITH {_CLAIM_CTE},
{ctes}
SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM claim) THEN false
            WHEN EXISTS (SELECT 1 FROM {done}) AND ({also}) THEN true
            ELSE credit_write_conflict('{detail}') END"""


async def claim(conn: asyncpg.Connection, account_id: UUID, caller: str, method: str, key: str,
                request_sha256: bytes) -> bool:
    """True when this transaction owns the key. A concurrent transaction holding the
    same key makes this wait until it commits (then False) or rolls back (then True)."""
    return bool(await conn.fetchval(CLAIM, account_id, caller, method, key, request_sha256))


async def load(conn: asyncpg.Connection, account_id: UUID, caller: str, method: str, key: str) -> asyncpg.Record:
    return one(await conn.fetchrow(LOAD, account_id, caller, method, key))


async def store(conn: asyncpg.Connection, account_id: UUID, caller: str, method: str, key: str,
                response: bytes) -> None:
    await conn.execute(STORE, account_id, caller, method, key, response)
