"""Schedules sum exactly; the first period's fee is prorated by days; the APR of the
dated cash flows agrees with independent solvers (numpy-financial's IRR over daily
periods, and a bisection on the dated NPV); the product table offers what the policy
says and refuses prices above the ceiling on any calendar."""

from __future__ import annotations

import calendar
import math
from datetime import date

import numpy as np
import numpy_financial as npf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain.billing import BillingCycle
from server.domain.calendar import add_months
from server.domain.errors import InvariantViolation
from server.domain.pricing import (
    DEFAULT_PRODUCT_TABLE,
    TERMS_MONTHS,
    Grade,
    Product,
    ProductTable,
    RepaymentMethod,
    apr_bps,
    build_plan,
    ceiling_first_periods,
)
from tests.support import dated_apr_bps

START = date(2027, 1, 15)
methods = st.sampled_from(list(RepaymentMethod))
terms = st.sampled_from(TERMS_MONTHS)
rates = st.integers(min_value=0, max_value=250)
purchase_dates = st.dates(min_value=date(2026, 1, 1), max_value=date(2032, 12, 31))
cycles = st.builds(BillingCycle, st.integers(1, 28), st.integers(1, 27))


def monthly(start: date, term: int) -> tuple[date, ...]:
    """Due dates one calendar month apart from `start`: a first period of exactly one
    reference month, so nothing is prorated."""
    return tuple(add_months(start, k) for k in range(1, term + 1))


def plan_of(principal, term, method, rate, start=START, due_dates=None):
    return build_plan(principal, term, method, rate, start, due_dates or monthly(start, term))


def day_counts(plan, purchase: date) -> list[int]:
    return [(i.due_date - purchase).days for i in plan.installments]


def daily_irr_apr_bps(principal: int, payments: list[int], days: list[int]) -> float:
    """numpy-financial's IRR over one cash flow per day, turned into the same
    monthly-equivalent rate times 12."""
    flows = np.zeros(max(days) + 1)
    flows[0] = -principal
    for amount, t in zip(payments, days, strict=True):
        flows[t] += amount
    daily = float(npf.irr(flows))
    return ((1 + daily) ** (365 / 12) - 1) * 12 * 10_000


def test_the_two_oracles_agree_with_each_other_on_a_textbook_annuity():
    # 1,000.00 against 3 x 340.02 paid on days 30, 61 and 91.
    payments, days = [34_002, 34_002, 34_002], [30, 61, 91]
    assert abs(dated_apr_bps(100_000, payments, days) - daily_irr_apr_bps(100_000, payments, days)) < 0.01


@given(principal=st.integers(1, 10**11), term=terms, method=methods, rate=rates)
@settings(max_examples=400)
def test_every_schedule_sums_exactly_to_its_totals(principal, term, method, rate):
    plan = plan_of(principal, term, method, rate)
    assert len(plan.installments) == term
    assert sum(i.principal_minor for i in plan.installments) == principal
    assert sum(i.amount_minor for i in plan.installments) == plan.total_repayment_minor
    assert plan.total_repayment_minor == principal + plan.total_fee_minor
    assert all(i.principal_minor >= 0 and i.fee_minor >= 0 for i in plan.installments)
    assert [i.sequence for i in plan.installments] == list(range(1, term + 1))


@given(principal=st.integers(10_000, 10**10), term=terms, method=methods, rate=rates, purchase=purchase_dates,
       cycle=cycles)
@settings(max_examples=300, deadline=None)
def test_apr_agrees_with_the_dated_npv_root_within_one_bps(principal, term, method, rate, purchase, cycle):
    plan = build_plan(principal, term, method, rate, purchase, cycle.due_dates(purchase, term))
    expected = dated_apr_bps(principal, [i.amount_minor for i in plan.installments], day_counts(plan, purchase))
    assert abs(plan.apr_bps - expected) <= 1


@given(principal=st.integers(10_000, 10**9), term=st.sampled_from((1, 3, 6)), method=methods,
       rate=st.integers(1, 250), purchase=purchase_dates, cycle=cycles)
@settings(max_examples=60, deadline=None)
def test_apr_agrees_with_numpy_financial_irr_over_daily_periods(principal, term, method, rate, purchase, cycle):
    plan = build_plan(principal, term, method, rate, purchase, cycle.due_dates(purchase, term))
    expected = daily_irr_apr_bps(principal, [i.amount_minor for i in plan.installments], day_counts(plan, purchase))
    assert abs(plan.apr_bps - expected) <= 1


@given(principal=st.integers(1, 10**11), term=terms, method=methods, rate=rates, purchase=purchase_dates,
       cycle=cycles)
@settings(max_examples=300, deadline=None)
def test_a_plan_on_the_billing_cycle_falls_due_on_its_repayment_days_and_sums_exactly(
        principal, term, method, rate, purchase, cycle):
    due_dates = cycle.due_dates(purchase, term)
    plan = build_plan(principal, term, method, rate, purchase, due_dates)
    assert tuple(i.due_date for i in plan.installments) == due_dates
    assert sum(i.principal_minor for i in plan.installments) == principal
    assert plan.total_repayment_minor == sum(i.amount_minor for i in plan.installments)
    # Later periods are the monthly schedule's; only the first fee is by days.
    unprorated = plan_of(principal, term, method, rate, purchase)
    assert [(i.principal_minor, i.fee_minor) for i in plan.installments[1:]] == [
        (i.principal_minor, i.fee_minor) for i in unprorated.installments[1:]]
    assert plan.installments[0].principal_minor == unprorated.installments[0].principal_minor
    first_days = (due_dates[0] - purchase).days
    reference_days = (due_dates[0] - add_months(due_dates[0], -1)).days
    # The first fee is the monthly one scaled by days over the reference month, half-up.
    # Both methods: the original principal (the first period's opening balance) x rate.
    base = principal * rate
    exact = base * first_days / (10_000 * reference_days)
    assert abs(plan.installments[0].fee_minor - exact) <= 0.5
    assert plan.installments[0].fee_minor == math.floor(
        (2 * base * first_days + 10_000 * reference_days) // (2 * 10_000 * reference_days))


def test_first_period_fee_worked_example_on_three_purchases_of_one_bill():
    """Statement day 5, due 20 days later: purchases on 3 Jan, 17 Jan and 2 Feb."""
    cycle = BillingCycle(5, 20)
    first = build_plan(300_000, 3, RepaymentMethod.FLAT_FEE, 60, date(2027, 1, 3),
                       cycle.due_dates(date(2027, 1, 3), 3))
    second = build_plan(300_000, 3, RepaymentMethod.FLAT_FEE, 60, date(2027, 1, 17),
                        cycle.due_dates(date(2027, 1, 17), 3))
    third = build_plan(300_000, 3, RepaymentMethod.FLAT_FEE, 60, date(2027, 2, 2),
                       cycle.due_dates(date(2027, 2, 2), 3))
    assert [i.due_date for i in first.installments] == [date(2027, 1, 25), date(2027, 2, 25), date(2027, 3, 25)]
    assert [i.due_date for i in second.installments] == [date(2027, 2, 25), date(2027, 3, 25), date(2027, 4, 25)]
    assert [i.due_date for i in third.installments] == [date(2027, 2, 25), date(2027, 3, 25), date(2027, 4, 25)]
    # A month's fee is 300,000 x 0.6 % = 1,800; the reference month of a first due date
    # of 25 Jan is 25 Dec to 25 Jan (31 days), of 25 Feb is 25 Jan to 25 Feb (31 days).
    assert first.installments[0].fee_minor == 1_277  # 1,800 x 22 / 31 = 1,277.4
    assert second.installments[0].fee_minor == 2_265  # 1,800 x 39 / 31 = 2,264.5, half-up
    assert third.installments[0].fee_minor == 1_335  # 1,800 x 23 / 31 = 1,335.5, half-up
    assert [i.fee_minor for i in first.installments[1:]] == [1_800, 1_800]


def test_declining_balance_prorates_only_the_first_interest():
    cycle = BillingCycle(5, 20)
    plan = build_plan(100_000, 3, RepaymentMethod.DECLINING_BALANCE, 100, date(2027, 1, 17),
                      cycle.due_dates(date(2027, 1, 17), 3))
    # The annuity's principal parts (33,002, 33,332, 33,666); 1,000 of interest x 39 / 31.
    assert [(i.principal_minor, i.fee_minor) for i in plan.installments] == [
        (33_002, 1_258), (33_332, 670), (33_666, 337)]


@given(principal=st.integers(1, 10**9), term=terms, purchase=purchase_dates, cycle=cycles)
def test_pay_next_month_stays_free_whatever_the_dates(principal, term, purchase, cycle):
    plan = build_plan(principal, term, RepaymentMethod.FLAT_FEE, 0, purchase, cycle.due_dates(purchase, term))
    assert plan.total_fee_minor == 0 and plan.apr_bps == 0


def test_due_dates_that_do_not_follow_the_purchase_are_refused():
    with pytest.raises(InvariantViolation, match="must increase"):
        build_plan(10_000, 3, RepaymentMethod.FLAT_FEE, 50, date(2027, 1, 5),
                   (date(2027, 1, 5), date(2027, 2, 5), date(2027, 3, 5)))
    with pytest.raises(InvariantViolation, match="needs as many due dates"):
        build_plan(10_000, 3, RepaymentMethod.FLAT_FEE, 50, date(2027, 1, 5), (date(2027, 2, 5),))


@given(principal=st.integers(10_000, 10**8), term=terms, method=methods, rate=st.integers(1, 250),
       purchase=purchase_dates, cycle=cycles)
@settings(max_examples=200, deadline=None)
def test_the_ceiling_bound_costs_at_least_as_much_as_any_real_calendar(principal, term, method, rate, purchase,
                                                                      cycle):
    """check_cost_ceiling prices a first period of each possible length with 28-day
    months after it; a real calendar's plan of that first period never costs more."""
    table = ProductTable([Product(term, method, principal, {Grade.A: rate})])
    plan = build_plan(principal, term, method, rate, purchase, cycle.due_dates(purchase, term))
    first = (plan.installments[0].due_date - purchase).days
    assert first in [days[0] for days in ceiling_first_periods(term)]
    with pytest.raises(ValueError, match="above the ceiling"):
        table.check_cost_ceiling(plan.apr_bps - 1)


@pytest.mark.parametrize("grade", list(Grade))
@pytest.mark.parametrize("amount", [10_000, 129_900, 600_000, 5_000_000, 123_456_789])
def test_every_offered_plan_of_the_product_table_discloses_an_exact_apr(grade, amount):
    offers = DEFAULT_PRODUCT_TABLE.offers(amount, grade)
    assert offers, "term 1 is offered to every grade"
    for offer in offers:
        purchase = date(2027, 1, 17)
        plan = build_plan(amount, offer.product.term_months, offer.product.method, offer.monthly_rate_bps,
                          purchase, BillingCycle(5, 20).due_dates(purchase, offer.product.term_months))
        expected = dated_apr_bps(amount, [i.amount_minor for i in plan.installments], day_counts(plan, purchase))
        assert abs(plan.apr_bps - expected) <= 1
        assert plan.apr_bps <= 2400


def test_flat_fee_charges_the_original_principal_times_the_rate_each_period():
    plan = plan_of(120_000, 12, RepaymentMethod.FLAT_FEE, 60)
    assert [i.fee_minor for i in plan.installments] == [720] * 12
    assert [i.principal_minor for i in plan.installments] == [10_000] * 12
    assert plan.total_fee_minor == 8_640


def test_flat_fee_last_period_absorbs_the_principal_remainder():
    plan = plan_of(100_001, 3, RepaymentMethod.FLAT_FEE, 50)
    assert [i.principal_minor for i in plan.installments] == [33_333, 33_333, 33_335]
    # 100001 x 0.5 % = 500.005 fen, rounded half-up per line
    assert [i.fee_minor for i in plan.installments] == [500, 500, 500]


@given(principal=st.integers(10_000, 10**10), term=st.sampled_from((3, 6, 12, 24)), rate=st.integers(1, 250))
@settings(max_examples=200)
def test_declining_balance_pays_the_annuity_of_numpy_financial(principal, term, rate):
    plan = plan_of(principal, term, RepaymentMethod.DECLINING_BALANCE, rate)
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
    plan = plan_of(100_000, 3, RepaymentMethod.DECLINING_BALANCE, 100)
    assert [(i.principal_minor, i.fee_minor) for i in plan.installments] == [
        (33_002, 1_000), (33_332, 670), (33_666, 337)]
    # 1 % a month is 1,200 bps on months of 365/12 days; paid on days 31, 59 and 90 of
    # a year that starts in January (February is short), it is a little more.
    assert plan.apr_bps == 1217
    assert plan.apr_bps == round(dated_apr_bps(100_000, [i.amount_minor for i in plan.installments],
                                                   day_counts(plan, START)))


def test_a_free_plan_has_zero_apr_and_equal_principal():
    plan = plan_of(1_000, 1, RepaymentMethod.FLAT_FEE, 0)
    assert plan.apr_bps == 0 and plan.total_fee_minor == 0
    assert plan.installments[0].due_date == date(2027, 2, 15)


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
    # A first period of two days repays a twelfth of the principal at once against a fee
    # charged on all of it: the bound prices 150 bps a month at 3,716 bps.
    table.check_cost_ceiling(3800)
    DEFAULT_PRODUCT_TABLE.check_cost_ceiling(2400)


def test_a_product_table_with_an_unknown_term_is_refused():
    with pytest.raises(ValueError, match="term 5"):
        ProductTable([Product(5, RepaymentMethod.FLAT_FEE, 1, {Grade.A: 10})])


def test_apr_of_periods_of_365_twelfths_is_the_monthly_irr_times_twelve():
    # 100.00 now against 2 x 51.00 paid a month and two months later: monthly IRR
    # 1.3304 %, 1596.5 bps a year on months of 365/12 days; on whole days 30 and 61
    # (shorter than 365/12 and 2 x 365/12) a little more.
    monthly = float(npf.irr(np.array([-10_000, 5_100, 5_100], dtype=float))) * 12 * 10_000
    assert round(monthly) == 1596
    assert apr_bps(10_000, [5_100, 5_100], [365 / 12, 365 / 6]) == 1596  # type: ignore[list-item]
    assert apr_bps(10_000, [5_100, 5_100], [30, 61]) == round(dated_apr_bps(10_000, [5_100, 5_100], [30, 61]))
    assert apr_bps(10_000, [5_100, 5_100], [30, 61]) == 1601


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1, max_value=10**9), terms, methods, st.integers(min_value=1, max_value=999),
       purchase_dates, cycles)
def test_the_fast_apr_solve_rounds_exactly_as_the_forty_digit_one(principal, term, method, rate, purchase, cycle):
    """The float solve answers only away from a half basis point; it must never round
    differently from the Decimal solve it stands in for."""
    from server.domain.pricing import _apr_bps, _apr_bps_exact

    plan = build_plan(principal, term, method, rate, purchase, cycle.due_dates(purchase, term))
    payments = tuple(i.amount_minor for i in plan.installments)
    days = tuple(day_counts(plan, purchase))
    if sum(payments) > principal:
        assert _apr_bps.__wrapped__(principal, payments, days) == _apr_bps_exact(principal, payments, days)


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
    assert _declining_balance_parts(principal, term, rate, (1, 1)) == expected
