"""The tamper-evident journal: GetAccountJournal over a real channel returns each
account's chain, which recomputes from what the reply carries; the invariant checker
names the account and the entry when a posting is edited, an entry deleted or two
reordered in the database."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import grpc
import pytest

from credit.v1 import repayment_pb2
from server import invariants
from server.domain import journal
from tests.support import Api, buy, field_violations, refund, repay


def link_of(entry: repayment_pb2.JournalEntry) -> journal.Link:
    """An entry of the reply as the chain hashes it, from the reply alone."""
    return journal.Link(
        entry_id=uuid.UUID(entry.entry_id), account_id=uuid.UUID(entry.account_id), sequence=entry.sequence,
        created_at=entry.created_at.ToDatetime(tzinfo=UTC),
        kind=repayment_pb2.JournalEntryKind.Name(entry.kind).removeprefix("JOURNAL_ENTRY_KIND_"),
        reference_id=uuid.UUID(entry.reference_id),
        lines=tuple(journal.Line(p.line, repayment_pb2.LedgerAccount.Name(p.ledger_account).removeprefix(
            "LEDGER_ACCOUNT_"), p.amount_minor) for p in entry.postings),
        previous_sha256=entry.previous_sha256)


async def read_journal(api: Api, account_id: str, page_size: int = 0) -> list[repayment_pb2.JournalEntry]:
    entries: list[repayment_pb2.JournalEntry] = []
    token = ""
    for _ in range(1000):
        page = await api.repayment.GetAccountJournal(repayment_pb2.GetAccountJournalRequest(
            account_id=account_id, page_size=page_size, page_token=token), timeout=10)
        entries += page.entries
        token = page.next_page_token
        if not token:
            return entries
    raise AssertionError("the journal never ended")


async def busy_account(api: Api) -> str:
    """An account with entries from every kind of writer: one-statement captures and
    repayments, a refund (locked), and a capture that a credit balance pays at once."""
    account = await api.open_account(limit_minor=2_000_000)
    loan = await buy(api, account.account_id, 300_000)
    await repay(api, account.account_id, 40_000)
    await refund(api, loan.loan_id, 100_000)
    await repay(api, account.account_id, 900_000)  # pays off, leaves a credit balance
    await buy(api, account.account_id, 50_000)
    return account.account_id


async def test_the_journal_over_grpc_recomputes_its_chain_page_by_page(api: Api, pool, books):
    account_id = await busy_account(api)
    whole = await read_journal(api, account_id)
    paged = await read_journal(api, account_id, page_size=2)
    assert paged == whole
    assert [e.sequence for e in whole] == list(range(1, len(whole) + 1))
    kinds = {repayment_pb2.JournalEntryKind.Name(e.kind) for e in whole}
    assert {"JOURNAL_ENTRY_KIND_LOAN_CAPTURED", "JOURNAL_ENTRY_KIND_RESERVE_PROVISIONED",
            "JOURNAL_ENTRY_KIND_REPAYMENT_RECEIVED", "JOURNAL_ENTRY_KIND_LOAN_REFUNDED",
            "JOURNAL_ENTRY_KIND_CREDIT_BALANCE_APPLIED"} <= kinds
    assert all(sum(p.amount_minor for p in entry.postings) == 0 for entry in whole)
    # Recomputed from the reply alone: every hash, every link, and the end.
    head = journal.Head(whole[-1].sequence, whole[-1].entry_sha256)
    assert journal.verify(uuid.UUID(account_id), [(link_of(e), e.entry_sha256) for e in whole], head) == []
    assert all(link_of(e).sha256() == e.entry_sha256 for e in whole)
    async with pool.acquire() as conn:
        row = await conn.fetchrow("SELECT journal_length, journal_head_sha256 FROM accounts WHERE account_id = $1",
                                  account_id)
    assert (row["journal_length"], bytes(row["journal_head_sha256"])) == (head.length, head.sha256)
    await books()


async def test_an_account_without_entries_has_an_empty_journal(api: Api):
    account = await api.open_account(limit_minor=100_000)
    page = await api.repayment.GetAccountJournal(
        repayment_pb2.GetAccountJournalRequest(account_id=account.account_id), timeout=10)
    assert list(page.entries) == [] and page.next_page_token == ""


@pytest.mark.parametrize("request_fields, field", [
    ({"account_id": "not-a-uuid"}, "account_id"),
    ({"page_size": 101}, "page_size"),
    ({"page_size": -1}, "page_size"),
    ({"page_token": "bm90LWEtdG9rZW4"}, "page_token"),
    ({"page_token": "WyJ4Il0"}, "page_token"),  # a token, but not of a position
])
async def test_bad_requests_name_their_field(api: Api, request_fields, field):
    account = await api.open_account(limit_minor=100_000)
    request = repayment_pb2.GetAccountJournalRequest(**{"account_id": account.account_id, **request_fields})
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await api.repayment.GetAccountJournal(request, timeout=10)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(raised.value) == [field]


async def test_an_unknown_account_is_not_found(api: Api):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await api.repayment.GetAccountJournal(
            repayment_pb2.GetAccountJournalRequest(account_id=str(uuid.uuid4())), timeout=10)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


async def test_concurrent_payments_on_one_account_keep_one_chain(api: Api, books):
    account = await api.open_account(limit_minor=2_000_000)
    for _ in range(3):
        await buy(api, account.account_id, 200_000)
    await asyncio.gather(*(repay(api, account.account_id, 10_000 + n) for n in range(12)))
    entries = await read_journal(api, account.account_id)
    assert [e.sequence for e in entries] == list(range(1, len(entries) + 1))
    await books()


async def chain_violations(conn: asyncpg.Connection) -> list[invariants.Violation]:
    return [v for v in await invariants.check(conn) if v.rule == invariants.CHAIN_RULE]


async def entries_of(conn: asyncpg.Connection, account_id: str) -> list[asyncpg.Record]:
    return await conn.fetch("SELECT entry_id, sequence FROM journal_entries WHERE account_id = $1 ORDER BY sequence",
                            account_id)


async def test_an_edited_posting_is_named_with_its_account_and_entry(api: Api, pool):
    account_id = await busy_account(api)
    other = await busy_account(api)
    async with pool.acquire() as conn:
        assert await chain_violations(conn) == []
        entry = (await entries_of(conn, account_id))[2]
        # As someone with direct access to the database would: the balance trigger is
        # not in the way of a replica-role session.
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute("UPDATE postings SET amount_minor = amount_minor + 1 WHERE entry_id = $1 AND line = 1",
                               entry["entry_id"])
        violations = await chain_violations(conn)
    assert len(violations) == 1, violations
    assert f"account {account_id} entry {entry['entry_id']} (sequence 3)" in violations[0].subject
    assert "content does not match its hash" in violations[0].subject
    assert other not in str(violations)


async def test_an_edit_that_keeps_the_entry_balanced_is_caught_too(api: Api, pool):
    """Moving a fen between two postings of an entry passes the balance rule; the chain
    still names it."""
    account_id = await busy_account(api)
    async with pool.acquire() as conn:
        entry = (await entries_of(conn, account_id))[0]
        await conn.execute("""
            UPDATE postings SET amount_minor = amount_minor + CASE WHEN line = 1 THEN 1 ELSE -1 END
            WHERE entry_id = $1 AND line IN (1, 2)""", entry["entry_id"])
        balance = [v for v in await invariants.check(conn) if v.rule == "journal entries balance"]
        chained = await chain_violations(conn)
    assert balance == []
    assert len(chained) == 1 and str(entry["entry_id"]) in chained[0].subject


async def delete_entry(conn: asyncpg.Connection, account_id: str, entry_id: uuid.UUID) -> None:
    async with conn.transaction():
        await conn.execute("DELETE FROM postings WHERE account_id = $1 AND entry_id = $2", account_id, entry_id)
        await conn.execute("DELETE FROM journal_entries WHERE account_id = $1 AND entry_id = $2", account_id, entry_id)


async def test_a_deleted_entry_is_caught(api: Api, pool):
    account_id = await busy_account(api)
    async with pool.acquire() as conn:
        entries = await entries_of(conn, account_id)
        await delete_entry(conn, account_id, entries[3]["entry_id"])
        violations = await chain_violations(conn)
        # The entry after the gap is named.
        assert any(str(entries[4]["entry_id"]) in v.subject and "missing or out of order" in v.subject
                   for v in violations), violations

        # Dropping the last entry leaves every link intact: the head on the accounts row
        # still shows it.
        await delete_entry(conn, account_id, entries[-1]["entry_id"])
        violations = await chain_violations(conn)
    assert any(v.subject.startswith(f"account {account_id} head") for v in violations), violations


async def test_reordered_entries_are_caught(api: Api, pool):
    account_id = await busy_account(api)
    async with pool.acquire() as conn:
        entries = await entries_of(conn, account_id)
        first, second = entries[1], entries[2]
        async with conn.transaction():
            for entry_id, sequence in ((first["entry_id"], 1_000_000), (second["entry_id"], first["sequence"]),
                                       (first["entry_id"], second["sequence"])):
                await conn.execute("UPDATE journal_entries SET sequence = $3 WHERE account_id = $1 AND entry_id = $2",
                                   account_id, entry_id, sequence)
        violations = await chain_violations(conn)
    named = " ".join(v.subject for v in violations)
    assert str(first["entry_id"]) in named and str(second["entry_id"]) in named, violations
    assert all(v.subject.startswith(f"account {account_id} ") for v in violations)


async def test_the_database_and_python_encodings_agree(pool):
    """journal_entry_sha256 (migration 0017, used by locked writers and the backfill)
    gives the bytes server.domain.journal gives, over awkward values."""
    async with pool.acquire() as conn:
        for n in range(20):
            link = journal.Link(
                entry_id=uuid.uuid4(), account_id=uuid.uuid4(), sequence=n + 1,
                created_at=datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC) + timedelta(
                    days=n * 1000, microseconds=n * 7919),
                kind=["LOAN_CAPTURED", "罚息", ""][n % 3], reference_id=uuid.uuid4(),
                lines=tuple(journal.Line(i + 1, "CASH" * (i + n % 2), (-1) ** i * (2**62 + n)) for i in range(n % 4)),
                previous_sha256=bytes([n]) * 32)
            found = await conn.fetchval(
                "SELECT journal_entry_sha256($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)", link.previous_sha256,
                link.entry_id, link.account_id, link.sequence, link.created_at, link.kind, link.reference_id,
                [line.line for line in link.lines], [line.ledger_account for line in link.lines],
                [line.amount_minor for line in link.lines])
            assert bytes(found) == link.sha256(), link
