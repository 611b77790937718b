"""`python -m server.payment_sim` as a process: its behaviour map from the flags and the
environment, health and reflection for grpcurl, a clean stop, and a state file that
carries payments, idempotency keys and pending results over a restart."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2

from server.domain.payments import FailureReason, PaymentEvent, PaymentResult, PaymentStatus
from server.payments.gateway import PaymentGateway
from tests.e2e.conftest import ROOT, free_port
from tests.e2e.test_server import GRPCURL
from tests.support import health_stub, key


def start(address: str, state_file: Path, *flags: str) -> subprocess.Popen:
    env = {**os.environ, "PAYMENT_SIM_BEHAVIOURS": "card-A=insufficient_funds", "LOG_LEVEL": "warning"}
    process = subprocess.Popen([sys.executable, "-m", "server.payment_sim", "--listen", address,
                                "--state-file", str(state_file), *flags], cwd=ROOT, env=env)
    with grpc.insecure_channel(address) as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
    return process


def stop(process: subprocess.Popen) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


async def first_events(gateway: PaymentGateway, count: int) -> list[PaymentEvent]:
    taken: list[PaymentEvent] = []
    async with asyncio.timeout(10):
        async for event in gateway.watch(0):
            taken.append(event)
            if len(taken) == count:
                return taken
    return taken


async def test_the_simulator_process_serves_health_reflection_and_keeps_its_book_over_a_restart(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    state_file = tmp_path / "payment_sim.json"
    refused_key, declined_key, paid_key, late_key = key(), key(), key(), key()
    process = start(address, state_file, "--behaviour", "m-Z=declined", "--delay-ms", "3000")
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            for service in ("", "credit.v1.PaymentGatewayService"):
                reply = await health_stub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
            gateway = PaymentGateway(channel, timeout_s=5)
            refused = await gateway.debit(idempotency_key=refused_key, instrument_token="card-A", amount_minor=300,
                                          reference="a-1", account_id="acct-1")
            declined = await gateway.pay_merchant(idempotency_key=declined_key, merchant_id="m-Z", amount_minor=1,
                                                  reference="s-1")
            paid = await gateway.debit(idempotency_key=paid_key, instrument_token="card-0", amount_minor=100,
                                       reference="a-2", account_id="acct-1")
            late = await gateway.debit(idempotency_key=late_key, instrument_token="card-5", amount_minor=200,
                                       reference="a-3", account_id="acct-1")
        # From the environment and from the flag, ahead of the last digit.
        assert isinstance(refused, PaymentResult) and refused.failure_reason is FailureReason.INSUFFICIENT_FUNDS
        assert isinstance(declined, PaymentResult) and declined.failure_reason is FailureReason.DECLINED
        assert isinstance(paid, PaymentResult) and paid.status is PaymentStatus.SUCCEEDED
        assert isinstance(late, PaymentResult) and late.status is PaymentStatus.PENDING

        listed = subprocess.run([GRPCURL, "-plaintext", address, "list"], capture_output=True, text=True, timeout=30)
        assert "credit.v1.PaymentGatewayService" in listed.stdout, listed.stdout + listed.stderr
        got = subprocess.run([GRPCURL, "-plaintext", "-d", json.dumps({"idempotency_key": paid_key}), address,
                              "credit.v1.PaymentGatewayService/GetPayment"], capture_output=True, text=True,
                             timeout=30)
        assert json.loads(got.stdout)["status"] == "PAYMENT_STATUS_SUCCEEDED", got.stdout + got.stderr
    finally:
        code = stop(process)
    assert code == 0
    assert state_file.exists()

    # Stopped while one result was still to come: after the restart it comes, and what
    # was known before is still known.
    process = start(address, state_file, "--delay-ms", "200")
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            gateway = PaymentGateway(channel, timeout_s=5)
            events = await first_events(gateway, 4)
            assert [e.sequence for e in events] == [1, 2, 3, 4]
            assert [e.idempotency_key for e in events] == [refused_key, declined_key, paid_key, late_key]
            assert events[3].status is PaymentStatus.SUCCEEDED
            again = await gateway.debit(idempotency_key=paid_key, instrument_token="card-0", amount_minor=100,
                                        reference="a-2", account_id="acct-1")
            assert isinstance(again, PaymentResult) and again == paid
            page = await gateway.list_payments(status=PaymentStatus.SUCCEEDED)
            assert {p.idempotency_key for p in page.payments} == {paid_key, late_key}
            done = await gateway.get(payment_id=late.payment_id)
            assert done is not None and done.status is PaymentStatus.SUCCEEDED
            assert done.created_at == late.created_at and done.completed_at is not None
    finally:
        code = stop(process)
    assert code == 0


def test_a_state_file_that_is_not_a_book_stops_the_simulator_naming_it(tmp_path):
    state_file = tmp_path / "payment_sim.json"
    state_file.write_text('{"payments": [{"kind": "PAYMENT_KIND_NOPE"}]}')
    result = subprocess.run([sys.executable, "-m", "server.payment_sim", "--listen", f"127.0.0.1:{free_port()}",
                             "--state-file", str(state_file)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert str(state_file) in result.stderr and "not a payment simulator's state" in result.stderr
