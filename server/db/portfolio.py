"""SQL of the portfolio report: the book's rows as they stood at the end of a day.

Every query takes that day as a date ($2, or $1 for the totals) and keeps the rows
booked before its end in each account's own time zone: the instant
`(day + 1)::timestamp AT TIME ZONE a.time_zone`. Dates of bookings are likewise the
account's calendar dates. The histories are read a batch of accounts at a time, by
account id: every table is read by the account it belongs to, as everywhere else."""

from __future__ import annotations

from datetime import date
from uuid import UUID

import asyncpg

from server.db import one

# Accounts with a loan captured by the day, after the given id. The grade is the one
# the account had that day: the last grade a CREDIT_ASSESSED or LIMIT_ADJUSTED event set
# by then; before the first such event the grade an account opens with ($4), and the
# grade on the row for an account that has no such event at all.
ACCOUNTS_PAGE = """
SELECT a.account_id, coalesce(
    (SELECT coalesce(e.detail->>'grade_to', e.detail->>'grade') FROM account_events e
     WHERE e.account_id = a.account_id AND e.kind IN ('CREDIT_ASSESSED', 'LIMIT_ADJUSTED')
       AND e.created_at < (($2::date + 1)::timestamp AT TIME ZONE a.time_zone)
     ORDER BY e.event_id DESC LIMIT 1),
    CASE WHEN EXISTS (SELECT 1 FROM account_events e WHERE e.account_id = a.account_id
                      AND e.kind IN ('CREDIT_ASSESSED', 'LIMIT_ADJUSTED'))
         THEN $4::text ELSE a.risk_grade END) AS risk_grade
FROM accounts a
WHERE a.account_id > $1
  AND EXISTS (SELECT 1 FROM loans l WHERE l.account_id = a.account_id
              AND l.created_at < (($2::date + 1)::timestamp AT TIME ZONE a.time_zone))
ORDER BY a.account_id
LIMIT $3
"""

LOANS = """
SELECT l.loan_id, l.account_id, l.start_date, l.principal_minor
FROM loans l JOIN accounts a ON a.account_id = l.account_id
WHERE l.account_id = ANY($1::uuid[]) AND l.created_at < (($2::date + 1)::timestamp AT TIME ZONE a.time_zone)
"""

# Installments as scheduled now (a later refund's cuts included; see server.domain.portfolio).
INSTALLMENTS = """
SELECT i.loan_id, i.sequence, i.due_date, i.principal_minor + i.fee_minor AS amount_minor
FROM installments i JOIN loans l ON l.loan_id = i.loan_id AND l.account_id = i.account_id
JOIN accounts a ON a.account_id = i.account_id
WHERE i.account_id = ANY($1::uuid[]) AND l.created_at < (($2::date + 1)::timestamp AT TIME ZONE a.time_zone)
"""

PAYMENTS = """
SELECT ra.loan_id, ra.sequence, ra.component, ra.amount_minor,
       (r.created_at AT TIME ZONE a.time_zone)::date AS booked_on
FROM repayment_allocations ra
JOIN repayments r ON r.repayment_id = ra.repayment_id AND r.account_id = ra.account_id
JOIN accounts a ON a.account_id = ra.account_id
WHERE ra.account_id = ANY($1::uuid[]) AND r.created_at < (($2::date + 1)::timestamp AT TIME ZONE a.time_zone)
"""

# Penalties as booked: accruals (+) and waivers (-).
PENALTIES = """
SELECT p.loan_id, p.sequence, (p.created_at AT TIME ZONE a.time_zone)::date AS booked_on, p.amount_minor
FROM penalty_accruals p JOIN accounts a ON a.account_id = p.account_id
WHERE p.account_id = ANY($1::uuid[]) AND p.created_at < (($2::date + 1)::timestamp AT TIME ZONE a.time_zone)
UNION ALL
SELECT w.loan_id, w.sequence, (w.created_at AT TIME ZONE a.time_zone)::date, -w.amount_minor
FROM penalty_waivers w JOIN accounts a ON a.account_id = w.account_id
WHERE w.account_id = ANY($1::uuid[]) AND w.created_at < (($2::date + 1)::timestamp AT TIME ZONE a.time_zone)
"""

# The principal receivable's movements that name the loan: its capture and charge-off
# reference the loan, a refund references the refund. Repayments reference the
# repayment and may span loans: their principal comes from PAYMENTS.
PRINCIPAL_ENTRIES = """
WITH refs AS (
    SELECT loan_id AS reference_id, loan_id, account_id FROM loans WHERE account_id = ANY($1::uuid[])
    UNION ALL
    SELECT refund_id, loan_id, account_id FROM refunds WHERE account_id = ANY($1::uuid[])
)
SELECT r.loan_id, e.kind, (e.created_at AT TIME ZONE a.time_zone)::date AS booked_on,
       sum(p.amount_minor)::bigint AS amount_minor
FROM refs r
JOIN journal_entries e ON e.account_id = r.account_id AND e.reference_id = r.reference_id
JOIN postings p ON p.account_id = e.account_id AND p.entry_id = e.entry_id
JOIN accounts a ON a.account_id = r.account_id
WHERE p.ledger_account = 'PRINCIPAL_RECEIVABLE'
  AND e.created_at < (($2::date + 1)::timestamp AT TIME ZONE a.time_zone)
GROUP BY r.loan_id, e.kind, booked_on
"""

BUCKET_CHANGES = """
SELECT c.account_id, (c.created_at AT TIME ZONE a.time_zone)::date AS booked_on, c.detail->>'to' AS bucket
FROM case_events c JOIN accounts a ON a.account_id = c.account_id
WHERE c.account_id = ANY($1::uuid[]) AND c.kind = 'BUCKET_CHANGED'
  AND c.created_at < (($2::date + 1)::timestamp AT TIME ZONE a.time_zone)
ORDER BY c.account_id, c.event_id
"""

# The ledger's balances at the end of the day: receivables and the risk reserve.
LEDGER_TOTALS = """
SELECT count(*) FILTER (WHERE principal_minor + fee_minor + penalty_minor > 0) AS accounts_with_debt,
       coalesce(sum(principal_minor), 0)::bigint AS principal_minor,
       coalesce(sum(fee_minor), 0)::bigint AS fee_minor,
       coalesce(sum(penalty_minor), 0)::bigint AS penalty_minor,
       coalesce(sum(reserve_minor), 0)::bigint AS reserve_balance_minor
FROM (
    SELECT p.account_id,
           coalesce(sum(p.amount_minor) FILTER (WHERE p.ledger_account = 'PRINCIPAL_RECEIVABLE'), 0) AS principal_minor,
           coalesce(sum(p.amount_minor) FILTER (WHERE p.ledger_account = 'FEE_RECEIVABLE'), 0) AS fee_minor,
           coalesce(sum(p.amount_minor) FILTER (WHERE p.ledger_account = 'PENALTY_RECEIVABLE'), 0) AS penalty_minor,
           coalesce(-sum(p.amount_minor) FILTER (WHERE p.ledger_account = 'RISK_RESERVE'), 0) AS reserve_minor
    FROM postings p
    JOIN journal_entries e ON e.entry_id = p.entry_id AND e.account_id = p.account_id
    JOIN accounts a ON a.account_id = p.account_id
    WHERE p.ledger_account IN ('PRINCIPAL_RECEIVABLE', 'FEE_RECEIVABLE', 'PENALTY_RECEIVABLE', 'RISK_RESERVE')
      AND e.created_at < (($1::date + 1)::timestamp AT TIME ZONE a.time_zone)
    GROUP BY p.account_id
) AS balances
"""


async def accounts_page(conn: asyncpg.Connection, as_of: date, after: UUID, limit: int,
                        opening_grade: str) -> list[asyncpg.Record]:
    """(account_id, risk_grade) of up to `limit` accounts with loans by `as_of`, after `after`."""
    return await conn.fetch(ACCOUNTS_PAGE, after, as_of, limit, opening_grade)


async def histories(conn: asyncpg.Connection, account_ids: list[UUID], as_of: date) -> dict[str, list[asyncpg.Record]]:
    """The rows the histories of these accounts are made of, by kind: loans,
    installments, payments, penalties, principal_entries, bucket_changes."""
    queries = {"loans": LOANS, "installments": INSTALLMENTS, "payments": PAYMENTS, "penalties": PENALTIES,
               "principal_entries": PRINCIPAL_ENTRIES, "bucket_changes": BUCKET_CHANGES}
    return {kind: await conn.fetch(sql, account_ids, as_of) for kind, sql in queries.items()}


async def ledger_totals(conn: asyncpg.Connection, as_of: date) -> asyncpg.Record:
    """accounts_with_debt and the principal, fee and penalty receivables and the reserve
    balance at the end of `as_of`."""
    return one(await conn.fetchrow(LEDGER_TOTALS, as_of))
