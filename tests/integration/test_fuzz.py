"""Malformed and extreme requests at every RPC over a real channel: every reply is a
proper status (never INTERNAL or UNKNOWN), the server keeps serving, and the books
still balance afterwards."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from google.protobuf import descriptor as d
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from credit.v1 import checkout_pb2, collections_pb2, credit_line_pb2, repayment_pb2, risk_pb2
from server.db import acquire
from server.invariants import check
from tests.integration.test_stateful import Harness
from tests.support import buy, health_stub

SERVICES = [credit_line_pb2, checkout_pb2, repayment_pb2, collections_pb2, risk_pb2]
ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
           grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.ABORTED}
INT64 = st.one_of(st.integers(-(2**63), 2**63 - 1),
                  st.sampled_from([0, 1, -1, 2**63 - 1, -(2**63), 10**11, 10**11 + 1, 100_000]))
INT32 = st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([0, 1, 3, 6, 12, 24, -1, 101]))
NASTY = ["", " ", "\x00", "\u202e", "2027-02-30", "9999-12-31", "-1", "A" * 300, "💳" * 50, "' OR 1=1 --",
         "+8613800138000", "a@b.co", "Asia", "../etc/passwd"]


def methods():
    for module in SERVICES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                yield f"/{service.full_name}/{method.name}", method.input_type, method.output_type


def value(field: d.FieldDescriptor, depth: int, ids: list[str]):
    """Garbage, but often garbage in the right place: real ids, plausible amounts and
    keys, so that calls get past validation into the core."""
    t = field.type
    name = field.name
    if t == d.FieldDescriptor.TYPE_STRING and name.endswith("_id") and ids:
        return st.one_of(st.sampled_from(ids), st.sampled_from(NASTY), st.uuids().map(str))
    if name == "idempotency_key":
        return st.one_of(st.uuids().map(lambda u: u.hex), st.sampled_from(NASTY))
    if name.endswith("_minor"):
        return st.one_of(st.integers(1, 2_000_000), INT64)
    if name in ("term_months", "sequence"):
        return st.one_of(st.sampled_from([1, 3, 6, 12, 24]), INT32)
    if name in ("promised_date", "as_of"):
        return st.one_of(st.dates().map(lambda x: x.isoformat()), st.sampled_from(NASTY))
    if t == d.FieldDescriptor.TYPE_STRING:
        return st.one_of(st.text(max_size=40), st.sampled_from(NASTY + ids), st.text(min_size=100, max_size=600))
    if t in (d.FieldDescriptor.TYPE_INT64, d.FieldDescriptor.TYPE_SINT64):
        return INT64
    if t == d.FieldDescriptor.TYPE_INT32:
        return INT32
    if t == d.FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == d.FieldDescriptor.TYPE_ENUM:
        return st.integers(-3, 12)
    if t in (d.FieldDescriptor.TYPE_FLOAT, d.FieldDescriptor.TYPE_DOUBLE):
        return st.floats(allow_nan=False, width=32)
    if t == d.FieldDescriptor.TYPE_MESSAGE and field.message_type is not None:
        return message(field.message_type, depth + 1, ids) if depth < 2 else st.none()
    return st.none()


def message(descriptor: d.Descriptor, depth: int, ids: list[str]):
    if descriptor.full_name == "google.protobuf.Timestamp":
        return st.builds(lambda s, n: {"seconds": s, "nanos": n}, INT64, INT32)
    strategies: dict[str, st.SearchStrategy[Any]] = {}
    for field in descriptor.fields:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            strategies[field.name] = st.dictionaries(st.sampled_from(NASTY + ["duration_in_month", "purpose"]),
                                                     st.sampled_from(NASTY + ["12"]), max_size=4)
        elif field.is_repeated:
            strategies[field.name] = st.lists(value(field, depth, ids), max_size=3)
        else:
            strategies[field.name] = st.one_of(st.none(), value(field, depth, ids))
    return st.fixed_dictionaries(strategies)


def fill(target, values: dict) -> None:
    for name, v in values.items():
        if v is None:
            continue
        field = target.DESCRIPTOR.fields_by_name.get(name)
        if field is None:
            setattr(target, name, v)  # Timestamp's seconds and nanos
        elif field.message_type is not None and field.message_type.GetOptions().map_entry:
            getattr(target, name).update(v)
        elif field.is_repeated:
            container = getattr(target, name)
            for item in v:
                if item is None:
                    continue
                if field.message_type is not None:
                    fill(container.add(), item)
                else:
                    container.append(item)
        elif field.message_type is not None:
            fill(getattr(target, name), v)
        else:
            setattr(target, name, v)


@pytest.mark.timeout(600)
def test_every_rpc_answers_garbage_with_a_proper_status(pg_admin_dsn, template_dsn):
    harness = Harness(pg_admin_dsn)
    try:
        account = harness.run(harness.api.open_account(limit_minor=1_000_000))
        loan = harness.run(buy(harness.api, account.account_id, 300_000))
        ids = [account.account_id, loan.loan_id, loan.authorization_id]
        seen: dict[str, set] = {}
        for path, input_type, output_type in methods():
            request_class = _message_class(input_type)
            call: grpc.aio.UnaryUnaryMultiCallable[Message, Message] = harness.channel.unary_unary(
                path, request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=_message_class(output_type).FromString)

            fuzz_one(harness, path, request_class, call, message(input_type, 0, ids), seen)
        assert len(seen) >= 25
        # The garbage got past validation into the core, not only bounced at the door.
        deeper = {path for path, codes in seen.items() if codes - {"INVALID_ARGUMENT"}}
        assert len(deeper) >= 15, seen

        async def after():
            health = await health_stub(harness.channel).Check(health_pb2.HealthCheckRequest())
            async with acquire(harness.pool) as conn:
                return health.status, await check(conn)

        status, violations = harness.run(after())
        assert status == health_pb2.HealthCheckResponse.SERVING
        assert violations == []
    finally:
        harness.close()


def fuzz_one(harness, path, request_class, call, values_strategy, seen) -> None:
    @given(values=values_strategy)
    @settings(max_examples=40, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    def fuzz(values):
        request = request_class()
        try:
            fill(request, values)
        except (ValueError, TypeError, OverflowError):
            return  # protobuf itself refuses the value (out of range): nothing to send
        code = grpc.StatusCode.OK
        try:
            harness.run(call(request, timeout=20))
        except grpc.aio.AioRpcError as error:
            code = error.code()
            assert code in ALLOWED, f"{path}: {code.name} {error.details()} for {request}"
        seen.setdefault(path, set()).add(code.name)

    fuzz()


def _message_class(descriptor: d.Descriptor):
    from google.protobuf import message_factory

    return message_factory.GetMessageClass(descriptor)
