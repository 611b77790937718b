"""The merchant-day rule (server/domain/merchant_settlement.py): the fee's rounding and
the carry of a negative net, against exact fractions."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.domain.errors import InvariantViolation
from server.domain.merchant_settlement import MerchantDay, fee_shares, merchant_fee_minor, settle, settle_days
from server.domain.pricing import MERCHANT_FEE_BPS, MerchantCategory

amounts = st.integers(min_value=0, max_value=10**12)
categories = st.sampled_from(list(MerchantCategory))
days = st.builds(MerchantDay, captured_minor=amounts, refunded_minor=amounts,
                 captures=st.integers(0, 1000), refunds=st.integers(0, 1000))


def _half_up(value: Fraction) -> int:
    return int((Decimal(value.numerator) / Decimal(value.denominator)).quantize(Decimal(1), ROUND_HALF_UP))


def test_every_category_has_a_rate_and_the_scenario_categories_are_there():
    assert set(MERCHANT_FEE_BPS) == set(MerchantCategory)
    assert {"EDUCATION", "TRAVEL", "ELECTRONICS"} <= {c.value for c in MerchantCategory}
    assert all(0 <= bps < 10_000 for bps in MERCHANT_FEE_BPS.values())


@given(amounts, st.integers(0, 9_999))
def test_the_fee_is_the_rate_of_the_days_captures_half_up(captured_minor, fee_bps):
    assert merchant_fee_minor(captured_minor, fee_bps) == _half_up(Fraction(captured_minor * fee_bps, 10_000))


def test_the_fee_rounds_half_up_once_per_day_not_per_capture():
    # 60 bps of 250 fen is 1.5 fen: one fen per capture twice would be 2 or 4;
    # the day's 500 fen is exactly 3.
    assert merchant_fee_minor(250, 60) == 2
    assert merchant_fee_minor(500, 60) == 3
    assert merchant_fee_minor(249, 60) == 1


@given(days, categories, st.integers(-10**12, 0))
def test_a_day_pays_its_positive_net_and_carries_the_rest(day, category, carried_in_minor):
    result = settle(day, category, carried_in_minor)
    assert result.fee_bps == MERCHANT_FEE_BPS[category]
    assert result.net_minor == (day.captured_minor - day.refunded_minor - result.fee_minor + carried_in_minor)
    assert result.payment_minor >= 0 and result.carried_out_minor <= 0
    assert result.payment_minor + result.carried_out_minor == result.net_minor
    assert result.payment_minor == 0 or result.carried_out_minor == 0


@given(st.lists(days, max_size=20), categories)
def test_over_many_days_what_is_paid_plus_what_is_carried_is_every_days_net(run, category):
    settled = settle_days(run, category)
    paid = sum(s.payment_minor for s in settled)
    carried = settled[-1].carried_out_minor if settled else 0
    assert paid + carried == sum(s.captured_minor - s.refunded_minor - s.fee_minor for s in settled)
    for before, after in zip(settled, settled[1:], strict=False):
        assert after.carried_in_minor == before.carried_out_minor


def test_a_refund_after_settlement_is_taken_from_the_next_days():
    first, second, third = settle_days([MerchantDay(100_000, 0, 1, 0), MerchantDay(10_000, 30_000, 1, 1),
                                        MerchantDay(50_000, 0, 1, 0)], MerchantCategory.ELECTRONICS)
    assert (first.fee_minor, first.payment_minor) == (1_200, 98_800)
    assert (second.fee_minor, second.payment_minor, second.carried_out_minor) == (120, 0, -20_120)
    assert (third.carried_in_minor, third.fee_minor, third.payment_minor) == (-20_120, 600, 29_280)


def test_impossible_inputs_are_a_bug():
    with pytest.raises(InvariantViolation):
        settle(MerchantDay(-1, 0, 0, 0), MerchantCategory.GENERAL, 0)
    with pytest.raises(InvariantViolation):
        settle(MerchantDay(1, 0, 1, 0), MerchantCategory.GENERAL, 1)


@given(st.lists(st.integers(0, 10**10), min_size=1, max_size=30), st.integers(0, 9_999))
def test_the_days_fee_is_shared_by_captures_to_the_fen(captured, fee_bps):
    fee = merchant_fee_minor(sum(captured), fee_bps)
    shares = fee_shares(fee, captured)
    assert sum(shares) == fee
    total = sum(captured)
    for share, part in zip(shares, captured, strict=True):
        # Each share is its exact proportion rounded down or up, never further off.
        exact = Fraction(fee * part, total) if total else Fraction(0)
        assert exact - 1 < share < exact + 1
        assert part or not share


def test_fee_shares_go_to_the_largest_remainders_then_the_earlier_account():
    assert fee_shares(10, [1, 1, 1]) == [4, 3, 3]
    assert fee_shares(7, [500, 0, 250, 250]) == [3, 0, 2, 2]
    assert fee_shares(0, [0, 0]) == [0, 0]
    with pytest.raises(InvariantViolation):
        fee_shares(1, [0, 0])
