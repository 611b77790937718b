"""Integration tests run the real server code in this process, over a real gRPC channel
and a real PostgreSQL, with a clock the test moves."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest

from server.app import start_server
from server.clock import FixedClock
from server.config import Settings
from server.db.pool import create_pool
from server.payment_sim.book import Book
from server.payment_sim.service import serve
from server.payments.gateway import PaymentGateway
from tests.support import GATEWAY_DELAY_S, Api

START = datetime(2027, 1, 15, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
# The billing cycle of the tests' accounts unless a test chooses: statements on the 1st,
# bills due 14 days later. A purchase on 15 January is first billed on 1 February and
# falls due on the 15th of each month, a first period of exactly one month.
STATEMENT_DAY = 1
PAYMENT_DUE_DAYS = 14


@pytest.fixture
def billing_cycle() -> tuple[int, int | None]:
    """(statement day of the accounts `api` opens, the server's PAYMENT_DUE_DAYS); a
    module overrides it with (0, None) to keep the server's defaults."""
    return STATEMENT_DAY, PAYMENT_DUE_DAYS


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(START)


@pytest.fixture
def settings(billing_cycle) -> Settings:
    _, payment_due_days = billing_cycle
    return Settings.from_env({"GRPC_LISTEN_ADDR": "127.0.0.1:0", "HOLD_TTL_S": "1800", "LOG_LEVEL": "warning",
                              "AUTH_MODE": "insecure-local",
                              **({"PAYMENT_DUE_DAYS": str(payment_due_days)} if payment_due_days else {})})


@pytest.fixture
async def pool(db_dsn):
    pool = await create_pool(db_dsn, min_size=1, max_size=20, command_timeout_s=30)
    yield pool
    await pool.close()


@pytest.fixture
async def running(settings, pool, clock):
    running = await start_server(settings, pool, clock)
    yield running
    await running.server.stop(None)


@pytest.fixture
async def api(running, billing_cycle):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield Api(channel, statement_day=billing_cycle[0])


def balanced(pool, gateway=None):
    """A check to call after a scenario: fails with every broken rule of the books (and,
    given the gateway, of the books against its payments)."""
    from server.invariants import check

    async def assert_balanced():
        async with pool.acquire() as conn:
            violations = await check(conn, gateway)
        assert violations == [], "\n".join(map(str, violations))

    return assert_balanced


@pytest.fixture
async def books(pool):
    """Call after a scenario: fails with every broken rule of the books."""
    return balanced(pool)


@pytest.fixture
async def gateway_port():
    """A payment-gateway simulator of its own, in this process: its port."""
    book = Book(delay_s=GATEWAY_DELAY_S)
    server, port = await serve("127.0.0.1:0", book)
    yield port
    await server.stop(None)
    book.close()


@pytest.fixture
async def gateway(gateway_port):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway_port}") as channel:
        yield PaymentGateway(channel, timeout_s=5)


@pytest.fixture
def ledger_checked(pool, gateway):
    """The books, and the books against the gateway's payments, hold."""
    return balanced(pool, gateway)
