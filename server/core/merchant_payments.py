"""Paying settled merchant-days through the payment gateway (docs/payments.md, "Paying
the day").

A day whose net is positive settles REQUESTED, with the payment's key
(`payment_order_id`) and the payee its merchant's registration names; the row is the
merchant's payment order. The settler commits first and asks afterwards, outside any
transaction: `PayMerchant` with the key as idempotency key and reference. A final result
is applied once, by a conditional update from REQUESTED under that key, whether it
comes as the call's answer, an event of the gateway's stream or a look-up:

- PAID: the day, and the CARRIED days just before it whose nets it carried in, leave
  MERCHANT_SETTLEMENT_IN_FLIGHT as cash, in each customer account that put something
  in flight for them (entry MERCHANT_PAID, that account's part);
- FAILED: nothing moved, nothing is booked; the day stays owed, in flight, until an
  operator mends the merchant's registration and asks again (`pay_again`, a new key).

PENDING, no answer or a refusal leave the day REQUESTED: the reconciliation asks the
gateway about it by its key later, and asks for it again with the same key if the
gateway never took it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import asyncpg
import structlog

from server.clock import Clock
from server.core.payment_results import Applied, Result, ask, look_up, uuid_or_none
from server.db import acquire
from server.db import ledger as ledger_rows
from server.db import merchants as merchant_rows
from server.domain.errors import FailedPrecondition, InvariantViolation, NotFound
from server.domain.ledger import merchant_paid
from server.domain.merchant_settlement import SettlementStatus
from server.domain.money import CURRENCY
from server.domain.payments import FINAL_STATUSES, PaymentKind, PaymentOrder, PaymentStatus
from server.payments.gateway import PaymentGateway

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class DayPayment:
    """A REQUESTED merchant-day as the gateway is asked for it."""

    merchant_id: str
    day: date
    payment_order_id: uuid.UUID
    payee_id: str
    amount_minor: int
    # Whether the gateway may have been asked for it already under this key.
    asked: bool = True

    @classmethod
    def of(cls, row: asyncpg.Record, asked: bool = True) -> DayPayment:
        return cls(row["merchant_id"], row["settlement_date"], row["payment_order_id"], row["payee_id"],
                   row["net_minor"], asked)

    def fields(self) -> dict[str, str]:
        """What log lines say of it."""
        return {"payment_order_id": str(self.payment_order_id), "merchant_id": self.merchant_id,
                "day": self.day.isoformat()}

    def order(self) -> PaymentOrder:
        key = str(self.payment_order_id)
        return PaymentOrder(PaymentKind.MERCHANT, key, self.amount_minor, CURRENCY, key, merchant_id=self.payee_id)


class MerchantPayments:
    def __init__(self, clock: Clock, gateway: PaymentGateway | None) -> None:
        self._clock = clock
        self.gateway = gateway

    async def apply(self, conn: asyncpg.Connection, result: Result) -> Applied:
        """Make the day paid under `result`'s key final and book it, in the caller's
        transaction; once whatever the number of results."""
        fields = {"payment_order_id": result.idempotency_key, "payment_id": result.payment_id,
                  "status": result.status.value}
        if result.status not in FINAL_STATUSES:
            return Applied.NOT_FINAL
        key = uuid_or_none(result.idempotency_key)
        row = await merchant_rows.settlement_by_order(conn, key) if key else None
        if key is None or row is None:
            failed = await merchant_rows.settlement_by_failed_order(conn, key) if key else None
            if failed is not None:
                # A result of a payment that FAILED before the day was asked again.
                log.info("payment_result_duplicate", **fields, merchant_id=failed["merchant_id"],
                         day=failed["settlement_date"].isoformat(), order_status="FAILED")
                return Applied.ALREADY_FINAL
            log.warning("payment_result_unmatched", **fields, kind=PaymentKind.MERCHANT.value)
            return Applied.UNKNOWN_ORDER
        day = row["settlement_date"].isoformat()
        if row["net_minor"] != result.amount_minor:
            log.error("payment_result_mismatch", **fields, merchant_id=row["merchant_id"], day=day,
                      order_amount_minor=row["net_minor"], result_amount_minor=result.amount_minor)
            return Applied.MISMATCH
        if row["status"] != SettlementStatus.REQUESTED.value:
            log.info("payment_result_duplicate", **fields, merchant_id=row["merchant_id"], day=day,
                     order_status=row["status"])
            return Applied.ALREADY_FINAL
        # The merchant's lock, as settling takes it: no day of the merchant settles while
        # the days this payment clears are read.
        await merchant_rows.lock_merchant(conn, row["merchant_id"])
        paid = result.status is PaymentStatus.SUCCEEDED
        completed = await merchant_rows.complete_payment(
            conn, row["merchant_id"], key, status=(SettlementStatus.PAID if paid else SettlementStatus.FAILED).value,
            gateway_payment_id=result.payment_id,
            failure_reason=result.failure_reason.value if result.failure_reason else None,
            completed_at=self._clock.now())
        if completed is None:
            log.info("payment_result_duplicate", **fields, merchant_id=row["merchant_id"], day=day)
            return Applied.ALREADY_FINAL
        if paid:
            await self._book_paid(conn, completed)
            log.info("merchant_day_paid", **fields, merchant_id=row["merchant_id"], day=day,
                     paid_minor=completed["paid_minor"], payee_id=completed["payee_id"])
        else:
            reason = result.failure_reason.value if result.failure_reason else None
            log.error("merchant_payment_failed", **fields, merchant_id=row["merchant_id"], day=day,
                      amount_minor=row["net_minor"], payee_id=completed["payee_id"], failure_reason=reason)
        return Applied.COMPLETED

    async def _book_paid(self, conn: asyncpg.Connection, day: asyncpg.Record) -> None:
        """Each account's part of what the paid days put in flight leaves it as cash."""
        settlement_ids = await merchant_rows.paid_by(conn, day["merchant_id"], day["settlement_date"])
        parts = await merchant_rows.in_flight_by_account(conn, settlement_ids)
        if sum(amount for _, amount in parts) != day["paid_minor"]:
            raise InvariantViolation(f"merchant {day['merchant_id']} on {day['settlement_date']}: the days it pays "
                                     f"put {parts} in flight, not {day['paid_minor']}")
        now = self._clock.now()
        # In account order, as settling posts: no cycle of waits between the two.
        for account_id, amount_minor in parts:
            if amount_minor:
                await ledger_rows.post(conn, account_id, day["payment_order_id"], merchant_paid(amount_minor), now)

    async def apply_alone(self, pool: asyncpg.Pool, result: Result) -> Applied:
        async with acquire(pool) as conn, conn.transaction(isolation="read_committed"):
            return await self.apply(conn, result)

    async def submit(self, pool: asyncpg.Pool, payment: DayPayment, *, mark: bool = True) -> Applied:
        """Ask the gateway to pay a REQUESTED day (its key: asking again never pays
        twice) and apply the answer. No transaction is open during the call. `mark`
        records when it was asked (the sweep's lease); a claim has done so already."""
        if self.gateway is None:
            raise RuntimeError("no payment gateway configured")
        if mark:
            async with acquire(pool) as conn:
                await merchant_rows.mark_submitted(conn, payment.merchant_id, payment.day, self._clock.now())
        return await ask(self.gateway, payment.order(), lambda result: self.apply_alone(pool, result),
                         rejected="merchant_payment_rejected", **payment.fields())

    async def reconcile(self, pool: asyncpg.Pool, payment: DayPayment) -> Applied:
        """Settle a REQUESTED day from what the gateway knows of its key."""
        return await look_up(self.gateway, str(payment.payment_order_id),
                             lambda: self.submit(pool, payment, mark=False),
                             lambda result: self.apply_alone(pool, result), **payment.fields())

    async def settle(self, pool: asyncpg.Pool, payment: DayPayment) -> Applied:
        """Ask for a day never asked for; look up one that was (asking again is safe
        either way, but a look-up finds a result without moving anything)."""
        if payment.asked:
            return await self.reconcile(pool, payment)
        return await self.submit(pool, payment, mark=False)

    async def claim_due(self, pool: asyncpg.Pool, after: timedelta, limit: int) -> list[DayPayment]:
        """Up to `limit` REQUESTED days never asked for, or not asked about for
        `after`, each leased to this caller for `after`."""
        now = self._clock.now()
        async with acquire(pool) as conn, conn.transaction(isolation="read_committed"):
            claimed = await merchant_rows.claim_requested(conn, now - after, now, limit)
        return [DayPayment.of(r, asked=r["previously_submitted_at"] is not None) for r in claimed]


async def pay_again(conn: asyncpg.Connection, merchant_id: str, day: date, now: datetime) -> asyncpg.Record:
    """Ask again for a FAILED day's payment, under a new key, to the payee the merchant's
    registration names now (mended by an operator); the reconciliation sends it."""
    async with conn.transaction():
        await merchant_rows.lock_merchant(conn, merchant_id)
        row = await merchant_rows.settlement(conn, merchant_id, day)
        if row is None:
            raise NotFound("date", day.isoformat(), f"settled day of merchant {merchant_id}")
        if row["status"] != SettlementStatus.FAILED.value:
            raise FailedPrecondition(f"date: merchant {merchant_id} on {day} is {row['status']}; "
                                     "only a FAILED day is paid again")
        payee_id = await merchant_rows.payee(conn, merchant_id)
        again = await merchant_rows.pay_again(conn, merchant_id, day, uuid.uuid4(), payee_id)
        if again is None:
            raise InvariantViolation(f"merchant {merchant_id} on {day}: FAILED under the lock, then not")
    log.info("merchant_payment_asked_again", merchant_id=merchant_id, day=day.isoformat(),
             payment_order_id=str(again["payment_order_id"]), payee_id=payee_id,
             attempts=again["payment_attempts"], at=now.isoformat())
    return again
