"""Payouts across processes: the server, the payment-gateway simulator and two
collections bot daemons, each its own process. Payouts whose call gets no answer, whose
result comes late or twice, are settled by the daemons' payments task, each once; one
daemon is killed on the way and the other finishes; the books match the gateway."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time

import asyncpg
import grpc

from credit.v1 import repayment_pb2
from server.invariants import check
from server.payments.gateway import PaymentGateway
from tests.e2e.conftest import free_port, start, start_server_process, wait_for_port
from tests.support import Api, key, repay

AMOUNT = 5_000


async def test_daemons_settle_payouts_the_server_left_pending_each_once(db_dsn, tmp_path):
    gateway_address = f"127.0.0.1:{free_port()}"
    simulator = start("server.payment_sim", tmp_path / "sim.log", "--listen", gateway_address, "--delay-ms", "500")
    daemons: list[subprocess.Popen] = []
    server = None
    try:
        await wait_for_port(gateway_address)
        server = start_server_process(db_dsn, tmp_path / "server.log", PAYMENT_GATEWAY_ADDR=gateway_address,
                                      PAYMENT_GATEWAY_TIMEOUT_MS="300")
        bot_env = {"DATABASE_URL": db_dsn, "PAYMENT_GATEWAY_ADDR": gateway_address, "COLLECTIONS_INTERVAL_S": "1",
                   "PAYMENT_RECONCILE_AFTER_S": "1", "SMTP_PORT": str(free_port())}
        daemons = [start("collections_bot", tmp_path / f"bot-{n}.log", **bot_env) for n in range(2)]
        async with grpc.aio.insecure_channel(server.address) as channel:
            api = Api(channel)
            payouts = {}
            # 4: no answer, paid later; 8: no answer, fails later; 5: PENDING, paid
            # later; 6: paid at once, and the result is sent twice; 0: paid at once.
            for digit in "48560":
                account = await api.open_account(limit_minor=100_000)
                await repay(api, account.account_id, AMOUNT)
                await api.repayment.BindPaymentMethod(repayment_pb2.BindPaymentMethodRequest(
                    account_id=account.account_id, kind=repayment_pb2.PAYMENT_METHOD_KIND_WALLET,
                    token=f"wallet-31{digit}", idempotency_key=key()), timeout=10)
                payouts[digit] = await api.repayment.WithdrawCreditBalance(
                    repayment_pb2.WithdrawCreditBalanceRequest(account_id=account.account_id, amount_minor=AMOUNT,
                                                               idempotency_key=key()), timeout=10)
            assert {d: p.status for d, p in payouts.items()} == {
                "4": repayment_pb2.PAYOUT_STATUS_PENDING, "8": repayment_pb2.PAYOUT_STATUS_PENDING,
                "5": repayment_pb2.PAYOUT_STATUS_PENDING, "6": repayment_pb2.PAYOUT_STATUS_SUCCEEDED,
                "0": repayment_pb2.PAYOUT_STATUS_SUCCEEDED}
            # One daemon dies at once, however far it got; the other carries on.
            daemons[0].send_signal(signal.SIGKILL)
            daemons[0].wait(timeout=10)

            async def statuses() -> dict[str, int]:
                return {d: (await api.repayment.GetPayout(repayment_pb2.GetPayoutRequest(payout_id=p.payout_id),
                                                          timeout=10)).status for d, p in payouts.items()}

            deadline = time.monotonic() + 60
            while repayment_pb2.PAYOUT_STATUS_PENDING in (await statuses()).values():
                assert daemons[1].poll() is None, "the bot daemon exited"
                assert time.monotonic() < deadline, await statuses()
                await asyncio.sleep(0.2)
            # Time for the duplicated result to arrive and be handled.
            await asyncio.sleep(1.5)
            assert await statuses() == {
                "4": repayment_pb2.PAYOUT_STATUS_SUCCEEDED, "8": repayment_pb2.PAYOUT_STATUS_FAILED,
                "5": repayment_pb2.PAYOUT_STATUS_SUCCEEDED, "6": repayment_pb2.PAYOUT_STATUS_SUCCEEDED,
                "0": repayment_pb2.PAYOUT_STATUS_SUCCEEDED}
            for digit, payout in payouts.items():
                account = await api.account(payout.account_id)
                assert account.credit_balance_minor == (AMOUNT if digit == "8" else 0)
        daemons[1].send_signal(signal.SIGTERM)
        assert daemons[1].wait(timeout=30) == 0, (tmp_path / "bot-1.log").read_text(errors="replace")
        conn = await asyncpg.connect(db_dsn)
        async with grpc.aio.insecure_channel(gateway_address) as gateway_channel:
            try:
                completing = await conn.fetchval(
                    "SELECT count(*) FROM journal_entries WHERE kind IN ('PAYOUT_SUCCEEDED', 'PAYOUT_FAILED')")
                violations = await check(conn, PaymentGateway(gateway_channel))
            finally:
                await conn.close()
        assert completing == len(payouts)
        assert violations == [], "\n".join(map(str, violations))
        log = (tmp_path / "bot-1.log").read_text(errors="replace")
        assert '"payment_sweep_finished"' in log or '"payment_event_applied"' in log, log
    finally:
        for daemon in daemons:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                daemon.wait(timeout=30)
        if server is not None:
            server.stop()
        simulator.send_signal(signal.SIGTERM)
        simulator.wait(timeout=30)
