"""Helpers shared by the integration and end-to-end tests: stubs over one channel and
short-hands for the common calls."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Protocol, cast

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from credit.v1 import (
    checkout_pb2,
    checkout_pb2_grpc,
    collections_pb2_grpc,
    common_pb2,
    credit_line_pb2,
    credit_line_pb2_grpc,
    repayment_pb2,
    repayment_pb2_grpc,
    risk_pb2_grpc,
)
from server.config import Settings
from server.db import acquire
from server.payments.gateway import PaymentGateway

# The settlement zone and the tests' customers' zone: Asia/Shanghai, with no daylight saving.
SHANGHAI = timezone(timedelta(hours=8))


def key() -> str:
    return uuid.uuid4().hex


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def morning(day: date | str, hour: int = 8, minute: int = 0) -> datetime:
    """`hour`:`minute` in Shanghai on `day` (a date or YYYY-MM-DD)."""
    day = date.fromisoformat(day) if isinstance(day, str) else day
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=SHANGHAI)


def timestamp(instant) -> Timestamp:
    message = Timestamp()
    message.FromDatetime(instant)
    return message


@dataclass
class Api:
    channel: grpc.aio.Channel
    # The statement day of the accounts `open_account` opens unless told; 0 leaves it to
    # the server (the day the account opens).
    statement_day: int = 0

    def __post_init__(self) -> None:
        self.lines = credit_line_pb2_grpc.CreditLineServiceStub(self.channel)
        self.checkout = checkout_pb2_grpc.CheckoutServiceStub(self.channel)
        self.repayment = repayment_pb2_grpc.RepaymentServiceStub(self.channel)
        self.collections = collections_pb2_grpc.CollectionsServiceStub(self.channel)
        self.risk = risk_pb2_grpc.RiskServiceStub(self.channel)

    async def open_account(self, limit_minor: int = 0, grade: common_pb2.RiskGrade.ValueType = common_pb2.RISK_GRADE_B,
                           time_zone: str = "Asia/Shanghai", locale: str = "zh-CN",
                           email: str = "wang.fang@example.com",
                           phone: str = "+8613800138000",
                           statement_day: int | None = None) -> credit_line_pb2.Account:
        account = await self.lines.OpenAccount(credit_line_pb2.OpenAccountRequest(
            customer_id="cust-" + key(),
            contact=credit_line_pb2.Contact(name="Wang Fang", email=email,
                                            phone=phone, locale=locale, time_zone=time_zone),
            statement_day=self.statement_day if statement_day is None else statement_day,
            idempotency_key=key()), timeout=10)
        if limit_minor or grade:
            account = await self.lines.AdjustLimit(credit_line_pb2.AdjustLimitRequest(
                account_id=account.account_id, credit_limit_minor=limit_minor, reason="test limit",
                risk_grade=grade, idempotency_key=key()), timeout=10)
        return account

    async def account(self, account_id: str) -> credit_line_pb2.Account:
        return await self.lines.GetAccount(credit_line_pb2.GetAccountRequest(account_id=account_id), timeout=10)

    async def authorize(self, account_id: str, amount_minor: int, term_months: int = 3, *,
                        method: common_pb2.RepaymentMethod.ValueType = common_pb2.REPAYMENT_METHOD_FLAT_FEE,
                        order_id: str | None = None, merchant_id: str = "merchant-1",
                        idempotency_key: str | None = None,
                        timeout: float = 10, device_id: str | None = None,
                        ip_address: str | None = None) -> checkout_pb2.Authorization:
        # Each customer on their own phone and address unless a test says otherwise, so
        # the risk rules about shared devices see what a real population looks like.
        device_id = device_id or "device-" + account_id[:13]
        ip_address = ip_address or f"203.0.{int(account_id[:2], 16)}.{int(account_id[2:4], 16)}"
        return await self.checkout.Authorize(checkout_pb2.AuthorizeRequest(
            account_id=account_id, merchant_id=merchant_id, order_id=order_id or "order-" + key(),
            amount_minor=amount_minor, term_months=term_months, method=method,
            idempotency_key=idempotency_key or key(),
            risk_context=checkout_pb2.RiskContext(device_id=device_id, ip_address=ip_address)),
            timeout=timeout)

    async def authorization(self, authorization_id: str) -> checkout_pb2.Authorization:
        return await self.checkout.GetAuthorization(
            checkout_pb2.GetAuthorizationRequest(authorization_id=authorization_id), timeout=10)

    async def capture(self, authorization_id: str, amount_minor: int = 0) -> checkout_pb2.Authorization:
        return await self.checkout.Capture(checkout_pb2.CaptureRequest(
            authorization_id=authorization_id, amount_minor=amount_minor, idempotency_key=key()), timeout=10)

    async def void(self, authorization_id: str) -> checkout_pb2.Authorization:
        return await self.checkout.Void(checkout_pb2.VoidRequest(
            authorization_id=authorization_id, idempotency_key=key()), timeout=10)

    async def loan(self, loan_id: str) -> common_pb2.Loan:
        return await self.repayment.GetLoan(repayment_pb2.GetLoanRequest(loan_id=loan_id), timeout=10)


class Health(Protocol):
    """grpc.health.v1.Health on an aio channel, with its methods: the stubs package's
    HealthStub declares none."""

    Check: grpc.aio.UnaryUnaryMultiCallable[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse]
    Watch: grpc.aio.UnaryStreamMultiCallable[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse]


def health_stub(channel: grpc.aio.Channel) -> Health:
    return cast(Health, health_pb2_grpc.HealthStub(channel))


def raw_call(channel: grpc.aio.Channel, method: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
    """`method` with no serializers: the request's bytes go as they are, the reply's come back."""
    return channel.unary_unary(method)


def field_violations(error: grpc.aio.AioRpcError) -> list[str]:
    """The fields named by the google.rpc.BadRequest detail of an error."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)  # type: ignore[arg-type]  # reads an AioRpcError too; stubs: grpc.Call
    if status is None:
        return []
    fields = []
    for detail in status.details:
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            fields += [v.field for v in bad_request.field_violations]
    return fields


async def repay(api: Api, account_id: str, amount_minor: int, *, loan_id: str = "",
                idempotency_key: str | None = None):
    return await api.repayment.Repay(repayment_pb2.RepayRequest(
        account_id=account_id, loan_id=loan_id, amount_minor=amount_minor,
        channel=repayment_pb2.PAYMENT_CHANNEL_BANK_CARD, idempotency_key=idempotency_key or key()), timeout=10)


async def refund(api: Api, loan_id: str, amount_minor: int, *, idempotency_key: str | None = None):
    return await api.checkout.Refund(checkout_pb2.RefundRequest(
        loan_id=loan_id, amount_minor=amount_minor, reason="goods returned",
        idempotency_key=idempotency_key or key()), timeout=10)


async def payoff(api: Api, loan_id: str, as_of: str = "") -> int:
    reply = await api.repayment.QuotePayoff(repayment_pb2.QuotePayoffRequest(loan_id=loan_id, as_of=as_of),
                                            timeout=10)
    return reply.payoff_minor


async def buy(api: Api, account_id: str, amount_minor: int, term_months: int = 3, **kwargs):
    """Authorize and capture: the new loan."""
    auth = await api.authorize(account_id, amount_minor, term_months, **kwargs)
    captured = await api.capture(auth.authorization_id)
    return await api.loan(captured.loan_id)


# How long the payment-gateway simulator of the integration tests takes to reach a
# result it does not give at once (its DELAY).
GATEWAY_DELAY_S = 0.3


async def until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("the condition did not hold in time")
        await asyncio.sleep(0.05)


async def gateway_payments(gateway: PaymentGateway, idempotency_key: str) -> int:
    """How many payments the gateway holds under the key (0 or 1 by its rules)."""
    page = await gateway.list_payments(page_size=100)
    return sum(1 for p in page.payments if p.idempotency_key == idempotency_key)


def dated_apr_bps(principal_minor: int, payments_minor: list[int], days: list[int]) -> float:
    """An independent APR of dated cash flows: 12 r, where r discounts a payment t days
    after the purchase by (1 + r)^(-12 t / 365), found by bisection on the NPV in floats
    (written without the code under test)."""
    def npv(rate: float) -> float:
        return -principal_minor + sum(a * (1 + rate) ** (-12 * t / 365)
                                      for a, t in zip(payments_minor, days, strict=True))

    low, high = -0.5, 1.0
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if npv(middle) > 0 else (low, middle)
    return (low + high) / 2 * 12 * 10_000


def settings_with_gateway(gateway_port: int, payment_due_days: int | None, timeout_ms: int = 400) -> Settings:
    """The integration server's settings with the payment gateway at `gateway_port`,
    answering within `timeout_ms`."""
    return Settings.from_env({"GRPC_LISTEN_ADDR": "127.0.0.1:0", "LOG_LEVEL": "warning",
                              "AUTH_MODE": "insecure-local", "PAYMENT_GATEWAY_ADDR": f"127.0.0.1:{gateway_port}",
                              "PAYMENT_GATEWAY_TIMEOUT_MS": str(timeout_ms),
                              **({"PAYMENT_DUE_DAYS": str(payment_due_days)} if payment_due_days else {})})


async def bind(api: Api, account_id: str, token: str, *, auto_debit: bool = False) -> repayment_pb2.PaymentMethod:
    """Bind a card (the simulator's behaviour: the token's last digit) as the account's
    instrument, for payouts and, with `auto_debit`, for auto-debit."""
    return await api.repayment.BindPaymentMethod(repayment_pb2.BindPaymentMethodRequest(
        account_id=account_id, kind=repayment_pb2.PAYMENT_METHOD_KIND_CARD, token=token,
        display_hint="ICBC debit card", idempotency_key=key(), auto_debit=auto_debit), timeout=10)


async def withdraw(api: Api, account_id: str, amount_minor: int, *, idempotency_key: str | None = None,
                   timeout: float = 10) -> repayment_pb2.Payout:
    return await api.repayment.WithdrawCreditBalance(repayment_pb2.WithdrawCreditBalanceRequest(
        account_id=account_id, amount_minor=amount_minor, idempotency_key=idempotency_key or key()),
        timeout=timeout)


async def debit_orders(pool, account_id: str) -> list:
    """The account's DEBIT payment orders, by due date and try."""
    async with acquire(pool) as conn:
        return await conn.fetch("SELECT order_id, due_date, attempt, status, amount_minor, failure_reason "
                                "FROM payment_orders WHERE account_id = $1 AND kind = 'DEBIT' "
                                "ORDER BY due_date, attempt", uuid.UUID(account_id))


async def auto_debit_repayments(pool, account_id: str) -> list:
    """The account's AUTO_DEBIT repayments, oldest first, as (repayment_id, amount_minor)."""
    async with acquire(pool) as conn:
        rows = await conn.fetch("SELECT repayment_id, amount_minor FROM repayments "
                                "WHERE account_id = $1 AND channel = 'AUTO_DEBIT' ORDER BY created_at",
                                uuid.UUID(account_id))
    return [(str(row["repayment_id"]), row["amount_minor"]) for row in rows]


async def merchant_payable_of(pool, account_ids: list[str]) -> int:
    """The accounts' MERCHANT_PAYABLE, from their postings (a credit is negative)."""
    balances = await merchant_balances(pool, account_ids)
    return sum(amount for (_, ledger_account), amount in balances.items() if ledger_account == "MERCHANT_PAYABLE")


async def merchant_balances(pool, account_ids: list[str]) -> dict[tuple[str, str], int]:
    """The non-zero balances, per (account, ledger account), of the ledger accounts that
    merchant settlement moves."""
    async with acquire(pool) as conn:
        rows = await conn.fetch("""
            SELECT account_id::text AS account_id, ledger_account, sum(amount_minor)::bigint AS balance
            FROM postings WHERE account_id = ANY($1::uuid[])
              AND ledger_account IN ('MERCHANT_PAYABLE', 'MERCHANT_SETTLEMENT_IN_FLIGHT', 'MERCHANT_FEE_INCOME')
            GROUP BY 1, 2""", account_ids)
    return {(r["account_id"], r["ledger_account"]): r["balance"] for r in rows if r["balance"]}


def make_bot(pool, clock, insurance_share_bps: int = 0):
    """The collections bot's pass (ageing, penalties, charge-off, reminders) with a mail
    sink of its own: (the sink's controller, to stop; the pass)."""
    from collections_bot.__main__ import build
    from collections_bot.config import BotSettings
    from collections_bot.mail_sink import start as start_mail_sink

    controller, _ = start_mail_sink("127.0.0.1", free_port())
    settings = BotSettings.from_env({"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(controller.port),
                                     "INSURANCE_SHARE_BPS": str(insurance_share_bps)})
    return controller, build(pool, settings, clock)
