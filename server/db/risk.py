"""SQL of real-time risk: the facts the rules need, in one query, and the decisions."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

from server.db import one

# Everything the rules look at, as joins and columns of the Authorize read. A PENDING
# hold past its expiry is not live: this Authorize's write books its expiry, and the
# facts must be those the rules saw when expiry came before the facts. Seven
# lookups, each one index range (the lists' four keys in one scan, an account's recent
# live authorizations once for both velocity facts, a device's month once for both
# device facts, the loans once). Placeholders name the parameters: account, device (''
# if none), address ('' if none), merchant, now.
_FACT_JOINS = """
LEFT JOIN LATERAL (
    SELECT coalesce(array_agg(l.kind ORDER BY l.kind) FILTER (WHERE l.level = 'BLOCK' AND l.kind <> 'MERCHANT'),
                    '{{}}') AS blocked,
           max(l.level) FILTER (WHERE l.kind = 'MERCHANT') AS merchant_level
    FROM risk_lists l
    WHERE (l.kind = 'ACCOUNT' AND l.value = {account}::uuid::text)
       OR ({device}::text <> '' AND l.kind = 'DEVICE' AND l.value = {device})
       OR ({ip}::text <> '' AND l.kind = 'IP' AND l.value = {ip})
       OR (l.kind = 'MERCHANT' AND l.value = {merchant})
) AS lists ON true
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE h.created_at > {now}::timestamptz - interval '1 hour') AS approvals_last_hour,
           coalesce(sum(h.amount_minor), 0)::bigint AS amount_last_day_minor
    FROM authorizations h
    WHERE h.account_id = {account}::uuid AND h.status IN ('PENDING', 'CAPTURED')
      AND h.created_at > {now}::timestamptz - interval '1 day'
      AND NOT (h.status = 'PENDING' AND h.expires_at <= {now}::timestamptz)
) AS recent ON true
LEFT JOIN LATERAL (
    SELECT count(*) FILTER (WHERE d.created_at > {now}::timestamptz - interval '1 hour') AS authorizations_last_hour,
           count(DISTINCT d.account_id) FILTER (WHERE d.account_id <> {account}::uuid) AS other_accounts
    FROM authorizations d
    WHERE {device}::text <> '' AND d.device_id = {device} AND d.created_at > {now}::timestamptz - interval '30 days'
) AS device ON true
LEFT JOIN LATERAL (
    SELECT count(*) AS loans, coalesce(max(principal_minor), 0) AS largest_minor
    FROM loans WHERE account_id = {account}::uuid
) AS history ON true
"""

_FACT_COLUMNS = """
    lists.blocked, lists.merchant_level,
    recent.approvals_last_hour AS account_approvals_last_hour,
    recent.amount_last_day_minor AS account_amount_last_day_minor,
    device.authorizations_last_hour AS device_authorizations_last_hour,
    device.other_accounts AS device_accounts_last_30_days,
    (SELECT count(DISTINCT ip.account_id) FROM authorizations ip WHERE {ip}::text <> '' AND ip.ip_address = {ip}
        AND ip.account_id <> {account}::uuid AND ip.created_at > {now}::timestamptz - interval '1 day')
        AS ip_accounts_last_day,
    EXISTS (SELECT 1 FROM authorizations WHERE account_id = {account}::uuid AND {device}::text <> ''
            AND device_id = {device} AND status IN ('PENDING', 'CAPTURED')
            AND NOT (status = 'PENDING' AND expires_at <= {now}::timestamptz)) AS device_known_for_account,
    history.loans AS captured_count, history.largest_minor AS largest_captured_minor
"""


def fact_columns(*, account: str, device: str, ip: str, merchant: str, now: str) -> tuple[str, str]:
    """The risk facts over the given parameters: (select-list columns, joins for the
    FROM clause)."""
    names = {"account": account, "device": device, "ip": ip, "merchant": merchant, "now": now}
    return _FACT_COLUMNS.format(**names), _FACT_JOINS.format(**names)


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


async def decisions_page(conn: asyncpg.Connection, account_id: UUID, after: tuple[datetime, UUID] | None,
                         limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(SELECT_DECISIONS_PAGE, account_id, after[0] if after else None,
                            after[1] if after else None, limit)


async def add_to_list(conn: asyncpg.Connection, kind: str, value: str, level: str, reason: str) -> None:
    await conn.execute(ADD_TO_LIST, kind, value, level, reason)


async def reserve_pool(conn: asyncpg.Connection) -> tuple[asyncpg.Record, int]:
    return one(await conn.fetchrow(RESERVE_POOL)), await conn.fetchval(OUTSTANDING_PRINCIPAL)
