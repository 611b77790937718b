"""Slots for calls in progress.

Every call takes a slot once its caller is known and gives it back when it ends. A call
past a bound is refused at once (RESOURCE_EXHAUSTED): the bounds keep the server's
memory and the database's connections finite, and the per-caller and per-connection
bounds keep one caller, or one connection, from taking the slots of everyone else.
Long-lived streams (health Watch, reflection) draw on a budget of their own, so no
number of open streams can starve the unary API.

Calls are refused before they take anything: an unidentified caller never reaches
this point (the access check runs first, before the request body is read), and a
caller that opens calls and never sends their bodies holds at most its own slots
until REQUEST_BODY_TIMEOUT_MS.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Bounds:
    total: int
    per_caller: int
    per_connection: int
    streams: int


class Admission:
    """Counts of calls in progress, in all, per caller and per connection (the peer's
    address and port: one HTTP/2 connection). Plain counters: the event loop runs one
    call's bookkeeping at a time."""

    __slots__ = ("bounds", "_calls", "_streams", "_by_caller", "_by_connection")

    def __init__(self, bounds: Bounds) -> None:
        self.bounds = bounds
        self._calls = 0
        self._streams = 0
        self._by_caller: dict[str, int] = {}
        self._by_connection: dict[str, int] = {}

    def enter(self, caller: str, connection: str, *, stream: bool = False) -> str | None:
        """Take a slot: None when taken, else the bound that refused it ("total",
        "streams", "caller" or "connection"). A taken slot must be given back with
        `leave` and the same arguments."""
        bounds = self.bounds
        if stream:
            if self._streams >= bounds.streams:
                return "streams"
        elif self._calls >= bounds.total:
            return "total"
        held_by_caller = self._by_caller.get(caller, 0)
        if held_by_caller >= bounds.per_caller:
            return "caller"
        held_by_connection = self._by_connection.get(connection, 0)
        if held_by_connection >= bounds.per_connection:
            return "connection"
        if stream:
            self._streams += 1
        else:
            self._calls += 1
        self._by_caller[caller] = held_by_caller + 1
        self._by_connection[connection] = held_by_connection + 1
        return None

    def leave(self, caller: str, connection: str, *, stream: bool = False) -> None:
        if stream:
            self._streams -= 1
        else:
            self._calls -= 1
        _decrement(self._by_caller, caller)
        _decrement(self._by_connection, connection)

    @property
    def calls(self) -> int:
        return self._calls

    @property
    def streams(self) -> int:
        return self._streams

    def held_by(self, caller: str) -> int:
        return self._by_caller.get(caller, 0)


def _decrement(counts: dict[str, int], key: str) -> None:
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]
