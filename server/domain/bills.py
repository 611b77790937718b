"""A bill: what an account owes on one due date, over all its loans.

Every loan of an account falls due on the account's repayment days
(server/domain/billing.py), so each month's installments of all its loans make one
bill. Loans captured before the billing cycle keep their own dates; their installments
make bills of their own dates by the same rule. A bill is what reminders speak of: its
total owed and its lines (one per loan's installment with something unpaid).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from uuid import UUID

from server.domain.loans import InstallmentState


@dataclass(frozen=True)
class BillLine:
    """One loan's installment on a bill."""

    loan_id: UUID
    order_id: str
    term_months: int
    apr_bps: int
    installment: InstallmentState

    @property
    def principal_minor(self) -> int:
        return self.installment.principal_minor - self.installment.principal_paid_minor

    @property
    def fee_minor(self) -> int:
        return self.installment.fee_minor - self.installment.fee_paid_minor

    @property
    def penalty_minor(self) -> int:
        return self.installment.penalty_minor - self.installment.penalty_paid_minor

    @property
    def owed_minor(self) -> int:
        return self.installment.owed_minor


@dataclass(frozen=True)
class Bill:
    due_date: date
    lines: tuple[BillLine, ...]

    @property
    def owed_minor(self) -> int:
        return sum(line.owed_minor for line in self.lines)

    @property
    def principal_minor(self) -> int:
        return sum(line.principal_minor for line in self.lines)

    @property
    def fee_minor(self) -> int:
        return sum(line.fee_minor for line in self.lines)

    @property
    def penalty_minor(self) -> int:
        return sum(line.penalty_minor for line in self.lines)

    def days_past_due(self, today: date) -> int:
        return max(0, (today - self.due_date).days)


def bills(lines: Iterable[BillLine]) -> dict[date, Bill]:
    """The unpaid bills of these lines, by due date, oldest first. A line with nothing
    owed is left off; a bill with no line left is paid and not listed."""
    by_date: dict[date, list[BillLine]] = defaultdict(list)
    for line in lines:
        if line.owed_minor > 0:
            by_date[line.installment.due_date].append(line)
    return {due: Bill(due, tuple(sorted(found, key=lambda line: (line.order_id, str(line.loan_id)))))
            for due, found in sorted(by_date.items())}
