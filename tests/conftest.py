"""One PostgreSQL server for the whole run (embedded unless TEST_DATABASE_URL names
one), a template database migrated once, and a fresh database per test cloned from it."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from server import contact_crypto
from server.db.migrate import migrate
from server.logging import configure_logging

# The in-process server logs like the real one, but only what matters to a failing test.
configure_logging("warning")
# Fresh contact-data keys for this run, inherited by every process the tests start.
if not os.environ.get("CONTACT_KEYS"):
    os.environ.update(contact_crypto.generate_env())

TEMPLATE_DB = "credit_template"


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


@pytest.fixture(scope="session")
def pg_admin_dsn():
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    from server.db.embedded import start_embedded_postgres

    # Not under pytest's basetemp: pytest deletes old basetemps, which would pull the
    # data folder from under a server still used by another run on this machine.
    folder = Path(tempfile.mkdtemp(prefix="credit-test-postgres-"))
    server = start_embedded_postgres(folder, keep_data=False)
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def template_dsn(pg_admin_dsn):
    async def build():
        admin = await asyncpg.connect(pg_admin_dsn)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE_DB} WITH (FORCE)")
            await admin.execute(f"CREATE DATABASE {TEMPLATE_DB}")
        finally:
            await admin.close()
        conn = await asyncpg.connect(with_database(pg_admin_dsn, TEMPLATE_DB))
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(build())
    return with_database(pg_admin_dsn, TEMPLATE_DB)


async def create_database(admin_dsn: str) -> str:
    name = "t_" + uuid.uuid4().hex[:16]
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB} STRATEGY FILE_COPY")
    finally:
        await admin.close()
    return name


async def drop_database(admin_dsn: str, name: str) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def db_dsn(pg_admin_dsn, template_dsn):
    name = await create_database(pg_admin_dsn)
    yield with_database(pg_admin_dsn, name)
    await drop_database(pg_admin_dsn, name)
