"""SQL of real-time risk: the facts the rules need, in one query, and the decisions."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

# Everything the rules look at, as columns of one SELECT, inside the Authorize read.
# Placeholders name the parameters: account, device ('' if none), address ('' if none),
# merchant, now.
_FACT_COLUMNS = """
    array_remove(ARRAY[
        CASE WHEN EXISTS (SELECT 1 FROM risk_lists WHERE kind = 'ACCOUNT' AND value = {account}::uuid::text
                          AND level = 'BLOCK') THEN 'ACCOUNT' END,
        CASE WHEN {device}::text <> '' AND EXISTS (SELECT 1 FROM risk_lists WHERE kind = 'DEVICE' AND value = {device}
                                       AND level = 'BLOCK') THEN 'DEVICE' END,
        CASE WHEN {ip}::text <> '' AND EXISTS (SELECT 1 FROM risk_lists WHERE kind = 'IP' AND value = {ip}
                                       AND level = 'BLOCK') THEN 'IP' END
    ], NULL) AS blocked,
    (SELECT level FROM risk_lists WHERE kind = 'MERCHANT' AND value = {merchant}) AS merchant_level,
    (SELECT count(*) FROM authorizations WHERE account_id = {account}::uuid AND status IN ('PENDING', 'CAPTURED')
        AND created_at > {now}::timestamptz - interval '1 hour') AS account_approvals_last_hour,
    (SELECT coalesce(sum(amount_minor), 0)::bigint FROM authorizations WHERE account_id = {account}::uuid
        AND status IN ('PENDING', 'CAPTURED') AND created_at > {now}::timestamptz - interval '1 day')
        AS account_amount_last_day_minor,
    (SELECT count(*) FROM authorizations WHERE {device}::text <> '' AND device_id = {device}
        AND created_at > {now}::timestamptz - interval '1 hour') AS device_authorizations_last_hour,
    (SELECT count(DISTINCT account_id) FROM authorizations WHERE {device}::text <> '' AND device_id = {device}
        AND account_id <> {account}::uuid AND created_at > {now}::timestamptz - interval '30 days')
        AS device_accounts_last_30_days,
    (SELECT count(DISTINCT account_id) FROM authorizations WHERE {ip}::text <> '' AND ip_address = {ip}
        AND account_id <> {account}::uuid AND created_at > {now}::timestamptz - interval '1 day')
        AS ip_accounts_last_day,
    EXISTS (SELECT 1 FROM authorizations WHERE account_id = {account}::uuid AND {device}::text <> ''
            AND device_id = {device} AND status IN ('PENDING', 'CAPTURED')) AS device_known_for_account,
    (SELECT count(*) FROM loans WHERE account_id = {account}::uuid) AS captured_count,
    (SELECT coalesce(max(principal_minor), 0) FROM loans WHERE account_id = {account}::uuid) AS largest_captured_minor
"""


def fact_columns(*, account: str, device: str, ip: str, merchant: str, now: str) -> str:
    """The risk facts as select-list columns over the given parameters."""
    return _FACT_COLUMNS.format(account=account, device=device, ip=ip, merchant=merchant, now=now)


# The facts alone: $1 account, $2 device, $3 address, $4 merchant, $5 now.
FACTS = "SELECT" + fact_columns(account="$1", device="$2", ip="$3", merchant="$4", now="$5")

INSERT_DECISION = """
INSERT INTO risk_decisions (decision_id, account_id, authorization_id, decision, score, reasons, inputs,
                            rule_results, ruleset_version, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
"""

SELECT_DECISIONS_PAGE = """
SELECT decision_id, account_id, authorization_id, decision, score, reasons, inputs, rule_results, ruleset_version,
       created_at
FROM risk_decisions
WHERE account_id = $1 AND ($2::timestamptz IS NULL OR (created_at, decision_id) > ($2, $3::uuid))
ORDER BY created_at, decision_id
LIMIT $4
"""

ADD_TO_LIST = """
INSERT INTO risk_lists (kind, value, level, reason) VALUES ($1, $2, $3, $4)
ON CONFLICT (kind, value) DO UPDATE SET level = EXCLUDED.level, reason = EXCLUDED.reason
"""

RESERVE_POOL = """
SELECT
    coalesce(-sum(amount_minor) FILTER (WHERE ledger_account = 'RISK_RESERVE'), 0)::bigint AS balance_minor,
    coalesce(sum(amount_minor) FILTER (WHERE ledger_account = 'PROVISION_EXPENSE'
                                       AND e.kind = 'RESERVE_PROVISIONED'), 0)::bigint AS provisioned_minor,
    coalesce(-sum(amount_minor) FILTER (WHERE ledger_account = 'PROVISION_EXPENSE'
                                        AND e.kind = 'RESERVE_RELEASED'), 0)::bigint AS released_minor,
    coalesce(sum(amount_minor) FILTER (WHERE ledger_account = 'RISK_RESERVE' AND amount_minor > 0
                                       AND e.kind = 'LOAN_CHARGED_OFF'), 0)::bigint AS written_off_minor,
    coalesce(sum(amount_minor) FILTER (WHERE ledger_account = 'INSURANCE_CLAIM_RECEIVABLE'), 0)::bigint
        AS insurance_claims_minor
FROM postings p JOIN journal_entries e USING (entry_id)
WHERE ledger_account IN ('RISK_RESERVE', 'PROVISION_EXPENSE', 'INSURANCE_CLAIM_RECEIVABLE')
"""

OUTSTANDING_PRINCIPAL = "SELECT coalesce(sum(outstanding_principal_minor), 0)::bigint FROM accounts"


async def facts(conn: asyncpg.Connection, account_id: UUID, device_id: str, ip_address: str, merchant_id: str,
                now: datetime) -> asyncpg.Record:
    return await conn.fetchrow(FACTS, account_id, device_id, ip_address, merchant_id, now)


async def record(conn: asyncpg.Connection, *, decision_id: UUID, account_id: UUID, authorization_id: UUID,
                 decision: str, score: int, reasons: list[str], inputs: str, rule_results: str, ruleset_version: str,
                 now: datetime) -> None:
    await conn.execute(INSERT_DECISION, decision_id, account_id, authorization_id, decision, score, reasons, inputs,
                       rule_results, ruleset_version, now)


async def decisions_page(conn: asyncpg.Connection, account_id: UUID, after: tuple[datetime, UUID] | None,
                         limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(SELECT_DECISIONS_PAGE, account_id, after[0] if after else None,
                            after[1] if after else None, limit)


async def add_to_list(conn: asyncpg.Connection, kind: str, value: str, level: str, reason: str) -> None:
    await conn.execute(ADD_TO_LIST, kind, value, level, reason)


async def reserve_pool(conn: asyncpg.Connection) -> tuple[asyncpg.Record, int]:
    return await conn.fetchrow(RESERVE_POOL), await conn.fetchval(OUTSTANDING_PRINCIPAL)
