"""Journal entries balance; lateness is counted from the oldest unpaid due date."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from server.domain import ledger
from server.domain.errors import InvariantViolation
from server.domain.ledger import EntryKind, JournalEntry, LedgerAccount, Posting
from server.domain.loans import Bucket, InstallmentState, LoanStatus, bucket, days_past_due


@given(principal=st.integers(1, 10**11), fee=st.integers(0, 10**10))
def test_a_capture_entry_balances_and_leaves_out_zero_lines(principal, fee):
    entry = ledger.loan_captured(principal, fee)
    assert sum(p.amount_minor for p in entry.postings) == 0
    assert len(entry.postings) == (4 if fee else 2)
    by_account = {p.ledger_account: p.amount_minor for p in entry.postings}
    assert by_account[LedgerAccount.PRINCIPAL_RECEIVABLE] == principal
    assert by_account[LedgerAccount.MERCHANT_PAYABLE] == -principal


def test_an_unbalanced_entry_cannot_be_made():
    with pytest.raises(InvariantViolation, match="does not balance"):
        JournalEntry(EntryKind.LOAN_CAPTURED, (Posting(LedgerAccount.FEE_RECEIVABLE, 5),
                                               Posting(LedgerAccount.UNEARNED_FEE_INCOME, -4)))


def installment(sequence, due, paid=False):
    return InstallmentState(sequence, due, 10_000, 500, 10_000 if paid else 0, 500 if paid else 0)


def test_days_past_due_count_from_the_oldest_unpaid_due_date():
    schedule = [installment(1, date(2027, 1, 10), paid=True), installment(2, date(2027, 2, 10)),
                installment(3, date(2027, 3, 10))]
    assert days_past_due(schedule, date(2027, 2, 10)) == 0  # due today is not late yet
    assert days_past_due(schedule, date(2027, 2, 11)) == 1
    assert days_past_due(schedule, date(2027, 3, 20)) == 38


@pytest.mark.parametrize("dpd, expected", [
    (0, Bucket.CURRENT), (1, Bucket.M1), (30, Bucket.M1), (31, Bucket.M2), (60, Bucket.M2),
    (61, Bucket.M3), (90, Bucket.M3), (91, Bucket.M4_PLUS), (179, Bucket.M4_PLUS), (180, Bucket.CHARGED_OFF),
])
def test_buckets(dpd, expected):
    assert bucket(dpd) is expected


def test_installment_status_follows_payment_and_time():
    due = date(2027, 2, 10)
    unpaid = installment(1, due)
    assert unpaid.status(date(2027, 2, 10), LoanStatus.ACTIVE) == "SCHEDULED"
    assert unpaid.status(date(2027, 2, 11), LoanStatus.ACTIVE) == "OVERDUE"
    assert installment(1, due, paid=True).status(date(2027, 3, 1), LoanStatus.ACTIVE) == "PAID"
    part = InstallmentState(1, due, 10_000, 500, 0, 500)
    assert part.status(date(2027, 2, 1), LoanStatus.ACTIVE) == "PARTIALLY_PAID"


def test_a_refund_ends_periods_cancelled_not_paid():
    due = date(2027, 2, 10)
    paid, unpaid = installment(1, due, paid=True), installment(2, due)
    # A fully refunded loan: every period, paid before or not (the refund zeroes both).
    emptied = InstallmentState(3, due, 0, 0)
    for period in (paid, unpaid, emptied):
        assert period.status(date(2027, 3, 1), LoanStatus.CANCELLED) == "CANCELLED"
    # A partial refund that emptied a period before anything was paid on it; its waived
    # fee does not make it paid.
    assert InstallmentState(3, due, 0, 0, fee_waived_minor=300).status(
        date(2027, 1, 20), LoanStatus.ACTIVE) == "CANCELLED"
    # A partly refunded period that still owes its fee is still due; once paid, PAID.
    assert InstallmentState(2, due, 0, 300).status(date(2027, 1, 20), LoanStatus.ACTIVE) == "SCHEDULED"
    assert InstallmentState(2, due, 0, 300, 0, 300).status(date(2027, 1, 20), LoanStatus.ACTIVE) == "PAID"
    assert paid.status(date(2027, 3, 1), LoanStatus.PAID_OFF) == "PAID"


@given(st.integers(min_value=-10**12, max_value=10**12), st.integers(min_value=0, max_value=10**10))
def test_a_settled_merchant_days_part_leaves_merchant_payable_whichever_its_sign(payable_minor, fee_minor):
    assume(payable_minor or fee_minor)
    entry = ledger.merchant_day_settled(payable_minor, fee_minor)
    moved = {p.ledger_account: p.amount_minor for p in entry.postings}
    assert entry.kind is EntryKind.MERCHANT_DAY_SETTLED
    assert 0 not in moved.values()
    assert moved.get(LedgerAccount.MERCHANT_PAYABLE, 0) == payable_minor
    assert moved.get(LedgerAccount.MERCHANT_FEE_INCOME, 0) == -fee_minor
    assert moved.get(LedgerAccount.MERCHANT_SETTLEMENT_IN_FLIGHT, 0) == fee_minor - payable_minor


@given(st.integers(min_value=-10**12, max_value=10**12).filter(bool))
def test_a_merchant_payment_moves_an_accounts_part_out_of_flight_as_cash(amount_minor):
    entry = ledger.merchant_paid(amount_minor)
    moved = {p.ledger_account: p.amount_minor for p in entry.postings}
    assert entry.kind is EntryKind.MERCHANT_PAID
    assert moved == {LedgerAccount.MERCHANT_SETTLEMENT_IN_FLIGHT: amount_minor, LedgerAccount.CASH: -amount_minor}
