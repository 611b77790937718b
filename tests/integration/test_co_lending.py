"""Co-lending over gRPC on a real PostgreSQL: a partner funds its share of the loans it
accepts, up to its maximum exposure, and every later event splits by the same shares
to the fen, with the books (python -m server.invariants) checked after each step.

The partner here funds 70 % of the principal and takes 50 % of fee and penalty income,
grades A and B, terms 3 and 6. Loans are grade B flat fee (0.6 % a month)."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import grpc
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st

from collections_bot.__main__ import build
from collections_bot.config import BotSettings
from collections_bot.mail_sink import start as start_mail_sink
from credit.v1 import collections_pb2, common_pb2, risk_pb2
from server.app import start_server
from server.core import funding as co_lending
from server.core import settlements
from server.db import acquire
from server.db.pool import create_pool
from server.domain.errors import AlreadyExists, InvalidArgument
from tests.integration.test_recoveries import backfill_matches_the_charge_off
from tests.integration.test_round_trips import CAPTURE_BUDGET, REPAY_BUDGET, Statements
from tests.support import Api, buy, field_violations, free_port, key, refund, repay

PARTNER = "bank-a"


def shanghai(y, m, d, hour=10):
    return datetime(y, m, d, hour, tzinfo=ZoneInfo("Asia/Shanghai"))


async def add_partner(pool, partner_id: str = PARTNER, *, principal_share_bps: int = 7_000,
                      fee_share_bps: int = 5_000, max_exposure_minor: int = 10**12, grades=("A", "B"),
                      terms=(3, 6), exposure_stripes: int = 4) -> None:
    async with acquire(pool) as conn:
        await co_lending.add_partner(
            conn, partner_id=partner_id, name=f"Partner {partner_id}", principal_share_bps=principal_share_bps,
            fee_share_bps=fee_share_bps, max_exposure_minor=max_exposure_minor, grades=list(grades),
            terms=list(terms), exposure_stripes=exposure_stripes, now=datetime.now(UTC))


@pytest.fixture
def partner_settings() -> dict:
    """What the module's partner is; a test overrides it to change one setting."""
    return {}


@pytest.fixture
async def running(settings, pool, clock, partner_settings):
    # The partner is there before the server starts: servers read partners at start.
    await add_partner(pool, **partner_settings)
    running = await start_server(settings, pool, clock)
    yield running
    await running.server.stop(None)


def parts(loan: common_pb2.Loan) -> dict[str, tuple[int, int, int, int, int, int]]:
    return {f.funder_id: (f.principal_share_bps, f.fee_share_bps, f.funded_principal_minor, f.principal_owed_minor,
                          f.fee_owed_minor, f.penalty_owed_minor) for f in loan.funding}


async def balances(pool, account_id: str) -> dict[str, int]:
    async with acquire(pool) as conn:
        rows = await conn.fetch("""
            SELECT ledger_account, sum(amount_minor)::bigint AS balance FROM postings
            WHERE account_id = $1::uuid AND ledger_account LIKE 'PARTNER%' GROUP BY 1""", account_id)
    return {r["ledger_account"]: r["balance"] for r in rows}


async def exposure(pool, partner_id: str = PARTNER) -> int:
    async with acquire(pool) as conn:
        return await conn.fetchval(
            "SELECT coalesce(sum(exposure_minor), 0)::bigint FROM partner_exposure WHERE partner_id = $1", partner_id)


async def test_a_loan_the_partner_accepts_is_co_funded_at_capture(api: Api, pool, books):
    account = await api.open_account(limit_minor=1_000_000)
    loan = await buy(api, account.account_id, 300_001)
    fee = loan.total_fee_minor
    assert fee == 3 * 1_800  # 300,001 x 0.6 % = 1,800.006, rounded per period
    # 70 % of 300,001 is 210,000.7: the partner lends 210,000, the platform the rest.
    assert parts(loan) == {"platform": (3_000, 5_000, 90_001, 90_001, fee - fee // 2, 0),
                           PARTNER: (7_000, 5_000, 210_000, 210_000, fee // 2, 0)}
    assert await balances(pool, account.account_id) == {
        "PARTNER_FUNDING": 210_000, "PARTNER_PRINCIPAL_HELD": -210_000,
        "PARTNER_INCOME_SHARE": fee // 2, "PARTNER_FEE_HELD": -(fee // 2)}
    assert await exposure(pool) == 210_000
    await books()


async def test_a_grade_or_term_the_partner_does_not_take_stays_the_platforms(api: Api, pool, books):
    grade_c = await api.open_account(limit_minor=1_000_000, grade=common_pb2.RISK_GRADE_C)
    loan = await buy(api, grade_c.account_id, 300_000)
    assert parts(loan) == {"platform": (10_000, 10_000, 300_000, 300_000, loan.total_fee_minor, 0)}
    grade_b = await api.open_account(limit_minor=1_000_000)
    twelve = await buy(api, grade_b.account_id, 600_000, 12)
    assert [f.funder_id for f in twelve.funding] == ["platform"]
    assert await exposure(pool) == 0
    assert await balances(pool, grade_b.account_id) == {}
    await books()


@pytest.mark.parametrize("partner_settings", [{"max_exposure_minor": 300_000, "exposure_stripes": 1}])
async def test_a_partner_at_its_maximum_exposure_funds_nothing_more(api: Api, pool, books):
    first = await api.open_account(limit_minor=1_000_000)
    funded = await buy(api, first.account_id, 300_000)
    assert parts(funded)[PARTNER][2] == 210_000
    # 210,000 more would pass 300,000: this loan is the platform's alone.
    second = await api.open_account(limit_minor=1_000_000)
    alone = await buy(api, second.account_id, 300_000)
    assert [f.funder_id for f in alone.funding] == ["platform"]
    # A smaller one still fits: 210,000 + 70,000 = 280,000.
    small = await buy(api, second.account_id, 100_000)
    assert parts(small)[PARTNER][2] == 70_000
    assert await exposure(pool) == 280_000
    await books()


async def test_a_deactivated_partner_funds_nothing_at_once(api: Api, pool, books):
    async with acquire(pool) as conn:
        await co_lending.update_partner(conn, PARTNER, datetime.now(UTC), active=False)
    account = await api.open_account(limit_minor=1_000_000)
    # The running server still has the partner in its copy; the counters' caps say no.
    loan = await buy(api, account.account_id, 300_000)
    assert [f.funder_id for f in loan.funding] == ["platform"]
    async with acquire(pool) as conn:
        await co_lending.update_partner(conn, PARTNER, datetime.now(UTC), active=True)
    again = await buy(api, account.account_id, 300_000)
    assert PARTNER in parts(again)
    await books()


async def test_a_capture_a_credit_balance_pays_at_once_is_co_funded_too(api: Api, pool, books):
    account = await api.open_account(limit_minor=1_000_000)
    await repay(api, account.account_id, 50_000)  # nothing owed: all of it is credit balance
    loan = await buy(api, account.account_id, 300_000)
    # The credit balance paid the first installment's fee and part of its principal at once.
    assert loan.outstanding_principal_minor == 300_000 - (50_000 - 1_800)
    # The partner's stake is its share of what is left: 70 % of 251,800 and 50 % of 3,600.
    assert parts(loan)[PARTNER][2:5] == (210_000, 176_260, 1_800)
    await books()


async def test_the_partner_settings_are_checked(pool, running):
    async with acquire(pool) as conn:
        with pytest.raises(InvalidArgument, match="principal_share_bps"):
            await co_lending.add_partner(conn, partner_id="greedy", name="Greedy", principal_share_bps=8_000,
                                         fee_share_bps=0, max_exposure_minor=1, grades=["A"], terms=[3],
                                         exposure_stripes=1, now=datetime.now(UTC))
        with pytest.raises(AlreadyExists, match="exists"):
            await co_lending.add_partner(conn, partner_id=PARTNER, name="Again", principal_share_bps=1,
                                         fee_share_bps=0, max_exposure_minor=1, grades=["A"], terms=[3],
                                         exposure_stripes=1, now=datetime.now(UTC))
        views = await co_lending.list_partners(conn)
    assert [(v.partner.partner_id, v.cap_minor) for v in views] == [(PARTNER, 10**12)]


async def settlement_items(pool, account_id: str) -> list[tuple]:
    async with acquire(pool) as conn:
        rows = await conn.fetch("""
            SELECT kind, principal_minor, fee_minor, penalty_minor, recovery_minor FROM partner_settlement_items
            WHERE account_id = $1::uuid ORDER BY created_at, kind""", account_id)
    return [tuple(r) for r in rows]


async def test_repayments_and_refunds_split_by_the_same_shares_to_the_fen(api: Api, pool, clock, books):
    account = await api.open_account(limit_minor=1_000_000)
    loan = await buy(api, account.account_id, 300_001)
    await books()

    # 50,000 pays period 1's fee (1,800) and 48,200 of its principal. The partner's stake
    # becomes its share of what is left: 70 % of 251,801 is 176,260.7, so 176,260, and it
    # collected 210,000 - 176,260 = 33,740 (exactly 70 % of 48,200) and 2,700 - 1,800 = 900.
    clock.set(shanghai(2027, 2, 10))
    await repay(api, account.account_id, 50_000)
    assert parts(await api.loan(loan.loan_id))[PARTNER][3:5] == (176_260, 1_800)
    assert await settlement_items(pool, account.account_id) == [("REPAYMENT_RECEIVED", 33_740, 900, 0, 0)]
    await books()

    # A refund of the last period's 100,001: the merchant takes it back, so the partner
    # collects its share (70,000); fees shrink by a third (1,800 cut, of which 600 paid
    # on period 1 comes back to the customer, and the partner gives back its 300); the
    # 600 of credit then pays period 1's principal (the partner collects 420).
    refunded = await refund(api, loan.loan_id, 100_001)
    assert parts(refunded)[PARTNER][3:5] == (105_840, 1_200)
    assert parts(refunded)["platform"][3:5] == (151_200 - 105_840, 1_200)
    assert sorted(await settlement_items(pool, account.account_id)) == sorted([
        ("REPAYMENT_RECEIVED", 33_740, 900, 0, 0), ("LOAN_REFUNDED", 70_000, -300, 0, 0),
        ("CREDIT_BALANCE_APPLIED", 420, 0, 0, 0)])
    assert await balances(pool, account.account_id) == {
        "PARTNER_FUNDING": 210_000, "PARTNER_PRINCIPAL_HELD": -105_840, "PARTNER_FEE_HELD": -1_200,
        "PARTNER_INCOME_SHARE": 1_800, "PARTNER_SETTLEMENT_PAYABLE": -(33_740 + 900 + 70_000 - 300 + 420)}
    assert await exposure(pool) == 105_840
    await books()

    # Paying the loan off (in one write: the account's only loan is paid off, the rest is
    # credit balance) leaves every funder owed nothing.
    paid = await repay(api, account.account_id, 200_000)
    assert paid.unapplied_minor > 0
    after = await api.loan(loan.loan_id)
    assert after.status == common_pb2.LOAN_STATUS_PAID_OFF
    assert {f.funder_id: (f.principal_owed_minor, f.fee_owed_minor) for f in after.funding} == {
        "platform": (0, 0), PARTNER: (0, 0)}
    assert await exposure(pool) == 0
    await books()


async def test_a_full_refund_gives_the_partner_its_principal_back(api: Api, pool, books):
    account = await api.open_account(limit_minor=1_000_000)
    loan = await buy(api, account.account_id, 300_000)
    cancelled = await refund(api, loan.loan_id, 300_000)
    assert cancelled.status == common_pb2.LOAN_STATUS_CANCELLED
    assert parts(cancelled)[PARTNER][3:] == (0, 0, 0)
    assert await settlement_items(pool, account.account_id) == [("LOAN_REFUNDED", 210_000, 0, 0, 0)]
    assert await exposure(pool) == 0
    await books()


async def test_co_funded_capture_and_repay_keep_their_round_trips(db_dsn, settings, clock):
    """As tests/integration/test_round_trips.py counts them, with a partner funding."""
    statements = Statements()
    pool = await create_pool(db_dsn, min_size=1, max_size=1, command_timeout_s=30, init=statements.attach)
    await add_partner(pool)
    running = await start_server(settings, pool, clock)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            api = Api(channel)
            account = await api.open_account(limit_minor=10_000_000)
            for warm in (True, False):
                auth = await api.authorize(account.account_id, 150_000, 3)
                _, capture_queries = await statements.count(lambda auth=auth: api.capture(auth.authorization_id))
                captured = await api.authorization(auth.authorization_id)
                funders = [f.funder_id for f in (await api.loan(captured.loan_id)).funding]
                assert funders == ["platform", PARTNER]
                _, repay_queries = await statements.count(lambda: repay(api, account.account_id, 20_000))
                _, by_loan_queries = await statements.count(
                    lambda loan_id=captured.loan_id: repay(api, account.account_id, 10_000, loan_id=loan_id))
                if warm:
                    continue
                assert len(capture_queries) <= CAPTURE_BUDGET, capture_queries
                assert len(repay_queries) <= REPAY_BUDGET, repay_queries
                assert len(by_loan_queries) <= REPAY_BUDGET, by_loan_queries
                # Two statements each: the read and the one write.
                assert len(capture_queries) == len(repay_queries) == len(by_loan_queries) == 2, (
                    capture_queries, repay_queries, by_loan_queries)
    finally:
        await running.server.stop(None)
        await pool.close()


@pytest.fixture
def bot(pool, clock):
    port = free_port()
    controller, _ = start_mail_sink("127.0.0.1", port)
    settings = BotSettings.from_env({"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "INSURANCE_SHARE_BPS": "5000"})
    yield build(pool, settings, clock)
    controller.stop()


async def test_a_whole_life_capture_repay_refund_penalty_waiver_and_charge_off(api: Api, pool, clock, bot, books):
    account = await api.open_account(limit_minor=1_000_000)
    loan = await buy(api, account.account_id, 300_001)
    await books()
    clock.set(shanghai(2027, 2, 10))
    await repay(api, account.account_id, 50_000)
    await books()
    await refund(api, loan.loan_id, 50_000)
    await books()

    # Period 1 (due 2027-02-15) is late: after the 3 days' grace the bot books a penalty
    # a day, and the partner earns half of each (its fee-income share) by the same rule.
    clock.set(shanghai(2027, 2, 25))
    await bot.run()
    late = await api.loan(loan.loan_id)
    penalty = sum(i.penalty_minor for i in late.installments)
    assert penalty > 0
    assert parts(late)[PARTNER][5] == penalty // 2
    await books()

    waived = await api.collections.WaivePenalty(collections_pb2.WaivePenaltyRequest(
        loan_id=loan.loan_id, sequence=1, amount_minor=101, reason="goodwill", idempotency_key=key()))
    assert parts(waived)[PARTNER][5] == (penalty - 101) // 2
    await books()

    # 180 days past due: charged off. The partner bears its share of the loss (its stake
    # leaves against the reserve) and recovers 70 % of the insured half of the principal.
    owed_principal = late.outstanding_principal_minor
    clock.set(shanghai(2027, 2, 15) + timedelta(days=180))
    await bot.run()
    gone = await api.loan(loan.loan_id)
    assert gone.status == common_pb2.LOAN_STATUS_CHARGED_OFF
    assert parts(gone)[PARTNER][3:] == (0, 0, 0) and parts(gone)["platform"][3:] == (0, 0, 0)
    claim = (owed_principal * 5_000 + 5_000) // 10_000
    items = await settlement_items(pool, account.account_id)
    assert ("LOAN_CHARGED_OFF", 0, 0, 0, claim * 7_000 // 10_000) in items
    assert await exposure(pool) == 0
    await books()


async def test_after_charge_off_the_partner_gets_its_share_of_what_is_recovered(api: Api, pool, clock, bot, books):
    """The partner bore 70 % of the principal lost and got 70 % of the insured half back;
    of what a payment recovers it gets 70 % of the principal net of the insurer's part,
    and 50 % of penalties and fees, to its settlement payable."""
    account = await api.open_account(limit_minor=1_000_000)
    loan = await buy(api, account.account_id, 300_001)
    clock.set(shanghai(2027, 2, 15) + timedelta(days=180))
    await bot.run()
    gone = await api.loan(loan.loan_id)
    write_off = gone.write_off
    claim = (300_001 * 5_000 + 5_000) // 10_000
    assert (write_off.principal_minor, write_off.fee_minor, write_off.insurance_claim_minor) == (300_001, 5_400, claim)
    before = await balances(pool, account.account_id)
    await backfill_matches_the_charge_off(pool, loan.loan_id)
    await books()

    first = await repay(api, account.account_id, 100_000)
    assert first.recovered_minor == 100_000
    insurer = claim * 100_000 // 300_001
    partner = (100_000 - insurer) * 7_000 // 10_000
    assert (await settlement_items(pool, account.account_id))[-1] == ("RECOVERY_RECEIVED", 0, 0, 0, partner)
    after = await balances(pool, account.account_id)
    assert after["PARTNER_SETTLEMENT_PAYABLE"] - before["PARTNER_SETTLEMENT_PAYABLE"] == -partner
    await books()

    # The rest: in all, the partner gets floor(70 % of the principal the insurer did not
    # cover) plus half of the penalties and half of the fees.
    await repay(api, account.account_id, write_off.owed_minor - 100_000)
    recovered = [r for r in await settlement_items(pool, account.account_id) if r[0] == "RECOVERY_RECEIVED"]
    assert sum(r[4] for r in recovered) == ((300_001 - claim) * 7_000 // 10_000
                                            + write_off.penalty_minor * 5_000 // 10_000 + 5_400 * 5_000 // 10_000)
    done = await balances(pool, account.account_id)
    assert done["PARTNER_INCOME_SHARE"] - before["PARTNER_INCOME_SHARE"] == 2_700
    assert parts(await api.loan(loan.loan_id))[PARTNER][3:] == (0, 0, 0)
    assert await exposure(pool) == 0
    await books()


@examples(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(principal_share_bps=st.integers(1, 7_000), fee_share_bps=st.integers(0, 10_000),
       amount=st.integers(10_000, 900_000), payments=st.lists(st.integers(1, 400_000), max_size=3),
       refund_bps=st.integers(0, 10_000), days=st.integers(1, 75))
async def test_random_shares_and_amounts_keep_every_stake_exact(
        settings, pool, clock, bot, books, principal_share_bps, fee_share_bps, amount, payments, refund_bps, days):
    """Each example: a partner with random shares (the others deactivated), a server that
    reads it, a loan of a random amount through random payments, a refund, days passing
    under the bot (penalties, and charge-offs of earlier examples' loans); the books,
    with every stake checked against the rule, after each step."""
    async with acquire(pool) as conn:
        for view in await co_lending.list_partners(conn):
            await co_lending.update_partner(conn, view.partner.partner_id, datetime.now(UTC), active=False)
        partner_id = f"random-{len(await co_lending.list_partners(conn))}"
    await add_partner(pool, partner_id, principal_share_bps=principal_share_bps, fee_share_bps=fee_share_bps)
    running = await start_server(settings, pool, clock)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            api = Api(channel)
            account = await api.open_account(limit_minor=1_000_000)
            loan = await buy(api, account.account_id, amount)
            assert parts(loan)[partner_id][2] == amount * principal_share_bps // 10_000
            for payment in payments:
                await repay(api, account.account_id, payment)
                await books()
            left = sum(i.principal_minor for i in (await api.loan(loan.loan_id)).installments)
            current = await api.loan(loan.loan_id)
            if refund_bps and current.status in (common_pb2.LOAN_STATUS_ACTIVE, common_pb2.LOAN_STATUS_PAID_OFF):
                await refund(api, loan.loan_id, max(1, left * refund_bps // 10_000))
                await books()
            clock.set(clock.now() + timedelta(days=days))
            await bot.run()
            await books()
    finally:
        await running.server.stop(None)


async def settlement(api: Api, day: str, partner_id: str = PARTNER) -> risk_pb2.PartnerSettlement:
    return await api.risk.GetPartnerSettlement(risk_pb2.GetPartnerSettlementRequest(partner_id=partner_id, date=day),
                                               timeout=10)


async def test_the_daily_settlement_nets_what_was_collected_against_what_was_lent(
        api: Api, pool, clock, bot, tmp_path, books):
    account = await api.open_account(limit_minor=1_000_000)
    loan = await buy(api, account.account_id, 300_001)  # 2027-01-15: the partner lends 210,000
    clock.set(shanghai(2027, 2, 10))
    await repay(api, account.account_id, 50_000)
    await refund(api, loan.loan_id, 100_001)
    await books()

    lent = await settlement(api, "2027-01-15")
    assert (lent.funded_principal_minor, lent.loans_funded, lent.collected_minor, lent.net_transfer_minor) == (
        210_000, 1, 0, -210_000)
    # The day of the payment and the refund: as worked through in the test above.
    day = await settlement(api, "2027-02-10")
    assert (day.principal_minor, day.fee_minor, day.penalty_minor, day.recovery_minor) == (
        33_740 + 70_000 + 420, 900 - 300, 0, 0)
    assert (day.collected_minor, day.funded_principal_minor, day.net_transfer_minor, day.items) == (
        104_760, 0, 104_760, 3)
    assert day.time_zone == "Asia/Shanghai"
    # The two days' transfers and what the platform still holds for the partner are
    # what the ledger says it owes it and holds for it.
    ledger = await balances(pool, account.account_id)
    assert -ledger["PARTNER_SETTLEMENT_PAYABLE"] == lent.collected_minor + day.collected_minor
    assert ledger["PARTNER_FUNDING"] == lent.funded_principal_minor

    # The file of the day: lines that add up to its TOTAL, whose amount is the transfer.
    async with acquire(pool) as conn:
        await settlements.write_csv(conn, PARTNER, date(2027, 2, 10), tmp_path / "day.csv")
    with (tmp_path / "day.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["line"] for r in rows] == ["ITEM", "ITEM", "ITEM", "TOTAL"]
    assert sum(int(r["amount_minor"]) for r in rows[:-1]) == int(rows[-1]["amount_minor"]) == 104_760
    assert {r["kind"] for r in rows[:-1]} == {"REPAYMENT_RECEIVED", "LOAN_REFUNDED", "CREDIT_BALANCE_APPLIED"}

    # The bot writes each closed day's file once, for every partner.
    bot._settings = dataclasses.replace(bot._settings, settlement_dir=tmp_path / "out")
    clock.set(shanghai(2027, 2, 11, hour=1))
    report = await bot.run()
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert report.settlement_files == 7 and written[-1] == "settlement-bank-a-2027-02-10.csv"
    assert (tmp_path / "out" / written[-1]).read_text() == (tmp_path / "day.csv").read_text()
    assert (await bot.run()).settlement_files == 0


async def test_a_settlement_of_an_unknown_partner_or_a_bad_date_is_refused(api: Api):
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await settlement(api, "2027-02-10", partner_id="no-such-bank")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await settlement(api, "10/02/2027")
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field_violations(bad.value) == ["date"]


@pytest.mark.parametrize("partner_settings", [{"max_exposure_minor": 1_000_000, "exposure_stripes": 4}])
async def test_concurrent_captures_never_take_a_partner_past_its_maximum(api: Api, pool, books):
    """40 captures at once on 40 accounts, each offering 70,000 to a partner whose four
    counters take 250,000 each: at most three loans per counter are co-funded."""
    accounts = [await api.open_account(limit_minor=1_000_000) for _ in range(40)]
    holds = [await api.authorize(a.account_id, 100_000, 3) for a in accounts]
    captured = await asyncio.gather(*(api.capture(h.authorization_id) for h in holds))
    loans = [await api.loan(c.loan_id) for c in captured]
    co_funded = [loan for loan in loans if PARTNER in parts(loan)]
    assert 1 <= len(co_funded) <= 12
    assert await exposure(pool) == 70_000 * len(co_funded) <= 1_000_000
    async with acquire(pool) as conn:
        rows = await conn.fetch("SELECT exposure_minor, cap_minor FROM partner_exposure WHERE partner_id = $1",
                                PARTNER)
    assert all(r["exposure_minor"] <= r["cap_minor"] for r in rows)
    await books()


async def test_the_invariant_checker_sees_a_stake_off_by_a_fen(api: Api, pool):
    from server.invariants import check

    account = await api.open_account(limit_minor=1_000_000)
    loan = await buy(api, account.account_id, 300_000)
    async with acquire(pool) as conn:
        assert await check(conn) == []
        await conn.execute("UPDATE loan_funding SET principal_minor = principal_minor - 1, funded_principal_minor = "
                           "funded_principal_minor - 1 WHERE loan_id = $1::uuid AND funder_id = $2",
                           loan.loan_id, PARTNER)
        broken = {v.rule for v in await check(conn)}
    assert broken == {"a co-funded loan's funders lent its principal",
                      "each partner's stake is its share of what the loan owes",
                      "a co-funded loan's stakes add up to what it owes",
                      "partners' principal held in the ledger is their stakes",
                      "partner funding is the principal partners lent",
                      "a partner's exposure counters add up to its principal owed"}
