"""The collections bot as operators run it: separate processes, against the database
the real server writes, sending to a real SMTP server."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
from datetime import date, datetime, timedelta, timezone

import asyncpg
import pytest

from collections_bot.mail_sink import start as start_mail_sink
from server.invariants import check
from tests.e2e.conftest import ROOT, free_port
from tests.support import buy

SHANGHAI = timezone(timedelta(hours=8))


@pytest.fixture
def smtp():
    controller, sink = start_mail_sink("127.0.0.1", free_port())
    yield sink, controller.port
    controller.stop()


def bot_env(database_url: str, smtp_port: int, **extra: str) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": database_url, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp_port),
            "SMTP_RETRY_BASE_S": "0.01", "LOG_LEVEL": "warning", **extra}


def run_once(env: dict[str, str], as_of: datetime) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "collections_bot", "run-once", "--as-of", as_of.isoformat()],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


async def overdue_book(api, count: int) -> tuple[list, date]:
    """`count` accounts with one loan each; their first due date."""
    loans = []
    for _ in range(count):
        account = await api.open_account(limit_minor=1_000_000)
        loans.append(await buy(api, account.account_id, 300_000))
    return loans, date.fromisoformat(loans[0].installments[0].due_date)


async def counts(database_url: str):
    conn = await asyncpg.connect(database_url)
    try:
        return {
            "violations": await check(conn),
            "mismatched_penalties": await conn.fetchval("""
                SELECT count(*) FROM installments i
                LEFT JOIN (SELECT loan_id, sequence, sum(amount_minor) AS total FROM penalty_accruals
                           GROUP BY loan_id, sequence) p USING (loan_id, sequence)
                WHERE i.penalty_minor <> coalesce(p.total, 0) + coalesce(
                    (SELECT sum(amount_minor) FROM penalty_waivers w
                     WHERE w.loan_id = i.loan_id AND w.sequence = i.sequence), 0)"""),
            "accrual_days": await conn.fetchval("SELECT count(*) FROM penalty_accruals"),
            "sent": {r["message_id"] for r in await conn.fetch(
                "SELECT message_id FROM contact_attempts WHERE status = 'SENT'")},
        }
    finally:
        await conn.close()


async def test_two_bots_at_once_book_each_penalty_day_and_send_each_step_once(api, server, smtp):
    sink, port = smtp
    loans, due = await overdue_book(api, 40)
    as_of = datetime(due.year, due.month, due.day, 10, tzinfo=SHANGHAI) + timedelta(days=8)
    env = bot_env(server.database_url, port, COLLECTIONS_BATCH_SIZE="5")
    bots = [run_once(env, as_of) for _ in range(2)]
    outputs = [b.communicate(timeout=180)[0] for b in bots]
    assert all(b.returncode == 0 for b in bots), outputs

    found = await counts(server.database_url)
    assert found["violations"] == [] and found["mismatched_penalties"] == 0
    # Days due+4 .. due+7 are chargeable by due+8: four days on each of these loans.
    ours = {loan.loan_id for loan in loans}
    conn = await asyncpg.connect(server.database_url)
    try:
        per_loan = await conn.fetch("SELECT loan_id::text, count(*) AS days FROM penalty_accruals "
                                    "WHERE loan_id::text = ANY($1) GROUP BY loan_id", list(ours))
    finally:
        await conn.close()
    assert {r["loan_id"]: r["days"] for r in per_loan} == {loan_id: 4 for loan_id in ours}
    ids = collections.Counter(m["Message-ID"].strip() for m in sink.messages)
    assert ids and max(ids.values()) == 1, "a reminder step was sent twice"
    expected = {f"<reminder.{loan.account_id}.{due.isoformat()}.D+7_EMAIL@credit.example>" for loan in loans}
    assert expected <= set(ids)

    # Running again at the same time changes nothing.
    again = run_once(env, as_of)
    again.communicate(timeout=120)
    assert (await counts(server.database_url))["accrual_days"] == found["accrual_days"]
    assert len(sink.messages) == sum(ids.values())


async def test_a_bot_killed_mid_pass_loses_nothing_and_repeats_nothing_committed(api, server, smtp):
    sink, port = smtp
    loans, due = await overdue_book(api, 40)
    as_of = datetime(due.year, due.month, due.day, 10, tzinfo=SHANGHAI) + timedelta(days=1)
    env = bot_env(server.database_url, port, COLLECTIONS_BATCH_SIZE="2")
    bot = run_once(env, as_of)
    deadline = time.monotonic() + 60
    while len(sink.messages) < 5 and time.monotonic() < deadline and bot.poll() is None:
        await asyncio.sleep(0.01)
    bot.send_signal(signal.SIGKILL)
    bot.communicate(timeout=30)
    before = await counts(server.database_url)
    assert before["violations"] == [] and before["mismatched_penalties"] == 0

    # Restarted after the killed bot's lease ran out.
    restarted = run_once(env, as_of + timedelta(minutes=5))
    output = restarted.communicate(timeout=180)[0]
    assert restarted.returncode == 0, output
    after = await counts(server.database_url)
    assert after["violations"] == [] and after["mismatched_penalties"] == 0
    ids = collections.Counter(m["Message-ID"].strip() for m in sink.messages)
    # What was marked SENT before the kill was not sent again.
    ours = {loan.account_id for loan in loans}
    sent_before = {m for m in before["sent"] if m.split(".")[1] in ours}
    assert sent_before, "the kill should come after some reminders were sent"
    assert all(ids[message_id] == 1 for message_id in sent_before)
    # And every loan got its D+1 reminder in the end.
    assert {f"<reminder.{loan.account_id}.{due.isoformat()}.D+1_EMAIL@credit.example>" for loan in loans} <= set(ids)


def test_the_daemon_stops_cleanly_on_sigterm_within_its_bound(server, smtp):
    _, port = smtp
    env = bot_env(server.database_url, port, COLLECTIONS_INTERVAL_S="1", COLLECTIONS_STOP_TIMEOUT_S="5",
                  LOG_LEVEL="info")
    daemon = subprocess.Popen([sys.executable, "-m", "collections_bot"], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert daemon.stdout is not None
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = daemon.stdout.readline()
        lines.append(line)
        if '"pass_finished"' in line:
            break
    assert any('"pass_finished"' in line for line in lines), "".join(lines)
    started = time.monotonic()
    daemon.send_signal(signal.SIGTERM)
    rest = daemon.communicate(timeout=30)[0]
    assert daemon.returncode == 0, rest
    assert time.monotonic() - started < 10
    assert '"bot_stopped"' in rest


def test_run_once_needs_an_offset_and_a_bad_setting_is_named(server):
    result = subprocess.run([sys.executable, "-m", "collections_bot", "run-once", "--as-of", "2027-01-15T10:00:00"],
                            cwd=ROOT, env={**os.environ, "DATABASE_URL": server.database_url},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "UTC offset" in result.stderr
    result = subprocess.run([sys.executable, "-m", "collections_bot"], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, env={**os.environ, "SMTP_PORT": "smtp"})
    assert result.returncode != 0 and "SMTP_PORT" in result.stderr
