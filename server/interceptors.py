"""The one place where calls are admitted, errors become statuses, and each call gets a
request id, its metrics and one log line.

A call is admitted before its request body is read: the caller is identified from the
metadata and the connection's certificate, checked against the access policy, and given
a slot (server/admission.py); only then is the body awaited, for at most
REQUEST_BODY_TIMEOUT_MS. To see a call before its body, every method is served as a
client-streaming one that reads a single message; on the wire a unary call and a
client-streaming call with one message are the same, so clients see no difference.

CreditError subclasses carry their status code; InvalidArgument adds a
google.rpc.BadRequest naming each field. A database that is down, restarting, refusing
connections or too slow is UNAVAILABLE with a google.rpc.RetryInfo; conflicts that a
retry resolves are ABORTED. Anything else is a bug: INTERNAL with a generic message,
and the traceback goes to the log under the request id.
"""

from __future__ import annotations

import asyncio
import inspect
import secrets
import time
from collections.abc import Callable
from typing import Any

import asyncpg
import grpc
import structlog
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from prometheus_client import Counter

from server import metrics
from server.admission import Admission
from server.auth import AccessPolicy, authorize_call
from server.db.pool import database_error_kind
from server.domain.errors import CreditError, InvalidArgument
from server.logging import bind as bind_log_fields
from server.services.transactions import CALL_FIELDS, CALLER, DEADLINE

log = structlog.get_logger("server.rpc")

REQUEST_ID_HEADER = "x-request-id"
# How long a client should wait before trying again after UNAVAILABLE.
RETRY_AFTER_S = 1

def _request_id(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and isinstance(value, str) and value and len(value) <= 128:
            return value
    return secrets.token_hex(16)


def _status(code: grpc.StatusCode, message: str, details: list | None = None,
            metadata: tuple = ()) -> grpc.Status:
    packed = []
    for detail in details or ():
        wrapper = any_pb2.Any()
        wrapper.Pack(detail)
        packed.append(wrapper)
    status = rpc_status.to_status(status_pb2.Status(code=getattr(code_pb2, code.name), message=message,
                                                    details=packed))
    if metadata:
        return _Status(status.code, status.details, tuple(status.trailing_metadata) + metadata)
    return status


class _Status(grpc.Status):
    def __init__(self, code, details, trailing_metadata):
        self.code = code
        self.details = details
        self.trailing_metadata = trailing_metadata


def status_for(error: CreditError) -> grpc.Status:
    code = grpc.StatusCode[error.code]
    if isinstance(error, InvalidArgument):
        bad_request = error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in error.violations
        ])
        return _status(code, error.message, [bad_request])
    return _status(code, error.message)


def _retry_later(message: str) -> grpc.Status:
    """UNAVAILABLE with a retry hint: google.rpc.RetryInfo for clients that read status
    details, grpc-retry-pushback-ms for gRPC's own retry policy."""
    retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=RETRY_AFTER_S))
    return _status(grpc.StatusCode.UNAVAILABLE, message, [retry],
                   (("grpc-retry-pushback-ms", str(RETRY_AFTER_S * 1000)),))


class Refused(CreditError):
    """A call turned away before any work; `reason` is counted in credit_rpc_refused."""

    def __init__(self, code: str, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


_REFUSALS = {
    "total": "the server is at MAX_CONCURRENT_RPCS calls in progress; retry with backoff",
    "caller": "this caller is at MAX_CALLS_PER_CALLER calls in progress; retry with backoff",
    "connection": "this connection is at MAX_CALLS_PER_CONNECTION calls in progress; retry with backoff",
    "streams": "the server is at MAX_STREAMS open streams; retry with backoff",
}


class CallWrapper:
    """Admission (identity, access and a slot, before the body is read), error mapping,
    request ids, metrics and one log line per call, wrapped around each method handler
    once, when it is registered (`WrappingServer`): nothing is rebuilt per call.

    Without a policy (AUTH_MODE=insecure-local) every caller is anonymous, and the
    per-caller bound applies to each connection."""

    def __init__(self, policy: AccessPolicy | None, admission: Admission, *, body_timeout_s: float,
                 on_unavailable: Callable[[], None] | None = None) -> None:
        self._policy = policy
        self._admission = admission
        self._body_timeout_s = body_timeout_s
        self._on_unavailable = on_unavailable
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    def wrapped(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """`handler` of `method` with the call's checks, errors and log line around it;
        built once per method."""
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            wrapped = self._wrapped[method] = self._wrap(handler, method)
        return wrapped

    def _admit(self, method: str, context: grpc.aio.ServicerContext, stream: bool) -> tuple[str, str]:
        """(slot key, connection) of an admitted call, or Refused."""
        connection = context.peer()
        if self._policy is not None:
            try:
                caller = authorize_call(self._policy, method, context)
            except CreditError as error:
                raise Refused(error.code, error.code.lower(), error.message) from None
            CALLER.set(caller)
            bind_log_fields(caller=caller)
        else:
            caller = connection
        refused = self._admission.enter(caller, connection, stream=stream)
        if refused is not None:
            raise Refused("RESOURCE_EXHAUSTED", refused, _REFUSALS[refused])
        return caller, connection

    async def _body(self, requests, deserialize, context: grpc.aio.ServicerContext):
        """The call's one request message, or an error naming what is wrong with it."""
        try:
            async with asyncio.timeout(self._body_timeout_s):
                raw = await anext(requests)
        except StopAsyncIteration:
            if context.cancelled():
                raise asyncio.CancelledError from None  # the client gave up before sending it
            raise InvalidArgument.of("request", "no request message was sent") from None
        except TimeoutError:
            raise Refused("DEADLINE_EXCEEDED", "body_timeout",
                          "the request body did not arrive within REQUEST_BODY_TIMEOUT_MS") from None
        if deserialize is None:
            return raw
        try:
            return deserialize(raw)
        except DecodeError:
            raise InvalidArgument.of("request", "the request body is not a valid protobuf message of this "
                                                "method's request type") from None

    def _failure(self, error: BaseException, request_id: str) -> tuple[grpc.Status, str | None]:
        """The status a failed call ends with, and the kind of database error, if any."""
        if isinstance(error, Refused):
            metrics.RPCS_REFUSED.labels(error.reason).inc()
            return _status(grpc.StatusCode[error.code], error.message), None
        if isinstance(error, CreditError):
            return status_for(error), None
        kind = database_error_kind(error)
        if kind == "conflict":
            return _status(grpc.StatusCode.ABORTED,
                           f"conflict with a concurrent request ({type(error).__name__}); retry"), kind
        if kind is not None:
            deadline = DEADLINE.get()
            if deadline is not None and asyncio.get_running_loop().time() >= deadline:
                return _status(grpc.StatusCode.DEADLINE_EXCEEDED, "the call's deadline passed; nothing was "
                               "done that a retry with the same idempotency key would not find"), kind
            log.warning("database_unavailable", error=type(error).__name__, kind=kind)
            if self._on_unavailable is not None:
                self._on_unavailable()
            return _retry_later("the database is unavailable or took too long; retry"), kind
        log.exception("rpc_failed")
        return _status(grpc.StatusCode.INTERNAL, f"internal error (request_id {request_id})"), "other" if isinstance(
            error, asyncpg.PostgresError) else None

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if handler.unary_unary is None:
            return self._wrap_stream(handler, method)
        # A coroutine function on a grpc.aio server (the stubs type a handler as synchronous).
        inner: Callable[..., Any] = handler.unary_unary
        deserialize = handler.request_deserializer
        admission = self._admission
        seconds = metrics.RPC_SECONDS.labels(method)
        counted: dict[str, Counter] = {}

        def count(code: str, elapsed: float) -> None:
            counter = counted.get(code)
            if counter is None:
                counter = counted[code] = metrics.RPCS.labels(method, code)
            counter.inc()
            seconds.observe(elapsed)

        async def handle(requests, context: grpc.aio.ServicerContext):
            request_id = _request_id(context)
            started = time.perf_counter()
            status: grpc.Status | None = None
            code = "OK"
            fields: dict = {}
            CALL_FIELDS.set(fields)
            # grpc.aio runs each call in a task of its own, so what is bound here stays
            # with this call and needs no unbinding.
            bind_log_fields(request_id=request_id, method=method)
            log.debug("rpc_started")
            slot = None
            try:
                context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
                slot = self._admit(method, context, False)
                request = await self._body(requests, deserialize, context)
                remaining = context.time_remaining()
                if remaining is not None:
                    DEADLINE.set(asyncio.get_running_loop().time() + remaining)
                return await inner(request, context)
            except asyncio.CancelledError:
                # The client cancelled, its deadline passed, or the server is stopping.
                remaining = context.time_remaining()
                code = "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"
                raise
            except Exception as error:
                status, db_kind = self._failure(error, request_id)
                if db_kind is not None:
                    metrics.DB_ERRORS.labels(db_kind, type(error).__name__).inc()
                code = status.code.name
                fields["error"] = status.details
            finally:
                if slot is not None:
                    admission.leave(*slot)
                elapsed = time.perf_counter() - started
                count(code, elapsed)
                log.info("rpc_finished", code=code, duration_ms=round(elapsed * 1000, 2), **fields)
            await context.abort(status.code, status.details,
                                tuple(status.trailing_metadata) + ((REQUEST_ID_HEADER, request_id),))

        # Served as client-streaming with raw bytes in: the handler runs when the call's
        # headers arrive, before its body (see the module's docstring).
        return grpc.stream_unary_rpc_method_handler(
            handle, request_deserializer=None, response_serializer=handler.response_serializer)

    def _wrap_stream(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """Streaming methods (health Watch, reflection): admitted the same way, on the
        streams' own budget, and logged when they end."""
        admission = self._admission

        def streaming(relay):
            # grpc.aio serves a handler as asynchronous only if it is an async generator
            # function itself, so one is built per relay.
            async def stream(requests, context: grpc.aio.ServicerContext):
                request_id = _request_id(context)
                started = time.perf_counter()
                bind_log_fields(request_id=request_id, method=method)
                code = "OK"
                slot = None
                try:
                    slot = self._admit(method, context, True)
                    async for reply in relay(requests, context):
                        yield reply
                except asyncio.CancelledError:
                    code = "CANCELLED"
                    raise
                except Exception as error:
                    status, _ = self._failure(error, request_id)
                    code = status.code.name
                    await context.abort(status.code, status.details, status.trailing_metadata)
                finally:
                    if slot is not None:
                        admission.leave(*slot, stream=True)
                    metrics.RPCS.labels(method, code).inc()
                    log.info("stream_finished", code=code,
                             duration_ms=round((time.perf_counter() - started) * 1000, 2))

            return stream

        if handler.unary_stream is not None:
            # One request, then replies: read as a stream too, so the body waits for admission.
            # An async generator function, or a coroutine function that writes with context.write.
            inner_unary_stream: Callable[..., Any] = handler.unary_stream
            deserialize = handler.request_deserializer

            async def one_then_replies(requests, context):
                request = await self._body(requests, deserialize, context)
                replies = inner_unary_stream(request, context)
                if inspect.isawaitable(replies):  # a handler that writes with context.write
                    await replies
                    return
                async for reply in replies:
                    yield reply

            return grpc.stream_stream_rpc_method_handler(
                streaming(one_then_replies), request_deserializer=None,
                response_serializer=handler.response_serializer)
        if handler.stream_stream is not None:
            return grpc.stream_stream_rpc_method_handler(
                streaming(handler.stream_stream), request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        raise ValueError(f"{method}: client-streaming methods are not served")


class _WrappedGenericHandler(grpc.GenericRpcHandler):
    def __init__(self, inner: grpc.GenericRpcHandler, calls: CallWrapper) -> None:
        self._inner = inner
        self._calls = calls

    def service(self, handler_call_details):
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None  # unknown method: grpc answers UNIMPLEMENTED, nothing is cached
        return self._calls.wrapped(handler, handler_call_details.method)


class WrappingServer:
    """A grpc.aio.Server seen through `calls`: every method handler that the generated
    add_*_to_server functions (and health and reflection) register is wrapped once."""

    def __init__(self, server: grpc.aio.Server, calls: CallWrapper) -> None:
        self._server = server
        self._calls = calls

    def add_generic_rpc_handlers(self, handlers) -> None:
        self._server.add_generic_rpc_handlers(tuple(_WrappedGenericHandler(h, self._calls) for h in handlers))

    def add_registered_method_handlers(self, service_name: str, method_handlers: dict) -> None:
        self._server.add_registered_method_handlers(service_name, {
            name: self._calls.wrapped(handler, f"/{service_name}/{name}") for name, handler in method_handlers.items()})

    def __getattr__(self, name: str):
        return getattr(self._server, name)
