"""End-to-end tests start the real server process (`python -m server`) on a fresh
database and talk to it over real channels."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import grpc
import pytest

from server.probe import wait_until_serving
from tests.conftest import create_database, drop_database, with_database
from tests.support import Api, free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class ServerProcess:
    process: subprocess.Popen
    address: str
    log_path: Path
    database_url: str
    # The optional ports, for the fixtures that open them.
    token_address: str = ""
    health_address: str = ""
    metrics_address: str = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


@asynccontextmanager
async def gateway_and_server(database_url: str, folder: Path, *simulator_args: str,
                             **server_env: str) -> AsyncIterator[tuple[str, ServerProcess]]:
    """The payment-gateway simulator and a server using it, each its own process, stopped
    at the end: (the gateway's address, the server)."""
    gateway_address = f"127.0.0.1:{free_port()}"
    simulator = start("server.payment_sim", folder / "sim.log", "--listen", gateway_address, *simulator_args)
    server = None
    try:
        await wait_for_port(gateway_address)
        server = start_server_process(database_url, folder / "server.log", PAYMENT_GATEWAY_ADDR=gateway_address,
                                      **server_env)
        yield gateway_address, server
    finally:
        if server is not None:
            server.stop()
        simulator.send_signal(signal.SIGTERM)
        simulator.wait(timeout=30)


def run_once(env: dict[str, str], as_of: datetime, timeout_s: float = 300) -> str:
    """`python -m collections_bot run-once --as-of` in `env`: its report."""
    done = subprocess.run([sys.executable, "-m", "collections_bot", "run-once", "--as-of", as_of.isoformat()],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def run_bot_once(database_url: str, gateway_address: str, as_of: datetime, **env: str) -> str:
    """`run_once` with the payment gateway (and an SMTP port nobody listens on)."""
    return run_once({**os.environ, "DATABASE_URL": database_url, "PAYMENT_GATEWAY_ADDR": gateway_address,
                     "SMTP_PORT": str(free_port()), "LOG_LEVEL": "warning", **env}, as_of, timeout_s=120)


def start(module: str, log_path, *args: str, **env: str) -> subprocess.Popen:
    """`python -m module args` in a process of its own, its output in `log_path`."""
    with open(log_path, "wb") as log_file:
        return subprocess.Popen([sys.executable, "-m", module, *args], cwd=ROOT,
                                env={**os.environ, "LOG_LEVEL": "info", **env},
                                stdout=log_file, stderr=subprocess.STDOUT)


async def wait_for_port(address: str, timeout_s: float = 30) -> None:
    """Until a gRPC server answers at `address`."""
    deadline = time.monotonic() + timeout_s
    while True:
        async with grpc.aio.insecure_channel(address) as channel:
            try:
                await asyncio.wait_for(channel.channel_ready(), 1)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise


def start_server_process(database_url: str, log_path: Path, **env: str) -> ServerProcess:
    address = f"127.0.0.1:{free_port()}"
    # The end-to-end tests drive one account far past the velocity rules on purpose
    # (hundreds of concurrent holds); the risk rules have their own tests over gRPC.
    environment = {**os.environ, "DATABASE_URL": database_url, "GRPC_LISTEN_ADDR": address,
                   "LOG_LEVEL": "warning", "RISK_CHECKS": "off",
                   "AUTH_MODE": "insecure-local", **env}
    log_file = open(log_path, "wb")
    process = subprocess.Popen([sys.executable, "-m", "server"], cwd=ROOT, env=environment,
                               stdout=log_file, stderr=subprocess.STDOUT)
    log_file.close()
    server = ServerProcess(process, address, log_path, database_url)
    try:
        wait_until_serving(address, 60, lambda: process.poll() is None)
    except RuntimeError as error:
        server.stop()
        raise RuntimeError(f"{error}:\n{server.log()}") from None
    return server


@pytest.fixture(scope="session")
def e2e_database(pg_admin_dsn, template_dsn):
    import asyncio

    name = asyncio.run(create_database(pg_admin_dsn))
    yield with_database(pg_admin_dsn, name)
    asyncio.run(drop_database(pg_admin_dsn, name))


@pytest.fixture(scope="session")
def server(e2e_database, tmp_path_factory):
    server = start_server_process(e2e_database, tmp_path_factory.mktemp("server") / "server.log")
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture
async def api(server):
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield Api(channel)


@pytest.fixture
def db_dsn_sync(pg_admin_dsn, template_dsn):
    """A fresh database with one account whose held total matches no hold: broken books."""
    import asyncio

    import asyncpg

    async def make() -> str:
        name = await create_database(pg_admin_dsn)
        conn = await asyncpg.connect(with_database(pg_admin_dsn, name))
        try:
            await conn.execute("""
                INSERT INTO accounts (account_id, customer_id, status, risk_grade, held_minor, contact_name,
                                      contact_email, contact_phone, locale, time_zone, created_at, updated_at,
                                      statement_day)
                VALUES (gen_random_uuid(), 'c-broken', 'ACTIVE', 'C', 500, 'n', 'e@example.com', '+8613800138000',
                        'en', 'Asia/Shanghai', now(), now(), 1)""")
        finally:
            await conn.close()
        return name

    name = asyncio.run(make())
    yield with_database(pg_admin_dsn, name)
    asyncio.run(drop_database(pg_admin_dsn, name))
