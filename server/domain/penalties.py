"""Late penalties: which calendar days of an overdue installment bear a penalty, and
how much.

A day is charged once it has ended: day d of an installment due on D bears a penalty
when d - D > grace_days and d < today (all in the account's zone). The penalty of a
day is the daily rate on what was unpaid of the installment's principal and fee at the
end of that day (never on earlier penalties), at least `min_minor_per_day`, and the
total on an installment never exceeds `cap_bps` of its principal and fee.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from fractions import Fraction

from server.domain.errors import InvariantViolation
from server.domain.money import round_half_up

BPS = 10_000
# Catch-up after downtime is bounded; a longer gap is caught up over several passes.
MAX_DAYS_PER_PASS = 400


@dataclass(frozen=True)
class PenaltyPolicy:
    grace_days: int = 3
    rate_bps_per_day: int = 5
    min_minor_per_day: int = 1
    cap_bps: int = 2_500

    def __post_init__(self) -> None:
        if not (0 <= self.grace_days <= 60 and 0 <= self.rate_bps_per_day <= 100
                and 0 <= self.min_minor_per_day <= 10_000 and 0 <= self.cap_bps <= 10_000):
            raise ValueError(f"penalty policy out of range: {self}")


@dataclass(frozen=True)
class DailyPenalty:
    accrual_date: date
    base_minor: int
    amount_minor: int


def cap_minor(principal_minor: int, fee_minor: int, policy: PenaltyPolicy) -> int:
    return round_half_up(Fraction((principal_minor + fee_minor) * policy.cap_bps, BPS))


def daily_minor(base_minor: int, policy: PenaltyPolicy) -> int:
    if base_minor <= 0:
        return 0
    return max(policy.min_minor_per_day, round_half_up(Fraction(base_minor * policy.rate_bps_per_day, BPS)))


def chargeable_days(due_date: date, last_charged: date | None, today: date, policy: PenaltyPolicy) -> list[date]:
    """The ended days not yet charged, oldest first, at most MAX_DAYS_PER_PASS."""
    first = due_date + timedelta(days=policy.grace_days + 1)
    if last_charged is not None:
        first = max(first, last_charged + timedelta(days=1))
    days: list[date] = []
    day = first
    while day < today and len(days) < MAX_DAYS_PER_PASS:
        days.append(day)
        day += timedelta(days=1)
    return days


def accrue(*, due_date: date, principal_minor: int, fee_minor: int, charged_so_far_minor: int,
           last_charged: date | None, today: date, unpaid_at_end_of: Callable[[date], int],
           policy: PenaltyPolicy) -> list[DailyPenalty]:
    """The penalties to book now for one installment. `unpaid_at_end_of(day)` gives the
    principal and fee that were unpaid when `day` ended, so a catch-up after downtime
    charges each missed day on what was owed that day, and stops where it was paid."""
    cap = cap_minor(principal_minor, fee_minor, policy)
    if charged_so_far_minor > cap:
        raise InvariantViolation(f"penalty {charged_so_far_minor} already above its cap {cap}")
    room = cap - charged_so_far_minor
    booked = []
    for day in chargeable_days(due_date, last_charged, today, policy):
        if room <= 0:
            break
        base = unpaid_at_end_of(day)
        amount = min(daily_minor(base, policy), room)
        if amount > 0:
            booked.append(DailyPenalty(day, base, amount))
            room -= amount
    return booked
