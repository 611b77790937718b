"""Risk reports: the decisions taken at authorization, read back for audit, and the
risk reserve pool."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from server import paging
from server.db import accounts as account_rows
from server.db import reserve as reserve_rows
from server.db import risk as risk_rows
from server.domain.errors import InvariantViolation, NotFound
from server.domain.risk import Decision, Facts, RuleResult, facts_of_json, results_of_json


@dataclass(frozen=True)
class DecisionRecordView:
    decision_id: UUID
    account_id: UUID
    authorization_id: UUID
    decision: Decision
    score: int
    reasons: tuple[str, ...]
    # The facts the rules saw and every rule's result, as stored for audit.
    inputs: Facts
    rule_results: tuple[RuleResult, ...]
    ruleset_version: str
    created_at: datetime


@dataclass(frozen=True)
class DecisionPage:
    decisions: tuple[DecisionRecordView, ...]
    next_page_token: str


@dataclass(frozen=True)
class ReservePoolView:
    balance_minor: int
    provisioned_minor: int
    released_minor: int
    written_off_minor: int
    insurance_claims_minor: int
    outstanding_principal_minor: int
    recovered_minor: int

    @property
    def coverage_bps(self) -> int:
        """The balance against the principal it covers; 0 when nothing is outstanding."""
        if self.outstanding_principal_minor <= 0:
            return 0
        return self.balance_minor * 10_000 // self.outstanding_principal_minor


class RiskReports:
    async def decisions(self, conn: asyncpg.Connection, account_id: UUID, page_size: int,
                        page_token: str) -> DecisionPage:
        """One page of the account's decisions, oldest first; `page_size` is already
        bounded by the caller."""
        if page_size < 1:
            raise InvariantViolation(f"a page of {page_size} decisions")
        if await account_rows.get(conn, account_id) is None:
            raise NotFound("account_id", str(account_id), "account")
        after = paging.decode_after(page_token)
        rows = await risk_rows.decisions_page(conn, account_id, after, page_size + 1)
        views = tuple(_decision_record(r) for r in rows[:page_size])
        more = len(rows) > page_size
        token = paging.encode_after(views[-1].created_at, views[-1].decision_id) if more else ""
        return DecisionPage(views, token)

    async def reserve_pool(self, conn: asyncpg.Connection) -> ReservePoolView:
        totals, recovered, outstanding = await reserve_rows.pool_totals(conn)
        return ReservePoolView(
            balance_minor=totals["balance_minor"], provisioned_minor=totals["provisioned_minor"],
            released_minor=totals["released_minor"], written_off_minor=totals["written_off_minor"],
            insurance_claims_minor=totals["insurance_claims_minor"], outstanding_principal_minor=outstanding,
            recovered_minor=recovered)


def _decision_record(row: asyncpg.Record) -> DecisionRecordView:
    return DecisionRecordView(
        decision_id=row["decision_id"], account_id=row["account_id"], authorization_id=row["authorization_id"],
        decision=Decision(row["decision"]), score=row["score"], reasons=tuple(row["reasons"]),
        inputs=facts_of_json(row["inputs"]), rule_results=results_of_json(row["rule_results"]),
        ruleset_version=row["ruleset_version"],
        created_at=row["created_at"])
