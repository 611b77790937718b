"""Prometheus metrics of the server and the collections bot, served over HTTP on
METRICS_LISTEN_ADDR (off unless set).

Every name starts with `credit_`. With SERVER_PROCESSES > 1 the children write their
samples to files in a directory the parent gives them (PROMETHEUS_MULTIPROC_DIR, which
prometheus-client reads when it is imported) and the parent serves the sum; a gauge
says how it is combined (`livesum`: the sum over live processes; `mostrecent`: one
value for all, such as counts from the database).

See docs/operations.md for what each metric means and the alerts worth having.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Literal

import asyncpg
import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)

from server.admission import Admission
from server.db import one

log = structlog.get_logger(__name__)

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"

# Latency buckets for a checkout call: most calls take a few milliseconds.
_RPC_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


# The server's metrics; the bot's are in collections_bot/metrics.py, in a registry of
# their own, so that neither process reports the other's as zeros.
SERVER = CollectorRegistry(auto_describe=True)


# How a gauge's samples of several processes add up (the ones used here).
GaugeMode = Literal["livesum", "mostrecent"]


def _gauge(name: str, documentation: str, labels: tuple[str, ...] = (), mode: GaugeMode = "livesum") -> Gauge:
    return Gauge(name, documentation, labels, multiprocess_mode=mode, registry=SERVER)


# The server.
RPCS = Counter("credit_rpc_handled", "Calls finished, by method and status code.", ("method", "code"), registry=SERVER)
RPC_SECONDS = Histogram("credit_rpc_duration_seconds", "Time from a call's start to its reply, by method.",
                        ("method",), buckets=_RPC_BUCKETS, registry=SERVER)
RPCS_REFUSED = Counter("credit_rpc_refused", "Calls refused before any work: by why (unauthenticated, "
                       "permission_denied, total, caller, connection, streams, body_timeout).", ("reason",),
                       registry=SERVER)
RPCS_IN_PROGRESS = _gauge("credit_rpc_in_progress", "Calls holding a slot now (unary calls and streams).",
                          ("kind",))
POOL_CONNECTIONS = _gauge("credit_db_pool_connections", "Connections of the server's pool, by state "
                          "(in_use, idle).", ("state",))
POOL_WAITING = _gauge("credit_db_pool_waiting", "Calls waiting for a pooled connection.")
DB_ERRORS = Counter("credit_db_errors", "Database failures seen by calls and passes, by kind "
                    "(unavailable, timeout, conflict, other) and exception class.", ("kind", "error"),
                    registry=SERVER)
DB_UP = _gauge("credit_db_up", "1 while the database answers, 0 while it does not.", mode="mostrecent")
HOLDS_PENDING = _gauge("credit_holds_pending", "Authorizations holding credit limit now.", mode="mostrecent")
HOLDS_PENDING_MINOR = _gauge("credit_holds_pending_minor", "Credit limit held by pending authorizations, in fen.",
                             mode="mostrecent")
LOANS = _gauge("credit_loans", "Loans by status.", ("status",), mode="mostrecent")

def serve(address: str | None, registry: CollectorRegistry, *, children_dir: str | None = None) -> None:
    """Serve the metrics on HOST:PORT (nothing when `address` is None); with
    `children_dir`, those the processes writing there report (the parent of
    SERVER_PROCESSES, which sets PROMETHEUS_MULTIPROC_DIR on its children)."""
    if address is None:
        return
    host, _, port = address.rpartition(":")
    if children_dir is not None:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=children_dir)
    try:
        start_http_server(int(port), addr=host.strip("[]"), registry=registry)
    except OSError as error:
        raise SystemExit(f"METRICS_LISTEN_ADDR: cannot listen on {address}: {error}") from error
    log.info("metrics_serving", address=address)


def mark_process_dead(pid: int, children_dir: str) -> None:
    """A child of SERVER_PROCESSES ended: drop its live gauges."""
    multiprocess.mark_process_dead(pid, children_dir)


def sampler(pool: asyncpg.Pool, admission: Admission) -> Callable[[], None]:
    """A function that copies the state of the pool and of admission into their gauges."""
    def sample() -> None:
        size = pool.get_size()
        idle = pool.get_idle_size()
        POOL_CONNECTIONS.labels("in_use").set(size - idle)
        POOL_CONNECTIONS.labels("idle").set(idle)
        # asyncpg keeps the calls waiting for a connection on its queue of free holders.
        getters = getattr(getattr(pool, "_queue", None), "_getters", None)
        POOL_WAITING.set(len(getters) if getters is not None else 0)
        RPCS_IN_PROGRESS.labels("unary").set(admission.calls)
        RPCS_IN_PROGRESS.labels("stream").set(admission.streams)
    return sample


BOOK_GAUGES = """
SELECT (SELECT count(*) FROM authorizations WHERE status = 'PENDING') AS holds,
       (SELECT coalesce(sum(amount_minor), 0) FROM authorizations WHERE status = 'PENDING')::bigint AS held_minor,
       (SELECT coalesce(jsonb_object_agg(status, n), '{}') FROM
            (SELECT status, count(*) AS n FROM loans GROUP BY status) AS by_status)::text AS loans
"""


async def refresh_book_gauges(pool: asyncpg.Pool, interval_s: float, stop: asyncio.Event) -> None:
    """Every `interval_s`, the book's gauges (holds, loans by status), until `stop` is
    set. A failed refresh keeps the last values."""
    while not stop.is_set():
        try:
            async with pool.acquire(timeout=5) as conn:
                row = one(await conn.fetchrow(BOOK_GAUGES, timeout=10))
            HOLDS_PENDING.set(row["holds"])
            HOLDS_PENDING_MINOR.set(row["held_minor"])
            for status, count in json.loads(row["loans"]).items():
                LOANS.labels(status).set(count)
        except Exception as error:  # the next round tries again
            log.debug("book_gauges_failed", error=type(error).__name__)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)
