"""A server killed in the middle of checkout traffic loses nothing that committed and
leaves nothing half-written; retries after the restart apply at most once."""

from __future__ import annotations

import asyncio
import signal

import asyncpg
import grpc

from credit.v1 import checkout_pb2
from server.invariants import check
from tests.e2e.conftest import start_server_process
from tests.support import Api


async def test_sigkill_mid_traffic_then_retries_keep_the_books_whole(db_dsn, tmp_path):
    server = start_server_process(db_dsn, tmp_path / "first.log")
    async with grpc.aio.insecure_channel(server.address) as channel:
        api = Api(channel)
        accounts = [await api.open_account(limit_minor=10_000_000) for _ in range(4)]
        requests = [
            checkout_pb2.AuthorizeRequest(
                account_id=accounts[i % 4].account_id, merchant_id="merchant-1", order_id=f"order-{i}",
                amount_minor=10_000 + i, term_months=3, idempotency_key=f"authorize-{i}")
            for i in range(200)
        ]

        async def authorize_and_capture(request):
            auth = await api.checkout.Authorize(request, timeout=20)
            await api.checkout.Capture(checkout_pb2.CaptureRequest(
                authorization_id=auth.authorization_id, idempotency_key="capture-" + request.order_id), timeout=20)

        calls = [asyncio.ensure_future(authorize_and_capture(r)) for r in requests]
        # Kill once some pairs have committed and most are still to come, whatever the speed.
        deadline = asyncio.get_running_loop().time() + 60
        while sum(c.done() for c in calls) < 20 and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(10)
        results = await asyncio.gather(*calls, return_exceptions=True)
    assert any(r is None for r in results), "some pairs should have completed before the kill"
    assert any(isinstance(r, grpc.aio.AioRpcError) for r in results), "the kill should cut some calls off"

    conn = await asyncpg.connect(db_dsn)
    try:
        assert await check(conn) == []
        before = await conn.fetchval("SELECT count(*) FROM authorizations")
    finally:
        await conn.close()

    # The callers retry everything with the same keys against a restarted server.
    restarted = start_server_process(db_dsn, tmp_path / "second.log")
    try:
        async with grpc.aio.insecure_channel(restarted.address) as channel:
            api = Api(channel)
            replies = [await api.checkout.Authorize(r, timeout=20) for r in requests]
            for reply in replies:
                if reply.status == checkout_pb2.AUTHORIZATION_STATUS_PENDING:
                    await api.checkout.Capture(checkout_pb2.CaptureRequest(
                        authorization_id=reply.authorization_id, idempotency_key="capture-" + reply.order_id))
            # Retrying a capture that committed before the kill returns its first reply.
            for reply in replies:
                again = await api.checkout.Capture(checkout_pb2.CaptureRequest(
                    authorization_id=reply.authorization_id, idempotency_key="capture-" + reply.order_id))
                assert again.status == checkout_pb2.AUTHORIZATION_STATUS_CAPTURED
            totals = [await api.account(a.account_id) for a in accounts]
    finally:
        assert restarted.stop() == 0

    conn = await asyncpg.connect(db_dsn)
    try:
        assert await check(conn) == []
        # One authorization and one loan per order: nothing ran twice.
        assert await conn.fetchval("SELECT count(*) FROM authorizations") == len(requests) >= before
        assert await conn.fetchval("SELECT count(DISTINCT order_id) FROM loans") == len(requests)
        assert await conn.fetchval("SELECT count(*) FROM loans") == len(requests)
    finally:
        await conn.close()
    expected = sum(r.amount_minor for r in requests)
    assert sum(t.outstanding_principal_minor for t in totals) == expected
    assert sum(t.held_minor for t in totals) == 0
