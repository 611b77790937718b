"""Running a request in one transaction, and idempotency for mutating requests: the
state change, its ledger entries and the stored first reply commit together."""

from __future__ import annotations

import contextvars
import hashlib
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg
from google.protobuf.message import Message

from server.db import idempotency
from server.domain.errors import IdempotencyKeyReused

Reply = TypeVar("Reply", bound=Message)


def request_sha256(request: Message) -> bytes:
    """The fingerprint of a request without its idempotency key."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("idempotency_key")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).digest()


# The authenticated caller of the request in hand (set by the interceptor); keys are
# scoped by it. Without authentication everyone is the same caller, "".
CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="")

# How long a request waits for a free connection before it is refused as UNAVAILABLE.
ACQUIRE_TIMEOUT_S = 10


class Transactions:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def read(self, work: Callable[[asyncpg.Connection], Awaitable[Reply]]) -> Reply:
        async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
            return await work(conn)

    async def idempotent(self, method: str, request: Message, reply_type: type[Reply],
                         work: Callable[[asyncpg.Connection], Awaitable[Reply]]) -> Reply:
        """Run `work` once per (method, request.idempotency_key). A retry of the same
        request gets the first reply; the same key on a different request fails with
        ALREADY_EXISTS; a duplicate arriving while the first runs waits for it."""
        key = request.idempotency_key
        caller = CALLER.get()
        fingerprint = request_sha256(request)
        async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
            async with conn.transaction(isolation="read_committed"):
                if not await idempotency.claim(conn, caller, method, key, fingerprint):
                    first = await idempotency.load(conn, caller, method, key)
                    if first["request_sha256"] != fingerprint:
                        raise IdempotencyKeyReused(method)
                    return reply_type.FromString(first["response"])
                reply = await work(conn)
                await idempotency.store(conn, caller, method, key, reply.SerializeToString(deterministic=True))
                return reply
