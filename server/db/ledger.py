"""SQL of the ledger: journal entries and their postings."""

from __future__ import annotations

import uuid
from datetime import datetime
from uuid import UUID

import asyncpg

from server.db import one
from server.domain import journal
from server.domain.errors import InvariantViolation
from server.domain.journal import Head
from server.domain.ledger import JournalEntry


def entries_ctes(gate: str, account: str, now: str, first: int, prefix: str = "") -> str:
    """CTEs for a Write that post journal entries with their postings, only where the
    CTE `gate` has a row. `account` and `now` are SQL expressions; the ten array
    parameters from $`first` on are the ones `entry_arrays` makes, in its order. A
    `prefix` names the CTEs apart when one statement posts under two gates. The
    statement must also move the account's chain head: `head_assignments(first)`."""
    p = [f"${n}" for n in range(first, first + 10)]
    return f"""
{prefix}entries AS (
    INSERT INTO journal_entries (entry_id, account_id, kind, reference_id, created_at, sequence, previous_sha256,
                                 entry_sha256)
    SELECT e.entry_id, {account}, e.kind, e.reference_id, {now}, e.sequence, e.previous_sha256, e.entry_sha256
    FROM {gate}, unnest({p[0]}::uuid[], {p[1]}::text[], {p[2]}::uuid[], {p[7]}::bigint[], {p[8]}::bytea[],
                        {p[9]}::bytea[])
                 AS e (entry_id, kind, reference_id, sequence, previous_sha256, entry_sha256)
),
{prefix}entry_postings AS (
    INSERT INTO postings (entry_id, line, account_id, ledger_account, amount_minor)
    SELECT p.entry_id, p.line, {account}, p.ledger_account, p.amount_minor
    FROM {gate}, unnest({p[3]}::uuid[], {p[4]}::integer[], {p[5]}::text[], {p[6]}::bigint[])
                 AS p (entry_id, line, ledger_account, amount_minor)
)"""


def head_after(first: int) -> tuple[str, str]:
    """SQL expressions of the account's chain length and head once the entries of
    `entries_ctes` (arrays from $`first`) are posted, over the accounts row before."""
    return (f"journal_length + cardinality(${first}::uuid[])",
            f"coalesce((${first + 9}::bytea[])[cardinality(${first + 9}::bytea[])], journal_head_sha256)")


def head_assignments(first: int) -> str:
    """The SET items of an accounts update that moves the chain past the entries of
    `entries_ctes` (arrays from $`first`)."""
    length, head = head_after(first)
    return f"journal_length = {length}, journal_head_sha256 = {head}"


def entry_arrays(account_id: UUID, head: Head, entries: list[tuple[UUID, JournalEntry]],
                 now: datetime) -> tuple[Head, tuple[list, ...]]:
    """The parameters of `entries_ctes` for (reference_id, entry) pairs booked at `now`
    after the chain `head` of the account, and the head they leave."""
    entry_ids: list[UUID] = []
    kinds: list[str] = []
    references: list[UUID] = []
    posting_entries: list[UUID] = []
    postings_lines: list[int] = []
    ledger_accounts: list[str] = []
    amounts: list[int] = []
    sequences: list[int] = []
    previous: list[bytes] = []
    hashes: list[bytes] = []
    for reference_id, entry in entries:
        entry_id = uuid.uuid4()
        sequence = head.length + 1
        lines = [(line, p.ledger_account.value, p.amount_minor) for line, p in enumerate(entry.postings, start=1)]
        digest = journal.entry_sha256(head.sha256, entry_id, account_id, sequence, now, entry.kind.value,
                                      reference_id, lines)
        entry_ids.append(entry_id)
        kinds.append(entry.kind.value)
        references.append(reference_id)
        sequences.append(sequence)
        previous.append(head.sha256)
        hashes.append(digest)
        head = Head(sequence, digest)
        for line, ledger_account, amount_minor in lines:
            posting_entries.append(entry_id)
            postings_lines.append(line)
            ledger_accounts.append(ledger_account)
            amounts.append(amount_minor)
    return head, (entry_ids, kinds, references, posting_entries, postings_lines, ledger_accounts, amounts, sequences,
                  previous, hashes)


def head_of(row: asyncpg.Record) -> Head:
    """The chain head from a row that read the account's journal_length and
    journal_head_sha256."""
    return Head(row["journal_length"], bytes(row["journal_head_sha256"]))


# The entry and its postings in one statement (one round trip), chained in the database
# after the account's head (journal_entry_sha256, migration 0017), which moves on. The
# account row is taken FOR UPDATE first: its callers already hold it, and the chain
# cannot fork even if one did not.
INSERT_ENTRY_WITH_POSTINGS = """
WITH head AS (
    SELECT journal_length + 1 AS sequence, journal_head_sha256 AS previous_sha256
    FROM accounts WHERE account_id = $2 FOR UPDATE
),
entry AS (
    INSERT INTO journal_entries (entry_id, account_id, kind, reference_id, created_at, sequence, previous_sha256,
                                 entry_sha256)
    SELECT $1, $2, $3, $4, $5, head.sequence, head.previous_sha256,
           journal_entry_sha256(head.previous_sha256, $1, $2, head.sequence, $5, $3, $4, $6::integer[],
                                $7::text[], $8::bigint[])
    FROM head
    RETURNING entry_id, account_id, sequence, entry_sha256
),
chained AS (
    UPDATE accounts AS a SET journal_length = entry.sequence, journal_head_sha256 = entry.entry_sha256
    FROM entry WHERE a.account_id = entry.account_id
)
INSERT INTO postings (entry_id, line, account_id, ledger_account, amount_minor)
SELECT entry.entry_id, p.line, entry.account_id, p.ledger_account, p.amount_minor
FROM entry, unnest($6::integer[], $7::text[], $8::bigint[]) AS p (line, ledger_account, amount_minor)
RETURNING entry_id
"""

# An account's entries with their postings in line order as arrays; the statements below
# add their WHERE, ORDER BY and LIMIT.
_ENTRIES_WITH_POSTINGS = """
SELECT e.entry_id, e.account_id, e.sequence, e.kind, e.reference_id, e.created_at, e.previous_sha256,
       e.entry_sha256, p.lines, p.ledger_accounts, p.amounts
FROM journal_entries e
CROSS JOIN LATERAL (
    SELECT coalesce(array_agg(x.line ORDER BY x.line), '{}') AS lines,
           coalesce(array_agg(x.ledger_account ORDER BY x.line), '{}') AS ledger_accounts,
           coalesce(array_agg(x.amount_minor ORDER BY x.line), '{}') AS amounts
    FROM postings x WHERE x.account_id = e.account_id AND x.entry_id = e.entry_id) AS p
"""

# Every account's chain head, and every entry in (account, sequence) order, for the
# invariant checker (which reads them in one snapshot, the entries through a cursor).
SELECT_HEADS = "SELECT account_id, journal_length, journal_head_sha256 FROM accounts ORDER BY account_id"
SELECT_CHAINS = _ENTRIES_WITH_POSTINGS + "ORDER BY e.account_id, e.sequence"

# One page of an account's journal in chain order, after the sequence $2.
SELECT_JOURNAL_PAGE = _ENTRIES_WITH_POSTINGS + """WHERE e.account_id = $1 AND e.sequence > $2
ORDER BY e.sequence
LIMIT $3
"""

# The account's chain head, for a locked transaction that chains entries in Python.
SELECT_HEAD = "SELECT journal_length, journal_head_sha256 FROM accounts WHERE account_id = $1"

BALANCES_FOR_ACCOUNT = """
SELECT ledger_account, sum(amount_minor)::bigint AS balance_minor
FROM postings WHERE account_id = $1 GROUP BY ledger_account
"""

UNBALANCED_ENTRIES = """
SELECT entry_id, sum(amount_minor)::bigint AS total FROM postings GROUP BY entry_id HAVING sum(amount_minor) <> 0
"""


async def post(conn: asyncpg.Connection, account_id: UUID, reference_id: UUID, entry: JournalEntry,
               now: datetime) -> UUID:
    """Post the entry at the end of the account's chain; the account must exist."""
    entry_id = uuid.uuid4()
    posted = await conn.fetch(
        INSERT_ENTRY_WITH_POSTINGS, entry_id, account_id, entry.kind.value, reference_id, now,
        list(range(1, len(entry.postings) + 1)),
        [p.ledger_account.value for p in entry.postings],
        [p.amount_minor for p in entry.postings])
    if len(posted) != len(entry.postings):
        raise InvariantViolation(f"{entry.kind} entry for account {account_id} was not posted")
    return entry_id


async def head(conn: asyncpg.Connection, account_id: UUID) -> Head:
    """The chain head of an account whose row this transaction holds."""
    return head_of(one(await conn.fetchrow(SELECT_HEAD, account_id)))


def link_of(row: asyncpg.Record) -> tuple[journal.Link, bytes]:
    """An entry read by SELECT_JOURNAL_PAGE or SELECT_CHAINS as a link of its chain, with
    the hash stored beside it."""
    return journal.Link(
        entry_id=row["entry_id"], account_id=row["account_id"], sequence=row["sequence"],
        created_at=row["created_at"], kind=row["kind"], reference_id=row["reference_id"],
        lines=tuple(journal.Line(line, ledger_account, amount) for line, ledger_account, amount
                    in zip(row["lines"], row["ledger_accounts"], row["amounts"], strict=True)),
        previous_sha256=bytes(row["previous_sha256"])), bytes(row["entry_sha256"])


async def heads(conn: asyncpg.Connection) -> dict[UUID, Head]:
    """Every account's chain head, as its row says."""
    return {r["account_id"]: head_of(r) for r in await conn.fetch(SELECT_HEADS)}


def chains(conn: asyncpg.Connection, prefetch: int = 1000) -> asyncpg.cursor.CursorFactory:
    """A cursor over every entry in (account, sequence) order; inside a transaction."""
    return conn.cursor(SELECT_CHAINS, prefetch=prefetch)


async def journal_page(conn: asyncpg.Connection, account_id: UUID, after_sequence: int,
                       limit: int) -> list[asyncpg.Record]:
    """Up to `limit` entries of the account after `after_sequence`, in chain order."""
    return await conn.fetch(SELECT_JOURNAL_PAGE, account_id, after_sequence, limit)


async def balances(conn: asyncpg.Connection, account_id: UUID) -> dict[str, int]:
    return {r["ledger_account"]: r["balance_minor"] for r in await conn.fetch(BALANCES_FOR_ACCOUNT, account_id)}
