"""The statement pass of the bot: issue the monthly statements whose date has come in
each account's zone, then email those waiting to go out. It runs after each collections
pass, reading the clock afresh (the same instant under `run-once --as-of`). Issuing and
every write to a delivery belong to the core (`Statements`); here is only the rendering
and the SMTP conversation."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg
import structlog

from collections_bot import metrics as bot_metrics
from collections_bot.channels.email import EmailChannel, build_statement_message
from collections_bot.config import BotSettings
from collections_bot.passes import LeaseClock, Leased, LeasedSender, lease_lost_at, record_email, smtp_detail
from server.clock import Clock
from server.core.statements import Delivery as StatementDelivery
from server.core.statements import StatementMail, Statements

log = structlog.get_logger(__name__)


@dataclass
class StatementReport:
    as_of: datetime | None = None
    issued: int = 0
    busy: int = 0
    failed: int = 0
    emails: Counter = field(default_factory=Counter)
    lease_lost: int = 0


def _described(delivery: StatementDelivery) -> dict:
    return {"account_id": str(delivery.account_id), "statement_date": delivery.statement_date.isoformat()}


class StatementsPass:
    def __init__(self, pool: asyncpg.Pool, clock: Clock, statements: Statements, settings: BotSettings,
                 email: EmailChannel) -> None:
        self._pool = pool
        self._clock = clock
        self._statements = statements
        self._settings = settings
        self._email = email
        self._sender = LeasedSender(pool, settings)

    async def run(self, now: datetime | None = None) -> StatementReport:
        now = now or self._clock.now()
        issued = await self._statements.issue_due(self._pool, now, self._settings.batch_size)
        bot_metrics.STATEMENTS_ISSUED.inc(issued.statements)
        report = StatementReport(as_of=now, issued=issued.statements, busy=issued.busy, failed=issued.failed)
        await self.deliver(now, report)
        log.info("statement_pass_finished", as_of=now.isoformat(), issued=report.issued, busy=report.busy,
                 failed=report.failed, emails=dict(report.emails), lease_lost=report.lease_lost)
        return report

    async def deliver(self, now: datetime, report: StatementReport, lease_clock: LeaseClock | None = None) -> None:
        """Email the issued statements waiting to go out, under the same leases as reminders."""
        leased = Leased(claim=self._statements.claim, renew=self._statements.renew,
                        key=lambda delivery: delivery.key, describe=_described,
                        counted=lambda outcome: bot_metrics.STATEMENT_EMAILS.labels(outcome).inc())
        report.lease_lost += await self._sender.deliver(
            leased, now, lease_clock or LeaseClock(now), timedelta(seconds=self._settings.lease_s), self._send_one,
            report.emails)

    async def _send_one(self, delivery: StatementDelivery, now: datetime, owner: UUID) -> str | None:
        mail = await self._statements.mail(self._pool, delivery, owner, now)
        if mail is None:
            lease_lost_at(_described(delivery), owner, "hold_back")
            return None
        if not isinstance(mail, StatementMail):
            return mail.value
        result = await self._email.send(build_statement_message(mail, mail_from=self._settings.mail_from))
        log.info("statement_delivery", **_described(delivery), delivery=result.delivery.value, detail=result.detail)
        detail = smtp_detail(result, mail.locale)

        async def sent() -> bool:
            return await self._statements.mark_sent(self._pool, delivery, owner, now, detail)

        async def failed(permanent: bool) -> bool:
            return await self._statements.mark_failed(self._pool, delivery, owner, now, permanent=permanent,
                                                      detail=detail) is not None

        return await record_email(result, sent, failed, _described(delivery), owner)
