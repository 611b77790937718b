"""The typed client of PaymentGatewayService (protos/credit/v1/payment_gateway.proto),
for the server and the bot: calls in, domain values out.

What a payment call can end in, and what the caller must do:

    PaymentResult SUCCEEDED / FAILED    the processor's final answer
    PaymentResult PENDING               taken; the result comes on `watch` (or `get` later)
    UnknownOutcome                      no answer (DEADLINE_EXCEEDED, UNAVAILABLE, ...): the
                                        money may have moved. Never treat it as failed:
                                        `get(idempotency_key=...)` later, or wait for
                                        the payment's event; a retry with the same key
                                        and order is safe and returns the same payment
    PaymentRejected (raised)            the gateway refused the request itself (bad field,
                                        key reused for a different order): no payment was
                                        made by this call; a bug on our side to fix

Reads (`get`, `list_payments`, `watch`) raise GatewayUnavailable when the gateway
cannot answer; nothing was changed, so they may be retried.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from credit.v1 import payment_gateway_pb2 as pb
from credit.v1 import payment_gateway_pb2_grpc
from server.domain.errors import FieldViolation
from server.domain.money import CURRENCY
from server.domain.payments import PaymentEvent, PaymentKind, PaymentOrder, PaymentResult, PaymentStatus, UnknownOutcome
from server.payments.messages import (
    event_from_proto,
    kind_to_proto,
    order_request,
    payment_from_proto,
    status_to_proto,
)

# Statuses that say the gateway refused the request before taking it: no payment came
# of this call. Any other failure of a payment call leaves its outcome unknown.
REJECTED_CODES = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNIMPLEMENTED,
})
DEFAULT_TIMEOUT_S = 10.0


class GatewayError(Exception):
    """A call to the gateway that failed; `code` is the gRPC status."""

    def __init__(self, code: grpc.StatusCode, message: str,
                 violations: tuple[FieldViolation, ...] = ()) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.violations = violations


class PaymentRejected(GatewayError):
    """The gateway refused a payment request (INVALID_ARGUMENT naming its fields in
    `violations`, ALREADY_EXISTS for a reused key, ...): no payment came of it."""


class GatewayUnavailable(GatewayError):
    """A read that got no answer; retry it later."""


@dataclass(frozen=True)
class PaymentPage:
    payments: tuple[PaymentResult, ...]
    # Pass back for the next page; empty on the last.
    next_page_token: str


class PaymentGateway:
    """PaymentGatewayService over `channel`. Every call has a deadline: `timeout_s`, or
    the one given to the call."""

    def __init__(self, channel: grpc.aio.Channel, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self._stub = payment_gateway_pb2_grpc.PaymentGatewayServiceStub(channel)
        self._timeout_s = timeout_s

    async def debit(self, *, idempotency_key: str, instrument_token: str, amount_minor: int, reference: str,
                    account_id: str, currency: str = CURRENCY,
                    timeout_s: float | None = None) -> PaymentResult | UnknownOutcome:
        """Take `amount_minor` from the customer's instrument."""
        return await self.submit(PaymentOrder(PaymentKind.DEBIT, idempotency_key, amount_minor, currency, reference,
                                              instrument_token=instrument_token, account_id=account_id), timeout_s)

    async def payout(self, *, idempotency_key: str, instrument_token: str, amount_minor: int, reference: str,
                     account_id: str, currency: str = CURRENCY,
                     timeout_s: float | None = None) -> PaymentResult | UnknownOutcome:
        """Pay `amount_minor` to the customer's instrument."""
        return await self.submit(PaymentOrder(PaymentKind.PAYOUT, idempotency_key, amount_minor, currency, reference,
                                              instrument_token=instrument_token, account_id=account_id), timeout_s)

    async def pay_merchant(self, *, idempotency_key: str, merchant_id: str, amount_minor: int, reference: str,
                           currency: str = CURRENCY, timeout_s: float | None = None) -> PaymentResult | UnknownOutcome:
        """Pay `amount_minor` to the merchant."""
        return await self.submit(PaymentOrder(PaymentKind.MERCHANT, idempotency_key, amount_minor, currency,
                                              reference, merchant_id=merchant_id), timeout_s)

    async def submit(self, order: PaymentOrder, timeout_s: float | None = None) -> PaymentResult | UnknownOutcome:
        """Ask for `order`: the payment as the gateway answers it, or UnknownOutcome
        when no answer came; PaymentRejected when the gateway refused the request."""
        request = order_request(order)
        timeout = self._deadline(timeout_s)
        try:
            if isinstance(request, pb.DebitRequest):
                reply = await self._stub.Debit(request, timeout=timeout)
            elif isinstance(request, pb.PayoutRequest):
                reply = await self._stub.Payout(request, timeout=timeout)
            else:
                reply = await self._stub.PayMerchant(request, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            if error.code() in REJECTED_CODES:
                raise _error(PaymentRejected, error) from error
            return UnknownOutcome(order, error.code().name)
        return payment_from_proto(reply)

    async def get(self, *, payment_id: str = "", idempotency_key: str = "",
                  timeout_s: float | None = None) -> PaymentResult | None:
        """The payment with this id, or made with this key (give one); None when the
        gateway has none: a payment whose outcome was unknown was then never taken,
        and may be asked for again with the same key."""
        if bool(payment_id) == bool(idempotency_key):
            raise ValueError("give exactly one of payment_id and idempotency_key")
        request = (pb.GetPaymentRequest(payment_id=payment_id) if payment_id
                   else pb.GetPaymentRequest(idempotency_key=idempotency_key))
        try:
            reply = await self._stub.GetPayment(request, timeout=self._deadline(timeout_s))
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise _read_error(error) from error
        return payment_from_proto(reply)

    async def list_payments(self, *, page_size: int = 0, page_token: str = "", status: PaymentStatus | None = None,
                            kind: PaymentKind | None = None, timeout_s: float | None = None) -> PaymentPage:
        """One page of the gateway's payments, oldest first, optionally of one status or kind."""
        request = pb.ListPaymentsRequest(page_size=page_size, page_token=page_token,
                                         status=status_to_proto(status), kind=kind_to_proto(kind))
        try:
            reply = await self._stub.ListPayments(request, timeout=self._deadline(timeout_s))
        except grpc.aio.AioRpcError as error:
            raise _read_error(error) from error
        return PaymentPage(tuple(payment_from_proto(p) for p in reply.payments), reply.next_page_token)

    async def watch(self, after_sequence: int = 0) -> AsyncIterator[PaymentEvent]:
        """Final results with a sequence above `after_sequence`, as they come, until the
        caller stops iterating. At least once: dedupe by payment id, and resume from the
        last sequence handled when the stream ends with GatewayUnavailable."""
        call = self._stub.WatchPayments(pb.WatchPaymentsRequest(after_sequence=after_sequence))
        try:
            async for message in call:
                yield event_from_proto(message)
        except grpc.aio.AioRpcError as error:
            raise _read_error(error) from error
        finally:
            call.cancel()

    def _deadline(self, timeout_s: float | None) -> float:
        return self._timeout_s if timeout_s is None else timeout_s


def _read_error(error: grpc.aio.AioRpcError) -> GatewayError:
    return _error(GatewayError if error.code() in REJECTED_CODES else GatewayUnavailable, error)


def _error(kind: type[GatewayError], error: grpc.aio.AioRpcError) -> GatewayError:
    """`kind` for `error`, with the fields its google.rpc.BadRequest names."""
    violations: list[FieldViolation] = []
    status = rpc_status.from_call(error)  # type: ignore[arg-type]  # an aio error is a call too
    if status is not None:
        for detail in status.details:
            bad_request = error_details_pb2.BadRequest()
            if detail.Unpack(bad_request):
                violations += [FieldViolation(v.field, v.description) for v in bad_request.field_violations]
    return kind(error.code(), error.details() or "", tuple(violations))
