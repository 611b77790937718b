"""Limit reviews and campaigns, worked through on real accounts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from credit.v1 import common_pb2, credit_line_pb2
from server.core.limits import grant_campaign, review_limits
from server.domain.errors import InvalidArgument
from server.domain.pricing import Grade
from tests.support import buy, key, repay, timestamp

SHANGHAI = timezone(timedelta(hours=8))


def shanghai(month, day, hour=10, year=2027):
    return datetime(year, month, day, hour, tzinfo=SHANGHAI)


async def events(pool, account_id):
    async with pool.acquire() as conn:
        return await conn.fetch("SELECT reason, detail FROM account_events WHERE account_id = $1 "
                                "AND kind = 'LIMIT_REVIEWED' ORDER BY event_id", uuid.UUID(account_id))


async def test_a_customer_who_repays_on_time_gets_a_raise_and_a_new_one_is_refused_with_reasons(
        api, clock, pool, books):
    account = await api.open_account(limit_minor=1_000_000)  # grade B, ceiling 60,000.00
    await buy(api, account.account_id, 300_000)
    for month in (2, 3, 4):
        clock.set(shanghai(month, 14))
        await repay(api, account.account_id, 101_800)
    clock.set(shanghai(5, 20))  # the limit was set on 01-15: more than three months ago
    report = await review_limits(pool, clock.now())
    assert report.actions["RAISE"] >= 1
    assert (await api.account(account.account_id)).credit_limit_minor == 1_200_000
    [raised] = await events(pool, account.account_id)
    assert raised["reason"] == "ON_TIME_REPAYMENTS"

    newcomer = await api.open_account(limit_minor=1_000_000)
    await buy(api, newcomer.account_id, 300_000)
    await review_limits(pool, clock.now())
    [refused] = await events(pool, newcomer.account_id)
    assert "SHORT_REPAYMENT_HISTORY" in refused["reason"] and "LIMIT_CHANGED_RECENTLY" in refused["reason"]
    assert (await api.account(newcomer.account_id)).credit_limit_minor == 1_000_000
    await books()


async def test_a_late_customer_is_cut_once_then_frozen_past_thirty_days(api, clock, pool):
    account = await api.open_account(limit_minor=1_000_000)
    await buy(api, account.account_id, 300_000)
    clock.set(shanghai(2, 20))  # 5 days late
    await review_limits(pool, clock.now())
    assert (await api.account(account.account_id)).credit_limit_minor == 500_000
    await review_limits(pool, clock.now() + timedelta(days=1))  # no second cut so soon
    assert (await api.account(account.account_id)).credit_limit_minor == 500_000
    clock.set(shanghai(3, 20))  # 33 days late
    await review_limits(pool, clock.now())
    after = await api.account(account.account_id)
    assert after.status == common_pb2.ACCOUNT_STATUS_FROZEN
    reasons = [e["reason"] for e in await events(pool, account.account_id)]
    assert reasons[0] == "PAYMENT_OVERDUE" and reasons[-1] == "DELINQUENT_31_PLUS_DAYS"


async def test_a_campaign_counts_overdue_in_the_customers_own_calendar(api, clock, pool):
    """At 04:00 on 02-16 in Shanghai (still 02-15 in UTC) the installment due on 02-15 is
    overdue for the customer, who gets no campaign raise."""
    late = await api.open_account(limit_minor=1_000_000, grade=common_pb2.RISK_GRADE_A)
    await buy(api, late.account_id, 300_000)  # due 2027-02-15
    clock.set(shanghai(2, 16, 4))
    report = await grant_campaign(pool, grades=[Grade.A], raise_minor=500_000, expires_at=shanghai(2, 22),
                                  reason="Lantern Festival", now=clock.now())
    assert report.granted == 0
    assert (await api.account(late.account_id)).temporary_limit_minor == 0


async def test_a_campaign_raises_a_cohort_until_it_expires(api, clock, pool):
    good = await api.open_account(limit_minor=1_000_000, grade=common_pb2.RISK_GRADE_A)
    other_grade = await api.open_account(limit_minor=1_000_000, grade=common_pb2.RISK_GRADE_D)
    late = await api.open_account(limit_minor=1_000_000, grade=common_pb2.RISK_GRADE_A)
    await buy(api, late.account_id, 300_000)
    clock.set(shanghai(2, 20))  # `late` is now overdue
    expires = shanghai(2, 22)
    report = await grant_campaign(pool, grades=[Grade.A, Grade.B], raise_minor=500_000, expires_at=expires,
                                  reason="Lantern Festival", now=clock.now())
    assert report.granted >= 1
    assert (await api.account(good.account_id)).effective_limit_minor == 1_500_000
    assert (await api.account(other_grade.account_id)).effective_limit_minor == 1_000_000
    assert (await api.account(late.account_id)).temporary_limit_minor == 0
    clock.set(expires)
    assert (await api.account(good.account_id)).effective_limit_minor == 1_000_000


async def test_the_bot_runs_the_review_as_a_step_when_asked(api, clock, pool):
    from collections_bot.__main__ import build
    from collections_bot.config import BotSettings

    account = await api.open_account(limit_minor=1_000_000)
    await buy(api, account.account_id, 300_000)
    bot = build(pool, BotSettings.from_env({"LIMIT_REVIEW": "on", "SMTP_PORT": "9"}), clock)
    clock.set(shanghai(2, 20, 22))  # outside the contact window: no email is tried
    report = await bot.run()
    assert report.limit_review.get("CUT", 0) >= 1
    assert (await api.account(account.account_id)).credit_limit_minor == 500_000


async def test_a_campaign_never_lowers_nor_shortens_a_raise_in_force(api, clock, pool, books):
    """Each account is offered 5,000.00 until the 20th; only those whose own raise is
    no better on either count take it."""
    now = clock.now()
    own = {  # name: (temporary limit, ends in days) granted before the campaign
        "larger": (800_000, 3), "longer": (200_000, 30), "better": (800_000, 30),
        "worse": (200_000, 3), "expired": (900_000, None), "none": (0, None)}
    accounts = {}
    for name, (limit_minor, days) in own.items():
        account = await api.open_account(limit_minor=1_000_000, grade=common_pb2.RISK_GRADE_A)
        if limit_minor:
            await api.lines.GrantTemporaryLimit(credit_line_pb2.GrantTemporaryLimitRequest(
                account_id=account.account_id, temporary_limit_minor=limit_minor, reason="own",
                expires_at=timestamp(now + timedelta(days=days if days else 1)), idempotency_key=key()))
        accounts[name] = account.account_id
    clock.advance(timedelta(days=2))  # the "expired" raise has ended
    expires = clock.now() + timedelta(days=5)

    async def campaign():
        return await grant_campaign(pool, grades=[Grade.A], raise_minor=500_000, expires_at=expires,
                                    reason="Qingming", now=clock.now())

    report = await campaign()
    assert (report.granted, report.kept) == (3, 3)
    seen = {name: await api.account(account_id) for name, account_id in accounts.items()}
    raises = {name: (a.temporary_limit_minor, a.temporary_limit_expires_at.ToDatetime(tzinfo=UTC) - now)
              for name, a in seen.items()}
    assert raises == {
        "larger": (800_000, timedelta(days=3)), "longer": (200_000, timedelta(days=30)),
        "better": (800_000, timedelta(days=30)), "worse": (500_000, timedelta(days=7)),
        "expired": (500_000, timedelta(days=7)), "none": (500_000, timedelta(days=7))}
    # Run again: nothing changes, nothing more is recorded.
    again = await campaign()
    assert (again.granted, again.kept) == (0, 6)
    async with pool.acquire() as conn:
        recorded = await conn.fetchval("SELECT count(*) FROM account_events WHERE kind = 'TEMPORARY_LIMIT_GRANTED' "
                                       "AND reason = 'Qingming'")
    assert recorded == 3
    await books()


async def test_a_campaign_ends_at_most_temporary_limit_max_days_ahead(api, clock, pool):
    account = await api.open_account(limit_minor=1_000_000, grade=common_pb2.RISK_GRADE_A)
    with pytest.raises(InvalidArgument) as error:
        await grant_campaign(pool, grades=[Grade.A], raise_minor=500_000,
                             expires_at=clock.now() + timedelta(days=31), reason="too long", now=clock.now(),
                             max_days=30)
    assert [v.field for v in error.value.violations] == ["expires_at"]
    assert (await api.account(account.account_id)).temporary_limit_minor == 0
    report = await grant_campaign(pool, grades=[Grade.A], raise_minor=500_000,
                                  expires_at=clock.now() + timedelta(days=30), reason="a month", now=clock.now(),
                                  max_days=30)
    assert report.granted == 1
