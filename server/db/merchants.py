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
RETURNING merchant_id, category, payee_id, created_at, updated_at
"""

SELECT_CATEGORY = "SELECT category FROM merchants WHERE merchant_id = $1"
SELECT_PAYEE = "SELECT coalesce((SELECT payee_id FROM merchants WHERE merchant_id = $1), $1)"
# Naming where a registered merchant is paid; nothing when it is not registered.
UPDATE_PAYEE = """
UPDATE merchants SET payee_id = $2, updated_at = $3 WHERE merchant_id = $1
RETURNING merchant_id, category, payee_id, created_at, updated_at
"""

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
# by which that day moved the account's MERCHANT_PAYABLE, and what it captured.
DAY_PAYABLE_BY_ACCOUNT = """
SELECT account_id, sum(amount_minor)::bigint AS payable_minor, sum(captured_minor)::bigint AS captured_minor
FROM (
    SELECT account_id, principal_minor AS amount_minor, principal_minor AS captured_minor FROM loans
    WHERE merchant_id = $1 AND created_at >= $2 AND created_at < $3
    UNION ALL
    SELECT r.account_id, -r.amount_minor, 0 FROM refunds r
    JOIN loans l ON l.loan_id = r.loan_id AND l.account_id = r.account_id
    WHERE l.merchant_id = $1 AND r.created_at >= $2 AND r.created_at < $3
) AS items
GROUP BY account_id
ORDER BY account_id
"""

_SETTLEMENT_COLUMNS = """
    merchant_id, settlement_date, settlement_id, category, fee_bps, captured_minor, refunded_minor, fee_minor,
    carried_in_minor, net_minor, paid_minor, status, payment_order_id, gateway_payment_id, failure_reason,
    created_at, completed_at, payee_id, submitted_at, payment_attempts, failed_payment_order_ids, fee_booked
"""

# A settled day; nothing when the day is settled already (another replica, or a run
# repeated, settled it: the insert waits for that transaction and then finds its row).
INSERT_SETTLEMENT = f"""
INSERT INTO merchant_settlements (merchant_id, settlement_date, settlement_id, category, fee_bps, captured_minor,
                                  refunded_minor, fee_minor, carried_in_minor, net_minor, status, payment_order_id,
                                  created_at, payee_id, submitted_at, payment_attempts)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, NULL,
        CASE WHEN $12::uuid IS NULL THEN 0 ELSE 1 END)
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

# One merchant's days settle one at a time, in date order: each starts from what the one
# before carried out, so two replicas must not settle two of its days at once.
LOCK_MERCHANT = "SELECT pg_advisory_xact_lock(hashtextextended('merchant-settlement:' || $1, 0))"

SELECT_LATER_SETTLED = """
SELECT EXISTS (SELECT 1 FROM merchant_settlements WHERE merchant_id = $1 AND settlement_date > $2)
"""

# The day a payment is for, by the payment's key.
SELECT_SETTLEMENT_BY_ORDER = f"""
SELECT {_SETTLEMENT_COLUMNS} FROM merchant_settlements WHERE payment_order_id = $1
"""

# The day whose payment under the key $1 FAILED and was asked again under another.
SELECT_SETTLEMENT_BY_FAILED_ORDER = f"""
SELECT {_SETTLEMENT_COLUMNS} FROM merchant_settlements WHERE failed_payment_order_ids @> ARRAY[$1::uuid]
"""

# The payment's final result, once: only a day still REQUESTED under this key changes.
COMPLETE_PAYMENT = f"""
UPDATE merchant_settlements
SET status = $3, paid_minor = CASE WHEN $3 = 'PAID' THEN net_minor ELSE 0 END, gateway_payment_id = $4,
    failure_reason = $5, completed_at = $6
WHERE merchant_id = $1 AND payment_order_id = $2 AND status = 'REQUESTED'
RETURNING {_SETTLEMENT_COLUMNS}
"""

# The days a payment of day $2 pays: the day, and the CARRIED days just before it whose
# nets it carried in (back to the merchant's last day that was not CARRIED).
SELECT_PAID_BY = """
SELECT settlement_id FROM merchant_settlements
WHERE merchant_id = $1 AND settlement_date <= $2
  AND settlement_date > coalesce((SELECT max(settlement_date) FROM merchant_settlements
                                  WHERE merchant_id = $1 AND settlement_date < $2 AND status <> 'CARRIED'),
                                 '-infinity'::date)
ORDER BY settlement_date
"""

# What the entries of the days settled under $1 put in flight for the merchant, per
# account: each account's part of the payment that clears them.
IN_FLIGHT_BY_ACCOUNT = """
SELECT e.account_id, (-sum(p.amount_minor))::bigint AS amount_minor
FROM journal_entries e JOIN postings p ON p.account_id = e.account_id AND p.entry_id = e.entry_id
WHERE e.reference_id = ANY($1::uuid[]) AND e.kind = 'MERCHANT_DAY_SETTLED'
  AND p.ledger_account = 'MERCHANT_SETTLEMENT_IN_FLIGHT'
GROUP BY e.account_id
ORDER BY e.account_id
"""

# Days waiting on the gateway that were made and last asked about before $1 (or never
# asked about), oldest first, each leased to the caller by moving submitted_at to $2.
CLAIM_REQUESTED = f"""
UPDATE merchant_settlements s SET submitted_at = $2
FROM (SELECT merchant_id, settlement_date, submitted_at FROM merchant_settlements
      WHERE status = 'REQUESTED' AND (submitted_at IS NULL OR submitted_at < $1)
        AND NOT EXISTS (SELECT 1 FROM merchant_settlements u
                        WHERE u.merchant_id = merchant_settlements.merchant_id AND NOT u.fee_booked)
      ORDER BY submitted_at NULLS FIRST, created_at
      LIMIT $3 FOR UPDATE SKIP LOCKED) d
WHERE s.merchant_id = d.merchant_id AND s.settlement_date = d.settlement_date
RETURNING {", ".join("s." + c.strip() for c in _SETTLEMENT_COLUMNS.split(","))},
          d.submitted_at AS previously_submitted_at
"""

# Days whose fee is still to be booked (settled before the fee was booked on settling).
SELECT_UNBOOKED_FEES = f"""
SELECT {_SETTLEMENT_COLUMNS} FROM merchant_settlements WHERE NOT fee_booked
ORDER BY merchant_id, settlement_date LIMIT $1
"""

MARK_FEE_BOOKED = """
UPDATE merchant_settlements SET fee_booked = true
WHERE merchant_id = $1 AND settlement_date = $2 AND NOT fee_booked
RETURNING settlement_id
"""

# A day held since before payments were sent, released to the next sweep.
RELEASE = f"""
UPDATE merchant_settlements SET submitted_at = NULL
WHERE merchant_id = $1 AND settlement_date = $2 AND status = 'REQUESTED' AND submitted_at = 'infinity'
RETURNING {_SETTLEMENT_COLUMNS}
"""

MARK_SUBMITTED = """
UPDATE merchant_settlements SET submitted_at = $3 WHERE merchant_id = $1 AND settlement_date = $2
"""

# A FAILED day's payment asked for again, under a new key, to the payee registered now.
PAY_AGAIN = f"""
UPDATE merchant_settlements
SET status = 'REQUESTED', failed_payment_order_ids = failed_payment_order_ids || payment_order_id,
    payment_order_id = $3, payee_id = $4, payment_attempts = payment_attempts + 1, submitted_at = NULL,
    gateway_payment_id = NULL, failure_reason = NULL, completed_at = NULL
WHERE merchant_id = $1 AND settlement_date = $2 AND status = 'FAILED'
RETURNING {_SETTLEMENT_COLUMNS}
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


async def payee(conn: asyncpg.Connection, merchant_id: str) -> str:
    """Where the merchant is paid at the gateway."""
    return str(await conn.fetchval(SELECT_PAYEE, merchant_id))


async def set_payee(conn: asyncpg.Connection, merchant_id: str, payee_id: str,
                    now: datetime) -> asyncpg.Record | None:
    """The registration with its new payee; None for a merchant not registered."""
    return await conn.fetchrow(UPDATE_PAYEE, merchant_id, payee_id, now)


async def day_totals(conn: asyncpg.Connection, merchant_id: str, start: datetime, end: datetime) -> asyncpg.Record:
    return one(await conn.fetchrow(DAY_TOTALS, merchant_id, start, end))


async def day_items_page(conn: asyncpg.Connection, merchant_id: str, start: datetime, end: datetime,
                         after: tuple[datetime, UUID], limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(DAY_ITEMS_PAGE, merchant_id, start, end, after[0], after[1], limit)


async def merchants_of_day(conn: asyncpg.Connection, start: datetime, end: datetime) -> list[str]:
    return [r["merchant_id"] for r in await conn.fetch(MERCHANTS_OF_DAY, start, end)]


async def day_payable_by_account(conn: asyncpg.Connection, merchant_id: str, start: datetime,
                                 end: datetime) -> list[asyncpg.Record]:
    """(account_id, payable_minor: captures less refunds of the merchant-day there,
    captured_minor), by account id."""
    return await conn.fetch(DAY_PAYABLE_BY_ACCOUNT, merchant_id, start, end)


async def insert_settlement(conn: asyncpg.Connection, merchant_id: str, day: date, settlement_id: UUID,
                            category: str, fee_bps: int, captured_minor: int, refunded_minor: int, fee_minor: int,
                            carried_in_minor: int, net_minor: int, status: str, payment_order_id: UUID | None,
                            payee_id: str | None, now: datetime) -> asyncpg.Record | None:
    """The settled day, or None when it was settled already. A day to pay has not been
    asked for (submitted_at is empty): the bot's payments sweep asks for it next."""
    return await conn.fetchrow(INSERT_SETTLEMENT, merchant_id, day, settlement_id, category, fee_bps,
                               captured_minor, refunded_minor, fee_minor, carried_in_minor, net_minor, status,
                               payment_order_id, now, payee_id)


async def settlement(conn: asyncpg.Connection, merchant_id: str, day: date) -> asyncpg.Record | None:
    return await conn.fetchrow(SELECT_SETTLEMENT, merchant_id, day)


async def carried_out_before(conn: asyncpg.Connection, merchant_id: str, day: date) -> int:
    """What the merchant's last settled day before `day` carries into it (zero or less)."""
    return int(await conn.fetchval(SELECT_CARRIED_OUT_BEFORE, merchant_id, day))


async def merchants_to_settle(conn: asyncpg.Connection, start: datetime, end: datetime, day: date,
                              limit: int) -> list[str]:
    """Up to `limit` merchants with activity in [start, end) whose `day` is not settled."""
    return [r["merchant_id"] for r in await conn.fetch(MERCHANTS_TO_SETTLE, start, end, day, limit)]


async def lock_merchant(conn: asyncpg.Connection, merchant_id: str) -> None:
    """Until the transaction ends, no other settles or pays a day of the merchant."""
    await conn.execute(LOCK_MERCHANT, merchant_id)


async def later_day_settled(conn: asyncpg.Connection, merchant_id: str, day: date) -> bool:
    return bool(await conn.fetchval(SELECT_LATER_SETTLED, merchant_id, day))


async def settlement_by_order(conn: asyncpg.Connection, payment_order_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(SELECT_SETTLEMENT_BY_ORDER, payment_order_id)


async def settlement_by_failed_order(conn: asyncpg.Connection, payment_order_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(SELECT_SETTLEMENT_BY_FAILED_ORDER, payment_order_id)


async def complete_payment(conn: asyncpg.Connection, merchant_id: str, payment_order_id: UUID, *, status: str,
                           gateway_payment_id: str, failure_reason: str | None,
                           completed_at: datetime) -> asyncpg.Record | None:
    """The day made final; None when it was final already."""
    return await conn.fetchrow(COMPLETE_PAYMENT, merchant_id, payment_order_id, status, gateway_payment_id,
                               failure_reason, completed_at)


async def paid_by(conn: asyncpg.Connection, merchant_id: str, day: date) -> list[UUID]:
    """The settlement ids of the days a payment of `day` pays, oldest first."""
    return [r["settlement_id"] for r in await conn.fetch(SELECT_PAID_BY, merchant_id, day)]


async def in_flight_by_account(conn: asyncpg.Connection, settlement_ids: list[UUID]) -> list[tuple[UUID, int]]:
    """(account, what those days put in flight there for the merchant), by account id."""
    return [(r["account_id"], r["amount_minor"]) for r in await conn.fetch(IN_FLIGHT_BY_ACCOUNT, settlement_ids)]


async def claim_requested(conn: asyncpg.Connection, asked_before: datetime, now: datetime,
                          limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(CLAIM_REQUESTED, asked_before, now, limit)


async def mark_submitted(conn: asyncpg.Connection, merchant_id: str, day: date, now: datetime) -> None:
    await conn.execute(MARK_SUBMITTED, merchant_id, day, now)


async def pay_again(conn: asyncpg.Connection, merchant_id: str, day: date, payment_order_id: UUID,
                    payee_id: str) -> asyncpg.Record | None:
    """The FAILED day asked again under a new key; None when it is not FAILED."""
    return await conn.fetchrow(PAY_AGAIN, merchant_id, day, payment_order_id, payee_id)


async def unbooked_fees(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(SELECT_UNBOOKED_FEES, limit)


async def mark_fee_booked(conn: asyncpg.Connection, merchant_id: str, day: date) -> bool:
    """True when this call marked it (nobody booked it meanwhile)."""
    return await conn.fetchrow(MARK_FEE_BOOKED, merchant_id, day) is not None


async def release(conn: asyncpg.Connection, merchant_id: str, day: date) -> asyncpg.Record | None:
    """The held day released; None when it is not a held REQUESTED day."""
    return await conn.fetchrow(RELEASE, merchant_id, day)
