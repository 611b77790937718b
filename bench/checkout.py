"""Load generator for checkout: Authorize + Capture pairs per second, with p50/p99.

Runs in its own process against a server process: the one named by --target, or one it
starts itself (python -m server on an embedded PostgreSQL under var/bench). Every loop
is bounded by both a duration and a count.

    python -m bench.checkout [--duration-s 20] [--concurrency 16] [--accounts 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import grpc
import uvloop

from credit.v1 import checkout_pb2, checkout_pb2_grpc, common_pb2, credit_line_pb2, credit_line_pb2_grpc
from server import contact_crypto
from server.probe import wait_until_serving

ROOT = Path(__file__).resolve().parents[1]
MAX_PAIRS = 1_000_000


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, round(fraction * (len(sorted_values) - 1)))
    return sorted_values[index]


@contextmanager
def local_server(log_level: str, risk_checks: bool = True):
    """A server process on an embedded PostgreSQL kept under var/bench."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"127.0.0.1:{port}"
    var_dir = ROOT / "var" / "bench"
    env = {**contact_crypto.development_env(var_dir), **os.environ, "VAR_DIR": str(var_dir),
           "GRPC_LISTEN_ADDR": address,
           "LOG_LEVEL": log_level, "RISK_CHECKS": "on" if risk_checks else "off",
           "AUTH_MODE": "insecure-local"}
    env.pop("DATABASE_URL", None)
    log_path = ROOT / "var" / "bench-server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen([sys.executable, "-m", "server"], cwd=ROOT, env=env,
                                   stdout=subprocess.DEVNULL, stderr=log_file)
    try:
        try:
            wait_until_serving(address, 90, lambda: process.poll() is None)
        except RuntimeError as error:
            raise SystemExit(f"{error}; see {log_path}") from None
        yield address
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


async def open_accounts(channel: grpc.aio.Channel, count: int) -> list[str]:
    lines = credit_line_pb2_grpc.CreditLineServiceStub(channel)
    run = uuid.uuid4().hex[:8]
    semaphore = asyncio.Semaphore(32)

    async def one(i: int) -> str:
        async with semaphore:
            account = await lines.OpenAccount(credit_line_pb2.OpenAccountRequest(
                customer_id=f"bench-{run}-{i}", idempotency_key=f"bench-open-{run}-{i}",
                contact=credit_line_pb2.Contact(name="Bench", email="bench@example.com", phone="+8613800138000")),
                timeout=30)
            await lines.AdjustLimit(credit_line_pb2.AdjustLimitRequest(
                account_id=account.account_id, credit_limit_minor=10**10, risk_grade=common_pb2.RISK_GRADE_A,
                reason="bench", idempotency_key=f"bench-limit-{run}-{i}"), timeout=30)
            return account.account_id

    return await asyncio.gather(*(one(i) for i in range(count)))


async def run_load(address: str, accounts: int, concurrency: int, duration_s: float) -> dict:
    async with grpc.aio.insecure_channel(address) as channel:
        account_ids = await open_accounts(channel, accounts)
        checkout = checkout_pb2_grpc.CheckoutServiceStub(channel)
        authorize_ms: list[float] = []
        capture_ms: list[float] = []
        pair_ms: list[float] = []
        errors: dict[str, int] = {}
        declined = 0
        declines: dict[str, int] = {}
        stop_at = time.monotonic() + duration_s

        async def worker(seed: int) -> None:
            nonlocal declined
            rng = random.Random(seed)
            while time.monotonic() < stop_at and len(pair_ms) < MAX_PAIRS:
                account_id = rng.choice(account_ids)
                started = time.perf_counter()
                try:
                    auth = await checkout.Authorize(checkout_pb2.AuthorizeRequest(
                        account_id=account_id, merchant_id="bench", order_id=uuid.uuid4().hex,
                        amount_minor=rng.randrange(10_000, 500_000), term_months=rng.choice((1, 3, 6, 12)),
                        idempotency_key=uuid.uuid4().hex,
                        risk_context=checkout_pb2.RiskContext(
                            device_id="device-" + account_id[:8], ip_address=f"10.{seed}.{len(pair_ms) % 250}.1")),
                        timeout=30)
                    authorized = time.perf_counter()
                    if auth.status != checkout_pb2.AUTHORIZATION_STATUS_PENDING:
                        declined += 1
                        name = checkout_pb2.DeclineReason.Name(auth.decline_reason)
                        declines[name] = declines.get(name, 0) + 1
                        continue
                    await checkout.Capture(checkout_pb2.CaptureRequest(
                        authorization_id=auth.authorization_id, idempotency_key=uuid.uuid4().hex), timeout=30)
                except grpc.aio.AioRpcError as error:
                    errors[error.code().name] = errors.get(error.code().name, 0) + 1
                    continue
                done = time.perf_counter()
                authorize_ms.append((authorized - started) * 1000)
                capture_ms.append((done - authorized) * 1000)
                pair_ms.append((done - started) * 1000)

        began = time.monotonic()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        elapsed = time.monotonic() - began

    def summary(values: list[float]) -> dict:
        ordered = sorted(values)
        return {"p50_ms": round(percentile(ordered, 0.50), 2), "p99_ms": round(percentile(ordered, 0.99), 2)}

    return {
        "accounts": accounts,
        "concurrency": concurrency,
        "duration_s": round(elapsed, 1),
        "pairs": len(pair_ms),
        "pairs_per_s": round(len(pair_ms) / elapsed, 1),
        "declined": declined,
        "declines": declines,
        "errors": errors,
        "authorize": summary(authorize_ms),
        "capture": summary(capture_ms),
        "authorize_plus_capture": summary(pair_ms),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", help="HOST:PORT of a running server; default: start one")
    parser.add_argument("--duration-s", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--hot-account", action="store_true", help="also run every call on one account")
    parser.add_argument("--compare-risk", action="store_true",
                        help="also run with the real-time risk checks off (starts a second server)")
    parser.add_argument("--server-log-level", default="info")
    args = parser.parse_args()
    if not (0 < args.duration_s <= 600 and 0 < args.concurrency <= 512 and 0 < args.accounts <= 100_000):
        parser.error("duration 0-600 s, concurrency 1-512, accounts 1-100000")

    def measure(address: str, label: str, hot: bool) -> list[dict]:
        runs = [{"label": label, **uvloop.run(run_load(address, args.accounts, args.concurrency, args.duration_s))}]
        if hot:
            runs.append({"label": label + ", one hot account",
                         **uvloop.run(run_load(address, 1, args.concurrency, args.duration_s))})
        return runs

    if args.target:
        runs = measure(args.target, "target", args.hot_account)
    else:
        with local_server(args.server_log_level) as address:
            runs = measure(address, "risk checks on", args.hot_account and not args.compare_risk)
        if args.compare_risk:
            with local_server(args.server_log_level, risk_checks=False) as address:
                # The hot account runs without risk checks: they would decline it for velocity.
                runs += measure(address, "risk checks off", args.hot_account)
    report = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}, "runs": runs}
    out = ROOT / "bench" / "results" / "checkout.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    for run in runs:
        print(f"[{run['label']}] accounts={run['accounts']} concurrency={run['concurrency']} "
              f"duration={run['duration_s']}s: {run['pairs_per_s']} Authorize+Capture/s ({run['pairs']} pairs, "
              f"declined {run['declines'] or 0}, errors {run['errors'] or 'none'})")
        for name in ("authorize", "capture", "authorize_plus_capture"):
            print(f"  {name:24} p50 {run[name]['p50_ms']:7.2f} ms   p99 {run[name]['p99_ms']:7.2f} ms")
    print(f"written to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
