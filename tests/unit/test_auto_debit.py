"""The rules of auto-debit: the amount due (checked against the waterfall, which is what
Repay runs), the due date a pass tries, and the schedule of tries after a failure."""

from __future__ import annotations

import uuid
from datetime import date, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from server.domain import auto_debit, waterfall
from server.domain.auto_debit import MAX_ATTEMPTS, Attempt, amount_due, due_date_in_reach, next_attempt, retry_at
from server.domain.loans import InstallmentState

SHANGHAI = timezone(timedelta(hours=8))
DUE = date(2027, 3, 15)


def _at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=SHANGHAI)


@st.composite
def schedules(draw):
    """A loan of 1..6 monthly installments, some paid in part, some with penalties."""
    count = draw(st.integers(1, 6))
    rows = []
    for n in range(count):
        due_date = DUE + timedelta(days=30 * (n - 2))
        principal = draw(st.integers(1, 100_000))
        fee = draw(st.integers(0, 5_000))
        penalty = draw(st.integers(0, 3_000))
        principal_paid, fee_paid = draw(st.integers(0, principal)), draw(st.integers(0, fee))
        if due_date > DUE and principal_paid == principal:
            # A future period whose principal was repaid early had its fee waived then
            # (waterfall step 4): the books never hold one that still owes its fee.
            fee = fee_paid
        rows.append(InstallmentState(
            sequence=n + 1, due_date=due_date, principal_minor=principal, fee_minor=fee,
            principal_paid_minor=principal_paid, fee_paid_minor=fee_paid,
            penalty_minor=penalty, penalty_paid_minor=draw(st.integers(0, penalty))))
    return tuple(rows)


@given(schedules())
def test_the_amount_due_is_what_the_waterfall_gives_to_overdue_and_current_installments(installments):
    loan = waterfall.LoanBalance(uuid.uuid4(), installments)
    due = amount_due(installments, DUE)
    allocated = waterfall.allocate([loan], due, DUE)
    after = {i.sequence: i for i in waterfall.apply(installments, loan.loan_id, allocated)}
    # Paying it settles everything due by today and nothing beyond.
    assert allocated.applied_minor == due and allocated.unapplied_minor == 0
    assert all(after[i.sequence].owed_minor == 0 for i in installments if i.due_date <= DUE)
    assert all(after[i.sequence] == i for i in installments if i.due_date > DUE)


def test_the_amount_due_leaves_out_future_installments_and_counts_unpaid_penalties():
    installments = (
        InstallmentState(1, DUE - timedelta(days=30), 10_000, 60, principal_paid_minor=4_000, penalty_minor=90,
                         penalty_paid_minor=30),
        InstallmentState(2, DUE, 10_000, 60),
        InstallmentState(3, DUE + timedelta(days=30), 10_000, 60),
    )
    assert amount_due(installments, DUE) == 6_000 + 60 + 60 + 10_060
    assert amount_due(installments, DUE - timedelta(days=31)) == 0


def test_the_due_date_tried_is_the_latest_one_in_reach():
    dates = [DUE - timedelta(days=30), DUE, DUE + timedelta(days=30)]
    assert due_date_in_reach(dates, DUE) == DUE
    assert due_date_in_reach(dates, DUE + timedelta(days=auto_debit.REACH_DAYS - 1)) == DUE
    assert due_date_in_reach(dates, DUE + timedelta(days=auto_debit.REACH_DAYS)) is None
    assert due_date_in_reach(dates, DUE - timedelta(days=1)) is None


def test_the_first_try_waits_for_the_morning_of_the_due_date():
    assert next_attempt(DUE, [], _at(DUE, 7, 59), 8) is None
    assert next_attempt(DUE, [], _at(DUE, 8), 8) == 1
    assert next_attempt(DUE, [], _at(DUE + timedelta(days=1), 6), 8) == 1
    assert next_attempt(DUE, [], _at(DUE, 10), 11) is None


def test_a_try_in_flight_or_paid_stops_further_tries():
    late = _at(DUE + timedelta(days=2), 12)
    assert next_attempt(DUE, [Attempt(1, "REQUESTED", None)], late, 8) is None
    assert next_attempt(DUE, [Attempt(1, "SUCCEEDED", _at(DUE, 8))], late, 8) is None
    failed_then_paid = [Attempt(1, "FAILED", _at(DUE, 8)), Attempt(2, "SUCCEEDED", _at(DUE, 12))]
    assert next_attempt(DUE, failed_then_paid, late, 8) is None


def test_a_failed_try_is_tried_again_four_hours_later_then_the_next_morning_then_no_more():
    first = Attempt(1, "FAILED", _at(DUE, 8, 1))
    assert retry_at(1, _at(DUE, 8, 1), 8) == _at(DUE, 12, 1)
    assert next_attempt(DUE, [first], _at(DUE, 12), 8) is None
    assert next_attempt(DUE, [first], _at(DUE, 12, 1), 8) == 2
    second = Attempt(2, "FAILED", _at(DUE, 12, 2))
    assert retry_at(2, _at(DUE, 12, 2), 8) == _at(DUE + timedelta(days=1), 8)
    assert next_attempt(DUE, [second, first], _at(DUE, 23, 59), 8) is None
    assert next_attempt(DUE, [first, second], _at(DUE + timedelta(days=1), 8), 8) == 3
    third = Attempt(3, "FAILED", _at(DUE + timedelta(days=1), 8, 1))
    assert MAX_ATTEMPTS == 3
    assert retry_at(3, _at(DUE + timedelta(days=1), 8, 1), 8) is None
    assert next_attempt(DUE, [first, second, third], _at(DUE + timedelta(days=9), 9), 8) is None


@given(st.integers(1, MAX_ATTEMPTS - 1), st.integers(0, 23), st.integers(0, 59), st.integers(0, 23))
def test_a_retry_is_always_later_than_the_failure(attempt, hour, minute, morning_hour):
    failed_at = _at(DUE, hour, minute)
    when = retry_at(attempt, failed_at, morning_hour)
    assert when is not None and when > failed_at
