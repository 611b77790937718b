"""SQL of collections: cases, penalties, promises, preferences, reminder steps and
contact attempts."""

from __future__ import annotations

import json
from datetime import date, datetime
from uuid import UUID

import asyncpg

from server.db import one

# Accounts the bot must look at: an active loan with something unpaid due by the
# horizon (pre-due reminders look a few days ahead), an active promise, or an open
# case. Paged by account id so a pass is bounded and resumable.
ACCOUNTS_TO_REVIEW = """
SELECT account_id FROM (
    SELECT i.account_id FROM installments i JOIN loans l USING (loan_id)
    WHERE l.status = 'ACTIVE' AND i.due_date <= $1
      AND i.principal_minor + i.fee_minor + i.penalty_minor
          > i.principal_paid_minor + i.fee_paid_minor + i.penalty_paid_minor
    UNION
    SELECT account_id FROM promises WHERE status = 'ACTIVE'
    UNION
    SELECT account_id FROM collection_cases WHERE bucket NOT IN ('CURRENT', 'CHARGED_OFF')
) due
WHERE account_id > $2
ORDER BY account_id
LIMIT $3
"""

SELECT_CASE = """
SELECT account_id, bucket, days_past_due, overdue_minor, penalty_owed_minor, escalated_at, escalation_reason,
       needs_payment_check, opened_at, reviewed_at, updated_at
FROM collection_cases WHERE account_id = $1
"""

UPSERT_CASE = """
INSERT INTO collection_cases (account_id, bucket, days_past_due, overdue_minor, penalty_owed_minor, opened_at,
                              reviewed_at, updated_at)
VALUES ($1, $2, $3, $4, $6, $5, $5, $5)
ON CONFLICT (account_id) DO UPDATE
SET bucket = EXCLUDED.bucket, days_past_due = EXCLUDED.days_past_due, overdue_minor = EXCLUDED.overdue_minor,
    penalty_owed_minor = EXCLUDED.penalty_owed_minor, reviewed_at = EXCLUDED.reviewed_at,
    updated_at = EXCLUDED.updated_at
"""

ESCALATE_CASE = """
INSERT INTO collection_cases (account_id, bucket, days_past_due, overdue_minor, escalated_at, escalation_reason,
                              opened_at, reviewed_at, updated_at)
VALUES ($1, 'CURRENT', 0, 0, $2, $3, $2, $2, $2)
ON CONFLICT (account_id) DO UPDATE
SET escalated_at = EXCLUDED.escalated_at, escalation_reason = EXCLUDED.escalation_reason,
    updated_at = EXCLUDED.updated_at
"""

FLAG_PAYMENT_CHECK = """
INSERT INTO collection_cases (account_id, bucket, days_past_due, overdue_minor, needs_payment_check, opened_at,
                              reviewed_at, updated_at)
VALUES ($1, 'CURRENT', 0, 0, true, $2, $2, $2)
ON CONFLICT (account_id) DO UPDATE SET needs_payment_check = true, updated_at = EXCLUDED.updated_at
"""

INSERT_CASE_EVENT = "INSERT INTO case_events (account_id, kind, detail, created_at) VALUES ($1, $2, $3, $4)"

SELECT_CASES_PAGE = """
SELECT account_id, bucket, days_past_due, overdue_minor, penalty_owed_minor, escalated_at, escalation_reason,
       needs_payment_check, opened_at, reviewed_at, updated_at
FROM collection_cases
WHERE ($1::text IS NULL OR bucket = $1) AND account_id > $2
ORDER BY account_id
LIMIT $3
"""

PENALTY_STATE = """
SELECT loan_id, sequence, max(accrual_date) AS last_charged, sum(amount_minor)::bigint AS charged_minor
FROM penalty_accruals WHERE loan_id = ANY($1::uuid[]) GROUP BY loan_id, sequence
"""

# Principal and fee paid into installments, with the day it was paid, so a catch-up
# knows what was unpaid at the end of each missed day.
PAYMENTS_OF_LOANS = """
SELECT a.loan_id, a.sequence, a.amount_minor, r.created_at
FROM repayment_allocations a JOIN repayments r USING (repayment_id)
WHERE a.loan_id = ANY($1::uuid[]) AND a.component IN ('PRINCIPAL', 'FEE')
"""

INSERT_ACCRUAL = """
INSERT INTO penalty_accruals (loan_id, sequence, accrual_date, account_id, base_minor, amount_minor, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (loan_id, sequence, accrual_date, account_id) DO NOTHING
RETURNING amount_minor
"""

ADD_PENALTY = """
UPDATE installments SET penalty_minor = penalty_minor + $3 WHERE loan_id = $1 AND sequence = $2
"""

WAIVE_PENALTY = """
UPDATE installments SET penalty_minor = penalty_minor - $3
WHERE loan_id = $1 AND sequence = $2 AND penalty_minor - penalty_paid_minor >= $3
RETURNING penalty_minor
"""

INSERT_WAIVER = """
INSERT INTO penalty_waivers (waiver_id, account_id, loan_id, sequence, amount_minor, reason, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""

# The loan is charged off with what the customer still owes of it, as written off, the
# claim, and the reserve's own part of the loss (migration 0020_recoveries.sql).
CHARGE_OFF_LOAN = """
UPDATE loans
SET status = 'CHARGED_OFF', updated_at = $2, written_off_principal_minor = $3, written_off_fee_minor = $4,
    written_off_penalty_minor = $5, insurance_claim_minor = $6, reserve_loss_minor = $7
WHERE loan_id = $1 AND status = 'ACTIVE'
"""

HAS_CHARGED_OFF_LOANS = "SELECT EXISTS (SELECT 1 FROM loans WHERE account_id = $1 AND status = 'CHARGED_OFF')"

SELECT_ACTIVE_PROMISE = """
SELECT promise_id, account_id, promised_date, amount_minor, status, source, paid_before_minor, created_at
FROM promises WHERE account_id = $1 AND status = 'ACTIVE'
"""

INSERT_PROMISE = """
INSERT INTO promises (promise_id, account_id, promised_date, amount_minor, status, source, paid_before_minor,
                      created_at)
VALUES ($1, $2, $3, $4, 'ACTIVE', $5, $6, $7)
RETURNING promise_id, account_id, promised_date, amount_minor, status, source, paid_before_minor, created_at
"""

RESOLVE_PROMISE = "UPDATE promises SET status = $2, resolved_at = $3 WHERE promise_id = $1"

# Money the customer has paid in (not credit balance moves), for keeping promises.
PAID_IN_TOTAL = """
SELECT coalesce(sum(amount_minor), 0)::bigint FROM repayments
WHERE account_id = $1 AND channel <> 'CREDIT_BALANCE'
"""

SELECT_PREFERENCES = """
SELECT email_opt_out, voice_opt_out, phone_blocked FROM contact_preferences WHERE account_id = $1
"""

UPSERT_PREFERENCES = """
INSERT INTO contact_preferences (account_id, email_opt_out, voice_opt_out, phone_blocked, updated_at)
VALUES ($1, $2, $3, false, $4)
ON CONFLICT (account_id) DO UPDATE
SET email_opt_out = EXCLUDED.email_opt_out, voice_opt_out = EXCLUDED.voice_opt_out, updated_at = EXCLUDED.updated_at
RETURNING email_opt_out, voice_opt_out, phone_blocked
"""

BLOCK_PHONE = """
INSERT INTO contact_preferences (account_id, phone_blocked, updated_at) VALUES ($1, true, $2)
ON CONFLICT (account_id) DO UPDATE SET phone_blocked = true, updated_at = EXCLUDED.updated_at
"""

SELECT_STEPS = """
SELECT step_code, offset_days, channel, template, escalates FROM reminder_steps WHERE enabled ORDER BY offset_days, step_code
"""


_ATTEMPT_COLUMNS = """
    attempt_id, account_id, loan_id, sequence, due_date, step_code, channel, status, reason, tries, next_try_at,
    lease_until, lease_owner, message_id, outcome, detail, planned_for, created_at, updated_at, payment_order_id
"""

SELECT_ATTEMPTS_OF_ACCOUNT = f"SELECT {_ATTEMPT_COLUMNS} FROM contact_attempts WHERE account_id = $1"

# One attempt per (account, due date, step): the bill's, naming no loan. A notice of a
# failed auto-debit names its payment order ($11); a reminder step none.
INSERT_ATTEMPT = f"""
INSERT INTO contact_attempts (attempt_id, account_id, due_date, step_code, channel, status, reason,
                              message_id, planned_for, created_at, updated_at, payment_order_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $10, $9, $9, $11)
ON CONFLICT (account_id, due_date, step_code) WHERE loan_id IS NULL DO NOTHING
RETURNING {_ATTEMPT_COLUMNS}
"""

# A review moving a DEFERRED step on (no bot holds a DEFERRED row). A claimed row is
# finished with FINISH_ATTEMPT, by its lease owner only.
SET_ATTEMPT_STATUS = """
UPDATE contact_attempts
SET status = $2, reason = $3, outcome = coalesce($4, outcome), detail = detail || $5::jsonb, updated_at = $6,
    next_try_at = $7, lease_until = NULL, lease_owner = NULL
WHERE attempt_id = $1 AND status = 'DEFERRED'
"""

# Claim what is ready to send: pending and due, or a claim whose holder died (lease
# over). Claimed rows are SENDING under a lease held by a token drawn for this claim
# ($6), so replicas never send the same row at once; a bot killed mid-send leaves a
# lease that expires and the row is tried again with the same Message-ID. Due-ness and
# updated_at use the pass's instant ($1), lease expiry the lease clock ($2).
CLAIM_ATTEMPTS = f"""
UPDATE contact_attempts
SET status = 'SENDING', lease_until = $3, lease_owner = $6, tries = tries + 1, updated_at = $1
WHERE attempt_id IN (
    SELECT attempt_id FROM contact_attempts
    WHERE channel = $5
      AND ((status = 'PENDING' AND (next_try_at IS NULL OR next_try_at <= $1))
           OR (status = 'SENDING' AND lease_until <= $2))
    ORDER BY created_at
    LIMIT $4
    FOR UPDATE SKIP LOCKED
)
RETURNING {_ATTEMPT_COLUMNS}
"""

# Extend the leases the owner still holds; the ids returned are those still its own
# (another bot may have taken over one whose lease ran out).
RENEW_LEASES = """
UPDATE contact_attempts SET lease_until = $3
WHERE attempt_id = ANY($1::uuid[]) AND lease_owner = $2 AND status = 'SENDING'
RETURNING attempt_id
"""

# Record the outcome of a claimed attempt, only while its lease is still the caller's:
# a bot that lost the lease changes nothing, so the new holder's record stands.
FINISH_ATTEMPT = """
UPDATE contact_attempts
SET status = $3, reason = $4, outcome = coalesce($5, outcome), detail = detail || $6::jsonb, updated_at = $7,
    next_try_at = $8, lease_until = NULL, lease_owner = NULL
WHERE attempt_id = $1 AND lease_owner = $2 AND status = 'SENDING'
RETURNING attempt_id
"""

# An account's attempts in step order: by the day each step is for, then step code.
SELECT_ATTEMPTS_PAGE = f"""
SELECT {_ATTEMPT_COLUMNS} FROM contact_attempts
WHERE account_id = $1 AND ($2::date IS NULL OR (planned_for, step_code, attempt_id) > ($2, $3::text, $4::uuid))
ORDER BY planned_for, step_code, attempt_id
LIMIT $5
"""

SELECT_ATTEMPT = f"SELECT {_ATTEMPT_COLUMNS} FROM contact_attempts WHERE attempt_id = $1"

# Contacts that count toward the caps: sent, being sent, or about to be.
RECENT_CONTACTS = """
SELECT updated_at AS at, channel, coalesce(outcome, '') AS outcome, status FROM contact_attempts
WHERE account_id = $1 AND status IN ('PENDING', 'SENDING', 'SENT') AND updated_at > $2
"""


async def accounts_to_review(conn: asyncpg.Connection, horizon: date, after: UUID, limit: int) -> list[UUID]:
    return [r["account_id"] for r in await conn.fetch(ACCOUNTS_TO_REVIEW, horizon, after, limit)]


async def case(conn: asyncpg.Connection, account_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(SELECT_CASE, account_id)


async def save_case(conn: asyncpg.Connection, account_id: UUID, bucket: str, dpd: int, overdue_minor: int,
                    penalty_owed_minor: int, now: datetime) -> None:
    await conn.execute(UPSERT_CASE, account_id, bucket, dpd, overdue_minor, now, penalty_owed_minor)


async def escalate(conn: asyncpg.Connection, account_id: UUID, reason: str, now: datetime) -> None:
    await conn.execute(ESCALATE_CASE, account_id, now, reason)
    await event(conn, account_id, "ESCALATED", {"reason": reason}, now)


async def flag_payment_check(conn: asyncpg.Connection, account_id: UUID, now: datetime) -> None:
    await conn.execute(FLAG_PAYMENT_CHECK, account_id, now)


async def event(conn: asyncpg.Connection, account_id: UUID, kind: str, detail: dict, now: datetime) -> None:
    await conn.execute(INSERT_CASE_EVENT, account_id, kind, json.dumps(detail), now)


async def cases_page(conn: asyncpg.Connection, bucket: str | None, after: UUID, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(SELECT_CASES_PAGE, bucket, after, limit)


async def penalty_state(conn: asyncpg.Connection, loan_ids: list[UUID]) -> dict[tuple[UUID, int], asyncpg.Record]:
    return {(r["loan_id"], r["sequence"]): r for r in await conn.fetch(PENALTY_STATE, loan_ids)}


async def payments(conn: asyncpg.Connection, loan_ids: list[UUID]) -> list[asyncpg.Record]:
    return await conn.fetch(PAYMENTS_OF_LOANS, loan_ids)


async def book_accrual(conn: asyncpg.Connection, loan_id: UUID, sequence: int, day: date, account_id: UUID,
                       base_minor: int, amount_minor: int, now: datetime) -> bool:
    """True when this day was booked now; False when someone booked it before."""
    booked = await conn.fetchval(INSERT_ACCRUAL, loan_id, sequence, day, account_id, base_minor, amount_minor, now)
    if booked is None:
        return False
    await conn.execute(ADD_PENALTY, loan_id, sequence, amount_minor)
    return True


async def waive(conn: asyncpg.Connection, waiver_id: UUID, account_id: UUID, loan_id: UUID, sequence: int,
                amount_minor: int, reason: str, now: datetime) -> bool:
    if await conn.fetchval(WAIVE_PENALTY, loan_id, sequence, amount_minor) is None:
        return False
    await conn.execute(INSERT_WAIVER, waiver_id, account_id, loan_id, sequence, amount_minor, reason, now)
    return True


async def charge_off(conn: asyncpg.Connection, loan_id: UUID, now: datetime, *, principal_minor: int, fee_minor: int,
                     penalty_minor: int, insurance_claim_minor: int, reserve_loss_minor: int) -> None:
    """Charge the active loan off, recording its written-off debt."""
    await conn.execute(CHARGE_OFF_LOAN, loan_id, now, principal_minor, fee_minor, penalty_minor,
                       insurance_claim_minor, reserve_loss_minor)


async def has_charged_off_loans(conn: asyncpg.Connection, account_id: UUID) -> bool:
    return await conn.fetchval(HAS_CHARGED_OFF_LOANS, account_id)


async def active_promise(conn: asyncpg.Connection, account_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(SELECT_ACTIVE_PROMISE, account_id)


async def insert_promise(conn: asyncpg.Connection, promise_id: UUID, account_id: UUID, promised_date: date,
                         amount_minor: int, source: str, paid_before_minor: int, now: datetime) -> asyncpg.Record:
    return one(await conn.fetchrow(INSERT_PROMISE, promise_id, account_id, promised_date, amount_minor, source,
                                   paid_before_minor, now))


async def resolve_promise(conn: asyncpg.Connection, promise_id: UUID, status: str, now: datetime) -> None:
    await conn.execute(RESOLVE_PROMISE, promise_id, status, now)


async def paid_in_total(conn: asyncpg.Connection, account_id: UUID) -> int:
    return await conn.fetchval(PAID_IN_TOTAL, account_id)


async def preferences(conn: asyncpg.Connection, account_id: UUID) -> tuple[bool, bool, bool]:
    row = await conn.fetchrow(SELECT_PREFERENCES, account_id)
    return (row["email_opt_out"], row["voice_opt_out"], row["phone_blocked"]) if row else (False, False, False)


async def set_preferences(conn: asyncpg.Connection, account_id: UUID, email_opt_out: bool, voice_opt_out: bool,
                          now: datetime) -> asyncpg.Record:
    return one(await conn.fetchrow(UPSERT_PREFERENCES, account_id, email_opt_out, voice_opt_out, now))


async def block_phone(conn: asyncpg.Connection, account_id: UUID, now: datetime) -> None:
    await conn.execute(BLOCK_PHONE, account_id, now)


async def steps(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(SELECT_STEPS)




async def attempts_of_account(conn: asyncpg.Connection, account_id: UUID) -> list[asyncpg.Record]:
    return await conn.fetch(SELECT_ATTEMPTS_OF_ACCOUNT, account_id)


async def insert_attempt(conn: asyncpg.Connection, *, attempt_id: UUID, account_id: UUID, due_date: date,
                         step_code: str, channel: str, status: str, reason: str | None, message_id: str | None,
                         planned_for: date, now: datetime,
                         payment_order_id: UUID | None = None) -> asyncpg.Record | None:
    """The new attempt of a bill's step; None when the bill has one for the step already."""
    return await conn.fetchrow(INSERT_ATTEMPT, attempt_id, account_id, due_date, step_code, channel, status, reason,
                               message_id, now, planned_for, payment_order_id)


async def set_attempt_status(conn: asyncpg.Connection, attempt_id: UUID, status: str, now: datetime, *,
                             reason: str | None = None, outcome: str | None = None, detail: dict | None = None,
                             next_try_at: datetime | None = None) -> None:
    await conn.execute(SET_ATTEMPT_STATUS, attempt_id, status, reason, outcome, json.dumps(detail or {}), now,
                       next_try_at)


async def claim_attempts(conn: asyncpg.Connection, channel: str, now: datetime, *, lease_now: datetime,
                         lease_until: datetime, owner: UUID, limit: int) -> list[asyncpg.Record]:
    """Up to `limit` attempts ready to send, now SENDING under `owner`'s lease."""
    return await conn.fetch(CLAIM_ATTEMPTS, now, lease_now, lease_until, limit, channel, owner)


async def renew_leases(conn: asyncpg.Connection, attempt_ids: list[UUID], owner: UUID, lease_until: datetime,
                       timeout_s: float) -> set[UUID]:
    """The attempts of `attempt_ids` still held by `owner`, their leases now extended."""
    return {r["attempt_id"] for r in await conn.fetch(RENEW_LEASES, attempt_ids, owner, lease_until,
                                                       timeout=timeout_s)}


async def finish_attempt(conn: asyncpg.Connection, attempt_id: UUID, owner: UUID, status: str, now: datetime, *,
                         reason: str | None = None, outcome: str | None = None, detail: dict | None = None,
                         next_try_at: datetime | None = None) -> bool:
    """True when recorded; False when `owner` no longer holds the attempt (nothing changed)."""
    finished = await conn.fetchval(FINISH_ATTEMPT, attempt_id, owner, status, reason, outcome,
                                   json.dumps(detail or {}), now, next_try_at)
    return finished is not None


async def attempts_page(conn: asyncpg.Connection, account_id: UUID, after: tuple[date, str, UUID] | None,
                        limit: int) -> list[asyncpg.Record]:
    """A page of the account's attempts in step order, after the (planned_for,
    step_code, attempt_id) of the last one of the previous page."""
    planned_for, step_code, attempt_id = after if after else (None, None, None)
    return await conn.fetch(SELECT_ATTEMPTS_PAGE, account_id, planned_for, step_code, attempt_id, limit)


async def attempt(conn: asyncpg.Connection, attempt_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(SELECT_ATTEMPT, attempt_id)


async def recent_contacts(conn: asyncpg.Connection, account_id: UUID, since: datetime) -> list[asyncpg.Record]:
    return await conn.fetch(RECENT_CONTACTS, account_id, since)
