"""The client's deadline bounds the work: calls with deadlines of 1 to 500 ms, all at once, over a real
server either finish or end DEADLINE_EXCEEDED, never half done; a retry with the same
key then completes each exactly once, and the books balance."""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter

import asyncpg
import grpc

from credit.v1 import checkout_pb2, repayment_pb2
from server import invariants
from tests.e2e.conftest import start_server_process
from tests.support import Api, key

DEADLINES_S = (0.001, 0.005, 0.02, 0.05, 0.1, 0.2, 0.5)


async def test_tight_deadlines_leave_nothing_half_done(db_dsn, tmp_path):
    server = start_server_process(db_dsn, tmp_path / "server.log", LOG_LEVEL="info")
    rng = random.Random(7)
    firsts: Counter = Counter()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            api = Api(channel)
            accounts = [(await api.open_account(limit_minor=50_000_000)).account_id for _ in range(12)]

            in_flight = asyncio.Semaphore(100)

            async def once_then_again(call, request):
                """The call under a tight deadline, then the same request (same key) with
                a generous one; both replies, the first None if it did not finish."""
                first = None
                try:
                    async with in_flight:
                        first = await call(request, timeout=rng.choice(DEADLINES_S))
                    firsts["OK"] += 1
                except grpc.aio.AioRpcError as error:
                    assert error.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED,
                                            grpc.StatusCode.UNAVAILABLE), (error.code(), error.details())
                    firsts[error.code().name] += 1
                return first, await call(request, timeout=30)

            authorizations = [checkout_pb2.AuthorizeRequest(
                account_id=rng.choice(accounts), merchant_id="m-1", order_id="order-" + key(), amount_minor=10_000,
                term_months=3, idempotency_key=key()) for _ in range(300)]
            held = await asyncio.gather(*(once_then_again(api.checkout.Authorize, r) for r in authorizations))
            for first, again in held:
                assert again.status == checkout_pb2.AUTHORIZATION_STATUS_PENDING
                if first is not None:
                    assert first == again  # the retry found the first call's work, not a second hold

            captures = [checkout_pb2.CaptureRequest(authorization_id=again.authorization_id, idempotency_key=key())
                        for _, again in held[:150]]
            captured = await asyncio.gather(*(once_then_again(api.checkout.Capture, r) for r in captures))
            assert all(again.status == checkout_pb2.AUTHORIZATION_STATUS_CAPTURED for _, again in captured)

            repays = [repayment_pb2.RepayRequest(account_id=account, amount_minor=1_500,
                                                 channel=repayment_pb2.PAYMENT_CHANNEL_WALLET, idempotency_key=key())
                      for account in accounts for _ in range(10)]
            repaid = await asyncio.gather(*(once_then_again(api.repayment.Repay, r) for r in repays))
            for first, again in repaid:
                if first is not None:
                    assert first == again
    finally:
        assert server.stop() == 0, server.log()

    # Tight deadlines did cut calls short, and the server said so in its log.
    assert firsts["DEADLINE_EXCEEDED"] > 0 and firsts["OK"] > 0, firsts
    events = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    assert any(e.get("code") == "DEADLINE_EXCEEDED" for e in events if e["event"] == "rpc_finished")
    assert not any(e["event"] == "rpc_failed" for e in events)

    conn = await asyncpg.connect(db_dsn)
    try:
        # One hold per Authorize request and one repayment per Repay request, whatever the deadlines did.
        assert await conn.fetchval("SELECT count(*) FROM authorizations") == len(authorizations)
        assert await conn.fetchval("SELECT count(*) FROM repayments") == len(repays)
        assert await invariants.check(conn) == []
    finally:
        await conn.close()
