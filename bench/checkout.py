"""Checkout benchmark: the service against the floor, measured in the same run.

Starts an embedded PostgreSQL (data under var/bench, a fresh database `bench` each
run), the floor (`python -m bench.floor`, its `floor_` tables in that database) and
the service (`python -m server`, risk checks on, AUTH_MODE=insecure-local) on the same
database, then measures, each scenario paired with a floor run just before it:

  authorize   Authorize, one device id and one IP address per account, random amount
              100.00-5,000.00, a term offered for it (1/3/6/12 months)
  capture     full Capture of the holds the Authorize runs left pending
  repay       Repay 10.00 (wallet) on the accounts that now have loans
  quote       QuoteInstallments on random accounts
  hot         Authorize with every call on ONE account (limit 100,000,000.00), on a second
              service with RISK_CHECKS=off (the velocity rules would decline it), paired with
              the floor on one account; then checks for overspend

With --co-lending a funding partner (70 % of principal, every grade and term, room for
all) is added before the service starts, so every capture co-funds its loan and every
repayment splits with the partner.

And, with --sweep, Authorize on the service and the floor at each number of calls in
flight (--plot draws docs/benchmarks-concurrency.png), and with --server-processes,
Authorize on a service started with SERVER_PROCESSES=N for each N.

The client is this process: requests are serialized before each timed window and sent
as bytes over `channel.unary_unary(path)`, a fixed number in flight; every run is
bounded by --duration-s and by the count of requests prepared (--max-calls). Every
process started here is stopped (SIGTERM, then waited for), PostgreSQL included.
Results: printed, and written to bench/results/checkout.json.

    python -m bench.checkout [--duration-s 10] [--in-flight 16] [--accounts 3000] [--repeat 1]
                             [--sweep 1,4,16,64] [--plot] [--server-processes 1,2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import platform
import random
import select
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import grpc
import uvloop

from bench import floor as floor_server
from bench.load import Run, drive
from bench.wire import bytes_of, parse_fields, varint_of
from credit.v1 import (
    checkout_pb2,
    common_pb2,
    credit_line_pb2,
    credit_line_pb2_grpc,
    repayment_pb2,
)
from server import contact_crypto
from server.db import one
from server.domain.pricing import DEFAULT_PRODUCT_TABLE, Grade
from server.probe import wait_until_serving

ROOT = Path(__file__).resolve().parents[1]
VAR_DIR = ROOT / "var" / "bench"
RESULTS = ROOT / "bench" / "results" / "checkout.json"
PLOT = ROOT / "docs" / "benchmarks-concurrency.png"
BENCH_DATABASE = "bench"

AUTHORIZE = "/credit.v1.CheckoutService/Authorize"
CAPTURE = "/credit.v1.CheckoutService/Capture"
QUOTE = "/credit.v1.CheckoutService/QuoteInstallments"
REPAY = "/credit.v1.RepaymentService/Repay"
SCENARIOS = ("authorize", "capture", "repay", "quote", "hot")

# Risk rules (server/risk/ruleset-v1.json) an account with its own device and address
# can trip: 5 approvals in an hour (40 points), more than 20,000.00 in a day (30), 10
# authorizations on the device in an hour (40); 50 points is a review, 80 a decline.
# Six authorizations per account keep both pairs from firing for about 98 % of calls
# (the sixth one's day total passes 20,000.00 about one time in ten): the bench opens
# more accounts when a run could need more than that.
AUTHORIZATIONS_PER_ACCOUNT = 6
ACCOUNT_LIMIT_MINOR = 10_000_000           # 100,000.00: never the binding constraint
HOT_LIMIT_MINOR = 10_000_000_000           # 100,000,000.00
FLOOR_LIMIT_MINOR = 10**12
AMOUNT_RANGE_MINOR = (10_000, 500_000)     # 100.00 - 5,000.00
TERMS = (1, 3, 6, 12)
REPAY_AMOUNT_MINOR = 1_000                 # 10.00
RACE_SLOTS, RACE_CALLS, RACE_AMOUNT_MINOR = 20, 64, 100_000
STATUS_PENDING, STATUS_CAPTURED = checkout_pb2.AUTHORIZATION_STATUS_PENDING, checkout_pb2.AUTHORIZATION_STATUS_CAPTURED
MAX_ACCOUNTS = 100_000


# Each term's methods offered to grade A and their smallest orders, from the product
# table: a request always asks for a plan that exists (1 month is flat fee only, 12
# months starts at 600.00).
PLANS: dict[int, list[tuple[common_pb2.RepaymentMethod.ValueType, int]]] = {
    term: [(common_pb2.RepaymentMethod.Value(f"REPAYMENT_METHOD_{p.method.name}"), p.min_amount_minor)
           for p in DEFAULT_PRODUCT_TABLE if p.term_months == term and Grade.A in p.rate_bps_by_grade]
    for term in TERMS
}


def pick_plan(amount_minor: int, rng: random.Random) -> tuple[int, common_pb2.RepaymentMethod.ValueType]:
    """(term, method): a term at random among those offered for the amount, then a method."""
    term = rng.choice([t for t in TERMS if any(amount_minor >= low for _, low in PLANS[t])])
    return term, rng.choice([m for m, low in PLANS[term] if amount_minor >= low])


# --- processes ------------------------------------------------------------------------------

class Child:
    """A process this bench started, in its own process group; stop() sends SIGTERM,
    waits, and then ends whatever it left behind in its group."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path, *, pipe_stdout: bool):
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "wb") as log_file:
            self.process = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                            stdout=subprocess.PIPE if pipe_stdout else subprocess.DEVNULL,
                                            stderr=log_file, start_new_session=True)

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 60) -> None:
        if self.running():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                print(f"  {self.name} did not stop within {timeout_s} s of SIGTERM; killing it", file=sys.stderr)
                self.process.kill()
                self.process.wait()
            if self.process.returncode != 0:
                print(f"  {self.name} exited with status {self.process.returncode}; see {self.log_path}",
                      file=sys.stderr)
        self._stop_group()
        if self.process.stdout:
            self.process.stdout.close()

    def _stop_group(self) -> None:
        """Children of the process (SERVER_PROCESSES workers) still running after it exited."""
        for signum, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return
            print(f"  {self.name} left processes in its group; sending {signal.Signals(signum).name}",
                  file=sys.stderr)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signum)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                try:
                    os.killpg(self.process.pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.1)

    def read_line(self, prefix: str, timeout_s: float) -> str:
        """The first stdout line starting with `prefix`; RuntimeError if the process exits
        or the time runs out first."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], 0.2)
            if ready:
                line = self.process.stdout.readline().decode()
                if line.startswith(prefix):
                    return line.strip()
                if not line and not self.running():
                    break
            elif not self.running():
                break
        raise RuntimeError(f"{self.name} did not print {prefix!r}; see {self.log_path}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_child(dsn: str, label: str, *, risk_checks: bool, processes: int, log_level: str) -> tuple[Child, str]:
    address = f"127.0.0.1:{free_port()}"
    env = {**contact_crypto.development_env(VAR_DIR), **os.environ,
           "DATABASE_URL": dsn, "VAR_DIR": str(VAR_DIR), "GRPC_LISTEN_ADDR": address,
           "LOG_LEVEL": log_level, "RISK_CHECKS": "on" if risk_checks else "off",
           "AUTH_MODE": "insecure-local", "SERVER_PROCESSES": str(processes)}
    child = Child(f"service ({label})", [sys.executable, "-m", "server"], env,
                  VAR_DIR / f"service-{label}.log", pipe_stdout=False)
    return child, address


def floor_child(dsn: str) -> Child:
    env = {**os.environ, "DATABASE_URL": dsn}
    return Child("floor", [sys.executable, "-m", "bench.floor", "--listen", "127.0.0.1:0"], env,
                 VAR_DIR / "floor.log", pipe_stdout=True)


def prune_dead_handles(pgdata: Path) -> None:
    """The embedded server stops when its last handle goes; a bench killed earlier leaves
    its pid in the handle list, which would keep this run's server running at exit."""
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    alive = []
    for pid in json.loads(handles.read_text() or "[]"):
        try:
            os.kill(pid, 0)
            alive.append(pid)
        except ProcessLookupError:
            pass
        except PermissionError:
            alive.append(pid)
    handles.write_text(json.dumps(alive))


async def fresh_database(admin_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(admin_dsn, timeout=30)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {name}")
    finally:
        await conn.close()


# --- requests -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Customer:
    account_id: str
    device_id: str
    ip_address: str


def customer(account_id: str, number: int) -> Customer:
    """Each account on its own device and its own address."""
    return Customer(account_id, f"dev-{account_id}",
                    f"10.{(number >> 16) & 255}.{(number >> 8) & 255}.{number & 255}")


class Keys:
    def __init__(self) -> None:
        self.tag = uuid.uuid4().hex[:10]
        self.counter = itertools.count()

    def __call__(self, kind: str) -> str:
        return f"bench-{kind}-{self.tag}-{next(self.counter)}"


def authorize_requests(customers: Sequence[Customer], rng: random.Random, keys: Keys,
                       amount_minor: int | None = None) -> list[bytes]:
    out = []
    low, high = AMOUNT_RANGE_MINOR
    for c in customers:
        amount = amount_minor or rng.randint(low, high)
        term, method = pick_plan(amount, rng)
        out.append(checkout_pb2.AuthorizeRequest(
            account_id=c.account_id, merchant_id="bench-merchant", order_id=keys("order"), amount_minor=amount,
            term_months=term, method=method, idempotency_key=keys("auth"),
            risk_context=checkout_pb2.RiskContext(device_id=c.device_id, ip_address=c.ip_address),
        ).SerializeToString())
    return out


def read_authorizations(run: Run, requests: Sequence[bytes]
                        ) -> list[tuple[int, checkout_pb2.DeclineReason.ValueType, str, str, int]]:
    """(status, decline reason, authorization id, account id, amount) of each reply."""
    out = []
    for request, reply in zip(requests, run.replies, strict=True):
        if reply is None:
            continue
        fields = parse_fields(reply)
        asked = parse_fields(request)
        out.append((varint_of(fields, 5), checkout_pb2.DeclineReason.ValueType(varint_of(fields, 6)),
                    bytes_of(fields, 1).decode(), bytes_of(fields, 2).decode(), varint_of(asked, 4)))
    return out


class AccountBook:
    """The service's bench accounts and how many more Authorize calls each may take
    before the velocity rules would start declining; handed out round-robin."""

    def __init__(self) -> None:
        self.customers: list[Customer] = []
        self._queue: deque[tuple[Customer, int]] = deque()
        self.remaining = 0

    def add(self, customers: Sequence[Customer]) -> None:
        self.customers.extend(customers)
        self._queue.extend((c, AUTHORIZATIONS_PER_ACCOUNT) for c in customers)
        self.remaining += AUTHORIZATIONS_PER_ACCOUNT * len(customers)

    def plan(self, count: int) -> list[Customer]:
        """The next `count` customers, without taking them (see take)."""
        return self._walk(deque(self._queue), min(count, self.remaining))

    def take(self, count: int) -> None:
        self._walk(self._queue, count)
        self.remaining -= count

    @staticmethod
    def _walk(queue: deque, count: int) -> list[Customer]:
        out = []
        for _ in range(count):
            c, left = queue.popleft()
            out.append(c)
            if left > 1:
                queue.append((c, left - 1))
        return out


async def open_accounts(channel: grpc.aio.Channel, keys: Keys, count: int, first_number: int,
                        limit_minor: int = ACCOUNT_LIMIT_MINOR) -> list[Customer]:
    """Open `count` accounts through the API (grade A, the given limit), 32 at a time."""
    lines = credit_line_pb2_grpc.CreditLineServiceStub(channel)
    semaphore = asyncio.Semaphore(32)

    async def one(number: int) -> Customer:
        async with semaphore:
            account = await lines.OpenAccount(credit_line_pb2.OpenAccountRequest(
                customer_id=keys("customer"), idempotency_key=keys("open"),
                contact=credit_line_pb2.Contact(name="Bench Customer", email="bench@example.com",
                                                phone="+8613800138000")), timeout=60)
            await lines.AdjustLimit(credit_line_pb2.AdjustLimitRequest(
                account_id=account.account_id, credit_limit_minor=limit_minor, risk_grade=common_pb2.RISK_GRADE_A,
                reason="bench", idempotency_key=keys("limit")), timeout=60)
            return customer(account.account_id, number)

    return list(await asyncio.gather(*(one(first_number + i) for i in range(count))))


# --- the bench ------------------------------------------------------------------------------

def fmt_run(run: dict) -> str:
    errors = f"  errors {run['errors']}" if run["errors"] else ""
    bound = "  (count-bound)" if run["stopped_by"] == "count" else ""
    return (f"{run['calls_per_s']:8.1f} calls/s  p50 {run['p50_ms']:7.2f} ms  p99 {run['p99_ms']:7.2f} ms  "
            f"({run['calls']} calls in {run['elapsed_s']:.1f} s){bound}{errors}")


def medians_of(runs: list[dict]) -> dict:
    """Floor/service pairs of one setting: the runs, the median ratio and median figures."""
    return {"runs": runs, "median_ratio": round(statistics.median(r["ratio"] for r in runs), 3),
            "floor": median_summary([r["floor"] for r in runs]),
            "service": median_summary([r["service"] for r in runs])}


def median_summary(runs: list[dict]) -> dict:
    return {key: round(statistics.median(r[key] for r in runs), 2) for key in ("calls_per_s", "p50_ms", "p99_ms")}


class Bench:
    def __init__(self, args: argparse.Namespace, dsn: str) -> None:
        self.args = args
        self.dsn = dsn
        self.rng = random.Random(args.seed)
        self.keys = Keys()
        self.book = AccountBook()
        self.holds: deque[str] = deque()
        self.loan_accounts: list[str] = []
        self.service_rate = 0.0        # highest Authorize calls/s seen per server process
        self.floor_customers: list[Customer] = []
        self.floor_hot: Customer | None = None
        self.floor_channel: grpc.aio.Channel | None = None
        self.report: dict = {"scenarios": {}, "sweep": None, "server_processes": None, "checks": {}}

    # pairs ---------------------------------------------------------------------------------

    def floor_requests(self, count: int, hot: bool = False) -> list[bytes]:
        if hot:
            assert self.floor_hot is not None
            chosen = [self.floor_hot] * count
        else:
            chosen = [self.floor_customers[i % len(self.floor_customers)] for i in range(count)]
        return authorize_requests(chosen, self.rng, self.keys)

    async def run_floor(self, in_flight: int, duration_s: float, hot: bool = False) -> tuple[Run, list[bytes]]:
        requests = self.floor_requests(self.args.max_calls, hot)
        assert self.floor_channel is not None
        run = await drive(self.floor_channel, floor_server.PATH, requests, target="floor", in_flight=in_flight,
                          duration_s=duration_s)
        return run, requests

    async def pair(self, label: str, channel: grpc.aio.Channel, path: str,
                   build: Callable[[], list[bytes]], after: Callable[[Run, list[bytes]], Awaitable[dict]] | None,
                   *, in_flight: int, duration_s: float, hot_floor: bool = False) -> dict:
        requests = build()
        if not requests:
            print(f"  {label:34} skipped: nothing to send")
            return {}
        floor_run, _ = await self.run_floor(in_flight, duration_s, hot_floor)
        service_run = await drive(channel, path, requests, target="service", in_flight=in_flight,
                                  duration_s=duration_s)
        floor_summary, service_summary = floor_run.summary(), service_run.summary()
        ratio = service_run.calls_per_s / floor_run.calls_per_s if floor_run.calls_per_s else math.nan
        result = {"floor": floor_summary, "service": service_summary, "ratio": round(ratio, 3)}
        print(f"  {label:34} floor   {fmt_run(floor_summary)}")
        print(f"  {'':34} service {fmt_run(service_summary)}  ratio {ratio:.3f}")
        if after is not None:
            result.update(await after(service_run, requests))
        return result

    def record(self, scenario: str, description: str, result: dict) -> None:
        if not result:
            return
        entry = self.report["scenarios"].setdefault(scenario, {"description": description, "runs": []})
        entry.update(medians_of(entry["runs"] + [result]))

    # authorize -----------------------------------------------------------------------------

    async def top_up(self, channel: grpc.aio.Channel, duration_s: float, in_flight: int, processes: int) -> None:
        """Open accounts so that a run at the best rate seen so far stays within the budget."""
        if not self.service_rate:
            return
        need = math.ceil(self.service_rate * processes * duration_s * 1.3) + in_flight
        need = min(need, self.args.max_calls)
        if need <= self.book.remaining:
            return
        count = min(math.ceil((need - self.book.remaining) / AUTHORIZATIONS_PER_ACCOUNT),
                    MAX_ACCOUNTS - len(self.book.customers))
        if count <= 0:
            return
        began = time.monotonic()
        self.book.add(await open_accounts(channel, self.keys, count, len(self.book.customers) + 1))
        print(f"  opened {count} more accounts in {time.monotonic() - began:.1f} s "
              f"(now {len(self.book.customers)}, room for {self.book.remaining} Authorize calls)")

    def build_authorize(self) -> list[bytes]:
        return authorize_requests(self.book.plan(self.args.max_calls), self.rng, self.keys)

    async def after_authorize(self, run: Run, requests: list[bytes], processes: int = 1) -> dict:
        self.book.take(run.sent)
        self.service_rate = max(self.service_rate, run.calls_per_s / processes)
        replies = read_authorizations(run, requests)
        statuses = Counter(status for status, *_ in replies)
        declines = Counter(checkout_pb2.DeclineReason.Name(reason)
                           for status, reason, *_ in replies if status != STATUS_PENDING)
        for status, _, authorization_id, _, _ in replies:
            if status == STATUS_PENDING:
                self.holds.append(authorization_id)
        approved = statuses[STATUS_PENDING]
        rate = approved / len(replies) if replies else math.nan
        reasons = ", ".join(f"{name} {n}" for name, n in declines.most_common()) or "none"
        flag = "" if rate >= 0.9 else "   BELOW 90 %"
        print(f"  {'':34} approved {100 * rate:.1f} % ({approved} of {len(replies)}); declines: {reasons}{flag}")
        return {"approved": approved, "replies": len(replies), "approval_rate": round(rate, 4),
                "declines": dict(declines), "accounts": len(self.book.customers)}

    async def authorize(self, channel: grpc.aio.Channel, label: str, in_flight: int, duration_s: float,
                        processes: int = 1) -> dict:
        await self.top_up(channel, duration_s, in_flight, processes)

        async def after(run: Run, requests: list[bytes]) -> dict:
            return await self.after_authorize(run, requests, processes)

        return await self.pair(label, channel, AUTHORIZE, self.build_authorize, after,
                               in_flight=in_flight, duration_s=duration_s)

    # capture, repay, quote -----------------------------------------------------------------

    def build_capture(self) -> list[bytes]:
        holds = list(itertools.islice(self.holds, self.args.max_calls))
        return [checkout_pb2.CaptureRequest(authorization_id=h, amount_minor=0, idempotency_key=self.keys("capture"))
                .SerializeToString() for h in holds]

    async def after_capture(self, run: Run, requests: list[bytes]) -> dict:
        for _ in range(run.sent):
            self.holds.popleft()
        captured = 0
        accounts = set(self.loan_accounts)
        for reply in run.replies:
            if reply is None:
                continue
            fields = parse_fields(reply)
            if fields.get(5) == STATUS_CAPTURED:
                captured += 1
                account = bytes_of(fields, 2).decode()
                if account not in accounts:
                    accounts.add(account)
                    self.loan_accounts.append(account)
        print(f"  {'':34} captured {captured}; {len(self.loan_accounts)} accounts with loans, "
              f"{len(self.holds)} holds left")
        return {"captured": captured}

    def build_repay(self) -> list[bytes]:
        if not self.loan_accounts:
            return []
        start = self.rng.randrange(len(self.loan_accounts))
        return [repayment_pb2.RepayRequest(
            account_id=self.loan_accounts[(start + i) % len(self.loan_accounts)], amount_minor=REPAY_AMOUNT_MINOR,
            channel=repayment_pb2.PAYMENT_CHANNEL_WALLET, idempotency_key=self.keys("repay")).SerializeToString()
            for i in range(self.args.max_calls)]

    def build_quote(self) -> list[bytes]:
        low, high = AMOUNT_RANGE_MINOR
        return [checkout_pb2.QuoteInstallmentsRequest(
            account_id=self.rng.choice(self.book.customers).account_id, amount_minor=self.rng.randint(low, high),
            merchant_id="bench-merchant").SerializeToString() for _ in range(self.args.max_calls)]

    # hot account ---------------------------------------------------------------------------

    async def hot(self, channel: grpc.aio.Channel, label: str, hot_customer: Customer,
                  approved_minor: list[int]) -> dict:
        def build() -> list[bytes]:
            return authorize_requests([hot_customer] * self.args.max_calls, self.rng, self.keys)

        async def after(run: Run, requests: list[bytes]) -> dict:
            replies = read_authorizations(run, requests)
            approved = [amount for status, _, _, _, amount in replies if status == STATUS_PENDING]
            approved_minor.extend(approved)
            declines = Counter(checkout_pb2.DeclineReason.Name(reason)
                               for status, reason, *_ in replies if status != STATUS_PENDING)
            print(f"  {'':34} approved {len(approved)} of {len(replies)}; declines: {dict(declines) or 'none'}")
            return {"approved": len(approved), "replies": len(replies), "declines": dict(declines)}

        return await self.pair(label, channel, AUTHORIZE, build, after,
                               in_flight=self.args.in_flight, duration_s=self.args.duration_s, hot_floor=True)

    async def account_row(self, account_id: str) -> dict:
        """The service's account row, read from the table."""
        conn = await asyncpg.connect(self.dsn, timeout=30)
        try:
            row = await conn.fetchrow(
                "SELECT credit_limit_minor + CASE WHEN temporary_limit_expires_at > now() THEN temporary_limit_minor "
                "ELSE 0 END AS limit_minor, held_minor, outstanding_principal_minor FROM accounts "
                "WHERE account_id = $1", uuid.UUID(account_id))
        finally:
            await conn.close()
        return dict(one(row))

    async def check_service_hot(self, channel: grpc.aio.Channel, hot_customer: Customer, approved_minor: list[int],
                                errors: int) -> dict:
        """After the hot runs, from the account row: nothing overspent, the hold total is
        what was approved; then a race of RACE_CALLS calls for RACE_SLOTS holds' worth of
        limit."""
        row = await self.account_row(hot_customer.account_id)
        used = row["held_minor"] + row["outstanding_principal_minor"]
        check = {
            **row, "approved_minor": sum(approved_minor), "calls_failed": errors,
            "no_overspend": used <= row["limit_minor"],
            # A failed call may still have committed its hold; then only >= can be checked.
            "held_equals_approved": row["held_minor"] == sum(approved_minor) if not errors
            else row["held_minor"] >= sum(approved_minor),
        }
        lines = credit_line_pb2_grpc.CreditLineServiceStub(channel)
        await lines.AdjustLimit(credit_line_pb2.AdjustLimitRequest(
            account_id=hot_customer.account_id, credit_limit_minor=used + RACE_SLOTS * RACE_AMOUNT_MINOR,
            reason="bench limit race", idempotency_key=self.keys("limit")), timeout=30)
        statuses = await self.race(channel, AUTHORIZE, hot_customer)
        after = await self.account_row(hot_customer.account_id)
        check["race"] = {
            "limit_room_minor": RACE_SLOTS * RACE_AMOUNT_MINOR, "calls": RACE_CALLS, "amount_minor": RACE_AMOUNT_MINOR,
            "approved": statuses[STATUS_PENDING], "declined": sum(statuses.values()) - statuses[STATUS_PENDING],
            "after": after,
            "no_overspend": (after["held_minor"] + after["outstanding_principal_minor"] <= after["limit_minor"]
                             and statuses[STATUS_PENDING] == RACE_SLOTS),
        }
        return check

    async def check_floor_hot(self, approved_minor: list[int], errors: int) -> dict:
        assert self.floor_hot is not None
        conn = await asyncpg.connect(self.dsn, timeout=30)
        try:
            limit, held = one(await conn.fetchrow("SELECT credit_limit, held FROM floor_accounts WHERE id = $1",
                                                  self.floor_hot.account_id))
            check = {"limit_minor": limit, "held_minor": held, "approved_minor": sum(approved_minor),
                     "calls_failed": errors, "no_overspend": held <= limit,
                     "held_equals_approved": held == sum(approved_minor) if not errors
                     else held >= sum(approved_minor)}
            await conn.execute("UPDATE floor_accounts SET credit_limit = held + $2 WHERE id = $1",
                               self.floor_hot.account_id, RACE_SLOTS * RACE_AMOUNT_MINOR)
            assert self.floor_channel is not None
            statuses = await self.race(self.floor_channel, floor_server.PATH, self.floor_hot)
            limit, held = one(await conn.fetchrow("SELECT credit_limit, held FROM floor_accounts WHERE id = $1",
                                                  self.floor_hot.account_id))
        finally:
            await conn.close()
        check["race"] = {"limit_room_minor": RACE_SLOTS * RACE_AMOUNT_MINOR, "calls": RACE_CALLS,
                         "amount_minor": RACE_AMOUNT_MINOR, "approved": statuses[STATUS_PENDING],
                         "declined": sum(statuses.values()) - statuses[STATUS_PENDING],
                         "no_overspend": held <= limit and statuses[STATUS_PENDING] == RACE_SLOTS}
        return check

    async def race(self, channel: grpc.aio.Channel, path: str, who: Customer) -> Counter:
        """RACE_CALLS Authorize calls of RACE_AMOUNT_MINOR at once on one account."""
        requests = authorize_requests([who] * RACE_CALLS, self.rng, self.keys, amount_minor=RACE_AMOUNT_MINOR)
        run = await drive(channel, path, requests, target="race", in_flight=RACE_CALLS, duration_s=60, warmup=0)
        return Counter(status for status, *_ in read_authorizations(run, requests))

    # invariants ----------------------------------------------------------------------------

    async def invariants(self) -> dict:
        from server.invariants import check

        conn = await asyncpg.connect(self.dsn, timeout=30)
        try:
            violations = await asyncio.wait_for(check(conn), 300)
        finally:
            await conn.close()
        return {"violations": len(violations), "first": [str(v) for v in violations[:10]]}


@contextlib.asynccontextmanager
async def running(child: Child, stop_timeout_s: float):
    """Stop `child` on the way out, however the block ends (a cancelled bench included)."""
    try:
        yield child
    finally:
        await asyncio.shield(asyncio.to_thread(child.stop, stop_timeout_s))


@contextlib.asynccontextmanager
async def service(dsn: str, label: str, args: argparse.Namespace, *, risk_checks: bool = True, processes: int = 1):
    began = time.monotonic()
    child, address = service_child(dsn, label, risk_checks=risk_checks, processes=processes,
                                   log_level=args.server_log_level)
    async with running(child, 60):
        try:
            await asyncio.to_thread(wait_until_serving, address, 90, child.running)
        except RuntimeError as error:
            raise SystemExit(f"{error}; see {child.log_path}") from None
        print(f"service ({label}) serving on {address} after {time.monotonic() - began:.1f} s "
              f"(RISK_CHECKS={'on' if risk_checks else 'off'}, SERVER_PROCESSES={processes}, log {child.log_path})")
        async with grpc.aio.insecure_channel(address) as channel:
            await asyncio.wait_for(channel.channel_ready(), 30)
            yield channel


async def run_bench(args: argparse.Namespace, dsn: str) -> dict:
    bench = Bench(args, dsn)
    report = bench.report
    async with running(floor_child(dsn), 30) as floor:
        try:
            floor_address = (await asyncio.to_thread(floor.read_line, "floor serving on ", 60)).rpartition(" ")[2]
        except RuntimeError as error:
            raise SystemExit(str(error)) from None
        conn = await asyncpg.connect(dsn, timeout=30)
        try:
            floor_ids = await floor_server.seed_accounts(conn, args.accounts, FLOOR_LIMIT_MINOR)
            bench.floor_customers = [customer(a, i + 1) for i, a in enumerate(floor_ids)]
            bench.floor_hot = customer((await floor_server.seed_accounts(conn, 1, FLOOR_LIMIT_MINOR))[0], 1)
            if args.co_lending:
                await add_bench_partner(conn)
        finally:
            await conn.close()
        print(f"floor serving on {floor_address} ({args.accounts} accounts, log {floor.log_path})")
        async with grpc.aio.insecure_channel(floor_address) as floor_channel:
            bench.floor_channel = floor_channel
            await bench.run_floor(args.in_flight, 1.0)  # untimed: connections, plans and caches warm up
            await run_scenarios(bench, args, dsn)
    return report


async def add_bench_partner(conn: asyncpg.Connection) -> None:
    """A partner that co-funds every loan: the schema first (the service would migrate
    it at start, after the partners are read)."""
    from server.core import funding as co_lending
    from server.db.migrate import migrate

    await migrate(conn)
    await co_lending.add_partner(
        conn, partner_id="bench-bank", name="Bench Bank", principal_share_bps=7_000, fee_share_bps=5_000,
        max_exposure_minor=10**13, grades=["A", "B", "C", "D", "E"], terms=[1, 3, 6, 12, 24], exposure_stripes=8,
        now=datetime.now(UTC))
    print("co-lending: partner bench-bank funds 70 % of every loan")


async def run_scenarios(bench: Bench, args: argparse.Namespace, dsn: str) -> None:
    report = bench.report
    chosen = set(args.scenarios)
    wants_main = chosen & {"authorize", "capture", "repay", "quote"} or args.sweep
    wants_accounts = wants_main or args.server_processes
    duration, in_flight = args.duration_s, args.in_flight

    if wants_accounts:
        async with service(dsn, "main", args) as channel:
            began = time.monotonic()
            bench.book.add(await open_accounts(channel, bench.keys, args.accounts, 1))
            print(f"opened {args.accounts} accounts in {time.monotonic() - began:.1f} s "
                  f"(room for {bench.book.remaining} Authorize calls)")
            if "authorize" in chosen:
                print(f"\nauthorize: {in_flight} in flight, {duration} s per run")
                for i in range(args.repeat):
                    bench.record("authorize", "Authorize, risk checks on, one device and address per account",
                                 await bench.authorize(channel, f"run {i + 1}", in_flight, duration))
            if "capture" in chosen:
                print(f"\ncapture: full capture of {len(bench.holds)} pending holds")
                for i in range(args.repeat):
                    bench.record("capture", "Capture (full) of the holds the Authorize runs left pending",
                                 await bench.pair(f"run {i + 1}", channel, CAPTURE, bench.build_capture,
                                                  bench.after_capture, in_flight=in_flight, duration_s=duration))
            if "repay" in chosen:
                print(f"\nrepay: {REPAY_AMOUNT_MINOR / 100:.2f} by wallet on accounts with loans")
                for i in range(args.repeat):
                    bench.record("repay", "Repay 10.00 (wallet) on accounts with loans",
                                 await bench.pair(f"run {i + 1}", channel, REPAY, bench.build_repay, None,
                                                  in_flight=in_flight, duration_s=duration))
            if "quote" in chosen:
                print("\nquote: QuoteInstallments on random accounts")
                for i in range(args.repeat):
                    bench.record("quote", "QuoteInstallments on random accounts",
                                 await bench.pair(f"run {i + 1}", channel, QUOTE, bench.build_quote, None,
                                                  in_flight=in_flight, duration_s=duration))
            if args.sweep:
                print(f"\nsweep: Authorize at {', '.join(map(str, args.sweep))} in flight, "
                      f"{args.sweep_duration_s} s per run")
                points = []
                for level in args.sweep:
                    runs = [r for r in [await bench.authorize(channel, f"{level} in flight, run {i + 1}", level,
                                                              args.sweep_duration_s)
                                        for i in range(args.repeat)] if r]
                    if runs:
                        points.append({"in_flight": level, **medians_of(runs)})
                report["sweep"] = {"duration_s": args.sweep_duration_s, "points": points}

    if "hot" in chosen:
        async with service(dsn, "hot-risk-off", args, risk_checks=False) as channel:
            hot_customer = (await open_accounts(channel, bench.keys, 1, 0, limit_minor=HOT_LIMIT_MINOR))[0]
            hot_customer = Customer(hot_customer.account_id, "dev-hot", "10.255.255.254")
            print(f"\nhot: every call on account {hot_customer.account_id}, RISK_CHECKS=off; the floor on one account")
            service_approved: list[int] = []
            for i in range(args.repeat):
                bench.record("hot", "Authorize on one account, RISK_CHECKS=off (a second service); "
                                    "its floor runs on one account too",
                             await bench.hot(channel, f"run {i + 1}", hot_customer, service_approved))
            runs = report["scenarios"].get("hot", {}).get("runs", [])
            service_errors = sum(sum(r["service"]["errors"].values()) for r in runs)
            floor_errors = sum(sum(r["floor"]["errors"].values()) for r in runs)
            floor_approved = await bench_floor_hot_approved(bench, dsn)
            checks = {"service": await bench.check_service_hot(channel, hot_customer, service_approved,
                                                               service_errors),
                      "floor": await bench.check_floor_hot(floor_approved, floor_errors)}
            report["checks"]["hot_account"] = checks
            for target, check in checks.items():
                print(f"  {target:8} held {check['held_minor']} + outstanding "
                      f"{check.get('outstanding_principal_minor', 0)} <= limit {check['limit_minor']}: "
                      f"{'ok' if check['no_overspend'] else 'OVERSPENT'}; held equals approved: "
                      f"{'yes' if check['held_equals_approved'] else 'NO'}; race for {RACE_SLOTS} slots, "
                      f"{RACE_CALLS} calls: {check['race']['approved']} approved "
                      f"({'ok' if check['race']['no_overspend'] else 'WRONG'})")

    if args.server_processes:
        print(f"\nserver processes: Authorize with SERVER_PROCESSES={', '.join(map(str, args.server_processes))}")
        results = []
        for processes in args.server_processes:
            async with service(dsn, f"processes-{processes}", args, processes=processes) as channel:
                runs = [r for r in [await bench.authorize(channel, f"SERVER_PROCESSES={processes}, run {i + 1}",
                                                          in_flight, duration, processes)
                                    for i in range(args.repeat)] if r]
            if runs:
                results.append({"server_processes": processes, **medians_of(runs)})
        report["server_processes"] = results

    if wants_accounts or "hot" in chosen:
        began = time.monotonic()
        report["checks"]["invariants"] = await bench.invariants()
        print(f"\nledger invariants (server.invariants): {report['checks']['invariants']['violations']} violations "
              f"({time.monotonic() - began:.1f} s)")
        for line in report["checks"]["invariants"]["first"]:
            print(f"  {line}")


async def bench_floor_hot_approved(bench: Bench, dsn: str) -> list[int]:
    """The amounts of the floor's approved holds on its hot account, read back from its
    table (the floor runs are not kept by the client)."""
    assert bench.floor_hot is not None
    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        rows = await conn.fetch("SELECT amount_minor FROM floor_holds WHERE account_id = $1 AND status = $2",
                                bench.floor_hot.account_id, floor_server.STATUS_PENDING)
    finally:
        await conn.close()
    return [r[0] for r in rows]


def print_summary(report: dict) -> None:
    print("\nsummary (median of runs; ratio = service calls/s / floor calls/s in the same pair)")
    print(f"  {'scenario':30} {'service/s':>10} {'p50 ms':>8} {'p99 ms':>8}   {'floor/s':>9} {'p50 ms':>8} "
          f"{'p99 ms':>8}   {'ratio':>6}  runs")

    def row(name: str, entry: dict, runs: int) -> None:
        s, f = entry["service"], entry["floor"]
        print(f"  {name:30} {s['calls_per_s']:10.1f} {s['p50_ms']:8.2f} {s['p99_ms']:8.2f}   {f['calls_per_s']:9.1f} "
              f"{f['p50_ms']:8.2f} {f['p99_ms']:8.2f}   {entry['median_ratio']:6.3f}  {runs}")

    for name, entry in report["scenarios"].items():
        row(name, entry, len(entry["runs"]))
    for point in (report.get("sweep") or {}).get("points", []):
        row(f"sweep, {point['in_flight']} in flight", point, len(point["runs"]))
    for result in report.get("server_processes") or []:
        row(f"authorize, SERVER_PROCESSES={result['server_processes']}", result, len(result["runs"]))


def int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"a comma-separated list of integers, got {text!r}") from None
    if any(not 1 <= v <= 256 for v in values):
        raise argparse.ArgumentTypeError("each value must be between 1 and 256")
    return values


def scenario_list(text: str) -> list[str]:
    values = [x.strip() for x in text.split(",") if x.strip()]
    unknown = set(values) - set(SCENARIOS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown scenarios {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=float, default=10, help="bound of each timed run (default 10)")
    parser.add_argument("--max-calls", type=int, default=50_000, help="count bound of each run (default 50000)")
    parser.add_argument("--in-flight", type=int, default=16, help="calls in flight (default 16)")
    parser.add_argument("--accounts", type=int, default=3000,
                        help="accounts opened at the start, floor accounts too (default 3000)")
    parser.add_argument("--scenarios", type=scenario_list, default=list(SCENARIOS),
                        help=f"comma-separated, from {','.join(SCENARIOS)} (default all)")
    parser.add_argument("--repeat", type=int, default=1, help="floor/scenario pairs per scenario (default 1)")
    parser.add_argument("--sweep", type=int_list, default=[1, 4, 16, 64],
                        help="in-flight levels of the concurrency sweep, '' for none (default 1,4,16,64)")
    parser.add_argument("--sweep-duration-s", type=float, default=5, help="bound of each sweep run (default 5)")
    parser.add_argument("--plot", action="store_true", help=f"draw the sweep into {PLOT.relative_to(ROOT)}")
    parser.add_argument("--server-processes", type=int_list, default=[],
                        help="e.g. 1,2: Authorize on a service started with SERVER_PROCESSES=N for each N")
    parser.add_argument("--server-log-level", default="info", help="LOG_LEVEL of the service (default info)")
    parser.add_argument("--database-url", help="use this database instead of an embedded PostgreSQL")
    parser.add_argument("--seed", type=int, default=None, help="random seed of the requests")
    parser.add_argument("--co-lending", action="store_true", help="a funding partner co-funds every loan")
    args = parser.parse_args(argv)
    if not (0 < args.duration_s <= 600 and 0 < args.sweep_duration_s <= 600):
        parser.error("durations must be between 0 and 600 s")
    if not (1 <= args.in_flight <= 256 and 1 <= args.repeat <= 20 and 1 <= args.accounts <= MAX_ACCOUNTS
            and 100 <= args.max_calls <= 1_000_000):
        parser.error("in-flight 1-256, repeat 1-20, accounts 1-100000, max-calls 100-1000000")
    if any(n > 16 for n in args.server_processes):
        parser.error("--server-processes: at most 16")
    return args


def write_report(report: dict, args: argparse.Namespace, started: float) -> None:
    report.update({
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "config": {k: v for k, v in vars(args).items() if k != "database_url"},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "wall_s": round(time.time() - started, 1),
    })
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")


async def amain(args: argparse.Namespace, dsn: str) -> dict:
    task = asyncio.current_task()
    assert task is not None  # a coroutine runs in a task
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    return await run_bench(args, dsn)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.time()

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    pg = None
    try:
        if args.database_url:
            dsn = args.database_url
        else:
            from server.db.embedded import start_embedded_postgres

            prune_dead_handles(VAR_DIR / "pg")
            pg = start_embedded_postgres(VAR_DIR)
            asyncio.run(fresh_database(pg.get_uri(), BENCH_DATABASE))
            dsn = pg.get_uri(database=BENCH_DATABASE)
            print(f"PostgreSQL (embedded, {VAR_DIR.relative_to(ROOT)}/pg): database {BENCH_DATABASE}")
        try:
            report = uvloop.run(amain(args, dsn))
        except asyncio.CancelledError:
            raise SystemExit("interrupted; every process started here was stopped") from None
        finally:
            signal.signal(signal.SIGTERM, terminate)
    finally:
        if pg is not None:
            pg.cleanup()
    write_report(report, args, started)
    print_summary(report)
    if args.plot and report.get("sweep") and report["sweep"]["points"]:
        from bench.plot import plot_sweep

        plot_sweep(report["sweep"]["points"], PLOT,
                   f"Authorize, risk checks on, vs the floor; {os.cpu_count()} cores shared by client, servers and "
                   f"PostgreSQL; {args.sweep_duration_s:g} s per point")
        print(f"plot written to {PLOT.relative_to(ROOT)}")
    print(f"results written to {RESULTS.relative_to(ROOT)}")
    failed = [name for name, check in report["checks"].get("hot_account", {}).items()
              if not (check["no_overspend"] and check["race"]["no_overspend"])]
    if failed or report["checks"].get("invariants", {}).get("violations"):
        sys.exit(f"checks failed: {', '.join(failed) or 'ledger invariants'}")


if __name__ == "__main__":
    main()
