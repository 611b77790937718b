"""Credit lines: open, read, set limits, temporary raises, freeze and unfreeze."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from server.clock import Clock
from server.core.views import AccountView, Contact, account_view
from server.db import accounts as account_rows
from server.db import acquire
from server.db import loans as loan_rows
from server.db.pool import database_error_kind
from server.domain.accounts import DEFAULT_TEMPORARY_LIMIT_MAX_DAYS, AccountStatus, temporary_limit_expiry
from server.domain.billing import (
    DEFAULT_PAYMENT_DUE_DAYS,
    check_payment_due_days,
    check_statement_day,
    default_statement_day,
)
from server.domain.calendar import local_date
from server.domain.errors import AlreadyExists, FailedPrecondition, NotFound
from server.domain.pricing import Grade
from server.domain.scorecard import Assessment, Scorecard
from server.domain.scorecard import load as load_scorecard

# A new account is priced as a middle grade until an assessment or an operator says
# otherwise.
DEFAULT_GRADE = Grade.C


@dataclass(frozen=True)
class OpenAccount:
    # The id the account will have: derived from the customer (see
    # server.domain.accounts.account_id_of_customer), known before anything is written.
    account_id: UUID
    customer_id: str
    contact: Contact
    # 0: the day the account opens, in its own zone, capped at 28.
    statement_day: int = 0


@dataclass(frozen=True)
class AdjustLimit:
    account_id: UUID
    credit_limit_minor: int
    reason: str
    risk_grade: Grade | None


@dataclass(frozen=True)
class GrantTemporaryLimit:
    account_id: UUID
    temporary_limit_minor: int
    expires_at: datetime | None
    reason: str


@dataclass(frozen=True)
class SetStatementDay:
    account_id: UUID
    statement_day: int


@dataclass(frozen=True)
class ChangeStatus:
    account_id: UUID
    reason: str


async def lock_account(conn: asyncpg.Connection, account_id: UUID, field: str = "account_id") -> asyncpg.Record:
    """Lock the account row for the rest of the transaction: every change to one account
    serializes here, and changes to different accounts never wait on each other."""
    row = await account_rows.get(conn, account_id, lock=True)
    if row is None:
        raise NotFound(field, str(account_id), "account")
    return row


async def each_free_account(pool: asyncpg.Pool, next_batch, work, on_error=None) -> int:
    """Run `work(conn, account_row)` for every account id that `next_batch(conn, after)`
    pages out (ordered by id), each in its own transaction under a SKIP LOCKED row lock.
    An account busy in another transaction is skipped, left for the next run; returns
    how many were skipped. Bot replicas and reviews share work this way.

    With `on_error(account_id, error)`, an account whose work raises is rolled back and
    reported there, and the others go on; an error of the database connection itself
    still ends the run (nothing after it could work)."""
    busy = 0
    after = uuid.UUID(int=0)
    async with acquire(pool) as conn:
        while batch := await next_batch(conn, after):
            for account_id in batch:
                try:
                    async with conn.transaction():
                        account = await account_rows.lock_if_free(conn, account_id)
                        if account is None:
                            busy += 1
                            continue
                        await work(conn, account)
                except Exception as error:
                    if on_error is None or database_error_kind(error) in ("unavailable", "timeout"):
                        raise
                    on_error(account_id, error)
            after = batch[-1]
    return busy


class CreditLines:
    def __init__(self, clock: Clock, scorecard: Scorecard | None = None, *,
                 temporary_limit_max_days: int = DEFAULT_TEMPORARY_LIMIT_MAX_DAYS,
                 payment_due_days: int = DEFAULT_PAYMENT_DUE_DAYS) -> None:
        self._clock = clock
        self._scorecard = scorecard or load_scorecard()
        self._temporary_limit_max_days = temporary_limit_max_days
        self._payment_due_days = check_payment_due_days(payment_due_days)

    async def open(self, conn: asyncpg.Connection, command: OpenAccount) -> AccountView:
        now = self._clock.now()
        contact = command.contact
        statement_day = command.statement_day or default_statement_day(local_date(now, contact.time_zone))
        row = await account_rows.insert(
            conn, command.account_id, command.customer_id, DEFAULT_GRADE.value, contact.name, contact.email,
            contact.phone, contact.locale, contact.time_zone, check_statement_day(statement_day),
            self._payment_due_days, now)
        if row is None:
            raise AlreadyExists(f"customer_id: customer {command.customer_id!r} already has an account")
        await account_rows.record_event(conn, row["account_id"], "ACCOUNT_OPENED", "opened", {}, now)
        return account_view(row, now)

    async def get(self, conn: asyncpg.Connection, account_id: UUID) -> AccountView:
        row = await account_rows.get(conn, account_id)
        if row is None:
            raise NotFound("account_id", str(account_id), "account")
        return account_view(row, self._clock.now())

    async def assess(self, conn: asyncpg.Connection, account_id: UUID,
                     characteristics: dict[str, str]) -> tuple[Assessment, AccountView]:
        """Score, then set the grade and the policy limit; the event keeps the score, the
        model version and the reasons, so every limit can be explained later."""
        assessment = self._scorecard.assess(characteristics)
        before = await lock_account(conn, account_id)
        now = self._clock.now()
        if before["status"] == AccountStatus.CLOSED:
            raise FailedPrecondition("account is CLOSED; it cannot be assessed")
        row = await account_rows.set_limit(conn, account_id, assessment.credit_limit_minor,
                                           assessment.grade.value, now)
        await account_rows.record_event(
            conn, account_id, "CREDIT_ASSESSED", f"scorecard {assessment.model_version}",
            {"score": assessment.score, "grade": assessment.grade.value, "model_version": assessment.model_version,
             "from_minor": before["credit_limit_minor"], "to_minor": assessment.credit_limit_minor,
             "reasons": [{"code": r.code, "description": r.description, "points_lost": r.points_lost}
                         for r in assessment.reasons]}, now)
        return assessment, account_view(row, now)

    async def adjust_limit(self, conn: asyncpg.Connection, command: AdjustLimit) -> AccountView:
        now = self._clock.now()
        before = await lock_account(conn, command.account_id)
        if before["status"] == AccountStatus.CLOSED:
            raise FailedPrecondition("account is CLOSED; its limit cannot change")
        grade = command.risk_grade.value if command.risk_grade else before["risk_grade"]
        row = await account_rows.set_limit(conn, command.account_id, command.credit_limit_minor, grade, now)
        await account_rows.record_event(
            conn, command.account_id, "LIMIT_ADJUSTED", command.reason,
            {"from_minor": before["credit_limit_minor"], "to_minor": command.credit_limit_minor,
             "grade_from": before["risk_grade"], "grade_to": grade}, now)
        return account_view(row, now)

    async def grant_temporary_limit(self, conn: asyncpg.Connection, command: GrantTemporaryLimit) -> AccountView:
        now = self._clock.now()
        before = await lock_account(conn, command.account_id)
        if before["status"] == AccountStatus.CLOSED:
            raise FailedPrecondition("account is CLOSED; it cannot get a temporary limit")
        expires_at = temporary_limit_expiry(command.temporary_limit_minor, command.expires_at, now,
                                            self._temporary_limit_max_days)
        row = await account_rows.set_temporary_limit(
            conn, command.account_id, command.temporary_limit_minor, expires_at, now)
        await account_rows.record_event(
            conn, command.account_id, "TEMPORARY_LIMIT_GRANTED", command.reason,
            {"limit_minor": command.temporary_limit_minor,
             "expires_at": expires_at.isoformat() if expires_at else None}, now)
        return account_view(row, now)

    async def set_statement_day(self, conn: asyncpg.Connection, command: SetStatementDay) -> AccountView:
        """Move the account's statement day. Loans keep the due dates they were given, so
        a move while any loan is unpaid would split the account's bill in two: it is
        refused until the account owes nothing. The period open now closes on the next
        new statement day."""
        now = self._clock.now()
        row = await lock_account(conn, command.account_id)
        if row["statement_day"] == command.statement_day:
            return account_view(row, now)
        if row["status"] == AccountStatus.CLOSED:
            raise FailedPrecondition("account is CLOSED; its statement day cannot change")
        if await loan_rows.account_has_unpaid_loans(conn, command.account_id):
            raise FailedPrecondition(
                "statement_day: the account has unpaid loans, whose due dates follow the current statement day; "
                "it can move once they are repaid")
        before = row["statement_day"]
        row = await account_rows.set_statement_day(conn, command.account_id, command.statement_day, now)
        await account_rows.record_event(conn, command.account_id, "STATEMENT_DAY_SET", "set by the customer",
                                        {"from": before, "to": command.statement_day}, now)
        return account_view(row, now)

    async def freeze(self, conn: asyncpg.Connection, command: ChangeStatus) -> AccountView:
        return await self._change_status(conn, command, AccountStatus.FROZEN, "ACCOUNT_FROZEN")

    async def unfreeze(self, conn: asyncpg.Connection, command: ChangeStatus) -> AccountView:
        return await self._change_status(conn, command, AccountStatus.ACTIVE, "ACCOUNT_UNFROZEN")

    async def _change_status(self, conn: asyncpg.Connection, command: ChangeStatus, target: AccountStatus,
                             event: str) -> AccountView:
        now = self._clock.now()
        row = await lock_account(conn, command.account_id)
        if row["status"] == AccountStatus.CLOSED:
            raise FailedPrecondition("account is CLOSED; it cannot be frozen or unfrozen")
        if row["status"] != target:
            row = await account_rows.set_status(conn, command.account_id, target.value, now)
            await account_rows.record_event(conn, command.account_id, event, command.reason, {}, now)
        return account_view(row, now)
