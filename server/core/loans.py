"""Reading loans with their schedules."""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

import asyncpg

from server import paging
from server.clock import Clock
from server.core import funding as co_lending
from server.core.views import LoanView, loan_view
from server.db import accounts as account_rows
from server.db import loans as loan_rows
from server.db import one
from server.domain.errors import InvariantViolation, NotFound
from server.domain.loans import LoanStatus


@dataclass(frozen=True)
class LoanPage:
    loans: tuple[LoanView, ...]
    next_page_token: str


async def account_of_loan(conn: asyncpg.Connection, loan_id: UUID) -> UUID:
    """The account of a loan, for a request that names only the loan."""
    account_id = await loan_rows.account_of(conn, loan_id)
    if account_id is None:
        raise NotFound("loan_id", str(loan_id), "loan")
    return account_id


class Loans:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock

    async def get(self, conn: asyncpg.Connection, loan_id: UUID) -> LoanView:
        found = await loan_rows.get(conn, loan_id)
        if found is None:
            raise NotFound("loan_id", str(loan_id), "loan")
        loan, installments = found
        account = one(await account_rows.get(conn, loan["account_id"]))
        (view,) = await co_lending.with_funding(conn, [loan_view(loan, installments, account["time_zone"],
                                                                 self._clock.now())])
        return view

    async def page(self, conn: asyncpg.Connection, account_id: UUID, page_size: int, page_token: str,
                   status: LoanStatus | None) -> LoanPage:
        """One page of the account's loans, oldest first; `page_size` is already bounded
        by the caller."""
        if page_size < 1:
            raise InvariantViolation(f"a page of {page_size} loans")
        account = await account_rows.get(conn, account_id)
        if account is None:
            raise NotFound("account_id", str(account_id), "account")
        after = paging.decode_after(page_token)
        rows = await loan_rows.page_for_account(conn, account_id, status.value if status else None, after,
                                                page_size + 1)
        now = self._clock.now()
        views = tuple(await co_lending.with_funding(conn, [loan_view(loan, installments, account["time_zone"], now)
                                                           for loan, installments in rows[:page_size]]))
        more = len(rows) > page_size
        token = paging.encode_after(views[-1].created_at, views[-1].loan_id) if more else ""
        return LoanPage(views, token)
