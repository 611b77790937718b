"""CheckoutService: validate, call the core, convert."""

from __future__ import annotations

from credit.v1 import checkout_pb2, checkout_pb2_grpc, common_pb2
from server.core import merchant_settlements
from server.core.checkout import Authorize, Capture, Checkout, account_of_authorization
from server.core.loans import account_of_loan
from server.core.repayments import RefundLoan, Repayments
from server.domain.pricing import TERMS_MONTHS, RepaymentMethod
from server.services import convert
from server.services.fields import Fields
from server.services.transactions import Transactions

Authorization = checkout_pb2.Authorization


class CheckoutServicer(checkout_pb2_grpc.CheckoutServiceServicer):
    def __init__(self, transactions: Transactions, checkout: Checkout, repayments: Repayments) -> None:
        self._tx = transactions
        self._checkout = checkout
        self._repayments = repayments

    async def QuoteInstallments(self, request, context) -> checkout_pb2.QuoteInstallmentsResponse:
        f = Fields()
        account_id = f.uuid(request.account_id, "account_id")
        amount = f.amount(request.amount_minor, "amount_minor")
        if request.merchant_id:
            f.identifier(request.merchant_id, "merchant_id")
        method = f.enum(request.method, "method", convert.METHODS) if request.method else None
        f.done()

        async def quote(conn):
            result = await self._checkout.quote(conn, account_id, amount, method)
            return convert.quote(result)

        return await self._tx.read(quote)

    async def Authorize(self, request, context) -> Authorization:
        f = Fields()
        if request.term_months not in TERMS_MONTHS:
            f.fail("term_months", f"must be one of {', '.join(map(str, TERMS_MONTHS))}, got {request.term_months}")
        risk = request.risk_context
        command = Authorize(
            account_id=f.uuid(request.account_id, "account_id"),
            merchant_id=f.identifier(request.merchant_id, "merchant_id"),
            order_id=f.identifier(request.order_id, "order_id"),
            amount_minor=f.amount(request.amount_minor, "amount_minor"),
            term_months=request.term_months,
            method=f.enum(request.method, "method", convert.METHODS, default=RepaymentMethod.FLAT_FEE),
            risk_context={name: value for name, value in (
                ("device_id", f.text(risk.device_id, "risk_context.device_id", max_length=128, required=False)),
                ("ip_address", f.ip_address(risk.ip_address, "risk_context.ip_address")),
                ("user_agent", f.text(risk.user_agent, "risk_context.user_agent", max_length=512, required=False)),
            ) if value},
        )
        f.idempotency_key(request.idempotency_key)
        f.done()
        return await self._tx.command(
            "Authorize", request, Authorization,
            lambda conn, key, lock: self._checkout.authorize(conn, command, key, lock), convert.authorization,
            account_id=command.account_id)

    async def Capture(self, request, context) -> Authorization:
        f = Fields()
        command = Capture(
            authorization_id=f.uuid(request.authorization_id, "authorization_id"),
            amount_minor=f.amount(request.amount_minor, "amount_minor", allow_zero=True),
        )
        f.idempotency_key(request.idempotency_key)
        f.done()
        return await self._tx.command(
            "Capture", request, Authorization,
            lambda conn, key, lock: self._checkout.capture(conn, command, key, lock), convert.authorization)

    async def Void(self, request, context) -> Authorization:
        f = Fields()
        authorization_id = f.uuid(request.authorization_id, "authorization_id")
        f.idempotency_key(request.idempotency_key)
        f.done()
        return await self._tx.idempotent(
            "Void", request, Authorization,
            lambda conn: self._authorization(self._checkout.void(conn, authorization_id)),
            find_account=lambda conn: account_of_authorization(conn, authorization_id))

    async def Refund(self, request, context) -> common_pb2.Loan:
        f = Fields()
        command = RefundLoan(
            loan_id=f.uuid(request.loan_id, "loan_id"),
            amount_minor=f.amount(request.amount_minor, "amount_minor"),
            reason=f.text(request.reason, "reason"),
        )
        f.idempotency_key(request.idempotency_key)
        f.done()

        async def refund(conn):
            return convert.loan(await self._repayments.refund(conn, command))

        return await self._tx.idempotent("Refund", request, common_pb2.Loan, refund,
                                         find_account=lambda conn: account_of_loan(conn, command.loan_id))

    async def GetAuthorization(self, request, context) -> Authorization:
        f = Fields()
        authorization_id = f.uuid(request.authorization_id, "authorization_id")
        f.done()
        return await self._tx.read(lambda conn: self._authorization(self._checkout.get(conn, authorization_id)))

    async def GetMerchantSettlement(self, request, context) -> checkout_pb2.MerchantSettlement:
        f = Fields()
        merchant_id = f.identifier(request.merchant_id, "merchant_id")
        when = f.day(request.date, "date", required=True)
        f.done()

        async def get(conn):
            return convert.merchant_settlement(await merchant_settlements.settled_day(conn, merchant_id, when))

        return await self._tx.read(get)

    @staticmethod
    async def _authorization(view_coroutine) -> Authorization:
        return convert.authorization(await view_coroutine)
