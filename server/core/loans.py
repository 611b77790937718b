"""Reading loans with their schedules."""

from __future__ import annotations

from uuid import UUID

import asyncpg

from server.clock import Clock
from server.core.views import LoanView, loan_view
from server.db import accounts as account_rows
from server.db import loans as loan_rows
from server.domain.errors import NotFound


class Loans:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    async def get(self, conn: asyncpg.Connection, loan_id: UUID) -> LoanView:
        found = await loan_rows.get(conn, loan_id)
        if found is None:
            raise NotFound("loan_id", str(loan_id), "loan")
        loan, installments = found
        account = await account_rows.get(conn, loan["account_id"])
        return loan_view(loan, installments, account["time_zone"], self._clock.now())
