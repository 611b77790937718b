"""The payment-gateway simulator over a real gRPC channel, through the typed client
(server/payments/gateway.py) and the raw stub: each behaviour by the token's last digit,
idempotency, the timeout and late cases, the at-least-once stream and its cursor,
paging, and what the client makes of calls that get no answer."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import grpc
import pytest

from credit.v1 import payment_gateway_pb2 as pb
from credit.v1 import payment_gateway_pb2_grpc
from server.domain.payments import (
    FailureReason,
    PaymentEvent,
    PaymentKind,
    PaymentResult,
    PaymentStatus,
    UnknownOutcome,
)
from server.payment_sim.book import Book
from server.payment_sim.service import serve
from server.payments.gateway import GatewayUnavailable, PaymentGateway, PaymentRejected
from tests.e2e.conftest import free_port
from tests.support import field_violations, key

DELAY_S = 0.4


@pytest.fixture
async def book():
    book = Book({"tok-special": "declined"}, delay_s=DELAY_S)
    yield book
    book.close()


@pytest.fixture
async def channel(book):
    server, port = await serve("127.0.0.1:0", book)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield channel
    await server.stop(None)


@pytest.fixture
def gateway(channel) -> PaymentGateway:
    return PaymentGateway(channel, timeout_s=5)


@pytest.fixture
def stub(channel) -> payment_gateway_pb2_grpc.PaymentGatewayServiceStub:
    return payment_gateway_pb2_grpc.PaymentGatewayServiceStub(channel)


async def debit(gateway: PaymentGateway, token: str, amount_minor: int = 12_345, *, idempotency_key: str = "",
                timeout_s: float | None = None) -> PaymentResult | UnknownOutcome:
    return await gateway.debit(idempotency_key=idempotency_key or key(), instrument_token=token,
                               amount_minor=amount_minor, reference="attempt-1", account_id="acct-1",
                               timeout_s=timeout_s)


async def events(gateway: PaymentGateway, after_sequence: int, count: int, timeout_s: float = 5) -> list[PaymentEvent]:
    """The next `count` events after the cursor, waiting at most `timeout_s` for them."""

    async def take() -> list[PaymentEvent]:
        taken: list[PaymentEvent] = []
        async for event in gateway.watch(after_sequence):
            taken.append(event)
            if len(taken) == count:
                break
        return taken

    return await asyncio.wait_for(take(), timeout_s)


async def result_of(gateway: PaymentGateway, idempotency_key: str) -> PaymentEvent:
    """The first event of the payment made with the key."""
    async with asyncio.timeout(5):
        async for event in gateway.watch(0):
            if event.idempotency_key == idempotency_key:
                return event
    raise AssertionError("the stream ended")


# The call's answer, then the final result, for each last digit of the instrument token.
TABLE = [
    ("0", PaymentStatus.SUCCEEDED, PaymentStatus.SUCCEEDED, None),
    ("1", PaymentStatus.SUCCEEDED, PaymentStatus.SUCCEEDED, None),
    ("9", PaymentStatus.SUCCEEDED, PaymentStatus.SUCCEEDED, None),
    ("2", PaymentStatus.FAILED, PaymentStatus.FAILED, FailureReason.INSUFFICIENT_FUNDS),
    ("3", PaymentStatus.FAILED, PaymentStatus.FAILED, FailureReason.INSTRUMENT_INVALID),
    ("4", PaymentStatus.UNKNOWN, PaymentStatus.SUCCEEDED, None),
    ("5", PaymentStatus.PENDING, PaymentStatus.SUCCEEDED, None),
    ("6", PaymentStatus.SUCCEEDED, PaymentStatus.SUCCEEDED, None),
    ("7", PaymentStatus.PENDING, PaymentStatus.FAILED, FailureReason.INSUFFICIENT_FUNDS),
    ("8", PaymentStatus.UNKNOWN, PaymentStatus.FAILED, FailureReason.INSUFFICIENT_FUNDS),
]


@pytest.mark.parametrize(("digit", "answered", "final", "reason"), TABLE)
async def test_the_last_digit_of_the_token_picks_the_behaviour(gateway, digit, answered, final, reason):
    idempotency_key = key()
    started = time.monotonic()
    result = await debit(gateway, f"card-00{digit}", idempotency_key=idempotency_key, timeout_s=0.2)
    assert result.status is answered
    if isinstance(result, PaymentResult):
        assert result.kind is PaymentKind.DEBIT and result.amount_minor == 12_345
        assert result.order.instrument_token == f"card-00{digit}" and result.order.account_id == "acct-1"
        if answered is not PaymentStatus.PENDING:
            assert result.failure_reason is reason and result.completed_at is not None
    else:
        assert result.cause == "DEADLINE_EXCEEDED" and result.idempotency_key == idempotency_key

    event = await result_of(gateway, idempotency_key)
    assert (event.status, event.failure_reason) == (final, reason)
    assert (event.kind, event.amount_minor, event.currency, event.reference) == (PaymentKind.DEBIT, 12_345, "CNY",
                                                                                 "attempt-1")
    if answered in (PaymentStatus.PENDING, PaymentStatus.UNKNOWN):
        assert time.monotonic() - started >= DELAY_S * 0.9, "a late result came at once"
    found = await gateway.get(idempotency_key=idempotency_key)
    assert found is not None and found.payment_id == event.payment_id
    assert (found.status, found.failure_reason) == (final, reason)


async def test_an_instrument_fault_is_a_merchant_fault_when_paying_a_merchant(gateway):
    paid = await gateway.pay_merchant(idempotency_key=key(), merchant_id="m-1000", amount_minor=99, reference="s-1")
    refused = await gateway.pay_merchant(idempotency_key=key(), merchant_id="m-1003", amount_minor=99, reference="s-2")
    assert isinstance(paid, PaymentResult) and paid.status is PaymentStatus.SUCCEEDED
    assert paid.kind is PaymentKind.MERCHANT and paid.order.merchant_id == "m-1000"
    assert isinstance(refused, PaymentResult) and refused.failure_reason is FailureReason.MERCHANT_INVALID


async def test_the_map_wins_over_the_last_digit(gateway):
    result = await debit(gateway, "tok-special")
    assert isinstance(result, PaymentResult)
    assert (result.status, result.failure_reason) == (PaymentStatus.FAILED, FailureReason.DECLINED)


async def test_a_payout_is_its_own_kind(gateway):
    result = await gateway.payout(idempotency_key=key(), instrument_token="wallet-1", amount_minor=500,
                                  reference="payout-1", account_id="acct-9")
    assert isinstance(result, PaymentResult) and result.kind is PaymentKind.PAYOUT
    assert result.status is PaymentStatus.SUCCEEDED


async def test_the_same_key_and_request_is_the_same_payment_and_moves_money_once(gateway):
    idempotency_key = key()
    first = await debit(gateway, "card-0", idempotency_key=idempotency_key)
    again = await debit(gateway, "card-0", idempotency_key=idempotency_key)
    assert isinstance(first, PaymentResult) and isinstance(again, PaymentResult)
    assert again == first
    page = await gateway.list_payments()
    assert [p.payment_id for p in page.payments] == [first.payment_id]
    assert [e.payment_id for e in await events(gateway, 0, 1)] == [first.payment_id]


async def test_a_key_reused_for_a_different_request_is_refused(gateway, stub):
    idempotency_key = key()
    await debit(gateway, "card-0", 100, idempotency_key=idempotency_key)
    with pytest.raises(PaymentRejected) as refused:
        await debit(gateway, "card-0", 101, idempotency_key=idempotency_key)
    assert refused.value.code == grpc.StatusCode.ALREADY_EXISTS
    # One key names one movement of money, whatever the method.
    with pytest.raises(grpc.aio.AioRpcError) as raw:
        await stub.Payout(pb.PayoutRequest(idempotency_key=idempotency_key, instrument_token="card-0",
                                           amount_minor=100, currency="CNY", reference="attempt-1",
                                           account_id="acct-1"), timeout=5)
    assert raw.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "idempotency_key" in (raw.value.details() or "")
    assert len((await gateway.list_payments()).payments) == 1


async def test_a_call_that_times_out_is_taken_all_the_same(stub, gateway):
    """The hard case: the caller's deadline passes, the payment succeeds a moment later."""
    idempotency_key = key()
    request = pb.DebitRequest(idempotency_key=idempotency_key, instrument_token="card-4", amount_minor=7_000,
                              currency="CNY", reference="attempt-7", account_id="acct-7")
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as timed_out:
        await stub.Debit(request, timeout=0.2)
    assert timed_out.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < DELAY_S, "the deadline passed after the result"
    taken = await stub.GetPayment(pb.GetPaymentRequest(idempotency_key=idempotency_key), timeout=5)
    assert taken.status == pb.PAYMENT_STATUS_PENDING and not taken.HasField("completed_at")

    event = await result_of(gateway, idempotency_key)
    assert event.status is PaymentStatus.SUCCEEDED and event.payment_id == taken.payment_id
    done = await stub.GetPayment(pb.GetPaymentRequest(payment_id=taken.payment_id), timeout=5)
    assert done.status == pb.PAYMENT_STATUS_SUCCEEDED and done.HasField("completed_at")
    # Asking again with the same key answers at once, with the payment as it stands.
    again = await stub.Debit(request, timeout=1)
    assert (again.payment_id, again.status) == (taken.payment_id, pb.PAYMENT_STATUS_SUCCEEDED)


async def test_a_late_answer_comes_only_on_the_stream(gateway):
    idempotency_key = key()
    answered = await debit(gateway, "card-5", idempotency_key=idempotency_key)
    assert isinstance(answered, PaymentResult) and answered.status is PaymentStatus.PENDING
    assert answered.completed_at is None and answered.failure_reason is None
    still = await gateway.get(payment_id=answered.payment_id)
    assert still is not None and still.status is PaymentStatus.PENDING
    [event] = await events(gateway, 0, 1)
    assert (event.payment_id, event.status) == (answered.payment_id, PaymentStatus.SUCCEEDED)
    assert event.occurred_at - answered.created_at >= timedelta(seconds=DELAY_S * 0.9)


async def test_answers_twice_delivers_the_result_twice_the_second_late(gateway):
    idempotency_key = key()
    paid = await debit(gateway, "card-6", idempotency_key=idempotency_key)
    assert isinstance(paid, PaymentResult) and paid.status is PaymentStatus.SUCCEEDED
    stream = gateway.watch(0)
    first = await asyncio.wait_for(anext(stream), 5)
    arrived = time.monotonic()
    second = await asyncio.wait_for(anext(stream), 5)
    assert time.monotonic() - arrived >= DELAY_S * 0.5, "the duplicate was not late"
    await stream.aclose()
    assert first.payment_id == second.payment_id == paid.payment_id
    assert (first.sequence, second.sequence) == (1, 2)
    assert first.status == second.status == PaymentStatus.SUCCEEDED
    assert first.occurred_at == second.occurred_at
    # A consumer that dedupes by payment id books it once.
    assert len({e.payment_id for e in (first, second)}) == 1


async def test_the_stream_resumes_after_a_cursor_and_carries_new_results_live(gateway):
    paid = [await debit(gateway, f"card-{n}0") for n in range(3)]
    everything = await events(gateway, 0, 3)
    assert [e.sequence for e in everything] == [1, 2, 3]
    assert [e.payment_id for e in everything] == [p.payment_id for p in paid if isinstance(p, PaymentResult)]

    later = asyncio.create_task(events(gateway, 2, 2))
    await asyncio.sleep(0.1)
    fourth = await debit(gateway, "card-40")
    resumed = await later
    assert [e.sequence for e in resumed] == [3, 4]
    assert isinstance(fourth, PaymentResult) and resumed[1].payment_id == fourth.payment_id


async def test_a_cursor_the_log_cannot_serve_is_refused(stub):
    with pytest.raises(grpc.aio.AioRpcError) as beyond:
        async for _ in stub.WatchPayments(pb.WatchPaymentsRequest(after_sequence=5), timeout=5):
            pass
    assert beyond.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "after_sequence" in (beyond.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as negative:
        async for _ in stub.WatchPayments(pb.WatchPaymentsRequest(after_sequence=-1), timeout=5):
            pass
    assert negative.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(negative.value) == ["after_sequence"]


async def test_list_payments_pages_oldest_first_and_filters(gateway, stub):
    made = []
    for n in range(7):
        made.append(await debit(gateway, f"card-{n}{'2' if n % 3 == 0 else '0'}", 100 + n))
    merchant = await gateway.pay_merchant(idempotency_key=key(), merchant_id="m-7", amount_minor=50, reference="s")
    ids = [p.payment_id for p in made + [merchant] if isinstance(p, PaymentResult)]
    assert len(ids) == 8

    seen, token, pages = [], "", 0
    while True:
        page = await gateway.list_payments(page_size=3, page_token=token)
        seen += [p.payment_id for p in page.payments]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert (seen, pages) == (ids, 3)

    failed = await gateway.list_payments(status=PaymentStatus.FAILED)
    assert [p.amount_minor for p in failed.payments] == [100, 103, 106]
    assert all(p.failure_reason is FailureReason.INSUFFICIENT_FUNDS for p in failed.payments)
    merchants = await gateway.list_payments(kind=PaymentKind.MERCHANT)
    assert [p.payment_id for p in merchants.payments] == [merchant.payment_id]
    # The confirmed movements a reconciliation compares with the books.
    confirmed = await gateway.list_payments(status=PaymentStatus.SUCCEEDED, kind=PaymentKind.DEBIT)
    assert sum(p.amount_minor for p in confirmed.payments) == 101 + 102 + 104 + 105

    for request, field in ((pb.ListPaymentsRequest(page_token="nonsense"), "page_token"),
                           (pb.ListPaymentsRequest(page_size=101), "page_size"),
                           (pb.ListPaymentsRequest(status=99), "status")):  # type: ignore[arg-type]  # not in the enum
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ListPayments(request, timeout=5)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(refused.value) == [field]


async def test_bad_input_is_refused_naming_every_field(stub, gateway):
    with pytest.raises(grpc.aio.AioRpcError) as debit_refused:
        await stub.Debit(pb.DebitRequest(amount_minor=-5, currency="USD"), timeout=5)
    assert debit_refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(field_violations(debit_refused.value)) == [
        "account_id", "amount_minor", "currency", "idempotency_key", "instrument_token", "reference"]
    with pytest.raises(grpc.aio.AioRpcError) as merchant_refused:
        await stub.PayMerchant(pb.PayMerchantRequest(idempotency_key=key(), amount_minor=1, currency="CNY",
                                                     reference="r", merchant_id="has space"), timeout=5)
    assert field_violations(merchant_refused.value) == ["merchant_id"]
    with pytest.raises(grpc.aio.AioRpcError) as no_lookup:
        await stub.GetPayment(pb.GetPaymentRequest(), timeout=5)
    assert field_violations(no_lookup.value) == ["payment_id"]
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stub.GetPayment(pb.GetPaymentRequest(payment_id="pay_nothing"), timeout=5)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

    # The client raises the refusal with the fields named, and nothing was taken.
    with pytest.raises(PaymentRejected) as rejected:
        await gateway.debit(idempotency_key=key(), instrument_token="card-0", amount_minor=0, reference="r",
                            account_id="a")
    assert rejected.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in rejected.value.violations] == ["amount_minor"]
    assert (await gateway.list_payments()).payments == ()


async def test_a_call_without_an_answer_is_unknown_never_failed(gateway):
    timed_out = await debit(gateway, "card-4", timeout_s=0.1)
    assert isinstance(timed_out, UnknownOutcome)
    assert (timed_out.status, timed_out.cause) == (PaymentStatus.UNKNOWN, "DEADLINE_EXCEEDED")
    # What it was about is kept, so the caller can look it up by its key.
    assert timed_out.order.instrument_token == "card-4" and timed_out.order.amount_minor == 12_345
    looked_up = await gateway.get(idempotency_key=timed_out.idempotency_key)
    assert looked_up is not None and looked_up.status in (PaymentStatus.PENDING, PaymentStatus.SUCCEEDED)
    assert await gateway.get(idempotency_key=key()) is None


async def test_an_unreachable_gateway_is_unknown_for_payments_and_unavailable_for_reads():
    async with grpc.aio.insecure_channel(f"127.0.0.1:{free_port()}") as channel:
        gateway = PaymentGateway(channel, timeout_s=1)
        for call in (debit(gateway, "card-0"),
                     gateway.payout(idempotency_key=key(), instrument_token="w-0", amount_minor=1, reference="r",
                                    account_id="a"),
                     gateway.pay_merchant(idempotency_key=key(), merchant_id="m-0", amount_minor=1, reference="r")):
            outcome = await call
            assert isinstance(outcome, UnknownOutcome)
            assert outcome.cause in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
        with pytest.raises(GatewayUnavailable):
            await gateway.get(payment_id="pay_x")
        with pytest.raises(GatewayUnavailable):
            await gateway.list_payments()
        with pytest.raises(GatewayUnavailable):
            async for _ in gateway.watch(0):
                pass
