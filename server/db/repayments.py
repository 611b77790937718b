"""SQL of repayments, their allocations, and refunds."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

INSERT_REPAYMENT_WITH_ALLOCATIONS = """
WITH repayment AS (
    INSERT INTO repayments (repayment_id, account_id, loan_id, channel, amount_minor, applied_minor,
                            unapplied_minor, waived_fee_minor, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
    RETURNING repayment_id, account_id
)
INSERT INTO repayment_allocations (repayment_id, line, account_id, loan_id, sequence, component, amount_minor)
SELECT repayment.repayment_id, a.line, repayment.account_id, a.loan_id, a.sequence, a.component, a.amount_minor
FROM repayment, unnest($10::integer[], $11::uuid[], $12::integer[], $13::text[], $14::bigint[])
                AS a (line, loan_id, sequence, component, amount_minor)
"""

INSERT_REFUND = """
INSERT INTO refunds (refund_id, account_id, loan_id, amount_minor, returned_minor, reason, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""

ADD_TO_CREDIT_BALANCE = """
UPDATE accounts SET credit_balance_minor = credit_balance_minor + $2, updated_at = $3 WHERE account_id = $1
"""


async def insert(conn: asyncpg.Connection, *, repayment_id: UUID, account_id: UUID, loan_id: UUID | None,
                 channel: str, amount_minor: int, applied_minor: int, unapplied_minor: int,
                 waived_fee_minor: int, allocations, now: datetime) -> None:
    allocations = list(allocations)
    await conn.execute(
        INSERT_REPAYMENT_WITH_ALLOCATIONS, repayment_id, account_id, loan_id, channel, amount_minor, applied_minor,
        unapplied_minor, waived_fee_minor, now,
        list(range(1, len(allocations) + 1)), [a.loan_id for a in allocations], [a.sequence for a in allocations],
        [a.component.value for a in allocations], [a.amount_minor for a in allocations])


async def insert_refund(conn: asyncpg.Connection, *, refund_id: UUID, account_id: UUID, loan_id: UUID,
                        amount_minor: int, returned_minor: int, reason: str, now: datetime) -> None:
    await conn.execute(INSERT_REFUND, refund_id, account_id, loan_id, amount_minor, returned_minor, reason, now)


async def add_to_credit_balance(conn: asyncpg.Connection, account_id: UUID, delta_minor: int, now: datetime) -> None:
    await conn.execute(ADD_TO_CREDIT_BALANCE, account_id, delta_minor, now)
