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


async def test_a_penalty_booked_between_a_repayments_read_and_write_is_kept(api, clock, pool, books, monkeypatch):
    """The collections bot books a penalty under the account's lock while a repayment
    is deciding: locking moves the account's version, so the repayment reads again
    instead of writing installments as they were before the penalty."""
    import uuid
    from datetime import date, datetime, timedelta, timezone

    from server.db import accounts as account_rows
    from server.db import collections as collection_rows
    from server.db import ledger as ledger_rows
    from server.db import repayments as repayment_rows
    from server.domain import ledger
    from tests.support import buy

    account = await api.open_account(limit_minor=1_000_000)
    loan = await buy(api, account.account_id, 300_000)
    clock.set(datetime(2027, 2, 20, 10, tzinfo=timezone(timedelta(hours=8))))
    real_read = repayment_rows.repay_read
    booked: list[bool] = []

    async def read_then_penalty(conn, account_id, loan_id, k):
        result = await real_read(conn, account_id, loan_id, k)
        if not booked:
            booked.append(True)
            async with pool.acquire() as other, other.transaction():
                await account_rows.get(other, account_id, lock=True)
                assert await collection_rows.book_accrual(other, uuid.UUID(loan.loan_id), 1, date(2027, 2, 19),
                                                          account_id, 101_800, 51, clock.now())
                await ledger_rows.post(other, account_id, uuid.UUID(loan.loan_id), ledger.penalty_assessed(51),
                                       clock.now())
        return result

    monkeypatch.setattr(repayment_rows, "repay_read", read_then_penalty)
    await repay(api, account.account_id, 50_000)
    assert booked
    async with pool.acquire() as conn:
        penalty = await conn.fetchval("SELECT penalty_minor FROM installments WHERE loan_id = $1 AND sequence = 1",
                                      uuid.UUID(loan.loan_id))
    assert penalty == 51
    await books()


async def test_a_captured_order_stays_taken_after_its_hold_time(api, clock):
    from datetime import timedelta

    from tests.support import buy

    first, second = await api.open_account(limit_minor=1_000_000), await api.open_account(limit_minor=1_000_000)
    await buy(api, first.account_id, 300_000, order_id="order-bought")
    clock.advance(timedelta(minutes=31))
    for account_id, amount in ((second.account_id, 300_000), (first.account_id, 900_000)):
        try:
            await api.authorize(account_id, amount, order_id="order-bought")
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.ALREADY_EXISTS, error.details()
        else:
            raise AssertionError("a captured order was authorized again")


async def test_a_lapsed_hold_counts_in_no_risk_fact(api, clock):
    """The write books a lapsed hold's expiry; the facts must not count it as live."""
    from datetime import timedelta

    from credit.v1 import risk_pb2

    account = await api.open_account(limit_minor=1_000_000)
    await api.authorize(account.account_id, 300_000)
    clock.advance(timedelta(minutes=31))
    await api.authorize(account.account_id, 200_000)
    decisions = (await api.risk.ListRiskDecisions(risk_pb2.ListRiskDecisionsRequest(
        account_id=account.account_id))).decisions
    facts = decisions[-1].inputs
    assert (facts.account_approvals_last_hour, facts.account_amount_last_day_minor,
            facts.device_known_for_account) == (0, 0, False)
