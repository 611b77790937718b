"""python -m collections_bot              run as a daemon: a pass every COLLECTIONS_INTERVAL_S
                                         (auto-debits, collections, statements, then the
                                         payment orders' sweep)
python -m collections_bot run-once --as-of 2027-01-15T10:00:00+08:00
                                         one pass at a given time, then exit"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from datetime import datetime

import grpc
import structlog
import uvloop

from collections_bot import metrics as bot_metrics
from collections_bot.channels.email import EmailChannel
from collections_bot.config import BotSettings
from collections_bot.passes import CollectionsPass
from collections_bot.payments import PaymentsTask
from collections_bot.statements import StatementsPass
from collections_bot.voice.channel import VoiceChannel
from server import contact_crypto, metrics
from server.clock import Clock, FixedClock, SystemClock
from server.config import SettingsError
from server.core.collections import Collections
from server.core.database import embedded_dsn, open_pool
from server.core.payment_orders import PaymentOrders
from server.core.repayments import Repayments
from server.core.statements import Statements
from server.interceptors import database_error_kind
from server.logging import configure_logging
from server.payments.gateway import PaymentGateway

log = structlog.get_logger("collections_bot")


def _email(settings: BotSettings) -> EmailChannel:
    return EmailChannel(host=settings.smtp_host, port=settings.smtp_port, starttls=settings.smtp_starttls,
                        username=settings.smtp_username, password=settings.smtp_password,
                        timeout_s=settings.smtp_timeout_s, tries=settings.smtp_tries_per_pass,
                        retry_base_s=settings.smtp_retry_base_s, ca_file=settings.smtp_ca_file)


def build_statements(pool, settings: BotSettings, clock: Clock) -> StatementsPass:
    statements = Statements(mail_domain=settings.policy.mail_domain, email_retry=settings.policy.email_retry)
    return StatementsPass(pool, clock, statements, settings, _email(settings))


def build(pool, settings: BotSettings, clock: Clock) -> CollectionsPass:
    email = _email(settings)
    collections = Collections(clock, settings.policy, Repayments(clock))
    voice = None
    if settings.voice_gateway_addr:
        voice = VoiceChannel(address=settings.voice_gateway_addr, caller_id=settings.voice_caller_id,
                             call_timeout_s=settings.voice_call_timeout_s,
                             read_timeout_s=settings.voice_read_timeout_s)
    return CollectionsPass(pool, clock, collections, settings, email, voice)


def payments_task(pool, settings: BotSettings, clock: Clock, channel: grpc.aio.Channel) -> PaymentsTask:
    gateway = PaymentGateway(channel, timeout_s=settings.payment_gateway_timeout_s)
    return PaymentsTask(pool, clock, PaymentOrders(clock, gateway),
                        reconcile_after_s=settings.payment_reconcile_after_s,
                        auto_debit_hour=settings.policy.auto_debit_hour, batch_size=settings.batch_size)


async def _open(settings: BotSettings, dsn: str):
    return await open_pool(dsn, connect_timeout_s=settings.db_connect_timeout_s, max_size=4, command_timeout_s=60)


async def run_once(settings: BotSettings, dsn: str, as_of: datetime) -> int:
    pool = await _open(settings, dsn)
    swept: dict = {}
    debited: dict = {}
    try:
        clock = FixedClock(as_of)
        async with contextlib.AsyncExitStack() as stack:
            payments = None
            if settings.payment_gateway_addr:
                channel = await stack.enter_async_context(grpc.aio.insecure_channel(settings.payment_gateway_addr))
                payments = payments_task(pool, settings, clock, channel)
                # Auto-debits first: what they pay at once is paid before reminders are planned.
                debited = dict(await payments.debit())
            report = await build(pool, settings, clock).run()
            statements = await build_statements(pool, settings, clock).run()
            if payments is not None:
                swept = dict(await payments.sweep())
    finally:
        await pool.close()
    print(f"reviewed {report.reviewed} accounts ({report.busy} busy, {report.failed} failed), "
          f"booked {report.penalty_days} penalty days ({report.penalty_minor} fen), "
          f"charged off {report.charged_off} loans, planned {dict(report.planned)}, "
          f"delivered {dict(report.delivered)}, settled {report.merchant_days_settled} merchant-days, "
          f"auto-debits {debited}, payments swept {swept}")
    print(f"issued {statements.issued} statements ({statements.busy} accounts busy, {statements.failed} failed), "
          f"emailed {dict(statements.emails)}")
    return 0


async def run_daemon(settings: BotSettings, dsn: str) -> int:
    pool = await _open(settings, dsn)
    metrics.serve(settings.metrics_listen_addr, bot_metrics.BOT)
    clock = SystemClock()
    bot = build(pool, settings, clock)
    statements = build_statements(pool, settings, clock)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("bot_started", interval_s=settings.interval_s)
    channel = grpc.aio.insecure_channel(settings.payment_gateway_addr) if settings.payment_gateway_addr else None
    payments = payments_task(pool, settings, clock, channel) if channel is not None else None
    watching = asyncio.create_task(payments.watch(stop)) if payments is not None else None

    async def passes() -> None:
        while not stop.is_set():
            if payments is not None:
                try:
                    # First, so that a debit answered at once is paid before reminders are planned.
                    await payments.debit()
                except Exception:
                    # Like a pass: the next round tries again; orders written stay for the sweep.
                    log.exception("auto_debit_failed")
            try:
                await bot.run()
                await statements.run()
            except Exception as error:
                # The next pass tries again; a database away is a warning, anything else a bug.
                bot_metrics.PASSES.labels("failed").inc()
                kind = database_error_kind(error)
                if kind is not None:
                    bot_metrics.BOT_DB_ERRORS.labels(kind, type(error).__name__).inc()
                    log.warning("pass_failed", error=f"{type(error).__name__}: {error}", kind=kind)
                else:
                    log.exception("pass_failed")
            if payments is not None:
                try:
                    await payments.sweep()
                except Exception:
                    # Like a pass: the next round tries again.
                    log.exception("payment_sweep_failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=settings.interval_s)

    worker = asyncio.create_task(passes())
    await stop.wait()
    log.info("bot_stopping", timeout_s=settings.stop_timeout_s)
    try:
        # A pass in progress may finish its current work; past the bound it is cancelled,
        # which rolls back the account in hand (everything committed stays).
        await asyncio.wait_for(worker, timeout=settings.stop_timeout_s)
    except TimeoutError:
        log.warning("pass_cancelled_at_stop")
    if watching is not None:
        await watching
    if channel is not None:
        await channel.close()
    await pool.close()
    log.info("bot_stopped")
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m collections_bot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command")
    once = commands.add_parser("run-once", help="run one pass at a given time and exit")
    once.add_argument("--as-of", required=True, type=datetime.fromisoformat,
                      help="ISO time with offset, e.g. 2027-01-15T10:00:00+08:00")
    args = parser.parse_args(argv)
    try:
        settings = BotSettings.from_env()
        contact_crypto.configure(contact_crypto.from_env())
    except (SettingsError, contact_crypto.ContactKeyError) as error:
        sys.exit(f"bad setting: {error}")
    if args.command == "run-once" and args.as_of.tzinfo is None:
        parser.error("--as-of needs a UTC offset, e.g. 2027-01-15T10:00:00+08:00")
    configure_logging(settings.log_level)
    dsn = settings.database_url
    if dsn is None:
        dsn = embedded_dsn(settings.var_dir)
    if args.command == "run-once":
        sys.exit(uvloop.run(run_once(settings, dsn, args.as_of)))
    sys.exit(uvloop.run(run_daemon(settings, dsn)))


if __name__ == "__main__":
    main()
