"""Reading and writing the tables; each module holds the statements of one aggregate."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import cast

import asyncpg

from server.domain.errors import InvariantViolation


def one(row: asyncpg.Record | None) -> asyncpg.Record:
    """The row of a statement that always returns one: an UPDATE ... RETURNING of a row
    the transaction holds, an aggregate, a read built to return a row whatever it finds.
    None there is a bug, reported as one rather than as a TypeError further on."""
    if row is None:
        raise InvariantViolation("a statement that always returns a row returned none")
    return row


def acquire(pool: asyncpg.Pool, *, timeout: float | None = None) -> AbstractAsyncContextManager[asyncpg.Connection]:
    """`pool.acquire(timeout=timeout)`, typed as the Connection it yields: the pool's
    proxy forwards every Connection method to the connection it holds, so every function
    that takes a Connection takes it."""
    return cast("AbstractAsyncContextManager[asyncpg.Connection]", pool.acquire(timeout=timeout))
