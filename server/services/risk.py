"""RiskService: validate, call the core, convert."""

from __future__ import annotations

from datetime import date

from credit.v1 import risk_pb2, risk_pb2_grpc
from server.core import settlements
from server.core.portfolio import Portfolio
from server.core.risk import RiskReports
from server.domain import losses
from server.domain.pricing import Grade
from server.services import convert
from server.services.fields import Fields
from server.services.transactions import Transactions


class RiskServicer(risk_pb2_grpc.RiskServiceServicer):
    def __init__(self, transactions: Transactions, reports: RiskReports, portfolio: Portfolio) -> None:
        self._tx = transactions
        self._reports = reports
        self._portfolio = portfolio

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

    # -- portfolio report and stress tests ----------------------------------------------

    async def GetPortfolioReport(self, request, context) -> risk_pb2.PortfolioReport:
        f = Fields()
        as_of = f.day(request.as_of_date, "as_of_date")
        f.done()

        async def report(conn):
            return convert.portfolio_report(await self._portfolio.report(conn, as_of))

        return await self._tx.read(report)

    async def RunStressTest(self, request, context) -> risk_pb2.StressTestResult:
        f = Fields()
        scenario = _scenario(f, request)
        as_of = f.day(request.as_of_date, "as_of_date")
        f.done()

        async def stress(conn):
            return convert.stress_result(await self._portfolio.stress(conn, scenario, as_of))

        return await self._tx.read(stress)

    # -- co-lending ------------------------------------------------------------------------

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


def _scenario(f: Fields, request: risk_pb2.RunStressTestRequest) -> losses.Scenario:
    if not request.HasField("scenario"):
        f.fail("scenario", "is required")
        return losses.POLICY_AS_IS
    message = request.scenario
    name = f.text(message.name, "scenario.name", max_length=losses.SCENARIO_NAME_MAX)
    description = f.text(message.description, "scenario.description", required=False)
    multipliers: dict[Grade, int] = {}
    for i, item in enumerate(message.pd_multipliers):
        where = f"scenario.pd_multipliers[{i}]"
        grade = f.enum(item.grade, f"{where}.grade", convert.GRADES)
        if grade in multipliers:
            f.fail(f"{where}.grade", f"grade {grade} is given twice")
        if problem := losses.multiplier_problem(item.multiplier_bps):
            f.fail(f"{where}.multiplier_bps", problem)
        if grade is not None:
            multipliers[grade] = item.multiplier_bps
    lgd = message.lgd_bps if message.HasField("lgd_bps") else None
    if lgd is not None and (problem := losses.lgd_problem(lgd)):
        f.fail("scenario.lgd_bps", problem)
    roll = message.roll_rate_multiplier_bps if message.HasField("roll_rate_multiplier_bps") else losses.ONE_BPS
    if problem := losses.multiplier_problem(roll):
        f.fail("scenario.roll_rate_multiplier_bps", problem)
    return losses.Scenario(name, multipliers, lgd, roll, description)
