"""SQL of credit lines."""

from __future__ import annotations

import json
from datetime import datetime
from uuid import UUID

import asyncpg

from server import contact_crypto
from server.db import one

_COLUMNS = """
    account_id, customer_id, status, risk_grade, credit_limit_minor, temporary_limit_minor,
    temporary_limit_expires_at, held_minor, outstanding_principal_minor, credit_balance_minor,
    currency, contact_name, contact_email, contact_phone, locale, time_zone, created_at, updated_at,
    statement_day, payment_due_days
"""

# A customer has one account: the id derived from the customer is taken, or (on one
# database, for accounts opened before ids were derived) the customer id is.
INSERT = f"""
INSERT INTO accounts (account_id, customer_id, status, risk_grade, contact_name, contact_email,
                      contact_phone, locale, time_zone, created_at, updated_at, contact_email_hash,
                      contact_phone_hash, statement_day, payment_due_days)
VALUES ($1, $2, 'ACTIVE', $3, $4, $5, $6, $7, $8, $9, $9, $10, $11, $12, $13)
ON CONFLICT DO NOTHING
RETURNING {_COLUMNS}
"""

SELECT = f"SELECT {_COLUMNS} FROM accounts WHERE account_id = $1"
# The account with what its holds that expired at $2 but are not yet swept still hold:
# Authorize gives that room back before deciding, and so does a quote.
SELECT_WITH_DUE_EXPIRED = f"""
SELECT {_COLUMNS},
       (SELECT coalesce(sum(h.amount_minor), 0)::bigint FROM authorizations h
        WHERE h.account_id = $1 AND h.status = 'PENDING' AND h.expires_at <= $2) AS due_expired_minor
FROM accounts WHERE account_id = $1
"""

# Locking an account is an update that changes nothing but the version (the trigger of
# migration 0009 moves it): whatever a locked transaction then changes, on the account
# row or beside it (installments, penalties, loans), an optimistic write decided on the
# account before the lock fails its version check and reads again.
LOCK = f"UPDATE accounts SET version = version WHERE account_id = $1 RETURNING {_COLUMNS}"
LOCK_IF_FREE = f"""
UPDATE accounts SET version = version
WHERE account_id = (SELECT account_id FROM accounts WHERE account_id = $1 FOR UPDATE SKIP LOCKED)
RETURNING {_COLUMNS}
"""
LOCK_BY_AUTHORIZATION = f"""
UPDATE accounts SET version = version
WHERE account_id = (SELECT account_id FROM authorizations WHERE authorization_id = $1)
RETURNING {_COLUMNS}
"""

UPDATE_LIMIT = f"""
UPDATE accounts SET credit_limit_minor = $2, risk_grade = $3, updated_at = $4
WHERE account_id = $1 RETURNING {_COLUMNS}
"""

UPDATE_TEMPORARY_LIMIT = f"""
UPDATE accounts SET temporary_limit_minor = $2, temporary_limit_expires_at = $3, updated_at = $4
WHERE account_id = $1 RETURNING {_COLUMNS}
"""

UPDATE_STATEMENT_DAY = f"""
UPDATE accounts SET statement_day = $2, updated_at = $3 WHERE account_id = $1 RETURNING {_COLUMNS}
"""

UPDATE_STATUS = f"""
UPDATE accounts SET status = $2, updated_at = $3 WHERE account_id = $1 RETURNING {_COLUMNS}
"""

# Holds and principal move by deltas on the locked row; the CHECK constraints refuse a
# negative total, which would be a bug.
ADD_TO_TOTALS = f"""
UPDATE accounts
SET held_minor = held_minor + $2,
    outstanding_principal_minor = outstanding_principal_minor + $3,
    updated_at = $4
WHERE account_id = $1 RETURNING {_COLUMNS}
"""

# Re-encryption with the active key, a batch at a time.
SELECT_CONTACTS_TO_ROTATE = """
SELECT account_id, contact_name, contact_email, contact_phone FROM accounts
WHERE NOT (contact_name LIKE $1 AND contact_email LIKE $1 AND contact_phone LIKE $1)
ORDER BY account_id
LIMIT $2
FOR UPDATE SKIP LOCKED
"""

COUNT_CONTACTS_TO_ROTATE = """
SELECT count(*) FROM accounts WHERE NOT (contact_name LIKE $1 AND contact_email LIKE $1 AND contact_phone LIKE $1)
"""

UPDATE_CONTACT = """
UPDATE accounts SET contact_name = $2, contact_email = $3, contact_phone = $4, contact_email_hash = $5,
                    contact_phone_hash = $6
WHERE account_id = $1
"""

INSERT_EVENT = """
INSERT INTO account_events (account_id, kind, reason, detail, created_at) VALUES ($1, $2, $3, $4, $5)
"""


async def insert(conn: asyncpg.Connection, account_id: UUID, customer_id: str, risk_grade: str,
                 name: str, email: str, phone: str, locale: str, time_zone: str, statement_day: int,
                 payment_due_days: int, now: datetime) -> asyncpg.Record | None:
    """The new account, or None when the customer already has one. Name, email and phone
    are encrypted here, the one place they are written."""
    cipher = contact_crypto.current()
    return await conn.fetchrow(
        INSERT, account_id, customer_id, risk_grade, cipher.encrypt(name, "contact_name"),
        cipher.encrypt(email, "contact_email"), cipher.encrypt(phone, "contact_phone"), locale, time_zone, now,
        cipher.lookup_hash(email), cipher.lookup_hash(phone), statement_day, payment_due_days)


async def get(conn: asyncpg.Connection, account_id: UUID, *, lock: bool = False) -> asyncpg.Record | None:
    return await conn.fetchrow(LOCK if lock else SELECT, account_id)


async def get_with_due_expired(conn: asyncpg.Connection, account_id: UUID, now: datetime) -> asyncpg.Record | None:
    """The account row and `due_expired_minor`: held by holds that expired by `now`."""
    return await conn.fetchrow(SELECT_WITH_DUE_EXPIRED, account_id, now)


async def lock_by_authorization(conn: asyncpg.Connection, authorization_id: UUID) -> asyncpg.Record | None:
    """Lock the account that holds this authorization; None when there is no such authorization."""
    return await conn.fetchrow(LOCK_BY_AUTHORIZATION, authorization_id)


async def lock_if_free(conn: asyncpg.Connection, account_id: UUID) -> asyncpg.Record | None:
    """Lock the row unless another transaction holds it (then None)."""
    return await conn.fetchrow(LOCK_IF_FREE, account_id)


async def set_limit(conn: asyncpg.Connection, account_id: UUID, limit_minor: int, grade: str,
                    now: datetime) -> asyncpg.Record:
    return one(await conn.fetchrow(UPDATE_LIMIT, account_id, limit_minor, grade, now))


async def set_temporary_limit(conn: asyncpg.Connection, account_id: UUID, limit_minor: int,
                              expires_at: datetime | None, now: datetime) -> asyncpg.Record:
    return one(await conn.fetchrow(UPDATE_TEMPORARY_LIMIT, account_id, limit_minor, expires_at, now))


async def set_statement_day(conn: asyncpg.Connection, account_id: UUID, statement_day: int,
                            now: datetime) -> asyncpg.Record:
    return one(await conn.fetchrow(UPDATE_STATEMENT_DAY, account_id, statement_day, now))


async def set_status(conn: asyncpg.Connection, account_id: UUID, status: str, now: datetime) -> asyncpg.Record:
    return one(await conn.fetchrow(UPDATE_STATUS, account_id, status, now))


async def add_to_totals(conn: asyncpg.Connection, account_id: UUID, *, held_delta_minor: int = 0,
                        principal_delta_minor: int = 0, now: datetime) -> asyncpg.Record:
    return one(await conn.fetchrow(ADD_TO_TOTALS, account_id, held_delta_minor, principal_delta_minor, now))


async def record_event(conn: asyncpg.Connection, account_id: UUID, kind: str, reason: str,
                       detail: dict, now: datetime) -> None:
    await conn.execute(INSERT_EVENT, account_id, kind, reason, json.dumps(detail), now)


def contact(row: asyncpg.Record) -> tuple[str, str, str]:
    """(name, email, phone) of an account row, decrypted. A value written before
    encryption existed is read as it is, until rotate_contact_keys rewrites it."""
    cipher = contact_crypto.current()
    values = []
    for column in ("contact_name", "contact_email", "contact_phone"):
        stored = row[column]
        values.append(stored if cipher.key_id_of(stored) is None else cipher.decrypt(stored, column))
    return values[0], values[1], values[2]


async def rotate_contacts(conn: asyncpg.Connection, batch_size: int) -> int:
    """Re-encrypt a batch of accounts whose contact data is not under the active key
    (or not encrypted at all); returns how many were rewritten."""
    cipher = contact_crypto.current()
    rows = await conn.fetch(SELECT_CONTACTS_TO_ROTATE, f"v1:{cipher.active_key_id}:%", batch_size)
    for row in rows:
        values = []
        for column in ("contact_name", "contact_email", "contact_phone"):
            stored = row[column]
            values.append(stored if cipher.key_id_of(stored) is None else cipher.decrypt(stored, column))
        name, email, phone = values
        await conn.execute(UPDATE_CONTACT, row["account_id"], cipher.encrypt(name, "contact_name"),
                           cipher.encrypt(email, "contact_email"), cipher.encrypt(phone, "contact_phone"),
                           cipher.lookup_hash(email), cipher.lookup_hash(phone))
    return len(rows)


async def remaining_to_rotate(conn: asyncpg.Connection) -> int:
    return await conn.fetchval(COUNT_CONTACTS_TO_ROTATE, f"v1:{contact_crypto.current().active_key_id}:%")
