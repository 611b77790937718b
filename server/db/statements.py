"""SQL of statements: issuing them from the ledger, reading them, and the leases of
their emails."""

from __future__ import annotations

import json
from datetime import date, datetime
from uuid import UUID

import asyncpg

# Accounts whose next statement date has come in their own zone: the day after the last
# statement issued (or the day the account opened) moved to the account's statement day,
# a month on when that is not later. The core computes the same from the billing cycle
# under the account's lock; this only pages the candidates out by id.
ACCOUNTS_DUE = """
SELECT a.account_id
FROM accounts a
CROSS JOIN LATERAL (
    SELECT coalesce((SELECT max(s.statement_date) FROM statements s WHERE s.account_id = a.account_id),
                    (a.created_at AT TIME ZONE a.time_zone)::date) AS last_date
) b
CROSS JOIN LATERAL (
    SELECT make_date(extract(year FROM b.last_date)::int, extract(month FROM b.last_date)::int,
                     a.statement_day) AS same_month
) m
WHERE a.account_id > $2
  AND CASE WHEN m.same_month > b.last_date THEN m.same_month
           ELSE (m.same_month + interval '1 month')::date END <= ($1::timestamptz AT TIME ZONE a.time_zone)::date
ORDER BY a.account_id
LIMIT $3
"""

LAST_STATEMENT = """
SELECT statement_date, closing_minor FROM statements
WHERE account_id = $1 ORDER BY statement_date DESC LIMIT 1
"""

# Every entry booked before the cut-off ($2) that moves the customer's balance (its
# postings on the customer's accounts, $3, do not net to zero) and is on no statement
# yet, with all its postings. An entry committed after the statement of its period was
# issued is found by the next one.
UNSTATED_ENTRIES = """
WITH moving AS (
    SELECT e.entry_id
    FROM journal_entries e
    JOIN postings p ON p.entry_id = e.entry_id AND p.account_id = e.account_id
    WHERE e.account_id = $1 AND e.created_at < $2 AND p.ledger_account = ANY($3::text[])
      AND NOT EXISTS (SELECT 1 FROM statement_lines l WHERE l.account_id = $1 AND l.entry_id = e.entry_id)
    GROUP BY e.entry_id
    HAVING sum(p.amount_minor) <> 0
)
SELECT e.entry_id, e.kind, e.reference_id, e.created_at, p.ledger_account, p.amount_minor
FROM moving m
JOIN journal_entries e ON e.entry_id = m.entry_id AND e.account_id = $1
JOIN postings p ON p.entry_id = e.entry_id AND p.account_id = $1
ORDER BY e.created_at, e.entry_id, p.line
"""

# The ledger's balances of the customer's accounts ($3) from every entry booked before $2.
BALANCES_BEFORE = """
SELECT p.ledger_account, sum(p.amount_minor)::bigint AS balance_minor
FROM postings p
JOIN journal_entries e ON e.entry_id = p.entry_id AND e.account_id = p.account_id
WHERE p.account_id = $1 AND e.created_at < $2 AND p.ledger_account = ANY($3::text[])
GROUP BY p.ledger_account
"""

# The loan each reference names: itself, or the loan of a refund or of a repayment.
LOANS_OF_REFERENCES = """
SELECT r.reference_id, l.loan_id, l.merchant_id, l.order_id, l.term_months, l.method, l.apr_bps
FROM unnest($2::uuid[]) AS r (reference_id)
JOIN loans l ON l.account_id = $1 AND l.loan_id = coalesce(
    (SELECT f.loan_id FROM refunds f WHERE f.account_id = $1 AND f.refund_id = r.reference_id),
    (SELECT p.loan_id FROM repayments p WHERE p.account_id = $1 AND p.repayment_id = r.reference_id),
    r.reference_id)
"""

_STATEMENT_COLUMNS = """
    account_id, statement_date, period_start, cutoff_at, payment_due_date, time_zone, opening_minor,
    purchases_minor, fees_minor, penalties_minor, payments_minor, refunds_minor, waivers_minor, written_off_minor,
    adjustments_minor, closing_minor, principal_owed_minor, fee_owed_minor, penalty_owed_minor,
    credit_balance_minor, credit_limit_minor, available_minor, amount_due_minor, issued_at
"""

# The statement, its lines and its installments in one statement; the primary key makes
# a second issue of the same date fail rather than write twice.
INSERT_STATEMENT = f"""
WITH statement AS (
    INSERT INTO statements ({_STATEMENT_COLUMNS})
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22,
            $23, $24)
    RETURNING account_id, statement_date
),
statement_lines_written AS (
    INSERT INTO statement_lines (account_id, statement_date, line, kind, entry_id, entry_kind, reference_id,
                                 booked_at, amount_minor, loan_id, merchant_id, order_id, term_months, method,
                                 apr_bps)
    SELECT s.account_id, s.statement_date, l.line, l.kind, l.entry_id, l.entry_kind, l.reference_id, l.booked_at,
           l.amount_minor, l.loan_id, l.merchant_id, l.order_id, l.term_months, l.method, l.apr_bps
    FROM statement s,
         unnest($25::integer[], $26::text[], $27::uuid[], $28::text[], $29::uuid[], $30::timestamptz[],
                $31::bigint[], $32::uuid[], $33::text[], $34::text[], $35::integer[], $36::text[], $37::integer[])
         AS l (line, kind, entry_id, entry_kind, reference_id, booked_at, amount_minor, loan_id, merchant_id,
               order_id, term_months, method, apr_bps)
)
INSERT INTO statement_installments (account_id, statement_date, loan_id, sequence, order_id, due_date,
                                    principal_minor, fee_minor, penalty_minor, owed_minor)
SELECT s.account_id, s.statement_date, i.loan_id, i.sequence, i.order_id, i.due_date, i.principal_minor,
       i.fee_minor, i.penalty_minor, i.principal_minor + i.fee_minor + i.penalty_minor
FROM statement s,
     unnest($38::uuid[], $39::integer[], $40::text[], $41::date[], $42::bigint[], $43::bigint[], $44::bigint[])
     AS i (loan_id, sequence, order_id, due_date, principal_minor, fee_minor, penalty_minor)
"""

SELECT_STATEMENT = f"SELECT {_STATEMENT_COLUMNS} FROM statements WHERE account_id = $1 AND statement_date = $2"

# The latest statement dated within [$2, $3).
SELECT_LATEST_BETWEEN = f"""
SELECT {_STATEMENT_COLUMNS} FROM statements
WHERE account_id = $1 AND statement_date >= $2 AND statement_date < $3
ORDER BY statement_date DESC LIMIT 1
"""

# The lines and the installments of some of an account's statements, in one read each.
SELECT_LINES = """
SELECT statement_date, line, kind, entry_id, entry_kind, reference_id, booked_at, amount_minor, loan_id,
       merchant_id, order_id, term_months, method, apr_bps
FROM statement_lines WHERE account_id = $1 AND statement_date = ANY($2::date[]) ORDER BY statement_date, line
"""

SELECT_INSTALLMENTS = """
SELECT statement_date, loan_id, sequence, order_id, due_date, principal_minor, fee_minor, penalty_minor
FROM statement_installments WHERE account_id = $1 AND statement_date = ANY($2::date[])
ORDER BY statement_date, due_date, order_id, sequence
"""

# Newest first, after the statement date of the previous page's last one.
SELECT_PAGE = f"""
SELECT {_STATEMENT_COLUMNS} FROM statements
WHERE account_id = $1 AND ($2::date IS NULL OR statement_date < $2)
ORDER BY statement_date DESC LIMIT $3
"""

_DELIVERY_COLUMNS = """
    account_id, statement_date, status, reason, tries, next_try_at, lease_until, lease_owner, message_id, detail,
    created_at, updated_at
"""

INSERT_DELIVERY = """
INSERT INTO statement_deliveries (account_id, statement_date, status, reason, message_id, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $6)
"""

# As contact attempts are claimed (server/db/collections.py): pending and due, or held
# by a bot whose lease ran out; claimed rows are SENDING under this claim's owner token.
CLAIM_DELIVERIES = f"""
UPDATE statement_deliveries d
SET status = 'SENDING', lease_until = $3, lease_owner = $5, tries = tries + 1, updated_at = $1
FROM (
    SELECT account_id, statement_date FROM statement_deliveries
    WHERE (status = 'PENDING' AND (next_try_at IS NULL OR next_try_at <= $1))
       OR (status = 'SENDING' AND lease_until <= $2)
    ORDER BY created_at
    LIMIT $4
    FOR UPDATE SKIP LOCKED
) c
WHERE d.account_id = c.account_id AND d.statement_date = c.statement_date
RETURNING {", ".join("d." + c.strip() for c in _DELIVERY_COLUMNS.split(","))}
"""

RENEW_DELIVERY_LEASES = """
UPDATE statement_deliveries d SET lease_until = $4
FROM unnest($1::uuid[], $2::date[]) AS k (account_id, statement_date)
WHERE d.account_id = k.account_id AND d.statement_date = k.statement_date AND d.lease_owner = $3
  AND d.status = 'SENDING'
RETURNING d.account_id, d.statement_date
"""

# Record how a claimed delivery went, only while the lease is the caller's.
FINISH_DELIVERY = """
UPDATE statement_deliveries
SET status = $4, reason = $5, detail = detail || $6::jsonb, updated_at = $7, next_try_at = $8,
    lease_until = NULL, lease_owner = NULL
WHERE account_id = $1 AND statement_date = $2 AND lease_owner = $3 AND status = 'SENDING'
RETURNING statement_date
"""


async def accounts_due(conn: asyncpg.Connection, now: datetime, after: UUID, limit: int) -> list[UUID]:
    return [r["account_id"] for r in await conn.fetch(ACCOUNTS_DUE, now, after, limit)]


async def last_statement(conn: asyncpg.Connection, account_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(LAST_STATEMENT, account_id)


async def unstated_entries(conn: asyncpg.Connection, account_id: UUID, cutoff_at: datetime,
                           ledger_accounts: list[str]) -> list[asyncpg.Record]:
    """One row per posting of each entry to show, in booking order."""
    return await conn.fetch(UNSTATED_ENTRIES, account_id, cutoff_at, ledger_accounts)


async def balances_before(conn: asyncpg.Connection, account_id: UUID, cutoff_at: datetime,
                          ledger_accounts: list[str]) -> dict[str, int]:
    return {r["ledger_account"]: r["balance_minor"]
            for r in await conn.fetch(BALANCES_BEFORE, account_id, cutoff_at, ledger_accounts)}


async def loans_of_references(conn: asyncpg.Connection, account_id: UUID,
                              reference_ids: list[UUID]) -> dict[UUID, asyncpg.Record]:
    return {r["reference_id"]: r for r in await conn.fetch(LOANS_OF_REFERENCES, account_id, reference_ids)}


async def insert(conn: asyncpg.Connection, values: tuple, lines: list[tuple], installments: list[tuple]) -> None:
    """`values` in the order of the statement's columns; each line (line, kind, entry_id,
    entry_kind, reference_id, booked_at, amount_minor, loan_id, merchant_id, order_id,
    term_months, method, apr_bps); each installment (loan_id, sequence, order_id,
    due_date, principal_minor, fee_minor, penalty_minor)."""
    line_columns = [list(column) for column in zip(*lines, strict=True)] if lines else [[] for _ in range(13)]
    installment_columns = ([list(column) for column in zip(*installments, strict=True)] if installments
                           else [[] for _ in range(7)])
    await conn.execute(INSERT_STATEMENT, *values, *line_columns, *installment_columns)


async def get(conn: asyncpg.Connection, account_id: UUID, statement_date: date) -> asyncpg.Record | None:
    return await conn.fetchrow(SELECT_STATEMENT, account_id, statement_date)


async def latest_between(conn: asyncpg.Connection, account_id: UUID, start: date, end: date) -> asyncpg.Record | None:
    return await conn.fetchrow(SELECT_LATEST_BETWEEN, account_id, start, end)


async def lines(conn: asyncpg.Connection, account_id: UUID, statement_dates: list[date]) -> list[asyncpg.Record]:
    return await conn.fetch(SELECT_LINES, account_id, statement_dates)


async def installments(conn: asyncpg.Connection, account_id: UUID,
                       statement_dates: list[date]) -> list[asyncpg.Record]:
    return await conn.fetch(SELECT_INSTALLMENTS, account_id, statement_dates)


async def page(conn: asyncpg.Connection, account_id: UUID, before: date | None, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(SELECT_PAGE, account_id, before, limit)


async def insert_delivery(conn: asyncpg.Connection, account_id: UUID, statement_date: date, status: str,
                          reason: str | None, message_id: str, now: datetime) -> None:
    await conn.execute(INSERT_DELIVERY, account_id, statement_date, status, reason, message_id, now)


async def claim_deliveries(conn: asyncpg.Connection, now: datetime, *, lease_now: datetime, lease_until: datetime,
                           owner: UUID, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(CLAIM_DELIVERIES, now, lease_now, lease_until, limit, owner)


async def renew_leases(conn: asyncpg.Connection, keys: list[tuple[UUID, date]], owner: UUID, lease_until: datetime,
                       timeout_s: float) -> set[tuple[UUID, date]]:
    """The deliveries of `keys` still held by `owner`, their leases now extended."""
    rows = await conn.fetch(RENEW_DELIVERY_LEASES, [k[0] for k in keys], [k[1] for k in keys], owner, lease_until,
                            timeout=timeout_s)
    return {(r["account_id"], r["statement_date"]) for r in rows}


async def finish_delivery(conn: asyncpg.Connection, account_id: UUID, statement_date: date, owner: UUID,
                          status: str, now: datetime, *, reason: str | None = None, detail: dict | None = None,
                          next_try_at: datetime | None = None) -> bool:
    """True when recorded; False when `owner` no longer holds the delivery (nothing changed)."""
    return await conn.fetchval(FINISH_DELIVERY, account_id, statement_date, owner, status, reason,
                               json.dumps(detail or {}), now, next_try_at) is not None

