"""Two collections bot daemons against one database and an SMTP server slow enough that
sending a claimed batch outlasts a lease unless the lease is renewed: each reminder still
goes out once."""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, date, datetime

import asyncpg
import grpc

from collections_bot.mail_sink import MailSink
from server.core.contact_attempts import message_id
from server.db import collections as rows
from tests.e2e.conftest import ROOT, free_port, start_server_process
from tests.support import Api, buy

SMTP_DELAY_S = 1.5
REMINDERS = 16
LEASE_S = 5


class SlowMailSink(MailSink):
    """A receiving server that takes its time over each message, as a loaded one does."""

    async def handle_DATA(self, server, session, envelope) -> str:
        await asyncio.sleep(SMTP_DELAY_S)
        return await super().handle_DATA(server, session, envelope)


def zone_in_the_afternoon() -> str:
    """A zone where it is now 14:xx, well inside the 08:00-21:00 contact window for the
    whole test, whatever the time of day the tests run at (Etc/GMT-3 is UTC+3)."""
    offset_h = 14 - datetime.now(UTC).hour
    return f"Etc/GMT{-offset_h:+d}"


async def plan_reminders(database_url: str, loans) -> None:
    """Due email reminders, as a review would have planned them for today."""
    now = datetime.now(UTC)
    conn = await asyncpg.connect(database_url)
    try:
        for loan in loans:
            due_date = date.fromisoformat(loan.installments[0].due_date)
            await rows.insert_attempt(
                conn, attempt_id=uuid.uuid4(), account_id=uuid.UUID(loan.account_id), due_date=due_date,
                step_code="D-3_EMAIL", channel="EMAIL", status="PENDING", reason=None,
                message_id=message_id(uuid.UUID(loan.account_id), due_date, "D-3_EMAIL", "credit.example"),
                planned_for=now.date(), now=now)
    finally:
        await conn.close()


async def statuses(database_url: str) -> collections.Counter:
    conn = await asyncpg.connect(database_url)
    try:
        return collections.Counter(r["status"] for r in await conn.fetch("SELECT status FROM contact_attempts"))
    finally:
        await conn.close()


def start_daemon(database_url: str, smtp_port: int, log_path) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": database_url, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp_port),
           "COLLECTIONS_LEASE_S": str(LEASE_S), "COLLECTIONS_INTERVAL_S": "1", "SMTP_RETRY_BASE_S": "0.01",
           "LOG_LEVEL": "warning"}
    with open(log_path, "wb") as log_file:
        return subprocess.Popen([sys.executable, "-m", "collections_bot"], cwd=ROOT, env=env,
                                stdout=log_file, stderr=subprocess.STDOUT)


async def test_two_daemons_and_a_slow_smtp_server_send_each_reminder_once(db_dsn, tmp_path):
    from aiosmtpd.controller import Controller

    sink = SlowMailSink()
    smtp = Controller(sink, hostname="127.0.0.1", port=free_port())
    smtp.start()
    server = start_server_process(db_dsn, tmp_path / "server.log")
    daemons: list[subprocess.Popen] = []
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            api = Api(channel)
            zone = zone_in_the_afternoon()
            loans = []
            for _ in range(REMINDERS):
                account = await api.open_account(limit_minor=1_000_000, time_zone=zone, locale="en")
                loans.append(await buy(api, account.account_id, 300_000))
        await plan_reminders(db_dsn, loans)

        daemons = [start_daemon(db_dsn, smtp.port, tmp_path / f"bot-{n}.log") for n in range(2)]
        deadline = time.monotonic() + 60
        while (await statuses(db_dsn))["SENT"] < REMINDERS and time.monotonic() < deadline:
            assert all(d.poll() is None for d in daemons), "a bot daemon exited"
            await asyncio.sleep(0.2)
        # Another lease's length for a resend, if there were to be one, to arrive.
        await asyncio.sleep(LEASE_S + 1)
    finally:
        for daemon in daemons:
            daemon.send_signal(signal.SIGTERM)
        codes = [daemon.wait(timeout=30) for daemon in daemons]
        smtp.stop()
        server.stop()
    logs = [(tmp_path / f"bot-{n}.log").read_text(errors="replace") for n in range(2)]
    assert codes == [0, 0], logs

    assert await statuses(db_dsn) == {"SENT": REMINDERS}
    received = collections.Counter(m["Message-ID"].strip() for m in sink.messages)
    expected = {f"<reminder.{loan.account_id}.{loan.installments[0].due_date}.D-3_EMAIL@credit.example>"
                for loan in loans}
    assert set(received) == expected
    assert [n for n in received.values() if n > 1] == [], "a reminder was sent more than once"
    # Renewed leases are never lost while sending.
    assert all('"attempt_lease_lost"' not in log for log in logs), logs
