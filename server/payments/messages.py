"""Between credit.v1 payment-gateway messages and the domain's payments, both ways:
the client reads what the simulator writes through the same functions. Proto enum
names are the domain's names behind the enum's prefix (PAYMENT_KIND_ + DEBIT)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

from google.protobuf.timestamp_pb2 import Timestamp

from credit.v1 import payment_gateway_pb2 as pb
from server.domain.errors import InvariantViolation
from server.domain.payments import (
    FailureReason,
    PaymentEvent,
    PaymentKind,
    PaymentOrder,
    PaymentResult,
    PaymentStatus,
)
from server.services.convert import from_proto_enum, timestamp, to_proto_enum

KINDS = from_proto_enum(pb.PaymentKind, "PAYMENT_KIND_", PaymentKind)
STATUSES = from_proto_enum(pb.PaymentStatus, "PAYMENT_STATUS_", PaymentStatus)
REASONS = cast(dict[int, FailureReason],
               from_proto_enum(pb.PaymentFailureReason, "PAYMENT_FAILURE_REASON_", FailureReason))

OrderRequest = pb.DebitRequest | pb.PayoutRequest | pb.PayMerchantRequest


def kind_to_proto(kind: PaymentKind | None) -> pb.PaymentKind.ValueType:
    return to_proto_enum(pb.PaymentKind, "PAYMENT_KIND_", kind)


def status_to_proto(status: PaymentStatus | None) -> pb.PaymentStatus.ValueType:
    return to_proto_enum(pb.PaymentStatus, "PAYMENT_STATUS_", status)


def reason_to_proto(reason: FailureReason | None) -> pb.PaymentFailureReason.ValueType:
    return to_proto_enum(pb.PaymentFailureReason, "PAYMENT_FAILURE_REASON_", reason)


def order_request(order: PaymentOrder) -> OrderRequest:
    """The request that asks the gateway for `order`."""
    if order.kind is PaymentKind.MERCHANT:
        return pb.PayMerchantRequest(idempotency_key=order.idempotency_key, merchant_id=order.merchant_id,
                                     amount_minor=order.amount_minor, currency=order.currency,
                                     reference=order.reference)
    request_type = pb.DebitRequest if order.kind is PaymentKind.DEBIT else pb.PayoutRequest
    return request_type(idempotency_key=order.idempotency_key, instrument_token=order.instrument_token,
                        amount_minor=order.amount_minor, currency=order.currency, reference=order.reference,
                        account_id=order.account_id)


def payment_to_proto(payment: PaymentResult) -> pb.Payment:
    order = payment.order
    return pb.Payment(
        payment_id=payment.payment_id, idempotency_key=order.idempotency_key, kind=kind_to_proto(order.kind),
        status=status_to_proto(payment.status),
        failure_reason=reason_to_proto(payment.failure_reason),
        amount_minor=order.amount_minor, currency=order.currency, reference=order.reference,
        instrument_token=order.instrument_token, account_id=order.account_id, merchant_id=order.merchant_id,
        created_at=timestamp(payment.created_at), completed_at=timestamp(payment.completed_at))


def payment_from_proto(message: pb.Payment) -> PaymentResult:
    try:
        return _payment(message)
    except InvariantViolation as error:
        raise UnreadableReply(str(error)) from None


def _payment(message: pb.Payment) -> PaymentResult:
    return PaymentResult(
        payment_id=message.payment_id,
        order=PaymentOrder(kind=_member(KINDS, message.kind, "kind"), idempotency_key=message.idempotency_key,
                           amount_minor=message.amount_minor, currency=message.currency,
                           reference=message.reference, instrument_token=message.instrument_token,
                           account_id=message.account_id, merchant_id=message.merchant_id),
        status=_member(STATUSES, message.status, "status"),
        created_at=_time(message.created_at),
        failure_reason=REASONS.get(message.failure_reason),
        completed_at=_time(message.completed_at) if message.HasField("completed_at") else None)


def event_to_proto(event: PaymentEvent) -> pb.PaymentEvent:
    return pb.PaymentEvent(
        sequence=event.sequence, payment_id=event.payment_id, idempotency_key=event.idempotency_key,
        reference=event.reference, kind=kind_to_proto(event.kind), amount_minor=event.amount_minor,
        currency=event.currency, status=status_to_proto(event.status),
        failure_reason=reason_to_proto(event.failure_reason),
        occurred_at=timestamp(event.occurred_at), account_id=event.account_id, merchant_id=event.merchant_id)


def event_from_proto(message: pb.PaymentEvent) -> PaymentEvent:
    return PaymentEvent(
        sequence=message.sequence, payment_id=message.payment_id, idempotency_key=message.idempotency_key,
        reference=message.reference, kind=_member(KINDS, message.kind, "kind"), amount_minor=message.amount_minor,
        currency=message.currency, status=_member(STATUSES, message.status, "status"),
        failure_reason=REASONS.get(message.failure_reason), occurred_at=_time(message.occurred_at),
        account_id=message.account_id, merchant_id=message.merchant_id)


class UnreadableReply(ValueError):
    """The gateway answered with something the seam does not allow (an unknown enum
    number, a missing status): the gateway's bug, or a newer contract than ours."""


def _member(mapping: dict, number: int, field: str):
    value = mapping.get(number)
    if value is None:
        raise UnreadableReply(f"{field}: the gateway sent {number}, which this client does not know")
    return value


def _time(value: Timestamp) -> datetime:
    return value.ToDatetime(tzinfo=UTC)
