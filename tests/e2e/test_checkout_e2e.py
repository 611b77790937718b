"""Checkout against the real server process: concurrency on one account and bad input."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import grpc
import pytest

from credit.v1 import checkout_pb2, credit_line_pb2, repayment_pb2
from server.db import one
from tests.support import field_violations, key

PENDING = checkout_pb2.AUTHORIZATION_STATUS_PENDING


async def test_200_concurrent_authorizations_of_100_on_a_limit_of_1000_approve_exactly_10(api, server):
    account = await api.open_account(limit_minor=100_000)
    results = await asyncio.gather(
        *(api.authorize(account.account_id, 10_000, term_months=3, timeout=60) for _ in range(200)))
    approved = [r for r in results if r.status == PENDING]
    declined = [r for r in results if r.status == checkout_pb2.AUTHORIZATION_STATUS_DECLINED]
    assert len(approved) == 10
    assert len(declined) == 190
    assert {r.decline_reason for r in declined} == {checkout_pb2.DECLINE_REASON_INSUFFICIENT_LIMIT}
    after = await api.account(account.account_id)
    assert after.held_minor == sum(r.amount_minor for r in approved) == 100_000
    assert after.available_minor == 0

    conn = await asyncpg.connect(server.database_url)
    try:
        pending_sum = await conn.fetchval(
            "SELECT sum(amount_minor) FROM authorizations WHERE account_id = $1 AND status = 'PENDING'",
            uuid.UUID(account.account_id))
    finally:
        await conn.close()
    assert pending_sum == after.held_minor


async def test_with_the_risk_checks_off_no_authorization_carries_a_risk_verdict(api, server):
    """The server of these tests runs with RISK_CHECKS=off: no rule ever runs, so no
    reply claims a decision; a declined one never expires, an approved one does."""
    account = await api.open_account(limit_minor=100_000)
    approved = await api.authorize(account.account_id, 60_000)
    declined = await api.authorize(account.account_id, 60_000)
    assert (approved.status, declined.decline_reason) == (PENDING, checkout_pb2.DECLINE_REASON_INSUFFICIENT_LIMIT)
    for reply in (approved, declined):
        assert not reply.HasField("risk")
        assert await api.authorization(reply.authorization_id) == reply
    assert approved.HasField("expires_at") and not declined.HasField("expires_at")


async def test_concurrent_captures_and_voids_on_one_account_keep_the_totals(api, server):
    account = await api.open_account(limit_minor=1_000_000)
    holds = await asyncio.gather(*(api.authorize(account.account_id, 20_000) for _ in range(40)))
    assert all(h.status == PENDING for h in holds)
    outcomes = await asyncio.gather(*(
        api.capture(h.authorization_id, 15_000) if i % 2 else api.void(h.authorization_id)
        for i, h in enumerate(holds)))
    captured = sum(o.captured_minor for o in outcomes)
    after = await api.account(account.account_id)
    assert (after.held_minor, after.outstanding_principal_minor) == (0, captured) == (0, 20 * 15_000)


async def snapshot(database_url: str, account_id: str) -> tuple:
    conn = await asyncpg.connect(database_url)
    try:
        return (
            await conn.fetchval("SELECT count(*) FROM authorizations"),
            await conn.fetchval("SELECT count(*) FROM idempotency_records"),
            await conn.fetchval("SELECT count(*) FROM loans"),
            await conn.fetchval("SELECT count(*) FROM journal_entries"),
            tuple(one(await conn.fetchrow("SELECT held_minor, outstanding_principal_minor, credit_limit_minor "
                                          "FROM accounts WHERE account_id = $1", uuid.UUID(account_id)))),
        )
    finally:
        await conn.close()


def authorize_request(account: str, **overrides) -> checkout_pb2.AuthorizeRequest:
    fields: dict[str, Any] = dict(account_id=account, merchant_id="merchant-1", order_id="order-" + key(),
                                  amount_minor=10_000, term_months=3, idempotency_key=key())
    fields.update(overrides)
    return checkout_pb2.AuthorizeRequest(**fields)


@pytest.mark.parametrize("overrides, field", [
    ({"amount_minor": 0}, "amount_minor"),
    ({"amount_minor": -100}, "amount_minor"),
    ({"amount_minor": 2**63 - 1}, "amount_minor"),
    ({"term_months": 5}, "term_months"),
    ({"term_months": 0}, "term_months"),
    ({"method": 7}, "method"),
    ({"idempotency_key": ""}, "idempotency_key"),
    ({"idempotency_key": "x" * 129}, "idempotency_key"),
    ({"merchant_id": ""}, "merchant_id"),
    ({"order_id": "has space"}, "order_id"),
    ({"account_id": "not-a-uuid"}, "account_id"),
    ({"risk_context": checkout_pb2.RiskContext(device_id="dev\x00ice")}, "risk_context.device_id"),
    ({"risk_context": checkout_pb2.RiskContext(ip_address="999.1.1.1")}, "risk_context.ip_address"),
    ({"risk_context": checkout_pb2.RiskContext(user_agent="u" * 513)}, "risk_context.user_agent"),
])
async def test_bad_authorize_input_names_the_field_and_writes_nothing(api, server, overrides, field):
    account = await api.open_account(limit_minor=100_000)
    before = await snapshot(server.database_url, account.account_id)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await api.checkout.Authorize(authorize_request(account.account_id, **overrides), timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(error.value)
    assert field in (error.value.details() or "")
    assert await snapshot(server.database_url, account.account_id) == before


@pytest.mark.parametrize("wire_amount", [2**64 - 1, 2**63, 2**63 + 10**11])
async def test_amounts_beyond_int64_on_the_wire_are_refused(api, server, wire_amount):
    """A varint above int64's range arrives as a negative int64; it must be refused,
    never read as a huge or negative hold."""
    account = await api.open_account(limit_minor=100_000)
    before = await snapshot(server.database_url, account.account_id)
    payload = authorize_request(account.account_id).SerializeToString()
    value, varint = wire_amount, bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        varint.append(byte | (0x80 if value else 0))
        if not value:
            break
    payload += bytes([4 << 3]) + bytes(varint)  # field 4 (amount_minor); the last value wins
    raw = api.channel.unary_unary("/credit.v1.CheckoutService/Authorize",
                                  request_serializer=lambda b: b,
                                  response_deserializer=checkout_pb2.Authorization.FromString)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await raw(payload, timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error.value) == ["amount_minor"]
    assert await snapshot(server.database_url, account.account_id) == before


async def test_unknown_ids_are_not_found_naming_the_field(api, server):
    unknown = str(uuid.uuid4())
    cases = [
        (api.lines.GetAccount(credit_line_pb2.GetAccountRequest(account_id=unknown)), "account_id"),
        (api.checkout.Authorize(authorize_request(unknown)), "account_id"),
        (api.checkout.Capture(checkout_pb2.CaptureRequest(authorization_id=unknown, idempotency_key=key())),
         "authorization_id"),
        (api.checkout.Void(checkout_pb2.VoidRequest(authorization_id=unknown, idempotency_key=key())),
         "authorization_id"),
        (api.checkout.GetAuthorization(checkout_pb2.GetAuthorizationRequest(authorization_id=unknown)),
         "authorization_id"),
        (api.checkout.QuoteInstallments(checkout_pb2.QuoteInstallmentsRequest(account_id=unknown,
                                                                              amount_minor=100)), "account_id"),
        (api.repayment.GetLoan(repayment_pb2.GetLoanRequest(loan_id=unknown)), "loan_id"),
        (api.lines.AdjustLimit(credit_line_pb2.AdjustLimitRequest(
            account_id=unknown, credit_limit_minor=1, reason="r", idempotency_key=key())), "account_id"),
    ]
    for call, field in cases:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call
        assert error.value.code() == grpc.StatusCode.NOT_FOUND, field
        assert (error.value.details() or "").startswith(field + ":")


async def test_bad_account_input_names_every_field(api):
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await api.lines.OpenAccount(credit_line_pb2.OpenAccountRequest(
            customer_id="", contact=credit_line_pb2.Contact(name="", email="nope", phone="12345",
                                                            locale="fr", time_zone="Mars/Olympus")))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error.value) == [
        "customer_id", "contact.name", "contact.email", "contact.phone", "contact.locale", "contact.time_zone",
        "idempotency_key"]


@pytest.mark.parametrize("time_zone", ["Asia", "America", "x" * 300, "../../etc/passwd", "Asia/Nowhere"])
async def test_a_time_zone_that_is_not_a_zone_is_refused_by_name(api, time_zone):
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await api.lines.OpenAccount(credit_line_pb2.OpenAccountRequest(
            customer_id="cust-" + key(), idempotency_key=key(),
            contact=credit_line_pb2.Contact(name="A", email="a@example.com", phone="+8613800138000",
                                            time_zone=time_zone)))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(error.value) == ["contact.time_zone"]


async def test_control_characters_in_text_are_refused_by_name(api):
    account = await api.open_account(limit_minor=100_000)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await api.lines.FreezeAccount(credit_line_pb2.FreezeAccountRequest(
            account_id=account.account_id, reason="fraud\x00", idempotency_key=key()))
    assert field_violations(error.value) == ["reason"]


async def test_negative_limits_are_refused(api):
    account = await api.open_account(limit_minor=100_000)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await api.lines.AdjustLimit(credit_line_pb2.AdjustLimitRequest(
            account_id=account.account_id, credit_limit_minor=-1, reason="r", idempotency_key=key()))
    assert field_violations(error.value) == ["credit_limit_minor"]
    assert (await api.account(account.account_id)).credit_limit_minor == 100_000
