"""What an operator's subcommand shares: the database from DATABASE_URL, one
connection, a line of output, and a refusal by the service printed as an exit message
naming the subcommand."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable

import asyncpg

from server.config import command_settings
from server.db import acquire
from server.db.pool import create_pool
from server.domain.errors import CreditError
from server.logging import configure_logging


def run(args: argparse.Namespace, purpose: str, work: Callable[[asyncpg.Connection], Awaitable[str]]) -> None:
    """Print what `work` returns on a connection to the database `purpose` names (for
    the message when DATABASE_URL is missing)."""
    database_url, log_level = command_settings(purpose)
    configure_logging(log_level)

    async def on_one_connection() -> str:
        pool = await create_pool(database_url, min_size=1, max_size=1, command_timeout_s=60)
        try:
            async with acquire(pool) as conn:
                return await work(conn)
        finally:
            await pool.close()

    try:
        print(asyncio.run(on_one_connection()))
    except CreditError as error:
        sys.exit(f"{args.command}: {error.message}")
