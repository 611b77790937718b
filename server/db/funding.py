"""SQL of co-lending: funding partners, their exposure counters, each co-funded loan's
funders with their stakes, and the items of partners' settlements."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from server.db import ledger, one

_PARTNER_COLUMNS = """
    p.partner_id, p.name, p.principal_share_bps, p.fee_share_bps, p.max_exposure_minor, p.grades, p.terms,
    p.active, p.exposure_stripes, p.created_at, p.updated_at
"""

# Every partner with its exposure now (the sum of its counters) and their caps.
SELECT_PARTNERS = f"""
SELECT {_PARTNER_COLUMNS},
       coalesce(sum(x.exposure_minor), 0)::bigint AS exposure_minor, coalesce(sum(x.cap_minor), 0)::bigint AS cap_minor
FROM funding_partners p LEFT JOIN partner_exposure x USING (partner_id)
GROUP BY p.partner_id
ORDER BY p.partner_id
"""

SELECT_PARTNER_FOR_UPDATE = f"SELECT {_PARTNER_COLUMNS} FROM funding_partners p WHERE p.partner_id = $1 FOR UPDATE"

INSERT_PARTNER = """
WITH partner AS (
    INSERT INTO funding_partners (partner_id, name, principal_share_bps, fee_share_bps, max_exposure_minor, grades,
                                  terms, active, exposure_stripes, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, true, $8, $9, $9)
    ON CONFLICT (partner_id) DO NOTHING
    RETURNING partner_id
)
INSERT INTO partner_exposure (partner_id, stripe, exposure_minor, cap_minor)
SELECT partner.partner_id, s.stripe - 1, 0, s.cap_minor
FROM partner, unnest($10::bigint[]) WITH ORDINALITY AS s (cap_minor, stripe)
RETURNING partner_id
"""

UPDATE_PARTNER = """
UPDATE funding_partners
SET name = $2, principal_share_bps = $3, fee_share_bps = $4, max_exposure_minor = $5, grades = $6, terms = $7,
    active = $8, updated_at = $9
WHERE partner_id = $1
"""

# The caps follow the maximum exposure and the active flag at once, for every server:
# captures check them in the database, not in a copy.
SET_CAPS = """
UPDATE partner_exposure AS x SET cap_minor = s.cap_minor
FROM unnest($2::bigint[]) WITH ORDINALITY AS s (cap_minor, stripe)
WHERE x.partner_id = $1 AND x.stripe = s.stripe - 1
"""

_FUNDING_COLUMNS = """
    f.loan_id, f.funder_id, f.account_id, f.principal_share_bps, f.fee_share_bps, f.funded_principal_minor,
    f.principal_minor, f.fee_minor, f.penalty_minor, f.exposure_stripe, f.created_at
"""

# The funders of a loan of the account, the platform first.
SELECT_LOAN_FUNDING = f"""
SELECT {_FUNDING_COLUMNS} FROM loan_funding f
WHERE f.account_id = $1 AND f.loan_id = $2
ORDER BY f.funder_id <> 'platform', f.funder_id
"""

# The funders of the loans of an account (for reads of many loans).
SELECT_FUNDING_OF_LOANS = f"""
SELECT {_FUNDING_COLUMNS} FROM loan_funding f
WHERE f.account_id = $1 AND f.loan_id = ANY($2::uuid[])
ORDER BY f.loan_id, f.funder_id <> 'platform', f.funder_id
"""

# The funders of a loan as arrays on one row, for a read that joins it as
# `LEFT JOIN LATERAL (...) AS fs ON true` beside the loan `l`: NULL arrays when the loan
# is the platform's alone.
_FUNDERS_OF_LOAN = """
SELECT array_agg(f.funder_id ORDER BY f.funder_id) AS funder_ids,
       array_agg(f.principal_share_bps ORDER BY f.funder_id) AS funder_principal_share_bps,
       array_agg(f.fee_share_bps ORDER BY f.funder_id) AS funder_fee_share_bps,
       array_agg(f.funded_principal_minor ORDER BY f.funder_id) AS funder_funded_principal_minor,
       array_agg(f.principal_minor ORDER BY f.funder_id) AS funder_principal_minor,
       array_agg(f.fee_minor ORDER BY f.funder_id) AS funder_fee_minor,
       array_agg(f.penalty_minor ORDER BY f.funder_id) AS funder_penalty_minor,
       array_agg(f.exposure_stripe ORDER BY f.funder_id) AS funder_exposure_stripe
FROM loan_funding f WHERE f.account_id = l.account_id AND f.loan_id = l.loan_id
"""


def funders_of_loan() -> str:
    """The subquery of a lateral join that reads the funders of the loan `l` as arrays."""
    return _FUNDERS_OF_LOAN


def changes_ctes(gate: str, account: str, now: str, first: int) -> str:
    """CTEs that write what an event did to the funders of loans, only where the CTE
    `gate` has a row: each funder's stake, the partners' settlement items, and their
    exposure counters. `account` and `now` are SQL expressions; the seventeen
    parameters from $`first` on are the ones `change_arrays` makes, in its order.
    Exposure rows come sorted, so concurrent writes lock them in one order."""
    p = [f"${n}" for n in range(first, first + 17)]
    return f"""
funding_stakes AS (
    UPDATE loan_funding AS f
    SET principal_minor = u.principal_minor, fee_minor = u.fee_minor, penalty_minor = u.penalty_minor,
        updated_at = {now}
    FROM {gate}, unnest({p[0]}::uuid[], {p[1]}::text[], {p[2]}::bigint[], {p[3]}::bigint[], {p[4]}::bigint[])
                 AS u (loan_id, funder_id, principal_minor, fee_minor, penalty_minor)
    WHERE f.account_id = {account} AND f.loan_id = u.loan_id AND f.funder_id = u.funder_id
    RETURNING 1
),
funding_items AS (
    INSERT INTO partner_settlement_items (item_id, account_id, loan_id, partner_id, kind, reference_id,
                                          principal_minor, fee_minor, penalty_minor, recovery_minor, created_at)
    SELECT s.item_id, {account}, s.loan_id, s.partner_id, s.kind, {p[13]}::uuid, s.principal_minor, s.fee_minor,
           s.penalty_minor, s.recovery_minor, {now}
    FROM {gate}, unnest({p[5]}::uuid[], {p[6]}::uuid[], {p[7]}::text[], {p[8]}::text[], {p[9]}::bigint[],
                        {p[10]}::bigint[], {p[11]}::bigint[], {p[12]}::bigint[])
                 AS s (item_id, loan_id, partner_id, kind, principal_minor, fee_minor, penalty_minor, recovery_minor)
),
funding_exposure AS (
    UPDATE partner_exposure AS x SET exposure_minor = x.exposure_minor + e.delta_minor
    FROM {gate}, unnest({p[14]}::text[], {p[15]}::integer[], {p[16]}::bigint[]) AS e (partner_id, stripe, delta_minor)
    WHERE x.partner_id = e.partner_id AND x.stripe = e.stripe
    RETURNING 1
)"""


def change_arrays(stakes: Sequence[tuple[UUID, str, int, int, int]],
                  items: Sequence[tuple[UUID, UUID, str, str, int, int, int, int]], reference_id: UUID,
                  exposure: Sequence[tuple[str, int, int]]) -> tuple[Any, ...]:
    """The parameters of `changes_ctes`: stakes as (loan, funder, principal, fee, penalty)
    after the event; settlement items as (item, loan, partner, kind, principal, fee,
    penalty, recovery), all of the event `reference_id`; exposure as (partner, stripe,
    delta), summed per counter."""
    per_stripe: dict[tuple[str, int], int] = {}
    for partner_id, stripe, delta in exposure:
        per_stripe[(partner_id, stripe)] = per_stripe.get((partner_id, stripe), 0) + delta
    rows = sorted((k, d) for k, d in per_stripe.items() if d)
    return ([s[0] for s in stakes], [s[1] for s in stakes], [s[2] for s in stakes], [s[3] for s in stakes],
            [s[4] for s in stakes],
            [i[0] for i in items], [i[1] for i in items], [i[2] for i in items], [i[3] for i in items],
            [i[4] for i in items], [i[5] for i in items], [i[6] for i in items], [i[7] for i in items],
            reference_id, [k[0] for k, _ in rows], [k[1] for k, _ in rows], [d for _, d in rows])


# An event's changes to the funders of loans of a locked account, as one statement.
# $1 account, $2 now, $3-$19 the parameters of change_arrays.
APPLY_CHANGES = "WITH go AS (SELECT 1)," + changes_ctes("go", account="$1", now="$2", first=3) + """
SELECT (SELECT count(*) FROM funding_stakes) AS stakes, (SELECT count(*) FROM funding_exposure) AS exposure
"""


def co_funding_ctes(loan: str, account: str, loan_id: str, now: str, first: int) -> str:
    """CTEs of a capture's write that co-fund the loan the CTE `loan` inserted: take
    room on one of the partner's exposure counters and, only if one had room, insert
    the loan's funders and post the partner entry. Nine parameters from $`first`: the
    partner's principal part, the partner, the counter to try first (the account's), the
    funders as (funder, principal share, fee share, principal, fee) arrays, then the
    ten of ledger.entry_arrays for the partner entry (from $`first + 8` on). The
    statement moves the account's chain head past that entry only if it was posted.

    The counter is chosen only after the loan is written (so after the account row is
    locked): the first with room that no other transaction holds (SKIP LOCKED), the
    account's own first; when every one with room is held, the account's own, waiting
    for it. A capture thus holds at most one counter and waits on one only when all
    are busy."""
    p = [f"${n}" for n in range(first, first + 8)]
    return f"""
funding_stripe_free AS (
    SELECT s.stripe FROM {loan}, partner_exposure AS s
    WHERE s.partner_id = {p[1]} AND s.cap_minor > 0 AND s.exposure_minor + {p[0]}::bigint <= s.cap_minor
    ORDER BY s.stripe = {p[2]}::integer DESC, s.stripe
    LIMIT 1 FOR UPDATE OF s SKIP LOCKED
),
funding_stripe AS (
    UPDATE partner_exposure AS x SET exposure_minor = x.exposure_minor + {p[0]}::bigint
    FROM (SELECT coalesce((SELECT stripe FROM funding_stripe_free), {p[2]}::integer) AS stripe FROM {loan}) AS c
    WHERE x.partner_id = {p[1]} AND x.stripe = c.stripe AND x.cap_minor > 0
      AND x.exposure_minor + {p[0]}::bigint <= x.cap_minor
    RETURNING x.stripe
),
funding_funders AS (
    INSERT INTO loan_funding (loan_id, funder_id, account_id, principal_share_bps, fee_share_bps,
                              funded_principal_minor, principal_minor, fee_minor, exposure_stripe, created_at,
                              updated_at)
    SELECT {loan_id}, f.funder_id, {account}, f.principal_share_bps, f.fee_share_bps, f.principal_minor,
           f.principal_minor, f.fee_minor, CASE WHEN f.funder_id = 'platform' THEN NULL ELSE s.stripe END, {now}, {now}
    FROM funding_stripe AS s, unnest({p[3]}::text[], {p[4]}::integer[], {p[5]}::integer[], {p[6]}::bigint[],
                                     {p[7]}::bigint[])
                              AS f (funder_id, principal_share_bps, fee_share_bps, principal_minor, fee_minor)
),""" + ledger.entries_ctes("funding_stripe", account=account, now=now, first=first + 8, prefix="funding_")


# A capture in the locked mode co-funds its loan with this statement, the partner entry
# chained after the head of the account this transaction holds.
# $1 account, $2 loan, $3 now, $4-$21 as co_funding_ctes.
CO_FUND = "WITH go AS (SELECT 1 AS loan_id)," + co_funding_ctes(
    "go", account="$1", loan_id="$2", now="$3", first=4) + f""",
funding_chained AS (
    UPDATE accounts SET {ledger.head_assignments(12)}
    FROM funding_stripe WHERE accounts.account_id = $1
)
SELECT stripe FROM funding_stripe
"""

# A partner's settlement day, [$2, $3): what was collected for it (its settlement items)
# and what it lent (the loans it co-funded).
SETTLEMENT_TOTALS = """
SELECT count(*)::bigint AS items,
       coalesce(sum(i.principal_minor), 0)::bigint AS principal_minor,
       coalesce(sum(i.fee_minor), 0)::bigint AS fee_minor,
       coalesce(sum(i.penalty_minor), 0)::bigint AS penalty_minor,
       coalesce(sum(i.recovery_minor), 0)::bigint AS recovery_minor
FROM partner_settlement_items i
WHERE i.partner_id = $1 AND i.created_at >= $2 AND i.created_at < $3
"""

SETTLEMENT_FUNDED = """
SELECT count(*)::bigint AS loans, coalesce(sum(f.funded_principal_minor), 0)::bigint AS funded_principal_minor
FROM loan_funding f
WHERE f.funder_id = $1 AND f.created_at >= $2 AND f.created_at < $3
"""

# One page of the day's items, after the (created_at, item_id) $4, $5.
SETTLEMENT_ITEMS_PAGE = """
SELECT i.item_id, i.loan_id, i.kind, i.reference_id, i.principal_minor, i.fee_minor, i.penalty_minor,
       i.recovery_minor, i.created_at
FROM partner_settlement_items i
WHERE i.partner_id = $1 AND i.created_at >= $2 AND i.created_at < $3
  AND (i.created_at, i.item_id) > ($4, $5)
ORDER BY i.created_at, i.item_id
LIMIT $6
"""

# The day's co-funded loans, a page after the (created_at, loan_id) $4, $5.
SETTLEMENT_FUNDED_PAGE = """
SELECT f.loan_id, f.funded_principal_minor, f.created_at
FROM loan_funding f
WHERE f.funder_id = $1 AND f.created_at >= $2 AND f.created_at < $3
  AND (f.created_at, f.loan_id) > ($4, $5)
ORDER BY f.created_at, f.loan_id
LIMIT $6
"""

SELECT_PARTNER = f"SELECT {_PARTNER_COLUMNS} FROM funding_partners p WHERE p.partner_id = $1"


async def partners(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return await conn.fetch(SELECT_PARTNERS)


async def partner(conn: asyncpg.Connection, partner_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(SELECT_PARTNER, partner_id)


async def insert_partner(conn: asyncpg.Connection, *, partner_id: str, name: str, principal_share_bps: int,
                         fee_share_bps: int, max_exposure_minor: int, grades: list[str], terms: list[int],
                         caps: list[int], now: datetime) -> bool:
    """Add a partner with its exposure counters; False when the id is taken."""
    return await conn.fetchval(INSERT_PARTNER, partner_id, name, principal_share_bps, fee_share_bps,
                               max_exposure_minor, grades, terms, len(caps), now, caps) is not None


async def lock_partner(conn: asyncpg.Connection, partner_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(SELECT_PARTNER_FOR_UPDATE, partner_id)


async def update_partner(conn: asyncpg.Connection, *, partner_id: str, name: str, principal_share_bps: int,
                         fee_share_bps: int, max_exposure_minor: int, grades: list[str], terms: list[int],
                         active: bool, caps: list[int], now: datetime) -> None:
    await conn.execute(UPDATE_PARTNER, partner_id, name, principal_share_bps, fee_share_bps, max_exposure_minor,
                       grades, terms, active, now)
    await conn.execute(SET_CAPS, partner_id, caps)


async def loan_funding(conn: asyncpg.Connection, account_id: UUID, loan_id: UUID) -> list[asyncpg.Record]:
    return await conn.fetch(SELECT_LOAN_FUNDING, account_id, loan_id)


async def funding_of_loans(conn: asyncpg.Connection, account_id: UUID,
                           loan_ids: list[UUID]) -> dict[UUID, list[asyncpg.Record]]:
    by_loan: dict[UUID, list[asyncpg.Record]] = {}
    for row in await conn.fetch(SELECT_FUNDING_OF_LOANS, account_id, loan_ids):
        by_loan.setdefault(row["loan_id"], []).append(row)
    return by_loan


async def apply_changes(conn: asyncpg.Connection, account_id: UUID, now: datetime, arrays: tuple) -> asyncpg.Record:
    return one(await conn.fetchrow(APPLY_CHANGES, account_id, now, *arrays))


async def co_fund(conn: asyncpg.Connection, account_id: UUID, loan_id: UUID, now: datetime, args: tuple) -> bool:
    """Co-fund a loan written in this transaction; False when the partner had no room."""
    return await conn.fetchval(CO_FUND, account_id, loan_id, now, *args) is not None


async def settlement_totals(conn: asyncpg.Connection, partner_id: str, start: datetime,
                            end: datetime) -> tuple[asyncpg.Record, asyncpg.Record]:
    """The day's collected totals and funded totals."""
    return (one(await conn.fetchrow(SETTLEMENT_TOTALS, partner_id, start, end)),
            one(await conn.fetchrow(SETTLEMENT_FUNDED, partner_id, start, end)))


async def settlement_items_page(conn: asyncpg.Connection, partner_id: str, start: datetime, end: datetime,
                                after: tuple[datetime, UUID], limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(SETTLEMENT_ITEMS_PAGE, partner_id, start, end, after[0], after[1], limit)


async def settlement_funded_page(conn: asyncpg.Connection, partner_id: str, start: datetime, end: datetime,
                                 after: tuple[datetime, UUID], limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(SETTLEMENT_FUNDED_PAGE, partner_id, start, end, after[0], after[1], limit)
