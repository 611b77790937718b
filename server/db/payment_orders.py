"""SQL of payment orders, the instruments they pay to, and the cursor over the
gateway's stream of results (docs/payments.md)."""

from __future__ import annotations

from datetime import date, datetime
from uuid import UUID

import asyncpg

from server import contact_crypto
from server.db import one

# The column an instrument token is sealed under (its associated data).
_TOKEN_COLUMN = "payment_methods.token"

_METHOD_COLUMNS = """
    payment_method_id, account_id, kind, status, token_last4, display_hint, created_at, replaced_at, auto_debit
"""

# An account's active instrument gives way to a new one (the unique index allows one).
REPLACE_ACTIVE_METHOD = """
UPDATE payment_methods SET status = 'REPLACED', replaced_at = $2 WHERE account_id = $1 AND status = 'ACTIVE'
"""

INSERT_METHOD = f"""
INSERT INTO payment_methods (payment_method_id, account_id, kind, status, token, token_last4, display_hint,
                             created_at, auto_debit)
VALUES ($1, $2, $3, 'ACTIVE', $4, $5, $6, $7, $8)
RETURNING {_METHOD_COLUMNS}
"""

SELECT_METHOD = f"SELECT {_METHOD_COLUMNS} FROM payment_methods WHERE payment_method_id = $1"

SELECT_ACTIVE_METHOD = f"SELECT {_METHOD_COLUMNS} FROM payment_methods WHERE account_id = $1 AND status = 'ACTIVE'"

SELECT_TOKEN = "SELECT token FROM payment_methods WHERE payment_method_id = $1 AND account_id = $2"

# Re-encryption with the active key, a batch at a time (server/rotate_contact_keys.py).
SELECT_TOKENS_TO_ROTATE = """
SELECT payment_method_id, account_id, token FROM payment_methods
WHERE token NOT LIKE $1
ORDER BY account_id, payment_method_id
LIMIT $2
FOR UPDATE SKIP LOCKED
"""

COUNT_TOKENS_TO_ROTATE = "SELECT count(*) FROM payment_methods WHERE token NOT LIKE $1"

UPDATE_TOKEN = "UPDATE payment_methods SET token = $3 WHERE payment_method_id = $1 AND account_id = $2"

_ORDER_COLUMNS = """
    order_id, account_id, kind, status, amount_minor, currency, payment_method_id, gateway_payment_id,
    failure_reason, created_at, submitted_at, completed_at, due_date, attempt
"""

INSERT_ORDER = f"""
INSERT INTO payment_orders (order_id, account_id, kind, status, amount_minor, payment_method_id, created_at)
VALUES ($1, $2, $3, 'REQUESTED', $4, $5, $6)
RETURNING {_ORDER_COLUMNS}
"""

# A DEBIT order for one try at one due date (docs/payments.md, "Auto-debit"); nothing
# when that try exists already (another replica, or a pass run again, made it).
INSERT_DEBIT_ORDER = f"""
INSERT INTO payment_orders (order_id, account_id, kind, status, amount_minor, payment_method_id, created_at,
                            due_date, attempt)
VALUES ($1, $2, 'DEBIT', 'REQUESTED', $3, $4, $5, $6, $7)
ON CONFLICT (account_id, due_date, attempt) WHERE kind = 'DEBIT' DO NOTHING
RETURNING {_ORDER_COLUMNS}
"""

# The tries made for one due date of an account, first first.
SELECT_DEBIT_ATTEMPTS = """
SELECT attempt, status, completed_at FROM payment_orders
WHERE account_id = $1 AND kind = 'DEBIT' AND due_date = $2
ORDER BY attempt
"""

# An account's tries for the due dates from $2 on, by due date and try.
SELECT_DEBIT_TRIES_SINCE = """
SELECT order_id, due_date, attempt, status, completed_at FROM payment_orders
WHERE account_id = $1 AND kind = 'DEBIT' AND due_date >= $2
ORDER BY due_date, attempt
"""

# A failed DEBIT order as its notice tells it: the instrument's last 4 characters (never
# the token), and whether a later try of its due date was made since.
SELECT_FAILED_DEBIT = """
SELECT o.order_id, o.amount_minor, o.failure_reason, o.completed_at, o.due_date, o.attempt, m.token_last4,
       o.payment_method_id,
       EXISTS (SELECT 1 FROM payment_orders t
               WHERE t.account_id = o.account_id AND t.kind = 'DEBIT' AND t.due_date = o.due_date
                 AND t.attempt > o.attempt) AS tried_again
FROM payment_orders o
JOIN payment_methods m ON m.payment_method_id = o.payment_method_id AND m.account_id = o.account_id
WHERE o.order_id = $1 AND o.account_id = $2 AND o.kind = 'DEBIT' AND o.status = 'FAILED'
"""

# Accounts after $1 (by id) whose active instrument has auto-debit on and that have an
# unpaid installment of an active loan due between $2 and $3 (a range of dates wide
# enough for every zone; the exact local date is checked per account).
SELECT_AUTO_DEBIT_ACCOUNTS = """
SELECT m.account_id FROM payment_methods m
WHERE m.status = 'ACTIVE' AND m.auto_debit AND m.account_id > $1
  AND EXISTS (SELECT 1 FROM installments i JOIN loans l ON l.loan_id = i.loan_id
              WHERE i.account_id = m.account_id AND l.status = 'ACTIVE' AND i.due_date BETWEEN $2 AND $3)
ORDER BY m.account_id
LIMIT $4
"""

SELECT_ORDER = f"SELECT {_ORDER_COLUMNS} FROM payment_orders WHERE order_id = $1"

SELECT_ORDER_IN_ACCOUNT = f"SELECT {_ORDER_COLUMNS} FROM payment_orders WHERE order_id = $1 AND account_id = $2"

# The one way an order becomes final: only from REQUESTED, so a second result finds
# nothing to change.
COMPLETE_ORDER = f"""
UPDATE payment_orders
SET status = $3, gateway_payment_id = $4, failure_reason = $5, completed_at = $6
WHERE order_id = $1 AND account_id = $2 AND status = 'REQUESTED'
RETURNING {_ORDER_COLUMNS}
"""

# The gateway was asked for the order (again) at $3.
MARK_SUBMITTED = """
UPDATE payment_orders SET submitted_at = $3 WHERE order_id = $1 AND account_id = $2 AND status = 'REQUESTED'
"""

# Orders still REQUESTED that were made before $1 and not asked about since $2, oldest
# first: each claimed by moving its submitted_at to $3, so another replica leaves it
# alone until $2 passes that. Rows another transaction holds are skipped.
CLAIM_REQUESTED = f"""
UPDATE payment_orders AS o SET submitted_at = $3
FROM (SELECT order_id, account_id FROM payment_orders
      WHERE status = 'REQUESTED' AND created_at <= $1 AND (submitted_at IS NULL OR submitted_at <= $2)
      ORDER BY created_at
      LIMIT $4
      FOR UPDATE SKIP LOCKED) AS due
WHERE o.order_id = due.order_id AND o.account_id = due.account_id
RETURNING {", ".join("o." + c.strip() for c in _ORDER_COLUMNS.split(","))}
"""

ENSURE_CURSOR = """
INSERT INTO payment_event_cursors (consumer, last_sequence, updated_at) VALUES ($1, 0, $2)
ON CONFLICT (consumer) DO NOTHING
"""

# The cursor, held for the rest of the transaction: replicas apply events one at a time.
LOCK_CURSOR = "SELECT last_sequence FROM payment_event_cursors WHERE consumer = $1 FOR UPDATE"

SELECT_CURSOR = "SELECT last_sequence FROM payment_event_cursors WHERE consumer = $1"

ADVANCE_CURSOR = """
UPDATE payment_event_cursors SET last_sequence = greatest(last_sequence, $2), updated_at = $3 WHERE consumer = $1
"""


async def replace_active_method(conn: asyncpg.Connection, account_id: UUID, now: datetime) -> None:
    await conn.execute(REPLACE_ACTIVE_METHOD, account_id, now)


async def insert_method(conn: asyncpg.Connection, *, payment_method_id: UUID, account_id: UUID, kind: str,
                        token: str, token_last4: str, display_hint: str, auto_debit: bool,
                        now: datetime) -> asyncpg.Record:
    """The new ACTIVE instrument; the token is encrypted here, the one place it is written."""
    sealed = contact_crypto.current().encrypt(token, _TOKEN_COLUMN)
    return one(await conn.fetchrow(INSERT_METHOD, payment_method_id, account_id, kind, sealed, token_last4,
                                   display_hint, now, auto_debit))


async def get_method(conn: asyncpg.Connection, payment_method_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(SELECT_METHOD, payment_method_id)


async def active_method(conn: asyncpg.Connection, account_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(SELECT_ACTIVE_METHOD, account_id)


async def token(conn: asyncpg.Connection, payment_method_id: UUID, account_id: UUID) -> str:
    """The instrument's token in clear, for the gateway request and nothing else."""
    stored = one(await conn.fetchrow(SELECT_TOKEN, payment_method_id, account_id))["token"]
    return contact_crypto.current().decrypt(stored, _TOKEN_COLUMN)


async def rotate_tokens(conn: asyncpg.Connection, batch_size: int) -> int:
    """Re-encrypt a batch of tokens not under the active key; returns how many."""
    cipher = contact_crypto.current()
    rows = await conn.fetch(SELECT_TOKENS_TO_ROTATE, f"v1:{cipher.active_key_id}:%", batch_size)
    for row in rows:
        clear = cipher.decrypt(row["token"], _TOKEN_COLUMN)
        await conn.execute(UPDATE_TOKEN, row["payment_method_id"], row["account_id"],
                           cipher.encrypt(clear, _TOKEN_COLUMN))
    return len(rows)


async def remaining_to_rotate(conn: asyncpg.Connection) -> int:
    return await conn.fetchval(COUNT_TOKENS_TO_ROTATE, f"v1:{contact_crypto.current().active_key_id}:%")


async def insert_order(conn: asyncpg.Connection, *, order_id: UUID, account_id: UUID, kind: str, amount_minor: int,
                       payment_method_id: UUID, now: datetime) -> asyncpg.Record:
    return one(await conn.fetchrow(INSERT_ORDER, order_id, account_id, kind, amount_minor, payment_method_id, now))


async def insert_debit_order(conn: asyncpg.Connection, *, order_id: UUID, account_id: UUID, amount_minor: int,
                             payment_method_id: UUID, due_date: date, attempt: int,
                             now: datetime) -> asyncpg.Record | None:
    """The new DEBIT order, or None when that try of that due date exists already."""
    return await conn.fetchrow(INSERT_DEBIT_ORDER, order_id, account_id, amount_minor, payment_method_id, now,
                               due_date, attempt)


async def debit_attempts(conn: asyncpg.Connection, account_id: UUID, due_date: date) -> list[asyncpg.Record]:
    return await conn.fetch(SELECT_DEBIT_ATTEMPTS, account_id, due_date)


async def debit_tries_since(conn: asyncpg.Connection, account_id: UUID, due_from: date) -> list[asyncpg.Record]:
    return await conn.fetch(SELECT_DEBIT_TRIES_SINCE, account_id, due_from)


async def failed_debit(conn: asyncpg.Connection, order_id: UUID, account_id: UUID) -> asyncpg.Record | None:
    """The FAILED DEBIT order with its instrument's last 4 characters, or None."""
    return await conn.fetchrow(SELECT_FAILED_DEBIT, order_id, account_id)


async def auto_debit_accounts(conn: asyncpg.Connection, after: UUID, due_from: date, due_to: date,
                              limit: int) -> list[UUID]:
    return [row["account_id"] for row in await conn.fetch(SELECT_AUTO_DEBIT_ACCOUNTS, after, due_from, due_to,
                                                          limit)]


async def get_order(conn: asyncpg.Connection, order_id: UUID, account_id: UUID | None = None) -> asyncpg.Record | None:
    """The order; within `account_id` when it is known (one shard)."""
    if account_id is None:
        return await conn.fetchrow(SELECT_ORDER, order_id)
    return await conn.fetchrow(SELECT_ORDER_IN_ACCOUNT, order_id, account_id)


async def complete_order(conn: asyncpg.Connection, order_id: UUID, account_id: UUID, *, status: str,
                         gateway_payment_id: str, failure_reason: str | None,
                         completed_at: datetime) -> asyncpg.Record | None:
    """The order made final, or None when it was not REQUESTED (already final)."""
    return await conn.fetchrow(COMPLETE_ORDER, order_id, account_id, status, gateway_payment_id, failure_reason,
                               completed_at)


async def mark_submitted(conn: asyncpg.Connection, order_id: UUID, account_id: UUID, now: datetime) -> None:
    await conn.execute(MARK_SUBMITTED, order_id, account_id, now)


async def claim_requested(conn: asyncpg.Connection, *, created_before: datetime, asked_before: datetime,
                          now: datetime, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(CLAIM_REQUESTED, created_before, asked_before, now, limit)


async def lock_cursor(conn: asyncpg.Connection, consumer: str, now: datetime) -> int:
    """The consumer's last handled sequence, its row held by this transaction."""
    await conn.execute(ENSURE_CURSOR, consumer, now)
    return one(await conn.fetchrow(LOCK_CURSOR, consumer))["last_sequence"]


async def cursor(conn: asyncpg.Connection, consumer: str) -> int:
    return await conn.fetchval(SELECT_CURSOR, consumer) or 0


async def advance_cursor(conn: asyncpg.Connection, consumer: str, sequence: int, now: datetime) -> None:
    await conn.execute(ADVANCE_CURSOR, consumer, sequence, now)
