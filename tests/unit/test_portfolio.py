"""The book as of a day (server/domain/portfolio.py): principal, days past due, vintages
and roll rates from dated bookings."""

from __future__ import annotations

import uuid
from datetime import date, timedelta

from hypothesis import given
from hypothesis import strategies as st

from server.domain.loans import Bucket, InstallmentState, days_past_due
from server.domain.portfolio import (
    AccountHistory,
    BookBuilder,
    Booked,
    BucketChange,
    InstallmentHistory,
    LoanHistory,
    complete_months,
    not_cured,
    share_bps,
)
from server.domain.pricing import Grade

JAN10 = date(2027, 1, 10)


def loan(principal=300_000, captured_on=JAN10, payments=(), penalties=(), charged_off=None, refunds=()):
    """Three installments of 100,000 + 1,800 due on the 10th of February, March and April;
    `payments` are (day, sequence, amount, principal part)."""
    installments = tuple(InstallmentHistory(
        k, date(2027, 1 + k, 10), principal // 3 + 1_800,
        tuple(Booked(d, a) for d, s, a in penalties if s == k),
        tuple(Booked(d, a) for d, s, a, _ in payments if s == k)) for k in (1, 2, 3))
    changes = (Booked(captured_on, principal), *(Booked(d, -p) for d, _, _, p in payments if p),
               *(Booked(d, -a) for d, a in refunds))
    return LoanHistory(uuid.uuid4(), captured_on, principal, installments, changes, charged_off)


def test_principal_is_the_receivable_at_the_end_of_the_day():
    paid = loan(payments=[(date(2027, 2, 10), 1, 101_800, 100_000)], refunds=[(date(2027, 2, 20), 50_000)])
    assert paid.principal_at(date(2027, 1, 9)) == 0  # not captured yet: nothing booked
    assert paid.principal_at(JAN10) == 300_000
    assert paid.principal_at(date(2027, 2, 9)) == 300_000
    assert paid.principal_at(date(2027, 2, 10)) == 200_000
    assert paid.principal_at(date(2027, 2, 20)) == 150_000
    gone = loan(charged_off=Booked(date(2027, 8, 31), 300_000))
    assert gone.principal_at(date(2027, 8, 30)) == 300_000
    assert gone.principal_at(date(2027, 8, 31)) == 0


def test_days_past_due_count_from_the_oldest_installment_unpaid_at_the_end_of_the_day():
    late = loan(payments=[(date(2027, 3, 1), 1, 101_800, 100_000)])
    assert late.days_past_due_at(date(2027, 2, 10)) == 0  # due today is not late
    assert late.days_past_due_at(date(2027, 2, 11)) == 1
    assert late.days_past_due_at(date(2027, 2, 28)) == 18
    assert late.days_past_due_at(date(2027, 3, 1)) == 0  # paid that day
    assert late.days_past_due_at(date(2027, 3, 11)) == 1  # the second installment now
    # A penalty booked on a paid installment keeps it unpaid until the penalty is paid.
    penalised = loan(payments=[(date(2027, 3, 1), 1, 101_800, 100_000), (date(2027, 3, 5), 1, 90, 0)],
                     penalties=[(date(2027, 3, 1), 1, 90)])
    assert penalised.days_past_due_at(date(2027, 3, 1)) == 19
    assert penalised.days_past_due_at(date(2027, 3, 4)) == 22
    assert penalised.days_past_due_at(date(2027, 3, 5)) == 0


def test_a_vintage_counts_30_or_more_days_late_and_what_was_written_off():
    never_paid = loan(charged_off=Booked(date(2027, 8, 31), 300_000))
    assert never_paid.bad_principal_at(date(2027, 3, 11)) == 0  # 29 days
    assert never_paid.bad_principal_at(date(2027, 3, 12)) == 300_000  # 30 days
    assert never_paid.bad_principal_at(date(2027, 9, 30)) == 300_000  # written off
    paid_late = loan(payments=[(date(2027, 3, 20), 1, 101_800, 100_000)])
    assert paid_late.bad_principal_at(date(2027, 3, 19)) == 300_000
    assert paid_late.bad_principal_at(date(2027, 3, 20)) == 0


def test_an_account_is_in_the_bucket_last_recorded_by_the_day():
    account = AccountHistory(uuid.uuid4(), Grade.B, (loan(),), (
        BucketChange(date(2027, 2, 28), Bucket.M1), BucketChange(date(2027, 3, 31), Bucket.M2),
        BucketChange(date(2027, 3, 31), Bucket.M1)))
    assert account.bucket_at(date(2027, 2, 27)) is Bucket.CURRENT
    assert account.bucket_at(date(2027, 3, 30)) is Bucket.M1
    assert account.bucket_at(date(2027, 3, 31)) is Bucket.M1  # the later of the day's two records


def test_complete_months_end_by_the_day():
    assert complete_months(date(2027, 9, 30), 3) == (date(2027, 7, 1), date(2027, 8, 1), date(2027, 9, 1))
    assert complete_months(date(2027, 9, 29), 2) == (date(2027, 7, 1), date(2027, 8, 1))
    assert complete_months(date(2027, 1, 15), 1) == (date(2026, 12, 1),)


def test_the_book_of_two_accounts_by_hand():
    good = AccountHistory(uuid.uuid4(), Grade.A, (loan(payments=[
        (date(2027, 2, 10), 1, 101_800, 100_000), (date(2027, 3, 10), 2, 101_800, 100_000)]),))
    bad = AccountHistory(uuid.uuid4(), Grade.D, (loan(principal=150_000),), (
        BucketChange(date(2027, 2, 28), Bucket.M1), BucketChange(date(2027, 3, 31), Bucket.M2)))
    book = BookBuilder(date(2027, 3, 31), roll_rate_months=2).add_all([good, bad]).build()
    assert [(e.grade, e.bucket, e.loans, e.principal_minor) for e in book.exposure] == [
        (Grade.A, Bucket.CURRENT, 1, 100_000), (Grade.D, Bucket.M2, 1, 150_000)]
    assert book.live_loans == 2 and book.outstanding_principal_minor == 250_000
    (january,) = book.vintages
    assert (january.capture_month, january.loans, january.principal_minor) == (date(2027, 1, 1), 2, 450_000)
    # The bad loan is 49 days late on 31 March, 18 on 28 February.
    assert [(p.months_on_book, p.bad_principal_minor, p.share_bps) for p in january.points] == [
        (0, 0, 0), (1, 0, 0), (2, 150_000, 3_333)]
    assert [(r.month, r.from_bucket, r.to_bucket, r.principal_minor, r.from_principal_minor)
            for r in book.roll_rates] == [
        (date(2027, 2, 1), Bucket.CURRENT, Bucket.CURRENT, 300_000, 450_000),
        (date(2027, 2, 1), Bucket.CURRENT, Bucket.M1, 150_000, 450_000),
        (date(2027, 3, 1), Bucket.CURRENT, Bucket.CURRENT, 200_000, 200_000),
        (date(2027, 3, 1), Bucket.M1, Bucket.M2, 150_000, 150_000)]
    assert book.roll_rates[1].share_bps == 3_333
    assert not_cured(book.pooled_roll_rates(), Bucket.M1) == (150_000, 150_000)
    assert not_cured(book.pooled_roll_rates(), Bucket.CURRENT) == (650_000, 650_000)


def test_share_in_basis_points_rounds_halves_up():
    assert share_bps(1, 3) == 3_333 and share_bps(2, 3) == 6_667 and share_bps(1, 20_000) == 1
    assert share_bps(5, 0) == 0


# -- properties ------------------------------------------------------------------------------

days = st.integers(min_value=0, max_value=200).map(lambda n: JAN10 + timedelta(days=n))


@st.composite
def histories(draw):
    """Three installments, payments and penalties on random days."""
    amounts = draw(st.lists(st.integers(1, 50_000), min_size=3, max_size=3))
    installments = []
    for k, amount in enumerate(amounts, start=1):
        penalties = draw(st.lists(st.tuples(days, st.integers(1, 500)), max_size=3))
        payments = draw(st.lists(st.tuples(days, st.integers(1, 30_000)), max_size=3))
        installments.append(InstallmentHistory(k, JAN10 + timedelta(days=31 * k), amount,
                                               tuple(Booked(d, a) for d, a in penalties),
                                               tuple(Booked(d, a) for d, a in payments)))
    return LoanHistory(uuid.uuid4(), JAN10, sum(amounts), tuple(installments), (Booked(JAN10, sum(amounts)),))


@given(histories(), days)
def test_days_past_due_as_of_a_day_are_todays_rule_on_that_days_state(history, day):
    """The state of each installment at the end of `day` (what was booked by then),
    handed to the rule the service applies to today, gives the same days past due."""
    states = []
    for i in history.installments:
        paid = sum(p.amount_minor for p in i.payments if p.on <= day)
        penalty = sum(p.amount_minor for p in i.penalties if p.on <= day)
        # All of a payment counted as principal: days past due only look at what is owed.
        states.append(InstallmentState(i.sequence, i.due_date, i.amount_minor, 0, paid, 0, penalty, 0))
    assert history.days_past_due_at(day) == days_past_due(states, day)


@given(st.lists(st.tuples(histories(), st.sampled_from(list(Grade)),
                          st.lists(st.tuples(days, st.sampled_from(list(Bucket))), max_size=4)),
                min_size=1, max_size=6), days)
def test_the_sums_hold_together(accounts, as_of):
    built = [AccountHistory(uuid.uuid4(), grade, (history,), tuple(BucketChange(d, b) for d, b in sorted(changes)))
             for history, grade, changes in accounts]
    book = BookBuilder(as_of, roll_rate_months=4).add_all(built).build()
    assert book.outstanding_principal_minor == sum(a.principal_at(as_of) for a in built)
    assert book.live_loans == sum(1 for a in built if a.principal_at(as_of) > 0)
    rows: dict = {}
    for r in book.roll_rates:
        rows.setdefault((r.month, r.from_bucket), []).append(r)
    for row in rows.values():
        assert sum(r.principal_minor for r in row) == row[0].from_principal_minor
        assert abs(sum(r.share_bps for r in row) - 10_000) <= len(row)
    for v in book.vintages:
        assert [p.months_on_book for p in v.points] == list(range(len(v.points)))
        assert all(p.observed_on <= as_of for p in v.points)
