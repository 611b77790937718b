"""Installment pricing: the product table, exact schedules and the APR disclosure.

A plan is priced by (term, method, grade). Schedules are built in integer fen with
half-up rounding per line item; the last period absorbs every remainder so that the
parts always sum to the totals. The APR is the monthly internal rate of return of the
customer's cash flows (principal received now, each installment paid k months later),
times 12, solved with 50-digit decimals and rounded half-up to a basis point.
"""

from __future__ import annotations

import decimal
import enum
import functools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date

from server.domain.calendar import add_months
from server.domain.errors import InvariantViolation
from server.domain.money import divide_half_up

TERMS_MONTHS = (1, 3, 6, 12, 24)
DEFAULT_MAX_APR_BPS = 2400
BPS = 10_000


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
        """Refuse a table that prices any plan above the ceiling. The APR of a plan moves
        with the amount only through rounding, so each row is priced at its minimum, at
        ten and a thousand times it, and at one million yuan."""
        start = date(2026, 1, 31)
        for product in self:
            for grade, rate in product.rate_bps_by_grade.items():
                for amount in {product.min_amount_minor, product.min_amount_minor * 10,
                               product.min_amount_minor * 1_000, 100_000_000}:
                    plan = build_plan(amount, product.term_months, product.method, rate, start)
                    if plan.apr_bps > max_apr_bps:
                        raise ValueError(
                            f"product table: {product.term_months} months {product.method} grade {grade} "
                            f"prices {amount} fen at {plan.apr_bps} bps APR, above the ceiling of {max_apr_bps}"
                        )


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


def build_plan(principal_minor: int, term_months: int, method: RepaymentMethod,
               monthly_rate_bps: int, start_date: date) -> Plan:
    if principal_minor < 1:
        raise InvariantViolation(f"a plan needs a positive principal, got {principal_minor}")
    if term_months < 1:
        raise InvariantViolation(f"a plan needs at least one period, got {term_months}")
    if method is RepaymentMethod.FLAT_FEE or monthly_rate_bps == 0:
        parts = _flat_fee_parts(principal_minor, term_months, monthly_rate_bps)
    else:
        parts = _declining_balance_parts(principal_minor, term_months, monthly_rate_bps)
    installments = tuple(
        ScheduledInstallment(k, add_months(start_date, k), principal, fee)
        for k, (principal, fee) in enumerate(parts, start=1)
    )
    if sum(i.principal_minor for i in installments) != principal_minor:
        raise InvariantViolation("schedule principal does not sum to the loan's principal")
    return Plan(
        term_months=term_months,
        method=method,
        monthly_rate_bps=monthly_rate_bps,
        apr_bps=apr_bps(principal_minor, [i.amount_minor for i in installments]),
        principal_minor=principal_minor,
        installments=installments,
    )


def _flat_fee_parts(principal: int, n: int, rate_bps: int) -> list[tuple[int, int]]:
    # The Baitiao way: equal principal, and each period's fee is the original principal
    # times the monthly rate, rounded half-up once per line.
    base = principal // n
    fee = divide_half_up(principal * rate_bps, BPS)
    parts = [(base, fee)] * (n - 1)
    parts.append((principal - base * (n - 1), fee))
    return parts


def _declining_balance_parts(principal: int, n: int, rate_bps: int) -> list[tuple[int, int]]:
    # The level payment P r / (1 - (1 + r)^-n) with r = rate_bps / BPS, as one ratio of
    # integers: P b (BPS + b)^n / (BPS ((BPS + b)^n - BPS^n)), rounded half-up.
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
        parts.append((principal_part, interest))
        balance -= principal_part
    return parts


_IRR_CONTEXT = decimal.Context(prec=40, rounding=decimal.ROUND_HALF_EVEN)
_IRR_STEP_TOLERANCE = decimal.Decimal("1e-24")
_IRR_MAX_STEPS = 100


def apr_bps(principal_minor: int, payments_minor: list[int]) -> int:
    """Monthly IRR of receiving `principal_minor` now and paying `payments_minor[k-1]`
    at month k, times 12, in basis points rounded half-up."""
    if principal_minor <= 0 or not payments_minor or any(p < 0 for p in payments_minor):
        raise InvariantViolation("apr_bps needs a positive principal and non-negative payments")
    total = sum(payments_minor)
    if total == principal_minor:
        return 0
    if total < principal_minor:
        raise InvariantViolation("payments below the principal have a negative rate; no plan prices so")
    return _apr_bps(principal_minor, tuple(payments_minor))


# A plan is priced at quote, at authorization and at capture, usually for the same
# amount; the solve is pure, so repeats are served from memory.
@functools.lru_cache(maxsize=8192)
def _apr_bps(principal_minor: int, payments_minor: tuple[int, ...]) -> int:
    # The float solve is within about 1e-10 bps of the root. Unless that lands near a
    # rounding boundary (a half basis point), its rounding is the exact one; otherwise
    # the 40-digit solve decides.
    annual_bps = _irr_estimate(principal_minor, list(payments_minor)) * 12 * BPS
    if abs(annual_bps - math.floor(annual_bps) - 0.5) > _APR_FLOAT_MARGIN_BPS:
        return math.floor(annual_bps + 0.5)
    return _apr_bps_exact(principal_minor, payments_minor)


# How far from a half basis point the float solve must land to be trusted: ten thousand
# times its error bound.
_APR_FLOAT_MARGIN_BPS = 1e-6


def _apr_bps_exact(principal_minor: int, payments_minor: tuple[int, ...]) -> int:
    monthly = _irr(principal_minor, list(payments_minor))
    annual_bps = _IRR_CONTEXT.multiply(monthly, 12 * BPS)
    return int(annual_bps.quantize(decimal.Decimal(1), rounding=decimal.ROUND_HALF_UP, context=_IRR_CONTEXT))


def _irr_estimate(principal: int, payments: list[int]) -> float:
    """Newton's method for the same root in floating point: a starting point only."""
    rate = 0.0
    for _ in range(_IRR_MAX_STEPS):
        discount = 1.0 / (1.0 + rate)
        factor = 1.0
        value = -float(principal)
        slope = 0.0
        for k, amount in enumerate(payments, start=1):
            factor *= discount
            term = amount * factor
            value += term
            slope -= k * term * discount
        step = value / slope
        rate -= step
        if abs(step) < 1e-15:
            break
    return rate if math.isfinite(rate) and rate > -1.0 else 0.0


def _irr(principal: int, payments: list[int]) -> decimal.Decimal:
    """The root of NPV(r) = -principal + sum(payment_k / (1 + r)^k).

    NPV is strictly decreasing and convex in r (every payment comes after the
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
    rate = decimal.Decimal(_irr_estimate(principal, payments))
    for _ in range(_IRR_MAX_STEPS):
        discount = ctx.divide(1, ctx.add(1, rate))
        factor = decimal.Decimal(1)
        value = -principal_d
        slope = decimal.Decimal(0)
        for k, amount in enumerate(cash, start=1):
            factor = ctx.multiply(factor, discount)
            term = ctx.multiply(amount, factor)
            value = ctx.add(value, term)
            slope = ctx.subtract(slope, ctx.multiply(ctx.multiply(k, term), discount))
        step = ctx.divide(value, slope)
        rate = ctx.subtract(rate, step)
        if abs(step) < _IRR_STEP_TOLERANCE:
            return rate
    raise InvariantViolation(f"IRR did not converge for {principal} against {payments}")


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
