"""Recoveries after charge-off: where each fen paid on written-off debt goes.

At charge-off (server/core/collections.py) a loan's unpaid principal and penalties are
written off against the risk reserve, the insured share of the principal is claimed
back into the reserve (the claim), and a co-funding partner bears its share of the loss
and gets its share of the claim. The customer still owes what was written off
(`WriteOff`): that principal and those penalties, and the fees of periods due by the
charge-off day. The waterfall (server/domain/waterfall.py, step 3) decides how much of
a payment recovers which component; this module splits a recovery by the rules of the
loss, each cumulative over the loan's recoveries so far, so that no fen drifts:

  1. The insurer, who paid the claim on the principal, is subrogated: of the principal
     recovered so far, R, its part is floor(claim x R / principal written off), which is
     the whole claim once all the principal is recovered. It lowers the claim
     receivable: the insurer owes that much less, or is owed it back.
  2. The rest of the principal and every penalty recovered go back to the reserve,
     which absorbed them; recovered fees, which were never earned (they left the books
     at charge-off), are fee income.
  3. A co-funding partner gets its share of what the lenders recover, by the rule of
     its stakes (server/domain/funding.py): floor(principal share x (R - insurer's
     part)) of the principal, floor(fee share x recovered) of penalties and of fees,
     cumulative; its part of one payment is its part after less its part before.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from server.domain.errors import InvariantViolation
from server.domain.funding import Owed, Shares, part
from server.domain.waterfall import Allocated, ChargedOff, Component


@dataclass(frozen=True)
class WriteOff:
    """A charged-off loan's written-off debt and what has been recovered of it."""

    loan_id: UUID
    written_off: Owed
    recovered: Owed
    insurance_claim_minor: int

    def __post_init__(self) -> None:
        owed = self.owed
        if min(owed.principal_minor, owed.fee_minor, owed.penalty_minor,
               self.recovered.principal_minor, self.recovered.fee_minor, self.recovered.penalty_minor) < 0:
            raise InvariantViolation(f"loan {self.loan_id}: recovered {self.recovered} of {self.written_off}")
        if not 0 <= self.insurance_claim_minor <= self.written_off.principal_minor:
            raise InvariantViolation(f"loan {self.loan_id}: a claim of {self.insurance_claim_minor} on "
                                     f"{self.written_off.principal_minor} of principal")

    @property
    def owed(self) -> Owed:
        """What the customer still owes: written off less recovered."""
        return self.written_off.minus(self.recovered)

    @property
    def debt(self) -> ChargedOff:
        """The loan's place in the waterfall."""
        owed = self.owed
        return ChargedOff(self.loan_id, owed.principal_minor, owed.fee_minor, owed.penalty_minor)

    def insurer_minor(self, recovered_principal_minor: int) -> int:
        """The insurer's part of `recovered_principal_minor` recovered in all (rule 1)."""
        if self.written_off.principal_minor == 0:
            return 0
        return self.insurance_claim_minor * recovered_principal_minor // self.written_off.principal_minor


@dataclass(frozen=True)
class Recovery:
    """One payment's recovery on one charged-off loan."""

    write_off: WriteOff
    amount: Owed
    # Of amount.principal_minor, the insurer's part (rule 1).
    insurer_minor: int

    @property
    def loan_id(self) -> UUID:
        return self.write_off.loan_id

    @property
    def after(self) -> Owed:
        """Recovered in all, this payment included."""
        return self.write_off.recovered.added(self.amount)

    @property
    def to_reserve_minor(self) -> int:
        """What goes back to the reserve, the partners' parts included (rule 2)."""
        return self.amount.principal_minor - self.insurer_minor + self.amount.penalty_minor


def recover(write_off: WriteOff, amount: Owed) -> Recovery:
    """Recover `amount` of the loan's written-off debt."""
    owed = write_off.owed
    if (min(amount.principal_minor, amount.fee_minor, amount.penalty_minor) < 0
            or amount.principal_minor > owed.principal_minor or amount.fee_minor > owed.fee_minor
            or amount.penalty_minor > owed.penalty_minor):
        raise InvariantViolation(f"loan {write_off.loan_id}: recovering {amount} of {owed} still owed")
    before = write_off.recovered.principal_minor
    insurer = write_off.insurer_minor(before + amount.principal_minor) - write_off.insurer_minor(before)
    return Recovery(write_off, amount, insurer)


def recoveries(write_offs: dict[UUID, WriteOff], allocated: Allocated) -> list[Recovery]:
    """The recoveries of an allocation, one per charged-off loan it reached."""
    result = []
    for loan_id, write_off in write_offs.items():
        amount = Owed(allocated.recovered(loan_id, Component.PRINCIPAL), allocated.recovered(loan_id, Component.FEE),
                      allocated.recovered(loan_id, Component.PENALTY))
        if amount.total_minor:
            result.append(recover(write_off, amount))
    return result


@dataclass(frozen=True)
class PartnerRecovery:
    """A partner's part of a recovery (rule 3): of the principal and penalties (back
    from the reserve), and of the fees (its share of fee income)."""

    reserve_minor: int
    fee_minor: int

    @property
    def total_minor(self) -> int:
        return self.reserve_minor + self.fee_minor


def _partner_cumulative(shares: Shares, write_off: WriteOff, recovered: Owed) -> tuple[int, int]:
    lenders_principal = recovered.principal_minor - write_off.insurer_minor(recovered.principal_minor)
    return (part(lenders_principal, shares.principal_share_bps) + part(recovered.penalty_minor, shares.fee_share_bps),
            part(recovered.fee_minor, shares.fee_share_bps))


def partner_recovery(shares: Shares, recovery: Recovery) -> PartnerRecovery:
    """A partner's part of one recovery: its cumulative part after less before."""
    reserve_before, fee_before = _partner_cumulative(shares, recovery.write_off, recovery.write_off.recovered)
    reserve_after, fee_after = _partner_cumulative(shares, recovery.write_off, recovery.after)
    return PartnerRecovery(reserve_after - reserve_before, fee_after - fee_before)
