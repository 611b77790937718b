"""One pass of the collections bot: review every account that needs it, then deliver
what the reviews planned. The pass reads its clock once: that instant is the pass's
time for every review and every record. The bot does only I/O here (render and send
the email, hold the call); what may go out, what a failure leads to and every write to
an attempt belong to the core (`Collections`, `ContactAttempts`)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg
import structlog

from collections_bot import metrics as bot_metrics
from collections_bot.channels.email import (
    DebitFailure,
    Delivery,
    EmailChannel,
    Reminder,
    ReminderLine,
    SendResult,
    build_debit_failure_message,
    build_message,
    yuan,
)
from collections_bot.config import BotSettings
from collections_bot.voice.channel import VoiceChannel
from collections_bot.voice.dialogue import Facts
from server.clock import Clock
from server.core import merchant_settlements, settlements
from server.core.collections import Collections, Reviews
from server.core.contact_attempts import ContactAttempts, ReminderContext
from server.core.limits import review_limits
from server.domain.reminders import Attempt, AttemptStatus, Channel, Outcome

log = structlog.get_logger(__name__)

# Reminder templates by the kind of step (the strategy's template names).
KINDS = {"upcoming", "due_today", "overdue", "final"}
# Attempts claimed at a time (fewer if COLLECTIONS_BATCH_SIZE is smaller). The last of a
# claim waits for every send before it; a small claim leaves the rest to replicas that
# are free, and bounds what a bot that dies holding a claim holds up.
CLAIM_SIZE_MAX = 10


# The merchants' daily files, under the settlement folder.
MERCHANT_DIR = "merchants"


@dataclass
class PassReport(Reviews):
    """What the pass's reviews did, and what its deliveries did."""
    as_of: datetime | None = None
    delivered: Counter = field(default_factory=Counter)
    lease_lost: int = 0
    limit_review: dict = field(default_factory=dict)
    settlement_files: int = 0
    merchant_days_settled: int = 0


@dataclass(frozen=True)
class LeaseClock:
    """The pass's instant moved on by the time the pass has been running. Leases are
    measured on it, so that a lease is a real span of time whether the pass runs at the
    system's time (the daemon) or at a fixed `--as-of`, and so that a long review does not
    eat into the leases of the deliveries after it."""

    start: datetime
    started_s: float = field(default_factory=time.monotonic)

    def now(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self.started_s)


# Sends one claimed item under the given lease owner; the outcome to count, or None
# when the lease was lost before the outcome could be recorded.
SendOne = Callable[[Any, datetime, UUID], Awaitable[str | None]]


@dataclass(frozen=True)
class Leased:
    """Work that bots claim under leases (a channel's contact attempts, statement
    emails): how to claim it, renew its leases, tell its items apart, name one in the
    logs, and count its outcomes."""

    claim: Callable[..., Awaitable[Sequence[Any]]]
    renew: Callable[[asyncpg.Pool, list, UUID, datetime, float], Awaitable[set]]
    key: Callable[[Any], Hashable]
    describe: Callable[[Any], dict]
    counted: Callable[[str], None]


class LeasedSender:
    """Sends work claimed under leases, one claim at a time, for any kind of `Leased`."""

    def __init__(self, pool: asyncpg.Pool, settings: BotSettings) -> None:
        self._pool = pool
        self._settings = settings

    async def deliver(self, leased: Leased, now: datetime, lease_clock: LeaseClock, lease: timedelta,
                      send_one: SendOne, counts: Counter, label: str = "") -> int:
        """Claim the due items a few at a time, each claim under a fresh random owner
        token, and send them one by one while a background task renews the claim's
        leases. Each send first confirms that its lease is still ours; an item whose
        lease was lost (taken over by another replica) is neither sent nor recorded.
        Outcomes are counted in `counts` (prefixed by `label`); returns the leases lost."""
        limit = min(self._settings.batch_size, CLAIM_SIZE_MAX)
        lease_lost = 0
        while True:
            owner = uuid.uuid4()
            lease_now = lease_clock.now()
            claimed = await leased.claim(self._pool, now, lease_now=lease_now, lease_until=lease_now + lease,
                                         owner=owner, limit=limit)
            if not claimed:
                return lease_lost
            held = {leased.key(item): item for item in claimed}
            renewing = asyncio.create_task(self._keep_leases(leased, owner, held, lease_clock, lease))
            try:
                for item in claimed:
                    outcome = None
                    if await self._confirm_lease(leased, item, owner, lease_clock, lease):
                        # Checked and recorded at the time of the send: a pass that
                        # started at 20:55 does not call anyone at 21:10.
                        outcome = await send_one(item, lease_clock.now(), owner)
                    held.pop(leased.key(item), None)
                    if outcome is None:
                        lease_lost += 1
                    else:
                        counts[label + outcome] += 1
                    leased.counted(outcome or "lease_lost")
            finally:
                renewing.cancel()
                # Waits for the renewal to end without swallowing a cancellation of this
                # pass, and does not hide a bug that ended it early.
                (ended,) = await asyncio.gather(renewing, return_exceptions=True)
                if isinstance(ended, Exception):
                    raise ended

    async def _keep_leases(self, leased: Leased, owner: UUID, held: dict, lease_clock: LeaseClock,
                           lease: timedelta) -> None:
        """Renew the leases of a claim's unfinished items every third of
        COLLECTIONS_LEASE_S, so that neither a slow send nor the sends queued before an
        item outlast its lease. A failed renewal is tried again at the next tick; a
        lease lost meanwhile is caught before the send and when recording."""
        interval_s = self._settings.lease_s / 3
        while held:
            await asyncio.sleep(interval_s)
            try:
                await leased.renew(self._pool, list(held), owner, lease_clock.now() + lease, interval_s)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                log.warning("attempt_lease_renewal_failed", lease_owner=str(owner), attempts=len(held),
                            error=f"{type(error).__name__}: {error}")

    async def _confirm_lease(self, leased: Leased, item: Any, owner: UUID, lease_clock: LeaseClock,
                             lease: timedelta) -> bool:
        """Renew this item's lease right before sending; False when it is no longer ours."""
        ours = await leased.renew(self._pool, [leased.key(item)], owner, lease_clock.now() + lease,
                                  self._settings.lease_s)
        if leased.key(item) in ours:
            return True
        lease_lost_at(leased.describe(item), owner, "before_send")
        return False


class CollectionsPass:
    def __init__(self, pool: asyncpg.Pool, clock: Clock, collections: Collections, settings: BotSettings,
                 email: EmailChannel, voice: VoiceChannel | None = None) -> None:
        self._pool = pool
        self._sender = LeasedSender(pool, settings)
        self._clock = clock
        self._collections = collections
        self._attempts: ContactAttempts = collections.attempts
        self._settings = settings
        self._email = email
        self._voice = voice

    @property
    def channels(self) -> frozenset[Channel]:
        return frozenset({Channel.EMAIL, Channel.VOICE} if self._voice else {Channel.EMAIL})

    async def run(self) -> PassReport:
        with bot_metrics.PASS_SECONDS.time():
            report = await self._run(self._clock.now())
        bot_metrics.PASSES.labels("ok").inc()
        bot_metrics.ACCOUNTS_REVIEWED.inc(report.reviewed)
        bot_metrics.PENALTIES_BOOKED.inc(report.penalty_days)
        bot_metrics.PENALTIES_BOOKED_MINOR.inc(report.penalty_minor)
        return report

    async def _run(self, now: datetime) -> PassReport:
        reviews = await self._collections.review_due_accounts(self._pool, now, self.channels,
                                                              self._settings.batch_size)
        if reviews.failed:
            bot_metrics.ACCOUNT_REVIEWS_FAILED.inc(reviews.failed)
        report = PassReport(**vars(reviews), as_of=now)
        lease_clock = LeaseClock(now)
        await self.deliver_email(now, report, lease_clock)
        if self._voice is not None:
            await self.deliver_voice(now, report, lease_clock)
        if self._settings.limit_review:
            report.limit_review = dict((await review_limits(self._pool, now)).actions)
        if self._settings.settlement_dir is not None:
            report.settlement_files = await settlements.write_due_files(self._pool, self._settings.settlement_dir, now)
        # Each closed merchant-day settles once (a pass run again, or another replica,
        # finds it settled), and its file is written by the run that settled it.
        merchant_dir = self._settings.settlement_dir / MERCHANT_DIR if self._settings.settlement_dir else None
        report.merchant_days_settled = len(await merchant_settlements.settle_closed_days(self._pool, now,
                                                                                         merchant_dir))
        log.info("pass_finished", as_of=now.isoformat(), reviewed=report.reviewed, busy=report.busy,
                 failed=report.failed, penalty_days=report.penalty_days, penalty_minor=report.penalty_minor,
                 charged_off=report.charged_off, planned=dict(report.planned), delivered=dict(report.delivered),
                 lease_lost=report.lease_lost, merchant_days_settled=report.merchant_days_settled)
        return report

    def _attempts_of(self, channel: Channel) -> Leased:
        def claim(pool, now, **lease):
            return self._attempts.claim(pool, channel, now, **lease)

        return Leased(claim=claim, renew=self._attempts.renew, key=lambda attempt: attempt.attempt_id,
                      describe=_described,
                      counted=lambda outcome: bot_metrics.REMINDERS.labels(channel.value.lower(), outcome).inc())

    async def deliver_email(self, now: datetime, report: PassReport, lease_clock: LeaseClock | None = None) -> None:
        report.lease_lost += await self._sender.deliver(
            self._attempts_of(Channel.EMAIL), now, lease_clock or LeaseClock(now),
            timedelta(seconds=self._settings.lease_s), self._deliver_one, report.delivered)

    async def _context(self, attempt: Attempt, now: datetime, owner: UUID) -> ReminderContext | str | None:
        """What to send, or the status the core gave the attempt instead (a str to count),
        or None when the lease was lost."""
        context = await self._attempts.context(self._pool, attempt, owner, now, self.channels)
        if context is None:
            lease_lost_at(_described(attempt), owner, "hold_back")
        if isinstance(context, AttemptStatus):
            return context.value
        return context

    async def _deliver_one(self, attempt: Attempt, now: datetime, owner: UUID) -> str | None:
        context = await self._context(attempt, now, owner)
        if not isinstance(context, ReminderContext):
            return context
        compose = {"mail_from": self._settings.mail_from, "domain": self._settings.policy.mail_domain,
                   "secret": self._settings.unsubscribe_secret}
        message = (build_debit_failure_message(_debit_failure(context), **compose) if context.notice
                   else build_message(_reminder(context), **compose))
        result = await self._email.send(message)
        log.info("reminder_delivery", attempt_id=str(attempt.attempt_id), step=attempt.step_code,
                 delivery=result.delivery.value, detail=result.detail)
        detail = smtp_detail(result, context.locale)

        async def sent() -> bool:
            return await self._attempts.mark_sent(self._pool, attempt, owner, now, Outcome.DELIVERED, detail)

        async def failed(permanent: bool) -> bool:
            return await self._attempts.mark_failed(self._pool, context, owner, now, permanent=permanent,
                                                    detail=detail) is not None

        return await record_email(result, sent, failed, _described(attempt), owner)

    async def deliver_voice(self, now: datetime, report: PassReport, lease_clock: LeaseClock | None = None) -> None:
        """Calls one at a time: a call holds a line for minutes, and the caps are per day.
        The lease covers a whole call even if a renewal is missed."""
        lease = timedelta(seconds=self._settings.voice_call_timeout_s + self._settings.lease_s)
        report.lease_lost += await self._sender.deliver(
            self._attempts_of(Channel.VOICE), now, lease_clock or LeaseClock(now), lease, self._call_one,
            report.delivered, "CALL_")

    async def _call_one(self, attempt: Attempt, now: datetime, owner: UUID) -> str | None:
        assert self._voice is not None
        context = await self._context(attempt, now, owner)
        if not isinstance(context, ReminderContext):
            return context
        bill = context.bill
        facts = Facts(name=context.name, amount=yuan(bill.owed_minor), due_date=bill.due_date,
                      today=context.today, overdue=bill.due_date < context.today)
        result = await self._voice.call(str(attempt.attempt_id), context.phone, context.locale, facts)
        if result.outcome is None:
            bot_metrics.CHANNEL_FAILURES.labels("voice", "call_failed").inc()
            failed = await self._attempts.mark_failed(self._pool, context, owner, now, permanent=False,
                                                      detail={"detail": result.failure},
                                                      transcript=result.transcript)
            if failed is None:
                lease_lost_at(_described(attempt), owner, "after_send")
                return None
            return "FAILED" if failed.status is AttemptStatus.FAILED else "RETRY"
        if not await self._attempts.record_call(self._pool, context, owner, now, result.outcome,
                                                result.promised_date, result.transcript):
            lease_lost_at(_described(attempt), owner, "after_send")
            return None
        log.info("call_finished", attempt_id=str(attempt.attempt_id), outcome=result.outcome.value)
        return result.outcome.value


def _reminder(context: ReminderContext) -> Reminder:
    bill, penalty = context.bill, context.penalty
    return Reminder(
        to_address=context.email, name=context.name, locale=context.locale,
        kind=context.template if context.template in KINDS else "overdue",
        message_id=context.attempt.message_id or "", account_id=str(context.attempt.account_id),
        due_date=bill.due_date.isoformat(), days_past_due=context.days_past_due,
        principal_minor=bill.principal_minor, fee_minor=bill.fee_minor, penalty_minor=bill.penalty_minor,
        owed_minor=bill.owed_minor,
        lines=tuple(ReminderLine(order_id=line.order_id, sequence=line.installment.sequence,
                                 term_months=line.term_months, principal_minor=line.principal_minor,
                                 fee_minor=line.fee_minor, penalty_minor=line.penalty_minor,
                                 owed_minor=line.owed_minor, apr_bps=line.apr_bps) for line in bill.lines),
        grace_days=penalty.grace_days, penalty_rate_bps_per_day=penalty.rate_bps_per_day,
        penalty_cap_bps=penalty.cap_bps,
    )


def _debit_failure(context: ReminderContext) -> DebitFailure:
    notice = context.notice
    assert notice is not None
    return DebitFailure(
        to_address=context.email, name=context.name, locale=context.locale,
        message_id=context.attempt.message_id or "", account_id=str(context.attempt.account_id),
        due_date=context.bill.due_date.isoformat(), amount_minor=notice.amount_minor,
        owed_minor=notice.owed_minor, failure_reason=notice.failure_reason, token_last4=notice.token_last4,
        failed_at=notice.failed_at, next_try_at=notice.next_try_at, next_last4=notice.next_last4)


def smtp_detail(result: SendResult, locale: str) -> dict:
    """What an email's attempt keeps of the SMTP conversation."""
    return {"smtp": result.detail, "smtp_code": result.smtp_code, "to_locale": locale}


async def record_email(result: SendResult, sent: Callable[[], Awaitable[bool]],
                       failed: Callable[[bool], Awaitable[bool]], described: dict, owner: UUID) -> str | None:
    """Record how an email went through the core (`sent()`, or `failed(permanent)`): the
    outcome to count, or None when the lease was lost before it could be recorded."""
    if result.delivery is Delivery.SENT:
        recorded = await sent()
    else:
        bot_metrics.CHANNEL_FAILURES.labels("email", result.delivery.value).inc()
        recorded = await failed(result.delivery is Delivery.PERMANENT_FAILURE)
    if not recorded:
        lease_lost_at(described, owner, "after_send")
        return None
    return result.delivery.value


def _described(attempt: Attempt) -> dict:
    return {"attempt_id": str(attempt.attempt_id), "step": attempt.step_code, "channel": attempt.channel.value}


def lease_lost_at(described: dict, owner: UUID, stage: str) -> None:
    """Another replica took this item over after our lease ran out: it is theirs to
    send and record now. `stage` says how far we got (after_send: a duplicate may go out)."""
    log.warning("attempt_lease_lost", **described, lease_owner=str(owner), stage=stage)
