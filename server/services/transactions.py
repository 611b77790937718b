"""Running a request in one transaction, and idempotency for mutating requests: the
state change, its ledger entries and the stored first reply commit together."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
from google.protobuf.message import Message

from server.core.commands import Decided, Done, Key, NeedsLock, Replay
from server.db import acquire, idempotency
from server.domain.errors import CreditError, IdempotencyKeyReused, InvariantViolation

Reply = TypeVar("Reply", bound=Message)
T = TypeVar("T")


def request_sha256(request: Message) -> bytes:
    """The fingerprint of a request without its idempotency key. The key is taken out
    and put back rather than copying the message: the same bytes, less work."""
    key = request.idempotency_key  # type: ignore[attr-defined]
    request.idempotency_key = ""  # type: ignore[attr-defined]
    try:
        return hashlib.sha256(request.SerializeToString(deterministic=True)).digest()
    finally:
        request.idempotency_key = key  # type: ignore[attr-defined]


# The authenticated caller of the request in hand (set by the interceptor); keys are
# scoped by it. Without authentication everyone is the same caller, "".
CALLER: contextvars.ContextVar[str] = contextvars.ContextVar("caller", default="")

# The fields of the call's one log line that the work adds (what happened, its ids and
# amounts); the interceptor sets a fresh dict per call and logs it when the call ends.
CALL_FIELDS: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("call_fields", default=None)

# When the call in hand must be done (the event loop's clock), from the client's
# deadline; None without one. Set by the call wrapper.
DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("deadline", default=None)

# How long a request waits for a free connection before it is refused as UNAVAILABLE.
ACQUIRE_TIMEOUT_S = 10


@dataclass(frozen=True)
class _Lost:
    """An optimistic write lost its race (or the core asked for the locked mode)."""

    account_id: UUID


class _Explain(Exception):
    """A write broke a unique constraint whose meaning takes a read to tell; raised out
    of the failed statement's transaction so that the read runs on a clean connection."""

    def __init__(self, explain: Callable[[asyncpg.Connection], Awaitable[CreditError]]) -> None:
        super().__init__("a unique constraint to explain")
        self.explain = explain


class _Turn:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class AccountTurns:
    """One call at a time per account within this process. Calls on a hot account then
    queue here, at the cost of an uncontended asyncio lock, instead of racing in the
    database and retrying; no database lock is held while they wait. An account's entry
    lives only while some call uses it."""

    def __init__(self) -> None:
        self._turns: dict[UUID, _Turn] = {}

    @contextlib.asynccontextmanager
    async def take(self, account_id: UUID) -> AsyncIterator[None]:
        turn = self._turns.get(account_id)
        if turn is None:
            turn = self._turns[account_id] = _Turn()
        turn.users += 1
        try:
            async with turn.lock:
                yield
        finally:
            turn.users -= 1
            if turn.users == 0:
                del self._turns[account_id]

    def __len__(self) -> int:
        return len(self._turns)


class Transactions:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._turns = AccountTurns()

    @property
    def pool(self) -> asyncpg.Pool:
        """For work that must not run in one transaction: a payment order's call to the
        gateway sits between two (server/core/payment_orders.py)."""
        return self._pool

    async def read(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        async with acquire(self._pool, timeout=_time_left(ACQUIRE_TIMEOUT_S)) as conn:
            return await work(conn)

    async def idempotent(self, method: str, request: Message, reply_type: type[Reply],
                         work: Callable[[asyncpg.Connection], Awaitable[Reply]], *,
                         account_id: UUID | None = None,
                         find_account: Callable[[asyncpg.Connection], Awaitable[UUID]] | None = None) -> Reply:
        """Run `work` once per (account, method, request.idempotency_key). A retry of the
        same request gets the first reply; the same key on a different request of the
        account fails with ALREADY_EXISTS; a duplicate arriving while the first runs
        waits for it. The account is `account_id` when the request names it, else what
        `find_account` reads (in the transaction, before the key is claimed; it raises
        NotFound when the request's subject does not exist)."""
        if (account_id is None) == (find_account is None):
            raise InvariantViolation(f"{method}: give the account or how to find it, not both or neither")
        key = Key(CALLER.get(), method, request.idempotency_key, request_sha256(request))  # type: ignore[attr-defined]
        async with acquire(self._pool, timeout=_time_left(ACQUIRE_TIMEOUT_S)) as conn:
            async with conn.transaction(isolation="read_committed"):
                account = account_id if find_account is None else await find_account(conn)
                assert account is not None  # one of the two, checked above
                if not await idempotency.claim(conn, account, key.caller, key.method, key.idempotency_key,
                                               key.request_sha256):
                    return _replayed(await self._stored(conn, account, key), key, reply_type)
                reply = await work(conn)
                await idempotency.store(conn, account, key.caller, key.method, key.idempotency_key,
                                        reply.SerializeToString(deterministic=True))
                return reply

    async def command(self, method: str, request: Message, reply_type: type[Reply],
                      prepare: Callable[[asyncpg.Connection, Key, bool], Awaitable[Replay | Decided | Done]],
                      to_reply: Callable[[Any], Reply], account_id: UUID | None = None) -> Reply:
        """Run a hot command in two round trips (server/core/commands.py): `prepare`
        reads and decides, its Write books the decision and the reply together.

        Calls on one account (`account_id`, when the request names it) take their turn
        in this process first, so they do not race each other in the database. A write
        that still loses a race (another process, or a command whose account is known
        only once read) is tried again in that account's turn, and then once more in a
        transaction with the key claimed in the account's bucket and the account row
        locked."""
        key = Key(CALLER.get(), method, request.idempotency_key, request_sha256(request))  # type: ignore[attr-defined]
        try:
            if account_id is None:
                first = await self._optimistic(key, reply_type, prepare, to_reply)
                if not isinstance(first, _Lost):
                    return first
                account_id = first.account_id
            async with self._turns.take(account_id):
                again = await self._optimistic(key, reply_type, prepare, to_reply)
                if not isinstance(again, _Lost):
                    return again
                return await self._locked(key, account_id, reply_type, prepare, to_reply)
        except _Explain as conflict:
            raise await self.read(conflict.explain) from conflict.__cause__

    async def _optimistic(self, key: Key, reply_type: type[Reply], prepare, to_reply) -> Reply | _Lost:
        async with acquire(self._pool, timeout=_time_left(ACQUIRE_TIMEOUT_S)) as conn:
            try:
                prepared = await prepare(conn, key, False)
            except NeedsLock as needs:
                return _Lost(needs.account_id)
            if isinstance(prepared, Replay):
                return _replayed(prepared, key, reply_type)
            if isinstance(prepared, Done):
                raise InvariantViolation("a command wrote outside its Write in optimistic mode")
            reply = to_reply(prepared.view)
            try:
                applied = await self._apply(conn, key, prepared, reply)
            except asyncpg.SerializationError:
                return _Lost(prepared.account_id)
            if applied:
                return reply
            return _replayed(await self._stored(conn, prepared.account_id, key), key, reply_type)

    async def _locked(self, key: Key, account_id: UUID, reply_type: type[Reply], prepare, to_reply) -> Reply:
        async with acquire(self._pool, timeout=_time_left(ACQUIRE_TIMEOUT_S)) as conn:
            async with conn.transaction(isolation="read_committed"):
                if not await idempotency.claim(conn, account_id, key.caller, key.method, key.idempotency_key,
                                               key.request_sha256):
                    return _replayed(await self._stored(conn, account_id, key), key, reply_type)
                prepared = await prepare(conn, key, True)
                if isinstance(prepared, Replay):
                    raise InvariantViolation("a claimed key was read back as used")
                reply = to_reply(prepared.view)
                if isinstance(prepared, Done):
                    _note(prepared.outcome)
                    await idempotency.store(conn, account_id, key.caller, key.method, key.idempotency_key,
                                            reply.SerializeToString(deterministic=True))
                    return reply
                if prepared.account_id != account_id:
                    raise InvariantViolation("a command's write names another account than its claim")
                if not await self._apply(conn, key, prepared, reply):
                    raise InvariantViolation("a claimed key was taken by another request")
                return reply

    @staticmethod
    async def _apply(conn: asyncpg.Connection, key: Key, prepared: Decided, reply: Message) -> bool:
        # The record is claimed in the bucket of the account the write checks ($6).
        if not prepared.write.args or prepared.write.args[0] != prepared.account_id:
            raise InvariantViolation("a command's write does not start with its account")
        try:
            applied = await conn.fetchval(
                prepared.write.sql, key.caller, key.method, key.idempotency_key, key.request_sha256,
                reply.SerializeToString(deterministic=True), *prepared.write.args, timeout=_time_left())
        except asyncpg.UniqueViolationError as error:
            meaning = prepared.conflicts.get(error.constraint_name or "")
            if meaning is None:
                raise
            if isinstance(meaning, CreditError):
                raise meaning from error
            raise _Explain(meaning) from error
        if applied:
            _note(prepared.outcome)
        return bool(applied)

    @staticmethod
    async def _stored(conn: asyncpg.Connection, account_id: UUID, key: Key) -> Replay:
        first = await idempotency.load(conn, account_id, key.caller, key.method, key.idempotency_key)
        return Replay(first["request_sha256"], first["response"])


def _time_left(cap: float | None = None) -> float | None:
    """What is left of the call's deadline, at most `cap`, as a timeout for the next
    wait or statement (None: no deadline and no cap, the pool's command timeout rules).
    Past the deadline nothing more is started: TimeoutError, which the call wrapper
    reports as DEADLINE_EXCEEDED."""
    deadline = DEADLINE.get()
    if deadline is None:
        return cap
    left = deadline - asyncio.get_running_loop().time()
    if left <= 0:
        raise TimeoutError("the call's deadline passed")
    return left if cap is None else min(left, cap)


def _replayed(first: Replay, key: Key, reply_type: type[Reply]) -> Reply:
    if first.request_sha256 != key.request_sha256:
        raise IdempotencyKeyReused(key.method)
    if first.response is None:
        raise InvariantViolation(f"the idempotency record of {key.method} has no reply")
    _note({"outcome": "replayed"})
    return reply_type.FromString(first.response)


def _note(outcome: dict[str, Any]) -> None:
    fields = CALL_FIELDS.get()
    if fields is not None:
        fields.update(outcome)
