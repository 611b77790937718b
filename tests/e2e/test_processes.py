"""SERVER_PROCESSES=2: two server processes on one port, connections spread between
them by the kernel, one clean stop for all, and one dying stops the rest."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import asyncpg
import grpc

from tests.e2e.conftest import ServerProcess, start_server_process
from tests.support import Api

# A channel of its own connection: without this, channels to one address in one process
# share a connection, so every call would reach the same server process.
FRESH_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


def events(server: ServerProcess) -> list[dict]:
    """The JSON lines of the log so far, leaving out a last line still being written."""
    text = server.log()
    return [json.loads(line) for line in text[:text.rfind("\n") + 1].splitlines() if line.startswith("{")]


def api_calls(server: ServerProcess) -> list[dict]:
    """The calls of the credit API the processes served (not the readiness probe's)."""
    return [e for e in events(server) if e["event"] == "rpc_finished" and e["method"].startswith("/credit.v1.")]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def wait_gone(pids: list[int], timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while not all(gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return all(gone(pid) for pid in pids)


def started(server: ServerProcess) -> dict:
    [line] = [e for e in events(server) if e["event"] == "server_started"]
    return line


async def test_two_processes_share_one_port_and_stop_together(db_dsn, tmp_path):
    server = start_server_process(db_dsn, tmp_path / "server.log", SERVER_PROCESSES="2", LOG_LEVEL="info")
    try:
        announced = started(server)
        assert announced["address"] == server.address and announced["processes"] == 2
        children = announced["pids"]
        assert len(set(children)) == 2 and server.process.pid not in children

        # The kernel picks a process per connection: fresh channels reach both.
        served_by: set[int] = set()
        channels = 0
        while channels < 8 or (len(served_by) < 2 and channels < 64):
            async with grpc.aio.insecure_channel(server.address, options=FRESH_CONNECTION) as channel:
                api = Api(channel)
                account = await api.open_account(limit_minor=100_000)
                assert (await api.account(account.account_id)).credit_limit_minor == 100_000
            channels += 1
            served_by = {e["pid"] for e in api_calls(server)}
        assert served_by == set(children), f"{channels} channels reached only {served_by}"
        assert {e["process"] for e in api_calls(server)} == {1, 2}
    finally:
        code = server.stop()
    assert code == 0, server.log()
    assert wait_gone(children), "a child outlived the parent"
    lines = events(server)
    assert [e["event"] for e in lines].count("server_started") == 1
    assert sorted(e["pid"] for e in lines if e["event"] == "process_stopped") == sorted(children)
    assert lines[-1]["event"] == "server_stopped" and lines[-1]["pid"] == server.process.pid

    # Both pools closed: their backends leave soon after the processes' goodbye.
    conn = await asyncpg.connect(db_dsn)
    try:
        for _ in range(100):
            left = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'credit-server' "
                "AND datname = current_database()")
            if left == 0:
                break
            await asyncio.sleep(0.05)
        assert left == 0
    finally:
        await conn.close()


def test_a_child_that_dies_stops_the_others_and_the_parent_fails(db_dsn_sync, tmp_path):
    server = start_server_process(db_dsn_sync, tmp_path / "server.log", SERVER_PROCESSES="2", LOG_LEVEL="info")
    try:
        first, second = started(server)["pids"]
        os.kill(first, signal.SIGKILL)
        code = server.process.wait(60)
    finally:
        server.stop()
    assert code != 0, server.log()
    assert wait_gone([first, second]), "the surviving child was left running"
    died = [e for e in events(server) if e["event"] == "process_exited"]
    assert [(e["child_pid"], e["exit_code"]) for e in died] == [(first, -signal.SIGKILL)], server.log()
