"""Auto-debit over a real gRPC channel, a real PostgreSQL and the payment-gateway
simulator (the instrument token's last digit picks what the processor does): a loan
repaid by debits alone, failures tried again on schedule, late, duplicated and lost
answers, a bot killed between asking and recording, two replicas, and the books
(with the gateway's own record) after each."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import date, timedelta

import grpc
import pytest

from collections_bot.payments import PaymentsTask
from credit.v1 import common_pb2, repayment_pb2
from server.core.auto_debit import AutoDebits
from server.core.payment_orders import PaymentOrders
from server.db import payment_orders as order_rows
from server.domain.payments import PaymentStatus
from server.invariants import check
from server.payments.gateway import PaymentGateway
from tests.support import (
    GATEWAY_DELAY_S,
    Api,
    auto_debit_repayments,
    bind,
    buy,
    debit_orders,
    gateway_payments,
    key,
    morning,
    repay,
    until,
)

# A 300-yuan loan over 3 months: 1,000.00 principal and 18.00 fee a month.
INSTALLMENT = 101_800


@pytest.fixture
async def hasty_gateway(gateway_port):
    """A client that gives up before a payment that times out answers."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway_port}") as channel:
        yield PaymentGateway(channel, timeout_s=0.4)


def _bot(pool, clock, gateway: PaymentGateway) -> PaymentsTask:
    return PaymentsTask(pool, clock, PaymentOrders(clock, gateway), reconcile_after_s=60, auto_debit_hour=8)


@pytest.fixture
def bot(pool, clock, gateway):
    return _bot(pool, clock, gateway)


async def borrower(api: Api, token: str, *, auto_debit: bool = True, locale: str = "zh-CN"):
    """An account in Shanghai with a 300-yuan loan over 3 months and an instrument bound."""
    account = await api.open_account(limit_minor=1_000_000, locale=locale)
    loan = await buy(api, account.account_id, 300_000)
    method = await bind(api, account.account_id, token, auto_debit=auto_debit)
    assert method.auto_debit is auto_debit and method.token_last4 == token[-4:]
    return account.account_id, loan


@pytest.mark.parametrize("digit", ["0", "1"])
async def test_a_loan_is_repaid_entirely_by_auto_debit_over_its_three_due_dates(
        api, bot, clock, pool, gateway, ledger_checked, digit):
    account_id, loan = await borrower(api, f"card-6222-0200-1234-567{digit}")
    for n, installment in enumerate(loan.installments, start=1):
        clock.set(morning(installment.due_date, 7, 59))
        assert await bot.debit() == Counter()
        clock.set(morning(installment.due_date, 8))
        assert await bot.debit() == Counter(completed=1)
        # A second pass the same day finds it paid and asks for nothing.
        clock.set(morning(installment.due_date, 15))
        assert await bot.debit() == Counter()
        after = await api.loan(loan.loan_id)
        assert [i.status == common_pb2.INSTALLMENT_STATUS_PAID for i in after.installments] == [
            k < n for k in range(len(loan.installments))]
        await ledger_checked()
    assert (await api.loan(loan.loan_id)).status == common_pb2.LOAN_STATUS_PAID_OFF
    paid = await auto_debit_repayments(pool, account_id)
    orders = await debit_orders(pool, account_id)
    assert [amount for _, amount in paid] == [INSTALLMENT] * 3
    assert sorted(repayment_id for repayment_id, _ in paid) == sorted(str(o["order_id"]) for o in orders)
    assert [(o["due_date"].isoformat(), o["attempt"], o["status"]) for o in orders] == [
        (i.due_date, 1, "SUCCEEDED") for i in loan.installments]
    for order in orders:
        assert await gateway_payments(gateway, str(order["order_id"])) == 1
    account = await api.account(account_id)
    assert account.credit_balance_minor == 0 and account.outstanding_principal_minor == 0


async def test_an_instrument_bound_without_auto_debit_is_never_debited(api, bot, clock, pool, books):
    account_id, loan = await borrower(api, "card-0000", auto_debit=False)
    clock.set(morning(loan.installments[0].due_date, 9))
    assert await bot.debit() == Counter()
    assert await debit_orders(pool, account_id) == []
    await books()


async def test_a_failed_debit_is_tried_again_on_schedule_and_then_paid(api, bot, clock, pool, ledger_checked):
    account_id, loan = await borrower(api, "card-4000-0002")
    due = loan.installments[0].due_date
    clock.set(morning(due, 8))
    assert await bot.debit() == Counter(completed=1)
    assert [(o["attempt"], o["status"], o["failure_reason"]) for o in await debit_orders(pool, account_id)] == [
        (1, "FAILED", "INSUFFICIENT_FUNDS")]
    await ledger_checked()
    # Nothing booked for a failure; the installment is still owed, and reminders go on.
    assert (await api.loan(loan.loan_id)).installments[0].status != common_pb2.INSTALLMENT_STATUS_PAID
    clock.set(morning(due, 11, 59))
    assert await bot.debit() == Counter()
    clock.set(morning(due, 12, 1))
    assert await bot.debit() == Counter(completed=1)
    clock.set(morning(due, 20))
    assert await bot.debit() == Counter()
    # The customer binds a card with money on it; the next morning's try uses it.
    await bind(api, account_id, "card-4000-0010", auto_debit=True)
    clock.set(morning(date.fromisoformat(due) + timedelta(days=1), 8, 30))
    assert await bot.debit() == Counter(completed=1)
    orders = await debit_orders(pool, account_id)
    assert [(o["attempt"], o["status"]) for o in orders] == [(1, "FAILED"), (2, "FAILED"), (3, "SUCCEEDED")]
    paid = await auto_debit_repayments(pool, account_id)
    assert paid == [(str(orders[2]["order_id"]), INSTALLMENT)]
    assert (await api.loan(loan.loan_id)).installments[0].status == common_pb2.INSTALLMENT_STATUS_PAID
    await ledger_checked()


async def test_three_failures_end_the_tries_for_that_due_date(api, bot, clock, pool, ledger_checked):
    account_id, loan = await borrower(api, "card-4000-0003")
    due = date.fromisoformat(loan.installments[0].due_date)
    for when in (morning(due, 8), morning(due, 12, 30), morning(due + timedelta(days=1), 9)):
        clock.set(when)
        assert await bot.debit() == Counter(completed=1)
    clock.set(morning(due + timedelta(days=2), 9))
    assert await bot.debit() == Counter()
    assert [(o["attempt"], o["status"]) for o in await debit_orders(pool, account_id)] == [
        (1, "FAILED"), (2, "FAILED"), (3, "FAILED")]
    assert await auto_debit_repayments(pool, account_id) == []
    await ledger_checked()


async def test_a_late_answer_and_a_duplicated_one_are_each_applied_once(api, bot, clock, pool, ledger_checked):
    late_account, late_loan = await borrower(api, "card-4000-0005")
    twice_account, _ = await borrower(api, "card-4000-0006")
    clock.set(morning(late_loan.installments[0].due_date, 8))
    assert await bot.debit() == Counter(completed=1, not_final=1)
    stop = asyncio.Event()
    watching = asyncio.create_task(bot.watch(stop))
    try:
        async def settled() -> bool:
            orders = await debit_orders(pool, late_account)
            return orders[0]["status"] == "SUCCEEDED" and await bot._orders.cursor(pool, "collections-bot") >= 3
        await until(settled)
        # The duplicate of the second account's answer comes DELAY after the first.
        await asyncio.sleep(GATEWAY_DELAY_S * 3)
    finally:
        stop.set()
        await watching
    for account_id in (late_account, twice_account):
        (order,) = await debit_orders(pool, account_id)
        assert order["status"] == "SUCCEEDED"
        assert await auto_debit_repayments(pool, account_id) == [(str(order["order_id"]), order["amount_minor"])]
    # The next pass of the day asks for nothing more.
    assert await bot.debit() == Counter()
    await ledger_checked()


async def test_a_debit_without_an_answer_is_completed_once_by_the_sweep(
        api, pool, clock, hasty_gateway, gateway, ledger_checked):
    account_id, loan = await borrower(api, "card-4000-0004")
    bot = _bot(pool, clock, hasty_gateway)
    clock.set(morning(loan.installments[0].due_date, 8))
    assert await bot.debit() == Counter(not_final=1)
    (order,) = await debit_orders(pool, account_id)
    assert order["status"] == "REQUESTED"
    # The next pass does not debit again while the first try's result is unknown.
    clock.set(morning(loan.installments[0].due_date, 13))
    assert await bot.debit() == Counter()
    clock.advance(timedelta(seconds=61))
    sweeps: Counter = Counter()

    async def swept() -> bool:
        sweeps.update(await bot.sweep())
        clock.advance(timedelta(seconds=61))
        return sweeps["completed"] == 1
    await until(swept)
    assert await bot.sweep() == Counter()
    assert await gateway_payments(gateway, str(order["order_id"])) == 1
    assert await auto_debit_repayments(pool, account_id) == [(str(order["order_id"]), order["amount_minor"])]
    await ledger_checked()


async def test_a_bot_killed_between_asking_and_recording_neither_debits_twice_nor_loses_it(
        api, bot, pool, clock, gateway, ledger_checked):
    # Asked and paid at the gateway, never recorded: the bot died after the call.
    asked_account, loan = await borrower(api, "card-5550")
    # Written, never asked: the bot died after the commit, before the call.
    unasked_account, _ = await borrower(api, "card-5551")
    clock.set(morning(loan.installments[0].due_date, 8))
    written = await AutoDebits(clock, morning_hour=8).request_due(pool, batch_size=10)
    by_account = {str(order["account_id"]): order for order in written.requested}
    assert set(by_account) == {asked_account, unasked_account}
    asked = by_account[asked_account]
    async with pool.acquire() as conn:
        token = await order_rows.token(conn, asked["payment_method_id"], asked["account_id"])
    answer = await gateway.debit(idempotency_key=str(asked["order_id"]), instrument_token=token,
                                 amount_minor=asked["amount_minor"], reference=str(asked["order_id"]),
                                 account_id=asked_account)
    assert answer.status is PaymentStatus.SUCCEEDED
    # Meanwhile the customer paid part of it by bank card: the debit's surplus goes on
    # through the waterfall, as any repayment's, to the next installment's principal.
    await repay(api, asked_account, 1_800)

    # The next pass asks for no new try while the first is REQUESTED.
    clock.set(morning(loan.installments[0].due_date, 9))
    assert await bot.debit() == Counter()
    clock.advance(timedelta(seconds=61))
    assert await bot.sweep() == Counter(completed=2)
    for account_id, order in ((asked_account, asked), (unasked_account, by_account[unasked_account])):
        assert await gateway_payments(gateway, str(order["order_id"])) == 1
        assert await auto_debit_repayments(pool, account_id) == [(str(order["order_id"]), order["amount_minor"])]
    assert (await api.account(asked_account)).credit_balance_minor == 0
    after = await api.loan(loan.loan_id)
    assert after.installments[0].status == common_pb2.INSTALLMENT_STATUS_PAID
    assert after.installments[1].paid_minor == 1_800
    clock.advance(timedelta(seconds=61))
    assert await bot.sweep() == Counter()
    assert await bot.debit() == Counter()
    await ledger_checked()


async def test_two_bot_replicas_debit_each_due_date_once(api, pool, clock, gateway, ledger_checked):
    accounts = [await borrower(api, f"card-7000-00{n}0") for n in range(4)]
    replicas = [_bot(pool, clock, gateway) for _ in range(2)]
    clock.set(morning(accounts[0][1].installments[0].due_date, 8))
    results = await asyncio.gather(*(replica.debit() for replica in replicas))
    assert sum(results, Counter()) == Counter(completed=4)
    assert sum(await asyncio.gather(*(replica.debit() for replica in replicas)), Counter()) == Counter()
    for account_id, _ in accounts:
        (order,) = await debit_orders(pool, account_id)
        assert order["status"] == "SUCCEEDED"
        assert await gateway_payments(gateway, str(order["order_id"])) == 1
    await ledger_checked()


async def test_the_checker_finds_a_debit_booked_twice_or_not_at_all(api, bot, pool, clock, gateway):
    account_id, loan = await borrower(api, "card-8880-0001")
    clock.set(morning(loan.installments[0].due_date, 8))
    assert await bot.debit() == Counter(completed=1)
    (order,) = await debit_orders(pool, account_id)
    rule = "each succeeded debit order is exactly one auto-debit repayment of its amount, any other none"
    async with pool.acquire() as conn:
        assert await check(conn, gateway) == []
        # The books say it failed, yet it was repaid (and the gateway says it paid).
        await conn.execute("UPDATE payment_orders SET status = 'FAILED', failure_reason = 'DECLINED' "
                           "WHERE order_id = $1", order["order_id"])
        rules = {v.rule for v in await check(conn, gateway)}
    assert {rule, "each auto-debit repayment is a succeeded debit order"} <= rules


async def test_a_client_cannot_repay_under_the_auto_debit_channel(api, books):
    account = await api.open_account(limit_minor=1_000_000)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await api.repayment.Repay(repayment_pb2.RepayRequest(
            account_id=account.account_id, amount_minor=1_000, channel=repayment_pb2.PAYMENT_CHANNEL_AUTO_DEBIT,
            idempotency_key=key()), timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await books()
