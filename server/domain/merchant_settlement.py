"""A merchant's settlement day, the rule written down once.

1. A merchant-day is every capture and every refund of the merchant's loans booked in
   one calendar day of Asia/Shanghai (the partners' settlement day).
2. The fee is the merchant category's rate (`MERCHANT_FEE_BPS`, the product table) of
   the day's captures, rounded half-up to the fen once per merchant-day (not per
   capture). A refund never returns the fee: the merchant paid for the sale it made.
3. The net is captures less refunds less the fee, plus what the previous settled day
   carried in (zero or negative).
4. A positive net is paid to the merchant in one payment; nothing is carried out. A net
   of zero or less pays nothing and is carried whole into the next day (CARRIED): a
   refund after a day was settled is taken from a later day, never paid back as a
   negative payment.

So over any run of days, what was paid plus what is carried out is exactly the sum of
captures less refunds less fees, to the fen.

The books live per customer account: when a day settles, each account's part of it
(its captures less its refunds) leaves MERCHANT_PAYABLE; the day's fee is shared among
the accounts by their captures (`fee_shares`) and earned there, and the rest is owed
to the merchant, in flight, until the merchant is paid.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from server.domain.errors import InvariantViolation
from server.domain.money import divide_half_up
from server.domain.pricing import BPS, MerchantCategory, merchant_fee_bps


class SettlementStatus(enum.StrEnum):
    """A settled merchant-day: CARRIED (net zero or less, nothing to pay), or a payment
    of the net REQUESTED, then PAID or FAILED."""

    CARRIED = "CARRIED"
    REQUESTED = "REQUESTED"
    PAID = "PAID"
    FAILED = "FAILED"


@dataclass(frozen=True)
class MerchantDay:
    """What was booked for a merchant on a settlement day."""

    captured_minor: int
    refunded_minor: int
    captures: int
    refunds: int


@dataclass(frozen=True)
class MerchantSettlement:
    category: MerchantCategory
    fee_bps: int
    captured_minor: int
    refunded_minor: int
    fee_minor: int
    carried_in_minor: int
    captures: int
    refunds: int

    @property
    def day_net_minor(self) -> int:
        """The day's own net, before what an earlier day carried in."""
        return self.captured_minor - self.refunded_minor - self.fee_minor

    @property
    def net_minor(self) -> int:
        return self.day_net_minor + self.carried_in_minor

    @property
    def payment_minor(self) -> int:
        """What the merchant is paid for the day: never negative."""
        return max(self.net_minor, 0)

    @property
    def carried_out_minor(self) -> int:
        """What the next day starts from: zero or negative."""
        return min(self.net_minor, 0)


def merchant_fee_minor(captured_minor: int, fee_bps: int) -> int:
    """The day's fee: half-up to the fen, once per merchant-day."""
    return divide_half_up(captured_minor * fee_bps, BPS)


def settle(day: MerchantDay, category: MerchantCategory, carried_in_minor: int) -> MerchantSettlement:
    if day.captured_minor < 0 or day.refunded_minor < 0:
        raise InvariantViolation(f"a merchant-day's amounts are never negative: {day}")
    if carried_in_minor > 0:
        raise InvariantViolation(f"only a negative net is carried, got {carried_in_minor}")
    fee_bps = merchant_fee_bps(category)
    return MerchantSettlement(
        category=category, fee_bps=fee_bps, captured_minor=day.captured_minor, refunded_minor=day.refunded_minor,
        fee_minor=merchant_fee_minor(day.captured_minor, fee_bps), carried_in_minor=carried_in_minor,
        captures=day.captures, refunds=day.refunds)


def settle_days(days: list[MerchantDay], category: MerchantCategory,
                carried_in_minor: int = 0) -> list[MerchantSettlement]:
    """Consecutive days, each starting from what the one before carried out."""
    settled: list[MerchantSettlement] = []
    for day in days:
        settled.append(settle(day, category, carried_in_minor))
        carried_in_minor = settled[-1].carried_out_minor
    return settled


def fee_shares(fee_minor: int, captured_minor: list[int]) -> list[int]:
    """The day's fee shared among accounts in proportion to what each captured, to the
    fen by largest remainder (ties to the earlier account): the shares add up to the
    fee, and an account that captured nothing that day pays none of it."""
    if fee_minor < 0 or any(c < 0 for c in captured_minor):
        raise InvariantViolation(f"a fee and captures are never negative: {fee_minor}, {captured_minor}")
    total = sum(captured_minor)
    if total == 0:
        if fee_minor:
            raise InvariantViolation(f"a fee of {fee_minor} on a day that captured nothing")
        return [0] * len(captured_minor)
    shares = [fee_minor * c // total for c in captured_minor]
    remainders = sorted(range(len(captured_minor)), key=lambda i: (-(fee_minor * captured_minor[i] % total), i))
    for i in remainders[:fee_minor - sum(shares)]:
        shares[i] += 1
    return shares
