"""Double-entry bookkeeping: every business event is one journal entry whose postings
sum to zero. Debits are positive amounts, credits negative.

Chart of accounts (per customer account, so the books can be sharded by account):

    PRINCIPAL_RECEIVABLE   asset: principal the customer owes on loans
    FEE_RECEIVABLE         asset: scheduled fees the customer owes
    MERCHANT_PAYABLE       liability: what the platform owes merchants for captured orders
    UNEARNED_FEE_INCOME    liability: fees scheduled but not yet earned
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from server.domain.errors import InvariantViolation


class LedgerAccount(enum.StrEnum):
    PRINCIPAL_RECEIVABLE = "PRINCIPAL_RECEIVABLE"
    FEE_RECEIVABLE = "FEE_RECEIVABLE"
    MERCHANT_PAYABLE = "MERCHANT_PAYABLE"
    UNEARNED_FEE_INCOME = "UNEARNED_FEE_INCOME"


class EntryKind(enum.StrEnum):
    LOAN_CAPTURED = "LOAN_CAPTURED"


@dataclass(frozen=True)
class Posting:
    ledger_account: LedgerAccount
    amount_minor: int


@dataclass(frozen=True)
class JournalEntry:
    kind: EntryKind
    postings: tuple[Posting, ...]

    def __post_init__(self) -> None:
        if not self.postings:
            raise InvariantViolation(f"{self.kind} entry has no postings")
        if any(p.amount_minor == 0 for p in self.postings):
            raise InvariantViolation(f"{self.kind} entry has a zero posting")
        if sum(p.amount_minor for p in self.postings) != 0:
            raise InvariantViolation(f"{self.kind} entry does not balance: {self.postings}")


def _entry(kind: EntryKind, *pairs: tuple[LedgerAccount, LedgerAccount, int]) -> JournalEntry:
    """An entry from (debit account, credit account, amount) pairs, zero amounts left out."""
    postings: list[Posting] = []
    for debit, credit, amount in pairs:
        if amount < 0:
            raise InvariantViolation(f"{kind}: negative amount {amount}")
        if amount:
            postings += [Posting(debit, amount), Posting(credit, -amount)]
    return JournalEntry(kind, tuple(postings))


def loan_captured(principal_minor: int, total_fee_minor: int) -> JournalEntry:
    """The loan is owed by the customer; the merchant is owed the order's price; the
    scheduled fees are owed too, and earned as time passes."""
    return _entry(
        EntryKind.LOAN_CAPTURED,
        (LedgerAccount.PRINCIPAL_RECEIVABLE, LedgerAccount.MERCHANT_PAYABLE, principal_minor),
        (LedgerAccount.FEE_RECEIVABLE, LedgerAccount.UNEARNED_FEE_INCOME, total_fee_minor),
    )
