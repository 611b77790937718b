"""Limit reviews and temporary-limit campaigns over many accounts, one account per
transaction under a SKIP LOCKED row lock (checkout traffic is never blocked for long)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
import structlog

from server.core.accounts import each_free_account
from server.core.views import active_loans, credit_line
from server.db import accounts as account_rows
from server.db import limits as limit_rows
from server.domain.accounts import DEFAULT_TEMPORARY_LIMIT_MAX_DAYS, AccountStatus, temporary_limit_expiry
from server.domain.errors import InvalidArgument
from server.domain.limits import Action, Record, ReviewPolicy, TemporaryRaise, campaign_raise, review
from server.domain.pricing import Grade

log = structlog.get_logger(__name__)
BATCH = 200


@dataclass
class Report:
    actions: Counter = field(default_factory=Counter)
    busy: int = 0


async def review_limits(pool: asyncpg.Pool, now: datetime, policy: ReviewPolicy = ReviewPolicy()) -> Report:
    report = Report()

    async def review_one(conn, account):
        if account["status"] == AccountStatus.ACTIVE:
            report.actions[await _review_one(conn, account, now, policy)] += 1

    report.busy = await each_free_account(
        pool, lambda conn, after: limit_rows.accounts_with_loans(conn, after, BATCH), review_one)
    log.info("limit_review_finished", actions=dict(report.actions), busy=report.busy)
    return report


async def _review_one(conn: asyncpg.Connection, account: asyncpg.Record, now: datetime, policy: ReviewPolicy) -> str:
    loans = await active_loans(conn, account["account_id"], account["time_zone"], now)
    facts = await limit_rows.repayment_record(conn, account["account_id"])
    outcome = review(Record(
        credit_limit_minor=account["credit_limit_minor"],
        used_minor=account["held_minor"] + account["outstanding_principal_minor"],
        grade=Grade(account["risk_grade"]), days_past_due=max((loan.days_past_due for loan in loans), default=0),
        paid_on_time=facts["paid_on_time"], penalty_days=facts["penalty_days"],
        last_limit_change=facts["last_limit_change"]), now, policy)
    detail = {"action": outcome.action.value, "from_minor": account["credit_limit_minor"],
              "to_minor": outcome.new_limit_minor, "reasons": list(outcome.reasons)}
    if outcome.action in (Action.RAISE, Action.CUT):
        await account_rows.set_limit(conn, account["account_id"], outcome.new_limit_minor, account["risk_grade"], now)
    elif outcome.action is Action.FREEZE:
        await account_rows.set_status(conn, account["account_id"], AccountStatus.FROZEN.value, now)
    await account_rows.record_event(conn, account["account_id"], "LIMIT_REVIEWED", ", ".join(outcome.reasons),
                                    detail, now)
    return outcome.action.value


@dataclass
class CampaignReport:
    granted: int = 0
    # Accounts whose own temporary raise was as good or better on some count: kept.
    kept: int = 0
    busy: int = 0


async def grant_campaign(pool: asyncpg.Pool, *, grades: list[Grade], raise_minor: int, expires_at: datetime,
                         reason: str, now: datetime,
                         max_days: int = DEFAULT_TEMPORARY_LIMIT_MAX_DAYS) -> CampaignReport:
    """Give a temporary raise that ends at `expires_at` (at most `max_days` ahead, as
    for GrantTemporaryLimit) to every active account of these grades with nothing
    overdue in its own calendar. An account whose own raise in force is larger or ends later keeps it (see
    server.domain.limits.campaign_raise)."""
    expiry = temporary_limit_expiry(raise_minor, expires_at, now, max_days)
    if expiry is None:
        raise InvalidArgument.of("raise_minor", "a campaign grants a raise above zero")
    offered = TemporaryRaise(raise_minor, expiry)
    report = CampaignReport()

    async def grant(conn, account):
        chosen = campaign_raise(credit_line(account), offered, now)
        if chosen is None:
            report.kept += 1
            return
        await account_rows.set_temporary_limit(conn, account["account_id"], chosen.limit_minor, chosen.expires_at,
                                               now)
        await account_rows.record_event(conn, account["account_id"], "TEMPORARY_LIMIT_GRANTED", reason,
                                        {"limit_minor": chosen.limit_minor,
                                         "expires_at": chosen.expires_at.isoformat(), "campaign": reason}, now)
        report.granted += 1

    report.busy = await each_free_account(
        pool, lambda conn, after: limit_rows.campaign_cohort(conn, [g.value for g in grades], after, now, BATCH),
        grant)
    log.info("campaign_granted", accounts=report.granted, kept=report.kept, busy=report.busy,
             raise_minor=raise_minor, reason=reason)
    return report
