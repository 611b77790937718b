"""Co-lending splits: every fen of every step goes to exactly one funder, each
partner's part is within a fen of its exact share, the remainder is the platform's,
and a partner's running balance is always its share of what is owed, however many
events there are."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import date, timedelta
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.domain import funding, ledger, waterfall
from server.domain.calendar import add_months
from server.domain.errors import InvariantViolation
from server.domain.funding import (
    PLATFORM,
    Cause,
    FunderStake,
    Owed,
    Partner,
    Shares,
    Step,
    fund,
    move,
    owed_by,
    part,
    stake,
    stripe_caps,
)
from server.domain.ledger import EntryKind, LedgerAccount
from server.domain.loans import InstallmentState
from server.domain.pricing import Grade, RepaymentMethod, build_plan
from server.domain.waterfall import Component

LOAN = uuid.UUID(int=7)
COMPONENTS = (Component.PRINCIPAL, Component.FEE, Component.PENALTY)

shares_st = st.builds(Shares, st.integers(0, funding.MAX_PARTNER_PRINCIPAL_SHARE_BPS), st.integers(0, 10_000))
amounts = st.integers(0, 10**11)


def test_a_70_percent_partner_takes_the_floor_and_the_platform_the_remainder_fen():
    shares = Shares(7_000, 5_000)
    moved = move("bank", shares, Owed(), funding.capture_steps(100_001, 3_001))
    assert moved.after == Owed(70_000, 1_500, 0)  # 70,000.7 and 1,500.5, rounded down
    assert funding.platform_stake(Owed(100_001, 3_001), [moved.after]) == Owed(30_001, 1_501, 0)


def test_the_running_balance_is_the_share_of_what_remains_not_a_sum_of_rounded_parts():
    # Three payments of 1 fen at 50 %: rounding each part down would give the partner 0
    # three times and leave it 1 fen short; the rule gives it 1 (then 0, then 1... of 3).
    shares = Shares(5_000, 0)
    owed, held = Owed(principal_minor=3), Owed(principal_minor=1)
    received = []
    for _ in range(3):
        moved = move("bank", shares, owed, funding.payment_steps(principal_minor=1, fee_minor=0, penalty_minor=0))
        received.append(moved.settled_minor(Component.PRINCIPAL))
        owed, held = owed.plus(Component.PRINCIPAL, -1), moved.after
    assert received == [0, 1, 0] and held == Owed()
    assert sum(received) == part(3, 5_000) == 1


def test_a_part_outside_the_rule_is_refused():
    with pytest.raises(InvariantViolation):
        part(-1, 5_000)
    with pytest.raises(InvariantViolation):
        move("bank", Shares(5_000, 0), Owed(principal_minor=10), (Step(Component.PRINCIPAL, Cause.COLLECTED, -11),))
    drifted = FunderStake("bank", Shares(5_000, 0), 10, Owed(principal_minor=4))
    with pytest.raises(InvariantViolation, match="the rule gives"):
        fund(LOAN, [drifted], Owed(principal_minor=10), ())


@st.composite
def events(draw):
    """A loan's owed amounts, then random steps that never owe below zero."""
    owed = Owed(draw(amounts), draw(amounts), draw(st.integers(0, 10**9)))
    steps = []
    current = owed
    for _ in range(draw(st.integers(1, 25))):
        component = draw(st.sampled_from(COMPONENTS))
        cause = draw(st.sampled_from(list(Cause)))
        up = cause in (Cause.FUNDED, Cause.ACCRUED, Cause.RETURNED)
        delta = draw(st.integers(0, 10**10)) if up else -draw(st.integers(0, current.of(component)))
        steps.append(Step(component, cause, delta))
        current = current.plus(component, delta)
    return owed, tuple(steps)


@given(events(), shares_st)
def test_parts_add_up_stay_within_a_fen_and_never_drift(event, shares):
    owed, steps = event
    moved = move("bank", shares, owed, steps)
    owed_after = funding.steps_owed(owed, steps)
    # No drift: the sum of the parts is the rule's stake of what is left.
    assert moved.before == stake(owed, shares) and moved.after == stake(owed_after, shares)
    for component in COMPONENTS:
        assert sum(p.amount_minor for p in moved.parts if p.component is component) == (
            moved.after.of(component) - moved.before.of(component))
    # Each part within one fen of the exact share of its step; the parts are those, in order.
    running, expected = owed, []
    for step in steps:
        after = running.plus(step.component, step.delta_minor)
        amount = stake(after, shares).of(step.component) - stake(running, shares).of(step.component)
        assert abs(amount - Fraction(step.delta_minor * shares.of(step.component), 10_000)) < 1
        if amount:
            expected.append(funding.Part(step.component, step.cause, amount))
        running = after
    assert list(moved.parts) == expected
    # The remainder is the platform's: the partner holds at most its exact share, the
    # platform at least its own, and together exactly what is owed.
    for component in COMPONENTS:
        exact = Fraction(owed_after.of(component) * shares.of(component), 10_000)
        assert exact - 1 < moved.after.of(component) <= exact
    platform = funding.platform_stake(owed_after, [moved.after])
    assert all(platform.of(c) + moved.after.of(c) == owed_after.of(c) for c in COMPONENTS)


@given(events(), shares_st, st.integers(0, 10**9))
def test_the_partner_entry_balances_and_its_held_accounts_are_the_stake(event, shares, claim):
    owed, steps = event
    moved = move("bank", shares, owed, steps, recovery_base_minor=claim)
    entry = ledger.partner_shares(EntryKind.PARTNER_SHARES_MOVED, [moved])
    totals = {} if entry is None else {p.ledger_account: p.amount_minor for p in entry.postings}
    assert sum(totals.values()) == 0
    held = {Component.PRINCIPAL: LedgerAccount.PARTNER_PRINCIPAL_HELD, Component.FEE: LedgerAccount.PARTNER_FEE_HELD,
            Component.PENALTY: LedgerAccount.PARTNER_PENALTY_HELD}
    for component, account in held.items():
        assert -totals.get(account, 0) == moved.after.of(component) - moved.before.of(component)
    owed_to_partner = sum(moved.settled_minor(c) for c in COMPONENTS) + moved.recovery_minor
    assert -totals.get(LedgerAccount.PARTNER_SETTLEMENT_PAYABLE, 0) == owed_to_partner
    assert moved.recovery_minor == claim * shares.principal_share_bps // 10_000


def test_several_partners_leave_the_platform_the_rest_of_every_fen():
    a, b = Shares(4_000, 3_333), Shares(3_000, 3_333)
    owed = Owed(100_003, 999, 0)
    moves = [move(n, s, Owed(), funding.capture_steps(100_003, 999)) for n, s in (("a", a), ("b", b))]
    assert [m.after for m in moves] == [Owed(40_001, 332, 0), Owed(30_000, 332, 0)]
    assert funding.platform_stake(owed, [m.after for m in moves]) == Owed(30_002, 335, 0)


# -- a whole loan's life, through the real waterfall ------------------------------------


START = date(2027, 1, 15)


class Book:
    """One co-funded loan, its schedule and each funder's stake as booked."""

    def __init__(self, principal: int, term: int, shares: Shares) -> None:
        plan = build_plan(principal, term, RepaymentMethod.FLAT_FEE, 60, START,
                          tuple(add_months(START, k) for k in range(1, term + 1)))
        self.installments = tuple(InstallmentState(i.sequence, i.due_date, i.principal_minor, i.fee_minor)
                                  for i in plan.installments)
        self.shares = shares
        self.partner = FunderStake("bank", shares, 0, Owed())
        self.settled = 0
        self.active = True
        self.book(funding.capture_steps(principal, plan.total_fee_minor), before=Owed())

    @property
    def owed(self) -> Owed:
        return owed_by(self.installments) if self.active else Owed()

    def book(self, steps, before: Owed | None = None, claim: int = 0) -> funding.Funding:
        before = self.owed if before is None else before
        result = fund(LOAN, [self.partner, FunderStake(PLATFORM, Shares(0, 0), 0, Owed())], before, steps, claim)
        (moved,) = result.moves
        self.partner = replace(self.partner, stake=moved.after)
        self.settled += sum(moved.settled_minor(c) for c in COMPONENTS) + moved.recovery_minor
        entry = ledger.partner_shares(EntryKind.PARTNER_SHARES_MOVED, [moved])
        assert entry is None or sum(p.amount_minor for p in entry.postings) == 0
        return result

    def check(self) -> None:
        assert self.partner.stake == stake(self.owed, self.shares)
        platform = funding.platform_stake(self.owed, [self.partner.stake])
        for component in COMPONENTS:
            assert platform.of(component) * 10_000 >= self.owed.of(component) * (
                10_000 - self.shares.of(component))

    def repay(self, amount: int, today: date) -> None:
        allocated = waterfall.allocate([waterfall.LoanBalance(LOAN, self.installments)], amount, today)
        steps = funding.payment_steps(
            principal_minor=allocated.total(Component.PRINCIPAL), fee_minor=allocated.total(Component.FEE),
            penalty_minor=allocated.total(Component.PENALTY), waived_fee_minor=allocated.waived_minor)
        before = self.owed
        self.installments = waterfall.apply(self.installments, LOAN, allocated)
        assert funding.steps_owed(before, steps) == self.owed
        self.book(steps, before)

    def refund(self, amount: int, today: date) -> None:
        result = waterfall.refund(self.installments, amount, today)
        steps = funding.refund_steps(
            principal_cut_minor=result.principal_cut_minor,
            principal_returned_minor=sum(x.principal_returned_minor for x in result.lines),
            fee_cut_minor=sum(x.fee_cut_minor for x in result.lines),
            fee_returned_minor=sum(x.fee_returned_minor for x in result.lines),
            penalty_cut_minor=sum(x.penalty_cut_minor for x in result.lines),
            penalty_returned_minor=sum(x.penalty_returned_minor for x in result.lines))
        before = self.owed
        self.installments = waterfall.apply_refund(self.installments, result)
        assert funding.steps_owed(before, steps) == self.owed
        self.book(steps, before)

    def penalty(self, sequence: int, amount: int) -> None:
        before = self.owed
        self.installments = tuple(replace(i, penalty_minor=i.penalty_minor + amount) if i.sequence == sequence else i
                                  for i in self.installments)
        self.book(funding.penalty_steps(amount), before)

    def waive(self, sequence: int, amount: int) -> None:
        before = self.owed
        self.installments = tuple(replace(i, penalty_minor=i.penalty_minor - amount) if i.sequence == sequence else i
                                  for i in self.installments)
        self.book(funding.waiver_steps(amount), before)

    def charge_off(self, claim_bps: int) -> None:
        before = self.owed
        claim = before.principal_minor * claim_bps // 10_000
        self.active = False
        self.book(funding.charge_off_steps(before), before, claim)


@settings(max_examples=300, deadline=None)
@given(principal=st.integers(10_000, 5_000_000), term=st.sampled_from([3, 6, 12]), shares=shares_st,
       actions=st.lists(st.tuples(st.sampled_from(["repay", "refund", "penalty", "waive", "day"]),
                                  st.integers(1, 400_000), st.integers(1, 12)), max_size=30),
       claim_bps=st.integers(0, 10_000), charge_off=st.booleans())
def test_a_whole_life_keeps_each_stake_the_share_of_what_is_owed(principal, term, shares, actions, claim_bps,
                                                                   charge_off):
    book = Book(principal, term, shares)
    book.check()
    today = START
    for action, amount, n in actions:
        if not book.active or all(i.owed_minor == 0 for i in book.installments):
            break
        if action == "repay":
            book.repay(amount, today)
        elif action == "refund":
            left = sum(i.principal_minor for i in book.installments)
            book.refund(min(amount, left), today)
        elif action == "penalty":
            book.penalty(1 + n % term, amount % 5_000 + 1)
        elif action == "waive":
            i = book.installments[n % term]
            if i.penalty_minor > i.penalty_paid_minor:
                book.waive(i.sequence, 1 + amount % (i.penalty_minor - i.penalty_paid_minor))
        else:
            today += timedelta(days=n * 5)
        book.check()
    if charge_off and book.active:
        book.charge_off(claim_bps)
        assert book.partner.stake == Owed()


def test_stripe_caps_add_up_to_the_maximum_and_close_when_inactive():
    assert stripe_caps(1_000_003, 4, True) == [250_001, 250_001, 250_001, 250_000]
    assert sum(stripe_caps(7, 8, True)) == 7
    assert stripe_caps(1_000, 3, False) == [0, 0, 0]


def test_the_first_partner_that_accepts_the_grade_and_term_is_offered_the_loan():
    def partner(pid, grades, terms, active=True):
        return Partner(pid, pid, Shares(7_000, 5_000), 10**9, frozenset(grades), frozenset(terms), active, 8)

    partners = [partner("b-bank", {Grade.A, Grade.B}, {3, 6}), partner("a-bank", {Grade.A}, {12}),
                partner("c-bank", {Grade.C}, {3}, active=False)]
    assert [funding.choose(partners, Grade.A, 12), funding.choose(partners, Grade.B, 3)] == [partners[1], partners[0]]
    assert funding.choose(partners, Grade.C, 3) is None  # inactive
    assert funding.choose(partners, Grade.E, 3) is None


def test_partner_settings_are_checked_field_by_field():
    problems = funding.check_partner("platform", "", 7_001, 10_001, -1, ["F"], [5], 0)
    assert {p.field for p in problems} == {"partner_id", "name", "principal_share_bps", "fee_share_bps",
                                           "max_exposure_minor", "grades", "terms", "exposure_stripes"}
    assert funding.check_partner("icbc-1", "A bank", 7_000, 5_000, 10**10, ["A", "B"], [3, 6], 8) == []
