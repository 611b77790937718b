"""SQL of the ledger: journal entries and their postings."""

from __future__ import annotations

import uuid
from datetime import datetime
from uuid import UUID

import asyncpg

from server.domain.ledger import JournalEntry


def entries_ctes(gate: str, account: str, now: str, first: int, prefix: str = "") -> str:
    """CTEs for a Write that post journal entries with their postings, only where the
    CTE `gate` has a row. `account` and `now` are SQL expressions; the seven array
    parameters from $`first` on are the ones `entry_arrays` makes, in its order. A
    `prefix` names the CTEs apart when one statement posts under two gates."""
    p = [f"${n}" for n in range(first, first + 7)]
    return f"""
{prefix}entries AS (
    INSERT INTO journal_entries (entry_id, account_id, kind, reference_id, created_at)
    SELECT e.entry_id, {account}, e.kind, e.reference_id, {now}
    FROM {gate}, unnest({p[0]}::uuid[], {p[1]}::text[], {p[2]}::uuid[]) AS e (entry_id, kind, reference_id)
),
{prefix}entry_postings AS (
    INSERT INTO postings (entry_id, line, account_id, ledger_account, amount_minor)
    SELECT p.entry_id, p.line, {account}, p.ledger_account, p.amount_minor
    FROM {gate}, unnest({p[3]}::uuid[], {p[4]}::integer[], {p[5]}::text[], {p[6]}::bigint[])
                 AS p (entry_id, line, ledger_account, amount_minor)
)"""


def entry_arrays(entries: list[tuple[UUID, JournalEntry]]) -> tuple[list, list, list, list, list, list, list]:
    """The parameters of `entries_ctes` for (reference_id, entry) pairs."""
    entry_ids: list[UUID] = []
    kinds: list[str] = []
    references: list[UUID] = []
    posting_entries: list[UUID] = []
    lines: list[int] = []
    ledger_accounts: list[str] = []
    amounts: list[int] = []
    for reference_id, entry in entries:
        entry_id = uuid.uuid4()
        entry_ids.append(entry_id)
        kinds.append(entry.kind.value)
        references.append(reference_id)
        for line, posting in enumerate(entry.postings, start=1):
            posting_entries.append(entry_id)
            lines.append(line)
            ledger_accounts.append(posting.ledger_account.value)
            amounts.append(posting.amount_minor)
    return entry_ids, kinds, references, posting_entries, lines, ledger_accounts, amounts

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
