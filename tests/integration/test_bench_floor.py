"""The benchmark's floor server on a real PostgreSQL: one statement must still make a
correct hold (limit taken once, never overspent, idempotent on its key)."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import grpc
import pytest

from bench import floor
from credit.v1 import checkout_pb2
from server.db import one


@pytest.fixture
async def served(db_dsn):
    server, pool, port = await floor.start_floor(db_dsn, "127.0.0.1:0", pool_size=8)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel.unary_unary(floor.PATH), pool  # raw bytes both ways
    finally:
        await server.stop(None)
        await pool.close()


async def new_account(pool: asyncpg.Pool, limit_minor: int) -> str:
    async with pool.acquire() as conn:
        (account,) = await floor.seed_accounts(conn, 1, limit_minor)
    return account


def request(account: str, amount: int, key: str | None = None) -> bytes:
    return checkout_pb2.AuthorizeRequest(account_id=account, amount_minor=amount, merchant_id="m", order_id="o",
                                         term_months=3, idempotency_key=key or uuid.uuid4().hex).SerializeToString()


async def held(pool: asyncpg.Pool, account: str) -> tuple[int, int]:
    return tuple(one(await pool.fetchrow("SELECT held, credit_limit FROM floor_accounts WHERE id = $1", account)))


async def test_a_hold_takes_the_limit_once_and_a_retry_returns_the_first_reply(served):
    call, pool = served
    account = await new_account(pool, 100_000)
    first_request = request(account, 60_000, "key-1")
    first = checkout_pb2.Authorization.FromString(await call(first_request))
    assert first.status == checkout_pb2.AUTHORIZATION_STATUS_PENDING
    assert (first.account_id, first.amount_minor) == (account, 60_000)

    retry = checkout_pb2.Authorization.FromString(await call(first_request))
    assert retry.authorization_id == first.authorization_id
    assert await held(pool, account) == (60_000, 100_000)

    over = checkout_pb2.Authorization.FromString(await call(request(account, 60_000)))
    assert over.status == checkout_pb2.AUTHORIZATION_STATUS_DECLINED
    assert over.decline_reason == checkout_pb2.DECLINE_REASON_INSUFFICIENT_LIMIT
    assert await held(pool, account) == (60_000, 100_000)
    statuses = await pool.fetch("SELECT status FROM floor_holds WHERE account_id = $1 ORDER BY created_at", account)
    assert sorted(r[0] for r in statuses) == [floor.STATUS_PENDING, floor.STATUS_DECLINED]

    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await call(request(account, 1_000, "key-1"))
    assert reused.value.code() == grpc.StatusCode.ALREADY_EXISTS


async def test_concurrent_calls_on_one_account_never_overspend(served):
    call, pool = served
    account = await new_account(pool, 10 * 1_000)
    replies = await asyncio.gather(*(call(request(account, 1_000), timeout=30) for _ in range(64)))
    statuses = [checkout_pb2.Authorization.FromString(r).status for r in replies]
    assert statuses.count(checkout_pb2.AUTHORIZATION_STATUS_PENDING) == 10
    assert statuses.count(checkout_pb2.AUTHORIZATION_STATUS_DECLINED) == 54
    assert await held(pool, account) == (10_000, 10_000)


@pytest.mark.parametrize("payload", [b"\xff", request("not-a-uuid", 100), request(str(uuid.uuid4()), 0)])
async def test_bad_requests_are_invalid_argument(served, payload):
    call, _ = served
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call(payload)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
