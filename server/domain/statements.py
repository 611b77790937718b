"""Monthly statements: what the customer owes, and why it moved, told from the ledger.

1. The customer's balance at an instant is the sum of every posting booked before it
   on the four accounts that speak of the customer: PRINCIPAL_RECEIVABLE,
   FEE_RECEIVABLE and PENALTY_RECEIVABLE (what is owed, debits) and
   CUSTOMER_CREDIT_BALANCE (what is owed back, a credit, so it counts negative). Fees
   are receivable from capture (the whole schedule's fees), penalties from the day they
   are assessed. Postings on every other account (cash, merchants, income, the reserve,
   partners) leave the balance alone.
2. The statement dated D closes the local dates [previous statement date, D) (the first
   one: [the day the account opened, D)). Its cut-off is local midnight at the start of
   D in the account's zone.
3. Each journal entry that moves the balance gives one or two lines, by what it is
   (`lines_of`): PURCHASE and FEE (a capture), PENALTY, PAYMENT (the cash received) and
   FEE_WAIVED (future fees dropped by an early repayment), REFUND, PENALTY_WAIVED,
   WRITTEN_OFF, and ADJUSTMENT for any other entry. A line's amount is signed: positive
   raises the balance. The lines of an entry sum to its effect on the balance.
4. A statement shows every entry booked before its cut-off and not shown on an earlier
   one, so opening (the previous closing, 0 for the first) plus its lines is its
   closing, and that is the ledger's balance at its cut-off (`check_ties`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from uuid import UUID
from zoneinfo import ZoneInfo

from server.domain.billing import BillingCycle
from server.domain.errors import InvariantViolation
from server.domain.ledger import EntryKind, LedgerAccount

# The ledger accounts whose sum is what the customer owes.
CUSTOMER_ACCOUNTS = frozenset({LedgerAccount.PRINCIPAL_RECEIVABLE, LedgerAccount.FEE_RECEIVABLE,
                               LedgerAccount.PENALTY_RECEIVABLE, LedgerAccount.CUSTOMER_CREDIT_BALANCE})
# Statements issued for one account in one pass at most: a bot away for two years
# catches up over a few passes rather than holding the account's lock for minutes.
CATCH_UP_MAX = 12


class LineKind(enum.StrEnum):
    PURCHASE = "PURCHASE"
    FEE = "FEE"
    PENALTY = "PENALTY"
    PAYMENT = "PAYMENT"
    REFUND = "REFUND"
    FEE_WAIVED = "FEE_WAIVED"
    PENALTY_WAIVED = "PENALTY_WAIVED"
    WRITTEN_OFF = "WRITTEN_OFF"
    ADJUSTMENT = "ADJUSTMENT"


# The section each kind of line adds to; the sign of the section in the closing
# balance is the sign of its lines.
_SECTION = {
    LineKind.PURCHASE: "purchases_minor", LineKind.FEE: "fees_minor", LineKind.PENALTY: "penalties_minor",
    LineKind.PAYMENT: "payments_minor", LineKind.REFUND: "refunds_minor", LineKind.FEE_WAIVED: "waivers_minor",
    LineKind.PENALTY_WAIVED: "waivers_minor", LineKind.WRITTEN_OFF: "written_off_minor",
    LineKind.ADJUSTMENT: "adjustments_minor",
}
_RAISING = frozenset({LineKind.PURCHASE, LineKind.FEE, LineKind.PENALTY})
_LOWERING = frozenset({LineKind.PAYMENT, LineKind.REFUND, LineKind.FEE_WAIVED, LineKind.PENALTY_WAIVED,
                       LineKind.WRITTEN_OFF})


# Entries that give one line of their whole effect; any kind not named here is an
# ADJUSTMENT, so a new kind of entry shows on statements before it is given a name.
_ONE_LINE: dict[str, LineKind] = {
    EntryKind.PENALTY_ASSESSED.value: LineKind.PENALTY, EntryKind.LOAN_REFUNDED.value: LineKind.REFUND,
    EntryKind.PENALTY_WAIVED.value: LineKind.PENALTY_WAIVED, EntryKind.LOAN_CHARGED_OFF.value: LineKind.WRITTEN_OFF,
}


@dataclass(frozen=True)
class EntryPostings:
    """One journal entry as the statement reads it: its postings on every account."""

    entry_id: UUID
    kind: str
    reference_id: UUID
    booked_at: datetime
    postings: tuple[tuple[LedgerAccount, int], ...]

    def on(self, *accounts: LedgerAccount) -> int:
        return sum(amount for account, amount in self.postings if account in accounts)

    @property
    def balance_effect_minor(self) -> int:
        return self.on(*CUSTOMER_ACCOUNTS)


@dataclass(frozen=True)
class Line:
    kind: LineKind
    entry_id: UUID
    entry_kind: str
    reference_id: UUID
    booked_at: datetime
    amount_minor: int


def lines_of(entry: EntryPostings) -> list[Line]:
    """The lines an entry gives (none when it leaves the balance alone); they sum to
    its effect on the balance."""
    effect = entry.balance_effect_minor
    parts: list[tuple[LineKind, int]]
    if entry.kind == EntryKind.LOAN_CAPTURED:
        parts = [(LineKind.PURCHASE, entry.on(LedgerAccount.PRINCIPAL_RECEIVABLE)),
                 (LineKind.FEE, entry.on(LedgerAccount.FEE_RECEIVABLE))]
    elif entry.kind == EntryKind.REPAYMENT_RECEIVED:
        payment = -entry.on(LedgerAccount.CASH)
        parts = [(LineKind.PAYMENT, payment), (LineKind.FEE_WAIVED, effect - payment)]
    elif entry.kind == EntryKind.CREDIT_BALANCE_APPLIED:
        # The credit balance settling receivables leaves the balance as it was; only
        # the future fees it waives lower it.
        parts = [(LineKind.FEE_WAIVED, effect)]
    else:
        parts = [(_ONE_LINE.get(entry.kind, LineKind.ADJUSTMENT), effect)]
    lines = [Line(kind, entry.entry_id, entry.kind, entry.reference_id, entry.booked_at, amount)
             for kind, amount in parts if amount]
    if sum(line.amount_minor for line in lines) != effect:
        raise InvariantViolation(f"{entry.kind} entry {entry.entry_id}: lines do not sum to its effect {effect}")
    for line in lines:
        if (line.kind in _RAISING and line.amount_minor < 0) or (line.kind in _LOWERING and line.amount_minor > 0):
            raise InvariantViolation(f"{entry.kind} entry {entry.entry_id}: a {line.kind} line of "
                                     f"{line.amount_minor}")
    return lines


@dataclass(frozen=True)
class Sections:
    """A period's movements by section. Each is a positive amount but adjustments,
    which are signed; closing = opening + the raising ones - the lowering ones."""

    purchases_minor: int = 0
    fees_minor: int = 0
    penalties_minor: int = 0
    payments_minor: int = 0
    refunds_minor: int = 0
    waivers_minor: int = 0
    written_off_minor: int = 0
    adjustments_minor: int = 0

    @classmethod
    def of(cls, lines: Iterable[Line]) -> Sections:
        totals = dict.fromkeys(_SECTION.values(), 0)
        for line in lines:
            totals[_SECTION[line.kind]] += line.amount_minor if line.kind not in _LOWERING else -line.amount_minor
        return cls(**totals)

    @property
    def net_minor(self) -> int:
        return (self.purchases_minor + self.fees_minor + self.penalties_minor + self.adjustments_minor
                - self.payments_minor - self.refunds_minor - self.waivers_minor - self.written_off_minor)


@dataclass(frozen=True)
class Owed:
    """What the ledger says the customer owes at an instant, by part."""

    principal_minor: int
    fee_minor: int
    penalty_minor: int
    credit_balance_minor: int

    @classmethod
    def of(cls, balances: dict[LedgerAccount, int]) -> Owed:
        return cls(balances.get(LedgerAccount.PRINCIPAL_RECEIVABLE, 0), balances.get(LedgerAccount.FEE_RECEIVABLE, 0),
                   balances.get(LedgerAccount.PENALTY_RECEIVABLE, 0),
                   -balances.get(LedgerAccount.CUSTOMER_CREDIT_BALANCE, 0))

    @property
    def balance_minor(self) -> int:
        return self.principal_minor + self.fee_minor + self.penalty_minor - self.credit_balance_minor


@dataclass(frozen=True)
class DueInstallment:
    loan_id: UUID
    sequence: int
    order_id: str
    due_date: date
    principal_minor: int
    fee_minor: int
    penalty_minor: int

    @property
    def owed_minor(self) -> int:
        return self.principal_minor + self.fee_minor + self.penalty_minor


def check_ties(opening_minor: int, sections: Sections, owed_at_cutoff: Owed) -> int:
    """The closing balance: opening plus the period's movements, which must be what the
    ledger says at the cut-off. A difference is a bug (an entry booked before an issued
    statement's cut-off after it was issued would show here as one), never rounded away."""
    closing = opening_minor + sections.net_minor
    if closing != owed_at_cutoff.balance_minor:
        raise InvariantViolation(f"statement does not tie to the ledger: opening {opening_minor} + movements "
                                 f"{sections.net_minor} = {closing}, ledger at cut-off {owed_at_cutoff.balance_minor}")
    return closing


def cutoff(statement_date: date, time_zone: str) -> datetime:
    """Local midnight at the start of the statement date: what is booked before it is on
    the statement."""
    return datetime.combine(statement_date, time(0), ZoneInfo(time_zone))


def next_statement_date(cycle: BillingCycle, last_statement_date: date | None, opened_on: date) -> date:
    """The statement after the last one issued (or the first after the account opened):
    when the statement day moved, the open period closes on the first new day after it."""
    return cycle.statement_date_after(last_statement_date or opened_on)


def due_statement_dates(cycle: BillingCycle, last_statement_date: date | None, opened_on: date,
                        today: date) -> list[date]:
    """The statements to issue by `today`, oldest first (at most CATCH_UP_MAX)."""
    dates: list[date] = []
    last = last_statement_date
    while len(dates) < CATCH_UP_MAX:
        upcoming = next_statement_date(cycle, last, opened_on)
        if upcoming > today:
            break
        dates.append(upcoming)
        last = upcoming
    return dates


def worth_sending(opening_minor: int, closing_minor: int, lines: Sequence[object],
                  installments: Sequence[DueInstallment]) -> bool:
    """An account that owed nothing, owes nothing, moved nothing and has nothing due gets
    its statement stored (the chain of periods stays whole) but no email."""
    return bool(opening_minor or closing_minor or lines or installments)
