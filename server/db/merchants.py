"""SQL of the merchant registry and of a merchant-day's captures and refunds
(docs/payments.md, "Merchant settlement")."""

from __future__ import annotations

from datetime import datetime
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
