"""SQL of the ledger: journal entries and their postings."""

from __future__ import annotations

import uuid
from datetime import datetime
from uuid import UUID

import asyncpg

from server.domain.ledger import JournalEntry

# The entry and its postings in one statement (one round trip).
INSERT_ENTRY_WITH_POSTINGS = """
WITH entry AS (
    INSERT INTO journal_entries (entry_id, account_id, kind, reference_id, created_at)
    VALUES ($1, $2, $3, $4, $5)
    RETURNING entry_id, account_id
)
INSERT INTO postings (entry_id, line, account_id, ledger_account, amount_minor)
SELECT entry.entry_id, p.line, entry.account_id, p.ledger_account, p.amount_minor
FROM entry, unnest($6::integer[], $7::text[], $8::bigint[]) AS p (line, ledger_account, amount_minor)
"""

BALANCES_FOR_ACCOUNT = """
SELECT ledger_account, sum(amount_minor)::bigint AS balance_minor
FROM postings WHERE account_id = $1 GROUP BY ledger_account
"""

UNBALANCED_ENTRIES = """
SELECT entry_id, sum(amount_minor)::bigint AS total FROM postings GROUP BY entry_id HAVING sum(amount_minor) <> 0
"""


async def post(conn: asyncpg.Connection, account_id: UUID, reference_id: UUID, entry: JournalEntry,
               now: datetime) -> UUID:
    entry_id = uuid.uuid4()
    await conn.execute(
        INSERT_ENTRY_WITH_POSTINGS, entry_id, account_id, entry.kind.value, reference_id, now,
        list(range(1, len(entry.postings) + 1)),
        [p.ledger_account.value for p in entry.postings],
        [p.amount_minor for p in entry.postings])
    return entry_id


async def balances(conn: asyncpg.Connection, account_id: UUID) -> dict[str, int]:
    return {r["ledger_account"]: r["balance_minor"] for r in await conn.fetch(BALANCES_FOR_ACCOUNT, account_id)}
