"""Schedules sum exactly; the APR agrees with numpy-financial's IRR; the product table
offers what the policy says and refuses prices above the ceiling."""

from __future__ import annotations

import calendar
from datetime import date

import numpy as np
import numpy_financial as npf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.calendar import add_months
from server.domain.pricing import (
    DEFAULT_PRODUCT_TABLE,
    TERMS_MONTHS,
    Grade,
    Product,
    ProductTable,
    RepaymentMethod,
    apr_bps,
    build_plan,
)

START = date(2027, 1, 31)
methods = st.sampled_from(list(RepaymentMethod))
terms = st.sampled_from(TERMS_MONTHS)
rates = st.integers(min_value=0, max_value=250)


def oracle_apr_bps(principal: int, payments: list[int]) -> float:
    return float(npf.irr(np.array([-principal] + payments, dtype=float))) * 12 * 10_000


@given(principal=st.integers(1, 10**11), term=terms, method=methods, rate=rates)
@settings(max_examples=400)
def test_every_schedule_sums_exactly_to_its_totals(principal, term, method, rate):
    plan = build_plan(principal, term, method, rate, START)
    assert len(plan.installments) == term
    assert sum(i.principal_minor for i in plan.installments) == principal
    assert sum(i.amount_minor for i in plan.installments) == plan.total_repayment_minor
    assert plan.total_repayment_minor == principal + plan.total_fee_minor
    assert all(i.principal_minor >= 0 and i.fee_minor >= 0 for i in plan.installments)
    assert [i.sequence for i in plan.installments] == list(range(1, term + 1))


@given(principal=st.integers(10_000, 10**10), term=terms, method=methods, rate=rates)
@settings(max_examples=300, deadline=None)
def test_apr_agrees_with_numpy_financial_irr_within_one_bps(principal, term, method, rate):
    plan = build_plan(principal, term, method, rate, START)
    expected = oracle_apr_bps(principal, [i.amount_minor for i in plan.installments])
    assert abs(plan.apr_bps - expected) <= 1


@pytest.mark.parametrize("grade", list(Grade))
@pytest.mark.parametrize("amount", [10_000, 129_900, 600_000, 5_000_000, 123_456_789])
def test_every_offered_plan_of_the_product_table_discloses_an_exact_apr(grade, amount):
    offers = DEFAULT_PRODUCT_TABLE.offers(amount, grade)
    assert offers, "term 1 is offered to every grade"
    for offer in offers:
        plan = build_plan(amount, offer.product.term_months, offer.product.method, offer.monthly_rate_bps, START)
        expected = oracle_apr_bps(amount, [i.amount_minor for i in plan.installments])
        assert abs(plan.apr_bps - expected) <= 1
        assert plan.apr_bps <= 2400


def test_flat_fee_charges_the_original_principal_times_the_rate_each_period():
    plan = build_plan(120_000, 12, RepaymentMethod.FLAT_FEE, 60, START)
    assert [i.fee_minor for i in plan.installments] == [720] * 12
    assert [i.principal_minor for i in plan.installments] == [10_000] * 12
    assert plan.total_fee_minor == 8_640


def test_flat_fee_last_period_absorbs_the_principal_remainder():
    plan = build_plan(100_001, 3, RepaymentMethod.FLAT_FEE, 50, START)
    assert [i.principal_minor for i in plan.installments] == [33_333, 33_333, 33_335]
    # 100001 x 0.5 % = 500.005 fen, rounded half-up per line
    assert [i.fee_minor for i in plan.installments] == [500, 500, 500]


@given(principal=st.integers(10_000, 10**10), term=st.sampled_from((3, 6, 12, 24)), rate=st.integers(1, 250))
@settings(max_examples=200)
def test_declining_balance_pays_the_annuity_of_numpy_financial(principal, term, rate):
    plan = build_plan(principal, term, RepaymentMethod.DECLINING_BALANCE, rate, START)
    payment = -npf.pmt(rate / 10_000, term, principal)
    for installment in plan.installments[:-1]:
        assert abs(installment.amount_minor - payment) <= 0.5 + 1e-6
    # The last period settles the balance left by rounding: within a few fen of the annuity.
    assert abs(plan.installments[-1].amount_minor - payment) <= term
    # Interest is on the remaining balance, so it falls period by period.
    fees = [i.fee_minor for i in plan.installments]
    assert fees == sorted(fees, reverse=True)


def test_declining_balance_worked_example():
    # 1,000.00 over 3 months at 1 % a month: the textbook annuity of 340.02.
    plan = build_plan(100_000, 3, RepaymentMethod.DECLINING_BALANCE, 100, START)
    assert [(i.principal_minor, i.fee_minor) for i in plan.installments] == [
        (33_002, 1_000), (33_332, 670), (33_666, 337)]
    assert plan.apr_bps == 1200


def test_a_free_plan_has_zero_apr_and_equal_principal():
    plan = build_plan(1_000, 1, RepaymentMethod.FLAT_FEE, 0, START)
    assert plan.apr_bps == 0 and plan.total_fee_minor == 0
    assert plan.installments[0].due_date == date(2027, 2, 28)


def test_due_dates_are_the_start_plus_k_months_clamped_to_the_month_end():
    plan = build_plan(600_000, 12, RepaymentMethod.FLAT_FEE, 50, date(2027, 8, 31))
    assert [i.due_date for i in plan.installments][:7] == [
        date(2027, 9, 30), date(2027, 10, 31), date(2027, 11, 30), date(2027, 12, 31),
        date(2028, 1, 31), date(2028, 2, 29), date(2028, 3, 31)]


@given(start=st.dates(date(2000, 1, 1), date(2090, 12, 31)), months=st.integers(0, 400))
def test_add_months_keeps_the_day_or_clamps_to_the_last(start, months):
    due = add_months(start, months)
    assert (due.year * 12 + due.month) - (start.year * 12 + start.month) == months
    assert due.day == min(start.day, calendar.monthrange(due.year, due.month)[1])


def test_longer_terms_need_larger_orders_and_riskier_grades_see_fewer():
    def terms_for(amount, grade):
        return sorted({o.product.term_months for o in DEFAULT_PRODUCT_TABLE.offers(amount, grade)})

    assert terms_for(5_000, Grade.A) == [1]
    assert terms_for(10_000, Grade.A) == [1, 3]
    assert terms_for(200_000, Grade.A) == [1, 3, 6, 12, 24]
    assert terms_for(200_000, Grade.C) == [1, 3, 6, 12]
    assert terms_for(200_000, Grade.D) == [1, 3, 6]
    assert terms_for(200_000, Grade.E) == [1, 3]


def test_a_product_table_above_the_cost_ceiling_is_refused():
    table = ProductTable([Product(12, RepaymentMethod.FLAT_FEE, 60_000, {Grade.A: 150})])
    with pytest.raises(ValueError, match="above the ceiling of 2400"):
        table.check_cost_ceiling(2400)
    table.check_cost_ceiling(3200)
    DEFAULT_PRODUCT_TABLE.check_cost_ceiling(2400)


def test_a_product_table_with_an_unknown_term_is_refused():
    with pytest.raises(ValueError, match="term 5"):
        ProductTable([Product(5, RepaymentMethod.FLAT_FEE, 1, {Grade.A: 10})])


def test_apr_is_monthly_irr_times_twelve_rounded_half_up():
    # 100.00 now against 2 x 51.00: monthly IRR 1.3245 %, 1589.4 bps a year.
    assert apr_bps(10_000, [5_100, 5_100]) == round(oracle_apr_bps(10_000, [5_100, 5_100]))


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1, max_value=10**9), terms, methods, st.integers(min_value=1, max_value=999))
def test_the_fast_apr_solve_rounds_exactly_as_the_forty_digit_one(principal, term, method, rate):
    """The float solve answers only away from a half basis point; it must never round
    differently from the Decimal solve it stands in for."""
    from server.domain.pricing import _apr_bps, _apr_bps_exact

    payments = tuple(i.amount_minor for i in build_plan(principal, term, method, rate, START).installments)
    if sum(payments) > principal:
        assert _apr_bps.__wrapped__(principal, payments) == _apr_bps_exact(principal, payments)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1, max_value=10**9), terms, st.integers(min_value=1, max_value=999))
def test_the_integer_annuity_schedule_is_the_exact_rational_one(principal, term, rate):
    """The schedule is computed in integers on the hot path; it must equal the same
    rule written with exact fractions."""
    from fractions import Fraction

    from server.domain.money import round_half_up
    from server.domain.pricing import _declining_balance_parts

    r = Fraction(rate, 10_000)
    payment = round_half_up(principal * r / (1 - (1 + r) ** -term))
    expected, balance = [], principal
    for k in range(1, term + 1):
        interest = round_half_up(balance * r)
        part = balance if k == term else min(max(payment - interest, 0), balance)
        expected.append((part, interest))
        balance -= part
    assert _declining_balance_parts(principal, term, rate) == expected
