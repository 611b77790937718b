"""What the core hands back to its callers: plain values, read at one instant."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, TypeAlias
from uuid import UUID

import asyncpg

from server.db import authorizations as authorization_rows
from server.db import loans as loan_rows
from server.domain.accounts import AccountStatus, CreditLine
from server.domain.authorizations import AuthorizationStatus, DeclineReason, Hold
from server.domain.billing import BillingCycle
from server.domain.calendar import local_date
from server.domain.funding import BPS, PLATFORM, FunderStake, Owed, Shares, owed_by
from server.domain.loans import Bucket, InstallmentState, LoanStatus, bucket, days_past_due
from server.domain.pricing import Grade, Plan, RepaymentMethod
from server.domain.recoveries import WriteOff
from server.domain.risk import Decision
from server.domain.waterfall import LoanBalance


@dataclass(frozen=True)
class Contact:
    name: str
    email: str
    phone: str
    locale: str
    time_zone: str


@dataclass(frozen=True)
class AccountView:
    account_id: UUID
    customer_id: str
    line: CreditLine
    credit_balance_minor: int
    currency: str
    locale: str
    time_zone: str
    created_at: datetime
    updated_at: datetime
    as_of: datetime
    billing: BillingCycle

    @property
    def status(self) -> AccountStatus:
        return self.line.status

    @property
    def temporary_limit_in_force_minor(self) -> int:
        return self.line.temporary_limit_in_force_minor(self.as_of)

    @property
    def effective_limit_minor(self) -> int:
        return self.line.effective_limit_minor(self.as_of)

    @property
    def available_minor(self) -> int:
        return self.line.available_minor(self.as_of)

    @property
    def today(self) -> date:
        return local_date(self.as_of, self.time_zone)

    @property
    def next_statement_date(self) -> date:
        """The next statement to be issued: today's, on a statement day, but never one
        dated on or before the day the account opened (its first statement closes the
        period that the opening day begins)."""
        opened_on = local_date(self.created_at, self.time_zone)
        return self.billing.statement_date_after(max(opened_on, self.today - timedelta(days=1)))


# A row as read, or a dict of its columns: a row as a write about to be booked leaves it.
Row: TypeAlias = asyncpg.Record | Mapping[str, Any]


def credit_line(row: Row) -> CreditLine:
    return CreditLine(
        status=AccountStatus(row["status"]),
        risk_grade=Grade(row["risk_grade"]),
        credit_limit_minor=row["credit_limit_minor"],
        temporary_limit_minor=row["temporary_limit_minor"],
        temporary_limit_expires_at=row["temporary_limit_expires_at"],
        held_minor=row["held_minor"],
        outstanding_principal_minor=row["outstanding_principal_minor"],
    )


def account_view(row: Row, as_of: datetime) -> AccountView:
    return AccountView(
        account_id=row["account_id"],
        customer_id=row["customer_id"],
        line=credit_line(row),
        credit_balance_minor=row["credit_balance_minor"],
        currency=row["currency"],
        locale=row["locale"],
        time_zone=row["time_zone"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        as_of=as_of,
        billing=billing_cycle(row),
    )


def billing_cycle(row: Row) -> BillingCycle:
    return BillingCycle(row["statement_day"], row["payment_due_days"])


@dataclass(frozen=True)
class RiskView:
    decision: Decision
    score: int
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class AuthorizationView:
    authorization_id: UUID
    account_id: UUID
    merchant_id: str
    order_id: str
    status: AuthorizationStatus
    decline_reason: DeclineReason | None
    decline_message: str
    amount_minor: int
    captured_minor: int
    released_minor: int
    term_months: int
    method: RepaymentMethod
    plan: Plan | None
    # None on a declined authorization: it held nothing, so it never expires.
    expires_at: datetime | None
    loan_id: UUID | None
    # None when no risk rule ran (checks off, or declined before them).
    risk: RiskView | None
    created_at: datetime


def hold(row: asyncpg.Record) -> Hold:
    return Hold(
        status=AuthorizationStatus(row["status"]),
        amount_minor=row["amount_minor"],
        expires_at=row["expires_at"],
        term_months=row["term_months"],
        method=RepaymentMethod(row["method"]),
    )


def authorization_view(row: asyncpg.Record, plan: Plan | None, as_of: datetime) -> AuthorizationView:
    status = hold(row).effective_status(as_of)
    released = row["released_minor"]
    if status is AuthorizationStatus.EXPIRED and row["status"] == AuthorizationStatus.PENDING:
        released = row["amount_minor"]  # expired by time; the sweeper books it shortly
    return AuthorizationView(
        authorization_id=row["authorization_id"],
        account_id=row["account_id"],
        merchant_id=row["merchant_id"],
        order_id=row["order_id"],
        status=status,
        decline_reason=DeclineReason(row["decline_reason"]) if row["decline_reason"] else None,
        decline_message=row["decline_message"] or "",
        amount_minor=row["amount_minor"],
        captured_minor=row["captured_minor"],
        released_minor=released,
        term_months=row["term_months"],
        method=RepaymentMethod(row["method"]),
        plan=plan,
        expires_at=None if status is AuthorizationStatus.DECLINED else row["expires_at"],
        loan_id=row["loan_id"],
        risk=(RiskView(Decision(row["risk_decision"]), row["risk_score"], tuple(row["risk_reasons"]))
              if authorization_rows.risk_assessed(row) else None),
        created_at=row["created_at"],
    )


@dataclass(frozen=True)
class LoanView:
    loan_id: UUID
    account_id: UUID
    authorization_id: UUID
    status: LoanStatus
    principal_minor: int
    term_months: int
    method: RepaymentMethod
    monthly_rate_bps: int
    apr_bps: int
    merchant_id: str
    order_id: str
    currency: str
    installments: tuple[InstallmentState, ...]
    refunded_minor: int
    today: date
    created_at: datetime
    # What its charge-off wrote off and what has been recovered since; None unless the
    # loan is charged off.
    write_off: WriteOff | None = None
    # The loan's funders as booked (co-lending); empty when read without them, or when
    # the loan is the platform's alone.
    funding: tuple[FunderStake, ...] = ()

    @property
    def outstanding_principal_minor(self) -> int:
        if self.status is not LoanStatus.ACTIVE:
            return 0
        return sum(i.principal_minor - i.principal_paid_minor for i in self.installments)

    @property
    def total_fee_minor(self) -> int:
        return sum(i.fee_minor for i in self.installments)

    @property
    def days_past_due(self) -> int:
        if self.status is not LoanStatus.ACTIVE:
            return 0
        return days_past_due(self.installments, self.today)

    @property
    def bucket(self) -> Bucket:
        return bucket(self.days_past_due)

    @property
    def balance(self) -> LoanBalance:
        return LoanBalance(self.loan_id, self.installments)

    @property
    def owed(self) -> Owed:
        """What the customer owes the loan, per component; nothing once it is charged off."""
        if self.status is LoanStatus.CHARGED_OFF:
            return Owed()
        return owed_by(self.installments)

    @property
    def funding_parts(self) -> tuple[FunderStake, ...]:
        """Its funders; a loan no partner funds is the platform's alone, with every share."""
        if self.funding:
            return self.funding
        return (FunderStake(PLATFORM, Shares(BPS, BPS), self.principal_minor, self.owed),)


def installment_state(row: asyncpg.Record) -> InstallmentState:
    return InstallmentState(
        sequence=row["sequence"],
        due_date=row["due_date"],
        principal_minor=row["principal_minor"],
        fee_minor=row["fee_minor"],
        principal_paid_minor=row["principal_paid_minor"],
        fee_paid_minor=row["fee_paid_minor"],
        penalty_minor=row["penalty_minor"],
        penalty_paid_minor=row["penalty_paid_minor"],
        fee_waived_minor=row["fee_waived_minor"],
    )


async def active_loans(conn: asyncpg.Connection, account_id: UUID, time_zone: str, as_of: datetime) -> list[LoanView]:
    """The account's active loans with their installments, as of `as_of` in its zone."""
    return [loan_view(loan, installments, time_zone, as_of)
            for loan, installments in await loan_rows.active_for_account(conn, account_id)]


def loan_view(loan: Row, installments: list[asyncpg.Record], time_zone: str,
              as_of: datetime) -> LoanView:
    return LoanView(
        loan_id=loan["loan_id"],
        account_id=loan["account_id"],
        authorization_id=loan["authorization_id"],
        status=LoanStatus(loan["status"]),
        principal_minor=loan["principal_minor"],
        term_months=loan["term_months"],
        method=RepaymentMethod(loan["method"]),
        monthly_rate_bps=loan["monthly_rate_bps"],
        apr_bps=loan["apr_bps"],
        merchant_id=loan["merchant_id"],
        order_id=loan["order_id"],
        currency=loan["currency"],
        installments=tuple(installment_state(r) for r in installments),
        refunded_minor=loan["refunded_minor"],
        today=local_date(as_of, time_zone),
        created_at=loan["created_at"],
        write_off=write_off(loan),
    )


def write_off(loan: Row) -> WriteOff | None:
    """A charged-off loan's written-off debt, from its row; None for any other loan."""
    if loan["status"] != LoanStatus.CHARGED_OFF:
        return None
    return WriteOff(
        loan_id=loan["loan_id"],
        written_off=Owed(loan["written_off_principal_minor"], loan["written_off_fee_minor"],
                         loan["written_off_penalty_minor"]),
        recovered=Owed(loan["recovered_principal_minor"], loan["recovered_fee_minor"],
                       loan["recovered_penalty_minor"]),
        insurance_claim_minor=loan["insurance_claim_minor"])
