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
from server.db.pool import database_error_kind
from server.domain.accounts import DEFAULT_TEMPORARY_LIMIT_MAX_DAYS, AccountStatus, temporary_limit_expiry
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
                 temporary_limit_max_days: int = DEFAULT_TEMPORARY_LIMIT_MAX_DAYS) -> None:
        self._clock = clock
        self._scorecard = scorecard or load_scorecard()
        self._temporary_limit_max_days = temporary_limit_max_days

    async def open(self, conn: asyncpg.Connection, command: OpenAccount) -> AccountView:
        now = self._clock.now()
        contact = command.contact
        row = await account_rows.insert(
            conn, command.account_id, command.customer_id, DEFAULT_GRADE.value, contact.name, contact.email,
            contact.phone, contact.locale, contact.time_zone, now)
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
