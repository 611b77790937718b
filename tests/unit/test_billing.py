"""The billing cycle: statement dates, periods and one due date a month per account."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain.billing import BillingCycle, default_statement_day
from server.domain.errors import InvariantViolation

days = st.dates(min_value=date(2020, 1, 1), max_value=date(2040, 12, 31))
statement_days = st.integers(min_value=1, max_value=28)
due_days = st.integers(min_value=1, max_value=27)


def test_a_purchase_is_billed_on_the_first_statement_after_it():
    cycle = BillingCycle(statement_day=5, payment_due_days=20)
    assert cycle.statement_date_after(date(2027, 1, 4)) == date(2027, 1, 5)
    # On the statement day itself the period has closed: the purchase waits a month.
    assert cycle.statement_date_after(date(2027, 1, 5)) == date(2027, 2, 5)
    assert cycle.statement_date_after(date(2027, 12, 20)) == date(2028, 1, 5)
    assert cycle.due_dates(date(2027, 1, 4), 3) == (date(2027, 1, 25), date(2027, 2, 25), date(2027, 3, 25))


def test_a_bill_due_after_the_month_ends_rolls_into_the_next_month():
    cycle = BillingCycle(statement_day=28, payment_due_days=20)
    assert cycle.due_dates(date(2027, 1, 30), 2) == (date(2027, 3, 20), date(2027, 4, 17))


@given(statement_days, due_days, days, days, st.integers(min_value=1, max_value=24))
def test_loans_bought_on_different_days_fall_due_on_the_same_days(statement_day, due, first, second, term):
    """Whatever two purchases' dates, every due date of either is a due date of the
    account's cycle: a statement date plus the due days."""
    cycle = BillingCycle(statement_day, due)
    for purchase in (first, second):
        dates = cycle.due_dates(purchase, term)
        assert all((d - timedelta(days=due)).day == statement_day for d in dates)
        assert list(dates) == sorted(set(dates))
        first_statement = dates[0] - timedelta(days=due)
        # The first bill is the first statement after the purchase.
        assert purchase < first_statement <= purchase + timedelta(days=31)
    same = set(cycle.due_dates(first, term)) & set(cycle.due_dates(second, term))
    months_apart = abs((first.year - second.year) * 12 + first.month - second.month)
    if months_apart + 1 < term:
        assert same


@given(statement_days, days)
def test_every_day_lies_in_exactly_the_period_that_bills_it(statement_day, day):
    cycle = BillingCycle(statement_day)
    period = cycle.period_of(day)
    assert day in period
    assert period.end == cycle.statement_date_after(day)
    assert period.start.day == period.end.day == statement_day
    assert 28 <= (period.end - period.start).days <= 31
    assert cycle.statement_date_on_or_before(day) == period.start


def test_the_default_statement_day_is_the_opening_day_capped_at_28():
    assert default_statement_day(date(2027, 3, 9)) == 9
    assert default_statement_day(date(2027, 3, 31)) == 28


@pytest.mark.parametrize(("statement_day", "due"), [(0, 20), (29, 20), (5, 0), (5, 28)])
def test_a_cycle_outside_its_bounds_is_refused(statement_day, due):
    with pytest.raises(InvariantViolation):
        BillingCycle(statement_day, due)
