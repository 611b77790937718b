"""SQL of the risk reserve: each loan's provision, and the pool's totals."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from server.db import one

# A loan's provision, kept on the loan so that it can be given back exactly once.
SET_PROVISION = "UPDATE loans SET provision_minor = $3 WHERE loan_id = $2 AND account_id = $1"
PROVISION_OF = "SELECT provision_minor FROM loans WHERE loan_id = $2 AND account_id = $1"

RESERVE_POOL = """
SELECT
    coalesce(-sum(amount_minor) FILTER (WHERE ledger_account = 'RISK_RESERVE'), 0)::bigint AS balance_minor,
    coalesce(sum(amount_minor) FILTER (WHERE ledger_account = 'PROVISION_EXPENSE'
                                       AND e.kind = 'RESERVE_PROVISIONED'), 0)::bigint AS provisioned_minor,
    coalesce(-sum(amount_minor) FILTER (WHERE ledger_account = 'PROVISION_EXPENSE'
                                        AND e.kind = 'RESERVE_RELEASED'), 0)::bigint AS released_minor,
    coalesce(sum(amount_minor) FILTER (WHERE ledger_account = 'RISK_RESERVE' AND amount_minor > 0
                                       AND e.kind = 'LOAN_CHARGED_OFF'), 0)::bigint AS written_off_minor,
    coalesce(sum(amount_minor) FILTER (WHERE ledger_account = 'INSURANCE_CLAIM_RECEIVABLE'
                                       AND e.kind = 'LOAN_CHARGED_OFF'), 0)::bigint AS insurance_claims_minor
FROM postings p JOIN journal_entries e USING (entry_id)
WHERE ledger_account IN ('RISK_RESERVE', 'PROVISION_EXPENSE', 'INSURANCE_CLAIM_RECEIVABLE')
"""

# What recoveries after charge-off gave back to the reserve, net of the insurer's and the
# partners' parts (migration 0020_recoveries.sql).
RECOVERED = "SELECT coalesce(sum(reserve_minor), 0)::bigint FROM recoveries"

OUTSTANDING_PRINCIPAL = "SELECT coalesce(sum(outstanding_principal_minor), 0)::bigint FROM accounts"


async def set_provision(conn: asyncpg.Connection, account_id: UUID, loan_id: UUID, amount_minor: int) -> None:
    """Record what the loan put into the reserve at capture."""
    await conn.execute(SET_PROVISION, account_id, loan_id, amount_minor)


async def provision_of(conn: asyncpg.Connection, account_id: UUID, loan_id: UUID) -> int:
    """What the loan put into the reserve (0 when nothing, or no such loan)."""
    return await conn.fetchval(PROVISION_OF, account_id, loan_id) or 0


async def pool_totals(conn: asyncpg.Connection) -> tuple[asyncpg.Record, int, int]:
    """The reserve's totals by kind of movement, what recoveries gave back to it, and the
    principal outstanding on all accounts (what the reserve covers)."""
    return (one(await conn.fetchrow(RESERVE_POOL)), await conn.fetchval(RECOVERED),
            await conn.fetchval(OUTSTANDING_PRINCIPAL))
