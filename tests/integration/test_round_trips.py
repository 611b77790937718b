"""The hot path's budget in round trips to PostgreSQL, counted on the server's own
connections: Authorize in at most 2 (risk checks on), Capture and Repay in at most 3.
Each asyncpg query is one round trip once its statement is prepared, so every call is
made once to warm the statement cache before the counted one."""

from __future__ import annotations

import asyncio

import pytest

from credit.v1 import checkout_pb2, common_pb2
from server.db.pool import create_pool
from tests.support import Api, key, repay

AUTHORIZE_BUDGET = 2
CAPTURE_BUDGET = 3
REPAY_BUDGET = 3


# The query of server.app.DatabaseWatch's probe.
PROBE = "SELECT 1"


class Statements:
    def __init__(self) -> None:
        self.queries: list[str] = []

    async def attach(self, conn) -> None:
        conn.add_query_logger(lambda record: self.queries.append(record.query))

    async def count(self, call) -> tuple[object, list[str]]:
        await asyncio.sleep(0.05)  # loggers run from call_soon: let stragglers land
        self.queries.clear()
        result = await call()
        await asyncio.sleep(0.05)
        # The server's database watch probes its pool with `SELECT 1` every second (more
        # often under load); a probe that lands during the call is not the call's.
        return result, [" ".join(q.split())[:60] for q in self.queries if q != PROBE]


@pytest.fixture
def statements() -> Statements:
    return Statements()


@pytest.fixture
async def pool(db_dsn, statements):
    # One connection: every statement of a call runs on it, and none of another's.
    pool = await create_pool(db_dsn, min_size=1, max_size=1, command_timeout_s=30, init=statements.attach)
    yield pool
    await pool.close()


async def test_authorize_capture_and_repay_stay_within_their_round_trips(api: Api, statements, running):
    assert running.core.checkout._ruleset is not None, "the budget holds with the risk checks on"
    account = await api.open_account(limit_minor=10_000_000)
    device = "phone-" + key()
    for warm in (True, False):
        auth, authorize_queries = await statements.count(
            lambda: api.authorize(account.account_id, 150_000, 3, device_id=device, ip_address="203.0.113.7"))
        assert auth.status == checkout_pb2.AUTHORIZATION_STATUS_PENDING
        assert auth.risk.decision == checkout_pb2.RISK_DECISION_APPROVE
        captured, capture_queries = await statements.count(lambda auth=auth: api.capture(auth.authorization_id))
        assert captured.status == checkout_pb2.AUTHORIZATION_STATUS_CAPTURED
        repaid, repay_queries = await statements.count(lambda: repay(api, account.account_id, 20_000))
        assert repaid.applied_minor == 20_000
        by_loan, repay_loan_queries = await statements.count(
            lambda loan_id=captured.loan_id: repay(api, account.account_id, 10_000, loan_id=loan_id))
        assert by_loan.applied_minor == 10_000
        if warm:
            continue
        assert len(authorize_queries) <= AUTHORIZE_BUDGET, authorize_queries
        assert len(capture_queries) <= CAPTURE_BUDGET, capture_queries
        assert len(repay_queries) <= REPAY_BUDGET, repay_queries
        assert len(repay_loan_queries) <= REPAY_BUDGET, repay_loan_queries
        # The two-statement shape: no BEGIN/COMMIT round trips at all.
        assert not any(q.upper().startswith(("BEGIN", "COMMIT")) for q in authorize_queries + capture_queries)


async def test_a_declined_authorization_and_a_retry_cost_no_more(api: Api, statements):
    account = await api.open_account(limit_minor=100_000)
    await api.authorize(account.account_id, 200_000)  # warm
    declined, queries = await statements.count(lambda: api.authorize(account.account_id, 200_000))
    assert declined.decline_reason == checkout_pb2.DECLINE_REASON_INSUFFICIENT_LIMIT
    assert len(queries) <= AUTHORIZE_BUDGET, queries
    same = key()
    first = await api.authorize(account.account_id, 10_000, idempotency_key=same)
    again, queries = await statements.count(
        lambda: api.authorize(account.account_id, 10_000, idempotency_key=same, order_id=first.order_id))
    assert again == first
    assert len(queries) == 1, queries  # the read finds the first reply


async def test_a_payment_with_nothing_owed_stays_within_budget(api: Api, statements):
    """Repay of an account without loans keeps it all as credit balance, in budget."""
    account = await api.open_account(limit_minor=100_000, grade=common_pb2.RISK_GRADE_A)
    await repay(api, account.account_id, 1_000)  # warm
    repaid, queries = await statements.count(lambda: repay(api, account.account_id, 1_000))
    assert repaid.unapplied_minor == 1_000 and repaid.account.credit_balance_minor == 2_000
    assert len(queries) <= REPAY_BUDGET, queries
