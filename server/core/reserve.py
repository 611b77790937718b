"""The risk reserve: a provision by grade at capture, given back when a loan is repaid
or cancelled, and consumed by charge-offs."""

from __future__ import annotations

from datetime import datetime
from fractions import Fraction
from uuid import UUID

import asyncpg

from server.db import ledger as ledger_rows
from server.db import reserve as reserve_rows
from server.domain import ledger
from server.domain.money import round_half_up
from server.domain.pricing import Grade

# Expected loss by grade, in basis points of the principal captured.
PROVISION_RATE_BPS: dict[Grade, int] = {Grade.A: 100, Grade.B: 200, Grade.C: 400, Grade.D: 700, Grade.E: 1_200}


def provision_minor(principal_minor: int, grade: Grade) -> int:
    """What a loan of this principal and grade puts into the reserve at capture."""
    return round_half_up(Fraction(principal_minor * PROVISION_RATE_BPS[grade], 10_000))


async def provide(conn: asyncpg.Connection, account_id: UUID, loan_id: UUID, principal_minor: int, grade: Grade,
                  now: datetime) -> int:
    amount = provision_minor(principal_minor, grade)
    if amount:
        await reserve_rows.set_provision(conn, account_id, loan_id, amount)
        await ledger_rows.post(conn, account_id, loan_id, ledger.reserve_provisioned(amount), now)
    return amount


async def release(conn: asyncpg.Connection, account_id: UUID, loan_id: UUID, now: datetime) -> int:
    """Give back the provision of a loan that will not be lost (repaid or cancelled).
    Called once, when the loan leaves ACTIVE for PAID_OFF or CANCELLED."""
    amount = await reserve_rows.provision_of(conn, account_id, loan_id)
    if amount:
        await ledger_rows.post(conn, account_id, loan_id, ledger.reserve_released(amount), now)
    return amount
