"""A checkout as an order service makes it, with the generated, typed stubs of credit.v1.

What a caller of CheckoutService must get right, in one place:

- every call has a deadline (`timeout=`), and the retries share one overall budget;
- a call that may have reached the server (UNAVAILABLE: the connection broke; ABORTED:
  the same key is still being worked on) is retried with the SAME idempotency key, so
  the server runs it at most once and the retry returns the first reply; a bounded
  number of tries with backoff;
- INVALID_ARGUMENT carries a `google.rpc.BadRequest` detail naming every bad field
  (read with grpcio-status), so the order service can show what to fix;
- an approved hold is PENDING; anything else (DECLINED with a reason) is an answer, not
  an error, and is not retried.

Run it against a server (`make run` prints the address):

    python -m examples.checkout_client --address 127.0.0.1:50051 --plaintext \\
        --account-id ACCOUNT_ID --amount-minor 129900 --term-months 3 --capture

It prints the authorization as JSON (and the loan's id after --capture); bad input
prints each field and what is wrong with it, and exits with status 2.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from credit.v1 import checkout_pb2, checkout_pb2_grpc, common_pb2

Reply = TypeVar("Reply")

# Codes after which the call may or may not have run: safe to retry with the same key.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED})


@dataclass(frozen=True)
class RetryPolicy:
    # Tries in all, the first included.
    attempts: int = 4
    # Each call's deadline, and the budget of all tries together.
    call_timeout_s: float = 2.0
    total_timeout_s: float = 8.0
    # Backoff before try n (n >= 2): first_backoff_s * 2**(n-2), jittered, at most max_backoff_s.
    first_backoff_s: float = 0.1
    max_backoff_s: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.attempts <= 10:
            raise ValueError(f"attempts must be 1..10, got {self.attempts}")
        if not 0 < self.call_timeout_s <= self.total_timeout_s <= 60:
            raise ValueError("need 0 < call_timeout_s <= total_timeout_s <= 60")


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class CheckoutRejected(Exception):
    """The server refused the request as sent (INVALID_ARGUMENT); retrying cannot help."""

    def __init__(self, message: str, violations: Sequence[FieldViolation]) -> None:
        super().__init__(message)
        self.violations = tuple(violations)


def field_violations(error: grpc.RpcError) -> list[FieldViolation]:
    """The fields named by the google.rpc.BadRequest details of a failed call."""
    if not isinstance(error, grpc.Call):
        return []
    status = rpc_status.from_call(error)
    if status is None:
        return []
    found = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            found += [FieldViolation(v.field, v.description) for v in bad_request.field_violations]
    return found


def _code(error: grpc.RpcError) -> grpc.StatusCode | None:
    return error.code() if isinstance(error, grpc.Call) else None


class CheckoutClient:
    """Authorize and Capture with deadlines, retries under one idempotency key, and
    field errors as CheckoutRejected."""

    def __init__(self, channel: grpc.Channel, *, policy: RetryPolicy = RetryPolicy(),
                 metadata: Sequence[tuple[str, str]] = (), sleep: Callable[[float], None] = time.sleep) -> None:
        self._stub = checkout_pb2_grpc.CheckoutServiceStub(channel)
        self._policy = policy
        self._metadata = tuple(metadata)
        self._sleep = sleep
        # How many calls the last request took (for logs and tests).
        self.last_attempts = 0

    def authorize(self, *, account_id: str, merchant_id: str, order_id: str, amount_minor: int, term_months: int,
                  idempotency_key: str,
                  method: common_pb2.RepaymentMethod.ValueType = common_pb2.REPAYMENT_METHOD_FLAT_FEE,
                  device_id: str = "", ip_address: str = "") -> checkout_pb2.Authorization:
        request = checkout_pb2.AuthorizeRequest(
            account_id=account_id, merchant_id=merchant_id, order_id=order_id, amount_minor=amount_minor,
            term_months=term_months, method=method, idempotency_key=idempotency_key,
            risk_context=checkout_pb2.RiskContext(device_id=device_id, ip_address=ip_address))
        return self._call(lambda timeout: self._stub.Authorize(request, timeout=timeout, metadata=self._metadata))

    def capture(self, *, authorization_id: str, idempotency_key: str,
                amount_minor: int = 0) -> checkout_pb2.Authorization:
        request = checkout_pb2.CaptureRequest(authorization_id=authorization_id, amount_minor=amount_minor,
                                              idempotency_key=idempotency_key)
        return self._call(lambda timeout: self._stub.Capture(request, timeout=timeout, metadata=self._metadata))

    def _call(self, send: Callable[[float], Reply]) -> Reply:
        """`send` makes one call with the given deadline; the request, and so its
        idempotency key, is the same object on every try."""
        policy = self._policy
        give_up_at = time.monotonic() + policy.total_timeout_s
        for attempt in range(1, policy.attempts + 1):
            self.last_attempts = attempt
            remaining = give_up_at - time.monotonic()
            try:
                return send(min(policy.call_timeout_s, max(remaining, 0.001)))
            except grpc.RpcError as error:
                code = _code(error)
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    details = error.details() if isinstance(error, grpc.Call) else str(error)
                    raise CheckoutRejected(details or "invalid argument", field_violations(error)) from error
                backoff = min(policy.max_backoff_s, policy.first_backoff_s * 2 ** (attempt - 1))
                backoff *= random.uniform(0.5, 1.0)
                if code not in RETRYABLE or attempt == policy.attempts or time.monotonic() + backoff >= give_up_at:
                    raise
                self._sleep(backoff)
        raise RuntimeError(f"retry loop ended without a reply or an error after {policy.attempts} tries")


def open_channel(address: str, *, plaintext: bool, ca_cert: Path | None = None) -> grpc.Channel:
    """Plaintext only when asked for (a local server); otherwise TLS, with `ca_cert` or
    the system's roots."""
    if plaintext:
        return grpc.insecure_channel(address)
    roots = ca_cert.read_bytes() if ca_cert else None
    return grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=roots))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Authorize (and capture) one order through CheckoutService.")
    parser.add_argument("--address", required=True, help="HOST:PORT of the credit service")
    parser.add_argument("--plaintext", action="store_true", help="no TLS (a local development server)")
    parser.add_argument("--ca-cert", type=Path, help="the CA that signed the server's certificate")
    parser.add_argument("--token", help="a bearer token, sent as `authorization` metadata")
    parser.add_argument("--account-id", required=True)
    parser.add_argument("--merchant-id", default="merchant-1")
    parser.add_argument("--order-id", default="", help="default: a new one")
    parser.add_argument("--amount-minor", type=int, required=True)
    parser.add_argument("--term-months", type=int, default=3)
    parser.add_argument("--idempotency-key", default="", help="default: a new one; reuse it to retry the same order")
    parser.add_argument("--capture", action="store_true", help="capture the whole hold into a loan")
    parser.add_argument("--deadline-s", type=float, default=2.0, help="each call's deadline")
    args = parser.parse_args(argv)

    metadata = [("authorization", f"Bearer {args.token}")] if args.token else []
    key = args.idempotency_key or str(uuid.uuid4())
    with open_channel(args.address, plaintext=args.plaintext, ca_cert=args.ca_cert) as channel:
        client = CheckoutClient(channel, metadata=metadata,
                                policy=RetryPolicy(call_timeout_s=args.deadline_s,
                                                   total_timeout_s=max(8.0, args.deadline_s)))
        try:
            authorization = client.authorize(
                account_id=args.account_id, merchant_id=args.merchant_id,
                order_id=args.order_id or f"order-{uuid.uuid4()}", amount_minor=args.amount_minor,
                term_months=args.term_months, idempotency_key=key)
            if args.capture and authorization.status == checkout_pb2.AUTHORIZATION_STATUS_PENDING:
                authorization = client.capture(authorization_id=authorization.authorization_id,
                                               idempotency_key=f"{key}:capture")
        except CheckoutRejected as rejected:
            print(f"rejected: {rejected}", file=sys.stderr)
            for violation in rejected.violations:
                print(f"  {violation.field}: {violation.description}", file=sys.stderr)
            return 2
    print(json_format.MessageToJson(authorization))
    return 0


if __name__ == "__main__":
    sys.exit(main())
