"""The gRPC server: wiring, start, background sweeps and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import cast

import asyncpg
import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from credit.v1 import (
    checkout_pb2,
    checkout_pb2_grpc,
    collections_pb2,
    collections_pb2_grpc,
    credit_line_pb2,
    credit_line_pb2_grpc,
    repayment_pb2,
    repayment_pb2_grpc,
    risk_pb2,
    risk_pb2_grpc,
)
from server import metrics
from server.admission import Admission, Bounds
from server.auth import AccessPolicy
from server.clock import Clock, SystemClock
from server.config import Settings
from server.core.accounts import CreditLines
from server.core.checkout import Checkout
from server.core.collections import Collections, CollectionsPolicy
from server.core.funding import Partners
from server.core.loans import Loans
from server.core.payment_orders import PaymentOrders
from server.core.payouts import Payouts
from server.core.portfolio import Portfolio
from server.core.repayments import Repayments
from server.core.risk import RiskReports
from server.core.statements import Statements
from server.db import acquire
from server.db.migrate import migrate
from server.db.pool import create_pool, wait_for_database
from server.domain.pricing import DEFAULT_PRODUCT_TABLE, ProductTable
from server.domain.risk import load as load_ruleset
from server.interceptors import CallWrapper, WrappingServer
from server.payments.gateway import PaymentGateway
from server.services.checkout import CheckoutServicer
from server.services.collections import CollectionsServicer
from server.services.credit_line import CreditLineServicer
from server.services.repayment import RepaymentServicer
from server.services.risk import RiskServicer
from server.services.transactions import Transactions

log = structlog.get_logger(__name__)

SERVICE_NAMES = (
    credit_line_pb2.DESCRIPTOR.services_by_name["CreditLineService"].full_name,
    checkout_pb2.DESCRIPTOR.services_by_name["CheckoutService"].full_name,
    repayment_pb2.DESCRIPTOR.services_by_name["RepaymentService"].full_name,
    collections_pb2.DESCRIPTOR.services_by_name["CollectionsService"].full_name,
    risk_pb2.DESCRIPTOR.services_by_name["RiskService"].full_name,
)


@dataclass
class Core:
    credit_lines: CreditLines
    checkout: Checkout
    loans: Loans
    repayments: Repayments
    collections: Collections
    risk: RiskReports
    portfolio: Portfolio
    statements: Statements
    payouts: Payouts


def build_core(settings: Settings, clock: Clock, products: ProductTable = DEFAULT_PRODUCT_TABLE,
               partners: Partners | None = None, gateway: PaymentGateway | None = None) -> Core:
    products.check_cost_ceiling(settings.max_apr_bps)
    repayments = Repayments(clock)
    return Core(
        credit_lines=CreditLines(clock, temporary_limit_max_days=settings.temporary_limit_max_days,
                                 payment_due_days=settings.payment_due_days),
        checkout=Checkout(clock, products, timedelta(seconds=settings.hold_ttl_s), repayments,
                          load_ruleset() if settings.risk_checks else None, partners),
        loans=Loans(clock),
        repayments=repayments,
        collections=Collections(clock, CollectionsPolicy(), repayments),
        risk=RiskReports(),
        portfolio=Portfolio(clock, insurance_share_bps=settings.insurance_share_bps),
        statements=Statements(),
        payouts=Payouts(clock, PaymentOrders(clock, gateway)),
    )


async def sweep_expired_holds(checkout: Checkout, pool: asyncpg.Pool, interval_s: int,
                              stop: asyncio.Event) -> None:
    """Give back the limit of holds past their expiry, until asked to stop."""
    while not stop.is_set():
        try:
            while await checkout.expire_due_holds(pool) > 0 and not stop.is_set():
                pass
        except Exception:
            # The sweep must outlive any one failure; the next round tries again.
            log.exception("hold_sweep_failed")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval_s)


LIVENESS_SERVICE = "liveness"


@dataclass
class Running:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    core: Core
    admission: Admission
    database: DatabaseWatch
    # The plaintext health-only server on HEALTH_LISTEN_ADDR, and its port.
    health_server: grpc.aio.Server | None = None
    health_port: int | None = None
    # The channel to the payment gateway, closed when the server stops.
    gateway_channel: grpc.aio.Channel | None = None


def grpc_options(settings: Settings, *, reuse_port: bool) -> list[tuple[str, int]]:
    """Channel arguments of the server: bounded messages and connection lifetimes."""
    return [
        # Alone, refuse to share the port with another process instead of silently
        # splitting traffic; as one of SERVER_PROCESSES, share it with the siblings.
        ("grpc.so_reuseport", 1 if reuse_port else 0),
        # Bodies larger than this are refused (RESOURCE_EXHAUSTED) before they are buffered whole.
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # No HTTP/2 limit on concurrent streams (grpc.max_concurrent_streams): it refused
        # streams with REFUSED_STREAM while clients still counted the ones the server had
        # just ended, so callers saw UNAVAILABLE instead of an answer. Admission bounds
        # each connection's calls instead, with RESOURCE_EXHAUSTED.
        # Calls that arrived but that the server has not picked up yet. grpc.aio picks
        # them up one at a time; past the default (1,000, and at random up to 3,000) gRPC
        # cancels them, so a burst of calls got CANCELLED, which clients take for their
        # own cancellation. Picked up, each call gets an answer from admission instead.
        ("grpc.server.max_pending_requests", max(10_000, 10 * settings.max_concurrent_rpcs)),
        ("grpc.server.max_pending_requests_hard_limit", max(20_000, 20 * settings.max_concurrent_rpcs)),
        # Ping idle connections so dead peers are noticed, and accept clients' pings no
        # more often than every 10 s.
        ("grpc.keepalive_time_ms", settings.keepalive_time_s * 1000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # Close idle connections, and age every connection out so that clients reconnect
        # and spread over new servers; calls in flight get a grace period.
        ("grpc.max_connection_idle_ms", settings.max_connection_idle_s * 1000),
        ("grpc.max_connection_age_ms", settings.max_connection_age_s * 1000),
        ("grpc.max_connection_age_grace_ms", 30_000),
    ]


async def start_server(settings: Settings, pool: asyncpg.Pool, clock: Clock, *, reuse_port: bool = False,
                       serving: bool = True, dsn: str | None = None) -> Running:
    """Build the gRPC server over `pool`, start it on GRPC_LISTEN_ADDR (and the health
    port on HEALTH_LISTEN_ADDR) and report SERVING once the database answers (with
    `serving=False` it reports NOT_SERVING until `mark_serving`). `reuse_port` lets the
    processes of SERVER_PROCESSES > 1 share the ports; otherwise a second server on the
    same port is refused. `dsn` is where the database watch connects; without it the
    watch borrows the pool's connections."""
    # The funding partners are read once: captures choose among them without a read.
    async with acquire(pool) as conn:
        partners = await Partners.load(conn)
    # Payouts go through the payment gateway; without PAYMENT_GATEWAY_ADDR they are
    # refused (FAILED_PRECONDITION) and nothing else changes.
    gateway_channel = (grpc.aio.insecure_channel(settings.payment_gateway_addr)
                       if settings.payment_gateway_addr else None)
    gateway = (PaymentGateway(gateway_channel, timeout_s=settings.payment_gateway_timeout_s)
               if gateway_channel is not None else None)
    core = build_core(settings, clock, partners=partners, gateway=gateway)
    transactions = Transactions(pool)
    tls = settings.mtls_files()
    policy = AccessPolicy.load(tls.access) if tls is not None else None
    health_servicer = health.aio.HealthServicer()
    # SERVING while this process serves, whatever the database does: for liveness probes.
    await health_servicer.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    admission = Admission(Bounds(settings.max_concurrent_rpcs, settings.max_calls_per_caller,
                                 settings.max_calls_per_connection, settings.max_streams))
    database = DatabaseWatch(health_servicer, pool, dsn, sample=metrics.sampler(pool, admission))
    options = grpc_options(settings, reuse_port=reuse_port)
    # No maximum_concurrent_rpcs: grpc.aio would count a call before knowing its caller,
    # and make calls past the limit wait. Admission bounds calls per caller instead.
    grpc_server = grpc.aio.server(options=options)
    # Every handler registered below gets admission, error mapping, metrics and the log line.
    # A WrappingServer stands in for the server (what it does not wrap, it forwards), so
    # it is typed as one for the add_*_to_server functions.
    server = cast(grpc.aio.Server, WrappingServer(grpc_server, CallWrapper(
        policy, admission, body_timeout_s=settings.request_body_timeout_s, on_unavailable=database.poke)))
    credit_line_pb2_grpc.add_CreditLineServiceServicer_to_server(
        CreditLineServicer(transactions, core.credit_lines), server)
    checkout_pb2_grpc.add_CheckoutServiceServicer_to_server(
        CheckoutServicer(transactions, core.checkout, core.repayments), server)
    repayment_pb2_grpc.add_RepaymentServiceServicer_to_server(
        RepaymentServicer(transactions, core.loans, core.repayments, core.statements, core.payouts), server)
    collections_pb2_grpc.add_CollectionsServiceServicer_to_server(
        CollectionsServicer(transactions, core.collections), server)
    risk_pb2_grpc.add_RiskServiceServicer_to_server(RiskServicer(transactions, core.risk, core.portfolio), server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    # What reflection.enable_server_reflection does for a grpc.aio server, through the
    # wrapping view (which that function would not recognise as an aio server).
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(reflection.aio.ReflectionServicer(
        SERVICE_NAMES + (health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)),
        server)
    try:
        if tls is not None:
            pair = [(tls.key.read_bytes(), tls.cert.read_bytes())]
            port = server.add_secure_port(settings.grpc_listen_addr, grpc.ssl_server_credentials(
                pair, root_certificates=tls.client_ca.read_bytes(), require_client_auth=True))
            if settings.grpc_token_listen_addr:
                # The second option: TLS without a client certificate, a bearer token per call.
                server.add_secure_port(settings.grpc_token_listen_addr, grpc.ssl_server_credentials(pair))
        else:
            log.warning("authentication_disabled", mode="insecure-local", address=settings.grpc_listen_addr,
                        detail="plaintext, every caller may call every method; for a developer's machine only")
            port = server.add_insecure_port(settings.grpc_listen_addr)
    except RuntimeError as error:
        raise SystemExit(f"GRPC_LISTEN_ADDR: cannot listen on {settings.grpc_listen_addr}: {error}") from error
    health_server = health_port = None
    if settings.health_listen_addr:
        # Probes without a certificate: plaintext, and nothing but the health service,
        # with admission bounds of its own so that probes and the API never starve each other.
        health_server = grpc.aio.server(options=options)
        health_admission = Admission(Bounds(64, 64, 16, max(1, settings.max_streams // 4)))
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, cast(grpc.aio.Server, WrappingServer(
            health_server, CallWrapper(None, health_admission, body_timeout_s=settings.request_body_timeout_s))))
        try:
            health_port = health_server.add_insecure_port(settings.health_listen_addr)
        except RuntimeError as error:
            raise SystemExit(f"HEALTH_LISTEN_ADDR: cannot listen on {settings.health_listen_addr}: {error}") from error
    await grpc_server.start()
    if health_server is not None:
        await health_server.start()
    running = Running(grpc_server, port, health_servicer, core, admission, database, health_server, health_port,
                      gateway_channel)
    await database.start()
    await mark_serving(running, serving)
    return running


async def mark_serving(running: Running, serving: bool = True) -> None:
    """Allow (or stop) reporting SERVING; it is reported while the database answers."""
    await running.database.allow(serving)


async def stop_server(running: Running, grace_s: float) -> None:
    await running.health.enter_graceful_shutdown()
    await running.database.stop()
    if running.health_server is not None:
        await running.health_server.stop(grace_s)
    await running.server.stop(grace_s)
    if running.gateway_channel is not None:
        await running.gateway_channel.close()


class DatabaseWatch:
    """The health service's view of the database: SERVING while PostgreSQL answers a
    `SELECT 1` (every second, and at once when a call found it unavailable), NOT_SERVING
    while it does not. It keeps a connection of its own, so a busy pool never looks like
    an outage; as it goes, it calls `sample` (which copies the state of the pool and
    of admission into the metrics)."""

    INTERVAL_S = 1.0
    TIMEOUT_S = 2.0

    def __init__(self, health_servicer: health.aio.HealthServicer, pool: asyncpg.Pool, dsn: str | None, *,
                 sample: Callable[[], None] = lambda: None) -> None:
        self._health = health_servicer
        self._pool = pool
        self._dsn = dsn
        self._allowed = False
        self._up: bool | None = None
        self._connection: asyncpg.Connection | None = None
        self._poked = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._sample = sample

    @property
    def up(self) -> bool:
        return bool(self._up)

    def poke(self) -> None:
        """A call found the database unavailable: check now."""
        self._poked.set()

    async def start(self) -> None:
        self._up = await self._check()
        metrics.DB_UP.set(1 if self._up else 0)
        self._task = asyncio.create_task(self._watch())

    async def allow(self, serving: bool) -> None:
        self._allowed = serving
        await self._report()

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task
        if self._connection is not None:
            self._connection.terminate()
            self._connection = None

    async def _report(self) -> None:
        serving = self._allowed and bool(self._up)
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("",) + SERVICE_NAMES:
            await self._health.set(name, status)

    async def _check(self) -> bool:
        try:
            if self._dsn is None:
                async with self._pool.acquire(timeout=self.TIMEOUT_S) as conn:
                    await conn.fetchval("SELECT 1", timeout=self.TIMEOUT_S)
                return True
            if self._connection is None or self._connection.is_closed():
                self._connection = await asyncpg.connect(
                    self._dsn, timeout=self.TIMEOUT_S, server_settings={"application_name": "credit-server-health"})
            await self._connection.fetchval("SELECT 1", timeout=self.TIMEOUT_S)
            return True
        except Exception as error:  # any failure means "not answering"; the next round tries again
            self._last_error = f"{type(error).__name__}: {error}"
            if self._connection is not None:
                self._connection.terminate()
                self._connection = None
            return False

    async def _watch(self) -> None:
        while not self._stop.is_set():
            self._poked.clear()
            up = await self._check()
            if up != self._up:
                self._up = up
                metrics.DB_UP.set(1 if up else 0)
                if up:
                    log.info("database_up")
                else:
                    log.warning("database_down", error=self._last_error,
                                detail="reporting NOT_SERVING until it answers again")
                await self._report()
            self._sample()
            waits = [asyncio.ensure_future(self._poked.wait()), asyncio.ensure_future(self._stop.wait())]
            await asyncio.wait(waits, timeout=self.INTERVAL_S, return_when=asyncio.FIRST_COMPLETED)
            for wait in waits:
                wait.cancel()


class ParentLink:
    """A child's end of the socket its parent keeps to it when SERVER_PROCESSES > 1.

    The child says `listening` once its port is open; the parent answers `serve` when
    every child listens, and only then does the child report SERVING, so a readiness
    probe passes only when connections can reach every process. The parent closing its
    end (its exit, even a SIGKILL) stops the child."""

    def __init__(self, index: int, fd: int):
        self.index = index
        self._fd = fd
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def listening(self, port: int) -> bool:
        """Tell the parent this child listens; True once it says to serve, False if it went away."""
        try:
            self._reader, self._writer = await asyncio.open_unix_connection(sock=socket.socket(fileno=self._fd))
            self._writer.write(f"listening {port}\n".encode())
            await self._writer.drain()
            return (await self._reader.readline()).strip() == b"serve"
        except OSError:
            return False

    async def wait_closed(self) -> None:
        """Return when the parent's end closes."""
        assert self._reader is not None
        with contextlib.suppress(OSError):
            while await self._reader.read(4096):
                pass

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


async def prepare_database(settings: Settings, dsn: str) -> None:
    """Wait for PostgreSQL (up to DB_CONNECT_TIMEOUT_S), migrate it once for all server
    processes, and refuse to start when their pools could ask it for more connections
    than it takes: better a clear error now than "too many connections" at the peak."""
    connection = await wait_for_database(dsn, settings.db_connect_timeout_s)
    try:
        await migrate(connection)
        limit = (int(await connection.fetchval("SHOW max_connections"))
                 - int(await connection.fetchval("SHOW superuser_reserved_connections"))
                 - int(await connection.fetchval("SHOW reserved_connections")))
    finally:
        await connection.close()
    # Each process: its pool, and the health watch's own connection.
    wanted = settings.server_processes * (settings.db_pool_max_size + 1)
    if wanted > limit:
        raise SystemExit(
            f"DB_POOL_MAX_SIZE: {settings.server_processes} server process(es) x ({settings.db_pool_max_size} pooled "
            f"+ 1 health) = {wanted} connections, but PostgreSQL takes {limit} (max_connections less its reserved "
            "ones); lower DB_POOL_MAX_SIZE or SERVER_PROCESSES, or raise max_connections")
    log.info("database_ready", connections_wanted=wanted, connections_available=limit)


async def serve(settings: Settings, dsn: str, clock: Clock | None = None, *,
                parent: ParentLink | None = None) -> None:
    """Migrate, serve until SIGTERM or SIGINT, then stop gracefully: new calls are
    refused, in-flight calls get SHUTDOWN_GRACE_S to finish, then the pool closes.

    With `parent` this is one of SERVER_PROCESSES processes: the parent has migrated,
    the port is shared, its events are `process_*` (the parent logs `server_*` once for
    all), and it also stops when the parent goes away."""
    clock = clock or SystemClock()
    if parent is None:
        await prepare_database(settings, dsn)
    pool = await create_pool(dsn, min_size=settings.db_pool_min_size, max_size=settings.db_pool_max_size,
                             command_timeout_s=settings.db_command_timeout_s)
    try:
        running = await start_server(settings, pool, clock, reuse_port=parent is not None, serving=parent is None,
                                     dsn=dsn)
    except BaseException:
        await pool.close()
        raise

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    sweeper = asyncio.create_task(
        sweep_expired_holds(running.core.checkout, pool, settings.hold_sweep_interval_s, stop))
    gauges = None
    if settings.metrics_listen_addr:
        if parent is None:  # the parent of SERVER_PROCESSES serves its children's metrics
            metrics.serve(settings.metrics_listen_addr, metrics.SERVER)
        gauges = asyncio.create_task(metrics.refresh_book_gauges(pool, settings.metrics_book_interval_s, stop))
    host = settings.grpc_listen_addr.rpartition(":")[0]
    address = f"{host}:{running.port}"
    orphaned: asyncio.Task | None = None
    if parent is None:
        extra = {"health_address": f"{settings.health_listen_addr.rpartition(':')[0]}:{running.health_port}"
                 } if running.health_port and settings.health_listen_addr else {}
        log.info("server_started", address=address, processes=1, services=list(SERVICE_NAMES), **extra)
    else:
        log.debug("process_listening", address=address)
        handshake = asyncio.create_task(parent.listening(running.port))
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait((handshake, stopped), return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if handshake.done() and handshake.result():
            await mark_serving(running)
            log.info("process_started", address=address)
            orphaned = asyncio.create_task(parent.wait_closed())
            orphaned.add_done_callback(lambda _: stop.set())
        else:
            handshake.cancel()
            stop.set()

    await stop.wait()
    prefix = "server" if parent is None else "process"
    log.info(f"{prefix}_stopping", grace_s=settings.shutdown_grace_s)
    await stop_server(running, settings.shutdown_grace_s)
    await sweeper
    if gauges is not None:
        await gauges
    await pool.close()
    if parent is not None:
        if orphaned is not None:
            orphaned.cancel()
        parent.close()
    log.info(f"{prefix}_stopped")
