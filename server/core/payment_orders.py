"""Payment orders: our side of every payment through the gateway (docs/payments.md,
server/domain/payment_orders.py for the rules).

Writing an order and asking the gateway are two steps, never one transaction: the order
(with the entry that sets its amount aside and the request's idempotency record) commits
first; then the gateway is asked, with the order id as the idempotency key, outside any
transaction; then a final result is applied in a transaction of its own. Whatever dies
in between, the order is REQUESTED in the database, and a reconciliation (the bot's
payments task) asks the gateway about it by its key and applies what it learns. Applying
is a conditional update from REQUESTED, so a result applied twice (an answer and an
event, an event delivered twice, two bot replicas) books once."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import structlog

from server.clock import Clock
from server.core.accounts import lock_account
from server.core.merchant_payments import MerchantPayments
from server.core.payment_results import Applied, Result, ask, look_up, uuid_or_none
from server.core.repayments import Repay, Repayments
from server.db import acquire
from server.db import ledger as ledger_rows
from server.db import payment_orders as order_rows
from server.db import repayments as repayment_rows
from server.domain.errors import InvariantViolation
from server.domain.money import CURRENCY
from server.domain.payment_orders import GATEWAY_KIND, OrderKind, OrderStatus, completion
from server.domain.payments import FINAL_STATUSES, PaymentEvent, PaymentKind, PaymentOrder, PaymentStatus
from server.payments.gateway import PaymentGateway

log = structlog.get_logger(__name__)

# The channel of the repayment a successful auto-debit becomes.
AUTO_DEBIT_CHANNEL = "AUTO_DEBIT"


class PaymentOrders:
    def __init__(self, clock: Clock, gateway: PaymentGateway | None) -> None:
        self._clock = clock
        self.gateway = gateway
        self._repayments = Repayments(clock)
        self.merchants = MerchantPayments(clock, gateway)

    async def apply(self, conn: asyncpg.Connection, result: Result) -> Applied:
        """Make the order of `result` final and book it, in the caller's transaction;
        once per order whatever the number of results."""
        order_id, account_id = uuid_or_none(result.idempotency_key), uuid_or_none(result.account_id)
        fields = {"order_id": result.idempotency_key, "payment_id": result.payment_id,
                  "status": result.status.value}
        if result.status not in FINAL_STATUSES:
            return Applied.NOT_FINAL
        if result.kind is PaymentKind.MERCHANT:
            return await self.merchants.apply(conn, result)
        if order_id is None or account_id is None:
            log.warning("payment_result_unmatched", **fields)
            return Applied.UNKNOWN_ORDER
        order = await order_rows.get_order(conn, order_id, account_id)
        if order is None:
            log.warning("payment_result_unmatched", **fields)
            return Applied.UNKNOWN_ORDER
        if order["amount_minor"] != result.amount_minor:
            log.error("payment_result_mismatch", **fields, order_amount_minor=order["amount_minor"],
                      result_amount_minor=result.amount_minor)
            return Applied.MISMATCH
        if order["status"] != OrderStatus.REQUESTED.value:
            log.info("payment_result_duplicate", **fields, order_status=order["status"])
            return Applied.ALREADY_FINAL
        now = self._clock.now()
        await lock_account(conn, account_id)
        completed = await order_rows.complete_order(
            conn, order_id, account_id, status=result.status.value, gateway_payment_id=result.payment_id,
            failure_reason=result.failure_reason.value if result.failure_reason else None,
            completed_at=now)
        if completed is None:
            # Another transaction made it final between the read and the lock.
            log.info("payment_result_duplicate", **fields)
            return Applied.ALREADY_FINAL
        kind = OrderKind(completed["kind"])
        if kind is OrderKind.DEBIT:
            await self._debited(conn, completed, result.status)
        else:
            booked = completion(kind, result.status, completed["amount_minor"])
            if booked.credit_balance_delta_minor:
                await repayment_rows.add_to_credit_balance(conn, account_id, booked.credit_balance_delta_minor, now)
            await ledger_rows.post(conn, account_id, order_id, booked.entry, now)
        log.info("payment_order_completed", **fields, account_id=str(account_id), kind=completed["kind"],
                 amount_minor=completed["amount_minor"],
                 failure_reason=result.failure_reason.value if result.failure_reason else None)
        return Applied.COMPLETED

    async def _debited(self, conn: asyncpg.Connection, order: asyncpg.Record, status: PaymentStatus) -> None:
        """A DEBIT's result: money taken is a repayment of the account through the
        waterfall, with the order id as its id; a failure books nothing (no money moved)
        and leaves the next try to the auto-debit schedule and the customer's notice of
        it to the collections review (docs/collections.md)."""
        if status is not PaymentStatus.SUCCEEDED:
            log.info("auto_debit_failed", order_id=str(order["order_id"]), account_id=str(order["account_id"]),
                     due_date=order["due_date"].isoformat(), attempt=order["attempt"])
            return
        await self._repayments.receive(
            conn, Repay(order["account_id"], None, order["amount_minor"], AUTO_DEBIT_CHANNEL), order["order_id"])

    async def apply_alone(self, pool: asyncpg.Pool, result: Result) -> Applied:
        """`apply` in a transaction of its own."""
        async with acquire(pool) as conn, conn.transaction(isolation="read_committed"):
            return await self.apply(conn, result)

    async def apply_event(self, pool: asyncpg.Pool, consumer: str, event: PaymentEvent) -> Applied | None:
        """Apply one event of the gateway's stream and move `consumer`'s cursor past it,
        in one transaction; None when the cursor is already past it (another replica
        handled it)."""
        async with acquire(pool) as conn, conn.transaction(isolation="read_committed"):
            if event.sequence <= await order_rows.lock_cursor(conn, consumer, self._clock.now()):
                return None
            try:
                async with conn.transaction():
                    applied = await self.apply(conn, Result.of(event))
            except InvariantViolation as error:
                # A bug or damaged books: this result is not applied (its order stays
                # REQUESTED, and every sweep reports it again), and the stream goes on, so
                # that one bad result does not hold back everyone else's.
                log.error("payment_result_not_applied", sequence=event.sequence,
                          order_id=event.idempotency_key, error=str(error))
                applied = Applied.ERROR
            await order_rows.advance_cursor(conn, consumer, event.sequence, self._clock.now())
            return applied

    async def submit(self, pool: asyncpg.Pool, order: asyncpg.Record) -> Applied:
        """Ask the gateway for a REQUESTED order (its id as the key) and apply the answer."""
        if self.gateway is None:
            raise RuntimeError("no payment gateway configured")
        async with acquire(pool) as conn:
            token = await order_rows.token(conn, order["payment_method_id"], order["account_id"])
            await order_rows.mark_submitted(conn, order["order_id"], order["account_id"], self._clock.now())
        request = PaymentOrder(GATEWAY_KIND[OrderKind(order["kind"])], str(order["order_id"]),
                               order["amount_minor"], order["currency"] or CURRENCY, str(order["order_id"]),
                               instrument_token=token, account_id=str(order["account_id"]))
        return await ask(self.gateway, request, lambda result: self.apply_alone(pool, result),
                         rejected="payment_order_rejected", order_id=str(order["order_id"]))

    async def reconcile(self, pool: asyncpg.Pool, order: asyncpg.Record) -> Applied:
        """Settle a REQUESTED order from what the gateway knows of its key: a final
        result is applied; PENDING waits; a payment the gateway never took is asked for
        again with the same key."""
        return await look_up(self.gateway, str(order["order_id"]), lambda: self.submit(pool, order),
                             lambda result: self.apply_alone(pool, result), order_id=str(order["order_id"]))

    async def claim_due(self, pool: asyncpg.Pool, after: timedelta, limit: int) -> list[asyncpg.Record]:
        """Up to `limit` orders still REQUESTED `after` they were made and last asked
        about, oldest first, each leased for `after` to this caller (its submitted_at
        moves to now) so that other replicas leave it alone meanwhile."""
        now = self._clock.now()
        async with acquire(pool) as conn, conn.transaction(isolation="read_committed"):
            return await order_rows.claim_requested(conn, created_before=now - after, asked_before=now - after,
                                                    now=now, limit=limit)

    async def cursor(self, pool: asyncpg.Pool, consumer: str) -> int:
        """The sequence of the last event of the gateway's stream `consumer` handled."""
        async with acquire(pool) as conn:
            return await order_rows.cursor(conn, consumer)
