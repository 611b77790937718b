"""Risk checks inside Authorize over gRPC: the decision and its reasons reach the reply
and the audit table; the reserve is funded at capture and consumed at charge-off."""

from __future__ import annotations

import grpc
import pytest

from credit.v1 import checkout_pb2, common_pb2, risk_pb2
from server.db import risk as risk_rows
from server.domain.risk import RULES
from tests.support import buy, field_violations, repay


async def decisions(api, account_id):
    return (await api.risk.ListRiskDecisions(risk_pb2.ListRiskDecisionsRequest(account_id=account_id))).decisions


async def test_a_clean_authorization_is_approved_and_its_decision_stored(api):
    account = await api.open_account(limit_minor=1_000_000)
    auth = await api.authorize(account.account_id, 50_000)
    assert auth.status == checkout_pb2.AUTHORIZATION_STATUS_PENDING
    assert (auth.risk.decision, auth.risk.score, list(auth.risk.reasons)) == (checkout_pb2.RISK_DECISION_APPROVE,
                                                                              0, [])
    [stored] = await decisions(api, account.account_id)
    assert (stored.authorization_id, stored.decision, stored.ruleset_version) == (
        auth.authorization_id, checkout_pb2.RISK_DECISION_APPROVE, "ruleset-v1")
    inputs = stored.inputs
    assert inputs.amount_minor == 50_000 and inputs.device_id == "device-" + account.account_id[:13]
    assert (inputs.grade, list(inputs.blocked), inputs.merchant_level) == (
        account.risk_grade, [], risk_pb2.RISK_LIST_LEVEL_UNSPECIFIED)
    assert [r.rule for r in stored.rule_results] == list(RULES)
    assert not any(r.fired or r.score or r.detail for r in stored.rule_results)


async def test_a_blocked_device_is_declined_with_its_reason_in_reply_and_audit(api, pool):
    account = await api.open_account(limit_minor=1_000_000)
    async with pool.acquire() as conn:
        await risk_rows.add_to_list(conn, "DEVICE", "stolen-phone", "BLOCK", "reported stolen")
    auth = await api.authorize(account.account_id, 50_000, device_id="stolen-phone")
    assert auth.status == checkout_pb2.AUTHORIZATION_STATUS_DECLINED
    assert auth.decline_reason == checkout_pb2.DECLINE_REASON_RISK_DECLINED
    assert auth.risk.decision == checkout_pb2.RISK_DECISION_DECLINE and list(auth.risk.reasons) == ["BLOCK_LIST"]
    assert not auth.HasField("expires_at")
    assert await api.authorization(auth.authorization_id) == auth
    assert (await api.account(account.account_id)).held_minor == 0
    [stored] = await decisions(api, account.account_id)
    assert (stored.decision, list(stored.reasons)) == (checkout_pb2.RISK_DECISION_DECLINE, ["BLOCK_LIST"])


async def test_decisions_page_by_twenty_by_default_and_carry_the_decision_of_the_authorization(api):
    account = await api.open_account(limit_minor=5_000_000)
    # Past five an hour the velocity rule declines: both outcomes land in the audit.
    authorizations = {a.authorization_id: a for a in [await api.authorize(account.account_id, 10_000)
                                                       for _ in range(22)]}
    assert {a.risk.decision for a in authorizations.values()} == {
        checkout_pb2.RISK_DECISION_APPROVE, checkout_pb2.RISK_DECISION_DECLINE}

    first = await api.risk.ListRiskDecisions(risk_pb2.ListRiskDecisionsRequest(account_id=account.account_id))
    assert len(first.decisions) == 20 and first.next_page_token
    rest = await api.risk.ListRiskDecisions(risk_pb2.ListRiskDecisionsRequest(
        account_id=account.account_id, page_size=100, page_token=first.next_page_token))
    assert len(rest.decisions) == 2 and not rest.next_page_token
    stored = list(first.decisions) + list(rest.decisions)
    assert sorted((d.authorization_id, d.decision, d.score) for d in stored) == sorted(
        (a.authorization_id, a.risk.decision, a.risk.score) for a in authorizations.values())

    for size in (101, -1):
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await api.risk.ListRiskDecisions(risk_pb2.ListRiskDecisionsRequest(
                account_id=account.account_id, page_size=size))
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(error.value) == ["page_size"]


async def test_a_device_shared_by_many_accounts_is_sent_to_review(api):
    for _ in range(3):
        other = await api.open_account(limit_minor=1_000_000)
        await api.authorize(other.account_id, 10_000, device_id="farm-device", ip_address="198.51.100.1")
    account = await api.open_account(limit_minor=1_000_000)
    auth = await api.authorize(account.account_id, 10_000, device_id="farm-device", ip_address="198.51.100.2")
    assert auth.decline_reason == checkout_pb2.DECLINE_REASON_RISK_REVIEW
    assert list(auth.risk.reasons) == ["SHARED_DEVICE"]


async def test_velocity_on_one_account_declines_the_sixth_within_the_hour(api):
    account = await api.open_account(limit_minor=5_000_000)
    results = [await api.authorize(account.account_id, 10_000) for _ in range(6)]
    assert [r.status for r in results[:5]] == [checkout_pb2.AUTHORIZATION_STATUS_PENDING] * 5
    assert "ACCOUNT_VELOCITY_COUNT" in results[5].risk.reasons


async def test_a_high_risk_merchant_and_a_grade_e_customer_add_up(api, pool):
    async with pool.acquire() as conn:
        await risk_rows.add_to_list(conn, "MERCHANT", "grey-market", "HIGH", "chargebacks")
    account = await api.open_account(limit_minor=1_000_000, grade=common_pb2.RISK_GRADE_E)
    auth = await api.authorize(account.account_id, 10_000, merchant_id="grey-market")
    assert sorted(auth.risk.reasons) == ["GRADE", "MERCHANT_RISK"]
    assert auth.risk.score == 65 and auth.decline_reason == checkout_pb2.DECLINE_REASON_RISK_REVIEW


async def test_the_reserve_is_funded_at_capture_released_at_payoff(api, clock, books):
    account = await api.open_account(limit_minor=1_000_000)  # grade B: 2 %
    loan = await buy(api, account.account_id, 300_000)
    pool = await api.risk.GetReservePool(risk_pb2.GetReservePoolRequest())
    assert pool.balance_minor >= 6_000 and pool.provisioned_minor >= 6_000
    before = pool.balance_minor
    payoff = await api.repayment.QuotePayoff(__import__("credit.v1.repayment_pb2", fromlist=["x"]).QuotePayoffRequest(
        loan_id=loan.loan_id))
    await repay(api, account.account_id, payoff.payoff_minor)
    after = await api.risk.GetReservePool(risk_pb2.GetReservePoolRequest())
    assert after.balance_minor == before - 6_000
    assert after.released_minor >= 6_000
    await books()


async def test_every_fact_the_rules_see_is_counted_from_the_book(api, pool, clock):
    """Each fact of the Authorize read against a book built to give it a known value."""
    from datetime import timedelta

    account = await api.open_account(limit_minor=10_000_000)
    other = await api.open_account(limit_minor=10_000_000)
    await buy(api, account.account_id, 70_000, device_id="shared-phone", ip_address="198.51.100.7")
    await api.authorize(other.account_id, 10_000, device_id="shared-phone", ip_address="203.0.113.9")
    clock.advance(timedelta(hours=25))
    await api.authorize(account.account_id, 20_000, device_id="own-phone", ip_address="198.51.100.7")
    third = await api.open_account(limit_minor=10_000_000)
    await api.authorize(third.account_id, 10_000, device_id="shared-phone", ip_address="203.0.113.9")
    clock.advance(timedelta(minutes=10))
    async with pool.acquire() as conn:
        await risk_rows.add_to_list(conn, "ACCOUNT", account.account_id, "BLOCK", "test")
        await risk_rows.add_to_list(conn, "IP", "203.0.113.9", "BLOCK", "test")
        await risk_rows.add_to_list(conn, "MERCHANT", "shop-medium", "MEDIUM", "test")
    declined = await api.authorize(account.account_id, 40_000, device_id="shared-phone", ip_address="203.0.113.9",
                                   merchant_id="shop-medium")
    assert declined.risk.decision == checkout_pb2.RISK_DECISION_DECLINE
    stored = (await decisions(api, account.account_id))[-1]
    assert stored.authorization_id == declined.authorization_id
    facts = stored.inputs
    assert list(facts.blocked) == [risk_pb2.RISK_LIST_KIND_ACCOUNT, risk_pb2.RISK_LIST_KIND_IP]
    assert facts.merchant_level == risk_pb2.RISK_LIST_LEVEL_MEDIUM
    assert facts.account_approvals_last_hour == 1        # the 20,000 hold, ten minutes old
    assert facts.account_amount_last_day_minor == 20_000  # the loan is 25 hours old
    assert facts.device_authorizations_last_hour == 1    # the third account's, ten minutes ago
    assert facts.device_accounts_last_30_days == 2       # the other and the third account
    assert facts.ip_accounts_last_day == 1               # the third; the other used it 25 hours ago
    assert facts.device_known_for_account is True        # the loan was bought on it
    assert (facts.captured_count, facts.largest_captured_minor) == (1, 70_000)
    fired = {r.rule: r for r in stored.rule_results if r.fired}
    assert set(fired) >= {"BLOCK_LIST", "MERCHANT_RISK"} and fired["BLOCK_LIST"].score > 0
    assert list(stored.reasons) == [r.rule for r in sorted(fired.values(), key=lambda r: -r.score)]
