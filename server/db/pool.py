"""The connection pool. Options that matter are passed explicitly."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import asyncpg

STATEMENT_TIMEOUT_MS = 10_000
LOCK_TIMEOUT_MS = 5_000


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Pool reset hook. asyncpg still rolls back any open transaction before calling it;
    the default reset's extra round trip (RESET ALL, UNLISTEN, unlock advisory locks)
    is skipped because no code path changes session state on a pooled connection."""


async def create_pool(dsn: str, *, min_size: int, max_size: int, command_timeout_s: float,
                      init: Callable[[asyncpg.Connection], Awaitable[None]] | None = None) -> asyncpg.Pool:
    """`init` runs once on each new connection (tests use it to count statements)."""
    return await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        command_timeout=command_timeout_s,
        reset=_keep_session,
        init=init,
        server_settings={
            "application_name": "credit-server",
            "timezone": "UTC",
            "statement_timeout": str(STATEMENT_TIMEOUT_MS),
            "lock_timeout": str(LOCK_TIMEOUT_MS),
            "idle_in_transaction_session_timeout": "60000",
            # Plan each prepared statement once per connection. The hot statements are
            # large (a dozen subqueries, or half a dozen data-modifying CTEs) and cost
            # more to plan than to run; a custom plan per execution doubled their
            # database time. Their generic plans are index lookups by key.
            "plan_cache_mode": "force_generic_plan",
        },
    )
