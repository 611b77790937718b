"""A book of a few hundred loans built through the real API, with the collections bot's
passes moving time forward: the book the portfolio tests check the report against, and
the demo book of docs/risk.md.

    python -m tests.portfolio_book [--year 2025]   # into DATABASE_URL (migrated first)

From January to September of the year (2027 in the tests: their clock is fixed; the
demo book is built in a past year, so that the report's commands, which go by the
system clock, can report on it), Asia/Shanghai, each month:
  - the 10th, 10:00: January to April, customers buy (3, 6 or 12 months, flat fee);
    then payers, and defaulters before the month they stop, pay what is due that day;
  - 20 February: refunds (partial and full) of some payers' January loans;
  - 15 May: some accounts change grade; 15 June: two defaulters get a penalty waived;
  - the last day, 22:00: a bot pass (ageing, penalties, charge-offs, bucket changes);
    at 22:30 late payers pay, in one month of three, all they owe on installments due
    by then, penalties included (the pass has just booked them up to yesterday; today's
    is not owed once they pay today); then `month_end_hook(day)` is called, for the
    tests' snapshots. The bot records the late payers' buckets before they pay.

Every account is in Asia/Shanghai, so "the end of the day" is the same instant for all.
Every account's statements are on the 1st and its bills fall due 9 days later
(`STATEMENT_DAY`, `PAYMENT_DUE_DAYS`): a purchase on the 10th falls due on the 10th of
each following month, a first period of exactly one month.
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import os
import random
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from uuid import UUID

import asyncpg

from credit.v1 import checkout_pb2, collections_pb2, common_pb2, credit_line_pb2
from tests.support import Api, free_port, key, refund, repay

SHANGHAI = timezone(timedelta(hours=8))
YEAR = 2027
CAPTURE_MONTHS = (1, 2, 3, 4)
LAST_MONTH = 9
GRADES = ("A", "B", "C", "D", "E")
# Share of payers, late payers and defaulters by grade.
BEHAVIOURS = {"A": (85, 10, 5), "B": (75, 15, 10), "C": (60, 20, 20), "D": (45, 25, 30), "E": (35, 25, 40)}
TERMS = {"A": (3, 6, 12), "B": (3, 6, 12), "C": (3, 6, 12), "D": (3, 6), "E": (3,)}
# The bot of the book: a 1 % penalty cap (PENALTY_CAP_BPS) stops each installment's
# penalty within 20 days, which keeps the monthly passes' catch-up short; the insured
# share is 30 %. The server of the book reads the same INSURANCE_SHARE_BPS.
BOT_SETTINGS = {"PENALTY_CAP_BPS": "100", "INSURANCE_SHARE_BPS": "3000"}
STATEMENT_DAY = 1
PAYMENT_DUE_DAYS = 9
# What the server that the book is built through must be started with.
SERVER_SETTINGS = {"GRPC_LISTEN_ADDR": "127.0.0.1:0", "AUTH_MODE": "insecure-local",
                   "INSURANCE_SHARE_BPS": BOT_SETTINGS["INSURANCE_SHARE_BPS"],
                   "PAYMENT_DUE_DAYS": str(PAYMENT_DUE_DAYS)}

# (month, day) of the one-off events.
REFUNDS_ON = (2, 20)
GRADE_CHANGES_ON = (5, 15)
WAIVERS_ON = (6, 15)

OWED_BY_ACCOUNT = """
SELECT l.account_id, sum(i.principal_minor + i.fee_minor + i.penalty_minor
                         - i.principal_paid_minor - i.fee_paid_minor - i.penalty_paid_minor)::bigint AS owed_minor
FROM installments i JOIN loans l ON l.loan_id = i.loan_id
WHERE l.status = 'ACTIVE' AND i.due_date <= $1
GROUP BY l.account_id
"""


def at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=SHANGHAI)


def month_end(month: int, year: int = YEAR) -> date:
    return date(year, month, calendar.monthrange(year, month)[1])


@dataclass
class Loan:
    loan_id: UUID
    month: int
    principal_minor: int
    term_months: int
    refunded_minor: int = 0


@dataclass
class Customer:
    account_id: UUID
    grade: str
    behaviour: str  # PAYER, LATE or DEFAULTER
    # DEFAULTER: the first month whose installment it does not pay.
    stop_month: int = 0
    # LATE: the months it pays in (on the last day, after the bot's pass).
    pay_months: frozenset[int] = frozenset()
    loans: list[Loan] = field(default_factory=list)
    # The grade from GRADE_CHANGES_ON, if it changed then.
    new_grade: str | None = None

    def grade_on(self, day: date) -> str:
        return self.new_grade if self.new_grade and (day.month, day.day) >= GRADE_CHANGES_ON else self.grade

    def pays_on_the_10th(self, month: int) -> bool:
        return self.behaviour == "PAYER" or (self.behaviour == "DEFAULTER" and month < self.stop_month)


@dataclass
class Script:
    customers: list[Customer]

    @property
    def loans(self) -> list[tuple[Customer, Loan]]:
        return [(c, loan) for c in self.customers for loan in c.loans]


MonthEnd = Callable[[date], Awaitable[None]]


async def _gather(calls, limit: int = 8) -> list:
    gate = asyncio.Semaphore(limit)

    async def one(call):
        async with gate:
            return await call

    return await asyncio.gather(*(one(c) for c in calls))


def plan(seed: int, accounts: int) -> list[tuple[str, str, int, frozenset[int], list[tuple[int, int, int]]]]:
    """Who the customers are and what they buy: (grade, behaviour, stop month, pay months,
    [(month, amount, term)]), decided by `seed` alone."""
    rng = random.Random(seed)
    people = []
    for n in range(accounts):
        grade = GRADES[n % len(GRADES)] if n < 2 * len(GRADES) else rng.choice("AABBBCCCDDE")
        payer, late, _ = BEHAVIOURS[grade]
        roll = rng.randrange(100)
        behaviour = "PAYER" if roll < payer else "LATE" if roll < payer + late else "DEFAULTER"
        stop = rng.choice((2, 2, 3, 4, 5)) if behaviour == "DEFAULTER" else 0
        offset = rng.randrange(3)
        pays = frozenset(m for m in range(2, LAST_MONTH + 1) if (m + offset) % 3 == 0) if behaviour == "LATE" else (
            frozenset())
        buys = []
        for month in CAPTURE_MONTHS:
            if rng.random() < (0.75 if month == 1 else 0.5):
                # 600.00 to 2,500.00: no purchase is five times another (the risk rules
                # would send it to review).
                amount = rng.randrange(600, 2_501) * 100
                buys.append((month, amount, rng.choice(TERMS[grade])))
        if not buys:
            buys.append((1, 100_000, 3))
        people.append((grade, behaviour, stop, pays, buys))
    return people


async def build(api: Api, pool: asyncpg.Pool, run_pass: Callable[[], Awaitable[object]], clock,
                *, seed: int = 2027, accounts: int = 130, year: int = YEAR,
                month_end_hook: MonthEnd | None = None) -> Script:
    """Build the book; `run_pass` is one collections bot pass at the clock's time."""
    clock.set(at(date(year, 1, 5), 10))
    people = plan(seed, accounts)

    async def open_one(person) -> Customer:
        grade, behaviour, stop, pays, _ = person
        account = await api.open_account(limit_minor=5_000_000,
                                          grade=common_pb2.RiskGrade.Value(f"RISK_GRADE_{grade}"),
                                          statement_day=STATEMENT_DAY)
        return Customer(UUID(account.account_id), grade, behaviour, stop, pays)

    customers: list[Customer] = await _gather([open_one(p) for p in people])
    buys = {c.account_id: p[4] for c, p in zip(customers, people, strict=True)}

    async def buy(customer: Customer, month: int, amount: int, term: int) -> None:
        auth = await api.authorize(str(customer.account_id), amount, term)
        if auth.status != checkout_pb2.AUTHORIZATION_STATUS_PENDING:
            raise AssertionError(f"a purchase of the book was declined: {auth}")
        captured = await api.capture(auth.authorization_id)
        customer.loans.append(Loan(UUID(captured.loan_id), month, amount, term))

    async def pay_due(day: date, who: list[Customer]) -> None:
        async with pool.acquire() as conn:
            owed = {r["account_id"]: r["owed_minor"] for r in await conn.fetch(OWED_BY_ACCOUNT, day)}
        await _gather([repay(api, str(c.account_id), owed[c.account_id]) for c in who if owed.get(c.account_id)])

    for month in range(1, LAST_MONTH + 1):
        tenth = date(year, month, 10)
        clock.set(at(tenth, 10))
        if month in CAPTURE_MONTHS:
            await _gather([buy(c, m, amount, term) for c in customers for m, amount, term in buys[c.account_id]
                           if m == month])
        await pay_due(tenth, [c for c in customers if c.pays_on_the_10th(month)])
        if month == REFUNDS_ON[0]:
            clock.set(at(date(year, *REFUNDS_ON), 10))
            await _refunds(api, customers)
        if month == GRADE_CHANGES_ON[0]:
            clock.set(at(date(year, *GRADE_CHANGES_ON), 10))
            await _grade_changes(api, customers)
        if month == WAIVERS_ON[0]:
            clock.set(at(date(year, *WAIVERS_ON), 10))
            await _waivers(api, pool, customers)
        end = month_end(month, year)
        clock.set(at(end, 22))
        await run_pass()
        clock.set(at(end, 22, 30))
        await pay_due(end, [c for c in customers if c.behaviour == "LATE" and month in c.pay_months])
        if month_end_hook is not None:
            await month_end_hook(end)
    return Script(customers)


async def _refunds(api: Api, customers: list[Customer]) -> None:
    """Payers' January loans: every fifth gets 20 % back (off its last, unpaid
    installment), two are returned whole."""
    january = [(c, loan) for c in customers if c.behaviour == "PAYER" for loan in c.loans if loan.month == 1]
    calls = []
    for n, (_, loan) in enumerate(january[:30]):
        if n % 5 == 0:
            loan.refunded_minor = loan.principal_minor // 5
        elif n in (1, 2):
            loan.refunded_minor = loan.principal_minor
        else:
            continue
        calls.append(refund(api, str(loan.loan_id), loan.refunded_minor))
    await _gather(calls)


async def _grade_changes(api: Api, customers: list[Customer]) -> None:
    """Six accounts move a grade: three payers up, three defaulters down."""
    up = [c for c in customers if c.behaviour == "PAYER" and c.grade in "BCD"][:3]
    down = [c for c in customers if c.behaviour == "DEFAULTER" and c.grade in "ABC"][:3]
    calls = []
    for customer, step in [(c, -1) for c in up] + [(c, 1) for c in down]:
        customer.new_grade = GRADES[GRADES.index(customer.grade) + step]
        calls.append(api.lines.AdjustLimit(credit_line_pb2.AdjustLimitRequest(
            account_id=str(customer.account_id), credit_limit_minor=5_000_000, reason="portfolio review",
            risk_grade=common_pb2.RiskGrade.Value(f"RISK_GRADE_{customer.new_grade}"), idempotency_key=key()),
            timeout=10))
    await _gather(calls)


async def _waivers(api: Api, pool: asyncpg.Pool, customers: list[Customer]) -> None:
    """Half the unpaid penalty of the first installment of two defaulters' first loans."""
    async with pool.acquire() as conn:
        for customer in [c for c in customers if c.behaviour == "DEFAULTER" and c.stop_month == 2][:2]:
            loan = customer.loans[0]
            unpaid = await conn.fetchval(
                "SELECT penalty_minor - penalty_paid_minor FROM installments WHERE loan_id = $1 AND sequence = 1",
                loan.loan_id)
            if unpaid >= 2:
                await api.collections.WaivePenalty(collections_pb2.WaivePenaltyRequest(
                    loan_id=str(loan.loan_id), sequence=1, amount_minor=unpaid // 2, reason="hardship",
                    idempotency_key=key()), timeout=10)


async def _demo(dsn: str, year: int) -> None:
    import grpc

    from collections_bot.__main__ import build as build_bot
    from collections_bot.config import BotSettings
    from collections_bot.mail_sink import start as start_mail_sink
    from server.app import start_server
    from server.clock import FixedClock
    from server.config import Settings
    from server.db.migrate import migrate
    from server.db.pool import create_pool
    from server.logging import configure_logging

    configure_logging("warning")
    connection = await asyncpg.connect(dsn)
    try:
        await migrate(connection)
        if await connection.fetchval("SELECT count(*) FROM loans"):
            sys.exit("the database already has loans: build the demo book into an empty one")
    finally:
        await connection.close()
    clock = FixedClock(at(date(year, 1, 5), 10))
    pool = await create_pool(dsn, min_size=1, max_size=10, command_timeout_s=60)
    controller, _ = start_mail_sink("127.0.0.1", free_port())
    running = await start_server(Settings.from_env(SERVER_SETTINGS), pool, clock)
    bot = build_bot(pool, BotSettings.from_env({"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(controller.port),
                                                **BOT_SETTINGS}), clock)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            script = await build(Api(channel), pool, bot.run, clock, year=year)
    finally:
        await running.server.stop(None)
        await pool.close()
        controller.stop()
    print(f"built {len(script.customers)} accounts and {len(script.loans)} loans, January to September {year}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--year", type=int, default=datetime.now(SHANGHAI).year - 1,
                        help="a past year (default: last year)")
    arguments = parser.parse_args()
    url = os.environ.get("DATABASE_URL")
    if not url:
        sys.exit("DATABASE_URL: set it to an empty database for the demo book")
    asyncio.run(_demo(url, arguments.year))
