"""RiskService: validate, call the core, convert."""

from __future__ import annotations

from datetime import date

from credit.v1 import risk_pb2, risk_pb2_grpc
from server.core import settlements
from server.core.risk import RiskReports
from server.services import convert
from server.services.fields import Fields
from server.services.transactions import Transactions


class RiskServicer(risk_pb2_grpc.RiskServiceServicer):
    def __init__(self, transactions: Transactions, reports: RiskReports) -> None:
        self._tx = transactions
        self._reports = reports

    async def ListRiskDecisions(self, request, context) -> risk_pb2.ListRiskDecisionsResponse:
        f = Fields()
        account_id = f.uuid(request.account_id, "account_id")
        size = f.page_size(request.page_size)
        f.done()

        async def page(conn):
            result = await self._reports.decisions(conn, account_id, size, request.page_token)
            return risk_pb2.ListRiskDecisionsResponse(
                decisions=[convert.risk_decision_record(r) for r in result.decisions],
                next_page_token=result.next_page_token)

        return await self._tx.read(page)

    async def GetReservePool(self, request, context) -> risk_pb2.ReservePool:
        async def pool(conn):
            return convert.reserve_pool(await self._reports.reserve_pool(conn))

        return await self._tx.read(pool)

    async def GetPartnerSettlement(self, request, context) -> risk_pb2.PartnerSettlement:
        f = Fields()
        partner_id = f.identifier(request.partner_id, "partner_id")
        day = date.min
        try:
            day = date.fromisoformat(request.date)
        except ValueError:
            f.fail("date", f"must be a date YYYY-MM-DD, got {request.date[:32]!r}")
        f.done()

        async def get(conn):
            return convert.partner_settlement(await settlements.settlement(conn, partner_id, day))

        return await self._tx.read(get)
