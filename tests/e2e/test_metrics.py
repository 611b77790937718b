"""The metrics of the server (one process and several) and of the bot, scraped as
Prometheus would: the documented names are there and the counters move with the work."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import grpc
import pytest

from collections_bot.mail_sink import start as start_mail_sink
from credit.v1 import credit_line_pb2
from tests.e2e.conftest import ROOT, free_port, start_server_process
from tests.e2e.test_admission import scrape
from tests.e2e.test_bot import bot_env
from tests.support import Api, buy, repay

SERVER_METRICS = {
    "credit_rpc_handled_total", "credit_rpc_duration_seconds_bucket", "credit_rpc_duration_seconds_count",
    "credit_rpc_in_progress", "credit_db_pool_connections", "credit_db_pool_waiting", "credit_db_up",
    "credit_holds_pending", "credit_holds_pending_minor", "credit_loans",
}
BOT_METRICS = {
    "credit_bot_passes_total", "credit_bot_pass_duration_seconds_count", "credit_bot_accounts_reviewed_total",
    "credit_bot_penalty_days_total", "credit_bot_penalty_minor_total",
}


def names(samples: dict[str, float]) -> set[str]:
    return {name.partition("{")[0] for name in samples}


def wait_for(address: str, check, timeout_s: float = 30) -> dict[str, float]:
    """Scrape until `check(samples)` holds; the last samples."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            samples = scrape(address)
            if check(samples):
                return samples
        except OSError:
            samples = {}
        if time.monotonic() > deadline:
            raise AssertionError(f"metrics at {address} never satisfied the check: {sorted(samples)[:50]}")
        time.sleep(0.3)


@pytest.mark.parametrize("processes", ["1", "2"])
async def test_the_server_reports_calls_pool_and_book(db_dsn, tmp_path, processes):
    metrics_address = f"127.0.0.1:{free_port()}"
    server = start_server_process(db_dsn, tmp_path / "server.log", METRICS_LISTEN_ADDR=metrics_address,
                                  METRICS_BOOK_INTERVAL_S="1", SERVER_PROCESSES=processes)
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            api = Api(channel)
            account = await api.open_account(limit_minor=1_000_000)
            await buy(api, account.account_id, 200_000)
            await api.authorize(account.account_id, 50_000)  # left pending
            with pytest.raises(grpc.aio.AioRpcError):
                await api.lines.GetAccount(credit_line_pb2.GetAccountRequest(account_id="not-a-uuid"), timeout=10)

        samples = wait_for(metrics_address, lambda s: s.get("credit_holds_pending") == 1
                           and s.get('credit_loans{status="ACTIVE"}') == 1)
        assert SERVER_METRICS <= names(samples), SERVER_METRICS - names(samples)
        assert not any(name.startswith("credit_bot_") for name in names(samples))
        assert samples['credit_rpc_handled_total{code="OK",method="/credit.v1.CheckoutService/Authorize"}'] == 2
        assert samples['credit_rpc_handled_total{code="OK",method="/credit.v1.CheckoutService/Capture"}'] == 1
        assert samples['credit_rpc_handled_total{code="INVALID_ARGUMENT",'
                       'method="/credit.v1.CreditLineService/GetAccount"}'] == 1
        assert samples['credit_rpc_duration_seconds_count{method="/credit.v1.CheckoutService/Authorize"}'] == 2
        assert samples["credit_holds_pending_minor"] == 50_000
        assert samples["credit_db_up"] == 1
        assert samples['credit_db_pool_connections{state="idle"}'] >= 1
    finally:
        assert server.stop() == 0, server.log()


async def test_the_bot_reports_its_passes(db_dsn, tmp_path):
    controller, _ = start_mail_sink("127.0.0.1", free_port())
    server = start_server_process(db_dsn, tmp_path / "server.log")
    metrics_address = f"127.0.0.1:{free_port()}"
    bot = None
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            api = Api(channel)
            account = await api.open_account(limit_minor=1_000_000)
            await buy(api, account.account_id, 200_000)
            await repay(api, account.account_id, 1_000)
        bot = subprocess.Popen([sys.executable, "-m", "collections_bot"], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.STDOUT,
                               env=bot_env(db_dsn, controller.port, METRICS_LISTEN_ADDR=metrics_address,
                                           COLLECTIONS_INTERVAL_S="1"))
        samples = await asyncio.to_thread(
            wait_for, metrics_address, lambda s: s.get('credit_bot_passes_total{result="ok"}', 0) >= 2)
        assert BOT_METRICS <= names(samples), BOT_METRICS - names(samples)
        assert not names(samples) & SERVER_METRICS  # each process reports only its own
        assert samples["credit_bot_accounts_reviewed_total"] >= 0
        assert samples["credit_bot_pass_duration_seconds_count"] >= 2
    finally:
        if bot is not None:
            bot.terminate()
            assert bot.wait(30) == 0
        controller.stop()
        assert server.stop() == 0, server.log()
