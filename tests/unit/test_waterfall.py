"""The waterfall, payoff and refunds: every fen accounted for, in the order the design
gives, never beyond what is owed."""

from __future__ import annotations

import uuid
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.calendar import add_months
from server.domain.errors import InvariantViolation
from server.domain.loans import InstallmentState
from server.domain.pricing import RepaymentMethod, build_plan
from server.domain.waterfall import (
    RECOVERY_ORDER,
    ChargedOff,
    Component,
    LoanBalance,
    allocate,
    apply,
    apply_refund,
    payoff_minor,
    refund,
)

START = date(2027, 1, 15)
LOAN = uuid.UUID(int=1)


def schedule(principal=300_000, term=3, rate=60, method=RepaymentMethod.FLAT_FEE, start=START):
    plan = build_plan(principal, term, method, rate, start, tuple(add_months(start, k) for k in range(1, term + 1)))
    return tuple(InstallmentState(i.sequence, i.due_date, i.principal_minor, i.fee_minor) for i in plan.installments)


def one(installments, loan_id=LOAN):
    return LoanBalance(loan_id, tuple(installments))


# 300,000 over 3 months, flat 0.6 %: each period 100,000 principal + 1,800 fee,
# due 2027-02-15, 03-15, 04-15.

def test_paying_one_installment_exactly_on_its_due_date():
    result = allocate([one(schedule())], 101_800, date(2027, 2, 15))
    assert [(a.sequence, a.component, a.amount_minor) for a in result.allocations] == [
        (1, Component.FEE, 1_800), (1, Component.PRINCIPAL, 100_000)]
    assert result.unapplied_minor == 0 and result.waivers == ()


def test_paying_less_than_due_pays_the_fee_first():
    result = allocate([one(schedule())], 50_000, date(2027, 2, 10))
    assert [(a.component, a.amount_minor) for a in result.allocations] == [
        (Component.FEE, 1_800), (Component.PRINCIPAL, 48_200)]


def test_paying_more_than_due_prepays_the_next_principal_without_its_fee():
    result = allocate([one(schedule())], 150_000, date(2027, 2, 10))
    assert [(a.sequence, a.component, a.amount_minor) for a in result.allocations] == [
        (1, Component.FEE, 1_800), (1, Component.PRINCIPAL, 100_000), (2, Component.PRINCIPAL, 48_200)]
    assert result.waivers == ()  # period 2's principal is not repaid in full yet


def test_overdue_first_oldest_first_penalty_fee_principal():
    installments = list(schedule())
    installments[0] = InstallmentState(1, date(2027, 2, 15), 100_000, 1_800, penalty_minor=500)
    result = allocate([one(installments)], 103_000, date(2027, 3, 20))
    assert [(a.sequence, a.component, a.amount_minor) for a in result.allocations] == [
        (1, Component.PENALTY, 500), (1, Component.FEE, 1_800), (1, Component.PRINCIPAL, 100_000),
        (2, Component.FEE, 700)]


def test_early_payoff_waives_future_fees_and_equals_the_payoff_quote():
    loan = one(schedule())
    today = date(2027, 1, 20)
    quote = payoff_minor(loan, today)
    # Current period in full, then the principal of periods 2 and 3 without their fees.
    assert quote == 101_800 + 200_000
    result = allocate([loan], quote, today)
    assert result.unapplied_minor == 0
    assert [(w.sequence, w.amount_minor) for w in result.waivers] == [(2, 1_800), (3, 1_800)]
    after = apply(loan.installments, LOAN, result)
    assert all(i.owed_minor == 0 for i in after)


def test_overpaying_everything_leaves_the_rest_unapplied():
    result = allocate([one(schedule())], 400_000, date(2027, 1, 20))
    assert result.applied_minor == 301_800
    assert result.unapplied_minor == 98_200


def test_account_repayment_covers_the_oldest_loans_overdue_first():
    older = one(schedule(start=date(2026, 12, 1)), uuid.UUID(int=1))
    newer = one(schedule(start=date(2027, 1, 1)), uuid.UUID(int=2))
    result = allocate([older, newer], 101_800, date(2027, 1, 5))
    assert {a.loan_id for a in result.allocations} == {uuid.UUID(int=1)}


loan_amounts = st.integers(1_000, 10_000_000)


@st.composite
def loans_with_payments(draw):
    loans = []
    for n in range(draw(st.integers(1, 3))):
        term = draw(st.sampled_from((1, 3, 6, 12)))
        start = date(2027, 1, draw(st.integers(1, 28)))
        rows = []
        for i in schedule(draw(loan_amounts), term, draw(st.integers(0, 150)),
                          draw(st.sampled_from(list(RepaymentMethod))), start):
            penalty = draw(st.integers(0, 2_000))
            paid_principal = draw(st.integers(0, i.principal_minor))
            rows.append(InstallmentState(i.sequence, i.due_date, i.principal_minor, i.fee_minor,
                                         paid_principal, draw(st.integers(0, i.fee_minor)), penalty,
                                         draw(st.integers(0, penalty))))
        loans.append(one(rows, uuid.UUID(int=n + 1)))
    return loans


@given(loans=loans_with_payments(), amount=st.integers(0, 30_000_000),
       today=st.dates(date(2027, 1, 1), date(2028, 3, 1)))
@settings(max_examples=300)
def test_every_fen_is_applied_or_left_and_nothing_beyond_what_is_owed(loans, amount, today):
    result = allocate(loans, amount, today)
    assert result.applied_minor + result.unapplied_minor == amount
    owed = sum(i.owed_minor for loan in loans for i in loan.installments)
    assert result.applied_minor <= owed
    assert result.unapplied_minor == 0 or result.applied_minor + result.waived_minor == owed
    for loan in loans:
        after = apply(loan.installments, loan.loan_id, result)
        for before, now in zip(loan.installments, after, strict=True):
            assert 0 <= now.owed_minor <= before.owed_minor
            assert now.principal_paid_minor <= now.principal_minor
            assert now.fee_paid_minor <= now.fee_minor


@given(loans=loans_with_payments(), amount=st.integers(1, 30_000_000),
       today=st.dates(date(2027, 1, 1), date(2028, 3, 1)))
@settings(max_examples=200)
def test_nothing_goes_to_a_later_step_while_an_earlier_one_is_owed(loans, amount, today):
    result = allocate(loans, amount, today)
    state = {(loan.loan_id, i.sequence): i for loan in loans for i in loan.installments}
    overdue = [k for k, i in state.items() if i.due_date < today and i.owed_minor > 0]
    not_overdue_paid = [a for a in result.allocations if state[(a.loan_id, a.sequence)].due_date >= today]
    if not_overdue_paid:
        # Every overdue installment was paid in full before anything else got a fen.
        owed_overdue = sum(state[k].owed_minor for k in overdue)
        paid_to_overdue = sum(a.amount_minor for a in result.allocations
                              if state[(a.loan_id, a.sequence)].due_date < today)
        assert paid_to_overdue == owed_overdue


@given(loans=loans_with_payments(), today=st.dates(date(2027, 1, 1), date(2028, 3, 1)))
@settings(max_examples=200)
def test_paying_the_payoff_quote_settles_the_loan_with_nothing_left(loans, today):
    loan = loans[0]
    quote = payoff_minor(loan, today)
    result = allocate([loan], quote, today)
    assert result.unapplied_minor == 0
    assert all(i.owed_minor == 0 for i in apply(loan.installments, loan.loan_id, result))


def test_refund_before_any_repayment_takes_principal_from_the_last_installment_and_shrinks_future_fees():
    installments = schedule()
    result = refund(installments, 150_000, date(2027, 1, 20))
    after = apply_refund(installments, result)
    assert [i.principal_minor for i in after] == [100_000, 50_000, 0]
    # Half the principal is left, so each future fee halves.
    assert [i.fee_minor for i in after] == [900, 900, 900]
    assert result.returned_minor == 0 and not result.cancels_loan
    assert result.unpaid_principal_cut_minor == 150_000


def test_refund_after_some_repayments_returns_what_was_paid_beyond_the_new_amounts():
    paid = list(schedule())
    paid[0] = InstallmentState(1, date(2027, 2, 15), 100_000, 1_800, 100_000, 1_800)
    result = refund(paid, 250_000, date(2027, 2, 20))
    after = apply_refund(paid, result)
    assert [i.principal_minor for i in after] == [50_000, 0, 0]
    # Period 1 is past due: its fee stays. Periods 2 and 3 keep a sixth of their fee.
    assert [i.fee_minor for i in after] == [1_800, 300, 300]
    assert result.returned_minor == 50_000
    assert after[0].principal_paid_minor == 50_000


def test_a_full_refund_after_full_repayment_returns_everything():
    paid = tuple(InstallmentState(i.sequence, i.due_date, i.principal_minor, i.fee_minor, i.principal_minor,
                                  i.fee_minor) for i in schedule())
    result = refund(paid, 300_000, date(2027, 5, 1))
    assert result.cancels_loan
    assert result.returned_minor == 305_400
    assert all(i.amount_minor == 0 and i.paid_minor == 0 for i in apply_refund(paid, result))


@given(loans=loans_with_payments(), data=st.data(), today=st.dates(date(2027, 1, 1), date(2028, 3, 1)))
@settings(max_examples=200)
def test_refunds_keep_every_amount_whole(loans, data, today):
    installments = loans[0].installments
    principal = sum(i.principal_minor for i in installments)
    amount = data.draw(st.integers(1, principal))
    result = refund(installments, amount, today)
    after = apply_refund(installments, result)
    assert sum(i.principal_minor for i in after) == principal - amount
    assert result.principal_cut_minor == amount
    paid_before = sum(i.paid_minor for i in installments)
    assert sum(i.paid_minor for i in after) + result.returned_minor == paid_before
    for i in after:
        assert 0 <= i.principal_paid_minor <= i.principal_minor
        assert 0 <= i.fee_paid_minor <= i.fee_minor
        assert 0 <= i.penalty_paid_minor <= i.penalty_minor
    if amount == principal:
        assert all(i.owed_minor == 0 and i.paid_minor == 0 for i in after)


def test_a_refund_above_the_principal_left_is_a_bug_the_caller_must_prevent():
    with pytest.raises(InvariantViolation):
        refund(schedule(), 300_001, START)


def test_a_split_payment_costs_no_more_than_one_payment_of_the_same_total():
    """Once the period the customer is in is paid, the next period is still future: its
    principal is prepaid and its fee waived, not charged as if it were current."""
    loan = one(schedule())
    today = date(2027, 1, 20)
    once = allocate([loan], 201_800, today)
    first = allocate([loan], 101_800, today)
    after_first = one(apply(loan.installments, LOAN, first))
    second = allocate([after_first], 100_000, today)
    assert [(a.sequence, a.component) for a in second.allocations] == [(2, Component.PRINCIPAL)]
    assert second.waived_minor == once.waived_minor == 1_800
    assert payoff_minor(after_first, today) == 200_000


def test_a_payment_that_ends_where_a_repaid_period_begins_still_waives_its_fee():
    """Period 3 has no principal left after a refund but still carries its fee: paying
    exactly the payoff quote reaches it, so its fee is waived and the loan is settled."""
    installments = apply_refund(schedule(), refund(schedule(), 150_000, date(2027, 1, 20)))
    today = date(2027, 1, 25)
    quote = payoff_minor(one(installments), today)
    assert quote == 100_900 + 50_000
    result = allocate([one(installments)], quote, today)
    assert [(w.sequence, w.amount_minor) for w in result.waivers] == [(2, 900), (3, 900)]
    assert all(i.owed_minor == 0 for i in apply(installments, LOAN, result))


def test_a_payment_that_runs_out_waives_nothing_beyond_where_it_reached():
    installments = apply_refund(schedule(), refund(schedule(), 150_000, date(2027, 1, 20)))
    # Principal [100000, 50000, 0], fees [900, 900, 900]: one fen must not waive period 3's fee.
    result = allocate([one(installments)], 1, date(2027, 1, 25))
    assert result.waivers == ()


# -- step 3: written-off debt of charged-off loans ------------------------------------------

GONE = uuid.UUID(int=99)


def test_written_off_debt_comes_after_what_is_due_and_before_early_repayment():
    """Period 1 overdue, period 2 current, period 3 in the future: the charged-off loan's
    debt is paid after periods 1 and 2, and only then does period 3's principal get a fen."""
    installments = list(schedule())
    debt = ChargedOff(GONE, principal_minor=50_000, fee_minor=600, penalty_minor=900)
    result = allocate([one(installments)], 101_800 * 2 + 51_500 + 1_000, date(2027, 3, 10), [debt])
    assert [(a.sequence, a.component, a.amount_minor) for a in result.allocations] == [
        (1, Component.FEE, 1_800), (1, Component.PRINCIPAL, 100_000),
        (2, Component.FEE, 1_800), (2, Component.PRINCIPAL, 100_000), (3, Component.PRINCIPAL, 1_000)]
    assert [(r.loan_id, r.component, r.amount_minor) for r in result.recoveries] == [
        (GONE, Component.PRINCIPAL, 50_000), (GONE, Component.PENALTY, 900), (GONE, Component.FEE, 600)]
    assert result.recovered_minor == 51_500
    assert result.applied_minor == 101_800 * 2 + 51_500 + 1_000


def test_a_payment_on_written_off_debt_alone_recovers_principal_first_and_leaves_the_rest():
    debts = [ChargedOff(uuid.UUID(int=7), 1_000, 10, 20), ChargedOff(uuid.UUID(int=8), 500, 0, 0)]
    result = allocate([], 1_200, date(2027, 9, 1), debts)
    assert [(r.loan_id.int, r.component, r.amount_minor) for r in result.recoveries] == [
        (7, Component.PRINCIPAL, 1_000), (7, Component.PENALTY, 20), (7, Component.FEE, 10),
        (8, Component.PRINCIPAL, 170)]
    assert result.unapplied_minor == 0
    surplus = allocate([], 2_000, date(2027, 9, 1), debts)
    assert surplus.recovered_minor == 1_530 and surplus.unapplied_minor == 470


def test_a_negative_written_off_debt_is_a_bug():
    with pytest.raises(InvariantViolation):
        allocate([], 100, date(2027, 9, 1), [ChargedOff(GONE, -1, 0, 0)])


@st.composite
def written_off_debts(draw):
    return [ChargedOff(uuid.UUID(int=100 + n), draw(st.integers(0, 5_000_000)), draw(st.integers(0, 100_000)),
                       draw(st.integers(0, 200_000))) for n in range(draw(st.integers(0, 3)))]


@given(loans=loans_with_payments(), debts=written_off_debts(), amount=st.integers(0, 40_000_000),
       today=st.dates(date(2027, 1, 1), date(2028, 3, 1)))
@settings(max_examples=300)
def test_written_off_debt_is_recovered_in_its_place_and_never_beyond_what_is_owed(loans, debts, amount, today):
    result = allocate(loans, amount, today, debts)
    assert result.applied_minor + result.unapplied_minor == amount
    owed = {d.loan_id: {Component.PRINCIPAL: d.principal_minor, Component.FEE: d.fee_minor,
                        Component.PENALTY: d.penalty_minor} for d in debts}
    for loan_id, by_component in owed.items():
        for component, amount_owed in by_component.items():
            assert 0 <= result.recovered(loan_id, component) <= amount_owed
    state = {(loan.loan_id, i.sequence): i for loan in loans for i in loan.installments}
    current: dict[uuid.UUID, int] = {}
    for (loan_id, sequence), i in sorted(state.items(), key=lambda kv: (kv[1].due_date, kv[0][1])):
        if i.due_date >= today:
            current.setdefault(loan_id, sequence)
    due_now = {k for k, i in state.items() if i.due_date < today or current.get(k[0]) == k[1]}
    if result.recovered_minor:
        # Everything overdue and current was paid before the written-off debt got a fen.
        assert all(sum(a.amount_minor for a in result.allocations if (a.loan_id, a.sequence) == k)
                   == state[k].owed_minor for k in due_now)
    total_debt = sum(d.owed_minor for d in debts)
    future_paid = sum(a.amount_minor for a in result.allocations if (a.loan_id, a.sequence) not in due_now)
    if future_paid:
        # Early repayment only once every written-off fen is recovered.
        assert result.recovered_minor == total_debt
    if result.unapplied_minor:
        assert result.recovered_minor == total_debt
    # Within each loan, a later component only once the earlier ones are recovered in full.
    for debt in debts:
        reached = [c for c in RECOVERY_ORDER if result.recovered(debt.loan_id, c)]
        for component in RECOVERY_ORDER[:RECOVERY_ORDER.index(reached[-1])] if reached else ():
            assert result.recovered(debt.loan_id, component) == owed[debt.loan_id][component]


@given(loans=loans_with_payments(), amount=st.integers(0, 30_000_000),
       today=st.dates(date(2027, 1, 1), date(2028, 3, 1)))
@settings(max_examples=100)
def test_without_written_off_debt_the_waterfall_is_as_before(loans, amount, today):
    assert allocate(loans, amount, today, []) == allocate(loans, amount, today)
    assert allocate(loans, amount, today).recoveries == ()
