"""SQL of loans and their installments."""

from __future__ import annotations

from datetime import date, datetime
from uuid import UUID

import asyncpg

_LOAN_COLUMNS = """
    loan_id, account_id, authorization_id, status, principal_minor, term_months, method,
    monthly_rate_bps, apr_bps, merchant_id, order_id, currency, start_date, created_at, updated_at
"""

_INSTALLMENT_COLUMNS = """
    loan_id, sequence, due_date, principal_minor, fee_minor, principal_paid_minor, fee_paid_minor,
    penalty_minor, penalty_paid_minor
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
SELECT_INSTALLMENTS = f"SELECT {_INSTALLMENT_COLUMNS} FROM installments WHERE loan_id = $1 ORDER BY sequence"


async def insert(conn: asyncpg.Connection, *, loan_id: UUID, account_id: UUID, authorization_id: UUID,
                 principal_minor: int, term_months: int, method: str, monthly_rate_bps: int, apr_bps: int,
                 merchant_id: str, order_id: str, currency: str, start_date: date, now: datetime,
                 installments: list[tuple[int, date, int, int]]) -> None:
    """Insert the loan and its schedule: (sequence, due_date, principal, fee) per period."""
    sequences, due_dates, principals, fees = (list(column) for column in zip(*installments))
    await conn.execute(INSERT_LOAN_WITH_INSTALLMENTS, loan_id, account_id, authorization_id, principal_minor,
                       term_months, method, monthly_rate_bps, apr_bps, merchant_id, order_id, currency,
                       start_date, now, sequences, due_dates, principals, fees)


async def get(conn: asyncpg.Connection, loan_id: UUID) -> tuple[asyncpg.Record, list[asyncpg.Record]] | None:
    loan = await conn.fetchrow(SELECT_LOAN, loan_id)
    if loan is None:
        return None
    return loan, await conn.fetch(SELECT_INSTALLMENTS, loan_id)
