"""Opening the database for a process other than the server (the collections bot):
wait for it, bring its schema up to date, and pool connections to it."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from server.db.migrate import migrate
from server.db.pool import create_pool, wait_for_database


async def open_pool(dsn: str, *, connect_timeout_s: float, max_size: int, command_timeout_s: float) -> asyncpg.Pool:
    """Wait up to `connect_timeout_s` for PostgreSQL, migrate it, and return a pool."""
    connection = await wait_for_database(dsn, connect_timeout_s)
    try:
        await migrate(connection)
    finally:
        await connection.close()
    return await create_pool(dsn, min_size=1, max_size=max_size, command_timeout_s=command_timeout_s)


def embedded_dsn(var_dir: Path) -> str:
    """The URI of the embedded PostgreSQL kept under `var_dir` (started if need be)."""
    from server.db.embedded import start_embedded_postgres

    return start_embedded_postgres(var_dir).get_uri()
