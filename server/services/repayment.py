"""RepaymentService: loans and what is owed on them."""

from __future__ import annotations

from credit.v1 import common_pb2, repayment_pb2_grpc
from server.core.loans import Loans
from server.services import convert
from server.services.fields import Fields
from server.services.transactions import Transactions


class RepaymentServicer(repayment_pb2_grpc.RepaymentServiceServicer):
    def __init__(self, transactions: Transactions, loans: Loans) -> None:
        self._tx = transactions
        self._loans = loans

    async def GetLoan(self, request, context) -> common_pb2.Loan:
        f = Fields()
        loan_id = f.uuid(request.loan_id, "loan_id")
        f.done()

        async def get(conn):
            return convert.loan(await self._loans.get(conn, loan_id))

        return await self._tx.read(get)
