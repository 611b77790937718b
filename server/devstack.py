"""python -m server.devstack: the whole system on one machine, for `make run`.

Starts an embedded PostgreSQL (unless DATABASE_URL is set), a local SMTP sink that
keeps every email as an .eml file under VAR_DIR/mail, the voice-gateway and
payment-gateway simulators, the gRPC server and the collections bot, prints where each listens, and stops them
all on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import grpc

from collections_bot.mail_sink import start as start_mail_sink
from server import contact_crypto
from server.config import Settings, SettingsError, address_setting, int_setting
from server.core import merchant_settlements
from server.db.migrate import migrate
from server.logging import configure_logging, json_stdlib_loggers
from server.probe import wait_until_serving

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    # A developer's machine: plaintext on loopback, no authentication (the server says
    # so in its log). Set AUTH_MODE=mtls and the TLS settings to try the real thing.
    os.environ.setdefault("AUTH_MODE", "insecure-local")
    try:
        settings = Settings.from_env()
        smtp_port = int_setting(os.environ, "SMTP_PORT", 2525, minimum=1, maximum=65_535)
        voice_address = address_setting(os.environ, "VOICE_GATEWAY_ADDR", "127.0.0.1:50061")
        payment_address = address_setting(os.environ, "PAYMENT_GATEWAY_ADDR", "127.0.0.1:50071")
        metrics_address = address_setting(os.environ, "METRICS_LISTEN_ADDR", "127.0.0.1:9100")
        health_address = address_setting(os.environ, "HEALTH_LISTEN_ADDR", "127.0.0.1:8081")
    except SettingsError as error:
        sys.exit(f"bad setting: {error}")
    configure_logging(settings.log_level)
    json_stdlib_loggers("mail")  # the SMTP sink below runs in this process: aiosmtpd's log
    var_dir = settings.var_dir.resolve()
    var_dir.mkdir(parents=True, exist_ok=True)
    secrets_env = contact_crypto.development_env(var_dir)
    dsn = settings.database_url
    if dsn is None:
        from server.db.embedded import start_embedded_postgres

        dsn = start_embedded_postgres(var_dir).get_uri()

    async def migrate_once() -> None:
        connection = await asyncpg.connect(dsn, timeout=30)
        try:
            await migrate(connection)
            await merchant_settlements.register_demo_merchants(connection, datetime.now(UTC))
        finally:
            await connection.close()

    asyncio.run(migrate_once())
    mail_folder = var_dir / "mail"
    controller, _ = start_mail_sink("127.0.0.1", smtp_port, mail_folder)
    env = {**secrets_env, **os.environ, "DATABASE_URL": dsn, "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp_port),
           "VAR_DIR": str(var_dir), "VOICE_GATEWAY_ADDR": voice_address, "PAYMENT_GATEWAY_ADDR": payment_address}
    # The server's metrics on METRICS_LISTEN_ADDR, the bot's on the next port.
    metrics_host, _, metrics_port = metrics_address.rpartition(":")
    bot_metrics_address = f"{metrics_host}:{int(metrics_port) + 1}"
    server_env = {**env, "METRICS_LISTEN_ADDR": metrics_address, "HEALTH_LISTEN_ADDR": health_address}
    bot_env = {**env, "METRICS_LISTEN_ADDR": bot_metrics_address}
    children: list[subprocess.Popen] = []
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        voice = subprocess.Popen([sys.executable, "-m", "collections_bot.voice_sim", "--listen", voice_address],
                                 cwd=ROOT, env=env)
        children.append(voice)
        payments_file = var_dir / "payment_sim.json"
        children.append(subprocess.Popen([sys.executable, "-m", "server.payment_sim", "--listen", payment_address,
                                          "--state-file", str(payments_file)], cwd=ROOT, env=env))
        for address in (voice_address, payment_address):
            with grpc.insecure_channel(address) as channel:
                grpc.channel_ready_future(channel).result(timeout=60)
        server = subprocess.Popen([sys.executable, "-m", "server"], cwd=ROOT, env=server_env)
        children.append(server)
        credentials = None
        tls = settings.mtls_files()
        if tls is not None:
            # Health is public; the server's own certificate is enough to say hello.
            credentials = grpc.ssl_channel_credentials(
                root_certificates=tls.client_ca.read_bytes(),
                private_key=tls.key.read_bytes(),
                certificate_chain=tls.cert.read_bytes())
        wait_until_serving(settings.grpc_listen_addr, 90, lambda: server.poll() is None, credentials)
        children.append(subprocess.Popen([sys.executable, "-m", "collections_bot"], cwd=ROOT, env=bot_env))
        print("\n".join([
            "",
            "credit service is up:",
            f"  gRPC server        {settings.grpc_listen_addr}   (grpcurl -plaintext {settings.grpc_listen_addr} list)",
            f"  health (probes)    {health_address}   (plaintext, grpc.health.v1.Health only)",
            f"  metrics            http://{metrics_address}/metrics (server)",
            f"                     http://{bot_metrics_address}/metrics (collections bot)",
            f"  PostgreSQL         {dsn}",
            f"  SMTP sink          127.0.0.1:{smtp_port}   (emails land in {mail_folder}/)",
            f"  voice gateway      {voice_address}   (simulator; the dialled number's last digit picks the callee)",
            f"  payment gateway    {payment_address}   (simulator; the instrument's last digit picks the outcome;"
            f" payments kept in {payments_file})",
            "  collections bot    running, a pass every COLLECTIONS_INTERVAL_S (default 60 s); it settles each"
            " closed merchant-day and pays it through the payment gateway",
            "  merchants          " + ", ".join(f"{merchant} ({category.value})" for merchant, category
                                                  in merchant_settlements.DEMO_MERCHANTS.items())
            + " registered; any other merchant id is GENERAL",
            "Ctrl-C stops everything.",
            "",
        ]), flush=True)
        while not stop.is_set() and all(child.poll() is None for child in children):
            stop.wait(0.5)
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        for child in children:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
        controller.stop()
    failed = [child.args for child in children if child.returncode not in (0, -signal.SIGTERM)]
    sys.exit(f"stopped because a part exited: {failed}" if failed and not stop.is_set() else 0)


if __name__ == "__main__":
    main()
