"""Auto-debit across processes: the server takes the purchases and binds the cards, the
collections bot (`run-once` on the due date's morning) debits them through the
payment-gateway simulator, each its own process. One debit is paid at once; the other's
answer never reaches the bot before it exits, as if it had died between asking and
recording: the next run neither debits again nor loses the payment. The books match the
gateway's record."""

from __future__ import annotations

import ast
import re
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import grpc

from credit.v1 import common_pb2
from server.invariants import check
from server.payments.gateway import PaymentGateway
from tests.e2e.conftest import gateway_and_server, run_bot_once
from tests.support import Api, bind, buy

# The bot gives up on an answer after 0.5 s and looks a payment up a minute after asking.
SLOW_GATEWAY = {"PAYMENT_GATEWAY_TIMEOUT_MS": "500", "PAYMENT_RECONCILE_AFTER_S": "60"}


def reported(output: str) -> tuple[dict, dict]:
    """What a run-once said its auto-debits and its sweep did."""
    found = re.search(r"auto-debits (\{[^}]*\}), payments swept (\{[^}]*\})", output)
    assert found is not None, output
    return ast.literal_eval(found[1]), ast.literal_eval(found[2])


async def test_the_bot_debits_on_the_due_date_and_its_next_run_settles_a_debit_it_did_not_hear_back_from(
        db_dsn, tmp_path):
    async with gateway_and_server(db_dsn, tmp_path, "--delay-ms", "300") as (gateway_address, server):
        async with grpc.aio.insecure_channel(server.address) as channel:
            api = Api(channel)
            borrowers = {}
            # 0: paid at once; 4: no answer before the bot gives up, paid a moment later.
            for digit in "04":
                account_id = (await api.open_account(limit_minor=1_000_000)).account_id
                loan = await buy(api, account_id, 300_000)
                await bind(api, account_id, f"card-6222-0000-1111-000{digit}", auto_debit=True)
                borrowers[digit] = (account_id, loan)
            due = {date.fromisoformat(loan.installments[0].due_date) for _, loan in borrowers.values()}
            assert len(due) == 1, due
            morning = datetime.combine(due.pop(), time(8, 30), tzinfo=ZoneInfo("Asia/Shanghai"))

            first = run_bot_once(db_dsn, gateway_address, morning, **SLOW_GATEWAY)
            assert reported(first) == ({"completed": 1, "not_final": 1}, {}), first
            # Two minutes on: no new try while the first is in flight; the sweep finds it paid.
            second = run_bot_once(db_dsn, gateway_address, morning + timedelta(minutes=2), **SLOW_GATEWAY)
            assert reported(second) == ({}, {"completed": 1}), second
            third = run_bot_once(db_dsn, gateway_address, morning + timedelta(minutes=4), **SLOW_GATEWAY)
            assert reported(third) == ({}, {}), third
            for _, loan in borrowers.values():
                after = await api.loan(loan.loan_id)
                assert after.installments[0].status == common_pb2.INSTALLMENT_STATUS_PAID
                assert after.installments[1].status != common_pb2.INSTALLMENT_STATUS_PAID
        conn = await asyncpg.connect(db_dsn)
        async with grpc.aio.insecure_channel(gateway_address) as gateway_channel:
            gateway = PaymentGateway(gateway_channel)
            try:
                orders = await conn.fetch("SELECT order_id, status FROM payment_orders WHERE kind = 'DEBIT'")
                violations = await check(conn, gateway)
            finally:
                await conn.close()
            assert sorted(o["status"] for o in orders) == ["SUCCEEDED", "SUCCEEDED"]
            payments = (await gateway.list_payments(page_size=100)).payments
        # One payment at the gateway per order: nothing was debited twice.
        assert sorted(p.idempotency_key for p in payments) == sorted(str(o["order_id"]) for o in orders)
        assert violations == [], "\n".join(map(str, violations))
