"""Credit lines over gRPC: limits, temporary raises that expire, freezes."""

from __future__ import annotations

from datetime import timedelta

import grpc
import pytest

from credit.v1 import checkout_pb2, common_pb2, credit_line_pb2, repayment_pb2
from tests.support import field_violations, key, repay, timestamp


async def test_a_new_account_has_no_limit_until_one_is_set(api):
    account = await api.open_account(limit_minor=0, grade=0)
    assert account.status == common_pb2.ACCOUNT_STATUS_ACTIVE
    assert account.risk_grade == common_pb2.RISK_GRADE_C
    assert (account.credit_limit_minor, account.available_minor) == (0, 0)
    assert account.currency == "CNY" and account.time_zone == "Asia/Shanghai"
    declined = await api.authorize(account.account_id, 100, term_months=1)
    assert declined.decline_reason == checkout_pb2.DECLINE_REASON_INSUFFICIENT_LIMIT


async def test_one_account_per_customer(api):
    request = credit_line_pb2.OpenAccountRequest(
        customer_id="cust-dup", idempotency_key=key(),
        contact=credit_line_pb2.Contact(name="A", email="a@example.com", phone="+8613800138000"))
    await api.lines.OpenAccount(request)
    request.idempotency_key = key()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await api.lines.OpenAccount(request)
    assert error.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "customer_id" in (error.value.details() or "")


async def test_a_temporary_raise_counts_until_it_expires(api, clock, books):
    account = await api.open_account(limit_minor=100_000)
    raised = await api.lines.GrantTemporaryLimit(credit_line_pb2.GrantTemporaryLimitRequest(
        account_id=account.account_id, temporary_limit_minor=50_000,
        expires_at=timestamp(clock.now() + timedelta(days=3)), reason="Singles Day", idempotency_key=key()))
    assert (raised.effective_limit_minor, raised.available_minor) == (150_000, 150_000)
    hold = await api.authorize(account.account_id, 120_000)
    assert hold.status == checkout_pb2.AUTHORIZATION_STATUS_PENDING
    await api.void(hold.authorization_id)

    clock.advance(timedelta(days=3))
    after = await api.account(account.account_id)
    assert (after.temporary_limit_minor, after.effective_limit_minor, after.available_minor) == (0, 100_000, 100_000)
    declined = await api.authorize(account.account_id, 120_000)
    assert declined.decline_reason == checkout_pb2.DECLINE_REASON_INSUFFICIENT_LIMIT
    await books()


async def test_a_temporary_raise_needs_a_future_expiry(api, clock):
    account = await api.open_account(limit_minor=100_000)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await api.lines.GrantTemporaryLimit(credit_line_pb2.GrantTemporaryLimitRequest(
            account_id=account.account_id, temporary_limit_minor=50_000,
            expires_at=timestamp(clock.now() - timedelta(seconds=1)), reason="late", idempotency_key=key()))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error.value) == ["expires_at"]


async def grant(api, account_id, limit_minor, expires_at):
    return await api.lines.GrantTemporaryLimit(credit_line_pb2.GrantTemporaryLimitRequest(
        account_id=account_id, temporary_limit_minor=limit_minor, expires_at=timestamp(expires_at),
        reason="promotion", idempotency_key=key()), timeout=10)


async def test_a_temporary_raise_ends_at_most_temporary_limit_max_days_ahead(api, clock, running):
    assert running.core.credit_lines._temporary_limit_max_days == 90
    account = await api.open_account(limit_minor=100_000)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await grant(api, account.account_id, 50_000, clock.now() + timedelta(days=90, seconds=1))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error.value) == ["expires_at"]
    assert "90 days" in (error.value.details() or "")
    assert (await api.account(account.account_id)).temporary_limit_minor == 0
    raised = await grant(api, account.account_id, 50_000, clock.now() + timedelta(days=90))
    assert raised.temporary_limit_minor == 50_000


async def test_a_frozen_account_is_declined_and_unfreezing_restores_it(api):
    account = await api.open_account(limit_minor=100_000)
    frozen = await api.lines.FreezeAccount(credit_line_pb2.FreezeAccountRequest(
        account_id=account.account_id, reason="suspected fraud", idempotency_key=key()))
    assert frozen.status == common_pb2.ACCOUNT_STATUS_FROZEN
    declined = await api.authorize(account.account_id, 10_000)
    assert declined.status == checkout_pb2.AUTHORIZATION_STATUS_DECLINED
    assert declined.decline_reason == checkout_pb2.DECLINE_REASON_ACCOUNT_FROZEN
    assert (await api.account(account.account_id)).held_minor == 0
    await api.lines.UnfreezeAccount(credit_line_pb2.UnfreezeAccountRequest(
        account_id=account.account_id, reason="cleared", idempotency_key=key()))
    approved = await api.authorize(account.account_id, 10_000)
    assert approved.status == checkout_pb2.AUTHORIZATION_STATUS_PENDING


async def test_a_limit_cut_below_used_leaves_nothing_available_until_repaid(api, books):
    account = await api.open_account(limit_minor=100_000)
    hold = await api.authorize(account.account_id, 80_000)
    cut = await api.lines.AdjustLimit(credit_line_pb2.AdjustLimitRequest(
        account_id=account.account_id, credit_limit_minor=50_000, reason="review", idempotency_key=key()))
    assert (cut.held_minor, cut.available_minor) == (80_000, 0)
    await api.void(hold.authorization_id)
    assert (await api.account(account.account_id)).available_minor == 50_000
    await books()


async def test_every_limit_change_is_recorded_with_its_reason(api, pool):
    account = await api.open_account(limit_minor=100_000)
    await api.lines.AdjustLimit(credit_line_pb2.AdjustLimitRequest(
        account_id=account.account_id, credit_limit_minor=70_000, reason="delinquency review",
        idempotency_key=key()))
    async with pool.acquire() as conn:
        events = await conn.fetch(
            "SELECT kind, reason, detail FROM account_events WHERE account_id = $1 ORDER BY event_id",
            __import__("uuid").UUID(account.account_id))
    assert [e["kind"] for e in events] == ["ACCOUNT_OPENED", "LIMIT_ADJUSTED", "LIMIT_ADJUSTED"]
    assert events[-1]["reason"] == "delinquency review"
    assert '"to_minor": 70000' in events[-1]["detail"]


async def test_assess_credit_sets_grade_and_policy_limit_with_reasons(api, pool):
    from server.risk import train

    rows, _ = train.load()
    account = await api.open_account(limit_minor=0, grade=0)
    names = {"status_of_existing_checking_account", "credit_history", "purpose", "savings_account_and_bonds",
             "present_employment_since", "other_debtors_or_guarantors", "property", "other_installment_plans",
             "housing", "telephone", "installment_rate_in_percentage_of_disposable_income", "duration_in_month",
             "credit_amount", "age_in_years"}
    reply = await api.lines.AssessCredit(credit_line_pb2.AssessCreditRequest(
        account_id=account.account_id, characteristics={k: v for k, v in rows[1].items() if k in names},
        idempotency_key=key()))
    assert (reply.score, reply.model_version) == (473, "scorecard-v1")
    assert reply.grade == common_pb2.RISK_GRADE_D and reply.credit_limit_minor == 500_000
    assert [r.code for r in reply.reasons] == ["CHECKING_ACCOUNT", "CREDIT_DURATION", "SAVINGS",
                                               "INSTALLMENT_BURDEN"]
    assert (reply.account.risk_grade, reply.account.credit_limit_minor) == (common_pb2.RISK_GRADE_D, 500_000)
    async with pool.acquire() as conn:
        detail = await conn.fetchval("SELECT detail FROM account_events WHERE account_id = $1 "
                                     "AND kind = 'CREDIT_ASSESSED'", __import__("uuid").UUID(account.account_id))
    assert '"score": 473' in detail and "CHECKING_ACCOUNT" in detail

    with pytest.raises(grpc.aio.AioRpcError) as error:
        await api.lines.AssessCredit(credit_line_pb2.AssessCreditRequest(
            account_id=account.account_id, characteristics={"duration_in_month": "12"}, idempotency_key=key()))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "characteristics[credit_history]" in field_violations(error.value)


async def test_an_account_id_is_derived_from_its_customer_and_a_retry_gets_the_same_account(api):
    """OpenAccount knows the id before it writes (its idempotency record is kept with
    that account): the same request again returns the first reply."""
    from server.domain.accounts import account_id_of_customer

    request = credit_line_pb2.OpenAccountRequest(
        customer_id="cust-" + key(), idempotency_key=key(),
        contact=credit_line_pb2.Contact(name="A", email="a@example.com", phone="+8613800138000"))
    first = await api.lines.OpenAccount(request)
    assert first.account_id == str(account_id_of_customer(request.customer_id))
    assert await api.lines.OpenAccount(request) == first


async def test_the_statement_day_defaults_to_the_opening_day_and_can_be_chosen(api, clock):
    # The clock's start is 10:00 on 15 January in Shanghai; the tests' server sets
    # PAYMENT_DUE_DAYS to 14.
    default = await api.open_account(limit_minor=0, grade=0, statement_day=0)
    assert (default.statement_day, default.payment_due_days) == (15, 14)
    # Its first statement closes the month that its opening day begins.
    assert default.next_statement_date == "2027-02-15"
    chosen = await api.open_account(limit_minor=0, grade=0, statement_day=3)
    assert chosen.statement_day == 3 and chosen.next_statement_date == "2027-02-03"
    assert (await api.account(chosen.account_id)).statement_day == 3


@pytest.mark.parametrize("day", [29, -1])
async def test_a_statement_day_outside_1_to_28_is_refused(api, day):
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await api.open_account(statement_day=day)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error.value) == ["statement_day"]
    account = await api.open_account()
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await set_statement_day(api, account.account_id, 0)
    assert field_violations(error.value) == ["statement_day"]


async def set_statement_day(api, account_id, day, idempotency_key=None):
    return await api.lines.SetStatementDay(credit_line_pb2.SetStatementDayRequest(
        account_id=account_id, statement_day=day, idempotency_key=idempotency_key or key()), timeout=10)


async def test_the_statement_day_moves_only_while_no_loan_is_unpaid(api, books):
    account = await api.open_account(limit_minor=100_000, statement_day=10)
    moved = await set_statement_day(api, account.account_id, 25, idempotency_key="move-1")
    assert moved.statement_day == 25 and moved.next_statement_date == "2027-01-25"
    assert (await set_statement_day(api, account.account_id, 25, idempotency_key="move-1")) == moved

    hold = await api.authorize(account.account_id, 30_000, term_months=3)
    await api.capture(hold.authorization_id)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await set_statement_day(api, account.account_id, 2)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "unpaid loans" in (error.value.details() or "")
    # Setting the day it already has is no move.
    assert (await set_statement_day(api, account.account_id, 25)).statement_day == 25

    payoff = await api.repayment.QuotePayoff(repayment_pb2.QuotePayoffRequest(
        loan_id=(await api.authorization(hold.authorization_id)).loan_id), timeout=10)
    await repay(api, account.account_id, payoff.payoff_minor)
    assert (await set_statement_day(api, account.account_id, 2)).statement_day == 2
    await books()


async def test_setting_the_statement_day_of_an_unknown_account_is_not_found(api):
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await set_statement_day(api, "00000000-0000-0000-0000-000000000001", 5)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
