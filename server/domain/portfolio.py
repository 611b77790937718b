"""The book as it stood at the end of a day, rebuilt from what was booked: pure
functions over each account's history, and the sums a portfolio report is made of.

"As of day D" means: everything booked before the end of D in the account's time zone
(captures, repayment allocations, refunds, penalty accruals and waivers, charge-offs,
the bot's recorded bucket changes), with days past due counted at D. The rules:

  1. A loan's principal at D is what its receivable held at the end of D: the capture,
     less every principal allocation, refund and charge-off booked by then.
  2. An installment is unpaid at D when its amount (principal + fee as scheduled now),
     plus the penalties booked on it by D, less the waivers and the payments (every
     component) booked by D, is above zero. Days past due at D count from the oldest
     unpaid installment due before D, as `server.domain.loans.days_past_due` does for
     today; a loan charged off by D is not in the live book.
  3. A vintage is the loans captured in one calendar month. At the end of each month on
     book (0: the capture month's last day) its bad principal is the principal of its
     loans 30 or more days past due, plus what was written off at charge-off for those
     charged off by then; the curve is that over the principal captured.
  4. A roll rate is taken over one calendar month: an account's bucket at the start is
     the one the bot last recorded before the month began, at the end the one it last
     recorded by the month's last day (CURRENT if it never recorded one); each account
     weighs by its principal at the start. A cell is the share of the principal in
     bucket F at the start whose account is in bucket T at the end.

Rule 2 reads each installment's amount as scheduled now: a refund booked after D that
cut an installment already due at D makes that installment look smaller than it was.
Everything else is exact to the fen.
"""

from __future__ import annotations

import calendar
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from uuid import UUID

from server.domain.errors import InvariantViolation
from server.domain.loans import Bucket, bucket
from server.domain.money import divide_half_up
from server.domain.pricing import Grade

# Days past due from which a loan counts as bad in a vintage.
VINTAGE_BAD_DAYS = 30
# Buckets in order of lateness: a roll "forward" is to a later one.
BUCKET_ORDER: tuple[Bucket, ...] = (Bucket.CURRENT, Bucket.M1, Bucket.M2, Bucket.M3, Bucket.M4_PLUS,
                                    Bucket.CHARGED_OFF)


@dataclass(frozen=True)
class Booked:
    """An amount booked on a calendar day of the account's zone (negative: taken off)."""

    on: date
    amount_minor: int


@dataclass(frozen=True)
class InstallmentHistory:
    sequence: int
    due_date: date
    # Principal + fee as scheduled now.
    amount_minor: int
    # Penalties accrued (positive) and waived (negative).
    penalties: tuple[Booked, ...] = ()
    # Every repayment allocation to it: penalty, fee and principal alike.
    payments: tuple[Booked, ...] = ()

    def owed_at(self, day: date) -> int:
        return (self.amount_minor + sum(p.amount_minor for p in self.penalties if p.on <= day)
                - sum(p.amount_minor for p in self.payments if p.on <= day))


@dataclass(frozen=True)
class LoanHistory:
    loan_id: UUID
    captured_on: date
    # As captured.
    principal_minor: int
    installments: tuple[InstallmentHistory, ...]
    # The principal receivable's movements other than the charge-off: the capture (+),
    # allocations and refunds (-).
    principal_changes: tuple[Booked, ...]
    # When it was charged off and the principal written off then.
    charged_off: Booked | None = None

    def charged_off_by(self, day: date) -> bool:
        return self.charged_off is not None and self.charged_off.on <= day

    def principal_at(self, day: date) -> int:
        """The principal receivable at the end of `day` (0 once charged off)."""
        if self.charged_off_by(day):
            return 0
        return sum(c.amount_minor for c in self.principal_changes if c.on <= day)

    def days_past_due_at(self, day: date) -> int:
        """Days since the oldest installment due before `day` that was unpaid at its end."""
        unpaid = [i.due_date for i in self.installments if i.due_date < day and i.owed_at(day) > 0]
        return (day - min(unpaid)).days if unpaid else 0

    def bad_principal_at(self, day: date) -> int:
        """What a vintage counts as bad at the end of `day` (rule 3)."""
        if self.charged_off is not None and self.charged_off_by(day):
            return self.charged_off.amount_minor
        principal = self.principal_at(day)
        if principal > 0 and self.days_past_due_at(day) >= VINTAGE_BAD_DAYS:
            return principal
        return 0


@dataclass(frozen=True)
class BucketChange:
    """A bucket the bot recorded for the account, on a day of the account's zone."""

    on: date
    bucket: Bucket


@dataclass(frozen=True)
class AccountHistory:
    account_id: UUID
    # The account's grade at the report's date.
    grade: Grade
    loans: tuple[LoanHistory, ...]
    # In the order recorded.
    bucket_changes: tuple[BucketChange, ...] = ()

    def principal_at(self, day: date) -> int:
        return sum(loan.principal_at(day) for loan in self.loans)

    def bucket_at(self, day: date) -> Bucket:
        """The bucket last recorded by the end of `day` (CURRENT before any)."""
        found = Bucket.CURRENT
        for change in self.bucket_changes:
            if change.on <= day:
                found = change.bucket
        return found


# -- calendar months ------------------------------------------------------------------------

def month_of(day: date) -> date:
    """The month as its first day."""
    return day.replace(day=1)


def last_day(month: date) -> date:
    return month.replace(day=calendar.monthrange(month.year, month.month)[1])


def add_months(month: date, months: int) -> date:
    index = month.year * 12 + month.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def months_between(first: date, later: date) -> int:
    """Whole calendar months from the month of `first` to the month of `later`."""
    return (later.year - first.year) * 12 + later.month - first.month


def complete_months(as_of: date, count: int) -> tuple[date, ...]:
    """The last `count` calendar months that ended by `as_of`, oldest first."""
    if count < 0:
        raise InvariantViolation(f"a window of {count} months")
    newest = month_of(as_of) if last_day(as_of) == as_of else add_months(month_of(as_of), -1)
    return tuple(add_months(newest, -k) for k in reversed(range(count)))


# -- the sums -------------------------------------------------------------------------------

def share_bps(part_minor: int, whole_minor: int) -> int:
    """part / whole in basis points, halves up; 0 of nothing is 0."""
    if whole_minor <= 0:
        return 0
    return divide_half_up(part_minor * 10_000, whole_minor)


@dataclass(frozen=True)
class Exposure:
    """Live loans and their principal in one grade and bucket."""

    grade: Grade
    bucket: Bucket
    loans: int
    principal_minor: int


@dataclass(frozen=True)
class VintagePoint:
    months_on_book: int
    observed_on: date
    bad_principal_minor: int
    share_bps: int


@dataclass(frozen=True)
class Vintage:
    capture_month: date
    loans: int
    principal_minor: int
    points: tuple[VintagePoint, ...]


@dataclass(frozen=True)
class RollRate:
    month: date
    from_bucket: Bucket
    to_bucket: Bucket
    # The start principal of accounts that went from `from_bucket` to `to_bucket`.
    principal_minor: int
    # All the start principal in `from_bucket`.
    from_principal_minor: int

    @property
    def share_bps(self) -> int:
        return share_bps(self.principal_minor, self.from_principal_minor)


@dataclass(frozen=True)
class Book:
    as_of: date
    accounts: int
    live_loans: int
    exposure: tuple[Exposure, ...]
    vintages: tuple[Vintage, ...]
    roll_rates: tuple[RollRate, ...]
    roll_rate_months: tuple[date, ...]

    @property
    def outstanding_principal_minor(self) -> int:
        return sum(e.principal_minor for e in self.exposure)

    def principal_by(self) -> dict[tuple[Grade, Bucket], int]:
        return {(e.grade, e.bucket): e.principal_minor for e in self.exposure}

    def pooled_roll_rates(self) -> dict[tuple[Bucket, Bucket], int]:
        """Principal moved from each bucket to each, summed over the window's months."""
        pooled: dict[tuple[Bucket, Bucket], int] = defaultdict(int)
        for rate in self.roll_rates:
            pooled[(rate.from_bucket, rate.to_bucket)] += rate.principal_minor
        return dict(pooled)


@dataclass
class BookBuilder:
    """Takes the accounts one at a time (their histories can be read in batches) and
    keeps only the sums."""

    as_of: date
    charge_off_days: int = 180
    roll_rate_months: int = 6
    vintage_months: int = 36
    _accounts: int = 0
    _live_loans: int = 0
    _exposure: dict[tuple[Grade, Bucket], list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    _vintage_loans: dict[date, list[int]] = field(default_factory=lambda: defaultdict(lambda: [0, 0]))
    _vintage_bad: dict[tuple[date, int], int] = field(default_factory=lambda: defaultdict(int))
    _rolls: dict[tuple[date, Bucket, Bucket], int] = field(default_factory=lambda: defaultdict(int))

    def __post_init__(self) -> None:
        self._months = complete_months(self.as_of, self.roll_rate_months)
        self._first_vintage = add_months(month_of(self.as_of), -(self.vintage_months - 1))

    def add(self, account: AccountHistory) -> None:
        self._accounts += 1
        for loan in account.loans:
            if loan.captured_on > self.as_of:
                raise InvariantViolation(f"loan {loan.loan_id} captured after the report's date")
            self._add_exposure(account.grade, loan)
            self._add_vintage(loan)
        for month in self._months:
            start, end = add_months(month, -1), month
            weight = account.principal_at(last_day(start))
            if weight:
                self._rolls[(month, account.bucket_at(last_day(start)), account.bucket_at(last_day(end)))] += weight

    def add_all(self, accounts: Iterable[AccountHistory]) -> BookBuilder:
        for account in accounts:
            self.add(account)
        return self

    def _add_exposure(self, grade: Grade, loan: LoanHistory) -> None:
        principal = loan.principal_at(self.as_of)
        if principal <= 0:
            return
        self._live_loans += 1
        cell = self._exposure[(grade, bucket(loan.days_past_due_at(self.as_of), self.charge_off_days))]
        cell[0] += 1
        cell[1] += principal

    def _add_vintage(self, loan: LoanHistory) -> None:
        month = month_of(loan.captured_on)
        if month < self._first_vintage:
            return
        totals = self._vintage_loans[month]
        totals[0] += 1
        totals[1] += loan.principal_minor
        for k in range(months_between(month, self.as_of) + 1):
            day = last_day(add_months(month, k))
            if day > self.as_of:
                break
            self._vintage_bad[(month, k)] += loan.bad_principal_at(day)

    def build(self) -> Book:
        exposure = tuple(Exposure(g, b, loans, principal)
                         for (g, b), (loans, principal) in sorted(self._exposure.items(), key=_grade_bucket_key))
        vintages = []
        for month in sorted(self._vintage_loans):
            loans, principal = self._vintage_loans[month]
            points = []
            for k in range(months_between(month, self.as_of) + 1):
                day = last_day(add_months(month, k))
                if day > self.as_of:
                    break
                bad = self._vintage_bad[(month, k)]
                points.append(VintagePoint(k, day, bad, share_bps(bad, principal)))
            vintages.append(Vintage(month, loans, principal, tuple(points)))
        from_totals: dict[tuple[date, Bucket], int] = defaultdict(int)
        for (month, start, _), principal in self._rolls.items():
            from_totals[(month, start)] += principal
        rolls = tuple(RollRate(month, start, end, principal, from_totals[(month, start)])
                      for (month, start, end), principal in sorted(self._rolls.items(), key=_roll_key))
        return Book(self.as_of, self._accounts, self._live_loans, exposure, tuple(vintages), rolls, self._months)


def _roll_key(item: tuple[tuple[date, Bucket, Bucket], int]) -> tuple[date, int, int]:
    (month, start, end), _ = item
    return month, BUCKET_ORDER.index(start), BUCKET_ORDER.index(end)


def _grade_bucket_key(item: tuple[tuple[Grade, Bucket], list[int]]) -> tuple[str, int]:
    (grade, b), _ = item
    return grade.value, BUCKET_ORDER.index(b)


def not_cured(pooled: Mapping[tuple[Bucket, Bucket], int], start: Bucket) -> tuple[int, int]:
    """(principal that did not cure, all principal) of those in `start` at a month's start,
    from principal moved between buckets: not cured is ending the month in `start` or a
    later bucket."""
    at = BUCKET_ORDER.index(start)
    total = sum(p for (f, _), p in pooled.items() if f is start)
    stayed = sum(p for (f, t), p in pooled.items() if f is start and BUCKET_ORDER.index(t) >= at)
    return stayed, total
