"""docs/ledger.md's script, as written, recomputes an account's chain from a live server
over grpcurl, ends at the head the server keeps, and names the entry that an edit in
the database broke."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import asyncpg

from credit.v1 import repayment_pb2
from tests.e2e.conftest import ROOT
from tests.support import Api, buy, refund, repay


def script() -> str:
    text = (ROOT / "docs" / "ledger.md").read_text()
    match = re.search(r"<!-- verify-journal:.*?-->\s*```python\n(.*?)```", text, re.S)
    assert match, "docs/ledger.md lost its verify-journal block"
    return match.group(1)


def run(path: Path, address: str, account_id: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run([sys.executable, str(path), address, account_id, "-plaintext"], capture_output=True,
                          text=True, timeout=120, env=env)


async def test_the_documented_script_recomputes_the_chain_and_names_a_tampered_entry(server, api: Api, e2e_database,
                                                                                     tmp_path):
    account = await api.open_account(limit_minor=2_000_000)
    loan = await buy(api, account.account_id, 300_000)
    await repay(api, account.account_id, 40_000)
    await refund(api, loan.loan_id, 100_000)
    for _ in range(3):
        await buy(api, account.account_id, 20_000)
    path = tmp_path / "verify_journal.py"
    path.write_text(script())

    result = run(path, server.address, account.account_id)
    assert result.returncode == 0, result.stdout + result.stderr
    journal = await api.repayment.GetAccountJournal(
        repayment_pb2.GetAccountJournalRequest(account_id=account.account_id, page_size=100), timeout=10)
    last = journal.entries[-1]
    assert result.stdout.strip() == f"{last.sequence} entries, head {last.entry_sha256.hex()}"

    # One posting edited in the database: the script names that entry, and nothing
    # before it.
    target = journal.entries[2]
    edit = "UPDATE postings SET amount_minor = amount_minor + $2 WHERE entry_id = $1 AND line = 1"
    conn = await asyncpg.connect(e2e_database)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(edit, target.entry_id, 1)
        broken = run(path, server.address, account.account_id)
        async with conn.transaction():  # the session's other tests check these books
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute(edit, target.entry_id, -1)
    finally:
        await conn.close()
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert broken.stdout.strip() == f"entry {target.entry_id} (sequence 3) breaks the chain"
