"""Co-lending: how a loan's money is shared between the platform and funding partners.

The rule, written down once and used for every movement of every loan:

  1. A partner holds a share of each component of a loan, in basis points: its
     principal share for principal, its fee-income share for fees and for penalties
     (both are income). The platform keeps at least 30 % of the principal
     (MAX_PARTNER_PRINCIPAL_SHARE_BPS), as Chinese rules on joint loans require.
  2. A partner's stake in a component is floor(share x unpaid / 10,000), where unpaid
     is what the customer still owes the loan of that component. The platform's stake
     is the rest: every remainder fen is the platform's.
  3. Every event (capture, repayment, refund, penalty, waiver, charge-off) is a
     sequence of steps; each step changes one component's unpaid amount for one cause.
     A partner's part of a step is its stake after the step minus its stake before.
  4. So a partner's balance, the sum of its parts so far, is its stake by construction,
     whatever the number of events: it never drifts. Each part is within 1 fen of the
     exact share of the step (the difference of two floors); the platform's part is the
     step less the partners' parts, so the parts add up to the step exactly.
  5. An amount that is not a balance (the insured share of a charge-off, claimed for
     the partner) is split once, by the same floor: the platform keeps the remainder.

Within one event the steps run in a fixed order, which decides where a part's fen falls
when two steps touch one component: payments first, then waivers (repayment); given
back, then cut (refund).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from uuid import UUID

from server.domain.errors import FieldViolation, InvariantViolation
from server.domain.loans import InstallmentState
from server.domain.pricing import Grade
from server.domain.waterfall import Component

# The platform, as a funder of its own loans (its rows in loan_funding).
PLATFORM = "platform"
BPS = 10_000
# A partner funds at most 70 % of a loan's principal: the platform keeps at least 30 %.
MAX_PARTNER_PRINCIPAL_SHARE_BPS = 7_000
MAX_EXPOSURE_STRIPES = 64
TERMS = frozenset({1, 3, 6, 12, 24})


class Cause(enum.StrEnum):
    """Why a component's unpaid amount moved; it decides where a partner's part is booked."""

    FUNDED = "FUNDED"            # principal lent at capture: the partner paid its part out
    ACCRUED = "ACCRUED"          # fees scheduled at capture, penalties assessed
    COLLECTED = "COLLECTED"      # paid by the customer, or unpaid principal the merchant refunds
    RETURNED = "RETURNED"        # paid before and given back to the customer by a refund
    FORGONE = "FORGONE"          # fees and penalties waived, cut by a refund, or left at charge-off
    WRITTEN_OFF = "WRITTEN_OFF"  # principal and penalties lost at charge-off


# Causes whose parts are money the platform collects for the partner (or gives back).
SETTLED = frozenset({Cause.COLLECTED, Cause.RETURNED})


@dataclass(frozen=True)
class Owed:
    """Amounts per component: what a loan's customer owes, or a funder's stake in it."""

    principal_minor: int = 0
    fee_minor: int = 0
    penalty_minor: int = 0

    def of(self, component: Component) -> int:
        return {Component.PRINCIPAL: self.principal_minor, Component.FEE: self.fee_minor,
                Component.PENALTY: self.penalty_minor}[component]

    def plus(self, component: Component, delta_minor: int) -> Owed:
        field = {Component.PRINCIPAL: "principal_minor", Component.FEE: "fee_minor",
                 Component.PENALTY: "penalty_minor"}[component]
        return replace(self, **{field: getattr(self, field) + delta_minor})

    def added(self, other: Owed) -> Owed:
        return Owed(self.principal_minor + other.principal_minor, self.fee_minor + other.fee_minor,
                    self.penalty_minor + other.penalty_minor)

    def minus(self, other: Owed) -> Owed:
        return Owed(self.principal_minor - other.principal_minor, self.fee_minor - other.fee_minor,
                    self.penalty_minor - other.penalty_minor)

    @property
    def total_minor(self) -> int:
        return self.principal_minor + self.fee_minor + self.penalty_minor


def owed_by(installments: Iterable[InstallmentState]) -> Owed:
    """What the customer still owes a loan, per component."""
    rows = list(installments)
    return Owed(sum(i.principal_minor - i.principal_paid_minor for i in rows),
                sum(i.fee_minor - i.fee_paid_minor for i in rows),
                sum(i.penalty_minor - i.penalty_paid_minor for i in rows))


@dataclass(frozen=True)
class Shares:
    principal_share_bps: int
    fee_share_bps: int

    def __post_init__(self) -> None:
        # The platform's own row holds the rest, so any share up to the whole is a share;
        # a partner's is bounded where it is configured (check_partner).
        if not (0 <= self.principal_share_bps <= BPS and 0 <= self.fee_share_bps <= BPS):
            raise InvariantViolation(f"shares out of range: {self}")

    def of(self, component: Component) -> int:
        return self.principal_share_bps if component is Component.PRINCIPAL else self.fee_share_bps


def part(amount_minor: int, share_bps: int) -> int:
    """A partner's part of an amount: the share, rounded down to the fen."""
    if amount_minor < 0:
        raise InvariantViolation(f"a share of a negative amount {amount_minor}")
    return amount_minor * share_bps // BPS


def stake(owed: Owed, shares: Shares) -> Owed:
    """A partner's stake in what is owed (rule 2)."""
    return Owed(part(owed.principal_minor, shares.principal_share_bps), part(owed.fee_minor, shares.fee_share_bps),
                part(owed.penalty_minor, shares.fee_share_bps))


@dataclass(frozen=True)
class Step:
    component: Component
    cause: Cause
    # How the loan's unpaid amount of the component changes: up (+) or down (-).
    delta_minor: int


@dataclass(frozen=True)
class Part:
    """A partner's part of a step: how its stake moved (+ up, - down)."""

    component: Component
    cause: Cause
    amount_minor: int


@dataclass(frozen=True)
class Moved:
    """What an event's steps did to one partner's stake in one loan."""

    funder_id: str
    before: Owed
    after: Owed
    parts: tuple[Part, ...]
    # The insured share of a charge-off claimed for the partner (rule 5), or its part of
    # the principal and penalties recovered after charge-off (server/domain/recoveries.py).
    recovery_minor: int = 0
    # Its part of fees recovered after charge-off.
    recovered_fee_minor: int = 0

    def settled_minor(self, component: Component) -> int:
        """What the platform collected for the partner of a component in this event,
        less what it gave back: money owed to the partner at settlement."""
        return -sum(p.amount_minor for p in self.parts if p.component is component and p.cause in SETTLED)

    @property
    def changed(self) -> bool:
        return self.before != self.after or self.recovery_minor != 0 or self.recovered_fee_minor != 0


def steps_owed(before: Owed, steps: Sequence[Step]) -> Owed:
    """What the loan owes after the steps."""
    owed = before
    for step in steps:
        owed = owed.plus(step.component, step.delta_minor)
        if owed.of(step.component) < 0:
            raise InvariantViolation(f"{step} leaves a negative {step.component} owed")
    return owed


def move(funder_id: str, shares: Shares, owed_before: Owed, steps: Sequence[Step],
         recovery_base_minor: int = 0) -> Moved:
    """One partner's parts of an event's steps on a loan that owed `owed_before`
    (rule 3); `recovery_base_minor` is a claim to split once (rule 5)."""
    owed = owed_before
    held = stake(owed, shares)
    first = held
    parts: list[Part] = []
    for step in steps:
        if step.delta_minor == 0:
            continue
        owed = owed.plus(step.component, step.delta_minor)
        if owed.of(step.component) < 0:
            raise InvariantViolation(f"{step} leaves a negative {step.component} owed")
        after = stake(owed, shares)
        amount = after.of(step.component) - held.of(step.component)
        if amount:
            parts.append(Part(step.component, step.cause, amount))
        held = after
    return Moved(funder_id, first, held, tuple(parts), part(recovery_base_minor, shares.principal_share_bps))


@dataclass(frozen=True)
class FunderStake:
    """A funder of a loan, with its shares and its stake as booked."""

    funder_id: str
    shares: Shares
    funded_principal_minor: int
    stake: Owed
    # The partner's exposure counter the loan was funded from (None for the platform).
    exposure_stripe: int | None = None


def platform_stake(owed: Owed, partners: Iterable[Owed]) -> Owed:
    """The platform's stake: what is owed less every partner's (rule 2)."""
    result = owed
    for held in partners:
        result = result.minus(held)
    if min(result.principal_minor, result.fee_minor, result.penalty_minor) < 0:
        raise InvariantViolation(f"partners hold more than is owed: {owed} less gives {result}")
    return result


@dataclass(frozen=True)
class Funding:
    """An event's effect on every funder of one loan: each partner's move, and the
    platform's stake after (the rest)."""

    loan_id: UUID
    moves: tuple[Moved, ...]
    owed_after: Owed

    @property
    def platform_after(self) -> Owed:
        return platform_stake(self.owed_after, (m.after for m in self.moves))

    @property
    def principal_delta_minor(self) -> int:
        """How the partners' principal (their exposure) moved."""
        return sum(m.after.principal_minor - m.before.principal_minor for m in self.moves)


def fund(loan_id: UUID, funders: Sequence[FunderStake], owed_before: Owed, steps: Sequence[Step],
         recovery_base_minor: int = 0) -> Funding:
    """Every partner's parts of an event on a loan. The stakes as booked must be the
    rule's for `owed_before`: a difference means the books drifted, which is a bug."""
    moves = []
    for funder in funders:
        if funder.funder_id == PLATFORM:
            continue
        if funder.stake != stake(owed_before, funder.shares):
            raise InvariantViolation(f"loan {loan_id}: {funder.funder_id} holds {funder.stake}, "
                                     f"the rule gives {stake(owed_before, funder.shares)} of {owed_before}")
        moves.append(move(funder.funder_id, funder.shares, owed_before, steps, recovery_base_minor))
    return Funding(loan_id, tuple(moves), steps_owed(owed_before, steps))


# -- the steps of each event ---------------------------------------------------------------


def capture_steps(principal_minor: int, total_fee_minor: int) -> tuple[Step, ...]:
    return (Step(Component.PRINCIPAL, Cause.FUNDED, principal_minor),
            Step(Component.FEE, Cause.ACCRUED, total_fee_minor))


def payment_steps(*, principal_minor: int, fee_minor: int, penalty_minor: int,
                  waived_fee_minor: int = 0) -> tuple[Step, ...]:
    """A payment (new money or a credit balance) on one loan, then the fees it waived."""
    return (Step(Component.PENALTY, Cause.COLLECTED, -penalty_minor),
            Step(Component.FEE, Cause.COLLECTED, -fee_minor),
            Step(Component.PRINCIPAL, Cause.COLLECTED, -principal_minor),
            Step(Component.FEE, Cause.FORGONE, -waived_fee_minor))


def refund_steps(*, principal_cut_minor: int, principal_returned_minor: int, fee_cut_minor: int,
                 fee_returned_minor: int, penalty_cut_minor: int, penalty_returned_minor: int) -> tuple[Step, ...]:
    """A refund: what the customer had paid of the amounts cut comes back to them (owed
    again, for a moment), then the cut: principal the merchant takes back is collected
    (the merchant returns its price), fees and penalties cut are forgone."""
    return (Step(Component.PRINCIPAL, Cause.RETURNED, principal_returned_minor),
            Step(Component.PRINCIPAL, Cause.COLLECTED, -principal_cut_minor),
            Step(Component.FEE, Cause.RETURNED, fee_returned_minor),
            Step(Component.FEE, Cause.FORGONE, -fee_cut_minor),
            Step(Component.PENALTY, Cause.RETURNED, penalty_returned_minor),
            Step(Component.PENALTY, Cause.FORGONE, -penalty_cut_minor))


def penalty_steps(assessed_minor: int) -> tuple[Step, ...]:
    return (Step(Component.PENALTY, Cause.ACCRUED, assessed_minor),)


def waiver_steps(waived_minor: int) -> tuple[Step, ...]:
    return (Step(Component.PENALTY, Cause.FORGONE, -waived_minor),)


def charge_off_steps(owed: Owed) -> tuple[Step, ...]:
    """Everything still owed leaves: principal and penalties are lost (the partner bears
    its share), fees were never earned."""
    return (Step(Component.PRINCIPAL, Cause.WRITTEN_OFF, -owed.principal_minor),
            Step(Component.FEE, Cause.FORGONE, -owed.fee_minor),
            Step(Component.PENALTY, Cause.WRITTEN_OFF, -owed.penalty_minor))


# -- partners ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Partner:
    """A funding partner as configured (`python -m server.funding`)."""

    partner_id: str
    name: str
    shares: Shares
    max_exposure_minor: int
    grades: frozenset[Grade]
    terms: frozenset[int]
    active: bool
    exposure_stripes: int

    def accepts(self, grade: Grade, term_months: int) -> bool:
        return self.active and grade in self.grades and term_months in self.terms


def check_partner(partner_id: str, name: str, principal_share_bps: int, fee_share_bps: int, max_exposure_minor: int,
                  grades: Iterable[str], terms: Iterable[int], exposure_stripes: int) -> list[FieldViolation]:
    """Every problem with a partner's settings (empty when none)."""
    problems = []
    if not partner_id or len(partner_id) > 64 or not all(c.isalnum() or c in "-_" for c in partner_id):
        problems.append(FieldViolation("partner_id", "1-64 letters, digits, '-' or '_'"))
    if partner_id == PLATFORM:
        problems.append(FieldViolation("partner_id", f"{PLATFORM!r} is the platform itself"))
    if not name.strip() or len(name) > 200:
        problems.append(FieldViolation("name", "1-200 characters"))
    if not 0 < principal_share_bps <= MAX_PARTNER_PRINCIPAL_SHARE_BPS:
        problems.append(FieldViolation("principal_share_bps", f"must be 1..{MAX_PARTNER_PRINCIPAL_SHARE_BPS} "
                                                              "(the platform keeps at least 30 %)"))
    if not 0 <= fee_share_bps <= BPS:
        problems.append(FieldViolation("fee_share_bps", f"must be 0..{BPS}"))
    if max_exposure_minor < 0:
        problems.append(FieldViolation("max_exposure_minor", "must be zero or more"))
    known = {g.value for g in Grade}
    if not list(grades) or any(g not in known for g in grades):
        problems.append(FieldViolation("grades", f"one or more of {', '.join(sorted(known))}"))
    if not list(terms) or any(t not in TERMS for t in terms):
        problems.append(FieldViolation("terms", f"one or more of {', '.join(map(str, sorted(TERMS)))}"))
    if not 1 <= exposure_stripes <= MAX_EXPOSURE_STRIPES:
        problems.append(FieldViolation("exposure_stripes", f"must be 1..{MAX_EXPOSURE_STRIPES}"))
    return problems


def stripe_caps(max_exposure_minor: int, stripes: int, active: bool) -> list[int]:
    """Each exposure counter's cap: the maximum split evenly, the first counters taking
    the remainder fen, so the caps add up to the maximum. An inactive partner's are 0."""
    if not active:
        return [0] * stripes
    each, rest = divmod(max_exposure_minor, stripes)
    return [each + (1 if n < rest else 0) for n in range(stripes)]


def stripe_of(account_id: UUID, stripes: int) -> int:
    """The exposure counter an account's captures try first: accounts spread evenly,
    so concurrent captures seldom meet on one row."""
    return account_id.int % stripes


def choose(partners: Sequence[Partner], grade: Grade, term_months: int) -> Partner | None:
    """The partner offered a loan: the first, by id, that is active and accepts its
    grade and term. One partner per loan; when its exposure is full the loan is the
    platform's alone."""
    for partner in sorted(partners, key=lambda p: p.partner_id):
        if partner.accepts(grade, term_months):
            return partner
    return None
