"""Merchant settlement across processes: the server takes today's captures and a refund,
the collections bot (`run-once` a day later) settles the closed day and pays it through
the payment-gateway simulator, each its own process. A merchant whose payee the gateway
refuses fails; an operator names another payee and asks again from the command line,
and the next run pays it. Every figure is read back over gRPC, and the books match the
gateway's record."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import grpc

from credit.v1 import checkout_pb2
from server.invariants import check
from server.payments.gateway import PaymentGateway
from tests.e2e.conftest import gateway_and_server, run_bot_once
from tests.e2e.test_commands import command
from tests.support import Api, buy, refund


async def test_the_bot_settles_and_pays_a_closed_day_and_an_operator_mends_a_refused_payee(db_dsn, tmp_path):
    async with gateway_and_server(db_dsn, tmp_path) as (gateway_address, server):
        registered = command(db_dsn, "server.merchants", "register", "travel-2210", "--category", "TRAVEL")
        assert registered.returncode == 0, registered.stderr
        async with grpc.aio.insecure_channel(server.address) as channel:
            api = Api(channel)
            accounts = [(await api.open_account(limit_minor=1_000_000)).account_id for _ in range(2)]
            # travel-2210 (0: the gateway pays it); mall-4403 (3: the gateway does not know it).
            loan = await buy(api, accounts[0], 250_000, merchant_id="travel-2210")
            await buy(api, accounts[1], 120_000, merchant_id="travel-2210")
            await refund(api, loan.loan_id, 50_000)
            await buy(api, accounts[1], 80_000, merchant_id="mall-4403")
            # The day of the captures and the refund in Shanghai (the server's clock is the
            # wall clock); they are settled once it is closed, a day later.
            booked = loan.created_at.ToDatetime(tzinfo=UTC)
            day = booked.astimezone(ZoneInfo("Asia/Shanghai")).date()
            tomorrow = datetime.now(UTC) + timedelta(days=1)

            ran = run_bot_once(db_dsn, gateway_address, tomorrow)
            assert "settled 2 merchant-days" in ran and "'merchant_completed': 2" in ran, ran

            async def settlement(merchant_id: str) -> checkout_pb2.MerchantSettlement:
                return await api.checkout.GetMerchantSettlement(checkout_pb2.GetMerchantSettlementRequest(
                    merchant_id=merchant_id, date=day.isoformat()), timeout=10)

            travel = await settlement("travel-2210")
            # TRAVEL, 80 bps of 370,000: 2,960; 370,000 - 50,000 - 2,960 paid.
            assert (travel.captured_minor, travel.refunded_minor, travel.fee_minor) == (370_000, 50_000, 2_960)
            assert (travel.status, travel.paid_minor, travel.payment_attempts) == (
                checkout_pb2.MERCHANT_SETTLEMENT_STATUS_PAID, 317_040, 1)
            mall = await settlement("mall-4403")
            assert (mall.status, mall.failure_reason, mall.paid_minor) == (
                checkout_pb2.MERCHANT_SETTLEMENT_STATUS_FAILED,
                checkout_pb2.MERCHANT_PAYMENT_FAILURE_REASON_MERCHANT_INVALID, 0)
            # Run again: nothing more is settled or paid.
            again = run_bot_once(db_dsn, gateway_address, tomorrow + timedelta(minutes=5))
            assert "settled 0 merchant-days" in again and "merchant_completed" not in again, again

            # The operator registers the merchant with a payee the gateway knows and asks again.
            for args in (("register", "mall-4403", "--category", "GENERAL"), ("payee", "mall-4403", "mall-4403-ccb-1"),
                         ("pay-again", "mall-4403", "--date", day.isoformat())):
                done = command(db_dsn, "server.merchants", *args)
                assert done.returncode == 0, done.stderr
            assert "(attempt 2)" in done.stdout
            paid = run_bot_once(db_dsn, gateway_address, tomorrow + timedelta(minutes=10))
            assert "'merchant_completed': 1" in paid, paid
            mall = await settlement("mall-4403")
            # GENERAL, 60 bps of 80,000: 480.
            assert (mall.status, mall.paid_minor, mall.payee_id, mall.payment_attempts) == (
                checkout_pb2.MERCHANT_SETTLEMENT_STATUS_PAID, 79_520, "mall-4403-ccb-1", 2)
        conn = await asyncpg.connect(db_dsn)
        async with grpc.aio.insecure_channel(gateway_address) as gateway_channel:
            try:
                violations = await check(conn, PaymentGateway(gateway_channel))
            finally:
                await conn.close()
        assert violations == [], "\n".join(map(str, violations))
