"""Schema migrations: ordered SQL files applied once each, under an advisory lock so
that servers starting together do not race."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg
import structlog

log = structlog.get_logger(__name__)

# Any constant shared by every process that migrates this database.
_MIGRATION_LOCK_KEY = 0x6372_6564_6974  # "credit"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    sha256      text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)"""


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    folder = resources.files("server.db").joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions) or (versions and versions[0] != 1):
        raise MigrationError(f"migrations must be numbered from 0001, each number once; found {versions}")
    return found


async def migrate(connection: asyncpg.Connection, migrations: list[Migration] | None = None) -> list[str]:
    """Apply the migrations this database has not had, each in its own transaction.
    Returns the names applied. A migration that was applied and then edited is refused."""
    migrations = load_migrations() if migrations is None else migrations
    applied_now = []
    await connection.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK_KEY)
    try:
        await connection.execute(_CREATE_TABLE)
        rows = await connection.fetch("SELECT version, name, sha256 FROM schema_migrations")
        applied = {r["version"]: r for r in rows}
        # Numbers may leave gaps (branches number their migrations apart and are
        # renumbered when merged), but a migration is never applied after a later one.
        latest = max(applied, default=0)
        for migration in migrations:
            done = applied.get(migration.version)
            if done is not None:
                if done["sha256"] != migration.sha256:
                    raise MigrationError(
                        f"migration {migration.name} changed after it was applied; add a new migration instead")
                continue
            if migration.version < latest:
                raise MigrationError(f"migration {migration.name} is older than {applied[latest]['name']}, "
                                     "which is applied already; renumber it after that one")
            async with connection.transaction():
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO schema_migrations (version, name, sha256) VALUES ($1, $2, $3)",
                    migration.version, migration.name, migration.sha256)
            applied_now.append(migration.name)
            log.info("migration_applied", migration=migration.name)
    finally:
        await connection.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK_KEY)
    return applied_now


async def _main() -> None:
    import os

    from server.config import command_settings, int_setting
    from server.db.pool import wait_for_database
    from server.logging import configure_logging

    database_url, log_level = command_settings("to migrate")
    configure_logging(log_level)
    timeout_s = int_setting(os.environ, "DB_CONNECT_TIMEOUT_S", 60, minimum=0, maximum=3600)
    connection = await wait_for_database(database_url, timeout_s)
    try:
        applied = await migrate(connection)
    finally:
        await connection.close()
    log.info("migrations_done", applied=applied)


if __name__ == "__main__":
    # python -m server.db.migrate: apply what DATABASE_URL lacks and exit (a deploy's
    # migrations step; the server also migrates at start).
    import asyncio

    asyncio.run(_main())
