"""Calls are admitted before their bodies: callers that cannot identify themselves, or
may not call a method, are refused at once and hold nothing; a caller that opens calls
and never sends their bodies holds only its own slots; long-lived streams have a budget
of their own. Meanwhile a legitimate caller keeps getting answers."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2

from credit.v1 import credit_line_pb2
from server.devcerts import make as make_certs
from server.probe import wait_until_serving
from tests.e2e.conftest import ROOT, ServerProcess, free_port, start_server_process
from tests.support import Api, health_stub, raw_call

GET_ACCOUNT = "/credit.v1.CreditLineService/GetAccount"
OPEN_CALLS = 1_000


def scrape(address: str) -> dict[str, float]:
    """The metrics endpoint's samples: {'name{labels}': value}."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def credentials(folder, name: str | None) -> grpc.ChannelCredentials:
    ca = (folder / "ca.pem").read_bytes()
    if name is None:
        return grpc.ssl_channel_credentials(root_certificates=ca)
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=(folder / f"{name}-key.pem").read_bytes(),
                                        certificate_chain=(folder / f"{name}.pem").read_bytes())


# Each channel its own connection, as separate clients would have.
OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)


async def stalled_calls(channel: grpc.aio.Channel, count: int) -> list[grpc.aio.StreamUnaryCall]:
    """`count` calls of GetAccount that send their headers and never a body."""
    async def nothing():
        await asyncio.Event().wait()
        yield b""  # never reached

    raw: grpc.aio.StreamUnaryMultiCallable[bytes, bytes] = channel.stream_unary(GET_ACCOUNT)
    return [raw(nothing(), timeout=120) for _ in range(count)]


async def outcome(call) -> grpc.StatusCode:
    """The status a call ended with (its code, not its reply: a call refused while its
    request iterator still waits is reported by the client as cancelled)."""
    return await call.code()


@pytest.fixture(scope="module")
def guarded_server(e2e_database, tmp_path_factory):
    folder = tmp_path_factory.mktemp("certs")
    settings = make_certs(folder)
    address, token_address = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    health_address, metrics_address = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    log_path = tmp_path_factory.mktemp("admission") / "server.log"
    env = {**os.environ, "DATABASE_URL": e2e_database, "GRPC_LISTEN_ADDR": address, "LOG_LEVEL": "info",
           "GRPC_TOKEN_LISTEN_ADDR": token_address, "HEALTH_LISTEN_ADDR": health_address,
           "METRICS_LISTEN_ADDR": metrics_address, "RISK_CHECKS": "off",
           "MAX_CALLS_PER_CALLER": "100", "REQUEST_BODY_TIMEOUT_MS": "60000", **settings}
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "server"], cwd=ROOT, env=env, stdout=log_file,
                                   stderr=subprocess.STDOUT)
    server = ServerProcess(process, address, log_path, e2e_database)
    wait_until_serving(health_address, 60, lambda: process.poll() is None)
    server.token_address, server.health_address, server.metrics_address = token_address, health_address, \
        metrics_address
    yield server, folder
    assert server.stop() == 0, server.log()


async def test_a_legitimate_caller_is_served_while_a_thousand_calls_try_to_take_the_slots(guarded_server):
    server, folder = guarded_server
    async with grpc.aio.secure_channel(server.address, credentials(folder, "operator"), OWN_CONNECTION) as legit, \
            grpc.aio.secure_channel(server.token_address, credentials(folder, None), OWN_CONNECTION) as anonymous, \
            grpc.aio.secure_channel(server.address, credentials(folder, "collections-bot"),
                                    OWN_CONNECTION) as unauthorized, \
            grpc.aio.secure_channel(server.address, credentials(folder, "order-service"), OWN_CONNECTION) as greedy:
        api = Api(legit)
        account = await api.open_account()
        # Connected first, so that the server's limit on streams per connection is known
        # to each client (streams opened before it is are refused by HTTP/2 itself).
        for channel in (anonymous, unauthorized, greedy):
            await raw_call(channel, "/grpc.health.v1.Health/Check")(b"", timeout=10)
        before = scrape(server.metrics_address)

        # 1,000 calls with no identity, 1,000 from a caller without the right, and 1,000
        # from a known caller that never sends the bodies, all opened at once.
        attacks = {
            "anonymous": await stalled_calls(anonymous, OPEN_CALLS),
            "unauthorized": await stalled_calls(unauthorized, OPEN_CALLS),
            "greedy": await stalled_calls(greedy, OPEN_CALLS),
        }
        tasks = {name: [asyncio.ensure_future(outcome(call)) for call in calls] for name, calls in attacks.items()}

        # The legitimate caller keeps getting answers the whole time.
        served = []
        for _ in range(40):
            reply = await api.lines.GetAccount(credit_line_pb2.GetAccountRequest(account_id=account.account_id),
                                               timeout=10)
            served.append(reply.account_id)
            await asyncio.sleep(0.05)
        assert served == [account.account_id] * 40

        anonymous_codes = await asyncio.gather(*tasks["anonymous"])
        unauthorized_codes = await asyncio.gather(*tasks["unauthorized"])
        assert set(anonymous_codes) == {grpc.StatusCode.UNAUTHENTICATED}
        assert set(unauthorized_codes) == {grpc.StatusCode.PERMISSION_DENIED}
        # The greedy caller holds its 100 slots (MAX_CALLS_PER_CALLER) and no more.
        done, pending = await asyncio.wait(tasks["greedy"], timeout=30)
        while len(pending) > 100:
            done, pending = await asyncio.wait(pending, timeout=30)
        refused = [task.result() for task in tasks["greedy"] if task.done()]
        assert len(pending) == 100
        assert set(refused) == {grpc.StatusCode.RESOURCE_EXHAUSTED} and len(refused) == OPEN_CALLS - 100

        after = scrape(server.metrics_address)
        for call in attacks["greedy"]:
            call.cancel()
        await asyncio.gather(*pending)

    def moved(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    assert moved('credit_rpc_refused_total{reason="unauthenticated"}') == OPEN_CALLS
    assert moved('credit_rpc_refused_total{reason="permission_denied"}') == OPEN_CALLS
    assert moved('credit_rpc_refused_total{reason="caller"}') == OPEN_CALLS - 100
    assert moved(f'credit_rpc_handled_total{{code="OK",method="{GET_ACCOUNT}"}}') >= 40
    assert after['credit_rpc_in_progress{kind="unary"}'] >= 100
    # And each refusal is in the log, with its code.
    events = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    codes = [e["code"] for e in events if e["event"] == "rpc_finished" and e.get("method") == GET_ACCOUNT]
    assert codes.count("UNAUTHENTICATED") >= OPEN_CALLS and codes.count("PERMISSION_DENIED") >= OPEN_CALLS


async def test_probes_reach_health_without_a_certificate(guarded_server):
    server, folder = guarded_server
    # The plaintext health-only port...
    async with grpc.aio.insecure_channel(server.health_address) as channel:
        stub = health_stub(channel)
        assert (await stub.Check(health_pb2.HealthCheckRequest(), timeout=10)).status == \
            health_pb2.HealthCheckResponse.SERVING
        # ...serves nothing else.
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await Api(channel).lines.GetAccount(credit_line_pb2.GetAccountRequest(account_id=str(uuid.uuid4())),
                                                timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
    # ...and the token port, with no token.
    async with grpc.aio.secure_channel(server.token_address, credentials(folder, None)) as channel:
        assert (await health_stub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
                ).status == health_pb2.HealthCheckResponse.SERVING


async def test_streams_have_their_own_budget_and_bodies_their_time(e2e_database, tmp_path):
    server = start_server_process(e2e_database, tmp_path / "server.log", MAX_STREAMS="50",
                                  REQUEST_BODY_TIMEOUT_MS="500", LOG_LEVEL="info")
    try:
        async with grpc.aio.insecure_channel(server.address, OWN_CONNECTION) as watcher, \
                grpc.aio.insecure_channel(server.address, OWN_CONNECTION) as caller:
            watches = [health_stub(watcher).Watch(health_pb2.HealthCheckRequest(), timeout=60)
                       for _ in range(200)]

            async def first(stream) -> grpc.StatusCode:
                try:
                    await stream.read()
                    return grpc.StatusCode.OK
                except grpc.aio.AioRpcError as error:
                    return error.code()

            codes = await asyncio.gather(*(first(w) for w in watches))
            assert codes.count(grpc.StatusCode.OK) == 50
            assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 150
            # With the stream budget spent, unary calls are served as before.
            api = Api(caller)
            account = await api.open_account()
            assert (await api.lines.GetAccount(credit_line_pb2.GetAccountRequest(account_id=account.account_id),
                                               timeout=10)).account_id == account.account_id
            # A call whose body never comes is ended after REQUEST_BODY_TIMEOUT_MS; its slot comes back.
            stalled = (await stalled_calls(caller, 1))[0]
            assert await asyncio.wait_for(outcome(stalled), 10) == grpc.StatusCode.DEADLINE_EXCEEDED
            # A body that is not a protobuf message of the request type: INVALID_ARGUMENT, no internals.
            with pytest.raises(grpc.aio.AioRpcError) as malformed:
                await raw_call(caller, GET_ACCOUNT)(b"\xff\xff\xff\xff", timeout=10)
            assert malformed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            details = malformed.value.details() or ""
            assert "request" in details and "Error" not in details
            for watch in watches:
                watch.cancel()
    finally:
        assert server.stop() == 0, server.log()
