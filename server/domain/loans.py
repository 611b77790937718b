"""Loans: what each installment owes, its status, and how late the loan is."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date


class LoanStatus(enum.StrEnum):
    ACTIVE = "ACTIVE"
    PAID_OFF = "PAID_OFF"
    CANCELLED = "CANCELLED"
    CHARGED_OFF = "CHARGED_OFF"


class InstallmentStatus(enum.StrEnum):
    SCHEDULED = "SCHEDULED"
    PARTIALLY_PAID = "PARTIALLY_PAID"
    PAID = "PAID"
    OVERDUE = "OVERDUE"
    CANCELLED = "CANCELLED"


class Bucket(enum.StrEnum):
    CURRENT = "CURRENT"
    M1 = "M1"
    M2 = "M2"
    M3 = "M3"
    M4_PLUS = "M4_PLUS"
    CHARGED_OFF = "CHARGED_OFF"


@dataclass(frozen=True)
class InstallmentState:
    sequence: int
    due_date: date
    principal_minor: int
    fee_minor: int
    principal_paid_minor: int = 0
    fee_paid_minor: int = 0
    penalty_minor: int = 0
    penalty_paid_minor: int = 0
    # Fee waived on early repayment; already taken out of fee_minor, kept for the record.
    fee_waived_minor: int = 0

    @property
    def amount_minor(self) -> int:
        return self.principal_minor + self.fee_minor

    @property
    def paid_minor(self) -> int:
        return self.principal_paid_minor + self.fee_paid_minor + self.penalty_paid_minor

    @property
    def owed_minor(self) -> int:
        return self.amount_minor + self.penalty_minor - self.paid_minor

    def status(self, today: date, loan_status: LoanStatus) -> InstallmentStatus:
        """A refund can end a period without its being paid: every period of a fully
        refunded (CANCELLED) loan, whatever it had paid (that came back as credit), and a
        period that a partial refund emptied before anything was paid on it (nothing left
        to pay, nothing paid) are CANCELLED, never PAID."""
        if loan_status is LoanStatus.CANCELLED:
            return InstallmentStatus.CANCELLED
        if self.owed_minor == 0:
            if self.amount_minor == 0 and self.paid_minor == 0:
                return InstallmentStatus.CANCELLED
            return InstallmentStatus.PAID
        if self.due_date < today:
            return InstallmentStatus.OVERDUE
        if self.paid_minor > 0:
            return InstallmentStatus.PARTIALLY_PAID
        return InstallmentStatus.SCHEDULED


def days_past_due(installments: Sequence[InstallmentState], today: date) -> int:
    """Days since the oldest unpaid due date; a payment due today is not late yet."""
    unpaid = [i.due_date for i in installments if i.owed_minor > 0 and i.due_date < today]
    return (today - min(unpaid)).days if unpaid else 0


def bucket(dpd: int, charge_off_days: int = 180) -> Bucket:
    if dpd <= 0:
        return Bucket.CURRENT
    if dpd >= charge_off_days:
        return Bucket.CHARGED_OFF
    if dpd <= 30:
        return Bucket.M1
    if dpd <= 60:
        return Bucket.M2
    if dpd <= 90:
        return Bucket.M3
    return Bucket.M4_PLUS
