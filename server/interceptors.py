"""The one place where errors become statuses, with a request id and a log line per call.

CreditError subclasses carry their status code; InvalidArgument adds a
google.rpc.BadRequest naming each field. Database conflicts that a retry can resolve
become ABORTED. Anything else is a bug: INTERNAL with a generic message, and the
traceback goes to the log under the request id.
"""

from __future__ import annotations

import asyncio
import secrets
import time

import asyncpg
import grpc
import structlog
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from server.auth import AccessPolicy, authorize_call
from server.domain.errors import CreditError, InvalidArgument
from server.logging import bind as bind_log_fields
from server.services.transactions import CALL_FIELDS, CALLER

log = structlog.get_logger("server.rpc")

REQUEST_ID_HEADER = "x-request-id"
_RETRYABLE_DB_ERRORS = (
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.LockNotAvailableError,
)
# The database is down, overloaded or slow: the request did not happen; retry later.
_UNAVAILABLE_ERRORS = (
    asyncpg.QueryCanceledError,
    asyncpg.PostgresConnectionError,
    asyncpg.TooManyConnectionsError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    ConnectionError,
    asyncio.TimeoutError,
)


def _request_id(context: grpc.aio.ServicerContext) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_HEADER and value and len(value) <= 128:
            return value
    return secrets.token_hex(16)


def _status(code: grpc.StatusCode, message: str, details: list | None = None) -> grpc.Status:
    packed = []
    for detail in details or ():
        wrapper = any_pb2.Any()
        wrapper.Pack(detail)
        packed.append(wrapper)
    return rpc_status.to_status(status_pb2.Status(
        code=getattr(code_pb2, code.name), message=message, details=packed))


def status_for(error: CreditError) -> grpc.Status:
    code = grpc.StatusCode[error.code]
    if isinstance(error, InvalidArgument):
        bad_request = error_details_pb2.BadRequest(field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in error.violations
        ])
        return _status(code, error.message, [bad_request])
    return _status(code, error.message)


class CallWrapper:
    """Access control (when a policy is given), error mapping, request ids and one log
    line per call, wrapped around each method handler once, when it is registered
    (`WrappingServer`). A grpc.aio interceptor would do the same work but runs its chain
    on every call; wrapping at registration costs nothing per call. The caller's
    certificate is only visible on the servicer context, so the check runs in the
    wrapped handler."""

    def __init__(self, policy: AccessPolicy | None = None) -> None:
        self._policy = policy
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    def wrapped(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """`handler` of `method` with the call's checks, errors and log line around it;
        built once per method."""
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            wrapped = self._wrapped[method] = self._wrap(handler, method)
        return wrapped

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        if handler.unary_unary is None:
            return self._guard_stream(handler, method)
        inner = handler.unary_unary

        async def handle(request, context: grpc.aio.ServicerContext):
            request_id = _request_id(context)
            started = time.perf_counter()
            status: grpc.Status | None = None
            fields: dict = {}
            CALL_FIELDS.set(fields)
            # grpc.aio runs each call in a task of its own, so what is bound here stays
            # with this call and needs no unbinding.
            bind_log_fields(request_id=request_id, method=method)
            log.debug("rpc_started")
            try:
                context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
                if self._policy is not None:
                    caller = authorize_call(self._policy, method, context)
                    CALLER.set(caller)
                    bind_log_fields(caller=caller)
                return await inner(request, context)
            except CreditError as error:
                status = status_for(error)
            except _RETRYABLE_DB_ERRORS as error:
                status = _status(grpc.StatusCode.ABORTED,
                                 f"conflict with a concurrent request ({type(error).__name__}); retry")
            except _UNAVAILABLE_ERRORS as error:
                log.warning("database_unavailable", error=type(error).__name__)
                status = _status(grpc.StatusCode.UNAVAILABLE, "the database is unavailable or took too long; retry")
            except Exception:
                log.exception("rpc_failed")
                status = _status(grpc.StatusCode.INTERNAL, f"internal error (request_id {request_id})")
            finally:
                if status is not None:
                    fields["error"] = status.details
                log.info("rpc_finished", code=status.code.name if status is not None else "OK",
                         duration_ms=round((time.perf_counter() - started) * 1000, 2), **fields)
            await context.abort(status.code, status.details,
                                tuple(status.trailing_metadata) + ((REQUEST_ID_HEADER, request_id),))

        return grpc.unary_unary_rpc_method_handler(
            handle,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _guard_stream(self, handler, method: str):
        """Streaming methods (health Watch, reflection) pass the same access check."""
        policy = self._policy
        if policy is None:
            return handler

        async def check(context) -> bool:
            try:
                authorize_call(policy, method, context)
            except CreditError as error:
                status = status_for(error)
                await context.abort(status.code, status.details, status.trailing_metadata)
                return False
            return True

        def guarded(inner):
            # The same generator serves a request (unary_stream) or a request iterator
            # (stream_stream): it only checks, then relays.
            async def stream(request_or_requests, context):
                if await check(context):
                    async for reply in inner(request_or_requests, context):
                        yield reply

            return stream

        for inner, make in ((handler.unary_stream, grpc.unary_stream_rpc_method_handler),
                            (handler.stream_stream, grpc.stream_stream_rpc_method_handler)):
            if inner is not None:
                return make(guarded(inner), request_deserializer=handler.request_deserializer,
                            response_serializer=handler.response_serializer)
        if handler.stream_unary is not None:
            async def stream_unary(requests, context):
                if await check(context):
                    return await handler.stream_unary(requests, context)
                return None

            return grpc.stream_unary_rpc_method_handler(
                stream_unary, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)
        return handler


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
