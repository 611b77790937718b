"""Double-entry bookkeeping: every business event is one journal entry whose postings
sum to zero. Debits are positive amounts, credits negative.

Chart of accounts (per customer account, so the books can be sharded by account):

    CASH                     asset: money received from customers
    PRINCIPAL_RECEIVABLE     asset: principal the customer owes on loans
    FEE_RECEIVABLE           asset: scheduled fees the customer owes
    PENALTY_RECEIVABLE       asset: late penalties the customer owes
    MERCHANT_PAYABLE         liability: what the platform owes merchants for captured orders
                             (a refund reduces it: the merchant gives the price back)
    UNEARNED_FEE_INCOME      liability: fees scheduled but not yet paid
    CUSTOMER_CREDIT_BALANCE  liability: money the customer paid beyond what is owed
    FEE_INCOME               income: fees paid
    PENALTY_INCOME           income: penalties assessed
    BAD_DEBT_EXPENSE         expense: losses beyond the reserve (not used while a reserve exists)
    RISK_RESERVE             liability-like pool: provisions for expected losses
    PROVISION_EXPENSE        expense: provisions made (less those released)
    INSURANCE_CLAIM_RECEIVABLE  asset: the insured share of losses, claimed

Co-lending (server/domain/funding.py; docs/risk.md, "Co-lending"): the accounts above
keep showing each loan whole, as the customer owes it; these show the partners' part:

    PARTNER_FUNDING          asset: cash partners paid out for their shares of loans
    PARTNER_PRINCIPAL_HELD   liability: partners' share of unpaid principal, held for them
    PARTNER_FEE_HELD         liability: partners' share of unpaid fees
    PARTNER_PENALTY_HELD     liability: partners' share of unpaid penalties
    PARTNER_INCOME_SHARE     contra-income: partners' share of fees and penalties owed
    PARTNER_SETTLEMENT_PAYABLE  liability: collected for partners, owed at settlement

Payouts through the payment gateway (server/domain/payment_orders.py):

    PAYOUTS_IN_FLIGHT        liability: credit balance asked to be paid out, result not known yet

Merchant settlement (server/core/merchant_settlements.py):

    MERCHANT_SETTLEMENT_IN_FLIGHT  liability: an account's part of a settled merchant-day
                             less its share of the day's fee, moved out of MERCHANT_PAYABLE
                             when the day settles, until the merchant is paid
    MERCHANT_FEE_INCOME      income: the merchant fee, earned when the day settles

Fees are receivable from capture, against UNEARNED_FEE_INCOME; when paid they become
FEE_INCOME; when waived or refunded the receivable and the unearned income both go.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from server.domain.errors import InvariantViolation
from server.domain.funding import Cause, Moved
from server.domain.waterfall import Component


class LedgerAccount(enum.StrEnum):
    CASH = "CASH"
    PRINCIPAL_RECEIVABLE = "PRINCIPAL_RECEIVABLE"
    FEE_RECEIVABLE = "FEE_RECEIVABLE"
    PENALTY_RECEIVABLE = "PENALTY_RECEIVABLE"
    MERCHANT_PAYABLE = "MERCHANT_PAYABLE"
    UNEARNED_FEE_INCOME = "UNEARNED_FEE_INCOME"
    CUSTOMER_CREDIT_BALANCE = "CUSTOMER_CREDIT_BALANCE"
    FEE_INCOME = "FEE_INCOME"
    PENALTY_INCOME = "PENALTY_INCOME"
    BAD_DEBT_EXPENSE = "BAD_DEBT_EXPENSE"
    RISK_RESERVE = "RISK_RESERVE"
    PROVISION_EXPENSE = "PROVISION_EXPENSE"
    INSURANCE_CLAIM_RECEIVABLE = "INSURANCE_CLAIM_RECEIVABLE"
    PARTNER_FUNDING = "PARTNER_FUNDING"
    PARTNER_PRINCIPAL_HELD = "PARTNER_PRINCIPAL_HELD"
    PARTNER_FEE_HELD = "PARTNER_FEE_HELD"
    PARTNER_PENALTY_HELD = "PARTNER_PENALTY_HELD"
    PARTNER_INCOME_SHARE = "PARTNER_INCOME_SHARE"
    PARTNER_SETTLEMENT_PAYABLE = "PARTNER_SETTLEMENT_PAYABLE"
    PAYOUTS_IN_FLIGHT = "PAYOUTS_IN_FLIGHT"
    MERCHANT_SETTLEMENT_IN_FLIGHT = "MERCHANT_SETTLEMENT_IN_FLIGHT"
    MERCHANT_FEE_INCOME = "MERCHANT_FEE_INCOME"


class EntryKind(enum.StrEnum):
    LOAN_CAPTURED = "LOAN_CAPTURED"
    REPAYMENT_RECEIVED = "REPAYMENT_RECEIVED"
    CREDIT_BALANCE_APPLIED = "CREDIT_BALANCE_APPLIED"
    LOAN_REFUNDED = "LOAN_REFUNDED"
    PENALTY_ASSESSED = "PENALTY_ASSESSED"
    PENALTY_WAIVED = "PENALTY_WAIVED"
    LOAN_CHARGED_OFF = "LOAN_CHARGED_OFF"
    RESERVE_PROVISIONED = "RESERVE_PROVISIONED"
    RESERVE_RELEASED = "RESERVE_RELEASED"
    LOAN_CO_FUNDED = "LOAN_CO_FUNDED"
    PARTNER_SHARES_MOVED = "PARTNER_SHARES_MOVED"
    PAYOUT_REQUESTED = "PAYOUT_REQUESTED"
    PAYOUT_SUCCEEDED = "PAYOUT_SUCCEEDED"
    PAYOUT_FAILED = "PAYOUT_FAILED"
    RECOVERY_RECEIVED = "RECOVERY_RECEIVED"
    MERCHANT_DAY_SETTLED = "MERCHANT_DAY_SETTLED"
    MERCHANT_PAID = "MERCHANT_PAID"


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


def _settlement(source: LedgerAccount, principal_minor: int, fee_minor: int, penalty_minor: int,
                waived_fee_minor: int) -> list[tuple[LedgerAccount, LedgerAccount, int]]:
    return [
        (source, LedgerAccount.PRINCIPAL_RECEIVABLE, principal_minor),
        (source, LedgerAccount.FEE_RECEIVABLE, fee_minor),
        (LedgerAccount.UNEARNED_FEE_INCOME, LedgerAccount.FEE_INCOME, fee_minor),
        (source, LedgerAccount.PENALTY_RECEIVABLE, penalty_minor),
        (LedgerAccount.UNEARNED_FEE_INCOME, LedgerAccount.FEE_RECEIVABLE, waived_fee_minor),
    ]


def repayment_received(*, principal_minor: int, fee_minor: int, penalty_minor: int, unapplied_minor: int,
                       waived_fee_minor: int) -> JournalEntry:
    """Cash in: it settles receivables, earns the fees it pays, and what is left is
    owed back to the customer as a credit balance. Waived fees leave the books."""
    return _entry(
        EntryKind.REPAYMENT_RECEIVED,
        *_settlement(LedgerAccount.CASH, principal_minor, fee_minor, penalty_minor, waived_fee_minor),
        (LedgerAccount.CASH, LedgerAccount.CUSTOMER_CREDIT_BALANCE, unapplied_minor),
    )


def credit_balance_applied(*, principal_minor: int, fee_minor: int, penalty_minor: int,
                           waived_fee_minor: int) -> JournalEntry:
    """The customer's credit balance settles what the account owes."""
    return _entry(
        EntryKind.CREDIT_BALANCE_APPLIED,
        *_settlement(LedgerAccount.CUSTOMER_CREDIT_BALANCE, principal_minor, fee_minor, penalty_minor,
                     waived_fee_minor),
    )


def loan_refunded(*, principal_unpaid_minor: int, principal_returned_minor: int, fee_unpaid_minor: int,
                  fee_returned_minor: int, penalty_unpaid_minor: int, penalty_returned_minor: int) -> JournalEntry:
    """The merchant takes back the principal refunded. What the customer still owed of
    it leaves the receivables; what the customer had paid becomes a credit balance;
    fees and penalties removed leave the receivables or, if paid, are given back."""
    return _entry(
        EntryKind.LOAN_REFUNDED,
        (LedgerAccount.MERCHANT_PAYABLE, LedgerAccount.PRINCIPAL_RECEIVABLE, principal_unpaid_minor),
        (LedgerAccount.MERCHANT_PAYABLE, LedgerAccount.CUSTOMER_CREDIT_BALANCE, principal_returned_minor),
        (LedgerAccount.UNEARNED_FEE_INCOME, LedgerAccount.FEE_RECEIVABLE, fee_unpaid_minor),
        (LedgerAccount.FEE_INCOME, LedgerAccount.CUSTOMER_CREDIT_BALANCE, fee_returned_minor),
        (LedgerAccount.PENALTY_INCOME, LedgerAccount.PENALTY_RECEIVABLE, penalty_unpaid_minor),
        (LedgerAccount.PENALTY_INCOME, LedgerAccount.CUSTOMER_CREDIT_BALANCE, penalty_returned_minor),
    )


def payout_requested(amount_minor: int) -> JournalEntry:
    """The customer asked for their credit balance: it is owed to them as a payout on
    its way until the gateway's result is known."""
    return _entry(EntryKind.PAYOUT_REQUESTED,
                  (LedgerAccount.CUSTOMER_CREDIT_BALANCE, LedgerAccount.PAYOUTS_IN_FLIGHT, amount_minor))


def payout_succeeded(amount_minor: int) -> JournalEntry:
    """The gateway paid the customer: cash out."""
    return _entry(EntryKind.PAYOUT_SUCCEEDED, (LedgerAccount.PAYOUTS_IN_FLIGHT, LedgerAccount.CASH, amount_minor))


def payout_failed(amount_minor: int) -> JournalEntry:
    """The gateway did not pay: the amount is the customer's credit balance again."""
    return _entry(EntryKind.PAYOUT_FAILED,
                  (LedgerAccount.PAYOUTS_IN_FLIGHT, LedgerAccount.CUSTOMER_CREDIT_BALANCE, amount_minor))


def penalty_assessed(amount_minor: int) -> JournalEntry:
    return _entry(EntryKind.PENALTY_ASSESSED,
                  (LedgerAccount.PENALTY_RECEIVABLE, LedgerAccount.PENALTY_INCOME, amount_minor))


def penalty_waived(amount_minor: int) -> JournalEntry:
    return _entry(EntryKind.PENALTY_WAIVED,
                  (LedgerAccount.PENALTY_INCOME, LedgerAccount.PENALTY_RECEIVABLE, amount_minor))


def loan_charged_off(*, principal_minor: int, fee_minor: int, penalty_minor: int,
                     insurance_claim_minor: int = 0) -> JournalEntry:
    """Write the loan off against the risk reserve: unpaid principal and penalties are the
    loss; unpaid fees were never earned, so they simply leave the books. The insured
    share of the loss is claimed back into the reserve."""
    return _entry(
        EntryKind.LOAN_CHARGED_OFF,
        (LedgerAccount.RISK_RESERVE, LedgerAccount.PRINCIPAL_RECEIVABLE, principal_minor),
        (LedgerAccount.UNEARNED_FEE_INCOME, LedgerAccount.FEE_RECEIVABLE, fee_minor),
        (LedgerAccount.RISK_RESERVE, LedgerAccount.PENALTY_RECEIVABLE, penalty_minor),
        (LedgerAccount.INSURANCE_CLAIM_RECEIVABLE, LedgerAccount.RISK_RESERVE, insurance_claim_minor),
    )


def recovery_received(*, source: LedgerAccount, principal_minor: int, fee_minor: int, penalty_minor: int,
                      insurer_minor: int) -> JournalEntry:
    """Money (CASH, or the CUSTOMER_CREDIT_BALANCE) paid on a charged-off loan's
    written-off debt (server/domain/recoveries.py): the principal and penalties go back
    to the reserve that absorbed them, except the insurer's part of the principal, which
    lowers the claim; fees, which left the books unearned, are earned now."""
    if source not in (LedgerAccount.CASH, LedgerAccount.CUSTOMER_CREDIT_BALANCE):
        raise InvariantViolation(f"a recovery paid from {source}")
    if not 0 <= insurer_minor <= principal_minor:
        raise InvariantViolation(f"the insurer's {insurer_minor} of a recovered principal of {principal_minor}")
    return _entry(
        EntryKind.RECOVERY_RECEIVED,
        (source, LedgerAccount.RISK_RESERVE, principal_minor - insurer_minor + penalty_minor),
        (source, LedgerAccount.INSURANCE_CLAIM_RECEIVABLE, insurer_minor),
        (source, LedgerAccount.FEE_INCOME, fee_minor),
    )


def reserve_provisioned(amount_minor: int) -> JournalEntry:
    return _entry(EntryKind.RESERVE_PROVISIONED,
                  (LedgerAccount.PROVISION_EXPENSE, LedgerAccount.RISK_RESERVE, amount_minor))


def reserve_released(amount_minor: int) -> JournalEntry:
    return _entry(EntryKind.RESERVE_RELEASED,
                  (LedgerAccount.RISK_RESERVE, LedgerAccount.PROVISION_EXPENSE, amount_minor))


_HELD = {Component.PRINCIPAL: LedgerAccount.PARTNER_PRINCIPAL_HELD, Component.FEE: LedgerAccount.PARTNER_FEE_HELD,
         Component.PENALTY: LedgerAccount.PARTNER_PENALTY_HELD}
# Where the other side of a partner's part goes, by its cause.
_AGAINST = {
    Cause.FUNDED: LedgerAccount.PARTNER_FUNDING,
    Cause.ACCRUED: LedgerAccount.PARTNER_INCOME_SHARE,
    Cause.COLLECTED: LedgerAccount.PARTNER_SETTLEMENT_PAYABLE,
    Cause.RETURNED: LedgerAccount.PARTNER_SETTLEMENT_PAYABLE,
    Cause.FORGONE: LedgerAccount.PARTNER_INCOME_SHARE,
    Cause.WRITTEN_OFF: LedgerAccount.RISK_RESERVE,
}


def partner_shares(kind: EntryKind, moves: list[Moved]) -> JournalEntry | None:
    """The partners' part of an event, beside the event's own entry (which books the
    loan whole). A part that raises a partner's stake credits its HELD account and
    debits the account of its cause; one that lowers it does the reverse:

        FUNDED       PARTNER_FUNDING / PARTNER_PRINCIPAL_HELD       the partner paid its part out
        ACCRUED      PARTNER_INCOME_SHARE / PARTNER_*_HELD          its share of fees, penalties
        COLLECTED    PARTNER_*_HELD / PARTNER_SETTLEMENT_PAYABLE    collected for it, owed to it
        RETURNED     PARTNER_SETTLEMENT_PAYABLE / PARTNER_*_HELD    given back to the customer
        FORGONE      PARTNER_*_HELD / PARTNER_INCOME_SHARE          waived or cut: never earned
        WRITTEN_OFF  PARTNER_*_HELD / RISK_RESERVE                  its share of the loss is its own

    and a recovery (its share of the insurance claim, or of principal and penalties
    recovered after charge-off) moves from the reserve, which took the whole of it, to
    what the platform owes it: RISK_RESERVE / PARTNER_SETTLEMENT_PAYABLE; its share of
    fees recovered after charge-off, booked whole as fee income, is
    PARTNER_INCOME_SHARE / PARTNER_SETTLEMENT_PAYABLE. Postings are netted per account;
    None when nothing moved (shares too small to reach a fen)."""
    totals: dict[LedgerAccount, int] = {}

    def add(account: LedgerAccount, amount: int) -> None:
        totals[account] = totals.get(account, 0) + amount

    for moved in moves:
        for p in moved.parts:
            add(_AGAINST[p.cause], p.amount_minor)
            add(_HELD[p.component], -p.amount_minor)
        add(LedgerAccount.RISK_RESERVE, moved.recovery_minor)
        add(LedgerAccount.PARTNER_INCOME_SHARE, moved.recovered_fee_minor)
        add(LedgerAccount.PARTNER_SETTLEMENT_PAYABLE, -moved.recovery_minor - moved.recovered_fee_minor)
    postings = tuple(Posting(account, amount) for account, amount in totals.items() if amount)
    return JournalEntry(kind, postings) if postings else None


def merchant_day_settled(payable_minor: int, fee_minor: int) -> JournalEntry:
    """An account's part of a settled merchant-day (its captures less its refunds of
    that day, negative when the refunds were more) leaves MERCHANT_PAYABLE, so the day
    owes the merchant nothing more there: the account's share of the day's fee is earned
    (MERCHANT_FEE_INCOME) and the rest is owed to the merchant until it is paid
    (MERCHANT_SETTLEMENT_IN_FLIGHT)."""
    if fee_minor < 0:
        raise InvariantViolation(f"a merchant fee is never negative: {fee_minor}")
    totals = ((LedgerAccount.MERCHANT_PAYABLE, payable_minor),
              (LedgerAccount.MERCHANT_FEE_INCOME, -fee_minor),
              (LedgerAccount.MERCHANT_SETTLEMENT_IN_FLIGHT, fee_minor - payable_minor))
    return JournalEntry(EntryKind.MERCHANT_DAY_SETTLED,
                        tuple(Posting(account, amount) for account, amount in totals if amount))


def merchant_paid(amount_minor: int) -> JournalEntry:
    """The gateway paid the merchant: an account's part of the payment (what its settled
    days put in flight; negative when its refunds took more than it added) leaves
    MERCHANT_SETTLEMENT_IN_FLIGHT as cash."""
    if amount_minor >= 0:
        return _entry(EntryKind.MERCHANT_PAID,
                      (LedgerAccount.MERCHANT_SETTLEMENT_IN_FLIGHT, LedgerAccount.CASH, amount_minor))
    return _entry(EntryKind.MERCHANT_PAID,
                  (LedgerAccount.CASH, LedgerAccount.MERCHANT_SETTLEMENT_IN_FLIGHT, -amount_minor))
