"""The server process: health, reflection for grpcurl, request ids, graceful shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from credit.v1 import checkout_pb2, credit_line_pb2
from tests.e2e.conftest import start_server_process
from tests.support import Api, health_stub

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or "grpcurl"


async def test_health_reports_every_service_serving(server):
    async with grpc.aio.insecure_channel(server.address) as channel:
        health = health_stub(channel)
        for service in ("", "credit.v1.CreditLineService", "credit.v1.CheckoutService",
                        "credit.v1.RepaymentService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_grpcurl_lists_the_services_through_reflection(server):
    listed = subprocess.run([GRPCURL, "-plaintext", server.address, "list"], capture_output=True, text=True,
                            timeout=30, check=True).stdout.split()
    for service in ("credit.v1.CreditLineService", "credit.v1.CheckoutService", "credit.v1.RepaymentService",
                    "grpc.health.v1.Health"):
        assert service in listed
    described = subprocess.run([GRPCURL, "-plaintext", server.address, "describe", "credit.v1.CheckoutService"],
                               capture_output=True, text=True, timeout=30, check=True).stdout
    for method in ("QuoteInstallments", "Authorize", "Capture", "Void", "GetAuthorization"):
        assert f"rpc {method}" in described


def grpcurl_describe(server, symbol: str) -> str:
    return subprocess.run([GRPCURL, "-plaintext", server.address, "describe", symbol], capture_output=True,
                          text=True, timeout=30, check=True).stdout


def test_reflection_describes_the_typed_fields_of_the_contract(server):
    """The descriptors served by reflection carry the enums and messages that replaced
    the strings and the JSON: grpcurl resolves them across files."""
    assert "PromiseSource source = 8" in grpcurl_describe(server, "credit.v1.Promise")
    case = grpcurl_describe(server, "credit.v1.Case")
    assert "EscalationReason escalation_reason = 13" in case and "escalation_step_code = 14" in case
    record = grpcurl_describe(server, "credit.v1.RiskDecisionRecord")
    assert "RiskFacts inputs = 12" in record and "repeated .credit.v1.RiskRuleResult rule_results = 13" in record
    assert "inputs_json" in record  # reserved, so never reused
    facts = grpcurl_describe(server, "credit.v1.RiskFacts")
    assert "repeated .credit.v1.RiskListKind blocked = 5" in facts and ".credit.v1.RiskGrade grade = 2" in facts
    assert "RISK_LIST_LEVEL_MEDIUM = 3" in grpcurl_describe(server, "credit.v1.RiskListLevel")
    for service in ("CreditLineService", "CheckoutService", "RepaymentService", "CollectionsService", "RiskService"):
        assert "rpc " in grpcurl_describe(server, f"credit.v1.{service}")


async def test_every_reply_carries_a_request_id(api, server):
    call = api.lines.GetAccount(credit_line_pb2.GetAccountRequest(
        account_id="00000000-0000-0000-0000-000000000000"), metadata=(("x-request-id", "req-abc"),))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert ("x-request-id", "req-abc") in tuple(error.value.trailing_metadata())


def test_a_bad_setting_stops_the_server_with_its_name():
    result = subprocess.run([sys.executable, "-m", "server"], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "HOLD_TTL_S": "forever"})
    assert result.returncode != 0
    assert "HOLD_TTL_S" in result.stderr


async def test_sigterm_lets_in_flight_calls_finish_then_closes_the_pool(db_dsn, tmp_path):
    server = start_server_process(db_dsn, tmp_path / "server.log", SHUTDOWN_GRACE_S="20", LOG_LEVEL="debug")
    async with grpc.aio.insecure_channel(server.address) as channel:
        api = Api(channel)
        account = await api.open_account(limit_minor=10_000_000)
        calls = [asyncio.ensure_future(api.authorize(account.account_id, 1_000, term_months=1, timeout=30))
                 for _ in range(300)]
        # Stop while calls are in flight: after the first has finished, however slow the machine.
        await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED, timeout=30)
        server.process.send_signal(signal.SIGTERM)
        results = await asyncio.gather(*calls, return_exceptions=True)
    assert server.process.wait(30) == 0, server.log()
    finished = [r for r in results if isinstance(r, checkout_pb2.Authorization)]
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(finished) + len(refused) == len(calls)
    assert finished and all(r.status == checkout_pb2.AUTHORIZATION_STATUS_PENDING for r in finished)
    # Calls that gRPC had not yet handed to a handler are refused whole at shutdown.
    assert all(r.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED) for r in refused)

    events = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    started = [e for e in events if e["event"] == "rpc_started" and e["method"].endswith("/Authorize")]
    ended = [e for e in events if e["event"] == "rpc_finished" and e["method"].endswith("/Authorize")]
    # Every call that started on the server finished there, with a reply.
    assert len(started) == len(ended) == len(finished)
    assert all(e["code"] == "OK" for e in ended)
    assert events[-1]["event"] == "server_stopped"

    conn = await asyncpg.connect(db_dsn)
    try:
        held = await conn.fetchval("SELECT held_minor FROM accounts WHERE account_id = $1",
                                   uuid.UUID(account.account_id))
        assert held == 1_000 * len(finished)
        assert await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'credit-server' "
            "AND datname = current_database()") == 0
    finally:
        await conn.close()


def test_the_invariant_command_passes_on_good_books_and_names_a_broken_rule(server, db_dsn_sync):
    clean = subprocess.run([sys.executable, "-m", "server.invariants"], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "DATABASE_URL": server.database_url})
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "0 violations" in clean.stdout

    broken = subprocess.run([sys.executable, "-m", "server.invariants"], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "DATABASE_URL": db_dsn_sync})
    assert broken.returncode == 1
    assert "held equals the sum of pending holds" in broken.stdout


def test_the_devstack_starts_every_part_prints_where_and_stops_them_all(tmp_path):
    from tests.e2e.conftest import free_port

    address = f"127.0.0.1:{free_port()}"
    smtp_port = free_port()
    voice_address = f"127.0.0.1:{free_port()}"
    payment_address = f"127.0.0.1:{free_port()}"
    health_address = f"127.0.0.1:{free_port()}"
    metrics_port = free_port()
    while True:  # the bot's metrics take the next port
        bot_metrics_port = metrics_port + 1
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", bot_metrics_port))
            break
        except OSError:
            metrics_port = free_port()
    env = {**os.environ, "VAR_DIR": str(tmp_path / "var"), "GRPC_LISTEN_ADDR": address,
           "SMTP_PORT": str(smtp_port), "VOICE_GATEWAY_ADDR": voice_address, "LOG_LEVEL": "warning",
           "PAYMENT_GATEWAY_ADDR": payment_address,
           "HEALTH_LISTEN_ADDR": health_address, "METRICS_LISTEN_ADDR": f"127.0.0.1:{metrics_port}"}
    env.pop("DATABASE_URL", None)
    stack = subprocess.Popen([sys.executable, "-m", "server.devstack"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    assert stack.stdout is not None
    lines = []
    while True:
        line = stack.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Ctrl-C stops everything" in line:
            break
    printed = "".join(lines)
    assert f"gRPC server        {address}" in printed, printed
    assert f"SMTP sink          127.0.0.1:{smtp_port}" in printed
    assert f"voice gateway      {voice_address}" in printed
    assert f"payment gateway    {payment_address}" in printed
    assert f"health (probes)    {health_address}" in printed
    assert "school-2041 (EDUCATION), travel-2210 (TRAVEL), gadget-4410 (ELECTRONICS) registered" in printed
    # Probes, and Prometheus for the server and the bot.
    from tests.e2e.test_admission import scrape
    from tests.e2e.test_metrics import wait_for

    with grpc.insecure_channel(health_address) as channel:
        check = health_pb2_grpc.HealthStub(channel).Check  # type: ignore[attr-defined]  # stubs: no methods
        assert check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
    assert "credit_db_up" in "".join(scrape(f"127.0.0.1:{metrics_port}"))
    wait_for(f"127.0.0.1:{bot_metrics_port}", lambda samples: "credit_bot_passes_total{result=\"ok\"}" in samples, 90)
    # The simulator answers a real call: the last digit 8 is a callee who disputes.
    import asyncio
    from datetime import date

    from collections_bot.voice.channel import VoiceChannel
    from collections_bot.voice.dialogue import Facts

    voice = VoiceChannel(address=voice_address, caller_id="+864008008888", call_timeout_s=30, read_timeout_s=10)
    result = asyncio.run(voice.call("devstack-check", "+8613900000008", "en", Facts(
        name="Li Lei", amount="1,018.00", due_date=date(2027, 2, 15), today=date(2027, 2, 20), overdue=True)))
    assert result.outcome == "DISPUTE", result
    # So does the payment simulator: the last digit 2 is an instrument without the funds.
    from server.domain.payments import FailureReason, PaymentResult
    from server.payments.gateway import PaymentGateway

    async def debit():
        async with grpc.aio.insecure_channel(payment_address) as channel:
            return await PaymentGateway(channel, timeout_s=10).debit(
                idempotency_key="devstack-check", instrument_token="card-0002", amount_minor=100,
                reference="devstack", account_id="acct")

    debited = asyncio.run(debit())
    assert isinstance(debited, PaymentResult) and debited.failure_reason is FailureReason.INSUFFICIENT_FUNDS
    listed = subprocess.run([GRPCURL, "-plaintext", address, "list"], capture_output=True, text=True, timeout=30)
    assert "credit.v1.CollectionsService" in listed.stdout
    import smtplib

    with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as client:
        client.sendmail("a@example.com", ["b@example.com"], "Subject: hello\r\n\r\nhi\r\n")
    assert len(list((tmp_path / "var" / "mail").glob("*.eml"))) == 1
    stack.send_signal(signal.SIGTERM)
    rest = stack.communicate(timeout=60)[0]
    assert stack.returncode == 0, printed + rest
    # Nothing keeps listening once the stack is down.

    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", smtp_port), timeout=2).close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(payment_address.rpartition(":")[2])), timeout=2).close()
    # The payment simulator kept what it took for the next `make run`.
    assert "devstack-check" in (tmp_path / "var" / "payment_sim.json").read_text()
