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


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Access control (when a policy is given), error mapping, request ids and one log
    line per call. The caller's certificate is only visible on the servicer context, so
    the check runs in the wrapped handler, not in intercept_service."""

    def __init__(self, policy: AccessPolicy | None = None) -> None:
        self._policy = policy
        # The wrapped handler of each registered method, built on its first call: the
        # wrapping is the same for every call, and building it was per-call work.
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # unknown method: not cached, so no caller can grow the table
        wrapped = self._wrap(handler, method)
        self._wrapped[method] = wrapped
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
            structlog.contextvars.bind_contextvars(request_id=request_id, method=method)
            log.debug("rpc_started")
            try:
                context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
                if self._policy is not None:
                    caller = authorize_call(self._policy, method, context)
                    CALLER.set(caller)
                    structlog.contextvars.bind_contextvars(caller=caller)
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
