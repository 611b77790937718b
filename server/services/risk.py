"""RiskService: decisions for audit and the reserve pool."""

from __future__ import annotations

from credit.v1 import risk_pb2, risk_pb2_grpc
from server import paging
from server.db import accounts as account_rows
from server.db import reserve as reserve_rows
from server.db import risk as risk_rows
from server.domain.errors import NotFound
from server.services import convert
from server.services.fields import Fields
from server.services.transactions import Transactions

MAX_PAGE_SIZE = 100


class RiskServicer(risk_pb2_grpc.RiskServiceServicer):
    def __init__(self, transactions: Transactions) -> None:
        self._tx = transactions

    async def ListRiskDecisions(self, request, context) -> risk_pb2.ListRiskDecisionsResponse:
        f = Fields()
        account_id = f.uuid(request.account_id, "account_id")
        if not 0 <= request.page_size <= MAX_PAGE_SIZE:
            f.fail("page_size", f"must be between 1 and {MAX_PAGE_SIZE} (0 for the default)")
        f.done()
        size = request.page_size or 20
        after = paging.decode_after(request.page_token)

        async def page(conn):
            if await account_rows.get(conn, account_id) is None:
                raise NotFound("account_id", str(account_id), "account")
            rows = await risk_rows.decisions_page(conn, account_id, after, size + 1)
            more = len(rows) > size
            rows = rows[:size]
            return risk_pb2.ListRiskDecisionsResponse(
                decisions=[risk_pb2.RiskDecisionRecord(
                    decision_id=str(r["decision_id"]), account_id=str(r["account_id"]),
                    authorization_id=str(r["authorization_id"]), decision=r["decision"], score=r["score"],
                    reasons=list(r["reasons"]), inputs_json=r["inputs"], rule_results_json=r["rule_results"],
                    ruleset_version=r["ruleset_version"], created_at=convert.timestamp(r["created_at"]))
                    for r in rows],
                next_page_token=paging.encode_after(rows[-1]["created_at"], rows[-1]["decision_id"]) if more else "")

        return await self._tx.read(page)

    async def GetReservePool(self, request, context) -> risk_pb2.ReservePool:
        async def pool(conn):
            totals, outstanding = await reserve_rows.pool_totals(conn)
            balance = totals["balance_minor"]
            return risk_pb2.ReservePool(
                balance_minor=balance, provisioned_minor=totals["provisioned_minor"],
                released_minor=totals["released_minor"], written_off_minor=totals["written_off_minor"],
                insurance_claims_minor=totals["insurance_claims_minor"], outstanding_principal_minor=outstanding,
                coverage_bps=balance * 10_000 // outstanding if outstanding else 0)

        return await self._tx.read(pool)


