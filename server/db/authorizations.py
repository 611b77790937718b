"""SQL of authorizations and their holds."""

from __future__ import annotations

import json
from datetime import datetime
from uuid import UUID

import asyncpg

_COLUMNS = """
    authorization_id, account_id, merchant_id, order_id, status, decline_reason, decline_message,
    amount_minor, captured_minor, released_minor, term_months, method, monthly_rate_bps,
    risk_decision, risk_score, risk_reasons, risk_context, loan_id, expires_at, created_at, updated_at
"""

INSERT = f"""
INSERT INTO authorizations (authorization_id, account_id, merchant_id, order_id, status, decline_reason,
                            decline_message, amount_minor, term_months, method, monthly_rate_bps,
                            risk_decision, risk_score, risk_reasons, risk_context, expires_at,
                            created_at, updated_at, device_id, ip_address)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $17,
        nullif($15::jsonb ->> 'device_id', ''), nullif($15::jsonb ->> 'ip_address', ''))
RETURNING {_COLUMNS}
"""

SELECT = f"SELECT {_COLUMNS} FROM authorizations WHERE authorization_id = $1"
SELECT_FOR_UPDATE = SELECT + " FOR UPDATE"

SELECT_LIVE_FOR_ORDER = """
SELECT authorization_id, status, expires_at FROM authorizations
WHERE merchant_id = $1 AND order_id = $2 AND status IN ('PENDING', 'CAPTURED')
"""

UPDATE_OUTCOME = f"""
UPDATE authorizations
SET status = $2, captured_minor = $3, released_minor = $4, loan_id = $5, updated_at = $6
WHERE authorization_id = $1 AND status = 'PENDING'
RETURNING {_COLUMNS}
"""

# Pending holds past expiry of one (locked) account; they are expired together.
EXPIRE_DUE_FOR_ACCOUNT = """
UPDATE authorizations
SET status = 'EXPIRED', released_minor = amount_minor, updated_at = $2
WHERE account_id = $1 AND status = 'PENDING' AND expires_at <= $2
RETURNING authorization_id, amount_minor
"""

SELECT_ACCOUNTS_WITH_DUE_HOLDS = """
SELECT DISTINCT account_id FROM authorizations
WHERE status = 'PENDING' AND expires_at <= $1
LIMIT $2
"""

SUM_PENDING_FOR_ACCOUNT = """
SELECT coalesce(sum(amount_minor), 0)::bigint FROM authorizations
WHERE account_id = $1 AND status = 'PENDING'
"""


async def insert(conn: asyncpg.Connection, *, authorization_id: UUID, account_id: UUID, merchant_id: str,
                 order_id: str, status: str, decline_reason: str | None, decline_message: str | None,
                 amount_minor: int, term_months: int, method: str, monthly_rate_bps: int | None,
                 risk_decision: str, risk_score: int, risk_reasons: list[str], risk_context: dict,
                 expires_at: datetime, now: datetime) -> asyncpg.Record:
    return await conn.fetchrow(
        INSERT, authorization_id, account_id, merchant_id, order_id, status, decline_reason, decline_message,
        amount_minor, term_months, method, monthly_rate_bps, risk_decision, risk_score, risk_reasons,
        json.dumps(risk_context), expires_at, now)


async def get(conn: asyncpg.Connection, authorization_id: UUID, *, lock: bool = False) -> asyncpg.Record | None:
    return await conn.fetchrow(SELECT_FOR_UPDATE if lock else SELECT, authorization_id)


async def live_for_order(conn: asyncpg.Connection, merchant_id: str, order_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(SELECT_LIVE_FOR_ORDER, merchant_id, order_id)


async def set_outcome(conn: asyncpg.Connection, authorization_id: UUID, *, status: str, captured_minor: int,
                      released_minor: int, loan_id: UUID | None, now: datetime) -> asyncpg.Record:
    return await conn.fetchrow(UPDATE_OUTCOME, authorization_id, status, captured_minor, released_minor,
                               loan_id, now)


async def expire_due_for_account(conn: asyncpg.Connection, account_id: UUID, now: datetime) -> int:
    """Expire the account's pending holds past their time; returns the amount released."""
    rows = await conn.fetch(EXPIRE_DUE_FOR_ACCOUNT, account_id, now)
    return sum(r["amount_minor"] for r in rows)


async def accounts_with_due_holds(conn: asyncpg.Connection, now: datetime, limit: int) -> list[UUID]:
    return [r["account_id"] for r in await conn.fetch(SELECT_ACCOUNTS_WITH_DUE_HOLDS, now, limit)]


async def pending_sum(conn: asyncpg.Connection, account_id: UUID) -> int:
    return await conn.fetchval(SUM_PENDING_FOR_ACCOUNT, account_id)
