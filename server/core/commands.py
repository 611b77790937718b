"""How a hot command (Authorize, Capture, Repay) reaches the database in two round trips.

1. One statement reads everything the decision needs: the account with its version, the
   rows the command acts on, the idempotency record of the request's key, risk facts.
2. The decision is made in Python, in the pure domain, with no lock held.
3. One statement writes everything: it claims the idempotency key (storing the reply),
   updates the account only if its version is still the one read, and inserts or updates
   the rest only where that update happened. It returns true when applied, false when a
   concurrent duplicate of the request got the key first, and raises
   serialization_failure (SQLSTATE 40001) from its last SELECT when the account changed
   in between, which rolls the whole statement back.

A command that loses the race runs again in a transaction that claims the key, locks
the account, reads and writes: slower (six round trips) but sure to finish, so a hot
account makes progress. A command that a single statement cannot express (a capture
that a credit balance pays at once) asks for that locked mode with `NeedsLock` and does
its work there, returning `Done`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from uuid import UUID

from server.domain.errors import CreditError

View = TypeVar("View")


@dataclass(frozen=True)
class Key:
    """The idempotency key of a request, scoped by its caller and method."""

    caller: str
    method: str
    idempotency_key: str
    request_sha256: bytes


@dataclass(frozen=True)
class Replay:
    """The request's key was used before: the first request's fingerprint and reply."""

    request_sha256: bytes
    response: bytes | None


@dataclass(frozen=True)
class Write:
    """The whole change of a command as one statement. Its parameters $1-$5 are the
    idempotency record (caller, method, key, request fingerprint, reply) and `args`
    follow from $6; the first of them ($6) is the account, whose bucket the record is
    claimed in. Built by the core with the SQL of server/db."""

    sql: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class Decided(Generic[View]):
    """What the command will answer, and the one statement that makes it true."""

    view: View
    write: Write
    # The account whose version the write checks.
    account_id: UUID
    # Fields for the call's one log line: what happened, with its ids and amounts.
    outcome: dict[str, Any]
    # What a unique constraint that the write may break means to the caller, by name:
    # a concurrent request took the same thing. Where the meaning takes a read to tell,
    # a function that reads it (on a connection of its own, after the write failed).
    conflicts: Mapping[str, CreditError | Callable[[Any], Awaitable[CreditError]]] = field(default_factory=dict)


@dataclass(frozen=True)
class Done(Generic[View]):
    """Locked mode only: the core has written everything itself in the transaction."""

    view: View
    outcome: dict[str, Any]


class NeedsLock(Exception):
    """Raised by a core in optimistic mode when the command needs the locked mode, once
    its read has found the account (the locked mode claims the key in its bucket)."""

    def __init__(self, account_id: UUID) -> None:
        super().__init__(f"account {account_id} needs the locked mode")
        self.account_id = account_id
