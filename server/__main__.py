"""python -m server: serve the credit API. With no DATABASE_URL, an embedded PostgreSQL
under VAR_DIR is started and stopped with the process.

With SERVER_PROCESSES=N above 1 this process is a parent that serves nothing itself: it
starts the embedded PostgreSQL when DATABASE_URL is unset, migrates once, settles the
ports (a port of 0 becomes one free port for all), then runs N children, each
`python -m server` again with CHILD_ENV set, which listen on the same port with
SO_REUSEPORT and share nothing but the database. It forwards SIGTERM and SIGINT to them
and exits 0 once they all stopped cleanly; when one ends on its own it stops the others
and exits 1 (restarting it is left to whatever supervises this process)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog
import uvloop
from structlog.typing import EventDict, WrappedLogger

from server import contact_crypto, metrics
from server.app import ParentLink, prepare_database, serve
from server.config import MAX_SERVER_PROCESSES, Settings, SettingsError
from server.logging import configure_logging

log = structlog.get_logger("server.processes")

# Set by the parent on each child: "<index>:<file descriptor of the child's end of its link>".
CHILD_ENV = "SERVER_PROCESS_CHILD"
# How long the children together may take to listen.
STARTUP_TIMEOUT_S = 120
# How long a child may take to stop beyond SHUTDOWN_GRACE_S (hold sweeper, pool) before it is killed.
STOP_MARGIN_S = 15


def main() -> None:
    try:
        settings = Settings.from_env()
        contact_crypto.configure(contact_crypto.from_env())
        child = child_marker(os.environ)
    except (SettingsError, contact_crypto.ContactKeyError) as error:
        sys.exit(f"bad setting: {error}")
    configure_logging(settings.log_level)
    if child is not None:
        index, fd = child
        assert settings.database_url is not None  # child_marker checked DATABASE_URL
        tag_log_lines(process=index, pid=os.getpid())
        uvloop.run(serve(settings, settings.database_url, parent=ParentLink(index, fd)))
        return
    if settings.server_processes > 1:
        tag_log_lines(process=0, pid=os.getpid())
        sys.exit(run_processes(settings))
    dsn = settings.database_url
    if dsn is None:
        from server.db.embedded import start_embedded_postgres

        dsn = start_embedded_postgres(settings.var_dir).get_uri()
    uvloop.run(serve(settings, dsn))


def child_marker(env: Mapping[str, str]) -> tuple[int, int] | None:
    """(index, link descriptor) when the parent of SERVER_PROCESSES started this process."""
    raw = env.get(CHILD_ENV)
    if not raw:
        return None
    index, _, fd = raw.partition(":")
    if not (index.isdigit() and fd.isdigit() and 1 <= int(index) <= MAX_SERVER_PROCESSES):
        raise SettingsError(f"{CHILD_ENV} is internal to SERVER_PROCESSES, got {raw!r}")
    if not env.get("DATABASE_URL"):
        raise SettingsError(f"{CHILD_ENV} needs DATABASE_URL, which the parent sets")
    return int(index), int(fd)


def tag_log_lines(**fields: object) -> None:
    """Add `fields` to every log line of this process (`process`: 0 for the parent, 1..N
    for the children; `pid`), so the lines of processes sharing one log can be told apart.
    (Lines of several processes never mix: server.logging writes each line in one write.)"""
    processors = structlog.get_config()["processors"]

    def tag(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        for name, value in fields.items():
            event_dict.setdefault(name, value)
        return event_dict

    structlog.configure(processors=[*processors[:-1], tag, processors[-1]])


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run_processes(settings: Settings) -> int:
    """The parent of SERVER_PROCESSES: returns the exit code."""
    # Until the event loop takes over, a stop request still ends in a normal interpreter
    # exit, so the embedded PostgreSQL is stopped rather than left running.
    signal.signal(signal.SIGTERM, _interrupt)
    embedded = None
    try:
        dsn = settings.database_url
        if dsn is None:
            from server.db.embedded import start_embedded_postgres

            embedded = start_embedded_postgres(settings.var_dir)
            dsn = embedded.get_uri()
        return asyncio.run(supervise(settings, dsn))
    except KeyboardInterrupt:
        log.warning("server_stopped", detail="stopped before the processes were serving")
        return 1
    finally:
        if embedded is not None:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            embedded.cleanup()


def reserve_address(address: str, name: str) -> tuple[str, list[socket.socket]]:
    """Check that nothing is bound to `address` and hold its port for the children.

    Returns HOST:PORT, a port of 0 replaced by a free port, and the sockets that hold it:
    bound with SO_REUSEPORT but never listening, so they take no connection, keep other
    programs off the port and let the children (which set SO_REUSEPORT too) bind it.
    The check binds without SO_REUSEPORT first, so a port served by another group of
    SO_REUSEPORT servers is refused instead of silently shared."""
    host, _, port_text = address.rpartition(":")
    try:
        found = socket.getaddrinfo(host.strip("[]"), int(port_text), type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        raise SystemExit(f"{name}: cannot listen on {address}: {error}") from error
    # str for the AF_INET and AF_INET6 addresses that SOCK_STREAM finds.
    targets = list(dict.fromkeys((family, str(sockaddr[0])) for family, _, _, _, sockaddr in found))
    for _ in range(10):
        port = int(port_text)
        held: list[socket.socket] = []
        try:
            for family, ip in targets:
                try:
                    port = _hold(held, family, ip, port)
                except OSError as error:
                    # localhost may name ::1 on a machine without IPv6: one address is enough.
                    if error.errno not in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or (
                            family, ip) == targets[-1] and not held:
                        raise
            return f"{host}:{port}", held
        except OSError as error:
            for sock in held:
                sock.close()
            # A free port picked on one address may be taken on the next: pick again.
            if not (int(port_text) == 0 and error.errno == errno.EADDRINUSE):
                raise SystemExit(f"{name}: cannot listen on {address}: {error}") from error
    raise SystemExit(f"{name}: cannot listen on {address}: no port free on every address")


def _hold(held: list[socket.socket], family: int, ip: str, port: int) -> int:
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no conflict
        probe.bind((ip, port))
        port = probe.getsockname()[1]
    holder = socket.socket(family, socket.SOCK_STREAM)
    try:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind((ip, port))
    except OSError:
        holder.close()
        raise
    held.append(holder)
    return port


@dataclass
class Child:
    index: int
    process: asyncio.subprocess.Process
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def wait_listening(self) -> bool:
        """True once the child says it listens; False when it ends first."""
        with contextlib.suppress(OSError):
            return (await self.reader.readline()).startswith(b"listening")
        return False


async def start_child(index: int, env: dict[str, str]) -> Child:
    parent_end, child_end = socket.socketpair()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "server", env={**env, CHILD_ENV: f"{index}:{child_end.fileno()}"},
            pass_fds=(child_end.fileno(),), stdin=asyncio.subprocess.DEVNULL,
            # Its own process group: a Ctrl-C reaches the parent only, which stops the children.
            process_group=0)
    except BaseException:
        parent_end.close()
        raise
    finally:
        child_end.close()
    reader, writer = await asyncio.open_unix_connection(sock=parent_end)
    return Child(index, process, reader, writer)


async def supervise(settings: Settings, dsn: str) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await prepare_database(settings, dsn)
    held: list[socket.socket] = []
    children: list[Child] = []
    metrics_dir = None
    try:
        address, sockets = reserve_address(settings.grpc_listen_addr, "GRPC_LISTEN_ADDR")
        held += sockets
        env = {**os.environ, "DATABASE_URL": dsn, "GRPC_LISTEN_ADDR": address}
        token_address = None
        if settings.grpc_token_listen_addr:
            token_address, sockets = reserve_address(settings.grpc_token_listen_addr, "GRPC_TOKEN_LISTEN_ADDR")
            held += sockets
            env["GRPC_TOKEN_LISTEN_ADDR"] = token_address
        if settings.health_listen_addr:
            env["HEALTH_LISTEN_ADDR"], sockets = reserve_address(settings.health_listen_addr, "HEALTH_LISTEN_ADDR")
            held += sockets
        if settings.metrics_listen_addr:
            # The children write their samples here; this process serves their sum.
            metrics_dir = tempfile.mkdtemp(prefix="credit-metrics-")
            env[metrics.MULTIPROCESS_ENV] = metrics_dir
            metrics.serve(settings.metrics_listen_addr, metrics.SERVER, children_dir=metrics_dir)
        for index in range(1, settings.server_processes + 1):
            children.append(await start_child(index, env))
        requested = await watch(children, stop, address, token_address)
    finally:
        await stop_children(children, settings.shutdown_grace_s + STOP_MARGIN_S)
        for sock in held:
            sock.close()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    clean = requested and all(child.process.returncode in (0, -signal.SIGTERM) for child in children)
    (log.info if clean else log.error)("server_stopped", exit_code=0 if clean else 1)
    return 0 if clean else 1


async def watch(children: list[Child], stop: asyncio.Event, address: str, token_address: str | None) -> bool:
    """Let the children serve once all listen, until a stop is asked for (True) or a
    child ends or fails to start (False)."""
    exits: dict[asyncio.Future[Any], Child] = {
        asyncio.ensure_future(child.process.wait()): child for child in children}
    stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    ready: asyncio.Future[list[bool]] = asyncio.gather(*(child.wait_listening() for child in children))
    # Cancelled on the way out: its outcome is read here so that it is not reported as lost.
    ready.add_done_callback(lambda future: future.cancelled() or future.exception())
    try:
        done, _ = await asyncio.wait({ready, stopping, *exits}, timeout=STARTUP_TIMEOUT_S,
                                     return_when=asyncio.FIRST_COMPLETED)
        if stopping in done:
            return True
        if ready in done and all(ready.result()):
            # Logged first, so whoever saw SERVING finds this line in the log.
            fields = {"bearer_address": token_address} if token_address else {}
            log.info("server_started", address=address, processes=len(children),
                     pids=[child.process.pid for child in children], **fields)
            for child in children:
                child.writer.write(b"serve\n")
            done, _ = await asyncio.wait({stopping, *exits}, return_when=asyncio.FIRST_COMPLETED)
            if stopping in done:
                return True
        elif not done:
            log.error("processes_not_started", timeout_s=STARTUP_TIMEOUT_S)
        # Let a child that just ended be reaped, so its exit is logged with its code.
        await asyncio.wait(exits, timeout=1, return_when=asyncio.FIRST_COMPLETED)
        for task, child in exits.items():
            if task.done():
                log.error("process_exited", child=child.index, child_pid=child.process.pid,
                          exit_code=child.process.returncode, detail="stopping the other processes")
        return False
    finally:
        for task in (ready, stopping, *exits):
            task.cancel()


async def stop_children(children: list[Child], timeout_s: float) -> None:
    """SIGTERM every child still running, wait up to `timeout_s` for all, kill the rest."""
    if any(child.process.returncode is None for child in children):
        log.info("server_stopping", processes=len(children), timeout_s=timeout_s)
    for child in children:
        if child.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
    deadline = asyncio.get_running_loop().time() + timeout_s
    for child in children:
        try:
            await asyncio.wait_for(child.process.wait(), max(0.1, deadline - asyncio.get_running_loop().time()))
        except TimeoutError:
            log.error("process_killed", child=child.index, child_pid=child.process.pid, timeout_s=timeout_s)
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()
            await child.process.wait()
        child.writer.close()


if __name__ == "__main__":
    main()
