"""The repayment waterfall, payoff quotes and refunds: pure functions over installment
states that say where each fen goes.

Waterfall (DESIGN.md section 8), across the loans given, in this order:
  1. overdue installments, oldest due date first: penalty, then fee, then principal;
  2. each loan's current installment (the next one due, today included): penalty, fee,
     principal;
  3. debt written off at charge-off (ChargedOff), each loan in the order given (the
     oldest charge-off first): principal, then penalty, then fee;
  4. future principal, nearest due date first; a future installment whose principal is
     repaid in full has its unpaid fee waived.
Whatever is left is unapplied: the caller keeps it as the account's credit balance.

Written-off debt comes after what is due on live loans, which stops their penalties
and keeps them from a charge-off of their own, and before prepayment, which the
customer owes no one yet (docs/repayment.md, "Recoveries"). Within a charged-off loan,
principal and penalties (the loss the reserve, the insurer and the partners absorbed)
come before fees (which were never earned, so never lost).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date
from fractions import Fraction
from uuid import UUID

from server.domain.errors import InvariantViolation
from server.domain.loans import InstallmentState
from server.domain.money import round_half_up


class Component(enum.StrEnum):
    PENALTY = "PENALTY"
    FEE = "FEE"
    PRINCIPAL = "PRINCIPAL"


@dataclass(frozen=True)
class LoanBalance:
    loan_id: UUID
    installments: tuple[InstallmentState, ...]


@dataclass(frozen=True)
class Allocation:
    loan_id: UUID
    sequence: int
    component: Component
    amount_minor: int


@dataclass(frozen=True)
class Waiver:
    loan_id: UUID
    sequence: int
    amount_minor: int


@dataclass(frozen=True)
class ChargedOff:
    """What the customer still owes a charged-off loan: what was written off less what
    has been recovered, per component."""
    loan_id: UUID
    principal_minor: int
    fee_minor: int
    penalty_minor: int

    @property
    def owed_minor(self) -> int:
        return self.principal_minor + self.fee_minor + self.penalty_minor


@dataclass(frozen=True)
class Recovered:
    """Money applied to a charged-off loan's written-off debt."""
    loan_id: UUID
    component: Component
    amount_minor: int


# The order in which a charged-off loan's debt is recovered (step 3).
RECOVERY_ORDER = (Component.PRINCIPAL, Component.PENALTY, Component.FEE)


@dataclass(frozen=True)
class Allocated:
    allocations: tuple[Allocation, ...]
    waivers: tuple[Waiver, ...]
    unapplied_minor: int
    recoveries: tuple[Recovered, ...] = ()

    @property
    def applied_minor(self) -> int:
        return sum(a.amount_minor for a in self.allocations) + self.recovered_minor

    @property
    def recovered_minor(self) -> int:
        return sum(r.amount_minor for r in self.recoveries)

    def recovered(self, loan_id: UUID, component: Component) -> int:
        return sum(r.amount_minor for r in self.recoveries if r.loan_id == loan_id and r.component is component)

    def total(self, component: Component) -> int:
        return sum(a.amount_minor for a in self.allocations if a.component is component)

    @property
    def waived_minor(self) -> int:
        return sum(w.amount_minor for w in self.waivers)


def _penalty_owed(i: InstallmentState) -> int:
    return i.penalty_minor - i.penalty_paid_minor


def _fee_owed(i: InstallmentState) -> int:
    return i.fee_minor - i.fee_paid_minor


def _principal_owed(i: InstallmentState) -> int:
    return i.principal_minor - i.principal_paid_minor


def allocate(loans: Sequence[LoanBalance], amount_minor: int, today: date,
             charged_off: Sequence[ChargedOff] = ()) -> Allocated:
    """Where `amount_minor` goes across `loans` (given oldest first) and the written-off
    debt of `charged_off` loans (oldest charge-off first) on `today`."""
    if amount_minor < 0:
        raise InvariantViolation(f"cannot allocate a negative amount {amount_minor}")
    state = {(loan.loan_id, i.sequence): i for loan in loans for i in loan.installments}
    order = {loan.loan_id: n for n, loan in enumerate(loans)}
    allocations: list[Allocation] = []
    waivers: list[Waiver] = []
    left = amount_minor

    def pay(loan_id: UUID, sequence: int, component: Component, owed: int) -> None:
        nonlocal left
        paid = min(left, owed)
        if paid <= 0:
            return
        left -= paid
        allocations.append(Allocation(loan_id, sequence, component, paid))
        i = state[(loan_id, sequence)]
        field = {Component.PENALTY: "penalty_paid_minor", Component.FEE: "fee_paid_minor",
                 Component.PRINCIPAL: "principal_paid_minor"}[component]
        state[(loan_id, sequence)] = replace(i, **{field: getattr(i, field) + paid})

    def keys(predicate):
        return sorted(
            ((i.due_date, order[loan_id], i.sequence, loan_id) for (loan_id, _), i in state.items()
             if i.owed_minor > 0 and predicate(i)))

    # 1. Overdue, oldest first.
    for _, _, sequence, loan_id in keys(lambda i: i.due_date < today):
        for component, owed in ((Component.PENALTY, _penalty_owed), (Component.FEE, _fee_owed),
                                (Component.PRINCIPAL, _principal_owed)):
            pay(loan_id, sequence, component, owed(state[(loan_id, sequence)]))

    # 2. The current installment of each loan: the period the customer is in, the first
    #    one not yet past due, whether or not it is already paid.
    current: dict[UUID, int] = {}
    for (loan_id, sequence), i in sorted(state.items(), key=lambda kv: (kv[1].due_date, kv[0][1])):
        if i.due_date >= today:
            current.setdefault(loan_id, sequence)
    for loan_id, sequence in sorted(current.items(), key=lambda kv: (state[kv].due_date, order[kv[0]])):
        for component, owed in ((Component.PENALTY, _penalty_owed), (Component.FEE, _fee_owed),
                                (Component.PRINCIPAL, _principal_owed)):
            pay(loan_id, sequence, component, owed(state[(loan_id, sequence)]))

    # 3. Written-off debt of charged-off loans.
    recoveries: list[Recovered] = []
    for debt in charged_off:
        if min(debt.principal_minor, debt.fee_minor, debt.penalty_minor) < 0:
            raise InvariantViolation(f"charged-off loan {debt.loan_id} owes a negative amount: {debt}")
        for component in RECOVERY_ORDER:
            paid = min(left, {Component.PRINCIPAL: debt.principal_minor, Component.FEE: debt.fee_minor,
                              Component.PENALTY: debt.penalty_minor}[component])
            if paid > 0:
                left -= paid
                recoveries.append(Recovered(debt.loan_id, component, paid))

    # 4. Future principal, nearest first. A future period whose principal this payment
    #    repays in full (or that has none left, when the payment reaches it) has its fee
    #    waived; a payment that runs out before a period waives nothing there.
    for _, _, sequence, loan_id in keys(lambda i: i.due_date >= today):
        if current.get(loan_id) == sequence:
            continue
        i = state[(loan_id, sequence)]
        if left == 0 and (_principal_owed(i) > 0 or _penalty_owed(i) > 0):
            break
        # A period not yet due carries no penalty; should one be there, it goes first.
        pay(loan_id, sequence, Component.PENALTY, _penalty_owed(i))
        pay(loan_id, sequence, Component.PRINCIPAL, _principal_owed(state[(loan_id, sequence)]))
        i = state[(loan_id, sequence)]
        if _principal_owed(i) > 0:
            break  # the payment ran out inside this period: it reaches none after it
        if _fee_owed(i) > 0:
            # Reached with its principal repaid (by this payment, or before it, when the
            # payment ends exactly where this period begins).
            waivers.append(Waiver(loan_id, sequence, _fee_owed(i)))
            state[(loan_id, sequence)] = replace(i, fee_minor=i.fee_paid_minor)

    return Allocated(tuple(allocations), tuple(waivers), left, tuple(recoveries))


def payoff_minor(loan: LoanBalance, today: date) -> int:
    """The exact amount that settles the loan on `today`: everything due or overdue,
    plus future principal with its fees waived."""
    everything = sum(i.owed_minor for i in loan.installments)
    return allocate([loan], everything, today).applied_minor


def apply(installments: Sequence[InstallmentState], loan_id: UUID,
          allocated: Allocated) -> tuple[InstallmentState, ...]:
    """The installments of one loan after an allocation and its waivers."""
    by_sequence = {i.sequence: i for i in installments}
    for a in allocated.allocations:
        if a.loan_id != loan_id:
            continue
        i = by_sequence[a.sequence]
        field = {Component.PENALTY: "penalty_paid_minor", Component.FEE: "fee_paid_minor",
                 Component.PRINCIPAL: "principal_paid_minor"}[a.component]
        by_sequence[a.sequence] = replace(i, **{field: getattr(i, field) + a.amount_minor})
    for w in allocated.waivers:
        if w.loan_id == loan_id:
            i = by_sequence[w.sequence]
            by_sequence[w.sequence] = replace(i, fee_minor=i.fee_minor - w.amount_minor)
    result = tuple(by_sequence[s] for s in sorted(by_sequence))
    for i in result:
        if i.paid_minor > i.amount_minor + i.penalty_minor or i.fee_minor < i.fee_paid_minor:
            raise InvariantViolation(f"installment {loan_id}/{i.sequence} paid beyond what it owes")
    return result


@dataclass(frozen=True)
class InstallmentRefund:
    sequence: int
    principal_cut_minor: int   # principal removed from the schedule
    fee_cut_minor: int         # fee removed from the schedule
    principal_returned_minor: int  # of the cut, what the customer had already paid
    fee_returned_minor: int
    penalty_cut_minor: int = 0
    penalty_returned_minor: int = 0


@dataclass(frozen=True)
class Refund:
    lines: tuple[InstallmentRefund, ...]
    cancels_loan: bool

    @property
    def principal_cut_minor(self) -> int:
        return sum(line.principal_cut_minor for line in self.lines)

    @property
    def unpaid_principal_cut_minor(self) -> int:
        return sum(line.principal_cut_minor - line.principal_returned_minor for line in self.lines)

    @property
    def unpaid_fee_cut_minor(self) -> int:
        return sum(line.fee_cut_minor - line.fee_returned_minor for line in self.lines)

    @property
    def unpaid_penalty_cut_minor(self) -> int:
        return sum(line.penalty_cut_minor - line.penalty_returned_minor for line in self.lines)

    @property
    def returned_minor(self) -> int:
        """What the customer had paid beyond what is now owed: the new credit balance."""
        return sum(line.principal_returned_minor + line.fee_returned_minor + line.penalty_returned_minor
                   for line in self.lines)


def refund(installments: Sequence[InstallmentState], amount_minor: int, today: date) -> Refund:
    """Take `amount_minor` of principal off a loan: from the last installment backwards;
    the fees of installments not yet due shrink in proportion to the principal left. A
    refund of all the principal left cancels the loan: every fee and penalty goes too.
    Whatever had been paid beyond the new amounts is returned to the customer."""
    principal_left = sum(i.principal_minor for i in installments)
    if not 0 < amount_minor <= principal_left:
        raise InvariantViolation(f"refund of {amount_minor} on a loan with {principal_left} principal")
    cancels = amount_minor == principal_left
    ratio = Fraction(principal_left - amount_minor, principal_left)
    to_cut = amount_minor
    lines = []
    for i in sorted(installments, key=lambda x: x.sequence, reverse=True):
        principal_cut = min(to_cut, i.principal_minor)
        to_cut -= principal_cut
        new_principal = i.principal_minor - principal_cut
        if cancels:
            new_fee, new_penalty = 0, 0
        elif i.due_date > today:
            new_fee, new_penalty = round_half_up(i.fee_minor * ratio), i.penalty_minor
        else:
            new_fee, new_penalty = i.fee_minor, i.penalty_minor
        line = InstallmentRefund(
            sequence=i.sequence,
            principal_cut_minor=principal_cut,
            fee_cut_minor=i.fee_minor - new_fee,
            principal_returned_minor=max(0, i.principal_paid_minor - new_principal),
            fee_returned_minor=max(0, i.fee_paid_minor - new_fee),
            penalty_cut_minor=i.penalty_minor - new_penalty,
            penalty_returned_minor=max(0, i.penalty_paid_minor - new_penalty),
        )
        if any((line.principal_cut_minor, line.fee_cut_minor, line.penalty_cut_minor)):
            lines.append(line)
    return Refund(tuple(sorted(lines, key=lambda x: x.sequence)), cancels)


def apply_refund(installments: Sequence[InstallmentState], result: Refund) -> tuple[InstallmentState, ...]:
    by_sequence = {i.sequence: i for i in installments}
    for line in result.lines:
        i = by_sequence[line.sequence]
        by_sequence[line.sequence] = replace(
            i,
            principal_minor=i.principal_minor - line.principal_cut_minor,
            principal_paid_minor=i.principal_paid_minor - line.principal_returned_minor,
            fee_minor=i.fee_minor - line.fee_cut_minor,
            fee_paid_minor=i.fee_paid_minor - line.fee_returned_minor,
            penalty_minor=i.penalty_minor - line.penalty_cut_minor,
            penalty_paid_minor=i.penalty_paid_minor - line.penalty_returned_minor,
        )
    return tuple(by_sequence[s] for s in sorted(by_sequence))
