"""Two servers on one database racing on one account: writes lose the version race
across processes, retry in the account's turn, then in the locked mode, and still no
limit is overspent, no key runs twice and the books balance."""

from __future__ import annotations

import asyncio
import collections

import grpc

from credit.v1 import checkout_pb2
from server.app import start_server
from server.db.pool import create_pool
from tests.support import Api, key, repay

PENDING = checkout_pb2.AUTHORIZATION_STATUS_PENDING


async def test_two_servers_hammering_one_account_overspend_nothing(api: Api, running, settings, clock, db_dsn,
                                                                   books, pool):
    statements: collections.Counter[str] = collections.Counter()

    async def count(conn) -> None:
        conn.add_query_logger(lambda record: statements.update([record.query.split(None, 1)[0].upper()]))

    second_pool = await create_pool(db_dsn, min_size=1, max_size=10, command_timeout_s=30, init=count)
    second = await start_server(settings, second_pool, clock)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as channel:
            other = Api(channel)
            account = await api.open_account(limit_minor=1_000_000)  # room for 10 holds of 100,000
            keys = [key() for _ in range(30)]

            async def authorize(client: Api, idempotency_key: str):
                return await client.authorize(account.account_id, 100_000, 1, idempotency_key=idempotency_key,
                                              order_id="order-" + idempotency_key)

            # Every key is sent to both servers at once: 60 calls, 30 distinct requests.
            results = await asyncio.gather(*(authorize(client, k) for k in keys for client in (api, other)))
            by_key: dict[str, set[str]] = collections.defaultdict(set)
            for k, result in zip([k for k in keys for _ in (0, 1)], results, strict=True):
                by_key[k].add(result.authorization_id)
            assert all(len(ids) == 1 for ids in by_key.values()), "a key ran twice"
            approved = {r.authorization_id for r in results if r.status == PENDING}
            assert len(approved) == 10
            assert (await api.account(account.account_id)).held_minor == 1_000_000

            # Captures on one server while the other repays the same account.
            captures = [api.capture(a) for a in sorted(approved)]
            repays = [repay(other, account.account_id, 5_000) for _ in range(10)]
            await asyncio.gather(*captures, *repays)
            after = await api.account(account.account_id)
            assert after.held_minor == 0
            assert after.available_minor == 1_000_000 - after.outstanding_principal_minor
    finally:
        await second.server.stop(None)
        await second_pool.close()
    # The race really happened: the second server had to take the locked mode.
    assert statements["BEGIN"] > 0, statements
    await books()
