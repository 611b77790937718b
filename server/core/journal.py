"""Reading an account's journal as its hash chain, a page at a time (docs/ledger.md)."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import asyncpg

from server import paging
from server.db import accounts as account_rows
from server.db import ledger as ledger_rows
from server.domain.errors import InvariantViolation, NotFound
from server.domain.journal import Link


@dataclass(frozen=True)
class JournalEntryView:
    """An entry as its chain holds it: everything its hash covers, and the hash stored."""

    link: Link
    entry_sha256: bytes


@dataclass(frozen=True)
class JournalPage:
    entries: tuple[JournalEntryView, ...]
    next_page_token: str


async def page(conn: asyncpg.Connection, account_id: UUID, page_size: int, page_token: str) -> JournalPage:
    """One page of the account's entries in chain order, oldest first; `page_size` is
    already bounded by the caller."""
    if page_size < 1:
        raise InvariantViolation(f"a page of {page_size} journal entries")
    after = paging.decode_position(page_token)
    if await account_rows.get(conn, account_id) is None:
        raise NotFound("account_id", str(account_id), "account")
    rows = await ledger_rows.journal_page(conn, account_id, after, page_size + 1)
    entries = tuple(JournalEntryView(*ledger_rows.link_of(row)) for row in rows[:page_size])
    more = len(rows) > page_size
    return JournalPage(entries, paging.encode_position(entries[-1].link.sequence) if more else "")
