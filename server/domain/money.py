"""Integer money in minor units (fen) and its rounding."""

from __future__ import annotations

from fractions import Fraction

from server.domain.errors import FieldViolation, InvariantViolation

CURRENCY = "CNY"

# The largest amount one request may carry: 1,000,000,000.00 CNY. Far above any order,
# and small enough that sums of many amounts stay inside int64.
MAX_AMOUNT_MINOR = 100_000_000_000


def round_half_up(value: Fraction | int) -> int:
    """Round a non-negative exact value to the nearest integer, halves up."""
    value = Fraction(value)
    if value < 0:
        raise InvariantViolation(f"round_half_up takes non-negative values, got {value}")
    return int(value + Fraction(1, 2))


def divide_half_up(numerator: int, denominator: int) -> int:
    """round_half_up(numerator / denominator) in integer arithmetic, for the hot path:
    no Fraction is built. Both must be non-negative, the denominator positive."""
    if numerator < 0 or denominator <= 0:
        raise InvariantViolation(f"divide_half_up takes a non-negative ratio, got {numerator}/{denominator}")
    return (2 * numerator + denominator) // (2 * denominator)


def check_amount(value: int, field: str, *, allow_zero: bool = False) -> FieldViolation | None:
    """A violation when `value` is not a valid amount in minor units, else None."""
    if value < 0 or (value == 0 and not allow_zero):
        bound = "zero or more" if allow_zero else "more than zero"
        return FieldViolation(field, f"must be {bound} minor units (fen), got {value}")
    if value > MAX_AMOUNT_MINOR:
        return FieldViolation(field, f"must be at most {MAX_AMOUNT_MINOR} minor units, got {value}")
    return None
