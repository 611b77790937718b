"""PostgreSQL restarted under load, over a unix socket and over TCP: clients get only
UNAVAILABLE, ABORTED or DEADLINE_EXCEEDED while it is away (never INTERNAL, never a
cancellation they did not ask for), health says NOT_SERVING and then SERVING again,
the server serves again within seconds without a restart, every OK reply is in the
books, and the books balance. Also: a server started before its database waits for it,
and one that never gets it exits naming DATABASE_URL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2

from server import invariants
from server.db.embedded import start_embedded_postgres
from tests.e2e.conftest import ROOT, free_port, start_server_process
from tests.support import Api, health_stub, key

# What a client may see while the database is away: each says "retry", and a retry with
# the same idempotency key is safe.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED, grpc.StatusCode.DEADLINE_EXCEEDED}


@pytest.fixture(scope="module")
def own_postgres(tmp_path_factory):
    """A PostgreSQL of this module's own (restarting the shared one would disturb other
    tests), listening on a unix socket and on TCP."""
    folder = tmp_path_factory.mktemp("outage")
    server = start_embedded_postgres(folder, keep_data=False)
    from embedded_postgres._commands import POSTGRES_BIN_PATH  # after: the package reads where its lock lives

    socket_dir = server.get_uri().rpartition("host=")[2]
    port = free_port()
    options = f'-h 127.0.0.1 -p {port} -k {socket_dir}'

    def pg_ctl(*args: str) -> None:
        # As the server's OS user through runuser rather than subprocess's `user=`: that
        # forks without vfork, and the child then runs gRPC's fork handlers of this
        # process before exec, which crashed it now and then.
        command = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", str(server.pgdata), "-w", "-t", "60",
                   "-l", str(server.pgdata / "restarts.log"), *args]
        if server.system_user is not None:
            command = ["runuser", "-u", server.system_user, "--", *command]
        subprocess.run(command, check=True, timeout=90, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    pg_ctl("restart", "-m", "fast", "-o", options)
    unix = f"postgresql://postgres@/postgres?host={socket_dir}&port={port}"
    tcp = f"postgresql://postgres@127.0.0.1:{port}/postgres"
    yield {"unix": unix, "tcp": tcp, "pg_ctl": pg_ctl, "options": options}
    server.cleanup()


async def fresh_database(admin_dsn: str) -> str:
    name = "outage_" + key()[:8]
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


def in_database(dsn: str, name: str) -> str:
    if "?" in dsn:
        base, _, query = dsn.partition("?")
        return f"{base.rpartition('/')[0]}/{name}?{query}"
    return f"{dsn.rpartition('/')[0]}/{name}"


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["unix", "tcp"])
async def test_a_restart_under_load_gives_only_retryable_codes_and_the_server_recovers(own_postgres, transport,
                                                                                      tmp_path):
    dsn = in_database(own_postgres[transport], await fresh_database(own_postgres[transport]))
    server = start_server_process(dsn, tmp_path / "server.log", LOG_LEVEL="info", DB_POOL_MAX_SIZE="8")
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            api = Api(channel)
            accounts = [(await api.open_account(limit_minor=100_000_000)).account_id for _ in range(8)]
            codes: Counter = Counter()
            approved: list[str] = []
            health_seen: list[int] = []
            liveness_seen: list[int] = []
            stop = asyncio.Event()
            last_ok = [0.0]

            async def customer(account_id: str) -> None:
                """Authorize again and again; after a retryable error, the same request
                again with the same key, as a careful client would."""
                while not stop.is_set():
                    idempotency_key, order_id = key(), "order-" + key()
                    while True:
                        try:
                            reply = await api.authorize(account_id, 1_000, order_id=order_id,
                                                        idempotency_key=idempotency_key, timeout=5)
                        except grpc.aio.AioRpcError as error:
                            codes[error.code()] += 1
                            assert error.code() in RETRYABLE, (error.code(), error.details())
                            if stop.is_set():
                                return
                            await asyncio.sleep(0.1)
                            continue
                        codes[grpc.StatusCode.OK] += 1
                        approved.append(reply.authorization_id)
                        last_ok[0] = time.monotonic()
                        break

            async def watch_health() -> None:
                stub = health_stub(channel)
                while not stop.is_set():
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)
                    health_seen.append(reply.status)
                    alive = await stub.Check(health_pb2.HealthCheckRequest(service="liveness"), timeout=5)
                    liveness_seen.append(alive.status)
                    await asyncio.sleep(0.05)

            load = [asyncio.ensure_future(customer(a)) for a in accounts]
            watcher = asyncio.ensure_future(watch_health())
            await asyncio.sleep(2)
            served_before = codes[grpc.StatusCode.OK]
            assert served_before > 0
            await asyncio.to_thread(own_postgres["pg_ctl"], "restart", "-m", "fast")
            restarted = time.monotonic()
            # Served again within seconds, without restarting the server.
            while last_ok[0] < restarted + 0.5 and time.monotonic() < restarted + 20:
                await asyncio.sleep(0.1)
            assert last_ok[0] > restarted, f"no call served since the restart; codes {codes}"
            await asyncio.sleep(1)
            stop.set()
            await asyncio.gather(*load, watcher)
        print(f"{transport}: codes during the restart {dict((c.name, n) for c, n in codes.items())}")
        assert server.process.poll() is None
        # The outage was seen by clients and by the health service, and is over.
        assert sum(codes[c] for c in RETRYABLE) > 0, codes
        assert health_pb2.HealthCheckResponse.NOT_SERVING in health_seen
        assert health_seen[-1] == health_pb2.HealthCheckResponse.SERVING
        # Liveness does not follow the database: nothing would restart the server for its outage.
        assert set(liveness_seen) == {health_pb2.HealthCheckResponse.SERVING}
    finally:
        assert server.stop() == 0, server.log()
    log = server.log()
    assert '"code": "INTERNAL"' not in log and '"rpc_failed"' not in log
    assert '"database_down"' in log and '"database_up"' in log

    conn = await asyncpg.connect(dsn)
    try:
        stored = {str(r["authorization_id"]) for r in await conn.fetch(
            "SELECT authorization_id FROM authorizations WHERE authorization_id = ANY($1::uuid[])", approved)}
        assert stored == set(approved), "an OK reply that is not in the books"
        assert await invariants.check(conn) == []
    finally:
        await conn.close()


async def test_a_server_waits_for_its_database_then_gives_up_naming_it(tmp_path):
    port = free_port()  # nothing listens here
    env = {**os.environ, "DATABASE_URL": f"postgresql://credit:s3cret-pass@127.0.0.1:{port}/credit",
           "DB_CONNECT_TIMEOUT_S": "3", "AUTH_MODE": "insecure-local",
           "GRPC_LISTEN_ADDR": f"127.0.0.1:{free_port()}", "LOG_LEVEL": "info"}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "server"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode != 0
    assert time.monotonic() - started >= 3
    output = result.stdout + result.stderr
    assert "DATABASE_URL" in output and "DB_CONNECT_TIMEOUT_S=3" in output
    assert "s3cret-pass" not in output and "credit:***@127.0.0.1" in output
    assert output.count('"database_unreachable"') >= 2  # each try is logged


async def test_a_server_started_before_its_database_serves_once_it_comes(own_postgres, tmp_path):
    """The database is stopped while the server starts, and started a few seconds later."""
    dsn = in_database(own_postgres["tcp"], await fresh_database(own_postgres["tcp"]))
    own_postgres["pg_ctl"]("stop", "-m", "fast")
    try:
        env = {**os.environ, "DATABASE_URL": dsn, "DB_CONNECT_TIMEOUT_S": "60", "AUTH_MODE": "insecure-local",
               "GRPC_LISTEN_ADDR": f"127.0.0.1:{free_port()}", "LOG_LEVEL": "info", "RISK_CHECKS": "off"}
        log_path = tmp_path / "server.log"
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen([sys.executable, "-m", "server"], cwd=ROOT, env=env, stdout=log_file,
                                       stderr=subprocess.STDOUT)
        time.sleep(3)
        assert process.poll() is None
        assert '"database_unreachable"' in log_path.read_text()
    finally:
        own_postgres["pg_ctl"]("start", "-o", own_postgres["options"])
    from server.probe import wait_until_serving

    try:
        wait_until_serving(env["GRPC_LISTEN_ADDR"], 60, lambda: process.poll() is None)
        async with grpc.aio.insecure_channel(env["GRPC_LISTEN_ADDR"]) as channel:
            assert (await Api(channel).open_account()).account_id
    finally:
        process.terminate()
        assert process.wait(30) == 0, log_path.read_text()
