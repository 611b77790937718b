"""Promises to pay, opened by the API or by a call; kept or broken by the reviews."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from uuid import UUID

import asyncpg

from server.db import collections as rows
from server.domain.cases import PromiseSource


async def open_promise(conn: asyncpg.Connection, account_id: UUID, promised_date: date, amount_minor: int,
                       source: PromiseSource, now: datetime) -> asyncpg.Record:
    """Record a promise (the account locked, none active) with what the customer had paid
    in until now, so that keeping it is measured by what is paid from here on."""
    promise = await rows.insert_promise(conn, uuid.uuid4(), account_id, promised_date, amount_minor, source.value,
                                        await rows.paid_in_total(conn, account_id), now)
    await rows.event(conn, account_id, "PROMISE_RECORDED",
                     {"promised_date": promised_date.isoformat(), "amount_minor": amount_minor, "source": source.value},
                     now)
    return promise
