"""examples/checkout_client.py against the real server process: a checkout from the
command line, field errors read from google.rpc.BadRequest, and a retry after a lost
reply that reuses the idempotency key and so holds the limit once."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import grpc
import pytest

from credit.v1 import checkout_pb2, credit_line_pb2, credit_line_pb2_grpc
from examples.checkout_client import CheckoutClient, CheckoutRejected, RetryPolicy
from tests.e2e.conftest import ROOT


def run_example(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "examples.checkout_client", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=False)


def open_account(address: str, limit_minor: int) -> str:
    with grpc.insecure_channel(address) as channel:
        lines = credit_line_pb2_grpc.CreditLineServiceStub(channel)
        account = lines.OpenAccount(credit_line_pb2.OpenAccountRequest(
            customer_id=f"cust-{uuid.uuid4()}", idempotency_key=str(uuid.uuid4()),
            contact=credit_line_pb2.Contact(name="Li Lei", email="li.lei@example.com", phone="+8613800138001")),
            timeout=10)
        lines.AdjustLimit(credit_line_pb2.AdjustLimitRequest(
            account_id=account.account_id, credit_limit_minor=limit_minor, reason="example",
            idempotency_key=str(uuid.uuid4())), timeout=10)
        return account.account_id


def account_of(address: str, account_id: str) -> credit_line_pb2.Account:
    with grpc.insecure_channel(address) as channel:
        return credit_line_pb2_grpc.CreditLineServiceStub(channel).GetAccount(
            credit_line_pb2.GetAccountRequest(account_id=account_id), timeout=10)


def test_the_example_authorizes_and_captures_an_order(server):
    account_id = open_account(server.address, 1_000_000)
    ran = run_example("--address", server.address, "--plaintext", "--account-id", account_id,
                      "--amount-minor", "129900", "--term-months", "3", "--capture")
    assert ran.returncode == 0, ran.stderr
    authorization = json.loads(ran.stdout)
    assert authorization["status"] == "AUTHORIZATION_STATUS_CAPTURED"
    assert authorization["capturedMinor"] == "129900" and authorization["loanId"]
    account = account_of(server.address, account_id)
    assert (account.held_minor, account.outstanding_principal_minor) == (0, 129_900)


def test_the_example_shows_each_bad_field_from_the_bad_request_detail(server):
    ran = run_example("--address", server.address, "--plaintext", "--account-id", "not-a-uuid",
                      "--amount-minor", "0", "--term-months", "5")
    assert ran.returncode == 2, ran.stdout
    named = {line.split(":")[0].strip() for line in ran.stderr.splitlines() if line.startswith("  ")}
    assert named == {"account_id", "amount_minor", "term_months"}, ran.stderr


class LoseFirstReply(grpc.UnaryUnaryClientInterceptor):
    """Lets each of the first `lose` calls reach the server and run there, then reports
    UNAVAILABLE to the caller as if the connection broke before the reply came back."""

    def __init__(self, lose: int) -> None:
        self.lose = lose
        self.calls = 0
        self.keys: list[str] = []

    def intercept_unary_unary(self, continuation, client_call_details, request) -> Any:
        self.calls += 1
        self.keys.append(request.idempotency_key)
        outcome = continuation(client_call_details, request)
        outcome.result()  # the server ran it
        if self.calls <= self.lose:
            raise LostReply()
        return outcome


class LostReply(grpc.RpcError, grpc.Call):
    """What grpc raises when the connection breaks: an RpcError that is a finished Call."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    def details(self) -> str:
        return "connection reset before the reply"

    def initial_metadata(self) -> tuple:
        return ()

    def trailing_metadata(self) -> tuple:
        return ()

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> float:
        return 0.0

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback) -> bool:
        return False


def test_a_lost_reply_is_retried_with_the_same_key_and_holds_the_limit_once(server):
    account_id = open_account(server.address, 1_000_000)
    lost = LoseFirstReply(lose=2)
    pauses: list[float] = []
    with grpc.insecure_channel(server.address) as plain:
        client = CheckoutClient(grpc.intercept_channel(plain, lost), policy=RetryPolicy(attempts=4),
                                sleep=pauses.append)
        authorization = client.authorize(account_id=account_id, merchant_id="merchant-1",
                                         order_id=f"order-{uuid.uuid4()}", amount_minor=50_000, term_months=3,
                                         idempotency_key="order-key-1")
    assert authorization.status == checkout_pb2.AUTHORIZATION_STATUS_PENDING
    assert client.last_attempts == 3 and lost.keys == ["order-key-1"] * 3
    assert len(pauses) == 2 and 0.05 <= pauses[0] <= 0.1 <= pauses[1] <= 0.2  # doubling, jittered
    # Three calls ran on the server; one hold was made.
    assert account_of(server.address, account_id).held_minor == 50_000


def test_retries_stop_at_the_policy_s_limit(server):
    lost = LoseFirstReply(lose=10)
    account_id = open_account(server.address, 1_000_000)
    with grpc.insecure_channel(server.address) as plain:
        client = CheckoutClient(grpc.intercept_channel(plain, lost), policy=RetryPolicy(attempts=2),
                                sleep=lambda _: None)
        with pytest.raises(grpc.RpcError) as raised:
            client.authorize(account_id=account_id, merchant_id="merchant-1", order_id=f"order-{uuid.uuid4()}",
                             amount_minor=10_000, term_months=3, idempotency_key=str(uuid.uuid4()))
    assert isinstance(raised.value, LostReply) and lost.calls == 2
    assert account_of(server.address, account_id).held_minor == 10_000


def test_bad_input_is_not_retried(server):
    lost = LoseFirstReply(lose=0)
    with grpc.insecure_channel(server.address) as plain:
        client = CheckoutClient(grpc.intercept_channel(plain, lost), sleep=lambda _: None)
        with pytest.raises(CheckoutRejected) as rejected:
            client.authorize(account_id=str(uuid.uuid4()), merchant_id="merchant 1", order_id="o-1",
                             amount_minor=-5, term_months=3, idempotency_key=str(uuid.uuid4()))
    assert {v.field for v in rejected.value.violations} == {"merchant_id", "amount_minor"}
    assert all(v.description for v in rejected.value.violations) and lost.calls == 1
