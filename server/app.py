"""The gRPC server: wiring, start, background sweeps and graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from dataclasses import dataclass
from datetime import timedelta

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
from server.auth import AccessPolicy
from server.clock import Clock, SystemClock
from server.config import Settings
from server.core.accounts import CreditLines
from server.core.checkout import Checkout
from server.core.collections import Collections, CollectionsPolicy
from server.core.loans import Loans
from server.core.repayments import Repayments
from server.db.migrate import migrate
from server.db.pool import create_pool
from server.domain.pricing import DEFAULT_PRODUCT_TABLE, ProductTable
from server.domain.risk import load as load_ruleset
from server.interceptors import CallWrapper, WrappingServer
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


def build_core(settings: Settings, clock: Clock, products: ProductTable = DEFAULT_PRODUCT_TABLE) -> Core:
    products.check_cost_ceiling(settings.max_apr_bps)
    repayments = Repayments(clock)
    return Core(
        credit_lines=CreditLines(clock),
        checkout=Checkout(clock, products, timedelta(seconds=settings.hold_ttl_s), repayments,
                          load_ruleset() if settings.risk_checks else None),
        loans=Loans(clock),
        repayments=repayments,
        collections=Collections(clock, CollectionsPolicy(), repayments),
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


@dataclass
class Running:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    core: Core


async def start_server(settings: Settings, pool: asyncpg.Pool, clock: Clock, *, reuse_port: bool = False,
                       serving: bool = True) -> Running:
    """Build the gRPC server over `pool`, start it on GRPC_LISTEN_ADDR and mark it SERVING
    (with `serving=False` it reports NOT_SERVING until `mark_serving`). `reuse_port` lets
    the processes of SERVER_PROCESSES > 1 share the port; otherwise a second server on
    the same port is refused."""
    core = build_core(settings, clock)
    transactions = Transactions(pool)
    policy = AccessPolicy.load(settings.access_file) if settings.auth_mode == "mtls" else None
    grpc_server = grpc.aio.server(
        # Bounded requests: no message in this API comes near 1 MiB.
        maximum_concurrent_rpcs=1_000,
        # Alone, refuse to share the port with another process instead of silently splitting
        # traffic; as one of SERVER_PROCESSES, share it with the siblings the parent started.
        options=[("grpc.so_reuseport", 1 if reuse_port else 0), ("grpc.max_receive_message_length", 1 << 20)],
    )
    # Every handler registered below gets the access check, error mapping and log line.
    server = WrappingServer(grpc_server, CallWrapper(policy))
    credit_line_pb2_grpc.add_CreditLineServiceServicer_to_server(
        CreditLineServicer(transactions, core.credit_lines), server)
    checkout_pb2_grpc.add_CheckoutServiceServicer_to_server(
        CheckoutServicer(transactions, core.checkout, core.repayments), server)
    repayment_pb2_grpc.add_RepaymentServiceServicer_to_server(
        RepaymentServicer(transactions, core.loans, core.repayments), server)
    collections_pb2_grpc.add_CollectionsServiceServicer_to_server(
        CollectionsServicer(transactions, core.collections), server)
    risk_pb2_grpc.add_RiskServiceServicer_to_server(RiskServicer(transactions), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    # What reflection.enable_server_reflection does for a grpc.aio server, through the
    # wrapping view (which that function would not recognise as an aio server).
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(reflection.aio.ReflectionServicer(
        SERVICE_NAMES + (health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)),
        server)
    try:
        if settings.auth_mode == "mtls":
            pair = [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())]
            port = server.add_secure_port(settings.grpc_listen_addr, grpc.ssl_server_credentials(
                pair, root_certificates=settings.tls_client_ca_file.read_bytes(), require_client_auth=True))
            if settings.grpc_token_listen_addr:
                # The second option: TLS without a client certificate, a bearer token per call.
                server.add_secure_port(settings.grpc_token_listen_addr, grpc.ssl_server_credentials(pair))
        else:
            log.warning("authentication_disabled", mode="insecure-local", address=settings.grpc_listen_addr,
                        detail="plaintext, every caller may call every method; for a developer's machine only")
            port = server.add_insecure_port(settings.grpc_listen_addr)
    except RuntimeError as error:
        raise SystemExit(f"GRPC_LISTEN_ADDR: cannot listen on {settings.grpc_listen_addr}: {error}") from error
    await grpc_server.start()
    running = Running(grpc_server, port, health_servicer, core)
    await mark_serving(running, serving)
    return running


async def mark_serving(running: Running, serving: bool = True) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ("",) + SERVICE_NAMES:
        await running.health.set(name, status)


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


async def serve(settings: Settings, dsn: str, clock: Clock | None = None, *,
                parent: ParentLink | None = None) -> None:
    """Migrate, serve until SIGTERM or SIGINT, then stop gracefully: new calls are
    refused, in-flight calls get SHUTDOWN_GRACE_S to finish, then the pool closes.

    With `parent` this is one of SERVER_PROCESSES processes: the parent has migrated,
    the port is shared, its events are `process_*` (the parent logs `server_*` once for
    all), and it also stops when the parent goes away."""
    clock = clock or SystemClock()
    if parent is None:
        connection = await asyncpg.connect(dsn, timeout=30)
        try:
            await migrate(connection)
        finally:
            await connection.close()
    pool = await create_pool(dsn, min_size=settings.db_pool_min_size, max_size=settings.db_pool_max_size,
                             command_timeout_s=settings.db_command_timeout_s)
    try:
        running = await start_server(settings, pool, clock, reuse_port=parent is not None, serving=parent is None)
    except BaseException:
        await pool.close()
        raise

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    sweeper = asyncio.create_task(
        sweep_expired_holds(running.core.checkout, pool, settings.hold_sweep_interval_s, stop))
    host = settings.grpc_listen_addr.rpartition(":")[0]
    address = f"{host}:{running.port}"
    orphaned: asyncio.Task | None = None
    if parent is None:
        log.info("server_started", address=address, processes=1, services=list(SERVICE_NAMES))
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
    await running.health.enter_graceful_shutdown()
    await running.server.stop(settings.shutdown_grace_s)
    await sweeper
    await pool.close()
    if parent is not None:
        if orphaned is not None:
            orphaned.cancel()
        parent.close()
    log.info(f"{prefix}_stopped")
