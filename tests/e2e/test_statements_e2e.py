"""Statements as operators and callers see them: the bot process issues and emails a
statement to a real SMTP server (which refuses it once with a 4xx), and the server
process answers GetStatement and ListStatements over gRPC."""

from __future__ import annotations

import uuid
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import grpc
import pytest
from aiosmtpd.controller import Controller

from collections_bot.mail_sink import MailSink
from credit.v1 import repayment_pb2
from server.domain.billing import BillingCycle
from server.invariants import check
from tests.e2e.conftest import free_port, run_once
from tests.e2e.test_bot import bot_env
from tests.support import buy, repay

ADDRESS = "bill.reader@example.com"


class RefusingOnce(MailSink):
    """Refuses the first statement to ADDRESS with a 4xx, as a busy mailbox would."""

    def __init__(self) -> None:
        super().__init__()
        self.statement_tries = 0

    async def handle_DATA(self, server, session, envelope) -> str:
        if ADDRESS in envelope.rcpt_tos and b"<statement." in envelope.content:
            self.statement_tries += 1
            if self.statement_tries == 1:
                return "451 4.3.0 Mailbox busy, try later"
        return await super().handle_DATA(server, session, envelope)


def statements_to_the_reader(sink: MailSink) -> list:
    """The statement emails to ADDRESS (reminders about the loan may go there too)."""
    return [m for m in sink.messages if ADDRESS in m["To"] and m["Message-ID"].strip().startswith("<statement.")]


async def test_the_bot_emails_a_statement_once_and_get_statement_serves_it(api, server):
    sink = RefusingOnce()
    smtp = Controller(sink, hostname="127.0.0.1", port=free_port())
    smtp.start()
    try:
        account = await api.open_account(limit_minor=1_000_000, email=ADDRESS, locale="en")
        loan = await buy(api, account.account_id, 300_000, merchant_id="jd-mall", order_id="order-e2e")
        await repay(api, account.account_id, 12_345)
        conn = await asyncpg.connect(server.database_url)
        try:
            row = await conn.fetchrow("SELECT statement_day, payment_due_days, created_at, time_zone FROM accounts "
                                      "WHERE account_id = $1", uuid.UUID(account.account_id))
        finally:
            await conn.close()
        assert row is not None
        zone = ZoneInfo(row["time_zone"])
        cycle = BillingCycle(row["statement_day"], row["payment_due_days"])
        statement_date = cycle.statement_date_after(row["created_at"].astimezone(zone).date())
        as_of = datetime.combine(statement_date, time(10), zone)

        output = run_once(bot_env(server.database_url, smtp.port), as_of)
        assert "issued" in output
        mine = statements_to_the_reader(sink)
        assert len(mine) == 1 and sink.statement_tries == 2
        message = mine[0]
        assert message["Message-ID"].strip() == (
            f"<statement.{account.account_id}.{statement_date.isoformat()}@credit.example>")
        assert message["Subject"].startswith(f"Your statement of {statement_date.isoformat()}")
        text = message.get_body(("plain",)).get_content()
        assert "order-e2e" in text and "Payment" in text and "CNY 123.45" in text

        # Again at the same time, and a day later: nothing is issued or sent twice.
        run_once(bot_env(server.database_url, smtp.port), as_of)
        run_once(bot_env(server.database_url, smtp.port), as_of + timedelta(days=1))
        assert len(statements_to_the_reader(sink)) == 1
    finally:
        smtp.stop()

    period = statement_date.isoformat()[:7]
    got = await api.repayment.GetStatement(repayment_pb2.GetStatementRequest(
        account_id=account.account_id, period=period), timeout=10)
    assert got.statement_date == statement_date.isoformat()
    assert got.payment_due_date == cycle.due_date(statement_date).isoformat()
    assert (got.opening_minor, got.purchases_minor, got.fees_minor, got.payments_minor) == (
        0, 300_000, loan.total_fee_minor, 12_345)
    assert got.closing_minor == 300_000 + loan.total_fee_minor - 12_345
    assert [line.kind for line in got.lines] == [repayment_pb2.STATEMENT_LINE_KIND_PURCHASE,
                                                 repayment_pb2.STATEMENT_LINE_KIND_FEE,
                                                 repayment_pb2.STATEMENT_LINE_KIND_PAYMENT]
    assert got.lines[0].merchant_id == "jd-mall" and got.lines[0].method == loan.method
    listed = await api.repayment.ListStatements(repayment_pb2.ListStatementsRequest(
        account_id=account.account_id), timeout=10)
    assert list(listed.statements) == [got] and listed.next_page_token == ""
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await api.repayment.GetStatement(repayment_pb2.GetStatementRequest(
            account_id=account.account_id, period="2027/01"), timeout=10)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "period" in (bad.value.details() or "")

    conn = await asyncpg.connect(server.database_url)
    try:
        assert await check(conn) == []
    finally:
        await conn.close()
