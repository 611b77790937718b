"""Bounded resources, tried on a real server process: a burst of 2,000 concurrent calls
gets answers (served, or RESOURCE_EXHAUSTED at once past the bounds; never a
cancellation the client did not ask for), 10 MB messages are refused without being
held, the server's memory stays bounded, and it keeps serving.

Run with `-s` to see the figures."""

from __future__ import annotations

import asyncio
from collections import Counter

import grpc

from credit.v1 import credit_line_pb2
from tests.e2e.conftest import start_server_process
from tests.e2e.test_security import code_of
from tests.support import Api, raw_call

GET_ACCOUNT = "/credit.v1.CreditLineService/GetAccount"
BURST = 2_000
CHANNELS = 8
LARGE = 10 * 1024 * 1024
LARGE_CALLS = 40


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (the peak) of a process, in KiB."""
    figures = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                figures[name] = int(value.split()[0])
    return figures


async def test_bursts_and_large_messages_leave_memory_bounded(db_dsn, tmp_path):
    server = start_server_process(db_dsn, tmp_path / "server.log", MAX_CONCURRENT_RPCS="1000")
    pid = server.process.pid
    try:
        options = (("grpc.use_local_subchannel_pool", 1), ("grpc.max_send_message_length", 2 * LARGE))
        channels = [grpc.aio.insecure_channel(server.address, options) for _ in range(CHANNELS)]
        try:
            api = Api(channels[0])
            account = await api.open_account(limit_minor=1_000_000)
            request = credit_line_pb2.GetAccountRequest(account_id=account.account_id).SerializeToString()
            for channel in channels:
                await raw_call(channel, GET_ACCOUNT)(request, timeout=10)
            idle = memory_kib(pid)

            burst = Counter(await asyncio.gather(*(
                code_of(raw_call(channels[i % CHANNELS], GET_ACCOUNT)(request, timeout=60))
                for i in range(BURST))))
            after_burst = memory_kib(pid)

            huge = b"\n" + b"\xff" * LARGE  # one 10 MB field
            large = Counter(await asyncio.gather(*(
                code_of(raw_call(channels[i % CHANNELS], GET_ACCOUNT)(huge, timeout=60))
                for i in range(LARGE_CALLS))))
            after_large = memory_kib(pid)

            # Still serving, on every connection.
            for channel in channels:
                reply = credit_line_pb2.Account.FromString(
                    await raw_call(channel, GET_ACCOUNT)(request, timeout=10))
                assert reply.account_id == account.account_id
        finally:
            for channel in channels:
                await channel.close()
    finally:
        assert server.stop() == 0, server.log()

    print(f"\nburst of {BURST} calls over {CHANNELS} connections: {dict((c.name, n) for c, n in burst.items())}")
    print(f"{LARGE_CALLS} messages of 10 MiB: {dict((c.name, n) for c, n in large.items())}")
    print(f"server memory (KiB): idle {idle}, after the burst {after_burst}, after the large messages {after_large}")
    assert set(burst) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}, burst
    assert burst[grpc.StatusCode.OK] >= 1_000
    assert set(large) == {grpc.StatusCode.RESOURCE_EXHAUSTED}, large
    # Bounded: the peak stays within 150 MiB of the idle process, far below 40 x 10 MiB held at once.
    assert after_large["VmHWM"] - idle["VmRSS"] < 150 * 1024
