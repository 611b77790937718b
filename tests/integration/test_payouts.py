"""Payouts of a credit balance over a real gRPC channel, a real PostgreSQL and the
payment-gateway simulator: each behaviour of the processor by the instrument token's
last digit, the bot's reconciliation (the stream and the sweep), concurrency,
idempotency, a bot that dies between asking and recording, and the books after each,
compared with the gateway's own record."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from uuid import UUID

import grpc
import pytest

from credit.v1 import repayment_pb2
from server.app import start_server
from server.config import Settings
from server.core.payment_orders import Applied, PaymentOrders
from server.db import payment_orders as order_rows
from server.domain.payments import PaymentStatus
from server.invariants import GATEWAY_RULE, check
from server.payments.gateway import PaymentGateway
from tests.support import (
    GATEWAY_DELAY_S,
    Api,
    bind,
    buy,
    field_violations,
    gateway_payments,
    key,
    payoff,
    refund,
    repay,
    settings_with_gateway,
    until,
    withdraw,
)

DELAY_S = GATEWAY_DELAY_S
# What a 300-yuan loan over 3 months, paid off and refunded, leaves as credit balance:
# its principal and its flat fees.
BALANCE = 30_180
TIMEOUT_MS = 400


@pytest.fixture
def settings(gateway_port, billing_cycle) -> Settings:
    # The tests' billing cycle (tests/integration/conftest.py): a purchase on the clock's
    # start falls due a whole month later, so its first fee is a whole month's.
    return settings_with_gateway(gateway_port, billing_cycle[1], TIMEOUT_MS)


@pytest.fixture
def bot(pool, clock, gateway):
    """The collections bot's payments task over the same database and gateway."""
    from collections_bot.payments import PaymentsTask

    return PaymentsTask(pool, clock, PaymentOrders(clock, gateway), reconcile_after_s=60)


async def credit_balance_from_refund(api: Api, amount_minor: int = 30_000) -> str:
    """An account whose loan was paid off and then refunded in full: what it paid (the
    principal and the fees) is its credit balance, BALANCE."""
    account = await api.open_account(limit_minor=100_000)
    loan = await buy(api, account.account_id, amount_minor, term_months=3)
    paid = await payoff(api, loan.loan_id)
    await repay(api, account.account_id, paid)
    await refund(api, loan.loan_id, amount_minor)
    assert (await api.account(account.account_id)).credit_balance_minor == paid == BALANCE
    return account.account_id


async def get_payout(api: Api, payout_id: str) -> repayment_pb2.Payout:
    return await api.repayment.GetPayout(repayment_pb2.GetPayoutRequest(payout_id=payout_id), timeout=10)


async def entry_kinds(api: Api, account_id: str) -> list[str]:
    page = await api.repayment.GetAccountJournal(repayment_pb2.GetAccountJournalRequest(
        account_id=account_id, page_size=100), timeout=10)
    return [repayment_pb2.JournalEntryKind.Name(e.kind).removeprefix("JOURNAL_ENTRY_KIND_") for e in page.entries]


@pytest.mark.parametrize("digit", ["0", "1"])
async def test_a_refunds_credit_balance_is_paid_out_to_the_bound_card(api, digit, ledger_checked, gateway):
    account_id = await credit_balance_from_refund(api)
    method = await bind(api, account_id, f"card-6222-0200-1234-567{digit}")
    assert method.token_last4 == f"567{digit}" and method.status == repayment_pb2.PAYMENT_METHOD_STATUS_ACTIVE
    fetched = await api.repayment.GetPaymentMethod(
        repayment_pb2.GetPaymentMethodRequest(payment_method_id=method.payment_method_id), timeout=10)
    assert fetched == method and "6222" not in str(fetched)

    payout = await withdraw(api, account_id, 20_000)
    assert payout.status == repayment_pb2.PAYOUT_STATUS_SUCCEEDED
    assert payout.payment_method_id == method.payment_method_id and payout.HasField("completed_at")
    assert payout.account.credit_balance_minor == BALANCE - 20_000
    assert await get_payout(api, payout.payout_id) == payout
    assert (await entry_kinds(api, account_id))[-2:] == ["PAYOUT_REQUESTED", "PAYOUT_SUCCEEDED"]
    paid = await gateway.get(idempotency_key=payout.payout_id)
    assert paid is not None and paid.status is PaymentStatus.SUCCEEDED and paid.amount_minor == 20_000
    await ledger_checked()


@pytest.mark.parametrize("digit, reason", [("2", repayment_pb2.PAYOUT_FAILURE_REASON_INSUFFICIENT_FUNDS),
                                           ("3", repayment_pb2.PAYOUT_FAILURE_REASON_INSTRUMENT_INVALID)])
async def test_a_failed_payout_gives_the_balance_back(api, digit, reason, ledger_checked):
    account_id = await credit_balance_from_refund(api)
    await bind(api, account_id, f"wallet-88{digit}")
    payout = await withdraw(api, account_id, BALANCE)
    assert payout.status == repayment_pb2.PAYOUT_STATUS_FAILED and payout.failure_reason == reason
    assert payout.account.credit_balance_minor == BALANCE
    assert (await entry_kinds(api, account_id))[-2:] == ["PAYOUT_REQUESTED", "PAYOUT_FAILED"]
    await ledger_checked()
    # The balance is there to withdraw again, to another instrument.
    await bind(api, account_id, "wallet-880")
    again = await withdraw(api, account_id, BALANCE)
    assert again.status == repayment_pb2.PAYOUT_STATUS_SUCCEEDED and again.account.credit_balance_minor == 0
    await ledger_checked()


@pytest.mark.parametrize("digit, final", [("4", repayment_pb2.PAYOUT_STATUS_SUCCEEDED),
                                          ("8", repayment_pb2.PAYOUT_STATUS_FAILED)])
async def test_a_payout_without_an_answer_is_pending_until_the_bots_sweep_settles_it_once(
        api, digit, final, bot, clock, ledger_checked, gateway):
    account_id = await credit_balance_from_refund(api)
    await bind(api, account_id, f"card-999{digit}")
    payout = await withdraw(api, account_id, BALANCE)
    assert payout.status == repayment_pb2.PAYOUT_STATUS_PENDING and not payout.HasField("completed_at")
    assert payout.account.credit_balance_minor == 0
    await ledger_checked()  # in flight: PAYOUTS_IN_FLIGHT holds it

    # Too young for the sweep: nothing is looked up.
    assert await bot.sweep() == {}
    await asyncio.sleep(DELAY_S + 0.2)  # the processor reaches its result
    clock.advance(timedelta(seconds=61))
    assert await bot.sweep() == {"completed": 1}
    settled = await get_payout(api, payout.payout_id)
    assert settled.status == final
    assert settled.account.credit_balance_minor == (0 if final == repayment_pb2.PAYOUT_STATUS_SUCCEEDED else BALANCE)
    # The stream's event for it, and later sweeps, change nothing.
    stop = asyncio.Event()
    watching = asyncio.create_task(bot.watch(stop))
    await until(lambda: _cursor_past(bot, 0))
    stop.set()
    await watching
    clock.advance(timedelta(seconds=61))
    assert await bot.sweep() == {}
    kinds = await entry_kinds(api, account_id)
    assert kinds.count("PAYOUT_REQUESTED") == 1 and kinds.count("PAYOUT_SUCCEEDED") + kinds.count("PAYOUT_FAILED") == 1
    assert await gateway_payments(gateway, payout.payout_id) == 1
    await ledger_checked()


async def _cursor_past(bot, sequence: int) -> bool:
    return await bot._orders.cursor(bot._pool, "collections-bot") > sequence


async def test_a_late_answer_and_a_duplicated_one_are_each_booked_once(api, bot, ledger_checked, pool):
    late_account = await credit_balance_from_refund(api)
    await bind(api, late_account, "card-0005")
    late = await withdraw(api, late_account, BALANCE)
    assert late.status == repayment_pb2.PAYOUT_STATUS_PENDING
    twice_account = await credit_balance_from_refund(api)
    await bind(api, twice_account, "card-0006")
    twice = await withdraw(api, twice_account, BALANCE)
    assert twice.status == repayment_pb2.PAYOUT_STATUS_SUCCEEDED

    stop = asyncio.Event()
    watching = asyncio.create_task(bot.watch(stop))

    async def settled() -> bool:
        return (await get_payout(api, late.payout_id)).status == repayment_pb2.PAYOUT_STATUS_SUCCEEDED

    await until(settled)
    # Events: the late success, the duplicated one at once and again DELAY later: all
    # three handled (the cursor is past them), two of them changing nothing.
    await until(lambda: _cursor_past(bot, 2))
    stop.set()
    await watching
    for account_id in (late_account, twice_account):
        kinds = await entry_kinds(api, account_id)
        assert kinds.count("PAYOUT_SUCCEEDED") == 1 and kinds.count("PAYOUT_FAILED") == 0
    assert (await api.account(late_account)).credit_balance_minor == 0
    # Watching again from the stored cursor starts after them: nothing is replayed.
    async with pool.acquire() as conn:
        assert await order_rows.cursor(conn, "collections-bot") == 3
    await ledger_checked()


async def test_a_second_watcher_skips_what_the_first_applied(api, bot, pool, clock, gateway):
    account_id = await credit_balance_from_refund(api)
    await bind(api, account_id, "card-0005")
    payout = await withdraw(api, account_id, BALANCE)
    events = []
    async for event in gateway.watch(0):
        events.append(event)
        break
    orders = PaymentOrders(clock, gateway)
    assert await orders.apply_event(pool, "collections-bot", events[0]) is Applied.COMPLETED
    # The same event at another replica, and again at the same: the cursor is past it.
    assert await orders.apply_event(pool, "collections-bot", events[0]) is None
    # Under another cursor the conditional update still refuses a second booking.
    assert await orders.apply_event(pool, "another-consumer", events[0]) is Applied.ALREADY_FINAL
    assert (await entry_kinds(api, account_id)).count("PAYOUT_SUCCEEDED") == 1
    assert (await get_payout(api, payout.payout_id)).status == repayment_pb2.PAYOUT_STATUS_SUCCEEDED


async def test_a_withdrawal_is_refused_above_the_balance_without_an_instrument_and_for_bad_fields(api, books):
    account_id = await credit_balance_from_refund(api)
    with pytest.raises(grpc.aio.AioRpcError) as unbound:
        await withdraw(api, account_id, 100)
    assert unbound.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "payment method" in (unbound.value.details() or "")
    await bind(api, account_id, "card-1230")
    with pytest.raises(grpc.aio.AioRpcError) as above:
        await withdraw(api, account_id, BALANCE + 1)
    assert above.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (above.value.details() or "").startswith("amount_minor")
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await api.repayment.WithdrawCreditBalance(repayment_pb2.WithdrawCreditBalanceRequest(
            account_id="not-a-uuid", amount_minor=0, idempotency_key=""), timeout=10)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(field_violations(bad.value)) == {"account_id", "amount_minor", "idempotency_key"}
    with pytest.raises(grpc.aio.AioRpcError) as bad_binding:
        await api.repayment.BindPaymentMethod(repayment_pb2.BindPaymentMethodRequest(
            account_id=account_id, token="12", idempotency_key=key()), timeout=10)
    assert set(field_violations(bad_binding.value)) == {"kind", "token"}
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await get_payout(api, "00000000-0000-4000-8000-000000000000")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert (await api.account(account_id)).credit_balance_minor == BALANCE
    await books()


async def test_two_withdrawals_of_the_whole_balance_at_once_pay_it_once(api, ledger_checked):
    account_id = await credit_balance_from_refund(api)
    await bind(api, account_id, "card-4320")
    results = await asyncio.gather(withdraw(api, account_id, BALANCE), withdraw(api, account_id, BALANCE),
                                   return_exceptions=True)
    paid = [r for r in results if isinstance(r, repayment_pb2.Payout)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(paid) == 1 and paid[0].status == repayment_pb2.PAYOUT_STATUS_SUCCEEDED
    assert len(refused) == 1 and refused[0].code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (await api.account(account_id)).credit_balance_minor == 0
    await ledger_checked()


async def test_the_same_key_replays_the_same_payout_as_it_stands(api, bot, clock, ledger_checked, gateway):
    account_id = await credit_balance_from_refund(api)
    await bind(api, account_id, "card-7774")
    same = key()
    first = await withdraw(api, account_id, 10_000, idempotency_key=same)
    assert first.status == repayment_pb2.PAYOUT_STATUS_PENDING
    await asyncio.sleep(DELAY_S + 0.2)
    # The retry asks the gateway again with the order's key, which now knows the result.
    again = await withdraw(api, account_id, 10_000, idempotency_key=same)
    assert again.payout_id == first.payout_id and again.status == repayment_pb2.PAYOUT_STATUS_SUCCEEDED
    assert again.account.credit_balance_minor == BALANCE - 10_000
    with pytest.raises(grpc.aio.AioRpcError) as reused:
        await withdraw(api, account_id, 20_000, idempotency_key=same)
    assert reused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert await gateway_payments(gateway, first.payout_id) == 1
    assert (await entry_kinds(api, account_id)).count("PAYOUT_REQUESTED") == 1
    await ledger_checked()


async def test_a_bot_killed_between_asking_and_recording_neither_pays_twice_nor_loses_it(
        api, bot, pool, clock, gateway, ledger_checked):
    # Paid by the processor, never recorded: the order is REQUESTED and the gateway has
    # SUCCEEDED (a bot that asked and died before applying the answer).
    account_id = await credit_balance_from_refund(api)
    await bind(api, account_id, "card-5550")
    pending = await _requested_order(api, pool, clock, account_id, BALANCE)
    async with pool.acquire() as conn:
        token = await order_rows.token(conn, pending["payment_method_id"], pending["account_id"])
    answer = await gateway.payout(idempotency_key=str(pending["order_id"]), instrument_token=token,
                                  amount_minor=BALANCE, reference=str(pending["order_id"]), account_id=account_id)
    assert answer.status is PaymentStatus.SUCCEEDED
    # Never asked at all: the server died after the commit, before the call.
    other_account = await credit_balance_from_refund(api)
    await bind(api, other_account, "card-5551")
    unasked = await _requested_order(api, pool, clock, other_account, BALANCE)
    assert await gateway.get(idempotency_key=str(unasked["order_id"])) is None

    clock.advance(timedelta(seconds=61))
    assert await bot.sweep() == {"completed": 2}
    for order, account in ((pending, account_id), (unasked, other_account)):
        payout = await get_payout(api, str(order["order_id"]))
        assert payout.status == repayment_pb2.PAYOUT_STATUS_SUCCEEDED
        assert await gateway_payments(gateway, str(order["order_id"])) == 1
        assert (await entry_kinds(api, account)).count("PAYOUT_SUCCEEDED") == 1
    clock.advance(timedelta(seconds=61))
    assert await bot.sweep() == {}
    await ledger_checked()


async def _requested_order(api: Api, pool, clock, account_id: str, amount_minor: int):
    """A payout written (order, entry, balance) exactly as WithdrawCreditBalance writes
    it before it asks the gateway, and left there."""
    from server.core.payouts import Payouts, WithdrawCreditBalance

    payouts = Payouts(clock, PaymentOrders(clock, PaymentGateway(api.channel)))
    async with pool.acquire() as conn, conn.transaction():
        view = await payouts.request(conn, WithdrawCreditBalance(UUID(account_id), amount_minor))
    async with pool.acquire() as conn:
        return await order_rows.get_order(conn, view.payout_id)


async def test_the_checker_finds_an_order_booked_twice_or_not_as_the_gateway_says(api, pool, gateway):
    account_id = await credit_balance_from_refund(api)
    await bind(api, account_id, "card-2220")
    payout = await withdraw(api, account_id, BALANCE)
    async with pool.acquire() as conn:
        assert await check(conn, gateway) == []
        # The books say it failed, the gateway that it paid.
        await conn.execute("UPDATE payment_orders SET status = 'FAILED', failure_reason = 'DECLINED' "
                           "WHERE order_id = $1", UUID(payout.payout_id))
        rules = {v.rule for v in await check(conn, gateway)}
    assert "each final payment order is booked exactly once, as its result" in rules
    assert GATEWAY_RULE not in rules  # the ledger's cash still matches the gateway
    async with pool.acquire() as conn:
        await conn.execute("UPDATE payment_orders SET status = 'REQUESTED', failure_reason = NULL, "
                           "completed_at = NULL WHERE order_id = $1", UUID(payout.payout_id))
        rules = {v.rule for v in await check(conn, gateway)}
    assert {"payouts in flight in the ledger are the REQUESTED payout orders",
            "each final payment order is booked exactly once, as its result"} <= rules


async def test_without_a_gateway_withdrawals_are_refused_and_nothing_moves(pool, clock, books):
    settings = Settings.from_env({"GRPC_LISTEN_ADDR": "127.0.0.1:0", "LOG_LEVEL": "warning",
                                  "AUTH_MODE": "insecure-local"})
    running = await start_server(settings, pool, clock)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            api = Api(channel)
            account = await api.open_account(limit_minor=100_000)
            await repay(api, account.account_id, 5_000)
            await bind(api, account.account_id, "card-0000")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await withdraw(api, account.account_id, 5_000)
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "PAYMENT_GATEWAY_ADDR" in (refused.value.details() or "")
            assert (await api.account(account.account_id)).credit_balance_minor == 5_000
    finally:
        await running.server.stop(None)
    await books()


async def test_binding_again_replaces_the_active_instrument_and_replays_by_key(api, pool):
    account = await api.open_account(limit_minor=100_000)
    first = await bind(api, account.account_id, "card-1111")
    request = repayment_pb2.BindPaymentMethodRequest(account_id=account.account_id,
                                                     kind=repayment_pb2.PAYMENT_METHOD_KIND_WALLET,
                                                     token="wallet-token-2222", idempotency_key=key())
    second = await api.repayment.BindPaymentMethod(request, timeout=10)
    assert await api.repayment.BindPaymentMethod(request, timeout=10) == second
    old = await api.repayment.GetPaymentMethod(
        repayment_pb2.GetPaymentMethodRequest(payment_method_id=first.payment_method_id), timeout=10)
    assert old.status == repayment_pb2.PAYMENT_METHOD_STATUS_REPLACED
    assert second.status == repayment_pb2.PAYMENT_METHOD_STATUS_ACTIVE and second.token_last4 == "2222"
    async with pool.acquire() as conn:
        stored = await conn.fetchval("SELECT token FROM payment_methods WHERE payment_method_id = $1",
                                     UUID(second.payment_method_id))
    assert stored.startswith("v1:") and "2222" not in stored
