"""The client side of every measurement, the same for the floor and the service:
pre-serialized requests sent over a raw `channel.unary_unary(path)` (no serializers),
a fixed number of calls in flight, each run bounded by a duration and by the number of
requests prepared for it."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest rank; NaN for no values."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class Run:
    """One timed run of one method against one server."""

    target: str                    # "floor" or "service"
    method: str
    in_flight: int
    duration_s: float              # the bound asked for
    prepared: int                  # the count bound: requests serialized for the run
    elapsed_s: float = 0.0
    warmup_calls: int = 0
    latencies_ms: list[float] = field(default_factory=list, repr=False)   # timed successful calls, sorted
    replies: list[bytes | None] = field(default_factory=list, repr=False)  # by request index; None: not sent or failed
    errors: Counter = field(default_factory=Counter)
    sent: int = 0                  # requests started, warm-up included

    @property
    def calls(self) -> int:
        return len(self.latencies_ms)

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def stopped_by(self) -> str:
        return "count" if self.sent >= self.prepared else "duration"

    def summary(self) -> dict:
        return {
            "target": self.target,
            "method": self.method,
            "in_flight": self.in_flight,
            "calls": self.calls,
            "elapsed_s": round(self.elapsed_s, 2),
            "calls_per_s": round(self.calls_per_s, 1),
            "p50_ms": round(percentile(self.latencies_ms, 0.50), 2),
            "p99_ms": round(percentile(self.latencies_ms, 0.99), 2),
            "max_ms": round(self.latencies_ms[-1], 2) if self.latencies_ms else None,
            "errors": dict(self.errors),
            "warmup_calls": self.warmup_calls,
            "prepared": self.prepared,
            "stopped_by": self.stopped_by,
        }


async def drive(channel: grpc.aio.Channel, path: str, requests: Sequence[bytes], *, target: str, in_flight: int,
                duration_s: float, warmup: int | None = None, timeout_s: float = 30) -> Run:
    """Send `requests` in order with `in_flight` calls outstanding: first `warmup` of them
    untimed (default: one per in-flight slot), then the timed window, which ends at
    `duration_s` or when the requests run out, whichever is first. Calls in flight when
    the window closes are waited for and counted."""
    call: grpc.aio.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(path)  # no serializers: bytes in, out
    total = len(requests)
    run = Run(target=target, method=path.rpartition("/")[2], in_flight=in_flight, duration_s=duration_s,
              prepared=total, replies=[None] * total)
    position = 0
    latencies: list[float] = []
    perf_counter = time.perf_counter

    async def worker(limit: int, stop_at: float, timed: bool) -> None:
        nonlocal position
        while position < limit and perf_counter() < stop_at:
            index = position
            position += 1
            started = perf_counter()
            try:
                reply = await call(requests[index], timeout=timeout_s)
            except grpc.aio.AioRpcError as error:
                run.errors[error.code().name] += 1
                continue
            if timed:
                latencies.append(perf_counter() - started)
            run.replies[index] = reply

    warmup = min(in_flight if warmup is None else warmup, total)
    if warmup:
        await asyncio.gather(*(worker(warmup, math.inf, False) for _ in range(in_flight)))
    run.warmup_calls = position
    began = perf_counter()
    await asyncio.gather(*(worker(total, began + duration_s, True) for _ in range(in_flight)))
    run.elapsed_s = perf_counter() - began
    run.sent = position
    run.latencies_ms = sorted(x * 1000 for x in latencies)
    return run
