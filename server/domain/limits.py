"""Dynamic limits: the periodic review that raises limits for customers who repay on
time and cuts or freezes delinquent ones, always with reason codes; and campaigns that
give a cohort a temporary raise."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from server.domain.accounts import CreditLine
from server.domain.pricing import Grade
from server.domain.scorecard import LIMIT_POLICY_MINOR


class Action(enum.StrEnum):
    RAISE = "RAISE"
    CUT = "CUT"
    FREEZE = "FREEZE"
    KEEP = "KEEP"


@dataclass(frozen=True)
class ReviewPolicy:
    raise_bps: int = 2_000            # +20 %
    cut_bps: int = 5_000              # to 50 %, never below what is used
    min_on_time_installments: int = 3
    months_between_changes: int = 3
    # A review cuts a limit at most once in this many days, however often it runs.
    days_between_cuts: int = 30
    freeze_days_past_due: int = 31
    # A raise never takes the limit above this multiple of the grade's policy limit.
    ceiling_multiple: int = 2


@dataclass(frozen=True)
class Record:
    credit_limit_minor: int
    used_minor: int
    grade: Grade
    days_past_due: int
    paid_on_time: int
    penalty_days: int
    last_limit_change: datetime | None


@dataclass(frozen=True)
class Review:
    action: Action
    new_limit_minor: int
    reasons: tuple[str, ...]


def review(record: Record, now: datetime, policy: ReviewPolicy = ReviewPolicy()) -> Review:
    limit = record.credit_limit_minor
    if record.days_past_due >= policy.freeze_days_past_due:
        return Review(Action.FREEZE, limit, (f"DELINQUENT_{policy.freeze_days_past_due}_PLUS_DAYS",))
    if record.days_past_due > 0:
        cut = max(record.used_minor, limit * policy.cut_bps // 10_000)
        cut_recently = (record.last_limit_change is not None
                        and record.last_limit_change > now - timedelta(days=policy.days_between_cuts))
        if cut < limit and not cut_recently:
            return Review(Action.CUT, cut, ("PAYMENT_OVERDUE",))
        return Review(Action.KEEP, limit, ("PAYMENT_OVERDUE",))
    reasons = []
    if record.paid_on_time < policy.min_on_time_installments:
        reasons.append("SHORT_REPAYMENT_HISTORY")
    if record.penalty_days > 0:
        reasons.append("LATE_PAYMENTS_IN_HISTORY")
    recent = now - timedelta(days=30 * policy.months_between_changes)
    if record.last_limit_change is not None and record.last_limit_change > recent:
        reasons.append("LIMIT_CHANGED_RECENTLY")
    ceiling = LIMIT_POLICY_MINOR[record.grade] * policy.ceiling_multiple
    if limit >= ceiling:
        reasons.append("AT_GRADE_CEILING")
    if reasons:
        return Review(Action.KEEP, limit, tuple(reasons))
    return Review(Action.RAISE, min(ceiling, limit + limit * policy.raise_bps // 10_000), ("ON_TIME_REPAYMENTS",))


@dataclass(frozen=True)
class TemporaryRaise:
    limit_minor: int
    expires_at: datetime


def campaign_raise(line: CreditLine, offered: TemporaryRaise, now: datetime) -> TemporaryRaise | None:
    """The raise a campaign sets on this account, or None to keep what it has.

    A campaign never takes anything from a customer: it never lowers the temporary
    limit in force nor ends it sooner. An account has one temporary raise, so the
    campaign's replaces the one in force only when it is at least as large and lasts at
    least as long (and differs from it: running a campaign twice changes nothing).
    When neither is better on both counts (larger but shorter, or longer but smaller)
    the account keeps its own: taking the larger amount until the later end would grant
    credit that no one approved."""
    in_force = line.temporary_limit_in_force_minor(now)
    if in_force == 0 or line.temporary_limit_expires_at is None:
        return offered
    current = TemporaryRaise(in_force, line.temporary_limit_expires_at)
    if offered == current or offered.limit_minor < current.limit_minor or offered.expires_at < current.expires_at:
        return None
    return offered
