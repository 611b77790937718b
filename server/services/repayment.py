"""RepaymentService: validate, call the core, convert."""

from __future__ import annotations

from datetime import date

from credit.v1 import common_pb2, repayment_pb2, repayment_pb2_grpc
from server.core import journal
from server.core.loans import Loans
from server.core.repayments import Repay, Repayments
from server.services import convert
from server.services.fields import Fields
from server.services.transactions import Transactions


class RepaymentServicer(repayment_pb2_grpc.RepaymentServiceServicer):
    def __init__(self, transactions: Transactions, loans: Loans, repayments: Repayments) -> None:
        self._tx = transactions
        self._loans = loans
        self._repayments = repayments

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
