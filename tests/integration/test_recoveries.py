"""Recoveries after charge-off over gRPC on a real PostgreSQL: a loan the bot charges
off at 180 days past due, then payments that recover its written-off debt (never credit
balance while some is owed), in its place in the waterfall, with the reserve and the
insurance claim moving by the rules of docs/repayment.md ("Recoveries") and the books
(python -m server.invariants, which verifies every journal chain) checked after each
step."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import grpc
import pytest

from credit.v1 import common_pb2, repayment_pb2, risk_pb2
from tests.integration.test_collections import shanghai
from tests.support import buy, make_bot, repay

PRINCIPAL, FEE, PENALTY = (repayment_pb2.ALLOCATION_COMPONENT_PRINCIPAL, repayment_pb2.ALLOCATION_COMPONENT_FEE,
                           repayment_pb2.ALLOCATION_COMPONENT_PENALTY)
# The fixture's loan: 300,000 over 3 months at 0.6 % flat, first due 2027-02-15.
CHARGE_OFF_DAY = shanghai(2, 15) + timedelta(days=180)


@pytest.fixture
def insurance_share_bps() -> int:
    return 0


@pytest.fixture
def bot(pool, clock, insurance_share_bps):
    controller, bot = make_bot(pool, clock, insurance_share_bps)
    yield bot
    controller.stop()


@pytest.fixture
async def gone(api, bot, clock, books):
    """A loan of 300,000 that was never paid, charged off by the bot's pass."""
    account = await api.open_account(limit_minor=1_000_000)
    loan = await buy(api, account.account_id, 300_000)
    clock.set(CHARGE_OFF_DAY)
    await bot.run()
    charged_off = await api.loan(loan.loan_id)
    assert charged_off.status == common_pb2.LOAN_STATUS_CHARGED_OFF
    await books()
    return charged_off


async def reserve(api) -> risk_pb2.ReservePool:
    return await api.risk.GetReservePool(risk_pb2.GetReservePoolRequest())


async def balance(pool, account_id: str, ledger_account: str) -> int:
    async with pool.acquire() as conn:
        return await conn.fetchval("SELECT coalesce(sum(amount_minor), 0)::bigint FROM postings "
                                   "WHERE account_id = $1 AND ledger_account = $2", uuid.UUID(account_id),
                                   ledger_account)


async def test_a_charged_off_loan_shows_its_written_off_debt_and_quotes_it(api, gone):
    write_off = gone.write_off
    assert gone.HasField("write_off")
    # All three periods were due by the charge-off: every fee is still owed, and the
    # penalties the bot booked until then.
    assert (write_off.principal_minor, write_off.fee_minor) == (300_000, 5_400)
    assert write_off.penalty_minor == sum(i.penalty_minor for i in gone.installments) > 0
    assert write_off.written_off_minor == write_off.owed_minor == 305_400 + write_off.penalty_minor
    assert write_off.recovered_minor == 0 and write_off.insurance_claim_minor == 0
    quote = await api.repayment.QuotePayoff(repayment_pb2.QuotePayoffRequest(loan_id=gone.loan_id))
    assert (quote.payoff_minor, quote.principal_minor, quote.fee_minor, quote.penalty_minor,
            quote.waived_fee_minor) == (write_off.owed_minor, 300_000, 5_400, write_off.penalty_minor, 0)


async def test_payments_recover_the_written_off_debt_and_only_the_surplus_becomes_credit(api, pool, gone, books):
    owed = gone.write_off.owed_minor
    before = await reserve(api)

    first = await repay(api, gone.account_id, 120_000)
    assert (first.applied_minor, first.unapplied_minor, first.recovered_minor) == (120_000, 0, 120_000)
    assert [(r.loan_id, r.component, r.amount_minor) for r in first.recoveries] == [
        (gone.loan_id, PRINCIPAL, 120_000)]
    assert first.allocations == [] and first.account.credit_balance_minor == 0
    partly = await api.loan(gone.loan_id)
    assert (partly.write_off.recovered_principal_minor, partly.write_off.owed_minor) == (120_000, owed - 120_000)
    assert (await reserve(api)).balance_minor == before.balance_minor + 120_000
    assert (await reserve(api)).recovered_minor == before.recovered_minor + 120_000
    await books()

    # The rest, and 5,000 more: principal, then penalties, then fees; the 5,000 is credit.
    second = await repay(api, gone.account_id, owed - 120_000 + 5_000)
    assert second.recovered_minor == owed - 120_000 and second.unapplied_minor == 5_000
    assert [(r.component, r.amount_minor) for r in second.recoveries] == [
        (PRINCIPAL, 180_000), (PENALTY, gone.write_off.penalty_minor), (FEE, 5_400)]
    assert second.account.credit_balance_minor == 5_000
    done = await api.loan(gone.loan_id)
    assert done.status == common_pb2.LOAN_STATUS_CHARGED_OFF
    assert (done.write_off.recovered_minor, done.write_off.owed_minor) == (owed, 0)
    # Principal and penalties went back to the reserve; fees are income.
    assert (await reserve(api)).balance_minor == before.balance_minor + 300_000 + gone.write_off.penalty_minor
    assert await balance(pool, gone.account_id, "FEE_INCOME") == -5_400
    assert await balance(pool, gone.account_id, "CUSTOMER_CREDIT_BALANCE") == -5_000
    quote = await api.repayment.QuotePayoff(repayment_pb2.QuotePayoffRequest(loan_id=gone.loan_id))
    assert quote.payoff_minor == 0
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await repay(api, gone.account_id, 1_000, loan_id=gone.loan_id)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    async with pool.acquire() as conn:
        kinds = [r["kind"] for r in await conn.fetch(
            "SELECT kind FROM journal_entries WHERE account_id = $1 ORDER BY sequence", uuid.UUID(gone.account_id))]
    assert kinds[-3:] == ["RECOVERY_RECEIVED", "REPAYMENT_RECEIVED", "RECOVERY_RECEIVED"]
    await books()


async def test_a_payment_to_the_charged_off_loan_by_its_id_recovers_it(api, gone, books):
    paid = await repay(api, gone.account_id, 10_000, loan_id=gone.loan_id)
    assert paid.loan_id == gone.loan_id and paid.recovered_minor == 10_000 and paid.unapplied_minor == 0
    assert (await api.loan(gone.loan_id)).write_off.recovered_principal_minor == 10_000
    await books()


@pytest.mark.parametrize("insurance_share_bps", [5_000])
async def test_the_insurer_gets_its_share_of_the_principal_recovered(api, pool, gone, books):
    assert gone.write_off.insurance_claim_minor == 150_000
    claimed = await balance(pool, gone.account_id, "INSURANCE_CLAIM_RECEIVABLE")
    assert claimed == 150_000
    before = await reserve(api)
    await repay(api, gone.account_id, 100_001)
    # floor(150,000 x 100,001 / 300,000) = 50,000 lowers the claim; the rest is the reserve's.
    assert await balance(pool, gone.account_id, "INSURANCE_CLAIM_RECEIVABLE") == 100_000
    assert (await reserve(api)).balance_minor == before.balance_minor + 50_001
    await books()
    await repay(api, gone.account_id, 199_999)
    assert await balance(pool, gone.account_id, "INSURANCE_CLAIM_RECEIVABLE") == 0
    assert (await reserve(api)).balance_minor == before.balance_minor + 150_000
    after = await reserve(api)
    assert after.insurance_claims_minor == before.insurance_claims_minor  # what was claimed stays reported
    assert after.recovered_minor - before.recovered_minor == 150_000
    await books()


async def test_concurrent_payments_on_one_account_never_recover_more_than_was_written_off(api, gone, books):
    owed = gone.write_off.owed_minor
    piece = owed // 4 + 1
    results = await asyncio.gather(*(repay(api, gone.account_id, piece) for _ in range(8)))
    assert sum(r.recovered_minor for r in results) == owed
    assert sum(r.unapplied_minor for r in results) == 8 * piece - owed
    after = await api.loan(gone.loan_id)
    assert (after.write_off.recovered_minor, after.write_off.owed_minor) == (owed, 0)
    assert (await api.account(gone.account_id)).credit_balance_minor == 8 * piece - owed
    await books()


async def test_written_off_debt_is_paid_after_what_is_due_on_live_loans_and_before_prepaying_them(
        api, bot, clock, books):
    """Two loans: the first is charged off while the second, bought later, is current.
    A payment pays the second's current installment, then the first's written-off debt,
    and only then the second's future principal."""
    account = await api.open_account(limit_minor=1_000_000)
    first = await buy(api, account.account_id, 300_000)
    clock.set(shanghai(7, 20))
    second = await buy(api, account.account_id, 300_000)
    # The second loan's first period is due with the account's bill on 2027-08-15 (the
    # tests' cycle): 1,000.00 and a fee for 26 days of a 31-day month, 15.10; current on
    # the day of the first loan's charge-off.
    assert (second.installments[0].due_date, second.installments[0].fee_minor) == ("2027-08-15", 1_510)
    clock.set(CHARGE_OFF_DAY)
    await bot.run()
    gone = await api.loan(first.loan_id)
    assert gone.status == common_pb2.LOAN_STATUS_CHARGED_OFF
    assert (await api.loan(second.loan_id)).status == common_pb2.LOAN_STATUS_ACTIVE
    await books()
    paid = await repay(api, account.account_id, 101_510 + gone.write_off.owed_minor + 1_000)
    assert [(a.loan_id, a.sequence, a.component, a.amount_minor) for a in paid.allocations] == [
        (second.loan_id, 1, FEE, 1_510), (second.loan_id, 1, PRINCIPAL, 100_000),
        (second.loan_id, 2, PRINCIPAL, 1_000)]
    assert paid.recovered_minor == gone.write_off.owed_minor and paid.unapplied_minor == 0
    await books()


async def test_a_credit_balance_pays_written_off_debt(api, pool, gone, books):
    """Credit left from before recoveries existed (payments after charge-off became credit
    balance) is used the next time the account's credit is applied: here, a payment."""
    async with pool.acquire() as conn:
        # As the books stood then: a payment of 2,000 kept as credit.
        await conn.execute("UPDATE accounts SET credit_balance_minor = 2000 WHERE account_id = $1",
                           uuid.UUID(gone.account_id))
        await conn.execute("INSERT INTO repayments (repayment_id, account_id, channel, amount_minor, applied_minor, "
                           "unapplied_minor, created_at) VALUES ($1, $2, 'BANK_CARD', 2000, 0, 2000, now())",
                           uuid.uuid4(), uuid.UUID(gone.account_id))
    from server.db import ledger as ledger_rows
    from server.domain import ledger
    async with pool.acquire() as conn:
        await ledger_rows.post(conn, uuid.UUID(gone.account_id), uuid.uuid4(), ledger.repayment_received(
            principal_minor=0, fee_minor=0, penalty_minor=0, unapplied_minor=2_000, waived_fee_minor=0),
            CHARGE_OFF_DAY)
    paid = await repay(api, gone.account_id, 3_000)
    assert paid.recovered_minor == 3_000
    after = await api.loan(gone.loan_id)
    assert after.write_off.recovered_principal_minor == 5_000
    assert (await api.account(gone.account_id)).credit_balance_minor == 0
    await books()


WRITE_OFF_COLUMNS = ("written_off_principal_minor", "written_off_fee_minor", "written_off_penalty_minor",
                     "insurance_claim_minor", "reserve_loss_minor")


async def backfill_matches_the_charge_off(pool, loan_id: str) -> None:
    """The migration's backfill, run over a loan charged off by this code with its
    write-off columns cleared, gives back what the charge-off recorded: loans charged
    off before the migration get the same figures."""
    from server.db.migrate import load_migrations

    (migration,) = [m for m in load_migrations() if m.name.endswith("_recoveries.sql")]
    backfill = migration.sql[migration.sql.index("UPDATE loans AS l"):]
    async with pool.acquire() as conn:
        recorded = await conn.fetchrow(f"SELECT {', '.join(WRITE_OFF_COLUMNS)} FROM loans WHERE loan_id = $1",
                                       uuid.UUID(loan_id))
        assert recorded["written_off_principal_minor"] > 0
        async with conn.transaction():
            await conn.execute(f"UPDATE loans SET {', '.join(c + ' = 0' for c in WRITE_OFF_COLUMNS)} "
                               "WHERE loan_id = $1", uuid.UUID(loan_id))
            await conn.execute(backfill)
            again = await conn.fetchrow(f"SELECT {', '.join(WRITE_OFF_COLUMNS)} FROM loans WHERE loan_id = $1",
                                        uuid.UUID(loan_id))
    assert dict(again) == dict(recorded)


@pytest.mark.parametrize("insurance_share_bps", [3_000])
async def test_the_migration_backfills_loans_charged_off_before_it(pool, gone, books):
    await backfill_matches_the_charge_off(pool, gone.loan_id)
    await books()
