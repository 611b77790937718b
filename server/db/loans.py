"""SQL of loans and their installments."""

from __future__ import annotations

from datetime import date, datetime
from uuid import UUID

import asyncpg

from server.db import funding, idempotency, ledger, one
from server.domain.errors import InvariantViolation
from server.domain.journal import Head

_LOAN_COLUMNS = """
    loan_id, account_id, authorization_id, status, principal_minor, term_months, method,
    monthly_rate_bps, apr_bps, merchant_id, order_id, currency, start_date, refunded_minor, created_at,
    updated_at, written_off_principal_minor, written_off_fee_minor, written_off_penalty_minor,
    insurance_claim_minor, recovered_principal_minor, recovered_fee_minor, recovered_penalty_minor
"""

_INSTALLMENT_COLUMNS = """
    loan_id, sequence, due_date, principal_minor, fee_minor, principal_paid_minor, fee_paid_minor,
    penalty_minor, penalty_paid_minor, fee_waived_minor
"""

# The loan and its schedule in one statement (one round trip).
INSERT_LOAN_WITH_INSTALLMENTS = """
WITH loan AS (
    INSERT INTO loans (loan_id, account_id, authorization_id, status, principal_minor, term_months, method,
                       monthly_rate_bps, apr_bps, merchant_id, order_id, currency, start_date, created_at,
                       updated_at)
    VALUES ($1, $2, $3, 'ACTIVE', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13)
    RETURNING loan_id, account_id
)
INSERT INTO installments (loan_id, sequence, account_id, due_date, principal_minor, fee_minor)
SELECT loan.loan_id, s.sequence, loan.account_id, s.due_date, s.principal_minor, s.fee_minor
FROM loan, unnest($14::integer[], $15::date[], $16::bigint[], $17::bigint[])
           AS s (sequence, due_date, principal_minor, fee_minor)
"""

SELECT_LOAN = f"SELECT {_LOAN_COLUMNS} FROM loans WHERE loan_id = $1"
SELECT_LOAN_FOR_UPDATE = SELECT_LOAN + " FOR UPDATE"

# The account of a loan: where a request that names only the loan keeps its
# idempotency record.
SELECT_ACCOUNT = "SELECT account_id FROM loans WHERE loan_id = $1"

SELECT_ACTIVE_FOR_ACCOUNT = f"""
SELECT {_LOAN_COLUMNS} FROM loans WHERE account_id = $1 AND status = 'ACTIVE' ORDER BY created_at, loan_id
"""

# The account's charged-off loans whose written-off debt is not all recovered, oldest
# first: the waterfall's step 3 (docs/repayment.md, "Recoveries").
SELECT_OWING_CHARGED_OFF_FOR_ACCOUNT = f"""
SELECT {_LOAN_COLUMNS} FROM loans
WHERE account_id = $1 AND status = 'CHARGED_OFF'
  AND written_off_principal_minor + written_off_fee_minor + written_off_penalty_minor
      > recovered_principal_minor + recovered_fee_minor + recovered_penalty_minor
ORDER BY created_at, loan_id
"""

# A payment's recovery on one charged-off loan: what is recovered moves on (the table's
# check keeps it within what was written off) and the recovery is recorded.
# $1 repayment, $2 loan, $3 account, $4-$6 principal, fee, penalty, $7 insurer's part,
# $8 the reserve's, $9 now.
RECORD_RECOVERY = """
WITH loan AS (
    UPDATE loans
    SET recovered_principal_minor = recovered_principal_minor + $4,
        recovered_fee_minor = recovered_fee_minor + $5,
        recovered_penalty_minor = recovered_penalty_minor + $6
    WHERE loan_id = $2 AND account_id = $3 AND status = 'CHARGED_OFF'
    RETURNING loan_id, account_id
)
INSERT INTO recoveries (repayment_id, loan_id, account_id, principal_minor, fee_minor, penalty_minor, insurer_minor,
                        reserve_minor, created_at)
SELECT $1, loan.loan_id, loan.account_id, $4, $5, $6, $7, $8, $9 FROM loan
RETURNING loan_id
"""

HAS_ACTIVE_LOANS = "SELECT EXISTS (SELECT 1 FROM loans WHERE account_id = $1 AND status = 'ACTIVE')"

SELECT_INSTALLMENTS_OF_LOANS = f"""
SELECT {_INSTALLMENT_COLUMNS} FROM installments WHERE loan_id = ANY($1::uuid[]) ORDER BY loan_id, sequence
"""

# Newest first; the page token is the (created_at, loan_id) of the last loan shown.
SELECT_PAGE_FOR_ACCOUNT = f"""
SELECT {_LOAN_COLUMNS} FROM loans
WHERE account_id = $1
  AND ($2::text IS NULL OR status = $2)
  AND ($3::timestamptz IS NULL OR (created_at, loan_id) < ($3, $4::uuid))
ORDER BY created_at DESC, loan_id DESC
LIMIT $5
"""

# The SET clause that writes an installment's paid and owed amounts from the row `u`
# of an unnest (installments aliased `i`); shared with the Repay write.
_SET_INSTALLMENT_STATE = """
SET principal_minor = u.principal_minor,
    fee_minor = u.fee_minor,
    principal_paid_minor = u.principal_paid_minor,
    fee_paid_minor = u.fee_paid_minor,
    penalty_minor = u.penalty_minor,
    penalty_paid_minor = u.penalty_paid_minor,
    fee_waived_minor = i.fee_waived_minor + u.fee_waived_delta_minor
""".strip()



def set_installment_state() -> str:
    """The SET clause of an installments update from unnest rows `u` (see UPDATE_INSTALLMENTS)."""
    return _SET_INSTALLMENT_STATE


# Each installment's paid and owed amounts after a repayment, waiver or refund.
UPDATE_INSTALLMENTS = f"""
UPDATE installments AS i
{_SET_INSTALLMENT_STATE}
FROM unnest($2::integer[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[], $8::bigint[],
            $9::bigint[])
     AS u (sequence, principal_minor, fee_minor, principal_paid_minor, fee_paid_minor, penalty_minor,
           penalty_paid_minor, fee_waived_delta_minor)
WHERE i.loan_id = $1 AND i.account_id = $10 AND i.sequence = u.sequence
"""

UPDATE_LOAN_STATUS = """
UPDATE loans SET status = $2, refunded_minor = refunded_minor + $3, updated_at = $4
WHERE loan_id = $1 AND account_id = $5
"""
SELECT_INSTALLMENTS = f"SELECT {_INSTALLMENT_COLUMNS} FROM installments WHERE loan_id = $1 ORDER BY sequence"

# Capture, read: the authorization, its account with the version and billing cycle, and the request's
# idempotency record in that account's bucket. One row even when the authorization does
# not exist. The request names only the authorization: its account is found here.
# $1 authorization, $2-$4 caller, method, key.
CAPTURE_READ = """
SELECT au.authorization_id, au.account_id, au.merchant_id, au.order_id, au.status, au.decline_reason,
       au.decline_message, au.amount_minor, au.captured_minor, au.released_minor, au.term_months, au.method,
       au.monthly_rate_bps, au.risk_decision, au.risk_score, au.risk_reasons, au.loan_id, au.expires_at,
       au.created_at,
       a.status AS account_status, a.risk_grade, a.currency, a.time_zone, a.credit_balance_minor, a.version,
       a.statement_day, a.payment_due_days,
       a.journal_length, a.journal_head_sha256,
       r.request_sha256 AS replay_sha256, r.response AS replay_response
FROM (SELECT 1) AS one
LEFT JOIN authorizations au ON au.authorization_id = $1
LEFT JOIN accounts a ON a.account_id = au.account_id
LEFT JOIN idempotency_records r ON r.account_id = au.account_id AND r.caller = $2 AND r.method = $3
                                AND r.idempotency_key = $4 AND r.response IS NOT NULL
"""

# Capture, write (a Write, see server/core/commands.py): the account's hold becomes
# principal if its version is unchanged, the authorization is captured, the loan and its
# schedule are inserted with the reserve's provision, and the ledger entries posted,
# chained after the account's head as read ($28-$37, server/db/ledger.entry_arrays).
# $6 account, $7 version, $8 hold amount, $9 captured, $10 now, $11 authorization,
# $12 released, $13 loan, $14-$23 the loan, $24-$27 its schedule, $28-$37 the entries.
_ACCOUNT_TOTALS = """
    held_minor = held_minor - $8::bigint,
    outstanding_principal_minor = outstanding_principal_minor + $9::bigint,
    updated_at = $10"""
_CAPTURE_ACCOUNT = f"""
account AS (
    UPDATE accounts
    SET {_ACCOUNT_TOTALS.strip()},
        {ledger.head_assignments(28)}
    WHERE account_id = $6 AND version = $7 AND EXISTS (SELECT 1 FROM claim)
    RETURNING account_id
),"""
# A co-funded capture takes the account row first and updates it last, once the write
# knows whether the partner had room: the partner's entry, posted only then, is the
# last link of the account's chain.
_CAPTURE_ACCOUNT_LOCKED = """
account AS (
    SELECT account_id FROM accounts
    WHERE account_id = $6 AND version = $7 AND EXISTS (SELECT 1 FROM claim)
    FOR UPDATE
),"""
_CAPTURE_REST = """
auth AS (
    UPDATE authorizations
    SET status = 'CAPTURED', captured_minor = $9, released_minor = $12, loan_id = $13, updated_at = $10
    WHERE authorization_id = $11 AND account_id = $6 AND status = 'PENDING' AND EXISTS (SELECT 1 FROM account)
    RETURNING authorization_id
),
loan AS (
    INSERT INTO loans (loan_id, account_id, authorization_id, status, principal_minor, term_months, method,
                       monthly_rate_bps, apr_bps, merchant_id, order_id, currency, start_date, created_at,
                       updated_at, provision_minor)
    SELECT $13, $6, auth.authorization_id, 'ACTIVE', $14, $15, $16, $17, $18, $19, $20, $21, $22, $10, $10, $23
    FROM auth
    RETURNING loan_id
),
schedule AS (
    INSERT INTO installments (loan_id, sequence, account_id, due_date, principal_minor, fee_minor)
    SELECT loan.loan_id, s.sequence, $6, s.due_date, s.principal_minor, s.fee_minor
    FROM loan, unnest($24::integer[], $25::date[], $26::bigint[], $27::bigint[])
               AS s (sequence, due_date, principal_minor, fee_minor)
),""" + ledger.entries_ctes("loan", account="$6", now="$10", first=28)
CAPTURE_WRITE = idempotency.write_statement(_CAPTURE_ACCOUNT + _CAPTURE_REST, done="loan",
                                            detail="account changed since it was read")

# Capture of a loan offered to a funding partner: CAPTURE_WRITE, and the loan is
# co-funded if the partner has room (server/db/funding.co_funding_ctes); if not, it is
# the platform's alone. $38-$55 the offer (server/core/funding.CaptureOffer.args), whose
# entry ($46-$55) is chained after the capture's.
_FUNDED = "EXISTS (SELECT 1 FROM funding_stripe)"
_LENGTH, _HEAD = ledger.head_after(28)
_FUNDED_LENGTH, _FUNDED_HEAD = ledger.head_after(46)
CAPTURE_WRITE_CO_FUNDED = idempotency.write_statement(
    _CAPTURE_ACCOUNT_LOCKED + _CAPTURE_REST + ","
    + funding.co_funding_ctes("loan", account="$6", loan_id="$13", now="$10", first=38) + f""",
account_totals AS (
    UPDATE accounts
    SET {_ACCOUNT_TOTALS.strip()},
        journal_length = CASE WHEN {_FUNDED} THEN {_FUNDED_LENGTH} + cardinality($28::uuid[]) ELSE {_LENGTH} END,
        journal_head_sha256 = CASE WHEN {_FUNDED} THEN {_FUNDED_HEAD} ELSE {_HEAD} END
    WHERE account_id = $6 AND EXISTS (SELECT 1 FROM account)
    RETURNING 1
)""", done="loan", detail="account changed since it was read", also="EXISTS (SELECT 1 FROM account_totals)")


async def capture_read(conn: asyncpg.Connection, authorization_id: UUID, key) -> asyncpg.Record:
    """The one read of Capture for the idempotency `key` (server.core.commands.Key)."""
    return one(await conn.fetchrow(CAPTURE_READ, authorization_id, key.caller, key.method, key.idempotency_key))


def capture_args(*, account_id: UUID, version: int, hold_minor: int, captured_minor: int, released_minor: int,
                 authorization_id: UUID, loan_id: UUID, principal_minor: int, term_months: int, method: str,
                 monthly_rate_bps: int, apr_bps: int, merchant_id: str, order_id: str, currency: str,
                 start_date: date, provision_minor: int, installments: list[tuple[int, date, int, int]],
                 head: Head, entries: list, now: datetime) -> tuple[Head, tuple]:
    """The arguments ($6 on) of CAPTURE_WRITE, `entries` being (reference_id,
    JournalEntry) pairs chained after the account's `head`, and the head they leave."""
    sequences, due_dates, principals, fees = (list(column) for column in zip(*installments, strict=True))
    after, arrays = ledger.entry_arrays(account_id, head, entries, now)
    return after, (account_id, version, hold_minor, captured_minor, now, authorization_id, released_minor, loan_id,
                   principal_minor, term_months, method, monthly_rate_bps, apr_bps, merchant_id, order_id, currency,
                   start_date, provision_minor, sequences, due_dates, principals, fees, *arrays)


async def insert(conn: asyncpg.Connection, *, loan_id: UUID, account_id: UUID, authorization_id: UUID,
                 principal_minor: int, term_months: int, method: str, monthly_rate_bps: int, apr_bps: int,
                 merchant_id: str, order_id: str, currency: str, start_date: date, now: datetime,
                 installments: list[tuple[int, date, int, int]]) -> None:
    """Insert the loan and its schedule: (sequence, due_date, principal, fee) per period."""
    sequences, due_dates, principals, fees = (list(column) for column in zip(*installments, strict=True))
    await conn.execute(INSERT_LOAN_WITH_INSTALLMENTS, loan_id, account_id, authorization_id, principal_minor,
                       term_months, method, monthly_rate_bps, apr_bps, merchant_id, order_id, currency,
                       start_date, now, sequences, due_dates, principals, fees)


async def get(conn: asyncpg.Connection, loan_id: UUID) -> tuple[asyncpg.Record, list[asyncpg.Record]] | None:
    loan = await conn.fetchrow(SELECT_LOAN, loan_id)
    if loan is None:
        return None
    return loan, await conn.fetch(SELECT_INSTALLMENTS, loan_id)


async def account_of(conn: asyncpg.Connection, loan_id: UUID) -> UUID | None:
    """The account of a loan; None when there is no such loan."""
    return await conn.fetchval(SELECT_ACCOUNT, loan_id)


async def get_for_update(conn: asyncpg.Connection, loan_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(SELECT_LOAN_FOR_UPDATE, loan_id)


async def active_for_account(conn: asyncpg.Connection, account_id: UUID) -> list[tuple[asyncpg.Record, list]]:
    """The account's active loans, oldest first, each with its installments."""
    loans = await conn.fetch(SELECT_ACTIVE_FOR_ACCOUNT, account_id)
    return await _with_installments(conn, loans)


async def owing_charged_off_for_account(conn: asyncpg.Connection, account_id: UUID) -> list[asyncpg.Record]:
    """The account's charged-off loans with written-off debt left, oldest first."""
    return await conn.fetch(SELECT_OWING_CHARGED_OFF_FOR_ACCOUNT, account_id)


async def record_recovery(conn: asyncpg.Connection, *, repayment_id: UUID, loan_id: UUID, account_id: UUID,
                          principal_minor: int, fee_minor: int, penalty_minor: int, insurer_minor: int,
                          reserve_minor: int, now: datetime) -> None:
    """Record a recovery on a charged-off loan of the locked account."""
    recorded = await conn.fetchval(RECORD_RECOVERY, repayment_id, loan_id, account_id, principal_minor, fee_minor,
                                   penalty_minor, insurer_minor, reserve_minor, now)
    if recorded is None:
        raise InvariantViolation(f"loan {loan_id} is not a charged-off loan of account {account_id}")


async def account_has_unpaid_loans(conn: asyncpg.Connection, account_id: UUID) -> bool:
    return await conn.fetchval(HAS_ACTIVE_LOANS, account_id)


async def _with_installments(conn: asyncpg.Connection, loans: list[asyncpg.Record]) -> list[tuple[asyncpg.Record, list]]:
    if not loans:
        return []
    rows = await conn.fetch(SELECT_INSTALLMENTS_OF_LOANS, [loan["loan_id"] for loan in loans])
    by_loan: dict[UUID, list] = {}
    for row in rows:
        by_loan.setdefault(row["loan_id"], []).append(row)
    return [(loan, by_loan.get(loan["loan_id"], [])) for loan in loans]


async def page_for_account(conn: asyncpg.Connection, account_id: UUID, status: str | None,
                           after: tuple[datetime, UUID] | None, limit: int) -> list[tuple[asyncpg.Record, list]]:
    loans = await conn.fetch(SELECT_PAGE_FOR_ACCOUNT, account_id, status, after[0] if after else None,
                             after[1] if after else None, limit)
    return await _with_installments(conn, loans)


async def update_installments(conn: asyncpg.Connection, account_id: UUID, loan_id: UUID, installments,
                              waived_by_sequence: dict[int, int]) -> None:
    """Write the paid and owed amounts of `installments` (InstallmentState values)."""
    rows = list(installments)
    await conn.execute(
        UPDATE_INSTALLMENTS, loan_id,
        [i.sequence for i in rows], [i.principal_minor for i in rows], [i.fee_minor for i in rows],
        [i.principal_paid_minor for i in rows], [i.fee_paid_minor for i in rows], [i.penalty_minor for i in rows],
        [i.penalty_paid_minor for i in rows], [waived_by_sequence.get(i.sequence, 0) for i in rows], account_id)


async def set_status(conn: asyncpg.Connection, account_id: UUID, loan_id: UUID, status: str, now: datetime,
                     refunded_delta_minor: int = 0) -> None:
    await conn.execute(UPDATE_LOAN_STATUS, loan_id, status, refunded_delta_minor, now, account_id)
