"""Mutual TLS end to end with generated certificates, bearer tokens, and the per-caller
method lists."""

from __future__ import annotations

import subprocess
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2

from credit.v1 import checkout_pb2, credit_line_pb2
from server.devcerts import make as make_certs
from server.probe import wait_until_serving
from tests.e2e.conftest import ServerProcess, free_port
from tests.e2e.test_server import GRPCURL
from tests.support import Api, health_stub


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("certs")
    return folder, make_certs(folder)


@pytest.fixture(scope="module")
def tls_server(e2e_database, certs, tmp_path_factory):
    import os
    import sys

    from tests.e2e.conftest import ROOT

    folder, settings = certs
    address = f"127.0.0.1:{free_port()}"
    token_address = f"127.0.0.1:{free_port()}"
    log_path = tmp_path_factory.mktemp("tls") / "server.log"
    env = {**os.environ, "DATABASE_URL": e2e_database, "GRPC_LISTEN_ADDR": address, "LOG_LEVEL": "warning",
           "GRPC_TOKEN_LISTEN_ADDR": token_address, **settings}
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "server"], cwd=ROOT, env=env, stdout=log_file,
                                   stderr=subprocess.STDOUT)
    server = ServerProcess(process, address, log_path, e2e_database)
    wait_until_serving(token_address, 60, lambda: process.poll() is None,
                       grpc.ssl_channel_credentials(root_certificates=(folder / "ca.pem").read_bytes()))
    server.token_address = token_address
    yield server, folder
    assert server.stop() == 0, server.log()


def client_credentials(folder, name: str | None) -> grpc.ChannelCredentials:
    if name is None:
        return grpc.ssl_channel_credentials(root_certificates=(folder / "ca.pem").read_bytes())
    return grpc.ssl_channel_credentials(root_certificates=(folder / "ca.pem").read_bytes(),
                                        private_key=(folder / f"{name}-key.pem").read_bytes(),
                                        certificate_chain=(folder / f"{name}.pem").read_bytes())


async def call_get_account(address, credentials, metadata=()):
    async with grpc.aio.secure_channel(address, credentials) as channel:
        return await Api(channel).lines.GetAccount(
            credit_line_pb2.GetAccountRequest(account_id=str(uuid.uuid4())), metadata=metadata, timeout=10)


async def code_of(coroutine) -> grpc.StatusCode:
    try:
        await coroutine
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_a_known_client_certificate_calls_its_methods(tls_server):
    server, folder = tls_server
    # NOT_FOUND, not UNAUTHENTICATED: the call got through to the service.
    assert await code_of(call_get_account(server.address, client_credentials(folder, "operator"))) == \
        grpc.StatusCode.NOT_FOUND
    assert await code_of(call_get_account(server.address, client_credentials(folder, "order-service"))) == \
        grpc.StatusCode.NOT_FOUND


async def test_a_caller_without_the_method_on_its_list_is_denied(tls_server):
    server, folder = tls_server
    async with grpc.aio.secure_channel(server.address, client_credentials(folder, "order-service")) as channel:
        api = Api(channel)
        code = await code_of(api.lines.AdjustLimit(credit_line_pb2.AdjustLimitRequest(
            account_id=str(uuid.uuid4()), credit_limit_minor=1, reason="r", idempotency_key="k"), timeout=10))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        allowed = await code_of(api.checkout.GetAuthorization(checkout_pb2.GetAuthorizationRequest(
            authorization_id=str(uuid.uuid4())), timeout=10))
        assert allowed == grpc.StatusCode.NOT_FOUND
    async with grpc.aio.secure_channel(server.address, client_credentials(folder, "collections-bot")) as channel:
        code = await code_of(Api(channel).checkout.Authorize(checkout_pb2.AuthorizeRequest(), timeout=10))
        assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_a_certificate_from_an_unknown_ca_is_refused(tls_server):
    server, folder = tls_server
    code = await code_of(call_get_account(server.address, client_credentials(folder, "rogue")))
    assert code == grpc.StatusCode.UNAVAILABLE  # the handshake fails; nothing reaches a handler


async def test_bearer_tokens_are_the_second_option(tls_server):
    server, folder = tls_server
    token = (folder / "operator.token").read_text().strip()
    anonymous = client_credentials(folder, None)
    tokens = server.token_address
    assert await code_of(call_get_account(tokens, anonymous, (("authorization", f"Bearer {token}"),))) == \
        grpc.StatusCode.NOT_FOUND
    assert await code_of(call_get_account(tokens, anonymous, (("authorization", "Bearer wrong"),))) == \
        grpc.StatusCode.UNAUTHENTICATED
    assert await code_of(call_get_account(tokens, anonymous)) == grpc.StatusCode.UNAUTHENTICATED
    # The certificate port will not even complete a handshake without a client certificate.
    assert await code_of(call_get_account(server.address, anonymous)) == grpc.StatusCode.UNAVAILABLE


async def test_health_stays_public_and_reflection_needs_a_caller(tls_server):
    server, folder = tls_server
    async with grpc.aio.secure_channel(server.token_address, client_credentials(folder, None)) as channel:
        reply = await health_stub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    ca = str(folder / "ca.pem")
    denied = subprocess.run([GRPCURL, "-cacert", ca, server.token_address, "list"], capture_output=True, text=True,
                            timeout=30)
    assert denied.returncode != 0 and "Unauthenticated" in denied.stderr
    listed = subprocess.run([GRPCURL, "-cacert", ca, "-cert", str(folder / "operator.pem"), "-key",
                             str(folder / "operator-key.pem"), server.address, "list"],
                            capture_output=True, text=True, timeout=30)
    assert "credit.v1.CheckoutService" in listed.stdout, listed.stderr


async def test_a_risk_analyst_reads_the_portfolio_with_grpcurl_and_nothing_else(tls_server):
    server, folder = tls_server
    analyst = [GRPCURL, "-cacert", str(folder / "ca.pem"), "-cert", str(folder / "risk-analyst.pem"), "-key",
               str(folder / "risk-analyst-key.pem")]

    def call(method: str, body: str) -> subprocess.CompletedProcess:
        return subprocess.run([*analyst, "-d", body, server.address, method], capture_output=True, text=True,
                              timeout=30)

    described = subprocess.run([*analyst, server.address, "describe", "credit.v1.RiskService"],
                               capture_output=True, text=True, timeout=30)
    assert "rpc GetPortfolioReport" in described.stdout and "rpc RunStressTest" in described.stdout, \
        described.stderr
    report = call("credit.v1.RiskService/GetPortfolioReport", "{}")
    assert report.returncode == 0 and '"as_of_date"' in report.stdout, report.stderr
    stress = call("credit.v1.RiskService/RunStressTest",
                  '{"scenario": {"name": "downturn", "pdMultipliers": [{"grade": "RISK_GRADE_E", '
                  '"multiplierBps": 20000}], "lgdBps": 9500}}')
    assert stress.returncode == 0 and '"scenario": "downturn"' in stress.stdout, stress.stderr
    for method in ("credit.v1.RiskService/ListRiskDecisions", "credit.v1.CreditLineService/GetAccount"):
        denied = call(method, f'{{"accountId": "{uuid.uuid4()}"}}')
        assert denied.returncode != 0 and "PermissionDenied" in denied.stderr, (method, denied.stderr)


async def test_idempotency_keys_belong_to_the_caller_that_chose_them_and_the_account(tls_server):
    server, folder = tls_server
    async with grpc.aio.secure_channel(server.address, client_credentials(folder, "operator")) as operator_channel, \
            grpc.aio.secure_channel(server.address, client_credentials(folder, "order-service")) as order_channel:
        operator, orders = Api(operator_channel), Api(order_channel)
        first = await operator.open_account(limit_minor=1_000_000)
        second = await operator.open_account(limit_minor=1_000_000)
        shared_key = "order-1001"
        by_orders = await orders.authorize(first.account_id, 10_000, idempotency_key=shared_key)
        by_operator = await operator.authorize(second.account_id, 20_000, idempotency_key=shared_key)
        assert by_orders.authorization_id != by_operator.authorization_id
        assert (by_orders.amount_minor, by_operator.amount_minor) == (10_000, 20_000)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await orders.authorize(first.account_id, 30_000, idempotency_key=shared_key)
        assert error.value.code() == grpc.StatusCode.ALREADY_EXISTS
        # Keys are kept by account too (each account's in its own shard): the same
        # caller's key on another account is another key.
        elsewhere = await orders.authorize(second.account_id, 30_000, idempotency_key=shared_key)
        assert elsewhere.amount_minor == 30_000
        assert elsewhere.authorization_id not in (by_orders.authorization_id, by_operator.authorization_id)
