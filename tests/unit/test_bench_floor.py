"""The benchmark's wire-format reader and writer against the generated protobuf classes,
and the floor's request checks."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench import floor
from bench.checkout import AUTHORIZATIONS_PER_ACCOUNT, AccountBook, Customer
from bench.wire import (
    WireError,
    as_int64,
    bytes_field,
    bytes_of,
    encode_varint,
    parse_fields,
    read_varint,
    varint_field,
    varint_of,
)
from credit.v1 import checkout_pb2, common_pb2


def authorize_request(**overrides) -> checkout_pb2.AuthorizeRequest:
    fields: dict[str, Any] = dict(
        account_id="7d9f7c38-7d2c-4a8e-9d83-0f5b8f6c2a11", merchant_id="jd-mall", order_id="order-1",
        amount_minor=129_900, term_months=6, method=common_pb2.REPAYMENT_METHOD_FLAT_FEE, idempotency_key="auth-1",
        risk_context=checkout_pb2.RiskContext(device_id="dev-1", ip_address="203.0.113.7"))
    fields.update(overrides)
    return checkout_pb2.AuthorizeRequest(**fields)


def test_reads_the_fields_of_an_authorize_request():
    request = authorize_request()
    fields = parse_fields(request.SerializeToString())
    assert fields[1] == request.account_id.encode()
    assert fields[4] == 129_900
    assert fields[7] == b"auth-1"
    assert fields[5] == 6
    assert checkout_pb2.RiskContext.FromString(bytes_of(fields, 8)) == request.risk_context  # nested: its bytes


def test_parse_authorize_takes_account_amount_and_key():
    account, amount, key = floor.parse_authorize(authorize_request().SerializeToString())
    assert (account, amount, key) == (b"7d9f7c38-7d2c-4a8e-9d83-0f5b8f6c2a11", 129_900, "auth-1")


@pytest.mark.parametrize("overrides", [{"account_id": ""}, {"amount_minor": 0}, {"amount_minor": -5},
                                       {"amount_minor": floor.MAX_AMOUNT_MINOR + 1}, {"idempotency_key": ""}])
def test_parse_authorize_refuses_missing_or_bad_values(overrides):
    with pytest.raises(ValueError):
        floor.parse_authorize(authorize_request(**overrides).SerializeToString())


@pytest.mark.parametrize("data", [b"\x0a\x05abc", b"\x20", b"\x20\xff", b"\x00\x01", b"\x0b", b"\x21\x00\x00",
                                  b"\x20" + b"\xff" * 11, b"\x22\x01a"])
def test_malformed_bytes_are_a_wire_error(data):
    # Truncated string, truncated varints, field 0, a group, short fixed64, an 11-byte
    # varint; the last one is well-formed but has the wrong wire type for amount_minor.
    with pytest.raises(WireError):
        floor.parse_authorize(data)


def test_the_floor_reply_reads_as_an_authorization():
    reply = checkout_pb2.Authorization.FromString(floor.encode_authorization(
        "0b6f3c1e-8d7a-4a52-9a39-4d0c2f7e1b55", b"acct", floor.STATUS_DECLINED, 5_000))
    assert reply.authorization_id == "0b6f3c1e-8d7a-4a52-9a39-4d0c2f7e1b55"
    assert reply.account_id == "acct"
    assert reply.status == checkout_pb2.AUTHORIZATION_STATUS_DECLINED
    assert reply.decline_reason == checkout_pb2.DECLINE_REASON_INSUFFICIENT_LIMIT
    assert reply.amount_minor == 5_000
    pending = checkout_pb2.Authorization.FromString(floor.encode_authorization("id", b"acct", floor.STATUS_PENDING, 1))
    assert pending.status == checkout_pb2.AUTHORIZATION_STATUS_PENDING
    assert pending.decline_reason == checkout_pb2.DECLINE_REASON_UNSPECIFIED


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1), st.binary(max_size=300))
def test_varints_and_bytes_round_trip_with_protobuf(number, blob):
    encoded = bytes_field(1, blob) + varint_field(4, number)  # in field order, as protobuf writes
    message = checkout_pb2.AuthorizeRequest.FromString(encoded) if _utf8(blob) else None
    fields = parse_fields(encoded)
    assert as_int64(varint_of(fields, 4)) == number
    assert bytes_of(fields, 1) == blob
    if message is not None:
        assert message.amount_minor == number
        assert message.SerializeToString() == encoded
    value, end = read_varint(encode_varint(number), 0)
    assert as_int64(value) == number


def _utf8(blob: bytes) -> bool:
    try:
        blob.decode()
    except UnicodeDecodeError:
        return False
    return True


def test_account_book_hands_accounts_out_round_robin_within_their_budget():
    book = AccountBook()
    book.add([Customer(f"a{i}", f"d{i}", f"ip{i}") for i in range(3)])
    assert book.remaining == 3 * AUTHORIZATIONS_PER_ACCOUNT
    planned = [c.account_id for c in book.plan(5)]
    assert planned == ["a0", "a1", "a2", "a0", "a1"]
    assert [c.account_id for c in book.plan(5)] == planned  # planning takes nothing
    book.take(4)
    assert [c.account_id for c in book.plan(2)] == ["a1", "a2"]
    assert len(book.plan(10_000)) == book.remaining == 3 * AUTHORIZATIONS_PER_ACCOUNT - 4
    assert all(n == AUTHORIZATIONS_PER_ACCOUNT for n in _counts(book.plan(10_000), extra=4).values())


def _counts(customers, extra):
    counts = {"a0": 2, "a1": 1, "a2": 1}  # what take(4) used
    for c in customers:
        counts[c.account_id] += 1
    assert sum(counts.values()) == len(customers) + extra
    return counts
