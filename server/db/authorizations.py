"""SQL of authorizations and their holds."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from server.db import idempotency, one, risk

_COLUMNS = """
    authorization_id, account_id, merchant_id, order_id, status, decline_reason, decline_message,
    amount_minor, captured_minor, released_minor, term_months, method, monthly_rate_bps,
    risk_decision, risk_score, risk_reasons, risk_context, loan_id, expires_at, created_at, updated_at
"""

SELECT = f"SELECT {_COLUMNS} FROM authorizations WHERE authorization_id = $1"
SELECT_FOR_UPDATE = SELECT + " FOR UPDATE"

# The account of an authorization: where a request that names only the authorization
# keeps its idempotency record.
SELECT_ACCOUNT = "SELECT account_id FROM authorizations WHERE authorization_id = $1"

# The live authorization of a merchant order on any account. Only to explain why a
# write broke the one-live-per-order index of a single database: it looks across
# accounts, so it is never part of a request's own reads and writes.
SELECT_ORDER_HOLDER = """
SELECT account_id, status, expires_at FROM authorizations
WHERE merchant_id = $1 AND order_id = $2 AND status IN ('PENDING', 'CAPTURED')
LIMIT 1
"""

UPDATE_OUTCOME = f"""
UPDATE authorizations
SET status = $2, captured_minor = $3, released_minor = $4, loan_id = $5, updated_at = $6
WHERE authorization_id = $1 AND account_id = $7 AND status = 'PENDING'
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

# Authorize, read: the account with its version and billing cycle, the request's idempotency record, the
# account's holds past expiry (booked by this authorization), the account's own live
# authorization of the order if any, and (with risk checks on) the risk facts. One row
# even when the account does not exist. Every table is read within the account, but
# for two risk facts that count other accounts by device and by address. Another
# account's live authorization of the order is found by the write, not here: see
# docs/scaling.md. $1 account, $2 merchant, $3 order, $4 now, $5-$7 caller, method, key;
# with risk checks $8 device and $9 address.
_AUTHORIZE_READ = """
SELECT a.account_id, a.status, a.risk_grade, a.credit_limit_minor, a.temporary_limit_minor,
       a.temporary_limit_expires_at, a.held_minor, a.outstanding_principal_minor, a.time_zone, a.version,
       a.statement_day, a.payment_due_days,
       r.request_sha256 AS replay_sha256, r.response AS replay_response,
       (SELECT coalesce(sum(h.amount_minor), 0)::bigint FROM authorizations h
        WHERE h.account_id = $1 AND h.status = 'PENDING' AND h.expires_at <= $4) AS due_expired_minor,
       live.account_id AS live_account_id, live.status AS live_status, live.expires_at AS live_expires_at{facts}
FROM (SELECT 1) AS one{fact_joins}
LEFT JOIN accounts a ON a.account_id = $1
LEFT JOIN idempotency_records r ON r.account_id = $1 AND r.caller = $5 AND r.method = $6
                                AND r.idempotency_key = $7 AND r.response IS NOT NULL
LEFT JOIN LATERAL (
    SELECT account_id, status, expires_at FROM authorizations
    WHERE account_id = $1 AND merchant_id = $2 AND order_id = $3 AND status IN ('PENDING', 'CAPTURED') LIMIT 1
) AS live ON true
"""
_FACTS, _FACT_JOINS = risk.fact_columns(account="$1", device="$8", ip="$9", merchant="$2", now="$4")
AUTHORIZE_READ = _AUTHORIZE_READ.format(facts="", fact_joins="")
AUTHORIZE_READ_WITH_RISK = _AUTHORIZE_READ.format(facts="," + _FACTS, fact_joins=_FACT_JOINS)

# Authorize, write (a Write, see server/core/commands.py): the account's version checked
# and its holds moved, its due holds expired (exactly the amount read, or nothing
# happens), the authorization inserted, and the risk decision stored for audit.
# $6 account, $7 version, $8 amount held (0 when declined), $9 due holds expired, $10 now,
# $11-$25 the authorization, $26-$29 the risk decision (all NULL when no rule ran).
AUTHORIZE_WRITE = idempotency.write_statement("""
account AS (
    UPDATE accounts
    SET held_minor = held_minor + $8::bigint - $9::bigint,
        updated_at = CASE WHEN $8::bigint <> 0 OR $9::bigint <> 0 THEN $10 ELSE updated_at END
    WHERE account_id = $6 AND version = $7 AND EXISTS (SELECT 1 FROM claim)
    RETURNING account_id
),
expired AS (
    UPDATE authorizations SET status = 'EXPIRED', released_minor = amount_minor, updated_at = $10
    WHERE $9::bigint > 0 AND account_id = $6 AND status = 'PENDING' AND expires_at <= $10
      AND EXISTS (SELECT 1 FROM account)
    RETURNING amount_minor
),
auth AS (
    INSERT INTO authorizations (authorization_id, account_id, merchant_id, order_id, status, decline_reason,
                                decline_message, amount_minor, term_months, method, monthly_rate_bps,
                                risk_decision, risk_score, risk_reasons, risk_context, expires_at,
                                created_at, updated_at, device_id, ip_address)
    SELECT $11, $6, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24::jsonb, $25, $10, $10,
           nullif($24::jsonb ->> 'device_id', ''), nullif($24::jsonb ->> 'ip_address', '')
    FROM account
    WHERE (SELECT coalesce(sum(amount_minor), 0) FROM expired) = $9::bigint
    RETURNING authorization_id
),
decision AS (
    INSERT INTO risk_decisions (decision_id, account_id, authorization_id, decision, score, reasons, inputs,
                                rule_results, ruleset_version, created_at)
    SELECT $26, $6, auth.authorization_id, $21, $22, $23, $27::jsonb, $28::jsonb, $29, $10
    FROM auth WHERE $26::uuid IS NOT NULL
)""", done="auth", detail="account changed since it was read")



# What the risk_decision column (NOT NULL) holds when no rule ran: risk checks off, or a
# decline for the account's status, the term or the limit, which comes before the rules.
# Private: every public upper-case string of server.db is SQL, and a test prepares it.
_RISK_NOT_ASSESSED = "UNSPECIFIED"


@dataclass(frozen=True)
class RiskRecord:
    """A risk decision's audit record, beside the verdict the authorization carries."""

    decision_id: UUID
    inputs: str
    rule_results: str
    ruleset_version: str


async def authorize_read(conn: asyncpg.Connection, command: Any, key: Any, now: datetime, *,
                         with_risk: bool) -> asyncpg.Record:
    """The one read of Authorize for `command` (server.core.checkout.Authorize) and its
    idempotency `key` (server.core.commands.Key)."""
    args = [command.account_id, command.merchant_id, command.order_id, now, key.caller, key.method,
            key.idempotency_key]
    if not with_risk:
        return one(await conn.fetchrow(AUTHORIZE_READ, *args))
    return one(await conn.fetchrow(AUTHORIZE_READ_WITH_RISK, *args, command.risk_context.get("device_id", ""),
                                   command.risk_context.get("ip_address", "")))


def risk_assessed(row: asyncpg.Record) -> bool:
    """Whether the risk rules ran on this authorization (its risk_decision column holds
    their decision)."""
    return row["risk_decision"] != _RISK_NOT_ASSESSED


def authorize_write(*, authorization_id: UUID, account_id: UUID, version: int, merchant_id: str, order_id: str,
                    status: str, decline_reason: str | None, decline_message: str | None, amount_minor: int,
                    term_months: int, method: str, monthly_rate_bps: int | None, risk_decision: str | None,
                    risk_score: int, risk_reasons: list[str], risk_context: dict, expires_at: datetime | None,
                    due_expired_minor: int, record: RiskRecord | None, now: datetime) -> tuple[str, tuple]:
    """The statement and arguments ($6 on) that book an authorization decided on the
    account at `version`. `risk_decision` None: no rule ran. `expires_at` None: a
    declined authorization, which never expires (the column keeps its creation time)."""
    held = amount_minor if status == "PENDING" else 0
    return AUTHORIZE_WRITE, (
        account_id, version, held, due_expired_minor, now,
        authorization_id, merchant_id, order_id, status, decline_reason, decline_message, amount_minor,
        term_months, method, monthly_rate_bps, risk_decision or _RISK_NOT_ASSESSED, risk_score, risk_reasons,
        json.dumps(risk_context), expires_at or now,
        record.decision_id if record else None, record.inputs if record else None,
        record.rule_results if record else None, record.ruleset_version if record else None)


async def get(conn: asyncpg.Connection, authorization_id: UUID, *, lock: bool = False) -> asyncpg.Record | None:
    return await conn.fetchrow(SELECT_FOR_UPDATE if lock else SELECT, authorization_id)


async def account_of(conn: asyncpg.Connection, authorization_id: UUID) -> UUID | None:
    """The account that holds the authorization; None when there is no such authorization."""
    return await conn.fetchval(SELECT_ACCOUNT, authorization_id)


async def order_holder(conn: asyncpg.Connection, merchant_id: str, order_id: str) -> asyncpg.Record | None:
    """The live authorization of the merchant order on any account (see SELECT_ORDER_HOLDER)."""
    return await conn.fetchrow(SELECT_ORDER_HOLDER, merchant_id, order_id)


async def set_outcome(conn: asyncpg.Connection, account_id: UUID, authorization_id: UUID, *, status: str,
                      captured_minor: int, released_minor: int, loan_id: UUID | None,
                      now: datetime) -> asyncpg.Record:
    return one(await conn.fetchrow(UPDATE_OUTCOME, authorization_id, status, captured_minor, released_minor,
                                   loan_id, now, account_id))


async def expire_due_for_account(conn: asyncpg.Connection, account_id: UUID, now: datetime) -> int:
    """Expire the account's pending holds past their time; returns the amount released."""
    rows = await conn.fetch(EXPIRE_DUE_FOR_ACCOUNT, account_id, now)
    return sum(r["amount_minor"] for r in rows)


async def accounts_with_due_holds(conn: asyncpg.Connection, now: datetime, limit: int) -> list[UUID]:
    return [r["account_id"] for r in await conn.fetch(SELECT_ACCOUNTS_WITH_DUE_HOLDS, now, limit)]


async def pending_sum(conn: asyncpg.Connection, account_id: UUID) -> int:
    return await conn.fetchval(SUM_PENDING_FOR_ACCOUNT, account_id)
