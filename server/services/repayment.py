"""RepaymentService: validate, call the core, convert."""

from __future__ import annotations

import uuid
from datetime import date

from credit.v1 import common_pb2, repayment_pb2, repayment_pb2_grpc
from server.core import journal
from server.core.loans import Loans
from server.core.payouts import BindPaymentMethod, Payouts, WithdrawCreditBalance
from server.core.repayments import Repay, Repayments
from server.core.statements import Statements
from server.domain.payment_orders import MAX_DISPLAY_HINT_LENGTH, MIN_TOKEN_LENGTH
from server.services import convert
from server.services.fields import Fields
from server.services.transactions import Transactions


class RepaymentServicer(repayment_pb2_grpc.RepaymentServiceServicer):
    def __init__(self, transactions: Transactions, loans: Loans, repayments: Repayments, statements: Statements,
                 payouts: Payouts) -> None:
        self._tx = transactions
        self._loans = loans
        self._repayments = repayments
        self._statements = statements
        self._payouts = payouts

    async def Repay(self, request, context) -> repayment_pb2.Repayment:
        f = Fields()
        command = Repay(
            account_id=f.uuid(request.account_id, "account_id"),
            loan_id=f.uuid(request.loan_id, "loan_id") if request.loan_id else None,
            amount_minor=f.amount(request.amount_minor, "amount_minor"),
            channel=f.enum(request.channel, "channel", convert.PAYMENT_CHANNELS),
        )
        f.idempotency_key(request.idempotency_key)
        f.done()

        return await self._tx.command(
            "Repay", request, repayment_pb2.Repayment,
            lambda conn, key, lock: self._repayments.repay(conn, command, key, lock), convert.repayment,
            account_id=command.account_id)

    async def GetLoan(self, request, context) -> common_pb2.Loan:
        f = Fields()
        loan_id = f.uuid(request.loan_id, "loan_id")
        f.done()

        async def get(conn):
            return convert.loan(await self._loans.get(conn, loan_id))

        return await self._tx.read(get)

    async def ListLoans(self, request, context) -> repayment_pb2.ListLoansResponse:
        f = Fields()
        account_id = f.uuid(request.account_id, "account_id")
        size = f.page_size(request.page_size)
        status = f.enum(request.status, "status", convert.LOAN_STATUSES) if request.status else None
        f.done()

        async def page(conn):
            result = await self._loans.page(conn, account_id, size, request.page_token, status)
            return repayment_pb2.ListLoansResponse(loans=[convert.loan(v) for v in result.loans],
                                                   next_page_token=result.next_page_token)

        return await self._tx.read(page)

    async def QuotePayoff(self, request, context) -> repayment_pb2.QuotePayoffResponse:
        f = Fields()
        loan_id = f.uuid(request.loan_id, "loan_id")
        as_of = None
        if request.as_of:
            try:
                as_of = date.fromisoformat(request.as_of)
            except ValueError:
                f.fail("as_of", f"must be a date YYYY-MM-DD, got {request.as_of[:32]!r}")
        f.done()

        async def quote(conn):
            return convert.payoff(await self._repayments.quote_payoff(conn, loan_id, as_of))

        return await self._tx.read(quote)

    async def GetAccountJournal(self, request, context) -> repayment_pb2.GetAccountJournalResponse:
        f = Fields()
        account_id = f.uuid(request.account_id, "account_id")
        size = f.page_size(request.page_size)
        f.done()

        async def page(conn):
            return convert.journal_page(await journal.page(conn, account_id, size, request.page_token))

        return await self._tx.read(page)

    async def GetStatement(self, request, context) -> repayment_pb2.Statement:
        f = Fields()
        account_id = f.uuid(request.account_id, "account_id")
        statement_date, month = f.statement_period(request.period)
        f.done()

        async def get(conn):
            return convert.statement(await self._statements.get(conn, account_id, request.period,
                                                                statement_date=statement_date, month=month))

        return await self._tx.read(get)

    async def ListStatements(self, request, context) -> repayment_pb2.ListStatementsResponse:
        f = Fields()
        account_id = f.uuid(request.account_id, "account_id")
        size = f.page_size(request.page_size)
        f.done()

        async def page(conn):
            result = await self._statements.page(conn, account_id, size, request.page_token)
            return repayment_pb2.ListStatementsResponse(statements=[convert.statement(s) for s in result.statements],
                                                        next_page_token=result.next_page_token)

        return await self._tx.read(page)

    async def BindPaymentMethod(self, request, context) -> repayment_pb2.PaymentMethod:
        f = Fields()
        command = BindPaymentMethod(
            account_id=f.uuid(request.account_id, "account_id"),
            kind=f.enum(request.kind, "kind", convert.PAYMENT_METHOD_KINDS),
            token=f.identifier(request.token, "token", min_length=MIN_TOKEN_LENGTH),
            display_hint=f.text(request.display_hint, "display_hint", max_length=MAX_DISPLAY_HINT_LENGTH,
                                required=False),
            auto_debit=request.auto_debit)
        f.idempotency_key(request.idempotency_key)
        f.done()

        async def bind(conn):
            return convert.payment_method(await self._payouts.bind(conn, command))

        return await self._tx.idempotent("BindPaymentMethod", request, repayment_pb2.PaymentMethod, bind,
                                         account_id=command.account_id)

    async def GetPaymentMethod(self, request, context) -> repayment_pb2.PaymentMethod:
        f = Fields()
        payment_method_id = f.uuid(request.payment_method_id, "payment_method_id")
        f.done()

        async def get(conn):
            return convert.payment_method(await self._payouts.payment_method(conn, payment_method_id))

        return await self._tx.read(get)

    async def WithdrawCreditBalance(self, request, context) -> repayment_pb2.Payout:
        f = Fields()
        command = WithdrawCreditBalance(account_id=f.uuid(request.account_id, "account_id"),
                                        amount_minor=f.amount(request.amount_minor, "amount_minor"))
        f.idempotency_key(request.idempotency_key)
        f.done()

        async def withdraw(conn):
            return convert.payout(await self._payouts.request(conn, command))

        # The first reply names the payout; a replay answers with it as it stands now.
        first = await self._tx.idempotent("WithdrawCreditBalance", request, repayment_pb2.Payout, withdraw,
                                          account_id=command.account_id)
        return convert.payout(await self._payouts.settle(self._tx.pool, uuid.UUID(first.payout_id)))

    async def GetPayout(self, request, context) -> repayment_pb2.Payout:
        f = Fields()
        payout_id = f.uuid(request.payout_id, "payout_id")
        f.done()

        async def get(conn):
            return convert.payout(await self._payouts.get(conn, payout_id))

        return await self._tx.read(get)
