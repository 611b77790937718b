"""SQL of limit reviews and campaigns."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

from server.db import one

ACCOUNTS_WITH_LOANS = """
SELECT DISTINCT account_id FROM loans WHERE account_id > $1 ORDER BY account_id LIMIT $2
"""

# What a review needs of one account's repayment record. An installment is paid on
# time when it is fully paid and no part of it was paid after its due date (in UTC
# dates; a day's slack covers every zone).
REPAYMENT_RECORD = """
SELECT
    (SELECT count(*) FROM installments i JOIN loans l USING (loan_id)
     WHERE i.account_id = $1 AND l.status IN ('ACTIVE', 'PAID_OFF')
       AND i.principal_paid_minor = i.principal_minor AND i.fee_paid_minor = i.fee_minor
       AND i.principal_minor + i.fee_minor > 0
       AND NOT EXISTS (SELECT 1 FROM repayment_allocations a JOIN repayments r USING (repayment_id)
                       WHERE a.loan_id = i.loan_id AND a.sequence = i.sequence
                         AND r.created_at::date > i.due_date + 1)) AS paid_on_time,
    (SELECT count(*) FROM penalty_accruals WHERE account_id = $1) AS penalty_days,
    (SELECT max(created_at) FROM account_events WHERE account_id = $1
       AND kind IN ('LIMIT_ADJUSTED', 'LIMIT_REVIEWED', 'CREDIT_ASSESSED')
       AND (detail ->> 'from_minor') IS DISTINCT FROM (detail ->> 'to_minor')) AS last_limit_change
"""

CAMPAIGN_COHORT = """
SELECT a.account_id FROM accounts a
WHERE a.status = 'ACTIVE' AND a.risk_grade = ANY($1::text[]) AND a.account_id > $2
  AND NOT EXISTS (SELECT 1 FROM installments i JOIN loans l USING (loan_id)
                  WHERE i.account_id = a.account_id AND l.status = 'ACTIVE'
                    AND i.due_date < ($3::timestamptz AT TIME ZONE a.time_zone)::date
                    AND i.principal_minor + i.fee_minor + i.penalty_minor
                        > i.principal_paid_minor + i.fee_paid_minor + i.penalty_paid_minor)
ORDER BY a.account_id
LIMIT $4
"""


async def accounts_with_loans(conn: asyncpg.Connection, after: UUID, limit: int) -> list[UUID]:
    return [r["account_id"] for r in await conn.fetch(ACCOUNTS_WITH_LOANS, after, limit)]


async def repayment_record(conn: asyncpg.Connection, account_id: UUID) -> asyncpg.Record:
    return one(await conn.fetchrow(REPAYMENT_RECORD, account_id))


async def campaign_cohort(conn: asyncpg.Connection, grades: list[str], after: UUID, now: datetime,
                          limit: int) -> list[UUID]:
    """Active accounts of these grades with nothing overdue in their own calendar at `now`."""
    return [r["account_id"] for r in await conn.fetch(CAMPAIGN_COHORT, grades, after, now, limit)]
