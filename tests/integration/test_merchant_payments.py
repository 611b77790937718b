"""Paying settled merchant-days through the payment-gateway simulator (a real gRPC
server; the merchant id's, or payee's, last digit picks what the processor does), over a
real PostgreSQL and the real credit service: a day paid to the fen and its in-flight
amount leaving every account as cash, carried days paid by the day after them, results
that come late, twice or not at all, a payee the gateway refuses and asked again after
an operator mends it, a bot killed between asking and recording, two replicas; the
books, and the books against the gateway's record, after each."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import date, datetime, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

import grpc
import pytest

from collections_bot.payments import PaymentsTask
from credit.v1 import checkout_pb2
from server.core import merchant_payments, merchant_settlements
from server.core.payment_orders import PaymentOrders
from server.core.payment_results import Applied, Result
from server.db import acquire
from server.db import ledger as ledger_rows
from server.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from server.domain.ledger import merchant_paid
from server.domain.payments import PaymentStatus
from server.domain.pricing import MerchantCategory
from server.invariants import check
from server.payments.gateway import PaymentGateway
from tests.support import GATEWAY_DELAY_S, Api, buy, gateway_payments, merchant_balances, refund, until

# The tests' clock starts on this day (Asia/Shanghai).
DAY = date(2027, 1, 15)


def _bot(pool, clock, gateway: PaymentGateway) -> PaymentsTask:
    return PaymentsTask(pool, clock, PaymentOrders(clock, gateway), reconcile_after_s=60)


@pytest.fixture
def bot(pool, clock, gateway):
    return _bot(pool, clock, gateway)


async def settle(pool, clock) -> list[merchant_settlements.MerchantDayView]:
    """Close today and settle it (the bot's pass does this)."""
    clock.advance(timedelta(days=1))
    return await merchant_settlements.settle_closed_days(pool, clock.now())


async def settlement(api: Api, merchant_id: str, day: date = DAY) -> checkout_pb2.MerchantSettlement:
    return await api.checkout.GetMerchantSettlement(checkout_pb2.GetMerchantSettlementRequest(
        merchant_id=merchant_id, date=day.isoformat()), timeout=10)


async def paid_entries(pool, payment_order_id: str) -> list[tuple[str, int]]:
    """(account, cash) of each MERCHANT_PAID entry booked under the payment's key."""
    async with acquire(pool) as conn:
        rows = await conn.fetch("""
            SELECT e.account_id::text AS account_id, p.amount_minor FROM journal_entries e
            JOIN postings p ON p.account_id = e.account_id AND p.entry_id = e.entry_id
            WHERE e.kind = 'MERCHANT_PAID' AND e.reference_id = $1 AND p.ledger_account = 'CASH'
            ORDER BY 1""", UUID(payment_order_id))
    return [(r["account_id"], r["amount_minor"]) for r in rows]


async def test_a_settled_day_is_paid_to_the_fen_and_leaves_every_account_as_cash(
        api: Api, pool, clock, bot, gateway, ledger_checked):
    async with acquire(pool) as conn:
        await merchant_settlements.register_merchant(conn, "campus-2040", MerchantCategory.EDUCATION, clock.now())
    accounts = [(await api.open_account(limit_minor=1_000_000)).account_id for _ in range(3)]
    loans = [await buy(api, account_id, amount, merchant_id="campus-2040")
             for account_id, amount in zip(accounts, (100_001, 250_000, 37_550), strict=True)]
    await refund(api, loans[1].loan_id, 40_000)
    (view,) = await settle(pool, clock)
    # 40 bps of 387,551 is 1,550.204: 1,550 fen; the day pays 387,551 - 40,000 - 1,550.
    assert view.settlement.net_minor == 346_001
    before = await settlement(api, "campus-2040")
    assert before.status == checkout_pb2.MERCHANT_SETTLEMENT_STATUS_REQUESTED
    assert (before.payment_attempts, before.payee_id, before.paid_minor) == (1, "campus-2040", 0)
    await ledger_checked()

    # The sweep after the pass asks for the day never asked for; the gateway pays at once.
    assert await bot.sweep() == Counter(merchant_completed=1)
    paid = await settlement(api, "campus-2040")
    assert paid.status == checkout_pb2.MERCHANT_SETTLEMENT_STATUS_PAID
    assert paid.paid_minor == 346_001 and paid.payment_order_id == before.payment_order_id
    assert paid.gateway_payment_id and paid.completed_at.seconds > 0
    assert paid.failure_reason == checkout_pb2.MERCHANT_PAYMENT_FAILURE_REASON_UNSPECIFIED
    # Each account's in-flight part (its captures less refunds less its fee share:
    # 100,001 - 400, 210,000 - 1,000, 37,550 - 150) left as cash; only the fee stays.
    assert sorted(await paid_entries(pool, paid.payment_order_id)) == sorted([
        (accounts[0], -99_601), (accounts[1], -209_000), (accounts[2], -37_400)])
    assert await merchant_balances(pool, accounts) == {
        (accounts[0], "MERCHANT_FEE_INCOME"): -400, (accounts[1], "MERCHANT_FEE_INCOME"): -1_000,
        (accounts[2], "MERCHANT_FEE_INCOME"): -150}
    payment = await gateway.get(idempotency_key=paid.payment_order_id)
    assert payment is not None and payment.status is PaymentStatus.SUCCEEDED
    assert (payment.amount_minor, payment.order.merchant_id) == (346_001, "campus-2040")
    # Paid once: later sweeps have nothing to do.
    clock.advance(timedelta(seconds=61))
    assert await bot.sweep() == Counter()
    await ledger_checked()


async def test_carried_days_are_paid_by_the_day_after_them_and_all_leave_flight(
        api: Api, pool, clock, bot, ledger_checked):
    first, second = [(await api.open_account(limit_minor=2_000_000)).account_id for _ in range(2)]
    loan = await buy(api, first, 200_000, merchant_id="tour-1810")
    (day1,) = await settle(pool, clock)
    assert await bot.sweep() == Counter(merchant_completed=1)
    # The refund's day is negative and carried; the next day's capture, on another
    # account, pays what is left of it.
    await refund(api, loan.loan_id, 150_000)
    await settle(pool, clock)
    await buy(api, second, 180_000, merchant_id="tour-1810")
    (day3,) = await settle(pool, clock)
    # GENERAL, 60 bps: day 3 pays 180,000 - 1,080 - 150,000.
    assert day3.settlement.carried_in_minor == -150_000 and day3.settlement.net_minor == 28_920
    clock.advance(timedelta(seconds=61))
    assert await bot.sweep() == Counter(merchant_completed=1)
    assert day3.settled is not None
    # The first account's refund (carried) and the second's capture are both paid off:
    # the first gives back 150,000 of cash, the second gets 178,920 out.
    assert sorted(await paid_entries(pool, str(day3.settled.payment_order_id))) == sorted([
        (first, 150_000), (second, -178_920)])
    assert await merchant_balances(pool, [first, second]) == {
        (first, "MERCHANT_FEE_INCOME"): -1_200, (second, "MERCHANT_FEE_INCOME"): -1_080}
    assert [(await settlement(api, "tour-1810", DAY + timedelta(days=n))).status for n in range(3)] == [
        checkout_pb2.MERCHANT_SETTLEMENT_STATUS_PAID, checkout_pb2.MERCHANT_SETTLEMENT_STATUS_CARRIED,
        checkout_pb2.MERCHANT_SETTLEMENT_STATUS_PAID]
    assert day1.settled is not None
    await ledger_checked()


async def test_late_and_duplicated_answers_are_applied_once(api: Api, pool, clock, bot, ledger_checked):
    account = (await api.open_account(limit_minor=1_000_000)).account_id
    # 5: PENDING, paid later on the stream; 6: paid at once, and the result sent twice.
    await buy(api, account, 50_000, merchant_id="stall-15")
    await buy(api, account, 60_000, merchant_id="stall-16")
    views = {v.merchant_id: v for v in await settle(pool, clock)}
    assert await bot.sweep() == Counter(merchant_completed=1, merchant_not_final=1)
    stop = asyncio.Event()
    watching = asyncio.create_task(bot.watch(stop))
    try:
        async def paid() -> bool:
            return (await settlement(api, "stall-15")).status == checkout_pb2.MERCHANT_SETTLEMENT_STATUS_PAID
        await until(paid)
        # The duplicate of stall-16's answer comes DELAY after the first.
        await asyncio.sleep(GATEWAY_DELAY_S * 3)
        assert await bot._orders.cursor(pool, "collections-bot") >= 3
    finally:
        stop.set()
        await watching
    for merchant_id, amount in (("stall-15", 50_000 - 300), ("stall-16", 60_000 - 360)):
        view = views[merchant_id]
        assert view.settled is not None
        assert await paid_entries(pool, str(view.settled.payment_order_id)) == [(account, -amount)]
        assert (await settlement(api, merchant_id)).paid_minor == amount
    await ledger_checked()


async def test_a_payment_without_an_answer_is_completed_once_by_a_later_sweep(
        api: Api, pool, clock, gateway_port, gateway, ledger_checked):
    account = (await api.open_account(limit_minor=1_000_000)).account_id
    await buy(api, account, 70_000, merchant_id="stall-24")  # 4: no answer in time, paid later
    (view,) = await settle(pool, clock)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway_port}") as channel:
        hasty = _bot(pool, clock, PaymentGateway(channel, timeout_s=0.4))
        assert await hasty.sweep() == Counter(merchant_not_final=1)
        # Within the lease nobody asks again.
        assert await hasty.sweep() == Counter()
        sweeps: Counter = Counter()

        async def swept() -> bool:
            clock.advance(timedelta(seconds=61))
            sweeps.update(await hasty.sweep())
            return sweeps["merchant_completed"] == 1
        await until(swept)
    assert view.settled is not None
    key = str(view.settled.payment_order_id)
    assert await gateway_payments(gateway, key) == 1
    assert await paid_entries(pool, key) == [(account, -(70_000 - 420))]
    await ledger_checked()


async def test_a_payee_the_gateway_refuses_fails_the_day_until_an_operator_mends_it_and_asks_again(
        api: Api, pool, clock, bot, gateway, ledger_checked):
    async with acquire(pool) as conn:
        await merchant_settlements.register_merchant(conn, "mall-33", MerchantCategory.ELECTRONICS, clock.now())
    account = (await api.open_account(limit_minor=1_000_000)).account_id
    await buy(api, account, 90_000, merchant_id="mall-33")  # 3: MERCHANT_INVALID
    await settle(pool, clock)
    assert await bot.sweep() == Counter(merchant_completed=1)
    failed = await settlement(api, "mall-33")
    assert failed.status == checkout_pb2.MERCHANT_SETTLEMENT_STATUS_FAILED
    assert failed.failure_reason == checkout_pb2.MERCHANT_PAYMENT_FAILURE_REASON_MERCHANT_INVALID
    assert failed.paid_minor == 0
    # Nothing moved and nothing is booked: the day is still owed, in flight (120 bps of
    # 90,000 is the 1,080 fee).
    assert await paid_entries(pool, failed.payment_order_id) == []
    assert await merchant_balances(pool, [account]) == {
        (account, "MERCHANT_FEE_INCOME"): -1_080, (account, "MERCHANT_SETTLEMENT_IN_FLIGHT"): -88_920}
    clock.advance(timedelta(seconds=61))
    assert await bot.sweep() == Counter()
    await ledger_checked()

    async with acquire(pool) as conn:
        # Only a FAILED day is asked again, and only a registered merchant gets a payee.
        with pytest.raises(NotFound):
            await merchant_settlements.set_payee(conn, "mall-99", "mall-99-acct-0", clock.now())
        with pytest.raises(NotFound):
            await merchant_payments.pay_again(conn, "mall-33", DAY - timedelta(days=1), clock.now())
        await merchant_settlements.set_payee(conn, "mall-33", "mall-33-icbc-0", clock.now())
        again = await merchant_payments.pay_again(conn, "mall-33", DAY, clock.now())
        with pytest.raises(FailedPrecondition):
            await merchant_payments.pay_again(conn, "mall-33", DAY, clock.now())
    assert str(again["payment_order_id"]) != failed.payment_order_id
    assert await bot.sweep() == Counter(merchant_completed=1)
    paid = await settlement(api, "mall-33")
    assert paid.status == checkout_pb2.MERCHANT_SETTLEMENT_STATUS_PAID
    assert (paid.paid_minor, paid.payment_attempts, paid.payee_id) == (88_920, 2, "mall-33-icbc-0")
    assert paid.failure_reason == checkout_pb2.MERCHANT_PAYMENT_FAILURE_REASON_UNSPECIFIED
    assert await paid_entries(pool, paid.payment_order_id) == [(account, -88_920)]
    assert await merchant_balances(pool, [account]) == {(account, "MERCHANT_FEE_INCOME"): -1_080}
    # The failed payment stays FAILED at the gateway and moved nothing; the checker
    # compares both keys.
    first = await gateway.get(idempotency_key=failed.payment_order_id)
    assert first is not None and first.status is PaymentStatus.FAILED
    # Its result delivered once more, late, is a duplicate of a final payment.
    merchants = PaymentOrders(clock, gateway).merchants
    assert await merchants.apply_alone(pool, Result.of(first)) is Applied.ALREADY_FINAL
    await ledger_checked()


async def test_a_bot_killed_between_asking_and_recording_neither_pays_twice_nor_loses_it(
        api: Api, pool, clock, bot, gateway, ledger_checked):
    account = (await api.open_account(limit_minor=1_000_000)).account_id
    await buy(api, account, 40_000, merchant_id="stall-40")
    await settle(pool, clock)
    # A bot claimed the day and asked the gateway, which paid; then it died.
    (claimed,) = await bot._orders.merchants.claim_due(pool, timedelta(seconds=60), 10)
    answer = await gateway.submit(claimed.order())
    assert answer.status is PaymentStatus.SUCCEEDED
    assert (await settlement(api, "stall-40")).status == checkout_pb2.MERCHANT_SETTLEMENT_STATUS_REQUESTED
    # Within its lease nobody asks; after it, a sweep looks the payment up by its key.
    assert await bot.sweep() == Counter()
    clock.advance(timedelta(seconds=61))
    assert await bot.sweep() == Counter(merchant_completed=1)
    key = str(claimed.payment_order_id)
    assert await gateway_payments(gateway, key) == 1
    assert await paid_entries(pool, key) == [(account, -(40_000 - 240))]
    await ledger_checked()


async def test_two_replicas_pay_each_day_once(api: Api, pool, clock, gateway, ledger_checked):
    accounts = [(await api.open_account(limit_minor=1_000_000)).account_id for _ in range(3)]
    for n, account_id in enumerate(accounts):
        for merchant in range(4):
            await buy(api, account_id, 10_000 + 100 * n + merchant, merchant_id=f"shop-7{merchant}0")
    assert len(await settle(pool, clock)) == 4
    replicas = [_bot(pool, clock, gateway) for _ in range(2)]
    results = await asyncio.gather(*(replica.sweep() for replica in replicas))
    assert sum(results, Counter()) == Counter(merchant_completed=4)
    async with acquire(pool) as conn:
        keys = [str(key) for (key,) in await conn.fetch("SELECT payment_order_id FROM merchant_settlements")]
        # One entry per account and day: each day paid and booked once.
        assert await conn.fetchval("SELECT count(*) FROM journal_entries WHERE kind = 'MERCHANT_PAID'") == 12
    assert [await gateway_payments(gateway, key) for key in keys] == [1] * 4
    await ledger_checked()


async def test_a_day_settles_only_after_the_days_before_it(api: Api, pool, clock, books):
    account = (await api.open_account(limit_minor=1_000_000)).account_id
    for merchant_id in ("shop-a1", "shop-b1"):
        await buy(api, account, 30_000, merchant_id=merchant_id)
    clock.advance(timedelta(days=1))
    await buy(api, account, 30_000, merchant_id="shop-a1")
    clock.advance(timedelta(days=1))
    # One merchant a day per run: the first run stops at the first day, which has more
    # merchants left, and does not settle shop-a1's second day ahead of shop-b1's first.
    first = await merchant_settlements.settle_closed_days(pool, clock.now(), limit=1)
    assert [(v.merchant_id, v.day) for v in first] == [("shop-a1", DAY)]
    second = await merchant_settlements.settle_closed_days(pool, clock.now(), limit=1)
    assert [(v.merchant_id, v.day) for v in second] == [("shop-b1", DAY)]
    third = await merchant_settlements.settle_closed_days(pool, clock.now(), limit=1)
    assert [(v.merchant_id, v.day) for v in third] == [("shop-a1", DAY + timedelta(days=1))]
    # An earlier day found open after a later one settled stays open, rather than settle
    # from a carry that the later day already took.
    async with acquire(pool) as conn, conn.transaction():
        assert await merchant_settlements.settle_day(conn, "shop-a1", DAY - timedelta(days=3), clock.now()) is None
    await books()


async def test_the_checker_finds_a_merchant_payment_booked_twice_or_for_a_day_not_paid(
        api: Api, pool, clock, bot):
    account = (await api.open_account(limit_minor=1_000_000)).account_id
    await buy(api, account, 40_000, merchant_id="stall-50")
    await buy(api, account, 40_000, merchant_id="stall-53")  # 3: MERCHANT_INVALID, FAILED
    await settle(pool, clock)
    assert await bot.sweep() == Counter(merchant_completed=2)
    paid, failed = await settlement(api, "stall-50"), await settlement(api, "stall-53")
    async with acquire(pool) as conn:
        # A bug that booked the paid day's payment again, and the failed day's as if paid.
        for key in (paid.payment_order_id, failed.payment_order_id):
            await ledger_rows.post(conn, UUID(account), UUID(key), merchant_paid(39_760), clock.now())
        violations = await check(conn)
    assert sorted((v.rule, v.found, v.expected) for v in violations) == sorted([
        ("a merchant payment is booked in an account at most once", 2, 1),
        ("each merchant-day's payment is booked once, for what it paid", -79_520, -39_760),
        ("each merchant-day's payment is booked once, for what it paid", -39_760, 0),
        ("every merchant payment booked is a paid day's", 1, 0),
        ("what is in flight for a merchant is what it is still owed", 39_760, 0),
        ("what is in flight for a merchant is what it is still owed", 0, -39_760),
        # In the account, both days' in flight (39,760 each) should be: the paid one's
        # gone, the failed one's still there; the two bookings put 39,760 on the wrong side.
        ("an account's merchant payments in flight are its days not paid yet", 39_760, -39_760)])


async def test_a_day_settled_before_fees_were_booked_on_settling_gets_its_fee_and_waits_for_release(
        api: Api, pool, clock, bot, gateway, ledger_checked, monkeypatch):
    accounts = [(await api.open_account(limit_minor=1_000_000)).account_id for _ in range(2)]
    await buy(api, accounts[0], 50_000, merchant_id="stall-90")
    await buy(api, accounts[1], 30_001, merchant_id="stall-90")
    # Settled as the earlier build did: each account's whole part in flight, no fee; then
    # what the migration leaves of such a day: its fee to book, its payment held.
    with monkeypatch.context() as patched:
        patched.setattr(merchant_settlements, "fee_shares", lambda fee, captured: [0] * len(captured))
        (view,) = await settle(pool, clock)
    async with acquire(pool) as conn:
        await conn.execute("UPDATE merchant_settlements SET fee_booked = false, submitted_at = 'infinity'")
    assert await merchant_balances(pool, accounts) == {
        (accounts[0], "MERCHANT_SETTLEMENT_IN_FLIGHT"): -50_000,
        (accounts[1], "MERCHANT_SETTLEMENT_IN_FLIGHT"): -30_001}
    await ledger_checked()
    # The next run books the fee (60 bps of 80,001: 480, shared 300 and 180) and pays nothing.
    assert await merchant_settlements.settle_closed_days(pool, clock.now()) == []
    assert await merchant_balances(pool, accounts) == {
        (accounts[0], "MERCHANT_SETTLEMENT_IN_FLIGHT"): -49_700, (accounts[0], "MERCHANT_FEE_INCOME"): -300,
        (accounts[1], "MERCHANT_SETTLEMENT_IN_FLIGHT"): -29_821, (accounts[1], "MERCHANT_FEE_INCOME"): -180}
    assert await merchant_settlements.book_unbooked_fees(pool, clock.now()) == 0
    clock.advance(timedelta(hours=1))
    assert await bot.sweep() == Counter()
    await ledger_checked()
    # An operator who checked it was not paid otherwise releases it; the sweep pays it.
    async with acquire(pool) as conn:
        await merchant_settlements.release(conn, "stall-90", DAY)
        with pytest.raises(FailedPrecondition):
            await merchant_settlements.release(conn, "stall-90", DAY)
    assert await bot.sweep() == Counter(merchant_completed=1)
    assert view.settled is not None
    assert sorted(await paid_entries(pool, str(view.settled.payment_order_id))) == sorted([
        (accounts[0], -49_700), (accounts[1], -29_821)])
    await ledger_checked()


async def test_a_payee_must_be_an_identifier_the_gateway_takes(pool, clock):
    async with acquire(pool) as conn:
        await merchant_settlements.register_merchant(conn, "mall-40", MerchantCategory.GENERAL, clock.now())
        for bad in ("mall-40 icbc-0", "", "x" * 129, "银行"):
            with pytest.raises(InvalidArgument) as refused:
                await merchant_settlements.set_payee(conn, "mall-40", bad, clock.now())
            assert [v.field for v in refused.value.violations] == ["payee_id"]
        with pytest.raises(InvalidArgument):
            await merchant_settlements.register_merchant(conn, "mall 40", MerchantCategory.GENERAL, clock.now())
        assert await merchant_settlements.payee(conn, "mall-40") == "mall-40"


async def test_a_result_that_breaks_the_books_is_left_unapplied_and_holds_back_nothing_else(
        api: Api, pool, clock, bot, gateway, monkeypatch):
    from server.db import merchants as merchant_rows

    account = (await api.open_account(limit_minor=1_000_000)).account_id
    await buy(api, account, 40_000, merchant_id="stall-60")
    await buy(api, account, 40_000, merchant_id="stall-61")
    await settle(pool, clock)
    real = merchant_rows.in_flight_by_account

    async def damaged(conn, settlement_ids):
        parts = await real(conn, settlement_ids)
        day = await conn.fetchval("SELECT merchant_id FROM merchant_settlements WHERE settlement_id = $1",
                                  settlement_ids[-1])
        return [(a, amount + 1) for a, amount in parts] if day == "stall-60" else parts

    monkeypatch.setattr(merchant_rows, "in_flight_by_account", damaged)
    # The sweep pays both; one cannot be booked: it is reported and left REQUESTED, the
    # other is booked.
    assert await bot.sweep() == Counter(merchant_error=1, merchant_completed=1)
    assert (await settlement(api, "stall-60")).status == checkout_pb2.MERCHANT_SETTLEMENT_STATUS_REQUESTED
    assert (await settlement(api, "stall-61")).status == checkout_pb2.MERCHANT_SETTLEMENT_STATUS_PAID
    # The stream's events: the bad one is not applied, and the cursor moves past it.
    orders = PaymentOrders(clock, gateway)
    outcomes = []
    async for event in gateway.watch(0):
        outcomes.append((event.merchant_id, await orders.apply_event(pool, "collections-bot", event)))
        if len(outcomes) == 2:
            break
    assert sorted(outcomes) == [("stall-60", Applied.ERROR), ("stall-61", Applied.ALREADY_FINAL)]
    assert await orders.cursor(pool, "collections-bot") == 2
    assert (await settlement(api, "stall-60")).status == checkout_pb2.MERCHANT_SETTLEMENT_STATUS_REQUESTED


async def test_a_day_is_settled_only_some_minutes_after_its_midnight(api: Api, pool, clock):
    account = (await api.open_account(limit_minor=1_000_000)).account_id
    await buy(api, account, 40_000, merchant_id="stall-70")
    shanghai_midnight = datetime.combine(DAY + timedelta(days=1), datetime.min.time(),
                                         tzinfo=ZoneInfo("Asia/Shanghai"))
    clock.set(shanghai_midnight + timedelta(minutes=5))
    assert await merchant_settlements.settle_closed_days(pool, clock.now()) == []
    clock.set(shanghai_midnight + merchant_settlements.CLOSING_GRACE)
    assert [v.day for v in await merchant_settlements.settle_closed_days(pool, clock.now())] == [DAY]
