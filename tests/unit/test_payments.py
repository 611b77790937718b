"""Payments in domain terms (server/domain/payments.py), their messages both ways
(server/payments/messages.py) and the simulator's behaviour table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from credit.v1 import payment_gateway_pb2 as pb
from server.domain.errors import InvariantViolation
from server.domain.payments import (
    FailureReason,
    PaymentEvent,
    PaymentKind,
    PaymentOrder,
    PaymentResult,
    PaymentStatus,
    UnknownOutcome,
)
from server.payment_sim import __doc__ as simulator_doc
from server.payment_sim.__main__ import parse_behaviours
from server.payment_sim.book import BEHAVIOURS, BY_LAST_DIGIT, Answer, Book
from server.payments.messages import (
    UnreadableReply,
    event_from_proto,
    event_to_proto,
    order_request,
    payment_from_proto,
    payment_to_proto,
)

AT = datetime(2027, 3, 1, 8, 30, tzinfo=UTC)
DEBIT = PaymentOrder(PaymentKind.DEBIT, "k-1", 10_000, "CNY", "attempt-1", instrument_token="card-0",
                     account_id="acct-1")
MERCHANT = PaymentOrder(PaymentKind.MERCHANT, "k-2", 99, "CNY", "settle-1", merchant_id="m-1")


def pending(order: PaymentOrder = DEBIT) -> PaymentResult:
    return PaymentResult("pay_1", order, PaymentStatus.PENDING, AT)


def test_a_pending_payment_completes_once():
    done = pending().completed(PaymentStatus.FAILED, AT + timedelta(seconds=2), FailureReason.INSUFFICIENT_FUNDS)
    assert (done.status, done.failure_reason, done.completed_at) == (
        PaymentStatus.FAILED, FailureReason.INSUFFICIENT_FUNDS, AT + timedelta(seconds=2))
    with pytest.raises(InvariantViolation):
        done.completed(PaymentStatus.SUCCEEDED, AT)
    with pytest.raises(InvariantViolation):
        pending().completed(PaymentStatus.PENDING, AT)


def test_a_result_keeps_its_status_reason_and_completion_together():
    with pytest.raises(InvariantViolation):
        PaymentResult("p", DEBIT, PaymentStatus.FAILED, AT, completed_at=AT)  # no reason
    with pytest.raises(InvariantViolation):
        PaymentResult("p", DEBIT, PaymentStatus.SUCCEEDED, AT, FailureReason.DECLINED, AT)
    with pytest.raises(InvariantViolation):
        PaymentResult("p", DEBIT, PaymentStatus.SUCCEEDED, AT)  # no completion time
    with pytest.raises(InvariantViolation):
        PaymentResult("p", DEBIT, PaymentStatus.UNKNOWN, AT)


def test_only_an_unknown_outcome_is_unknown_and_it_keeps_the_key():
    outcome = UnknownOutcome(DEBIT, "DEADLINE_EXCEEDED")
    assert outcome.status is PaymentStatus.UNKNOWN and outcome.idempotency_key == "k-1"


def test_an_event_reports_a_final_result_only():
    with pytest.raises(InvariantViolation):
        PaymentEvent.of(1, pending())
    done = pending(MERCHANT).completed(PaymentStatus.SUCCEEDED, AT)
    event = PaymentEvent.of(7, done)
    assert (event.sequence, event.payment_id, event.idempotency_key, event.kind, event.amount_minor,
            event.merchant_id, event.occurred_at) == (7, "pay_1", "k-2", PaymentKind.MERCHANT, 99, "m-1", AT)


@pytest.mark.parametrize("payment", [
    pending(),
    pending().completed(PaymentStatus.SUCCEEDED, AT + timedelta(milliseconds=1500)),
    pending(MERCHANT).completed(PaymentStatus.FAILED, AT, FailureReason.MERCHANT_INVALID),
    *[pending(PaymentOrder(PaymentKind.PAYOUT, "k", 1, "CNY", "r", instrument_token="w", account_id="a"))
      .completed(PaymentStatus.FAILED, AT, reason) for reason in FailureReason],
])
def test_a_payment_reads_back_as_it_was_written(payment):
    assert payment_from_proto(payment_to_proto(payment)) == payment
    if payment.completed_at is not None:
        event = PaymentEvent.of(3, payment)
        assert event_from_proto(event_to_proto(event)) == event


def test_every_enum_value_of_the_contract_has_a_domain_name():
    assert {name.removeprefix("PAYMENT_KIND_") for name in pb.PaymentKind.keys()} - {"UNSPECIFIED"} == {
        kind.value for kind in PaymentKind}
    assert {name.removeprefix("PAYMENT_STATUS_") for name in pb.PaymentStatus.keys()} - {"UNSPECIFIED"} == {
        status.value for status in PaymentStatus} - {"UNKNOWN"}
    assert {name.removeprefix("PAYMENT_FAILURE_REASON_") for name in pb.PaymentFailureReason.keys()} - {
        "UNSPECIFIED"} == {reason.value for reason in FailureReason}


def test_a_reply_outside_the_contract_is_unreadable():
    message = payment_to_proto(pending())
    message.kind = 42  # type: ignore[assignment]  # a number this client does not know
    with pytest.raises(UnreadableReply):
        payment_from_proto(message)
    failed_without_reason = payment_to_proto(pending().completed(PaymentStatus.FAILED, AT, FailureReason.DECLINED))
    failed_without_reason.failure_reason = pb.PAYMENT_FAILURE_REASON_UNSPECIFIED
    with pytest.raises(UnreadableReply):
        payment_from_proto(failed_without_reason)


def test_each_order_becomes_the_request_of_its_kind():
    debit = order_request(DEBIT)
    assert isinstance(debit, pb.DebitRequest)
    assert (debit.instrument_token, debit.account_id, debit.amount_minor, debit.currency) == (
        "card-0", "acct-1", 10_000, "CNY")
    merchant = order_request(MERCHANT)
    assert isinstance(merchant, pb.PayMerchantRequest) and merchant.merchant_id == "m-1"
    payout = order_request(PaymentOrder(PaymentKind.PAYOUT, "k", 1, "CNY", "r", instrument_token="w", account_id="a"))
    assert isinstance(payout, pb.PayoutRequest)


def test_every_digit_has_a_behaviour_and_the_docstring_lists_it():
    assert sorted(BY_LAST_DIGIT) == [str(d) for d in range(10)]
    assert set(BY_LAST_DIGIT.values()) | {"declined"} == set(BEHAVIOURS)
    assert simulator_doc is not None
    for digit, name in BY_LAST_DIGIT.items():
        assert name in simulator_doc and digit in simulator_doc
    # The hard cases are there: no answer, a late answer, a repeated result.
    answers = {b.answer for b in BEHAVIOURS.values()}
    assert answers == set(Answer) and any(b.twice for b in BEHAVIOURS.values())


def test_the_map_goes_ahead_of_the_last_digit_and_a_token_without_a_digit_succeeds():
    book = Book({"card-0": "insufficient_funds"})
    assert book.behaviour(DEBIT).name == "insufficient_funds"
    assert book.behaviour(PaymentOrder(PaymentKind.DEBIT, "k", 1, "CNY", "r", instrument_token="card-x",
                                       account_id="a")).name == "succeeds"
    assert book.behaviour(PaymentOrder(PaymentKind.MERCHANT, "k", 1, "CNY", "r", merchant_id="m-5")).name == (
        "answers_late")
    with pytest.raises(ValueError, match="bogus"):
        Book({"t": "bogus"})


def test_behaviour_pairs_are_parsed_and_a_bad_one_is_named():
    assert parse_behaviours(" card-1=times_out,,m-2=declined ") == {"card-1": "times_out", "m-2": "declined"}
    with pytest.raises(SystemExit, match="card-1=late"):
        parse_behaviours("card-1=late")
    with pytest.raises(SystemExit, match="=declined"):
        parse_behaviours("=declined")
