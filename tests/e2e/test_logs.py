"""The logs of a whole scenario (server and bot, at debug level) carry no contact data,
tokens or card-like numbers."""

from __future__ import annotations

import subprocess
import sys
from datetime import date, datetime, timedelta, timezone

import grpc

from credit.v1 import credit_line_pb2
from tests.e2e.conftest import ROOT, start_server_process
from tests.e2e.test_bot import bot_env, smtp  # noqa: F401  (the SMTP sink fixture)
from tests.support import Api, buy, key, repay

EMAIL, PHONE, NAME, CARD = "secret.person@example.org", "+8613987654321", "Ouyang Xiu", "6222021234567890123"


async def test_a_whole_scenario_leaves_no_contact_data_in_the_logs(db_dsn, tmp_path, smtp):  # noqa: F811
    _, smtp_port = smtp
    server = start_server_process(db_dsn, tmp_path / "server.log", LOG_LEVEL="debug")
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            api = Api(channel)
            account = await api.lines.OpenAccount(credit_line_pb2.OpenAccountRequest(
                customer_id="cust-" + key(), idempotency_key=key(),
                contact=credit_line_pb2.Contact(name=NAME, email=EMAIL, phone=PHONE)))
            await api.lines.AdjustLimit(credit_line_pb2.AdjustLimitRequest(
                account_id=account.account_id, credit_limit_minor=1_000_000, reason=f"card {CARD} on file",
                idempotency_key=key()))
            # A bad request that echoes what it was given must not echo it into the log.
            try:
                await api.lines.OpenAccount(credit_line_pb2.OpenAccountRequest(
                    customer_id=EMAIL, idempotency_key=key(),
                    contact=credit_line_pb2.Contact(name=NAME, email=EMAIL, phone=PHONE, time_zone=EMAIL)))
            except grpc.aio.AioRpcError:
                pass
            loan = await buy(api, account.account_id, 300_000)
            await repay(api, account.account_id, 50_000)
        due = date.fromisoformat(loan.installments[0].due_date)
        as_of = datetime(due.year, due.month, due.day, 10, tzinfo=timezone(timedelta(hours=8))) + timedelta(days=8)
        bot = subprocess.run([sys.executable, "-m", "collections_bot", "run-once", "--as-of", as_of.isoformat()],
                             cwd=ROOT, env=bot_env(db_dsn, smtp_port, LOG_LEVEL="debug"), capture_output=True,
                             text=True, timeout=120)
        assert bot.returncode == 0, bot.stdout + bot.stderr
    finally:
        server.stop()
    logs = server.log() + bot.stdout + bot.stderr
    assert '"event": "rpc_finished"' in logs and "pass_finished" in logs
    for secret in (EMAIL, "secret.person", PHONE, "13987654321", NAME, CARD):
        assert secret not in logs, f"{secret!r} reached the logs"
