"""One story of money through the payment gateway, end to end: the real credit service
over gRPC, the payment-gateway simulator as a real gRPC server, real PostgreSQL, and a
clock that only moves forward (docs/payments.md).

On 15 January 2027 five customers buy from one school, an EDUCATION merchant:

- Ana's card (last digit 0) is debited on each of her three due dates: her loan is
  repaid by auto-debit alone;
- Bo's card (2) has no money on the first due date; Bo binds a funded card and the
  retry 4 hours later pays;
- Chen's card (6) answers twice: the stream's two events for that debit change nothing;
- Du pays off, returns the goods, and withdraws the credit balance the refund left;
- Fei never pays: the loan is charged off, and Fei's later payment recovers the
  written-off debt instead of becoming credit balance.

The school's day (Shanghai) settles the next morning to the fen: captures, the refund,
the category's fee rounded once, the net; the bot's sweep pays it through the gateway,
and nothing is owed for it in any account. After every step the books hold, and the
cash they booked for gateway payments is what the gateway says it moved.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import date, datetime, timedelta

import pytest

from collections_bot.payments import CONSUMER, PaymentsTask
from credit.v1 import checkout_pb2, common_pb2, repayment_pb2
from server.core import merchant_settlements
from server.core.payment_orders import Applied, PaymentOrders
from server.db import acquire
from server.domain.merchant_settlement import SettlementStatus
from server.domain.payments import PaymentStatus
from server.domain.pricing import MerchantCategory
from server.payments.gateway import PaymentGateway
from tests.support import (
    Api,
    auto_debit_repayments,
    bind,
    buy,
    debit_orders,
    make_bot,
    merchant_balances,
    merchant_payable_of,
    morning,
    payoff,
    refund,
    repay,
    settings_with_gateway,
    withdraw,
)

SCHOOL = "school-7310"
DAY = date(2027, 1, 15)  # the clock's start (tests/integration/conftest.py), 10:00 in Shanghai
EDUCATION_FEE_BPS = 40
# A 3,000.00 loan over 3 months, flat fee 0.6 % a month: 1,000.00 + 18.00 on each of
# 15 February, 15 March and 15 April.
PRINCIPAL = 300_000
INSTALLMENT = 101_800
DUE_DATES = ("2027-02-15", "2027-03-15", "2027-04-15")
# Du's 300.00 paid off on the day of the purchase: the principal and a month's fee.
DU_PRINCIPAL, DU_PAID = 30_000, 30_180
# Fei's purchase: with the others, the day's captures end in 125 fen of 250, so that
# 40 bps of them is a half fen.
FEI_PRINCIPAL = 130_125
# The bot charges a loan off 180 days after its first missed due date.
CHARGE_OFF_DAY = morning(DUE_DATES[0], 10) + timedelta(days=180)


@pytest.fixture
def settings(gateway_port, billing_cycle):
    # Withdrawals go through the same simulator the bot debits through.
    return settings_with_gateway(gateway_port, billing_cycle[1])


@pytest.fixture
def payments(pool, clock, gateway) -> PaymentsTask:
    """The collections bot's payments task: auto-debit in the morning from 08:00."""
    return PaymentsTask(pool, clock, PaymentOrders(clock, gateway), reconcile_after_s=60, auto_debit_hour=8)


@pytest.fixture
def collections(pool, clock):
    """The collections bot's pass: ageing, penalties, charge-off."""
    controller, bot = make_bot(pool, clock)
    yield bot
    controller.stop()


async def customer(api: Api, amount_minor: int, card: str | None = None) -> tuple[str, common_pb2.Loan]:
    """A Shanghai account with a 3-month loan from the school and, if given, `card`
    bound for auto-debit: (account id, loan)."""
    account_id = (await api.open_account(limit_minor=1_000_000)).account_id
    loan = await buy(api, account_id, amount_minor, merchant_id=SCHOOL)
    if card is not None:
        method = await bind(api, account_id, card, auto_debit=True)
        assert method.auto_debit and method.token_last4 == card[-4:]
    return account_id, loan


def half_up_fee(captured_minor: int, fee_bps: int) -> int:
    """fee_bps of the day's captures, rounded half-up to the fen once (written without
    the code under test)."""
    return (captured_minor * fee_bps + 5_000) // 10_000


async def settled_merchant_day(api: Api, pool, now: datetime, merchant_id: str,
                               day: date) -> checkout_pb2.MerchantSettlement:
    """Settle the closed days as the bot's pass does at `now`, and read the merchant's day
    back over gRPC."""
    settled = await merchant_settlements.settle_closed_days(pool, now)
    assert [(v.merchant_id, v.day) for v in settled] == [(merchant_id, day)]
    assert settled[0].settled is not None and settled[0].settled.status is SettlementStatus.REQUESTED
    return await api.checkout.GetMerchantSettlement(
        checkout_pb2.GetMerchantSettlementRequest(merchant_id=merchant_id, date=day.isoformat()), timeout=10)


async def follow_stream_until(pool, clock, gateway: PaymentGateway, order_id: str,
                              events: int) -> list[tuple[str, Applied]]:
    """Apply the gateway's stream from the bot's cursor, as the bot's watch does, until
    `events` events for `order_id` have been applied: (order id, outcome) of each."""
    orders = PaymentOrders(clock, gateway)
    applied: list[tuple[str, Applied]] = []

    async def follow() -> None:
        async for event in gateway.watch(await orders.cursor(pool, CONSUMER)):
            outcome = await orders.apply_event(pool, CONSUMER, event)
            assert outcome is not None  # no other consumer moves the cursor here
            applied.append((event.idempotency_key, outcome))
            if [key for key, _ in applied].count(order_id) == events:
                return

    await asyncio.wait_for(follow(), timeout=10)
    return applied


async def journal_kinds(pool, account_id: str) -> list[str]:
    async with acquire(pool) as conn:
        rows = await conn.fetch("SELECT kind FROM journal_entries WHERE account_id = $1::uuid ORDER BY sequence",
                                account_id)
    return [row["kind"] for row in rows]


async def test_five_customers_money_through_the_gateway_from_purchase_to_recovery(
        api, pool, clock, gateway, payments, collections, ledger_checked):
    async with acquire(pool) as conn:
        await merchant_settlements.register_merchant(conn, SCHOOL, MerchantCategory.EDUCATION, clock.now())

    # 15 January: five purchases from the school; three cards bound for auto-debit.
    ana, ana_loan = await customer(api, PRINCIPAL, "card-6222-0200-1234-5670")
    bo, bo_loan = await customer(api, PRINCIPAL, "card-6222-0200-1234-5672")
    chen, chen_loan = await customer(api, PRINCIPAL, "card-6222-0200-1234-5676")
    du, du_loan = await customer(api, DU_PRINCIPAL)
    fei, fei_loan = await customer(api, FEI_PRINCIPAL)
    for loan in (ana_loan, bo_loan, chen_loan):
        assert [(i.due_date, i.principal_minor + i.fee_minor) for i in loan.installments] == [
            (due, INSTALLMENT) for due in DUE_DATES]
    await ledger_checked()

    # A refund of a paid-up loan leaves a credit balance, and the customer withdraws it:
    # the payout succeeds at the gateway and the balance is gone.
    clock.set(morning(DAY, 15))
    assert await payoff(api, du_loan.loan_id) == DU_PAID
    await repay(api, du, DU_PAID)
    await refund(api, du_loan.loan_id, DU_PRINCIPAL)
    assert (await api.account(du)).credit_balance_minor == DU_PAID
    await bind(api, du, "card-6222-0300-4321-0010")
    payout = await withdraw(api, du, DU_PAID)
    assert payout.status == repayment_pb2.PAYOUT_STATUS_SUCCEEDED and payout.amount_minor == DU_PAID
    assert payout.account.credit_balance_minor == 0
    paid_out = await gateway.get(idempotency_key=payout.payout_id)
    assert paid_out is not None and (paid_out.status, paid_out.amount_minor) == (PaymentStatus.SUCCEEDED, DU_PAID)
    assert (await journal_kinds(pool, du))[-2:] == ["PAYOUT_REQUESTED", "PAYOUT_SUCCEEDED"]
    await ledger_checked()

    # The school's day closes at midnight in Shanghai; settled the next morning, it is
    # the captures less the refund less 40 bps of the captures, rounded once, to the fen.
    clock.set(morning(DAY + timedelta(days=1), 6))
    captured = 3 * PRINCIPAL + DU_PRINCIPAL + FEI_PRINCIPAL
    fee = half_up_fee(captured, EDUCATION_FEE_BPS)
    assert (captured, fee) == (1_060_125, 4_241)  # 4,240.5 fen, half up
    day = await settled_merchant_day(api, pool, clock.now(), SCHOOL, DAY)
    assert (day.category, day.fee_bps, day.time_zone) == (
        checkout_pb2.MERCHANT_CATEGORY_EDUCATION, EDUCATION_FEE_BPS, "Asia/Shanghai")
    assert (day.captured_minor, day.refunded_minor, day.fee_minor, day.carried_in_minor, day.net_minor) == (
        captured, DU_PRINCIPAL, fee, 0, captured - DU_PRINCIPAL - fee)
    assert (day.captures, day.refunds, day.status, day.paid_minor) == (
        5, 1, checkout_pb2.MERCHANT_SETTLEMENT_STATUS_REQUESTED, 0)
    assert day.net_minor == 1_025_884 and day.payment_order_id
    # Nothing is owed to the school for that day in any account's MERCHANT_PAYABLE any more.
    assert await merchant_payable_of(pool, [ana, bo, chen, du, fei]) == 0
    await ledger_checked()

    # The sweep after the pass pays the day through the gateway, once, to the fen: the
    # fee stays with the platform and nothing is in flight to the school any more.
    assert await payments.sweep() == Counter(merchant_completed=1)
    paid = await api.checkout.GetMerchantSettlement(
        checkout_pb2.GetMerchantSettlementRequest(merchant_id=SCHOOL, date=DAY.isoformat()), timeout=10)
    assert (paid.status, paid.paid_minor, paid.payment_order_id, paid.payee_id) == (
        checkout_pb2.MERCHANT_SETTLEMENT_STATUS_PAID, 1_025_884, day.payment_order_id, SCHOOL)
    school_paid = await gateway.get(idempotency_key=day.payment_order_id)
    assert school_paid is not None and (school_paid.status, school_paid.amount_minor) == (
        PaymentStatus.SUCCEEDED, 1_025_884)
    balances = await merchant_balances(pool, [ana, bo, chen, du, fei])
    assert {ledger for _, ledger in balances} == {"MERCHANT_FEE_INCOME"} and sum(balances.values()) == -fee
    assert await payments.sweep() == Counter()
    await ledger_checked()

    # 15 February, the first due date: nothing before 08:00; at 08:00 the three cards
    # are debited. Ana's and Chen's pay; Bo's has no money, and nothing is booked for it.
    first_due = DUE_DATES[0]
    clock.set(morning(first_due, 7, 59))
    assert await payments.debit() == Counter()
    clock.set(morning(first_due, 8))
    assert await payments.debit() == Counter(completed=3)
    [ana_first] = await debit_orders(pool, ana)
    [chen_first] = await debit_orders(pool, chen)
    assert [(o["attempt"], o["status"], o["amount_minor"]) for o in (ana_first, chen_first)] == [
        (1, "SUCCEEDED", INSTALLMENT)] * 2
    assert [(o["attempt"], o["status"], o["failure_reason"]) for o in await debit_orders(pool, bo)] == [
        (1, "FAILED", "INSUFFICIENT_FUNDS")]
    assert await auto_debit_repayments(pool, bo) == []
    assert (await api.loan(bo_loan.loan_id)).installments[0].status != common_pb2.INSTALLMENT_STATUS_PAID
    await ledger_checked()

    # Chen's gateway answered the debit, then reports it on the stream twice (at once
    # and again later): both events find the order final, applied as already_final, and
    # Chen's books do not move.
    chen_books = (await journal_kinds(pool, chen), await auto_debit_repayments(pool, chen))
    assert chen_books[1] == [(str(chen_first["order_id"]), INSTALLMENT)]
    applied = await follow_stream_until(pool, clock, gateway, str(chen_first["order_id"]), events=2)
    assert [outcome for key, outcome in applied if key == str(chen_first["order_id"])] == [
        Applied.ALREADY_FINAL, Applied.ALREADY_FINAL]
    # Every earlier result (Du's payout, Ana's and Bo's debits) had been applied by its answer too.
    assert {outcome for _, outcome in applied} == {Applied.ALREADY_FINAL}
    assert (await journal_kinds(pool, chen), await auto_debit_repayments(pool, chen)) == chen_books
    await ledger_checked()

    # Bo binds a funded card for auto-debit; the retry, due 4 hours after the failure,
    # debits it and pays the installment.
    await bind(api, bo, "card-6222-0200-8888-0019", auto_debit=True)
    clock.set(morning(first_due, 11, 59))
    assert await payments.debit() == Counter()
    clock.set(morning(first_due, 12))
    assert await payments.debit() == Counter(completed=1)
    bo_orders = await debit_orders(pool, bo)
    assert [(o["attempt"], o["status"]) for o in bo_orders] == [(1, "FAILED"), (2, "SUCCEEDED")]
    assert await auto_debit_repayments(pool, bo) == [(str(bo_orders[1]["order_id"]), INSTALLMENT)]
    for loan in (ana_loan, bo_loan, chen_loan):
        assert [i.status == common_pb2.INSTALLMENT_STATUS_PAID for i in (await api.loan(loan.loan_id)).installments] \
            == [True, False, False]
    await ledger_checked()

    # 15 March and 15 April: each morning's debit pays the three installments at once.
    for n, due in enumerate(DUE_DATES[1:], start=2):
        clock.set(morning(due, 8))
        assert await payments.debit() == Counter(completed=3)
        clock.set(morning(due, 16))
        assert await payments.debit() == Counter()
        for loan in (ana_loan, bo_loan, chen_loan):
            assert [i.status == common_pb2.INSTALLMENT_STATUS_PAID
                    for i in (await api.loan(loan.loan_id)).installments] == [k < n for k in range(3)]
        await ledger_checked()
    # Ana's loan was repaid by auto-debit alone, one try per due date.
    assert [(o["due_date"].isoformat(), o["attempt"], o["status"]) for o in await debit_orders(pool, ana)] == [
        (due, 1, "SUCCEEDED") for due in DUE_DATES]
    assert [amount for _, amount in await auto_debit_repayments(pool, ana)] == [INSTALLMENT] * 3
    for account_id, loan in ((ana, ana_loan), (bo, bo_loan), (chen, chen_loan)):
        assert (await api.loan(loan.loan_id)).status == common_pb2.LOAN_STATUS_PAID_OFF
        account = await api.account(account_id)
        assert (account.outstanding_principal_minor, account.credit_balance_minor) == (0, 0)

    # Fei never paid: 180 days after the first missed due date the bot charges the loan off.
    clock.set(CHARGE_OFF_DAY)
    await collections.run()
    gone = await api.loan(fei_loan.loan_id)
    assert gone.status == common_pb2.LOAN_STATUS_CHARGED_OFF
    assert gone.write_off.principal_minor == FEI_PRINCIPAL and gone.write_off.recovered_minor == 0
    owed = gone.write_off.owed_minor
    assert owed > FEI_PRINCIPAL
    await ledger_checked()

    # A payment after the charge-off recovers the written-off debt (principal first); none
    # of it becomes credit balance while debt is owed.
    clock.advance(timedelta(days=3))
    recovered = await repay(api, fei, 50_000)
    assert (recovered.recovered_minor, recovered.applied_minor, recovered.unapplied_minor) == (50_000, 50_000, 0)
    assert [(r.loan_id, r.component, r.amount_minor) for r in recovered.recoveries] == [
        (fei_loan.loan_id, repayment_pb2.ALLOCATION_COMPONENT_PRINCIPAL, 50_000)]
    assert recovered.allocations == [] and recovered.account.credit_balance_minor == 0
    after = await api.loan(fei_loan.loan_id)
    assert (after.write_off.recovered_principal_minor, after.write_off.owed_minor) == (50_000, owed - 50_000)
    assert (await journal_kinds(pool, fei))[-1] == "RECOVERY_RECEIVED"
    await ledger_checked()
