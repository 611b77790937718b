"""Checkout over gRPC on a real PostgreSQL: holds occupy the limit, capture makes a
loan and its ledger entry, void and expiry give the limit back, retries apply once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import grpc
import pytest

from credit.v1 import checkout_pb2, common_pb2, credit_line_pb2, risk_pb2
from server.db import accounts as account_rows
from tests.integration.conftest import START
from tests.support import key

PENDING = checkout_pb2.AUTHORIZATION_STATUS_PENDING


async def test_authorize_holds_and_capture_creates_the_loan_of_the_quoted_plan(api, books, pool):
    account = await api.open_account(limit_minor=500_000)
    quote = await api.checkout.QuoteInstallments(checkout_pb2.QuoteInstallmentsRequest(
        account_id=account.account_id, amount_minor=129_900, merchant_id="merchant-1"))
    quoted = next(p for p in quote.plans
                  if p.term_months == 6 and p.method == common_pb2.REPAYMENT_METHOD_FLAT_FEE)

    hold = await api.authorize(account.account_id, 129_900, term_months=6)
    assert hold.status == PENDING
    assert hold.plan.monthly_rate_bps == quoted.monthly_rate_bps
    assert hold.plan.apr_bps == quoted.apr_bps
    assert (await api.account(account.account_id)).held_minor == 129_900

    captured = await api.capture(hold.authorization_id)
    assert captured.status == checkout_pb2.AUTHORIZATION_STATUS_CAPTURED
    assert (captured.captured_minor, captured.released_minor) == (129_900, 0)
    after = await api.account(account.account_id)
    assert (after.held_minor, after.outstanding_principal_minor, after.available_minor) == (0, 129_900, 370_100)

    loan = await api.loan(captured.loan_id)
    assert loan.status == common_pb2.LOAN_STATUS_ACTIVE
    assert (loan.principal_minor, loan.term_months, loan.apr_bps) == (129_900, 6, quoted.apr_bps)
    assert [(i.principal_minor, i.fee_minor) for i in loan.installments] == [
        (i.principal_minor, i.fee_minor) for i in quoted.installments]
    # Bought on 15 Jan: first billed on the statement of 1 Feb, due 14 days later; then on
    # each month's repayment day.
    assert [i.due_date for i in loan.installments][:2] == ["2027-02-15", "2027-03-15"]
    assert all(i.status == common_pb2.INSTALLMENT_STATUS_SCHEDULED for i in loan.installments)
    assert loan.outstanding_principal_minor == 129_900

    async with pool.acquire() as conn:
        postings = await conn.fetch(
            "SELECT p.ledger_account, p.amount_minor FROM postings p JOIN journal_entries e USING (entry_id) "
            "WHERE e.reference_id = $1 AND e.kind = 'LOAN_CAPTURED' ORDER BY p.line", uuid.UUID(loan.loan_id))
        provision = await conn.fetch(
            "SELECT p.ledger_account, p.amount_minor FROM postings p JOIN journal_entries e USING (entry_id) "
            "WHERE e.reference_id = $1 AND e.kind = 'RESERVE_PROVISIONED' ORDER BY p.line", uuid.UUID(loan.loan_id))
    assert [(p["ledger_account"], p["amount_minor"]) for p in postings] == [
        ("PRINCIPAL_RECEIVABLE", 129_900), ("MERCHANT_PAYABLE", -129_900),
        ("FEE_RECEIVABLE", quoted.total_fee_minor), ("UNEARNED_FEE_INCOME", -quoted.total_fee_minor)]
    # Grade B provisions 2 % of the principal into the risk reserve.
    assert [(p["ledger_account"], p["amount_minor"]) for p in provision] == [
        ("PROVISION_EXPENSE", 2_598), ("RISK_RESERVE", -2_598)]
    await books()


async def test_partial_capture_gives_back_the_rest(api, books):
    account = await api.open_account(limit_minor=300_000)
    hold = await api.authorize(account.account_id, 200_000, term_months=3)
    captured = await api.capture(hold.authorization_id, 150_000)
    assert (captured.captured_minor, captured.released_minor) == (150_000, 50_000)
    assert captured.plan.principal_minor == 150_000
    after = await api.account(account.account_id)
    assert (after.held_minor, after.outstanding_principal_minor, after.available_minor) == (0, 150_000, 150_000)
    assert (await api.loan(captured.loan_id)).principal_minor == 150_000
    await books()


async def test_capture_above_the_authorized_amount_is_refused_and_writes_nothing(api, books):
    account = await api.open_account(limit_minor=300_000)
    hold = await api.authorize(account.account_id, 200_000)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await api.capture(hold.authorization_id, 200_001)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "amount_minor" in (error.value.details() or "")
    still = await api.checkout.GetAuthorization(checkout_pb2.GetAuthorizationRequest(
        authorization_id=hold.authorization_id))
    assert still.status == PENDING and not still.loan_id
    await books()


async def test_void_gives_the_limit_back_and_a_second_void_returns_the_same(api, books):
    account = await api.open_account(limit_minor=100_000)
    hold = await api.authorize(account.account_id, 60_000)
    voided = await api.void(hold.authorization_id)
    assert voided.status == checkout_pb2.AUTHORIZATION_STATUS_VOIDED
    assert voided.released_minor == 60_000
    again = await api.void(hold.authorization_id)
    assert again == voided
    after = await api.account(account.account_id)
    assert (after.held_minor, after.available_minor) == (0, 100_000)
    await books()


async def test_capture_after_void_fails_with_failed_precondition(api):
    account = await api.open_account(limit_minor=100_000)
    hold = await api.authorize(account.account_id, 60_000)
    await api.void(hold.authorization_id)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await api.capture(hold.authorization_id)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "VOIDED" in (error.value.details() or "")


async def test_void_after_capture_fails_with_failed_precondition(api):
    account = await api.open_account(limit_minor=100_000)
    hold = await api.authorize(account.account_id, 60_000)
    await api.capture(hold.authorization_id)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await api.void(hold.authorization_id)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_an_expired_hold_cannot_be_captured_and_the_sweeper_gives_its_limit_back(
        api, clock, running, pool, books):
    account = await api.open_account(limit_minor=100_000)
    hold = await api.authorize(account.account_id, 70_000)
    clock.advance(timedelta(minutes=30))
    seen = await api.checkout.GetAuthorization(checkout_pb2.GetAuthorizationRequest(
        authorization_id=hold.authorization_id))
    assert seen.status == checkout_pb2.AUTHORIZATION_STATUS_EXPIRED
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await api.capture(hold.authorization_id)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "EXPIRED" in (error.value.details() or "")

    assert await running.core.checkout.expire_due_holds(pool) == 1
    assert await running.core.checkout.expire_due_holds(pool) == 0
    after = await api.account(account.account_id)
    assert (after.held_minor, after.available_minor) == (0, 100_000)
    await books()


async def test_an_authorization_frees_the_accounts_expired_holds_before_deciding(api, clock, books):
    account = await api.open_account(limit_minor=100_000)
    await api.authorize(account.account_id, 90_000)
    clock.advance(timedelta(minutes=31))
    # No sweep has run; the expired hold must not block the new one, and a quote says so.
    offered = await quote(api, account.account_id, 90_000)
    assert offered.plans and offered.available_minor == 100_000
    fresh = await api.authorize(account.account_id, 90_000)
    assert fresh.status == PENDING
    assert (await api.account(account.account_id)).held_minor == 90_000
    await books()


async def test_one_live_authorization_per_merchant_order(api):
    account = await api.open_account(limit_minor=100_000)
    first = await api.authorize(account.account_id, 10_000, order_id="order-42")
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await api.authorize(account.account_id, 10_000, order_id="order-42")
    assert error.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "order_id" in (error.value.details() or "")
    # Once voided, the order may be authorized again.
    await api.void(first.authorization_id)
    again = await api.authorize(account.account_id, 10_000, order_id="order-42")
    assert again.status == PENDING


async def test_two_accounts_racing_for_one_order_get_one_hold(api, books):
    accounts = [await api.open_account(limit_minor=100_000) for _ in range(2)]
    results = await asyncio.gather(
        *(api.authorize(a.account_id, 10_000, order_id="order-race") for a in accounts), return_exceptions=True)
    approved = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(approved) == 1 and len(refused) == 1
    assert refused[0].code() == grpc.StatusCode.ALREADY_EXISTS
    await books()


async def test_a_retry_with_the_same_key_returns_the_first_reply_and_holds_once(api, books):
    account = await api.open_account(limit_minor=100_000)
    idempotency_key = key()
    first = await api.authorize(account.account_id, 30_000, order_id="order-7", idempotency_key=idempotency_key)
    retry = await api.authorize(account.account_id, 30_000, order_id="order-7", idempotency_key=idempotency_key)
    assert retry == first
    assert (await api.account(account.account_id)).held_minor == 30_000
    await books()


async def test_a_key_reused_for_a_different_request_is_refused(api):
    account = await api.open_account(limit_minor=100_000)
    idempotency_key = key()
    await api.authorize(account.account_id, 30_000, order_id="order-8", idempotency_key=idempotency_key)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await api.authorize(account.account_id, 31_000, order_id="order-8", idempotency_key=idempotency_key)
    assert error.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "idempotency_key" in (error.value.details() or "")
    assert (await api.account(account.account_id)).held_minor == 30_000


async def test_concurrent_duplicates_of_one_capture_run_once(api, books):
    account = await api.open_account(limit_minor=100_000)
    hold = await api.authorize(account.account_id, 60_000)
    request = checkout_pb2.CaptureRequest(authorization_id=hold.authorization_id, idempotency_key=key())
    replies = await asyncio.gather(*(api.checkout.Capture(request) for _ in range(20)))
    assert all(r == replies[0] for r in replies)
    assert (await api.account(account.account_id)).outstanding_principal_minor == 60_000
    await books()


async def test_a_declined_authorization_is_a_reply_not_an_error(api):
    account = await api.open_account(limit_minor=50_000)
    declined = await api.authorize(account.account_id, 50_001)
    assert declined.status == checkout_pb2.AUTHORIZATION_STATUS_DECLINED
    assert declined.decline_reason == checkout_pb2.DECLINE_REASON_INSUFFICIENT_LIMIT
    assert declined.decline_message
    assert not declined.HasField("plan")
    stored = await api.checkout.GetAuthorization(checkout_pb2.GetAuthorizationRequest(
        authorization_id=declined.authorization_id))
    assert stored == declined


async def test_a_term_not_offered_to_the_amount_is_declined_with_its_reason(api):
    account = await api.open_account(limit_minor=1_000_000, grade=common_pb2.RISK_GRADE_E)
    declined = await api.authorize(account.account_id, 200_000, term_months=12)
    assert declined.decline_reason == checkout_pb2.DECLINE_REASON_TERM_NOT_OFFERED
    small = await api.authorize(account.account_id, 5_000, term_months=3)
    assert small.decline_reason == checkout_pb2.DECLINE_REASON_TERM_NOT_OFFERED
    assert "at least 10000" in small.decline_message


async def test_an_account_may_authorize_again_an_order_whose_own_hold_expired_unswept(api, clock, books):
    """One write expires the old hold and inserts the new one for the same merchant order:
    the one-live-per-order index must see the old one go before the new one comes."""
    account = await api.open_account(limit_minor=100_000)
    first = await api.authorize(account.account_id, 60_000, order_id="order-again")
    clock.advance(timedelta(minutes=31))
    again = await api.authorize(account.account_id, 70_000, order_id="order-again")
    assert again.status == PENDING and again.authorization_id != first.authorization_id
    assert (await api.authorization(first.authorization_id)).status == checkout_pb2.AUTHORIZATION_STATUS_EXPIRED
    assert (await api.account(account.account_id)).held_minor == 70_000
    await books()


async def test_an_order_whose_expired_hold_is_not_yet_released_asks_the_other_account_to_retry(
        api, clock, running, pool):
    first, second = await api.open_account(limit_minor=100_000), await api.open_account(limit_minor=100_000)
    await api.authorize(first.account_id, 10_000, order_id="order-moved")
    clock.advance(timedelta(minutes=30))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await api.authorize(second.account_id, 10_000, order_id="order-moved")
    assert error.value.code() == grpc.StatusCode.ABORTED
    await running.core.checkout.expire_due_holds(pool)
    moved = await api.authorize(second.account_id, 10_000, order_id="order-moved")
    assert moved.status == PENDING


async def quote(api, account_id: str, amount_minor: int,
                method: common_pb2.RepaymentMethod.ValueType = common_pb2.REPAYMENT_METHOD_UNSPECIFIED):
    return await api.checkout.QuoteInstallments(checkout_pb2.QuoteInstallmentsRequest(
        account_id=account_id, amount_minor=amount_minor, merchant_id="merchant-1", method=method), timeout=10)


async def test_a_quote_offers_only_what_authorize_approves_and_otherwise_says_why(api, pool):
    account = await api.open_account(limit_minor=100_000)
    offered = await quote(api, account.account_id, 50_000)
    assert offered.unavailable_reason == checkout_pb2.QUOTE_UNAVAILABLE_REASON_UNSPECIFIED
    assert not offered.unavailable_message
    assert [p.term_months for p in offered.plans] == [1, 3, 3, 6, 6]
    assert offered.available_minor == 100_000

    # More than is available: no plan (each would be declined), and why.
    await api.authorize(account.account_id, 60_000)
    short = await quote(api, account.account_id, 50_000)
    assert (list(short.plans), short.available_minor) == ([], 40_000)
    assert short.unavailable_reason == checkout_pb2.QUOTE_UNAVAILABLE_REASON_INSUFFICIENT_AVAILABLE
    assert "40000 fen available" in short.unavailable_message
    declined = await api.authorize(account.account_id, 50_000, term_months=3)
    assert declined.decline_reason == checkout_pb2.DECLINE_REASON_INSUFFICIENT_LIMIT

    # No product fits: 1 month is flat fee only, 3 months needs 100.00.
    none = await quote(api, account.account_id, 9_000, common_pb2.REPAYMENT_METHOD_DECLINING_BALANCE)
    assert list(none.plans) == []
    assert none.unavailable_reason == checkout_pb2.QUOTE_UNAVAILABLE_REASON_NO_PRODUCT
    assert none.available_minor == 40_000


async def test_a_frozen_or_closed_account_has_nothing_available_and_its_quote_says_so(api, pool):
    account = await api.open_account(limit_minor=100_000)
    frozen = await api.lines.FreezeAccount(credit_line_pb2.FreezeAccountRequest(
        account_id=account.account_id, reason="suspected fraud", idempotency_key=key()), timeout=10)
    assert (frozen.effective_limit_minor, frozen.available_minor) == (100_000, 0)
    assert (await api.account(account.account_id)).available_minor == 0
    offered = await quote(api, account.account_id, 10_000)
    assert (list(offered.plans), offered.available_minor) == ([], 0)
    assert offered.unavailable_reason == checkout_pb2.QUOTE_UNAVAILABLE_REASON_ACCOUNT_FROZEN
    assert (await api.authorize(account.account_id, 10_000)).decline_reason == (
        checkout_pb2.DECLINE_REASON_ACCOUNT_FROZEN)

    unfrozen = await api.lines.UnfreezeAccount(credit_line_pb2.UnfreezeAccountRequest(
        account_id=account.account_id, reason="cleared", idempotency_key=key()), timeout=10)
    assert unfrozen.available_minor == 100_000
    assert (await quote(api, account.account_id, 10_000)).plans

    # No call closes an account (a charge-off does); close it in the database.
    async with pool.acquire() as conn:
        await account_rows.set_status(conn, uuid.UUID(account.account_id), "CLOSED", START)
    closed = await quote(api, account.account_id, 10_000)
    assert (list(closed.plans), closed.available_minor) == ([], 0)
    assert closed.unavailable_reason == checkout_pb2.QUOTE_UNAVAILABLE_REASON_ACCOUNT_CLOSED
    assert (await api.account(account.account_id)).available_minor == 0
    assert (await api.authorize(account.account_id, 10_000)).decline_reason == (
        checkout_pb2.DECLINE_REASON_ACCOUNT_CLOSED)


async def test_a_decline_before_the_risk_rules_carries_no_risk_and_never_expires(api, running, pool):
    assert running.core.checkout._ruleset is not None, "with the risk checks on"
    account = await api.open_account(limit_minor=50_000)
    idempotency_key = key()
    declined = await api.authorize(account.account_id, 50_001, order_id="order-short",
                                   idempotency_key=idempotency_key)
    assert declined.decline_reason == checkout_pb2.DECLINE_REASON_INSUFFICIENT_LIMIT
    assert not declined.HasField("risk") and not declined.HasField("expires_at")
    assert declined.HasField("created_at")
    assert await api.authorization(declined.authorization_id) == declined
    replay = await api.authorize(account.account_id, 50_001, order_id="order-short", idempotency_key=idempotency_key)
    assert replay == declined

    await api.lines.FreezeAccount(credit_line_pb2.FreezeAccountRequest(
        account_id=account.account_id, reason="suspected fraud", idempotency_key=key()), timeout=10)
    frozen = await api.authorize(account.account_id, 10_000)
    assert frozen.decline_reason == checkout_pb2.DECLINE_REASON_ACCOUNT_FROZEN
    assert not frozen.HasField("risk") and not frozen.HasField("expires_at")
    assert await api.authorization(frozen.authorization_id) == frozen
    # No rule ran, so no decision is kept for audit either.
    decisions = await api.risk.ListRiskDecisions(risk_pb2.ListRiskDecisionsRequest(account_id=account.account_id))
    assert list(decisions.decisions) == []

    # An approval carries the rules' verdict and the hold's expiry.
    await api.lines.UnfreezeAccount(credit_line_pb2.UnfreezeAccountRequest(
        account_id=account.account_id, reason="cleared", idempotency_key=key()), timeout=10)
    approved = await api.authorize(account.account_id, 10_000)
    assert approved.risk.decision == checkout_pb2.RISK_DECISION_APPROVE
    assert approved.expires_at.ToDatetime() - approved.created_at.ToDatetime() == timedelta(minutes=30)
