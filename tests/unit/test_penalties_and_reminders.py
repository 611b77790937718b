"""Penalty days and amounts, reminder planning and contact rules, as pure rules."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain.penalties import PenaltyPolicy, accrue, cap_minor, chargeable_days, daily_minor
from server.domain.reminders import (
    Channel,
    ContactWindow,
    FrequencyCaps,
    PastContact,
    Step,
    plan_steps,
    within_caps,
)

POLICY = PenaltyPolicy()
DUE = date(2027, 2, 15)


def test_grace_days_bear_no_penalty_and_only_ended_days_are_charged():
    assert chargeable_days(DUE, None, date(2027, 2, 19), POLICY) == []
    assert chargeable_days(DUE, None, date(2027, 2, 20), POLICY) == [date(2027, 2, 19)]
    assert chargeable_days(DUE, date(2027, 2, 19), date(2027, 2, 20), POLICY) == []


def test_daily_penalty_is_rate_on_the_base_rounded_half_up_with_a_floor():
    assert daily_minor(101_800, POLICY) == 51  # 50.9
    assert daily_minor(100_000, POLICY) == 50
    assert daily_minor(1_000, POLICY) == 1  # 0.5 rounds up
    assert daily_minor(100, POLICY) == 1  # the floor
    assert daily_minor(0, POLICY) == 0


def test_cap_is_a_quarter_of_principal_and_fee():
    assert cap_minor(100_000, 1_800, POLICY) == 25_450


@given(base=st.integers(1, 10**9), days=st.integers(0, 500), charged=st.integers(0, 10**6))
def test_accrual_never_passes_the_cap_and_books_each_day_at_most_once(base, days, charged):
    principal, fee = base, 0
    cap = cap_minor(principal, fee, POLICY)
    charged = min(charged, cap)
    today = DUE + timedelta(days=days)
    booked = accrue(due_date=DUE, principal_minor=principal, fee_minor=fee, charged_so_far_minor=charged,
                    last_charged=None, today=today, unpaid_at_end_of=lambda d: base, policy=POLICY)
    assert charged + sum(p.amount_minor for p in booked) <= cap
    assert len({p.accrual_date for p in booked}) == len(booked)
    assert all(p.accrual_date < today and (p.accrual_date - DUE).days > POLICY.grace_days for p in booked)


def test_a_catch_up_charges_each_missed_day_on_what_was_owed_that_day():
    paid_on = date(2027, 2, 22)
    booked = accrue(due_date=DUE, principal_minor=100_000, fee_minor=1_800, charged_so_far_minor=0, last_charged=None,
                    today=date(2027, 3, 1), unpaid_at_end_of=lambda d: 101_800 if d < paid_on else 0, policy=POLICY)
    assert [(p.accrual_date.day, p.amount_minor) for p in booked] == [(19, 51), (20, 51), (21, 51)]


def test_a_policy_out_of_range_is_refused():
    with pytest.raises(ValueError):
        PenaltyPolicy(rate_bps_per_day=1_000)


STEPS = [Step("D-3", -3, Channel.EMAIL, "upcoming"), Step("D0", 0, Channel.VOICE, "due_today"),
         Step("D+7e", 7, Channel.EMAIL, "overdue"), Step("D+7v", 7, Channel.VOICE, "overdue"),
         Step("D+30", 30, Channel.EMAIL, "final", escalates=True)]


def test_only_the_latest_due_steps_run_and_older_ones_are_superseded():
    plan = plan_steps(STEPS, DUE, DUE + timedelta(days=10), taken=set())
    assert [s.code for s in plan.run] == ["D+7e", "D+7v"]
    assert [s.code for s in plan.superseded] == ["D-3", "D0"]


def test_a_step_taken_is_not_run_again_and_nothing_is_due_before_the_first_offset():
    assert plan_steps(STEPS, DUE, DUE - timedelta(days=4), taken=set()).run == ()
    plan = plan_steps(STEPS, DUE, DUE - timedelta(days=3), taken={"D-3"})
    assert plan.run == () and plan.superseded == ()


@pytest.mark.parametrize("hour, inside", [(7, False), (8, True), (20, True), (21, False), (23, False)])
def test_the_contact_window_is_in_the_customers_zone(hour, inside):
    local = datetime(2027, 2, 16, hour, 30 if hour == 20 else 0, tzinfo=timezone(timedelta(hours=8)))
    assert ContactWindow().contains(local, "Asia/Shanghai") is inside
    # The same instant seen from New York is 13 hours earlier.
    assert ContactWindow().contains(local, "America/New_York") is (8 <= (hour - 13) % 24 < 21)


NOW = datetime(2027, 2, 16, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai


def test_one_call_a_day_and_seven_in_seven_days():
    caps = FrequencyCaps()
    assert within_caps(Channel.VOICE, NOW, "Asia/Shanghai", [], caps)
    today_call = [PastContact(NOW - timedelta(hours=1), Channel.VOICE)]
    assert not within_caps(Channel.VOICE, NOW, "Asia/Shanghai", today_call, caps)
    week = [PastContact(NOW - timedelta(days=d) + timedelta(hours=1), Channel.VOICE) for d in range(1, 8)]
    assert not within_caps(Channel.VOICE, NOW, "Asia/Shanghai", week[:7], caps)
    assert within_caps(Channel.VOICE, NOW, "Asia/Shanghai", week[:6], caps)


def test_no_call_within_seven_days_after_a_call_that_reached_the_customer():
    caps = FrequencyCaps()
    reached = [PastContact(NOW - timedelta(days=6), Channel.VOICE, reached=True)]
    assert not within_caps(Channel.VOICE, NOW, "Asia/Shanghai", reached, caps)
    assert within_caps(Channel.VOICE, NOW + timedelta(days=2), "Asia/Shanghai", reached, caps)
    assert within_caps(Channel.EMAIL, NOW, "Asia/Shanghai", reached, caps)


def test_emails_are_capped_per_customer_day():
    caps = FrequencyCaps(email_per_day=2)
    sent = [PastContact(NOW - timedelta(minutes=m), Channel.EMAIL) for m in (5, 10)]
    assert not within_caps(Channel.EMAIL, NOW, "Asia/Shanghai", sent, caps)
    assert within_caps(Channel.EMAIL, NOW, "Asia/Shanghai", sent[:1], caps)
