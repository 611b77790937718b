"""The portfolio report and stress tests over a book of a few hundred loans built
through the API, with the collections bot's passes moving time from January to
September 2027 (tests/portfolio_book.py). The book is built once for the module.

Three independent views check the report:
  - the live system's view at each month's end, taken as the book was being built (the
    loans' days past due by the server's own rules, the cases the bot had recorded, the
    accounts' principal): a report as of a past month's end, computed afterwards from
    what was booked, must agree with what the system said that evening;
  - a second, simple implementation over the same rows (SQL in `ORACLE`);
  - the script of the book: a vintage cell and a roll-rate cell worked out by hand from
    who was meant to pay when.
"""

from __future__ import annotations

import asyncio
import csv
import importlib.util
import io
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date
from typing import cast
from uuid import UUID

import asyncpg
import grpc
import pytest
import pytest_asyncio

from collections_bot.__main__ import build as build_bot
from collections_bot.config import BotSettings
from collections_bot.mail_sink import start as start_mail_sink
from credit.v1 import common_pb2, risk_pb2
from server.app import start_server
from server.clock import FixedClock
from server.config import Settings
from server.db import portfolio as portfolio_rows
from server.db.pool import create_pool
from server.domain.loans import InstallmentState, bucket, days_past_due
from server.domain.losses import shipped_scenario
from server.risk import report as report_command
from server.risk import stress as stress_command
from server.services import convert
from tests.conftest import create_database, drop_database, with_database
from tests.portfolio_book import (
    BOT_SETTINGS,
    LAST_MONTH,
    SERVER_SETTINGS,
    YEAR,
    Script,
    at,
    build,
    free_port,
    month_end,
)
from tests.support import Api, field_violations

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.timeout(300)]

INSURANCE_SHARE_BPS = int(BOT_SETTINGS["INSURANCE_SHARE_BPS"])
MONTH_ENDS = [month_end(m) for m in range(1, LAST_MONTH + 1)]


@dataclass
class Evening:
    """What the live system said at a month's end, after the bot's pass."""

    # loan_id -> (account_id, outstanding principal, days past due), live loans only
    loans: dict[UUID, tuple[UUID, int, int]]
    grades: dict[UUID, str]
    principal: dict[UUID, int]
    cases: dict[UUID, str]


@dataclass
class World:
    api: Api
    dsn: str
    pool: asyncpg.Pool
    script: Script
    running: object
    clock: FixedClock
    evenings: dict[date, Evening] = field(default_factory=dict)


async def _evening(pool: asyncpg.Pool, day: date) -> Evening:
    async with pool.acquire() as conn:
        installments = defaultdict(list)
        for r in await conn.fetch("SELECT * FROM installments ORDER BY loan_id, sequence"):
            installments[r["loan_id"]].append(InstallmentState(
                r["sequence"], r["due_date"], r["principal_minor"], r["fee_minor"], r["principal_paid_minor"],
                r["fee_paid_minor"], r["penalty_minor"], r["penalty_paid_minor"]))
        loans = {}
        for r in await conn.fetch("SELECT loan_id, account_id FROM loans WHERE status = 'ACTIVE'"):
            parts = installments[r["loan_id"]]
            principal = sum(i.principal_minor - i.principal_paid_minor for i in parts)
            if principal > 0:
                loans[r["loan_id"]] = (r["account_id"], principal, days_past_due(parts, day))
        accounts = await conn.fetch("SELECT account_id, risk_grade, outstanding_principal_minor FROM accounts")
        cases = {r["account_id"]: r["bucket"]
                 for r in await conn.fetch("SELECT account_id, bucket FROM collection_cases")}
    return Evening(loans, {r["account_id"]: r["risk_grade"] for r in accounts},
                   {r["account_id"]: r["outstanding_principal_minor"] for r in accounts}, cases)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def world(pg_admin_dsn, template_dsn):
    name = await create_database(pg_admin_dsn)
    dsn = with_database(pg_admin_dsn, name)
    pool = await create_pool(dsn, min_size=1, max_size=12, command_timeout_s=60)
    clock = FixedClock(at(date(YEAR, 1, 5), 10))
    controller, _ = start_mail_sink("127.0.0.1", free_port())
    settings = Settings.from_env({**SERVER_SETTINGS, "LOG_LEVEL": "warning"})
    running = await start_server(settings, pool, clock)
    bot = build_bot(pool, BotSettings.from_env({"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(controller.port),
                                                **BOT_SETTINGS}), clock)
    evenings: dict[date, Evening] = {}

    async def month_end_hook(day: date) -> None:
        evenings[day] = await _evening(pool, day)

    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            api = Api(channel)
            script = await build(api, pool, bot.run, clock, month_end_hook=month_end_hook)
            clock.set(at(date(YEAR, LAST_MONTH, 30), 23))
            yield World(api, dsn, pool, script, running, clock, evenings)
    finally:
        await running.server.stop(None)
        await pool.close()
        controller.stop()
        await drop_database(pg_admin_dsn, name)


async def report(world: World, day: date | None) -> risk_pb2.PortfolioReport:
    return await world.api.risk.GetPortfolioReport(
        risk_pb2.GetPortfolioReportRequest(as_of_date=day.isoformat() if day else ""), timeout=60)


def grade_name(value: common_pb2.RiskGrade.ValueType) -> str:
    return common_pb2.RiskGrade.Name(value).removeprefix("RISK_GRADE_")


def bucket_name(value: common_pb2.DelinquencyBucket.ValueType) -> str:
    return common_pb2.DelinquencyBucket.Name(value).removeprefix("DELINQUENCY_BUCKET_")


def half_up_bps(part: int, whole: int) -> int:
    """part / whole in basis points, halves up."""
    return (2 * part * 10_000 + whole) // (2 * whole)


def exposure_of(reply: risk_pb2.PortfolioReport) -> dict[tuple[str, str], tuple[int, int]]:
    return {(grade_name(e.grade), bucket_name(e.bucket)): (e.loans, e.outstanding_principal_minor)
            for e in reply.exposure}


# -- the second implementation: SQL over the rows, as of the end of $1 in Shanghai ------------

ORACLE = """
WITH cut AS (SELECT (($1::date + 1)::timestamp AT TIME ZONE 'Asia/Shanghai') AS end_of_day),
loans_then AS (
    SELECT l.loan_id, l.account_id, l.start_date, l.principal_minor,
           coalesce((SELECT sum(f.amount_minor) FROM refunds f, cut
                     WHERE f.loan_id = l.loan_id AND f.created_at < cut.end_of_day), 0) AS refunded_minor,
           coalesce((SELECT sum(ra.amount_minor) FROM repayment_allocations ra
                     JOIN repayments r ON r.repayment_id = ra.repayment_id, cut
                     WHERE ra.loan_id = l.loan_id AND ra.component = 'PRINCIPAL'
                       AND r.created_at < cut.end_of_day), 0) AS principal_paid_minor,
           (SELECT (e.detail->>'principal_minor')::bigint FROM case_events e, cut
            WHERE e.account_id = l.account_id AND e.kind = 'LOAN_CHARGED_OFF'
              AND e.detail->>'loan_id' = l.loan_id::text AND e.created_at < cut.end_of_day) AS written_off_minor
    FROM loans l, cut WHERE l.created_at < cut.end_of_day
),
owed AS (
    SELECT i.loan_id, i.due_date,
           i.principal_minor + i.fee_minor
           + coalesce((SELECT sum(p.amount_minor) FROM penalty_accruals p, cut
                       WHERE p.loan_id = i.loan_id AND p.sequence = i.sequence AND p.created_at < cut.end_of_day), 0)
           - coalesce((SELECT sum(w.amount_minor) FROM penalty_waivers w, cut
                       WHERE w.loan_id = i.loan_id AND w.sequence = i.sequence AND w.created_at < cut.end_of_day), 0)
           - coalesce((SELECT sum(ra.amount_minor) FROM repayment_allocations ra
                       JOIN repayments r ON r.repayment_id = ra.repayment_id, cut
                       WHERE ra.loan_id = i.loan_id AND ra.sequence = i.sequence
                         AND r.created_at < cut.end_of_day), 0) AS owed_minor
    FROM installments i
)
SELECT t.loan_id, t.account_id, t.start_date, t.principal_minor, t.written_off_minor,
       CASE WHEN t.written_off_minor IS NOT NULL OR t.refunded_minor >= t.principal_minor THEN 0
            ELSE t.principal_minor - t.refunded_minor - t.principal_paid_minor END AS principal_left_minor,
       coalesce($1::date - (SELECT min(o.due_date) FROM owed o
                            WHERE o.loan_id = t.loan_id AND o.due_date < $1::date AND o.owed_minor > 0), 0) AS dpd
FROM loans_then t
"""


async def oracle(world: World, day: date) -> list[asyncpg.Record]:
    async with world.pool.acquire() as conn:
        return await conn.fetch(ORACLE, day)


def grades_on(world: World, day: date) -> dict[UUID, str]:
    return {c.account_id: c.grade_on(day) for c in world.script.customers}


# -- the book ------------------------------------------------------------------------------

async def test_the_book_is_a_few_hundred_loans_across_grades_months_and_behaviours(world):
    loans = world.script.loans
    assert 250 <= len(loans) <= 450
    assert {c.grade for c, _ in loans} == set("ABCDE")
    assert {loan.month for _, loan in loans} == {1, 2, 3, 4}
    assert {c.behaviour for c in world.script.customers} == {"PAYER", "LATE", "DEFAULTER"}
    final = await report(world, MONTH_ENDS[-1])
    assert final.totals.live_loans > 0
    # Loans were late in every bucket at some month's end, and some were charged off.
    seen = {b for day in MONTH_ENDS for (_, b) in exposure_of(await report(world, day))}
    assert seen == {"CURRENT", "M1", "M2", "M3", "M4_PLUS"}
    async with world.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM loans WHERE status = 'CHARGED_OFF'") > 0
    assert any(p.bad_principal_minor for v in final.vintages for p in v.points)


# -- as of a past day, the report says what the system said that evening ----------------------

@pytest.mark.parametrize("month", [2, 4, 6, 9])
async def test_a_report_as_of_a_past_month_end_matches_that_evening(world, month):
    day = month_end(month)
    evening = world.evenings[day]
    reply = await report(world, day)
    expected: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for account_id, principal, dpd in evening.loans.values():
        cell = expected[(evening.grades[account_id], bucket(dpd).value)]
        cell[0] += 1
        cell[1] += principal
    assert exposure_of(reply) == {k: tuple(v) for k, v in expected.items()}
    assert reply.totals.live_loans == len(evening.loans)
    assert reply.totals.outstanding_principal_minor == sum(evening.principal.values())
    assert reply.as_of_date == day.isoformat()


async def test_the_exposure_adds_up_to_the_ledger_and_today_matches_the_reserve_pool(world):
    reply = await report(world, None)
    assert reply.as_of_date == MONTH_ENDS[-1].isoformat()
    assert sum(e.outstanding_principal_minor for e in reply.exposure) == reply.totals.outstanding_principal_minor
    pool = await world.api.risk.GetReservePool(risk_pb2.GetReservePoolRequest(), timeout=10)
    assert reply.totals.reserve_balance_minor == pool.balance_minor
    assert reply.totals.outstanding_principal_minor == pool.outstanding_principal_minor
    assert reply.expected_loss.reserve_balance_minor == pool.balance_minor
    async with world.pool.acquire() as conn:
        owed = await conn.fetchrow(
            "SELECT sum(i.fee_minor - i.fee_paid_minor)::bigint AS fee, "
            "sum(i.penalty_minor - i.penalty_paid_minor)::bigint AS penalty, count(DISTINCT l.account_id) AS accounts "
            "FROM installments i JOIN loans l ON l.loan_id = i.loan_id WHERE l.status = 'ACTIVE'")
    assert (reply.totals.fees_owed_minor, reply.totals.penalties_owed_minor) == (owed["fee"], owed["penalty"])
    assert reply.totals.accounts_with_debt == owed["accounts"]
    assert len(reply.current_only) >= 2


# -- against the second implementation ------------------------------------------------------

@pytest.mark.parametrize("month", [3, 5, 8])
async def test_exposure_matches_the_simple_implementation(world, month):
    day = month_end(month)
    grades = grades_on(world, day)
    expected: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for r in await oracle(world, day):
        if r["principal_left_minor"] > 0:
            cell = expected[(grades[r["account_id"]], bucket(r["dpd"]).value)]
            cell[0] += 1
            cell[1] += r["principal_left_minor"]
    assert exposure_of(await report(world, day)) == {k: tuple(v) for k, v in expected.items()}


async def test_vintages_match_the_simple_implementation(world):
    final = await report(world, MONTH_ENDS[-1])
    expected: dict[tuple[str, int], int] = defaultdict(int)
    captured: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for k, day in enumerate(MONTH_ENDS):
        for r in await oracle(world, day):
            month = r["start_date"].strftime("%Y-%m")
            if k == len(MONTH_ENDS) - 1:
                captured[month][0] += 1
                captured[month][1] += r["principal_minor"]
            on_book = (day.year - r["start_date"].year) * 12 + day.month - r["start_date"].month
            if on_book < 0:
                continue
            if r["written_off_minor"] is not None:
                bad = r["written_off_minor"]
            else:
                bad = r["principal_left_minor"] if r["principal_left_minor"] > 0 and r["dpd"] >= 30 else 0
            expected[(month, on_book)] += bad
    assert {v.capture_month: [v.loans, v.principal_minor] for v in final.vintages} == dict(captured)
    for v in final.vintages:
        assert [p.months_on_book for p in v.points] == list(range(len(v.points)))
        assert len(v.points) == LAST_MONTH - int(v.capture_month[5:]) + 1
        for p in v.points:
            assert p.bad_principal_minor == expected[(v.capture_month, p.months_on_book)], (v.capture_month, p)
            assert p.bad_share_bps == half_up_bps(p.bad_principal_minor, v.principal_minor)


async def test_roll_rates_match_the_recorded_cases_of_each_evening(world):
    final = await report(world, MONTH_ENDS[-1])
    months = sorted({r.month for r in final.roll_rates})
    assert months == [f"{YEAR}-{m:02d}" for m in range(LAST_MONTH - 5, LAST_MONTH + 1)]
    expected: dict[tuple[str, str, str], int] = defaultdict(int)
    for month in range(LAST_MONTH - 5, LAST_MONTH + 1):
        start, end = world.evenings[month_end(month - 1)], world.evenings[month_end(month)]
        for account_id, principal in start.principal.items():
            if principal:
                expected[(f"{YEAR}-{month:02d}", start.cases.get(account_id, "CURRENT"),
                          end.cases.get(account_id, "CURRENT"))] += principal
    got = {(r.month, bucket_name(r.from_bucket), bucket_name(r.to_bucket)): r.principal_minor
           for r in final.roll_rates}
    assert got == dict(expected)
    for r in final.roll_rates:
        row = sum(p for (m, f, _), p in expected.items() if m == r.month and f == bucket_name(r.from_bucket))
        assert r.from_principal_minor == row


# -- by hand, from the script ----------------------------------------------------------------

async def test_one_vintage_cell_by_hand(world):
    """January's loans at the end of March (2 months on book). The first installment
    fell due on 10 February. Bad (30+ days late) at the end of 31 March are exactly:
    defaulters who stopped with February (nothing paid since 10 February: 49 days) and
    late payers who paid neither on 28 February nor on 31 March (49 days). Neither had
    paid a fen of principal, and none of their loans was refunded: their bad principal
    is what they borrowed in January. Everyone else was under 30 days: payers paid on the
    10th, defaulters stopping later paid on 10 February, late payers who paid on 28
    February owed only the 10 March installment (21 days), and those who paid on 31
    March owed nothing due."""
    bad = [c for c in world.script.customers
           if (c.behaviour == "DEFAULTER" and c.stop_month == 2)
           or (c.behaviour == "LATE" and not {2, 3} & c.pay_months)]
    bad_principal = sum(loan.principal_minor for c in bad for loan in c.loans if loan.month == 1)
    january = [loan for c in world.script.customers for loan in c.loans if loan.month == 1]
    assert bad_principal > 0
    assert not any(loan.refunded_minor for c in bad for loan in c.loans)
    captured = sum(loan.principal_minor for loan in january)
    vintage = next(v for v in (await report(world, MONTH_ENDS[-1])).vintages if v.capture_month == f"{YEAR}-01")
    point = vintage.points[2]
    assert (point.observed_on, point.bad_principal_minor) == (f"{YEAR}-03-31", bad_principal)
    assert (vintage.loans, vintage.principal_minor) == (len(january), captured)
    assert point.bad_share_bps == half_up_bps(bad_principal, captured)


async def test_one_roll_rate_cell_by_hand(world):
    """March, from M1 to M2. The bot's pass of 28 February (before the late payers
    paid, at 22:30) recorded M1 for every account with a January loan whose 10 February
    installment was unpaid: the defaulters who stopped with February and all late
    payers. The pass of 31 March found the defaulters and the late payers who had not
    paid on 28 February 49 days late (M2); those who had paid on 28 February owed only
    the 10 March installment (21 days, M1). Each weighs its principal at the end of 28
    February: what it borrowed in January and February, less, for a late payer who paid
    that evening, the principal of its January loans' first installments."""
    def weight(c, first_installments):
        paid = sum(first_installments[loan.loan_id] for loan in c.loans if loan.month == 1) if (
            c.behaviour == "LATE" and 2 in c.pay_months) else 0
        return sum(loan.principal_minor for loan in c.loans if loan.month <= 2) - paid

    with_january = [c for c in world.script.customers if any(loan.month == 1 for loan in c.loans)]
    in_m1 = [c for c in with_january if (c.behaviour == "DEFAULTER" and c.stop_month == 2) or c.behaviour == "LATE"]
    to_m2 = [c for c in in_m1 if c.behaviour == "DEFAULTER" or 2 not in c.pay_months]
    assert to_m2 and len(to_m2) < len(in_m1)  # some rolled on, some stayed
    first_installments = {}
    for c in in_m1:
        for loan in c.loans:
            if loan.month == 1:
                schedule = (await world.api.loan(str(loan.loan_id))).installments
                first_installments[loan.loan_id] = schedule[0].principal_minor
    reply = await report(world, month_end(6))
    cell = next(r for r in reply.roll_rates if r.month == f"{YEAR}-03" and bucket_name(r.from_bucket) == "M1"
                and bucket_name(r.to_bucket) == "M2")
    assert cell.principal_minor == sum(weight(c, first_installments) for c in to_m2)
    assert cell.from_principal_minor == sum(weight(c, first_installments) for c in in_m1)
    assert cell.share_bps == half_up_bps(cell.principal_minor, cell.from_principal_minor)
    assert 0 < cell.share_bps < 10_000


# -- expected loss and stress ----------------------------------------------------------------

async def test_expected_loss_is_pd_times_lgd_times_ead_by_grade(world):
    final = await report(world, None)
    loss = final.expected_loss
    assert (loss.policy_version, loss.scorecard_version, loss.scenario) == ("loss-policy-v1", "scorecard-v1", "policy")
    assert loss.exposure_minor == final.totals.outstanding_principal_minor
    assert loss.expected_loss_minor == sum(g.expected_loss_minor for g in loss.grades)
    assert loss.insurance_share_bps == INSURANCE_SHARE_BPS
    assert loss.insured_loss_minor == half_up_bps(loss.expected_loss_minor * INSURANCE_SHARE_BPS, 10_000 * 10_000)
    assert loss.net_expected_loss_minor == loss.expected_loss_minor - loss.insured_loss_minor
    assert loss.shortfall_minor == max(0, loss.net_expected_loss_minor - loss.reserve_balance_minor)
    # Riskier grades have higher PDs; later buckets are likelier to be lost.
    assert [g.pd_bps for g in loss.grades] == sorted(g.pd_bps for g in loss.grades)
    assert [b.loss_rate_bps for b in loss.buckets] == sorted(b.loss_rate_bps for b in loss.buckets)
    # Each grade's loss again from the reply's rounded PDs and loss rates: within a
    # basis point of its exposure.
    lgd = loss.lgd_bps / 10_000
    rates = {bucket_name(b.bucket): b.loss_rate_bps / 10_000 for b in loss.buckets}
    for g in loss.grades:
        pd = g.pd_bps / 10_000
        again = 0.0
        for (grade, b), (_, ead) in exposure_of(final).items():
            if grade == grade_name(g.grade):
                chance = pd if b == "CURRENT" else 1.0 if b == "CHARGED_OFF" else max(pd, rates[b])
                again += ead * chance * lgd
        assert abs(g.expected_loss_minor - again) <= g.exposure_minor / 10_000 + 1, g
    assert sum(g.exposure_minor for g in loss.grades) == loss.exposure_minor


async def test_stress_scenarios_are_ordered_and_change_no_row(world):
    before = await _fingerprint(world.pool)
    results = {}
    for name in ("baseline", "downturn", "severe"):
        scenario = shipped_scenario(name)
        request = risk_pb2.RunStressTestRequest(scenario=risk_pb2.StressScenario(
            name=scenario.name, pd_multipliers=[
                risk_pb2.GradeMultiplier(grade=common_pb2.RiskGrade.Value(f"RISK_GRADE_{g}"), multiplier_bps=m)
                for g, m in scenario.pd_multiplier_bps.items()],
            roll_rate_multiplier_bps=scenario.roll_rate_multiplier_bps))
        if scenario.lgd_bps is not None:
            request.scenario.lgd_bps = scenario.lgd_bps
        results[name] = (await world.api.risk.RunStressTest(request, timeout=60)).stressed
    await report(world, None)
    assert await _fingerprint(world.pool) == before
    baseline, downturn, severe = results["baseline"], results["downturn"], results["severe"]
    assert severe.shortfall_minor >= downturn.shortfall_minor >= baseline.shortfall_minor
    assert severe.expected_loss_minor > downturn.expected_loss_minor > baseline.expected_loss_minor
    assert severe.insured_loss_minor > downturn.insured_loss_minor > baseline.insured_loss_minor
    # The baseline is the policy as it stands: the report's expected loss.
    final = await report(world, None)
    assert baseline.expected_loss_minor == final.expected_loss.expected_loss_minor
    assert baseline.shortfall_minor == final.expected_loss.shortfall_minor


async def test_the_stress_test_runs_in_a_read_only_transaction(world, monkeypatch):
    async def writes(conn, as_of):
        await conn.execute("UPDATE accounts SET updated_at = updated_at")

    monkeypatch.setattr(portfolio_rows, "ledger_totals", writes)
    portfolio = world.running.core.portfolio
    async with world.pool.acquire() as conn:
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await portfolio.stress(conn, shipped_scenario("severe"), None)
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
            await portfolio.report(conn, None)


async def _fingerprint(pool: asyncpg.Pool) -> dict[str, tuple[int, str]]:
    """Every table's row count and a checksum of its rows."""
    async with pool.acquire() as conn:
        tables = [r["tablename"]
                  for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        found = {}
        for table in tables:
            row = await conn.fetchrow(
                "SELECT count(*) AS n, md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) AS sum "
                f'FROM "{table}" t')
            assert row is not None
            found[table] = (row["n"], row["sum"])
    assert len(found) > 15
    return found


# -- bad input -----------------------------------------------------------------------------

async def test_a_bad_or_future_date_is_refused_naming_the_field(world):
    for value in ("2027-13-01", "20270930", "yesterday", f"{YEAR}-10-02"):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await world.api.risk.GetPortfolioReport(risk_pb2.GetPortfolioReportRequest(as_of_date=value), timeout=10)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(error.value) == ["as_of_date"]


async def test_a_bad_scenario_is_refused_naming_every_field(world):
    request = risk_pb2.RunStressTestRequest(scenario=risk_pb2.StressScenario(
        name="", pd_multipliers=[risk_pb2.GradeMultiplier(grade=common_pb2.RISK_GRADE_A, multiplier_bps=200_000),
                                 risk_pb2.GradeMultiplier(grade=cast(common_pb2.RiskGrade.ValueType, 99),
                                                          multiplier_bps=10_000)],
        lgd_bps=10_001, roll_rate_multiplier_bps=-1), as_of_date="2027-02-30")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await world.api.risk.RunStressTest(request, timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(field_violations(error.value)) == sorted([
        "scenario.name", "scenario.pd_multipliers[0].multiplier_bps", "scenario.pd_multipliers[1].grade",
        "scenario.lgd_bps", "scenario.roll_rate_multiplier_bps", "as_of_date"])
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await world.api.risk.RunStressTest(risk_pb2.RunStressTestRequest(), timeout=10)
    assert field_violations(error.value) == ["scenario"]


# -- the commands ----------------------------------------------------------------------------

@pytest.fixture
def command(world, monkeypatch, capsys):
    """Run `python -m server.risk.<module>` in this process, against the book, at the
    end of the book's last day; its exit code, standard output and standard error."""
    monkeypatch.setenv("DATABASE_URL", world.dsn)
    monkeypatch.setenv("INSURANCE_SHARE_BPS", str(INSURANCE_SHARE_BPS))
    monkeypatch.setenv("LOG_LEVEL", "warning")
    for module in (report_command, stress_command):
        monkeypatch.setattr(module, "SystemClock", lambda: FixedClock(at(MONTH_ENDS[-1], 23)))
        # The process's logging stays the test run's: configured here, it would write to
        # this test's captured stderr, closed once the test ends, under later tests' logs.
        monkeypatch.setattr(module, "configure_logging", lambda level: None)

    async def run(module, *argv: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            await asyncio.to_thread(module.main, list(argv))
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
            if isinstance(exit_.code, str):
                print(exit_.code, file=sys.stderr)
        out, err = capsys.readouterr()
        return code, out, err

    return run


async def test_the_report_command_says_what_the_rpc_says_as_json_csv_and_table(world, command):
    day = month_end(6)
    reply = await report(world, day)
    code, out, _ = await command(report_command, "--as-of", day.isoformat(), "--format", "json")
    assert code == 0
    data = json.loads(out)
    assert data["as_of_date"] == day.isoformat()
    assert data["totals"] == {
        "accounts_with_debt": reply.totals.accounts_with_debt, "live_loans": reply.totals.live_loans,
        "outstanding_principal_minor": reply.totals.outstanding_principal_minor,
        "fees_owed_minor": reply.totals.fees_owed_minor, "penalties_owed_minor": reply.totals.penalties_owed_minor,
        "reserve_balance_minor": reply.totals.reserve_balance_minor}
    assert {(e["grade"], e["bucket"]): (e["loans"], e["outstanding_principal_minor"])
            for e in data["exposure"]} == exposure_of(reply)
    assert [[p["bad_share_bps"] for p in v["points"]] for v in data["vintages"]] == [
        [p.bad_share_bps for p in v.points] for v in reply.vintages]
    assert data["expected_loss"]["shortfall_minor"] == reply.expected_loss.shortfall_minor

    code, out, _ = await command(report_command, "--as-of", day.isoformat(), "--format", "csv")
    rows = list(csv.reader(io.StringIO(out)))
    assert code == 0 and rows[0] == ["section", "row", "column", "value"]
    principal = sum(int(r[3]) for r in rows if r[0] == "exposure_principal_minor")
    assert principal == reply.totals.outstanding_principal_minor
    assert ["totals", "", "live_loans", str(reply.totals.live_loans)] in rows

    code, out, _ = await command(report_command, "--as-of", day.isoformat())
    assert code == 0
    assert out.startswith(f"Portfolio as of {day.isoformat()}")
    assert f"{reply.totals.outstanding_principal_minor / 100:,.2f}" in out
    assert "Vintages" in out and "Roll rates" in out and "shortfall" in out


async def test_the_report_command_refuses_a_future_date(world, command):
    code, _, err = await command(report_command, "--as-of", f"{YEAR + 1}-01-01")
    assert code != 0 and "as_of_date: must not be after today" in err


async def test_the_plot_needs_matplotlib_and_says_so(world, command, tmp_path, monkeypatch):
    path = tmp_path / "book.png"
    if importlib.util.find_spec("matplotlib") is not None:
        code, _, err = await command(report_command, "--plot", str(path))
        assert code == 0, err
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        path.unlink()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    code, out, err = await command(report_command, "--plot", str(path))
    assert code == 2 and not path.exists()
    assert "--plot needs matplotlib" in err and "'.[report]'" in err
    assert out.startswith("Portfolio as of")  # the report itself is still printed


async def test_the_stress_command_runs_a_shipped_or_a_written_scenario(world, command, tmp_path):
    code, out, _ = await command(stress_command, "severe", "--format", "json")
    assert code == 0
    severe = json.loads(out)
    request = risk_pb2.RunStressTestRequest(scenario=convert.stress_scenario(shipped_scenario("severe")))
    reply = await world.api.risk.RunStressTest(request, timeout=60)
    assert severe["stressed"]["shortfall_minor"] == reply.stressed.shortfall_minor
    assert severe["stressed"]["insured_loss_minor"] == reply.stressed.insured_loss_minor
    assert severe["policy"]["expected_loss_minor"] == reply.policy.expected_loss_minor

    written = tmp_path / "mild.json"
    written.write_text(json.dumps({"name": "mild", "pd_multiplier_bps": {"E": 12000}}))
    code, out, _ = await command(stress_command, str(written))
    assert code == 0 and out.startswith(f"Stress test 'mild' as of {MONTH_ENDS[-1].isoformat()}")

    written.write_text(json.dumps({"name": "bad", "lgd_bps": 20000}))
    code, _, err = await command(stress_command, str(written))
    assert code != 0 and "lgd_bps: must be between 0 and 10000" in err
    code, _, err = await command(stress_command, "apocalypse")
    assert code != 0 and "not one of the shipped scenarios" in err
