"""The simulator's PaymentGatewayService: validate, ask the book, convert; health and
reflection on, as on the credit server. Errors become statuses as on the credit server
(server/interceptors.py): INVALID_ARGUMENT with a google.rpc.BadRequest naming each
field, NOT_FOUND, ALREADY_EXISTS for a reused key, FAILED_PRECONDITION for a cursor
the log cannot serve."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from credit.v1 import payment_gateway_pb2 as pb
from credit.v1 import payment_gateway_pb2_grpc
from server.domain.errors import CreditError
from server.domain.money import CURRENCY
from server.domain.payments import PaymentKind, PaymentOrder
from server.interceptors import status_for
from server.paging import decode_position, encode_position
from server.payment_sim.book import Answer, Book
from server.payments.messages import KINDS, STATUSES, OrderRequest, event_to_proto, payment_to_proto
from server.services.fields import Fields

log = structlog.get_logger("payment_sim")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["PaymentGatewayService"].full_name
# How long a call that times out is held when its caller set no deadline.
MAX_HOLD_S = 30.0


class GatewayTimeout(CreditError):
    code = "DEADLINE_EXCEEDED"


def answering_errors(method: Callable[..., Awaitable]) -> Callable[..., Awaitable]:
    """A unary method whose CreditErrors end the call with their status."""

    @functools.wraps(method)
    async def answer(self, request, context: grpc.aio.ServicerContext):
        try:
            return await method(self, request, context)
        except CreditError as error:
            status = status_for(error)
            await context.abort(status.code, status.details, status.trailing_metadata)

    return answer


def order_from(kind: PaymentKind, request: OrderRequest) -> PaymentOrder:
    """The order a request asks for; INVALID_ARGUMENT naming every bad field."""
    fields = Fields()
    key = fields.idempotency_key(request.idempotency_key)
    amount_minor = fields.amount(request.amount_minor, "amount_minor")
    if request.currency != CURRENCY:
        fields.fail("currency", f"must be {CURRENCY}, got {request.currency[:16]!r}")
    reference = fields.identifier(request.reference, "reference")
    if isinstance(request, pb.PayMerchantRequest):
        merchant_id = fields.identifier(request.merchant_id, "merchant_id")
        fields.done()
        return PaymentOrder(kind, key, amount_minor, request.currency, reference, merchant_id=merchant_id)
    token = fields.identifier(request.instrument_token, "instrument_token")
    account_id = fields.identifier(request.account_id, "account_id")
    fields.done()
    return PaymentOrder(kind, key, amount_minor, request.currency, reference, instrument_token=token,
                        account_id=account_id)


class PaymentSimulator(payment_gateway_pb2_grpc.PaymentGatewayServiceServicer):
    def __init__(self, book: Book, *, max_hold_s: float = MAX_HOLD_S) -> None:
        self.book = book
        self._max_hold_s = max_hold_s

    @answering_errors
    async def Debit(self, request: pb.DebitRequest, context: grpc.aio.ServicerContext) -> pb.Payment:
        return await self._submit(order_from(PaymentKind.DEBIT, request), context)

    @answering_errors
    async def Payout(self, request: pb.PayoutRequest, context: grpc.aio.ServicerContext) -> pb.Payment:
        return await self._submit(order_from(PaymentKind.PAYOUT, request), context)

    @answering_errors
    async def PayMerchant(self, request: pb.PayMerchantRequest, context: grpc.aio.ServicerContext) -> pb.Payment:
        return await self._submit(order_from(PaymentKind.MERCHANT, request), context)

    @answering_errors
    async def GetPayment(self, request: pb.GetPaymentRequest, context: grpc.aio.ServicerContext) -> pb.Payment:
        fields = Fields()
        lookup = request.WhichOneof("lookup")
        if lookup is None:
            fields.fail("payment_id", "give payment_id or idempotency_key")
        else:
            fields.identifier(getattr(request, lookup), lookup)
        fields.done()
        payment = self.book.get(request.payment_id) if lookup == "payment_id" else self.book.by_key(
            request.idempotency_key)
        return payment_to_proto(payment)

    @answering_errors
    async def ListPayments(self, request: pb.ListPaymentsRequest,
                           context: grpc.aio.ServicerContext) -> pb.ListPaymentsResponse:
        fields = Fields()
        size = fields.page_size(request.page_size)
        status = fields.enum(request.status, "status", STATUSES) if request.status else None
        kind = fields.enum(request.kind, "kind", KINDS) if request.kind else None
        start = _position(request.page_token, fields)
        fields.done()
        payments, following = self.book.page(start, size, status, kind)
        return pb.ListPaymentsResponse(payments=[payment_to_proto(p) for p in payments],
                                       next_page_token=encode_position(following) if following is not None else "")

    async def WatchPayments(self, request: pb.WatchPaymentsRequest, context: grpc.aio.ServicerContext):
        cursor = request.after_sequence
        try:
            if cursor < 0:
                fields = Fields()
                fields.fail("after_sequence", f"must be 0 or more, got {cursor}")
                fields.done()
            while True:
                for event in self.book.events_after(cursor):
                    yield event_to_proto(event)
                    cursor = event.sequence
                await self.book.wait_after(cursor)
        except CreditError as error:
            status = status_for(error)
            await context.abort(status.code, status.details, status.trailing_metadata)

    async def _submit(self, order: PaymentOrder, context: grpc.aio.ServicerContext) -> pb.Payment:
        payment, behaviour = self.book.submit(order)
        log.info("payment_taken", payment_id=payment.payment_id, kind=order.kind.value, reference=order.reference,
                 amount_minor=order.amount_minor, behaviour=behaviour.name if behaviour else "repeat")
        if behaviour is not None and behaviour.answer is Answer.NEVER:
            # Hold the call past the caller's deadline (gRPC then cancels it here); the
            # payment completes all the same.
            remaining = context.time_remaining()
            await asyncio.sleep(self._max_hold_s if remaining is None else min(remaining + 1, self._max_hold_s))
            raise GatewayTimeout("the processor did not answer in time; look the payment up by idempotency_key")
        return payment_to_proto(payment)


def _position(token: str, fields: Fields) -> int:
    """Where a page token says the next page starts; 0 for the first page."""
    try:
        return decode_position(token)
    except CreditError:
        fields.fail("page_token", "is not a token this service issued")
        return 0


async def serve(address: str, book: Book) -> tuple[grpc.aio.Server, int]:
    """Start the simulator over `book` on `address`: the server and the port it took."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    payment_gateway_pb2_grpc.add_PaymentGatewayServiceServicer_to_server(PaymentSimulator(book), server)
    health_servicer = health.aio.HealthServicer()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as error:
        raise SystemExit(f"PAYMENT_GATEWAY_ADDR: cannot listen on {address}: {error}") from error
    await server.start()
    return server, port
