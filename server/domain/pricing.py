"""Installment pricing: the product table, exact schedules and the APR disclosure.

A plan is priced by (term, method, grade) and dated by the account's billing cycle
(server/domain/billing.py): every installment falls due on a repayment day, so the
first period runs from the purchase date to the first repayment day and may be shorter
or longer than a month. Schedules are built in integer fen with half-up rounding per
line item; the last period absorbs every remainder so that the parts always sum to the
totals.

The first period's fee, written once:

1. The reference month of a plan is the calendar month that ends on its first due
   date: the days from that date less one month (server/domain/calendar.add_months)
   to it, 28 to 31.
2. FLAT_FEE: periods 2..n each charge the original principal times the monthly rate;
   period 1 charges that times (days of period 1) / (days of the reference month).
   Each line is rounded half-up once, in integers.
3. DECLINING_BALANCE: the principal parts are the level-payment (annuity) schedule's;
   period k's interest is its opening balance times the monthly rate, and period 1's
   is that times the same ratio of days. Each line is rounded half-up once.
4. A first period of exactly one calendar month costs exactly one month; a free plan
   (rate 0) stays free whatever its dates.

The APR is the annualized internal rate of return of the dated cash flows: the
principal received on the purchase date, each installment paid on its due date. Time
is counted in actual days over a 365-day year; the rate is the monthly-equivalent rate
r that discounts a payment t days later by (1 + r)^(-12 t / 365), times 12 (so a plan
whose periods were all 365/12 days long would get its monthly IRR times 12). It is
solved as the daily rate d of NPV(d) = -P + sum(A_k (1 + d)^(-t_k)), which has
integer exponents, then r = (1 + d)^(365 / 12) - 1; 40-digit decimals decide any
rounding near a half basis point, and the result is rounded half-up to a basis point.
"""

from __future__ import annotations

import decimal
import enum
import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from server.domain.billing import MAX_PAYMENT_DUE_DAYS, MIN_PAYMENT_DUE_DAYS
from server.domain.calendar import add_months
from server.domain.errors import InvariantViolation
from server.domain.money import divide_half_up

TERMS_MONTHS = (1, 3, 6, 12, 24)
DEFAULT_MAX_APR_BPS = 2400
BPS = 10_000
DAYS_PER_YEAR = 365
MONTHS_PER_YEAR = 12


class RepaymentMethod(enum.StrEnum):
    FLAT_FEE = "FLAT_FEE"
    DECLINING_BALANCE = "DECLINING_BALANCE"


class Grade(enum.StrEnum):
    A = "A"
    B = "B"
    C = "C"
    D = "D"
    E = "E"


@dataclass(frozen=True)
class ScheduledInstallment:
    sequence: int
    due_date: date
    principal_minor: int
    fee_minor: int

    @property
    def amount_minor(self) -> int:
        return self.principal_minor + self.fee_minor


@dataclass(frozen=True)
class Plan:
    term_months: int
    method: RepaymentMethod
    monthly_rate_bps: int
    apr_bps: int
    principal_minor: int
    installments: tuple[ScheduledInstallment, ...]

    @property
    def total_fee_minor(self) -> int:
        return sum(i.fee_minor for i in self.installments)

    @property
    def total_repayment_minor(self) -> int:
        return self.principal_minor + self.total_fee_minor


@dataclass(frozen=True)
class Product:
    """One row of the product table: a term under a method, its smallest order, and the
    monthly rate per grade. A grade missing from `rate_bps_by_grade` is not offered it."""

    term_months: int
    method: RepaymentMethod
    min_amount_minor: int
    rate_bps_by_grade: Mapping[Grade, int]


@dataclass(frozen=True)
class Offer:
    product: Product
    monthly_rate_bps: int


class ProductTable:
    def __init__(self, products: Iterable[Product]) -> None:
        self._products: dict[tuple[int, RepaymentMethod], Product] = {}
        for product in products:
            if product.term_months not in TERMS_MONTHS:
                raise ValueError(f"product table: term {product.term_months} is not one of {TERMS_MONTHS}")
            key = (product.term_months, product.method)
            if key in self._products:
                raise ValueError(f"product table: two rows for {key}")
            if product.min_amount_minor < 1:
                raise ValueError(f"product table: {key} needs a minimum amount of at least 1 fen")
            for grade, rate in product.rate_bps_by_grade.items():
                if not 0 <= rate <= 1_000:
                    raise ValueError(f"product table: {key} grade {grade} rate {rate} bps is out of range")
            self._products[key] = product

    def __iter__(self):
        return iter(sorted(self._products.values(), key=lambda p: (p.term_months, p.method.value)))

    def offers(self, amount_minor: int, grade: Grade) -> list[Offer]:
        """Every plan this amount and grade may choose, by term then method."""
        return [
            Offer(p, p.rate_bps_by_grade[grade])
            for p in self
            if grade in p.rate_bps_by_grade and amount_minor >= p.min_amount_minor
        ]

    def offer(self, term_months: int, method: RepaymentMethod, amount_minor: int, grade: Grade) -> Offer | None:
        product = self._products.get((term_months, method))
        if product is None or grade not in product.rate_bps_by_grade:
            return None
        if amount_minor < product.min_amount_minor:
            return None
        return Offer(product, product.rate_bps_by_grade[grade])

    def min_amount_minor(self, term_months: int, method: RepaymentMethod) -> int | None:
        product = self._products.get((term_months, method))
        return None if product is None else product.min_amount_minor

    def check_cost_ceiling(self, max_apr_bps: int) -> None:
        """Refuse a table that prices any plan above the ceiling, whatever the purchase
        date and billing cycle. The APR of a plan moves with the amount only through
        rounding, so each row is priced at its minimum, at ten and a thousand times it,
        and at one million yuan; and on every first period of `ceiling_first_periods`."""
        for product in self:
            for grade, rate in product.rate_bps_by_grade.items():
                for amount in {product.min_amount_minor, product.min_amount_minor * 10,
                               product.min_amount_minor * 1_000, 100_000_000}:
                    for days in ceiling_first_periods(product.term_months):
                        parts = _parts(amount, product.term_months, product.method, rate,
                                       (days[0], SHORTEST_MONTH_DAYS))
                        # Not through the cache: these plans are never quoted, and
                        # thousands of them would push out the ones that are.
                        priced = apr_bps(amount, [p + f for p, f in parts], days, cached=False)
                        if priced > max_apr_bps:
                            raise ValueError(
                                f"product table: {product.term_months} months {product.method} grade {grade} "
                                f"prices {amount} fen with a first period of {days[0]} days at {priced} bps "
                                f"APR, above the ceiling of {max_apr_bps}")


SHORTEST_MONTH_DAYS = 28
LONGEST_MONTH_DAYS = 31


def ceiling_first_periods(term_months: int) -> list[tuple[int, ...]]:
    """Day counts of the payments of a plan that costs at least as much as any real one.

    A first period runs from a purchase to the first repayment day: at least one day
    to the statement and MIN_PAYMENT_DUE_DAYS after it, at most a 31-day month and
    MAX_PAYMENT_DUE_DAYS. Every later period is a whole month between statements, at
    least 28 days. For one first period, the real plans of every calendar cost at most
    the plan whose reference month and later periods all have 28 days: a shorter
    reference month only raises the first fee, and paying the same amounts earlier
    only raises the rate. So each first period is taken with 28-day periods after it."""
    shortest = 1 + MIN_PAYMENT_DUE_DAYS
    longest = LONGEST_MONTH_DAYS + MAX_PAYMENT_DUE_DAYS
    return [tuple(first + SHORTEST_MONTH_DAYS * k for k in range(term_months))
            for first in range(shortest, longest + 1)]


def _rows(term, method, min_amount_minor, a, b, c, d, e) -> Product:
    rates = {g: r for g, r in zip(Grade, (a, b, c, d, e), strict=True) if r is not None}
    return Product(term, method, min_amount_minor, rates)


_F = RepaymentMethod.FLAT_FEE
_D = RepaymentMethod.DECLINING_BALANCE

# Monthly rates in bps by grade A..E; None: not offered to that grade. Longer terms need
# larger orders, riskier grades see fewer terms. Term 1 is "pay next month", free.
DEFAULT_PRODUCT_TABLE = ProductTable([
    _rows(1, _F, 1, 0, 0, 0, 0, 0),
    _rows(3, _F, 10_000, 50, 60, 70, 80, 90),
    _rows(3, _D, 10_000, 90, 110, 130, 150, 170),
    _rows(6, _F, 30_000, 50, 60, 70, 80, None),
    _rows(6, _D, 30_000, 90, 110, 130, 150, None),
    _rows(12, _F, 60_000, 50, 60, 70, None, None),
    _rows(12, _D, 60_000, 90, 110, 130, None, None),
    _rows(24, _F, 120_000, 50, 60, None, None, None),
    _rows(24, _D, 120_000, 90, 110, None, None, None),
])


def build_plan(principal_minor: int, term_months: int, method: RepaymentMethod, monthly_rate_bps: int,
               purchase_date: date, due_dates: Sequence[date]) -> Plan:
    """The plan of a loan bought on `purchase_date` whose installments fall due on
    `due_dates` (one per period, increasing, the first after the purchase date): the
    billing cycle's repayment days for a new loan (BillingCycle.due_dates)."""
    if principal_minor < 1:
        raise InvariantViolation(f"a plan needs a positive principal, got {principal_minor}")
    if term_months < 1:
        raise InvariantViolation(f"a plan needs at least one period, got {term_months}")
    if len(due_dates) != term_months:
        raise InvariantViolation(f"a plan of {term_months} periods needs as many due dates, got {len(due_dates)}")
    days = tuple((due - purchase_date).days for due in due_dates)
    if days[0] < 1 or any(later <= earlier for earlier, later in zip(days, days[1:], strict=False)):
        raise InvariantViolation(f"due dates {due_dates} must increase and follow the purchase on {purchase_date}")
    first_days = (days[0], (due_dates[0] - add_months(due_dates[0], -1)).days)
    parts = _parts(principal_minor, term_months, method, monthly_rate_bps, first_days)
    installments = tuple(
        ScheduledInstallment(k, due, principal, fee)
        for k, (due, (principal, fee)) in enumerate(zip(due_dates, parts, strict=True), start=1)
    )
    if sum(i.principal_minor for i in installments) != principal_minor:
        raise InvariantViolation("schedule principal does not sum to the loan's principal")
    return Plan(
        term_months=term_months,
        method=method,
        monthly_rate_bps=monthly_rate_bps,
        apr_bps=apr_bps(principal_minor, [i.amount_minor for i in installments], days),
        principal_minor=principal_minor,
        installments=installments,
    )


def _parts(principal: int, n: int, method: RepaymentMethod, rate_bps: int,
           first_days: tuple[int, int]) -> list[tuple[int, int]]:
    """(principal, fee) of each period; `first_days` is (days of the first period, days
    of the reference month)."""
    if method is RepaymentMethod.FLAT_FEE or rate_bps == 0:
        return _flat_fee_parts(principal, n, rate_bps, first_days)
    return _declining_balance_parts(principal, n, rate_bps, first_days)


def _flat_fee_parts(principal: int, n: int, rate_bps: int,
                    first_days: tuple[int, int]) -> list[tuple[int, int]]:
    # The Baitiao way: equal principal, and each period's fee is the original principal
    # times the monthly rate, rounded half-up once per line; the first period's by its
    # days over the reference month's (`first_days`: (days, reference days)).
    days, month_days = first_days
    base = principal // n
    fee = divide_half_up(principal * rate_bps, BPS)
    parts = [(base, divide_half_up(principal * rate_bps * days, BPS * month_days))]
    parts += [(base, fee)] * (n - 1)
    parts[-1] = (principal - base * (n - 1), parts[-1][1])
    return parts


def _declining_balance_parts(principal: int, n: int, rate_bps: int,
                             first_days: tuple[int, int]) -> list[tuple[int, int]]:
    # The level payment P r / (1 - (1 + r)^-n) with r = rate_bps / BPS, as one ratio of
    # integers: P b (BPS + b)^n / (BPS ((BPS + b)^n - BPS^n)), rounded half-up. The
    # principal parts are the annuity's; only the first period's interest is by days.
    days, month_days = first_days
    growth = (BPS + rate_bps) ** n
    payment = divide_half_up(principal * rate_bps * growth, BPS * (growth - BPS ** n))
    parts = []
    balance = principal
    for k in range(1, n + 1):
        interest = divide_half_up(balance * rate_bps, BPS)
        if k == n:
            principal_part = balance
        else:
            principal_part = min(max(payment - interest, 0), balance)
        if k == 1:
            interest = divide_half_up(balance * rate_bps * days, BPS * month_days)
        parts.append((principal_part, interest))
        balance -= principal_part
    return parts


_IRR_CONTEXT = decimal.Context(prec=40, rounding=decimal.ROUND_HALF_EVEN)
_IRR_STEP_TOLERANCE = decimal.Decimal("1e-24")
_IRR_MAX_STEPS = 100


def apr_bps(principal_minor: int, payments_minor: Sequence[int], days: Sequence[int], *, cached: bool = True) -> int:
    """The APR of receiving `principal_minor` on day 0 and paying `payments_minor[k]` on
    day `days[k]` (see the module docstring), in basis points rounded half-up."""
    if principal_minor <= 0 or not payments_minor or any(p < 0 for p in payments_minor):
        raise InvariantViolation("apr_bps needs a positive principal and non-negative payments")
    if len(days) != len(payments_minor) or any(t < 1 for t in days):
        raise InvariantViolation("apr_bps needs one day count of at least 1 per payment")
    total = sum(payments_minor)
    if total == principal_minor:
        return 0
    if total < principal_minor:
        raise InvariantViolation("payments below the principal have a negative rate; no plan prices so")
    solve = _apr_bps if cached else _apr_bps.__wrapped__
    return solve(principal_minor, tuple(payments_minor), tuple(days))


# A plan is priced at quote, at authorization and at capture, usually for the same
# amount on the same day; the solve is pure, so repeats are served from memory. The key
# holds day counts from the purchase, not dates: every account whose repayment days sit
# the same number of days after its purchases shares an entry.
@functools.lru_cache(maxsize=8192)
def _apr_bps(principal_minor: int, payments_minor: tuple[int, ...], days: tuple[int, ...]) -> int:
    # The float solve is within about 1e-10 bps of the root. Unless that lands near a
    # rounding boundary (a half basis point), its rounding is the exact one; otherwise
    # the 40-digit solve decides.
    daily = _irr_estimate(principal_minor, list(payments_minor), days)
    annual_bps = math.expm1(math.log1p(daily) * DAYS_PER_YEAR / MONTHS_PER_YEAR) * MONTHS_PER_YEAR * BPS
    if abs(annual_bps - math.floor(annual_bps) - 0.5) > _APR_FLOAT_MARGIN_BPS:
        return math.floor(annual_bps + 0.5)
    return _apr_bps_exact(principal_minor, payments_minor, days)


# How far from a half basis point the float solve must land to be trusted: ten thousand
# times its error bound.
_APR_FLOAT_MARGIN_BPS = 1e-6


def _apr_bps_exact(principal_minor: int, payments_minor: tuple[int, ...], days: tuple[int, ...]) -> int:
    ctx = _IRR_CONTEXT
    daily = _irr(principal_minor, list(payments_minor), days)
    exponent = ctx.divide(DAYS_PER_YEAR, MONTHS_PER_YEAR)
    monthly = ctx.subtract(ctx.power(ctx.add(1, daily), exponent), 1)
    annual_bps = ctx.multiply(monthly, MONTHS_PER_YEAR * BPS)
    return int(annual_bps.quantize(decimal.Decimal(1), rounding=decimal.ROUND_HALF_UP, context=ctx))


def _irr_estimate(principal: int, payments: list[int], days: Sequence[int]) -> float:
    """Newton's method for the same root in floating point: a starting point only."""
    rate = 0.0
    for _ in range(_IRR_MAX_STEPS):
        log_growth = math.log1p(rate)
        value = -float(principal)
        slope = 0.0
        for t, amount in zip(days, payments, strict=True):
            term = amount * math.exp(-t * log_growth)
            value += term
            slope -= t * term / (1.0 + rate)
        step = value / slope
        rate -= step
        if abs(step) < 1e-17:
            break
    return rate if math.isfinite(rate) and rate > -1.0 else 0.0


def _irr(principal: int, payments: list[int], days: Sequence[int]) -> decimal.Decimal:
    """The daily rate d, root of NPV(d) = -principal + sum(payment_k / (1 + d)^t_k).

    NPV is strictly decreasing and convex in d (every payment comes after the
    principal), and NPV(0) > 0 when the payments exceed the principal. Newton's method
    started at 0 therefore climbs monotonically to the unique root without overshooting,
    converging quadratically; 40 significant digits leave the result exact far beyond a
    basis point."""
    ctx = _IRR_CONTEXT
    principal_d = decimal.Decimal(principal)
    cash = [decimal.Decimal(x) for x in payments]
    # Decimal arithmetic is slow; the same Newton iteration in floats lands within about
    # 1e-15 of the root, and from there two Decimal steps reach the tolerance. A start
    # past the root is harmless: on a convex decreasing curve the first step lands left
    # of the root, and the climb resumes from there.
    rate = decimal.Decimal(_irr_estimate(principal, payments, days))
    for _ in range(_IRR_MAX_STEPS):
        discount = ctx.divide(1, ctx.add(1, rate))
        value = -principal_d
        slope = decimal.Decimal(0)
        for t, amount in zip(days, cash, strict=True):
            term = ctx.multiply(amount, ctx.power(discount, t))
            value = ctx.add(value, term)
            slope = ctx.subtract(slope, ctx.multiply(ctx.multiply(t, term), discount))
        step = ctx.divide(value, slope)
        rate = ctx.subtract(rate, step)
        if abs(step) < _IRR_STEP_TOLERANCE:
            return rate
    raise InvariantViolation(f"IRR did not converge for {principal} against {payments} on days {days}")


class MerchantCategory(enum.StrEnum):
    """What a merchant sells, which sets its settlement fee. GENERAL is every merchant
    the registry does not name (docs/payments.md, "Merchant settlement")."""

    GENERAL = "GENERAL"
    EDUCATION = "EDUCATION"
    TRAVEL = "TRAVEL"
    ELECTRONICS = "ELECTRONICS"


# The merchant fee of the product table: basis points of a merchant-day's captures,
# kept by the platform when it settles the day. It is the merchant's cost, not the
# customer's, so the APR ceiling on plans does not see it.
MERCHANT_FEE_BPS: Mapping[MerchantCategory, int] = {
    MerchantCategory.GENERAL: 60,
    MerchantCategory.EDUCATION: 40,
    MerchantCategory.TRAVEL: 80,
    MerchantCategory.ELECTRONICS: 120,
}


def merchant_fee_bps(category: MerchantCategory) -> int:
    return MERCHANT_FEE_BPS[category]
