"""The billing cycle: one statement and one bill a month.

Each account has a statement day (1 to 28, so that every month has one). The statement
dated D closes the period of local dates [previous statement date, D): a purchase on
date p is first billed on the first statement date after p, and every installment on
that statement falls due on the same day, D plus the account's `payment_due_days`. A
loan's k-th installment is on the k-th statement after its purchase, so all the loans
of an account fall due together: one bill a month, whatever the purchase dates.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date, timedelta

from server.domain.calendar import add_months
from server.domain.errors import InvariantViolation

MIN_STATEMENT_DAY = 1
# The 29th to 31st do not exist in every month; a cycle anchored there would drift.
MAX_STATEMENT_DAY = 28
DEFAULT_PAYMENT_DUE_DAYS = 20
MIN_PAYMENT_DUE_DAYS = 1
# A bill falls due before the next statement is issued, so a statement never lists two
# unpaid bills of the same cycle as current.
MAX_PAYMENT_DUE_DAYS = 27


def default_statement_day(opened_on: date) -> int:
    """The day the account opened, capped at 28."""
    return min(opened_on.day, MAX_STATEMENT_DAY)


def check_statement_day(day: int) -> int:
    if not MIN_STATEMENT_DAY <= day <= MAX_STATEMENT_DAY:
        raise InvariantViolation(f"statement day {day} is not in {MIN_STATEMENT_DAY}..{MAX_STATEMENT_DAY}")
    return day


def check_payment_due_days(days: int) -> int:
    if not MIN_PAYMENT_DUE_DAYS <= days <= MAX_PAYMENT_DUE_DAYS:
        raise InvariantViolation(
            f"payment due days {days} is not in {MIN_PAYMENT_DUE_DAYS}..{MAX_PAYMENT_DUE_DAYS}")
    return days


@dataclass(frozen=True)
class Period:
    """The local dates [start, end) that the statement dated `end` closes."""

    start: date
    end: date

    @property
    def statement_date(self) -> date:
        return self.end

    def __contains__(self, day: object) -> bool:
        return isinstance(day, date) and self.start <= day < self.end


@dataclass(frozen=True)
class BillingCycle:
    statement_day: int
    payment_due_days: int = DEFAULT_PAYMENT_DUE_DAYS

    def __post_init__(self) -> None:
        check_statement_day(self.statement_day)
        check_payment_due_days(self.payment_due_days)

    def statement_date_in(self, year: int, month: int) -> date:
        return date(year, month, self.statement_day)

    def statement_date_after(self, day: date) -> date:
        """The first statement date strictly after `day`: the statement that bills a
        purchase made on `day`."""
        this_month = self.statement_date_in(day.year, day.month)
        return this_month if this_month > day else add_months(this_month, 1)

    def statement_date_on_or_before(self, day: date) -> date:
        this_month = self.statement_date_in(day.year, day.month)
        return this_month if this_month <= day else add_months(this_month, -1)

    def period_of(self, day: date) -> Period:
        """The period whose statement bills what happens on `day`."""
        end = self.statement_date_after(day)
        return Period(add_months(end, -1), end)

    def due_date(self, statement_date: date) -> date:
        """The day the bill of the statement dated `statement_date` falls due."""
        return statement_date + timedelta(days=self.payment_due_days)

    def due_dates(self, purchase_date: date, periods: int) -> tuple[date, ...]:
        """The due dates of a loan bought on `purchase_date` over `periods` months: the
        bills of the `periods` statements after the purchase."""
        if periods < 1:
            raise InvariantViolation(f"a loan has at least one period, got {periods}")
        return _due_dates(self, purchase_date, periods)


# Every quote, authorization and capture asks for the due dates of a purchase today on
# its account's cycle: a few terms on a few cycles a day, served from memory.
@functools.lru_cache(maxsize=4096)
def _due_dates(cycle: BillingCycle, purchase_date: date, periods: int) -> tuple[date, ...]:
    first = cycle.statement_date_after(purchase_date)
    return tuple(cycle.due_date(add_months(first, k)) for k in range(periods))
