"""Auto-debit of what falls due (docs/payments.md, "Auto-debit"; the rules are
server/domain/auto_debit.py).

`request_due` writes, for each account with something to debit now, one DEBIT payment
order keyed (account, due date, try), in a transaction of its own that holds the account
(SKIP LOCKED: a replica busy with it has it, or will); the unique key makes a second
replica's or a second pass's insert a no-op. The orders are then asked for at the
gateway, outside any transaction, with the order id as the key, and every result (the
answer, the stream, the sweep) goes through `PaymentOrders.apply`, which books a
SUCCEEDED debit as a repayment through the waterfall."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import structlog

from server.clock import Clock
from server.core.accounts import each_free_account
from server.core.views import active_loans
from server.db import payment_orders as order_rows
from server.domain import auto_debit
from server.domain.calendar import local_date

log = structlog.get_logger(__name__)


@dataclass
class DebitReport:
    requested: list[asyncpg.Record] = field(default_factory=list)
    busy: int = 0
    failed: int = 0


class AutoDebits:
    def __init__(self, clock: Clock, *, morning_hour: int) -> None:
        self._clock = clock
        self._morning_hour = morning_hour

    async def request_due(self, pool: asyncpg.Pool, batch_size: int) -> DebitReport:
        """Write the DEBIT orders due now, each committed on its own; the gateway is not
        asked here."""
        now = self._clock.now()
        today_utc = now.date()
        # Every zone's local date is within a day of UTC's.
        due_from = today_utc - timedelta(days=auto_debit.REACH_DAYS + 1)
        due_to = today_utc + timedelta(days=1)
        report = DebitReport()

        async def next_batch(conn: asyncpg.Connection, after: UUID) -> list[UUID]:
            return await order_rows.auto_debit_accounts(conn, after, due_from, due_to, batch_size)

        async def work(conn: asyncpg.Connection, account: asyncpg.Record) -> None:
            order = await self._request(conn, account, now)
            if order is not None:
                report.requested.append(order)

        def failed(account_id: UUID, error: Exception) -> None:
            log.error("auto_debit_request_failed", account_id=str(account_id), error=f"{type(error).__name__}: "
                      f"{error}", exc_info=error)
            report.failed += 1

        report.busy = await each_free_account(pool, next_batch, work, failed)
        return report

    async def _request(self, conn: asyncpg.Connection, account: asyncpg.Record,
                       now: datetime) -> asyncpg.Record | None:
        """In the caller's transaction, the account locked: the DEBIT order to ask for
        now, if any."""
        account_id = account["account_id"]
        method = await order_rows.active_method(conn, account_id)
        if method is None or not method["auto_debit"]:
            return None
        zone = account["time_zone"]
        today = local_date(now, zone)
        loans = await active_loans(conn, account_id, zone, now)
        installments = [i for loan in loans for i in loan.installments]
        due_date = auto_debit.due_date_in_reach((i.due_date for i in installments), today)
        if due_date is None:
            return None
        amount_minor = auto_debit.amount_due(installments, today)
        if amount_minor == 0:
            return None
        local_now = now.astimezone(ZoneInfo(zone))
        made = [auto_debit.Attempt(row["attempt"], row["status"],
                                   row["completed_at"].astimezone(local_now.tzinfo) if row["completed_at"] else None)
                for row in await order_rows.debit_attempts(conn, account_id, due_date)]
        attempt = auto_debit.next_attempt(due_date, made, local_now, self._morning_hour)
        if attempt is None:
            return None
        order = await order_rows.insert_debit_order(
            conn, order_id=uuid.uuid4(), account_id=account_id, amount_minor=amount_minor,
            payment_method_id=method["payment_method_id"], due_date=due_date, attempt=attempt, now=now)
        if order is not None:
            log.info("auto_debit_requested", account_id=str(account_id), order_id=str(order["order_id"]),
                     due_date=due_date.isoformat(), attempt=attempt, amount_minor=amount_minor)
        return order
