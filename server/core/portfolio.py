"""The lender's view of the book: the portfolio report as of a day, and stress tests of
its expected loss. Read-only: each runs in one READ ONLY, REPEATABLE READ transaction,
so every batch of accounts is read from the same snapshot and nothing can be written.
The rebuilding rules are in server/domain/portfolio.py, the loss rules in
server/domain/losses.py."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from uuid import UUID

import asyncpg

from server.clock import Clock
from server.core.accounts import DEFAULT_GRADE
from server.db import portfolio as rows
from server.domain.calendar import latest_local_date, local_date
from server.domain.errors import InvalidArgument
from server.domain.loans import Bucket
from server.domain.losses import (
    POLICY_AS_IS,
    ExpectedLoss,
    LossPolicy,
    Scenario,
    expected_loss,
    grade_pds,
    policy_for,
)
from server.domain.portfolio import (
    AccountHistory,
    Book,
    BookBuilder,
    Booked,
    BucketChange,
    InstallmentHistory,
    LoanHistory,
)
from server.domain.pricing import Grade
from server.domain.scorecard import Scorecard
from server.domain.scorecard import load as load_scorecard
from server.domain.waterfall import Component

# The day a report is "today" when no date is asked for: the platform's calendar.
PLATFORM_TIME_ZONE = "Asia/Shanghai"
# Accounts whose histories are read and folded into the sums at a time.
BATCH_ACCOUNTS = 500


@dataclass(frozen=True)
class Totals:
    accounts_with_debt: int
    live_loans: int
    outstanding_principal_minor: int
    # Scheduled fees not yet paid (due or not): the ledger's FEE_RECEIVABLE.
    fees_owed_minor: int
    penalties_owed_minor: int
    reserve_balance_minor: int


@dataclass(frozen=True)
class PortfolioView:
    as_of: date
    totals: Totals
    book: Book
    expected_loss: ExpectedLoss
    # What is shown as it is now, not as it was on `as_of`.
    current_only: tuple[str, ...]
    generated_at: datetime


@dataclass(frozen=True)
class StressView:
    as_of: date
    scenario: Scenario
    # The loss policy as it stands, and under the scenario.
    policy: ExpectedLoss
    stressed: ExpectedLoss
    current_only: tuple[str, ...]


class Portfolio:
    def __init__(self, clock: Clock, *, insurance_share_bps: int = 0, policy: LossPolicy | None = None,
                 scorecard: Scorecard | None = None, charge_off_days: int = 180,
                 batch_accounts: int = BATCH_ACCOUNTS) -> None:
        self._clock = clock
        self.policy = policy or policy_for()
        self.scorecard = scorecard or load_scorecard(self.policy.scorecard_version)
        # A policy that does not fit the scorecard stops the process at start.
        self.policy.check(self.scorecard)
        self.pds = grade_pds(self.scorecard, self.policy)
        self.insurance_share_bps = insurance_share_bps
        self._charge_off_days = charge_off_days
        self._batch_accounts = batch_accounts

    def day(self, asked: date | None) -> date:
        """The report's day: `asked`, or today; never after today anywhere."""
        now = self._clock.now()
        if asked is None:
            return local_date(now, PLATFORM_TIME_ZONE)
        latest = latest_local_date(now)
        if asked > latest:
            raise InvalidArgument.of("as_of_date", f"must not be after today ({latest.isoformat()}): the book "
                                                   "has no future to report")
        return asked

    async def report(self, conn: asyncpg.Connection, as_of: date | None) -> PortfolioView:
        day = self.day(as_of)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            book, totals = await self._read(conn, day)
        loss = self._loss(book, totals, POLICY_AS_IS)
        return PortfolioView(day, totals, book, loss, self._current_only(), self._clock.now())

    async def stress(self, conn: asyncpg.Connection, scenario: Scenario, as_of: date | None) -> StressView:
        day = self.day(as_of)
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            book, totals = await self._read(conn, day)
        return StressView(day, scenario, self._loss(book, totals, POLICY_AS_IS), self._loss(book, totals, scenario),
                          self._current_only())

    def _loss(self, book: Book, totals: Totals, scenario: Scenario) -> ExpectedLoss:
        return expected_loss(book.principal_by(), self.pds, book.pooled_roll_rates(), self.policy, scenario,
                             insurance_share_bps=self.insurance_share_bps,
                             reserve_balance_minor=totals.reserve_balance_minor)

    def _current_only(self) -> tuple[str, ...]:
        return (
            f"expected_loss: PDs, LGD and fallback roll rates are those of {self.policy.version} and "
            f"{self.scorecard.version}, the versions in force now",
            "expected_loss.insurance_share_bps: INSURANCE_SHARE_BPS as set now",
            "days past due: installments are read as scheduled now; a refund booked after the date that cut an "
            "installment already due then makes that installment look smaller than it was",
        )

    async def _read(self, conn: asyncpg.Connection, day: date) -> tuple[Book, Totals]:
        builder = BookBuilder(day, charge_off_days=self._charge_off_days,
                              roll_rate_months=self.policy.roll_rate_months,
                              vintage_months=self.policy.vintage_months)
        after = UUID(int=0)
        while True:
            page = await rows.accounts_page(conn, day, after, self._batch_accounts, DEFAULT_GRADE.value)
            if not page:
                break
            grades = {r["account_id"]: Grade(r["risk_grade"]) for r in page}
            builder.add_all(assemble(grades, await rows.histories(conn, list(grades), day)))
            after = page[-1]["account_id"]
        ledger = await rows.ledger_totals(conn, day)
        book = builder.build()
        totals = Totals(
            accounts_with_debt=ledger["accounts_with_debt"], live_loans=book.live_loans,
            outstanding_principal_minor=ledger["principal_minor"], fees_owed_minor=ledger["fee_minor"],
            penalties_owed_minor=ledger["penalty_minor"], reserve_balance_minor=ledger["reserve_balance_minor"])
        return book, totals


def assemble(grades: dict[UUID, Grade], found: dict[str, list[asyncpg.Record]]) -> list[AccountHistory]:
    """The histories of a batch of accounts from the rows server.db.portfolio read."""
    payments: dict[tuple[UUID, int], list[Booked]] = defaultdict(list)
    principal: dict[UUID, list[Booked]] = defaultdict(list)
    for r in found["payments"]:
        payments[(r["loan_id"], r["sequence"])].append(Booked(r["booked_on"], r["amount_minor"]))
        if r["component"] == Component.PRINCIPAL:
            principal[r["loan_id"]].append(Booked(r["booked_on"], -r["amount_minor"]))
    penalties: dict[tuple[UUID, int], list[Booked]] = defaultdict(list)
    for r in found["penalties"]:
        penalties[(r["loan_id"], r["sequence"])].append(Booked(r["booked_on"], r["amount_minor"]))
    charged_off: dict[UUID, Booked] = {}
    for r in found["principal_entries"]:
        if r["kind"] == "LOAN_CHARGED_OFF":
            charged_off[r["loan_id"]] = Booked(r["booked_on"], -r["amount_minor"])
        else:
            principal[r["loan_id"]].append(Booked(r["booked_on"], r["amount_minor"]))
    installments: dict[UUID, list[InstallmentHistory]] = defaultdict(list)
    for r in found["installments"]:
        key = (r["loan_id"], r["sequence"])
        installments[r["loan_id"]].append(InstallmentHistory(
            r["sequence"], r["due_date"], r["amount_minor"], tuple(penalties[key]), tuple(payments[key])))
    loans: dict[UUID, list[LoanHistory]] = defaultdict(list)
    for r in found["loans"]:
        loans[r["account_id"]].append(LoanHistory(
            r["loan_id"], r["start_date"], r["principal_minor"],
            tuple(sorted(installments[r["loan_id"]], key=lambda i: i.sequence)),
            tuple(principal[r["loan_id"]]), charged_off.get(r["loan_id"])))
    changes: dict[UUID, list[BucketChange]] = defaultdict(list)
    for r in found["bucket_changes"]:
        changes[r["account_id"]].append(BucketChange(r["booked_on"], Bucket(r["bucket"])))
    return [AccountHistory(account_id, grade, tuple(loans[account_id]), tuple(changes[account_id]))
            for account_id, grade in grades.items()]
