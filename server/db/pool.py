"""The connection pool. Options that matter are passed explicitly."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import structlog

log = structlog.get_logger(__name__)

LOCK_TIMEOUT_MS = 5_000


async def _keep_session(connection: asyncpg.Connection) -> None:
    """Pool reset hook. asyncpg still rolls back any open transaction before calling it;
    the default reset's extra round trip (RESET ALL, UNLISTEN, unlock advisory locks)
    is skipped because no code path changes session state on a pooled connection."""


async def create_pool(dsn: str, *, min_size: int, max_size: int, command_timeout_s: float,
                      init: Callable[[asyncpg.Connection], Coroutine[Any, Any, None]] | None = None) -> asyncpg.Pool:
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
            # The server side of DB_COMMAND_TIMEOUT_S: a statement whose client gave up
            # does not run on.
            "statement_timeout": str(int(command_timeout_s * 1000)),
            "lock_timeout": str(LOCK_TIMEOUT_MS),
            "idle_in_transaction_session_timeout": "60000",
            # Plan each prepared statement once per connection. The hot statements are
            # large (a dozen subqueries, or half a dozen data-modifying CTEs) and cost
            # more to plan than to run; a custom plan per execution doubled their
            # database time. Their generic plans are index lookups by key.
            "plan_cache_mode": "force_generic_plan",
        },
    )


def masked_dsn(dsn: str) -> str:
    """DATABASE_URL fit for a log line or an error message: the password replaced by ***."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def database_location(dsn: str) -> str:
    """HOST:PORT/DATABASE of a DATABASE_URL (the socket folder for a unix socket), for logs."""
    parts = urlsplit(dsn)
    query = dict(pair.partition("=")[::2] for pair in parts.query.split("&") if pair)
    host = parts.hostname or query.get("host") or "localhost"
    port = parts.port or query.get("port") or 5432
    return f"{host}:{port}/{parts.path.lstrip('/') or query.get('dbname', '')}"


class DatabaseUnreachable(SystemExit):
    """PostgreSQL did not answer within DB_CONNECT_TIMEOUT_S: the process exits non-zero
    with this message."""


async def wait_for_database(dsn: str, timeout_s: float, *, first_delay_s: float = 0.25,
                            max_delay_s: float = 5.0) -> asyncpg.Connection:
    """A connection to `dsn`, trying again with exponential backoff for up to `timeout_s`
    while PostgreSQL is not there yet (starting, restarting, its host unreachable); each
    failed try is logged. Past the timeout: DatabaseUnreachable naming DATABASE_URL with
    its password masked. Errors a retry cannot fix (a wrong password, a database that
    does not exist) end at once."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    delay = first_delay_s
    attempt = 0
    while True:
        attempt += 1
        left = deadline - loop.time()
        try:
            return await asyncpg.connect(dsn, timeout=max(1.0, min(10.0, left)))
        except (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidPasswordError,
                asyncpg.InvalidCatalogNameError) as error:
            raise DatabaseUnreachable(f"DATABASE_URL {masked_dsn(dsn)}: {error}") from None
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError) as error:
            left = deadline - loop.time()
            reason = f"{type(error).__name__}: {error}"
            if left <= 0:
                raise DatabaseUnreachable(
                    f"DATABASE_URL {masked_dsn(dsn)}: no answer within DB_CONNECT_TIMEOUT_S={timeout_s:g}s "
                    f"({attempt} tries; last: {reason})") from None
            wait = min(delay, left)
            log.warning("database_unreachable", attempt=attempt, error=reason, retry_in_s=round(wait, 2),
                        database=database_location(dsn))
            await asyncio.sleep(wait)
            delay = min(delay * 2, max_delay_s)


# Conflicts with a concurrent request: ABORTED, retry at once.
_CONFLICT_ERRORS = (
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.LockNotAvailableError,
)
# The database is not there or not answering: the request did not happen (or, if the
# connection broke during the write, happened whole; a retry with the same key tells).
# OSError covers a refused or reset connection and a unix socket that is gone while
# PostgreSQL restarts; InterfaceError a connection closed under a call; InternalClientError
# a connection whose state broke mid-restart; OperatorInterventionError an admin or crash
# shutdown and "the database system is starting up"; InsufficientResourcesError too many
# connections.
_UNAVAILABLE_ERRORS = (
    OSError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)


def database_error_kind(error: BaseException) -> str | None:
    """"timeout", "unavailable", "conflict", or None when `error` is not the database's."""
    if isinstance(error, (asyncio.TimeoutError, asyncpg.QueryCanceledError)):
        return "timeout"
    if isinstance(error, _CONFLICT_ERRORS):
        return "conflict"
    if isinstance(error, _UNAVAILABLE_ERRORS):
        return "unavailable"
    return None
