"""The bot's payments task: it settles payment orders whose result the request that made
them did not learn (docs/payments.md, "Reconciliation").

- `watch` follows the gateway's stream of results (WatchPayments) from a cursor kept in
  the database, and applies each event to its order in the transaction that moves the
  cursor past it. The stream is at least once and the apply is a conditional update, so
  a duplicate, a late event or a second replica watching too books nothing twice.
- `sweep` takes the orders still REQUESTED some time after they were made (or last
  asked about), a few at a time, and asks the gateway about each by its key: a final
  result is applied; PENDING waits for the stream or the next sweep; a payment the
  gateway never took is asked for again with the same key (safe: the key makes a
  repeat the same payment). Each claimed order is leased through its submitted_at, so
  replicas do not ask about the same order at once; if they did, nothing would move
  twice either.
- The same sweep pays settled merchant-days: a day REQUESTED and never asked for (the
  pass that settled it has no gateway) is asked for, with its key; one asked about
  before and still REQUESTED is looked up like an order.
- `debit` writes the auto-debit orders due now (one per account, due date and try,
  committed before any call) and asks the gateway for each; its answer is applied like
  any other result, and an order whose answer is lost is the sweep's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

import asyncpg
import structlog

from collections_bot import metrics as bot_metrics
from server.clock import Clock
from server.core.auto_debit import AutoDebits
from server.core.payment_orders import Applied, PaymentOrders
from server.domain import auto_debit
from server.domain.errors import InvariantViolation
from server.payments.gateway import GatewayError

log = structlog.get_logger(__name__)

# The cursor row of the bot's replicas: they share one, and one place in the stream.
CONSUMER = "collections-bot"
# Orders claimed by one sweep query; a sweep repeats until none is due.
SWEEP_BATCH = 20
# Pause before following the stream again after it broke, doubling up to the maximum.
WATCH_RETRY_S = 1.0
WATCH_RETRY_MAX_S = 30.0


class PaymentsTask:
    def __init__(self, pool: asyncpg.Pool, clock: Clock, orders: PaymentOrders, *, reconcile_after_s: int,
                 max_orders_per_sweep: int = 1000,
                 auto_debit_hour: int = auto_debit.DEFAULT_MORNING_HOUR, batch_size: int = 200) -> None:
        if orders.gateway is None:
            raise ValueError("the payments task needs a payment gateway")
        self._pool = pool
        self._clock = clock
        self._orders = orders
        self._after = timedelta(seconds=reconcile_after_s)
        self._max_orders = max_orders_per_sweep
        self._auto_debits = AutoDebits(clock, morning_hour=auto_debit_hour)
        self._batch_size = batch_size

    async def debit(self) -> Counter:
        """Ask for the auto-debits due now; what each answer did."""
        report = await self._auto_debits.request_due(self._pool, self._batch_size)
        done: Counter = Counter()
        for order in report.requested:
            try:
                applied = await self._orders.submit(self._pool, order)
            except GatewayError as error:
                # The order is REQUESTED and committed: the sweep asks about it later.
                log.warning("auto_debit_submit_failed", order_id=str(order["order_id"]), error=str(error))
                applied = None
            outcome = "gateway_unavailable" if applied is None else applied.value
            bot_metrics.PAYMENT_RESULTS.labels("debit", outcome).inc()
            done[outcome] += 1
        if done or report.busy or report.failed:
            log.info("auto_debit_finished", busy=report.busy, failed=report.failed, **done)
        return done

    async def sweep(self) -> Counter:
        """Settle what can be settled of the orders due for a look, then of the
        merchant-days to pay or to look up; what each did."""
        orders, merchants = self._orders, self._orders.merchants
        done = await self._sweep(
            lambda: orders.claim_due(self._pool, self._after, SWEEP_BATCH),
            lambda order: orders.reconcile(self._pool, order),
            lambda order: {"order_id": str(order["order_id"])},
            source="lookup", prefix="", lookup_failed="payment_order_lookup_failed",
            finished="payment_sweep_finished")
        done.update(await self._sweep(
            lambda: merchants.claim_due(self._pool, self._after, SWEEP_BATCH),
            lambda payment: merchants.settle(self._pool, payment),
            lambda payment: {"payment_order_id": str(payment.payment_order_id), "merchant_id": payment.merchant_id},
            source="merchant", prefix="merchant_", lookup_failed="merchant_payment_lookup_failed",
            finished="merchant_payments_finished"))
        return done

    async def _sweep(self, claim: Callable[[], Awaitable[Sequence[Any]]],
                     settle: Callable[[Any], Awaitable[Applied]], describe: Callable[[Any], dict], *,
                     source: str, prefix: str, lookup_failed: str, finished: str) -> Counter:
        """Claim what is due a few at a time and settle each, until nothing is due or
        the sweep's share is done; what each did, its outcomes under `prefix`."""
        done: Counter = Counter()
        while sum(done.values()) < self._max_orders:
            claimed = await claim()
            if not claimed:
                break
            for item in claimed:
                try:
                    outcome = (await settle(item)).value
                except InvariantViolation as error:
                    # Rolled back; every sweep reports it again until it is mended.
                    log.error("payment_result_not_applied", **describe(item), error=str(error))
                    outcome = Applied.ERROR.value
                except GatewayError as error:
                    # The look-up got no answer: the lease runs out and a later sweep asks again.
                    log.warning(lookup_failed, **describe(item), error=str(error))
                    outcome = "gateway_unavailable"
                bot_metrics.PAYMENT_RESULTS.labels(source, outcome).inc()
                done[prefix + outcome] += 1
        if done:
            log.info(finished, **done)
        return done

    async def watch(self, stop: asyncio.Event) -> None:
        """Follow the gateway's results until `stop` is set, resuming from the cursor
        after every break."""
        pause = WATCH_RETRY_S
        while not stop.is_set():
            following = asyncio.create_task(self._follow())
            stopping = asyncio.create_task(stop.wait())
            await asyncio.wait((following, stopping), return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if not following.done():
                following.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await following
                return
            error = following.exception()
            if error is None:
                pause = WATCH_RETRY_S
                continue
            if not isinstance(error, (GatewayError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError)):
                log.error("payment_watch_failed", error=f"{type(error).__name__}: {error}", exc_info=error)
            else:
                log.warning("payment_watch_broken", error=f"{type(error).__name__}: {error}", retry_s=pause)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=pause)
            pause = min(pause * 2, WATCH_RETRY_MAX_S)

    async def _follow(self) -> None:
        assert self._orders.gateway is not None
        after = await self._orders.cursor(self._pool, CONSUMER)
        log.info("payment_watch_started", after_sequence=after)
        async for event in self._orders.gateway.watch(after):
            applied = await self._orders.apply_event(self._pool, CONSUMER, event)
            outcome = "seen_by_another_replica" if applied is None else applied.value
            bot_metrics.PAYMENT_RESULTS.labels("event", outcome).inc()
            if applied is Applied.COMPLETED:
                log.info("payment_event_applied", sequence=event.sequence, order_id=event.idempotency_key)
