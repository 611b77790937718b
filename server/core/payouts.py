"""Bound instruments and payouts of a credit balance (docs/payments.md, "Payouts").

A payout is a PAYOUT payment order (server/core/payment_orders.py). Requesting one
locks the account, takes the amount out of the credit balance into PAYOUTS_IN_FLIGHT,
and writes the order, in the request's transaction; the gateway is asked after that
commits, and its answer applied in a transaction of its own."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg
import structlog

from server.clock import Clock
from server.core.accounts import lock_account
from server.core.payment_orders import PaymentOrders
from server.core.views import AccountView, account_view
from server.db import accounts as account_rows
from server.db import acquire, one
from server.db import ledger as ledger_rows
from server.db import payment_orders as order_rows
from server.db import repayments as repayment_rows
from server.domain.errors import FailedPrecondition, NotFound
from server.domain.payment_orders import (
    OrderKind,
    OrderStatus,
    PaymentMethodKind,
    PaymentMethodStatus,
    PayoutStatus,
    last4,
    payout_status,
    requested,
)
from server.domain.payments import FailureReason

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class BindPaymentMethod:
    account_id: UUID
    kind: PaymentMethodKind
    token: str
    display_hint: str
    auto_debit: bool = False


@dataclass(frozen=True)
class WithdrawCreditBalance:
    account_id: UUID
    amount_minor: int


@dataclass(frozen=True)
class PaymentMethodView:
    payment_method_id: UUID
    account_id: UUID
    kind: PaymentMethodKind
    status: PaymentMethodStatus
    token_last4: str
    display_hint: str
    created_at: datetime
    auto_debit: bool


@dataclass(frozen=True)
class PayoutView:
    payout_id: UUID
    account_id: UUID
    amount_minor: int
    status: PayoutStatus
    failure_reason: FailureReason | None
    payment_method_id: UUID
    created_at: datetime
    completed_at: datetime | None
    account: AccountView


def _method_view(row: asyncpg.Record) -> PaymentMethodView:
    return PaymentMethodView(row["payment_method_id"], row["account_id"], PaymentMethodKind(row["kind"]),
                             PaymentMethodStatus(row["status"]), row["token_last4"], row["display_hint"],
                             row["created_at"], row["auto_debit"])


class Payouts:
    def __init__(self, clock: Clock, orders: PaymentOrders) -> None:
        self._clock = clock
        self.orders = orders

    async def bind(self, conn: asyncpg.Connection, command: BindPaymentMethod) -> PaymentMethodView:
        """Make the instrument the account's active one, replacing any other."""
        now = self._clock.now()
        await lock_account(conn, command.account_id)
        await order_rows.replace_active_method(conn, command.account_id, now)
        row = await order_rows.insert_method(
            conn, payment_method_id=uuid.uuid4(), account_id=command.account_id, kind=command.kind.value,
            token=command.token, token_last4=last4(command.token), display_hint=command.display_hint,
            auto_debit=command.auto_debit, now=now)
        log.info("payment_method_bound", account_id=str(command.account_id),
                 payment_method_id=str(row["payment_method_id"]), kind=command.kind.value,
                 token_last4=row["token_last4"], auto_debit=command.auto_debit)
        return _method_view(row)

    async def payment_method(self, conn: asyncpg.Connection, payment_method_id: UUID) -> PaymentMethodView:
        row = await order_rows.get_method(conn, payment_method_id)
        if row is None:
            raise NotFound("payment_method_id", str(payment_method_id), "payment method")
        return _method_view(row)

    async def request(self, conn: asyncpg.Connection, command: WithdrawCreditBalance) -> PayoutView:
        """In the caller's transaction: the amount out of the credit balance into
        PAYOUTS_IN_FLIGHT, and the REQUESTED order that will pay it."""
        if self.orders.gateway is None:
            raise FailedPrecondition("payouts need a payment gateway, and this server has none "
                                     "(PAYMENT_GATEWAY_ADDR is not set)")
        now = self._clock.now()
        account = await lock_account(conn, command.account_id)
        if command.amount_minor > account["credit_balance_minor"]:
            raise FailedPrecondition(f"amount_minor: {command.amount_minor} exceeds the credit balance of "
                                     f"{account['credit_balance_minor']}")
        method = await order_rows.active_method(conn, command.account_id)
        if method is None:
            raise FailedPrecondition("the account has no bound payment method: BindPaymentMethod first")
        order_id = uuid.uuid4()
        order = await order_rows.insert_order(
            conn, order_id=order_id, account_id=command.account_id, kind=OrderKind.PAYOUT.value,
            amount_minor=command.amount_minor, payment_method_id=method["payment_method_id"], now=now)
        booked = requested(OrderKind.PAYOUT, command.amount_minor)
        await repayment_rows.add_to_credit_balance(conn, command.account_id, booked.credit_balance_delta_minor, now)
        await ledger_rows.post(conn, command.account_id, order_id, booked.entry, now)
        log.info("payout_requested", payout_id=str(order_id), account_id=str(command.account_id),
                 amount_minor=command.amount_minor, token_last4=method["token_last4"])
        return await self._view(conn, order, now)

    async def settle(self, pool: asyncpg.Pool, payout_id: UUID) -> PayoutView:
        """Ask the gateway for a payout still PENDING and apply its answer; the payout
        as it then stands. A call that gets no answer leaves it PENDING, for the bot."""
        async with acquire(pool) as conn:
            order = one(await order_rows.get_order(conn, payout_id))
            # (A replay on a server without a gateway only reads: the bot settles it.)
            if order["status"] != OrderStatus.REQUESTED.value or self.orders.gateway is None:
                return await self._view(conn, order, self._clock.now())
        await self.orders.submit(pool, order)
        async with acquire(pool) as conn:
            return await self.get(conn, payout_id)

    async def get(self, conn: asyncpg.Connection, payout_id: UUID) -> PayoutView:
        order = await order_rows.get_order(conn, payout_id)
        if order is None or order["kind"] != OrderKind.PAYOUT.value:
            raise NotFound("payout_id", str(payout_id), "payout")
        return await self._view(conn, order, self._clock.now())

    async def _view(self, conn: asyncpg.Connection, order: asyncpg.Record, now: datetime) -> PayoutView:
        account = one(await account_rows.get(conn, order["account_id"]))
        return PayoutView(
            payout_id=order["order_id"], account_id=order["account_id"], amount_minor=order["amount_minor"],
            status=payout_status(OrderStatus(order["status"])),
            failure_reason=FailureReason(order["failure_reason"]) if order["failure_reason"] else None,
            payment_method_id=order["payment_method_id"], created_at=order["created_at"],
            completed_at=order["completed_at"], account=account_view(account, now))
