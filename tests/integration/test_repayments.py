"""Repayment and refunds over gRPC on a real PostgreSQL, worked through by hand, with
the books checked after every scenario.

Every loan here is 3,000.00 over 3 months, flat fee, grade B (0.6 % a month): three
installments of 1,000.00 principal + 18.00 fee, captured 2027-01-15 (Shanghai) and due
2027-02-15, 2027-03-15 and 2027-04-15."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest

from credit.v1 import common_pb2, repayment_pb2
from tests.support import buy, field_violations, key, payoff, refund, repay

PAID = common_pb2.INSTALLMENT_STATUS_PAID
SCHEDULED, OVERDUE = common_pb2.INSTALLMENT_STATUS_SCHEDULED, common_pb2.INSTALLMENT_STATUS_OVERDUE
CANCELLED = common_pb2.INSTALLMENT_STATUS_CANCELLED
FEE, PRINCIPAL = repayment_pb2.ALLOCATION_COMPONENT_FEE, repayment_pb2.ALLOCATION_COMPONENT_PRINCIPAL


def shanghai(y, m, d, hour=10):
    return datetime(y, m, d, hour - 8, tzinfo=UTC)


@pytest.fixture
async def loan(api):
    account = await api.open_account(limit_minor=1_000_000)
    loan = await buy(api, account.account_id, 300_000)
    assert [(i.principal_minor, i.fee_minor, i.due_date) for i in loan.installments] == [
        (100_000, 1_800, "2027-02-15"), (100_000, 1_800, "2027-03-15"), (100_000, 1_800, "2027-04-15")]
    return loan


def parts(repayment):
    return [(a.sequence, a.component, a.amount_minor) for a in repayment.allocations]


async def test_paying_one_installment_exactly(api, clock, loan, books):
    clock.set(shanghai(2027, 2, 15))
    paid = await repay(api, loan.account_id, 101_800)
    assert parts(paid) == [(1, FEE, 1_800), (1, PRINCIPAL, 100_000)]
    assert (paid.applied_minor, paid.unapplied_minor) == (101_800, 0)
    assert (paid.account.outstanding_principal_minor, paid.account.available_minor) == (200_000, 800_000)
    after = await api.loan(loan.loan_id)
    assert after.installments[0].status == PAID
    assert after.installments[1].status == common_pb2.INSTALLMENT_STATUS_SCHEDULED
    await books()


async def test_paying_less_than_due(api, clock, loan, books):
    clock.set(shanghai(2027, 2, 10))
    paid = await repay(api, loan.account_id, 50_000)
    assert parts(paid) == [(1, FEE, 1_800), (1, PRINCIPAL, 48_200)]
    after = await api.loan(loan.loan_id)
    assert after.installments[0].status == common_pb2.INSTALLMENT_STATUS_PARTIALLY_PAID
    assert after.installments[0].owed_minor == 51_800
    clock.set(shanghai(2027, 2, 16))
    assert (await api.loan(loan.loan_id)).installments[0].status == common_pb2.INSTALLMENT_STATUS_OVERDUE
    assert (await api.loan(loan.loan_id)).days_past_due == 1
    await books()


async def test_paying_more_than_due_prepays_the_next_principal(api, clock, loan, books):
    clock.set(shanghai(2027, 2, 10))
    paid = await repay(api, loan.account_id, 150_000)
    assert parts(paid) == [(1, FEE, 1_800), (1, PRINCIPAL, 100_000), (2, PRINCIPAL, 48_200)]
    assert paid.account.outstanding_principal_minor == 151_800
    await books()


async def test_early_payoff_waives_future_fees_and_equals_the_quote(api, clock, loan, books):
    clock.set(shanghai(2027, 1, 20))
    quote = await api.repayment.QuotePayoff(repayment_pb2.QuotePayoffRequest(loan_id=loan.loan_id))
    assert (quote.payoff_minor, quote.principal_minor, quote.fee_minor, quote.waived_fee_minor) == (
        301_800, 300_000, 1_800, 3_600)
    paid = await repay(api, loan.account_id, quote.payoff_minor, loan_id=loan.loan_id)
    assert (paid.applied_minor, paid.unapplied_minor, paid.waived_fee_minor) == (301_800, 0, 3_600)
    after = await api.loan(loan.loan_id)
    assert after.status == common_pb2.LOAN_STATUS_PAID_OFF
    assert [i.fee_waived_minor for i in after.installments] == [0, 1_800, 1_800]
    assert paid.account.outstanding_principal_minor == 0
    assert paid.account.available_minor == 1_000_000
    await books()


async def test_a_payoff_quote_for_a_later_date_counts_what_falls_due_by_then(api, loan):
    # On 2027-03-16 periods 1 and 2 are past due (fees owed), period 3 is current.
    assert await payoff(api, loan.loan_id, "2027-03-16") == 305_400
    assert await payoff(api, loan.loan_id, "2027-02-15") == 301_800


async def test_overpaying_everything_keeps_a_credit_balance_used_by_the_next_purchase(api, clock, loan, books):
    clock.set(shanghai(2027, 1, 20))
    paid = await repay(api, loan.account_id, 400_000)
    assert (paid.applied_minor, paid.unapplied_minor) == (301_800, 98_200)
    assert paid.account.credit_balance_minor == 98_200
    assert (await api.loan(loan.loan_id)).status == common_pb2.LOAN_STATUS_PAID_OFF
    await books()

    second = await buy(api, loan.account_id, 300_000)
    # Bought on 20 Jan, it falls due on 15 Feb with the first loan's bill: a first
    # period of 26 days against a 31-day reference month, so a fee of 1,800 x 26 / 31 =
    # 15.10. The credit goes into the new loan's current period: its 15.10 fee, then
    # 966.90 of its principal.
    assert second.installments[0].fee_minor == 1_510
    assert second.installments[0].paid_minor == 98_200
    assert second.installments[0].owed_minor == 101_510 - 98_200
    assert second.installments[0].status == common_pb2.INSTALLMENT_STATUS_PARTIALLY_PAID
    account = await api.account(loan.account_id)
    assert account.credit_balance_minor == 0
    assert account.outstanding_principal_minor == 300_000 - (98_200 - 1_510)
    await books()


async def test_a_refund_before_any_repayment(api, clock, loan, books):
    clock.set(shanghai(2027, 1, 20))
    after = await refund(api, loan.loan_id, 150_000)
    assert [i.principal_minor for i in after.installments] == [100_000, 50_000, 0]
    assert [i.fee_minor for i in after.installments] == [900, 900, 900]
    assert after.refunded_minor == 150_000 and after.status == common_pb2.LOAN_STATUS_ACTIVE
    # Period 3 keeps a fee to pay: still scheduled, like the others.
    assert [i.status for i in (await api.loan(loan.loan_id)).installments] == [SCHEDULED] * 3
    account = await api.account(loan.account_id)
    assert (account.outstanding_principal_minor, account.credit_balance_minor) == (150_000, 0)
    await books()


async def test_a_refund_after_some_repayments_returns_the_excess_as_credit(api, clock, loan, books):
    clock.set(shanghai(2027, 2, 15))
    await repay(api, loan.account_id, 101_800)
    clock.set(shanghai(2027, 2, 20))
    after = await refund(api, loan.loan_id, 250_000)
    assert [i.principal_minor for i in after.installments] == [50_000, 0, 0]
    # Period 1 is past due and keeps its fee; periods 2 and 3 keep a sixth of theirs.
    assert [i.fee_minor + i.fee_waived_minor for i in after.installments] == [1_800, 300, 300]
    assert [i.fee_waived_minor for i in after.installments] == [0, 0, 300]
    # 50,000 paid on period 1 is no longer owed; it becomes credit, which then pays
    # the 300 + 300 of fees still owed: current period 2's fee, and period 3's fee is
    # waived once the credit reaches it (its principal is zero).
    account = await api.account(loan.account_id)
    loan_after = await api.loan(loan.loan_id)
    assert loan_after.status == common_pb2.LOAN_STATUS_PAID_OFF
    # Period 1 was paid (its excess came back), period 2's fee was paid from the credit;
    # period 3 was emptied by the refund before anything was paid on it.
    assert [i.status for i in loan_after.installments] == [PAID, PAID, CANCELLED]
    assert account.outstanding_principal_minor == 0
    assert account.credit_balance_minor == 50_000 - 300
    await books()


async def test_a_full_refund_after_full_repayment_returns_everything_as_credit(api, clock, loan, books):
    for month in (2, 3, 4):
        clock.set(shanghai(2027, month, 15))
        await repay(api, loan.account_id, 101_800)
    assert (await api.loan(loan.loan_id)).status == common_pb2.LOAN_STATUS_PAID_OFF
    clock.set(shanghai(2027, 5, 1))
    after = await refund(api, loan.loan_id, 300_000)
    assert after.status == common_pb2.LOAN_STATUS_CANCELLED
    assert all(i.amount_minor == 0 and i.paid_minor == 0 for i in after.installments)
    # Paid before, but the refund took the purchase back: cancelled, not paid.
    assert [i.status for i in (await api.loan(loan.loan_id)).installments] == [CANCELLED] * 3
    account = await api.account(loan.account_id)
    assert account.credit_balance_minor == 305_400
    assert account.available_minor == 1_000_000
    await books()


async def test_a_full_refund_of_a_partly_repaid_loan_cancels_every_installment(api, clock, loan, books):
    clock.set(shanghai(2027, 2, 15))
    await repay(api, loan.account_id, 101_800)
    clock.set(shanghai(2027, 3, 20))  # period 2 is overdue
    before = await api.loan(loan.loan_id)
    assert [i.status for i in before.installments] == [PAID, OVERDUE, SCHEDULED]
    await refund(api, loan.loan_id, 300_000)
    after = await api.loan(loan.loan_id)
    assert (after.status, after.days_past_due, after.outstanding_principal_minor) == (
        common_pb2.LOAN_STATUS_CANCELLED, 0, 0)
    assert [i.status for i in after.installments] == [CANCELLED] * 3
    assert (await api.account(loan.account_id)).credit_balance_minor == 101_800
    await books()


async def test_cumulative_refunds_never_exceed_the_principal(api, loan, books):
    await refund(api, loan.loan_id, 200_000)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await refund(api, loan.loan_id, 100_001)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error.value) == ["amount_minor"]
    unchanged = await api.loan(loan.loan_id)
    assert unchanged.refunded_minor == 200_000
    assert sum(i.principal_minor for i in unchanged.installments) == 100_000
    cancelled = await refund(api, loan.loan_id, 100_000)
    assert cancelled.status == common_pb2.LOAN_STATUS_CANCELLED
    assert [i.status for i in (await api.loan(loan.loan_id)).installments] == [CANCELLED] * 3
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await refund(api, loan.loan_id, 1)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    await books()


async def test_repaying_twice_with_one_key_applies_once(api, clock, loan, books):
    clock.set(shanghai(2027, 2, 15))
    idempotency_key = key()
    first = await repay(api, loan.account_id, 101_800, idempotency_key=idempotency_key)
    again = await repay(api, loan.account_id, 101_800, idempotency_key=idempotency_key)
    assert again == first
    assert (await api.account(loan.account_id)).outstanding_principal_minor == 200_000
    await books()


async def test_concurrent_repayments_and_authorizations_on_one_account_keep_the_books(api, clock, loan, books):
    clock.set(shanghai(2027, 2, 1))
    calls = []
    for n in range(30):
        calls.append(repay(api, loan.account_id, 7_000 + n))
        calls.append(api.authorize(loan.account_id, 20_000 + n))
    results = await asyncio.gather(*calls)
    paid = sum(r.amount_minor for r in results[0::2])
    assert paid == sum(7_000 + n for n in range(30))
    account = await api.account(loan.account_id)
    assert account.held_minor == sum(r.amount_minor for r in results[1::2] if r.status == 1)
    await books()


async def test_bad_repayments_are_refused_naming_the_field_and_write_nothing(api, loan, pool, books):
    async with pool.acquire() as conn:
        before = await conn.fetchval("SELECT count(*) FROM repayments")
    bad: list[tuple[dict[str, Any], str]] = [
        (dict(amount_minor=0), "amount_minor"),
        (dict(amount_minor=-5), "amount_minor"),
        (dict(channel=0), "channel"),
        (dict(channel=repayment_pb2.PAYMENT_CHANNEL_CREDIT_BALANCE), "channel"),
        (dict(loan_id="nope"), "loan_id"),
        (dict(idempotency_key=""), "idempotency_key"),
    ]
    for overrides, field in bad:
        request: dict[str, Any] = dict(account_id=loan.account_id, amount_minor=1_000,
                       channel=repayment_pb2.PAYMENT_CHANNEL_WALLET, idempotency_key=key())
        request.update(overrides)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await api.repayment.Repay(repayment_pb2.RepayRequest(**request))
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert field_violations(error.value) == [field]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await repay(api, loan.account_id, 1_000, loan_id=str(uuid.uuid4()))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await refund(api, str(uuid.uuid4()), 1_000)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM repayments") == before
    await books()


async def test_list_loans_pages_newest_first_with_a_bounded_page(api, clock, books):
    account = await api.open_account(limit_minor=10_000_000)
    ids = []
    for n in range(5):
        clock.advance(timedelta(minutes=1))
        ids.append((await buy(api, account.account_id, 10_000 + n)).loan_id)
    seen, token = [], ""
    while True:
        page = await api.repayment.ListLoans(repayment_pb2.ListLoansRequest(
            account_id=account.account_id, page_size=2, page_token=token))
        assert len(page.loans) <= 2
        seen += [loan.loan_id for loan in page.loans]
        token = page.next_page_token
        if not token:
            break
    assert seen == list(reversed(ids))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await api.repayment.ListLoans(repayment_pb2.ListLoansRequest(account_id=account.account_id, page_size=101))
    assert field_violations(error.value) == ["page_size"]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await api.repayment.ListLoans(repayment_pb2.ListLoansRequest(account_id=account.account_id,
                                                                     page_token="garbage!"))
    assert field_violations(error.value) == ["page_token"]


async def test_a_payment_to_another_accounts_loan_is_refused_and_books_nothing(api, books):
    """Repay reads loans within its account only; a loan of another account is still told
    apart from an unknown one."""
    owner, payer = await api.open_account(limit_minor=100_000), await api.open_account(limit_minor=100_000)
    loan = await buy(api, owner.account_id, 30_000)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await repay(api, payer.account_id, 1_000, loan_id=loan.loan_id)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error.value) == ["loan_id"]
    assert (await api.loan(loan.loan_id)).outstanding_principal_minor == 30_000
    await books()
