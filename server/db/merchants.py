"""SQL of the merchant registry, of a merchant-day's captures and refunds, and of the
settled merchant-days (docs/payments.md, "Merchant settlement")."""

from __future__ import annotations

from datetime import date, datetime
from uuid import UUID

import asyncpg

from server.db import one

# Registering a merchant again changes its category from then on.
UPSERT_MERCHANT = """
INSERT INTO merchants (merchant_id, category, created_at, updated_at) VALUES ($1, $2, $3, $3)
ON CONFLICT (merchant_id) DO UPDATE SET category = EXCLUDED.category, updated_at = EXCLUDED.updated_at
RETURNING merchant_id, category, created_at, updated_at
"""

SELECT_CATEGORY = "SELECT category FROM merchants WHERE merchant_id = $1"

# A merchant-day, [$2, $3): the principal of the loans its captures made, and the
# principal its refunds took back (whenever the loan was captured).
DAY_TOTALS = """
SELECT
    (SELECT coalesce(sum(principal_minor), 0)::bigint FROM loans
     WHERE merchant_id = $1 AND created_at >= $2 AND created_at < $3) AS captured_minor,
    (SELECT count(*) FROM loans WHERE merchant_id = $1 AND created_at >= $2 AND created_at < $3) AS captures,
    (SELECT coalesce(sum(r.amount_minor), 0)::bigint FROM refunds r
     JOIN loans l ON l.loan_id = r.loan_id AND l.account_id = r.account_id
     WHERE l.merchant_id = $1 AND r.created_at >= $2 AND r.created_at < $3) AS refunded_minor,
    (SELECT count(*) FROM refunds r JOIN loans l ON l.loan_id = r.loan_id AND l.account_id = r.account_id
     WHERE l.merchant_id = $1 AND r.created_at >= $2 AND r.created_at < $3) AS refunds
"""

# The day's captures and refunds, one line each, in booking order from after
# ($4, $5), for the settlement file.
DAY_ITEMS_PAGE = """
SELECT * FROM (
    SELECT 'CAPTURE' AS kind, loan_id AS item_id, loan_id, account_id, created_at, principal_minor AS amount_minor
    FROM loans WHERE merchant_id = $1 AND created_at >= $2 AND created_at < $3
    UNION ALL
    SELECT 'REFUND', r.refund_id, r.loan_id, r.account_id, r.created_at, -r.amount_minor
    FROM refunds r JOIN loans l ON l.loan_id = r.loan_id AND l.account_id = r.account_id
    WHERE l.merchant_id = $1 AND r.created_at >= $2 AND r.created_at < $3
) AS items
WHERE (created_at, item_id) > ($4, $5)
ORDER BY created_at, item_id
LIMIT $6
"""

# Merchants with a capture or a refund in [$1, $2).
MERCHANTS_OF_DAY = """
SELECT merchant_id FROM loans WHERE created_at >= $1 AND created_at < $2
UNION
SELECT l.merchant_id FROM refunds r JOIN loans l ON l.loan_id = r.loan_id AND l.account_id = r.account_id
WHERE r.created_at >= $1 AND r.created_at < $2
ORDER BY merchant_id
"""

# The day's part of each customer account, [$2, $3): the principal its captures of the
# merchant's loans made less the principal its refunds of them took back, the amount
# by which that day moved the account's MERCHANT_PAYABLE.
DAY_PAYABLE_BY_ACCOUNT = """
SELECT account_id, sum(amount_minor)::bigint AS payable_minor FROM (
    SELECT account_id, principal_minor AS amount_minor FROM loans
    WHERE merchant_id = $1 AND created_at >= $2 AND created_at < $3
    UNION ALL
    SELECT r.account_id, -r.amount_minor FROM refunds r
    JOIN loans l ON l.loan_id = r.loan_id AND l.account_id = r.account_id
    WHERE l.merchant_id = $1 AND r.created_at >= $2 AND r.created_at < $3
) AS items
GROUP BY account_id
ORDER BY account_id
"""

_SETTLEMENT_COLUMNS = """
    merchant_id, settlement_date, settlement_id, category, fee_bps, captured_minor, refunded_minor, fee_minor,
    carried_in_minor, net_minor, paid_minor, status, payment_order_id, gateway_payment_id, failure_reason,
    created_at, completed_at
"""

# A settled day; nothing when the day is settled already (another replica, or a run
# repeated, settled it: the insert waits for that transaction and then finds its row).
INSERT_SETTLEMENT = f"""
INSERT INTO merchant_settlements (merchant_id, settlement_date, settlement_id, category, fee_bps, captured_minor,
                                  refunded_minor, fee_minor, carried_in_minor, net_minor, status, payment_order_id,
                                  created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
ON CONFLICT (merchant_id, settlement_date) DO NOTHING
RETURNING {_SETTLEMENT_COLUMNS}
"""

SELECT_SETTLEMENT = f"""
SELECT {_SETTLEMENT_COLUMNS} FROM merchant_settlements WHERE merchant_id = $1 AND settlement_date = $2
"""

# What the merchant's last settled day before $2 carried out: its net when that was zero
# or less, else nothing.
SELECT_CARRIED_OUT_BEFORE = """
SELECT coalesce((SELECT least(net_minor, 0) FROM merchant_settlements
                 WHERE merchant_id = $1 AND settlement_date < $2
                 ORDER BY settlement_date DESC LIMIT 1), 0)::bigint
"""

# Merchants with a capture or a refund in [$1, $2) whose day $3 is not settled yet.
MERCHANTS_TO_SETTLE = """
SELECT m.merchant_id FROM (
    SELECT merchant_id FROM loans WHERE created_at >= $1 AND created_at < $2
    UNION
    SELECT l.merchant_id FROM refunds r JOIN loans l ON l.loan_id = r.loan_id AND l.account_id = r.account_id
    WHERE r.created_at >= $1 AND r.created_at < $2
) AS m
WHERE NOT EXISTS (SELECT 1 FROM merchant_settlements s WHERE s.merchant_id = m.merchant_id
                  AND s.settlement_date = $3)
ORDER BY m.merchant_id
LIMIT $4
"""


async def register(conn: asyncpg.Connection, merchant_id: str, category: str, now: datetime) -> asyncpg.Record:
    return one(await conn.fetchrow(UPSERT_MERCHANT, merchant_id, category, now))


async def category(conn: asyncpg.Connection, merchant_id: str) -> str | None:
    """The registered category, or None for a merchant the registry does not name."""
    return await conn.fetchval(SELECT_CATEGORY, merchant_id)


async def day_totals(conn: asyncpg.Connection, merchant_id: str, start: datetime, end: datetime) -> asyncpg.Record:
    return one(await conn.fetchrow(DAY_TOTALS, merchant_id, start, end))


async def day_items_page(conn: asyncpg.Connection, merchant_id: str, start: datetime, end: datetime,
                         after: tuple[datetime, UUID], limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(DAY_ITEMS_PAGE, merchant_id, start, end, after[0], after[1], limit)


async def merchants_of_day(conn: asyncpg.Connection, start: datetime, end: datetime) -> list[str]:
    return [r["merchant_id"] for r in await conn.fetch(MERCHANTS_OF_DAY, start, end)]


async def day_payable_by_account(conn: asyncpg.Connection, merchant_id: str, start: datetime,
                                 end: datetime) -> list[tuple[UUID, int]]:
    """(account, captures less refunds of the merchant-day there), by account id."""
    return [(r["account_id"], r["payable_minor"])
            for r in await conn.fetch(DAY_PAYABLE_BY_ACCOUNT, merchant_id, start, end)]


async def insert_settlement(conn: asyncpg.Connection, merchant_id: str, day: date, settlement_id: UUID,
                            category: str, fee_bps: int, captured_minor: int, refunded_minor: int, fee_minor: int,
                            carried_in_minor: int, net_minor: int, status: str, payment_order_id: UUID | None,
                            now: datetime) -> asyncpg.Record | None:
    """The settled day, or None when it was settled already."""
    return await conn.fetchrow(INSERT_SETTLEMENT, merchant_id, day, settlement_id, category, fee_bps,
                               captured_minor, refunded_minor, fee_minor, carried_in_minor, net_minor, status,
                               payment_order_id, now)


async def settlement(conn: asyncpg.Connection, merchant_id: str, day: date) -> asyncpg.Record | None:
    return await conn.fetchrow(SELECT_SETTLEMENT, merchant_id, day)


async def carried_out_before(conn: asyncpg.Connection, merchant_id: str, day: date) -> int:
    """What the merchant's last settled day before `day` carries into it (zero or less)."""
    return int(await conn.fetchval(SELECT_CARRIED_OUT_BEFORE, merchant_id, day))


async def merchants_to_settle(conn: asyncpg.Connection, start: datetime, end: datetime, day: date,
                              limit: int) -> list[str]:
    """Up to `limit` merchants with activity in [start, end) whose `day` is not settled."""
    return [r["merchant_id"] for r in await conn.fetch(MERCHANTS_TO_SETTLE, start, end, day, limit)]
