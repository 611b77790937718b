"""One pass of the collections bot: review every account that needs it, then deliver
what the reviews planned. Every step takes its time from the pass's clock."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg
import structlog

from collections_bot import metrics as bot_metrics
from collections_bot.channels.email import Delivery, EmailChannel, Reminder, build_message, yuan
from collections_bot.config import BotSettings
from collections_bot.voice.channel import VoiceChannel
from collections_bot.voice.dialogue import Facts
from server.core.accounts import each_free_account
from server.core.collections import Collections
from server.core.limits import review_limits
from server.core.views import loan_view
from server.db import accounts as account_rows
from server.db import collections as rows
from server.db import loans as loan_rows
from server.domain.calendar import local_date
from server.domain.reminders import Channel, Deferral, Suppression

log = structlog.get_logger(__name__)

# Reminder templates by the kind of step (the strategy's template names).
KINDS = {"upcoming", "due_today", "overdue", "final"}
# Look this far past today for installments with pre-due steps (the earliest is D-3).
PRE_DUE_HORIZON_DAYS = 4
# Attempts claimed at a time (fewer if COLLECTIONS_BATCH_SIZE is smaller). The last of a
# claim waits for every send before it; a small claim leaves the rest to replicas that
# are free, and bounds what a bot that dies holding a claim holds up.
CLAIM_SIZE_MAX = 10


@dataclass
class PassReport:
    reviewed: int = 0
    busy: int = 0
    penalty_days: int = 0
    penalty_minor: int = 0
    charged_off: int = 0
    planned: Counter = field(default_factory=Counter)
    delivered: Counter = field(default_factory=Counter)
    lease_lost: int = 0
    limit_review: dict = field(default_factory=dict)


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


# Sends one claimed attempt under the given lease owner; the outcome to count, or None
# when the lease was lost before the outcome could be recorded.
SendOne = Callable[[asyncpg.Record, datetime, UUID], Awaitable[str | None]]


class CollectionsPass:
    def __init__(self, pool: asyncpg.Pool, collections: Collections, settings: BotSettings,
                 email: EmailChannel, voice: VoiceChannel | None = None) -> None:
        self._pool = pool
        self._collections = collections
        self._settings = settings
        self._email = email
        self._voice = voice

    @property
    def channels(self) -> frozenset[Channel]:
        return frozenset({Channel.EMAIL, Channel.VOICE} if self._voice else {Channel.EMAIL})

    async def run(self, now: datetime) -> PassReport:
        with bot_metrics.PASS_SECONDS.time():
            report = await self._run(now)
        bot_metrics.PASSES.labels("ok").inc()
        bot_metrics.ACCOUNTS_REVIEWED.inc(report.reviewed)
        bot_metrics.PENALTIES_BOOKED.inc(report.penalty_days)
        bot_metrics.PENALTIES_BOOKED_MINOR.inc(report.penalty_minor)
        return report

    async def _run(self, now: datetime) -> PassReport:
        report = PassReport()
        lease_clock = LeaseClock(now)
        await self.review(now, report)
        await self.deliver_email(now, report, lease_clock)
        if self._voice is not None:
            await self.deliver_voice(now, report, lease_clock)
        if self._settings.limit_review:
            report.limit_review = dict((await review_limits(self._pool, now)).actions)
        log.info("pass_finished", as_of=now.isoformat(), reviewed=report.reviewed, busy=report.busy,
                 penalty_days=report.penalty_days, penalty_minor=report.penalty_minor,
                 charged_off=report.charged_off, planned=dict(report.planned), delivered=dict(report.delivered),
                 lease_lost=report.lease_lost)
        return report

    async def review(self, now: datetime, report: PassReport) -> None:
        """Each account in its own transaction, locked with SKIP LOCKED: replicas share
        the work, and an account busy elsewhere is left for the next pass."""
        horizon = (now + timedelta(days=PRE_DUE_HORIZON_DAYS)).date()
        async with self._pool.acquire() as conn:
            steps = await self._collections.steps(conn)

        async def next_batch(conn, after):
            return await rows.accounts_to_review(conn, horizon, after, self._settings.batch_size)

        async def review_one(conn, account):
            review = await self._collections.review_account(conn, account, now, self.channels, steps)
            report.reviewed += 1
            report.penalty_days += review.penalty_days
            report.penalty_minor += review.penalty_minor
            report.charged_off += review.charged_off
            report.planned.update(review.planned)

        report.busy += await each_free_account(self._pool, next_batch, review_one)

    async def deliver_email(self, now: datetime, report: PassReport, lease_clock: LeaseClock | None = None) -> None:
        await self._deliver(Channel.EMAIL, now, lease_clock or LeaseClock(now),
                            timedelta(seconds=self._settings.lease_s), self._deliver_one, "", report)

    async def _deliver(self, channel: Channel, now: datetime, lease_clock: LeaseClock, lease: timedelta,
                       send_one: SendOne, label: str, report: PassReport) -> None:
        """Claim the channel's due attempts a few at a time, each claim under a fresh random
        owner token, and send them one by one while a background task renews the claim's
        leases. Each send first confirms that its lease is still ours; an attempt whose
        lease was lost (taken over by another replica) is neither sent nor recorded."""
        limit = min(self._settings.batch_size, CLAIM_SIZE_MAX)
        while True:
            owner = uuid.uuid4()
            async with self._pool.acquire() as conn:
                lease_now = lease_clock.now()
                claimed = await rows.claim_attempts(conn, channel.value, now, lease_now=lease_now,
                                                    lease_until=lease_now + lease, owner=owner, limit=limit)
            if not claimed:
                return
            held = {attempt["attempt_id"] for attempt in claimed}
            renewing = asyncio.create_task(self._keep_leases(owner, held, lease_clock, lease))
            try:
                for attempt in claimed:
                    outcome = None
                    if await self._confirm_lease(attempt, owner, lease_clock, lease):
                        outcome = await send_one(attempt, now, owner)
                    held.discard(attempt["attempt_id"])
                    if outcome is None:
                        report.lease_lost += 1
                    else:
                        report.delivered[label + outcome] += 1
                    bot_metrics.REMINDERS.labels(channel.value.lower(), outcome or "lease_lost").inc()
            finally:
                renewing.cancel()
                # Waits for the renewal to end without swallowing a cancellation of this
                # pass, and does not hide a bug that ended it early.
                (ended,) = await asyncio.gather(renewing, return_exceptions=True)
                if isinstance(ended, Exception):
                    raise ended

    async def _keep_leases(self, owner: UUID, held: set[UUID], lease_clock: LeaseClock, lease: timedelta) -> None:
        """Renew the leases of a claim's unfinished attempts every third of
        COLLECTIONS_LEASE_S, so that neither a slow send nor the sends queued before an
        attempt outlast its lease. A failed renewal is tried again at the next tick; a
        lease lost meanwhile is caught before the send and when recording."""
        interval_s = self._settings.lease_s / 3
        while held:
            await asyncio.sleep(interval_s)
            try:
                async with self._pool.acquire(timeout=interval_s) as conn:
                    await rows.renew_leases(conn, list(held), owner, lease_clock.now() + lease, timeout_s=interval_s)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                log.warning("attempt_lease_renewal_failed", lease_owner=str(owner), attempts=len(held),
                            error=f"{type(error).__name__}: {error}")

    async def _confirm_lease(self, attempt: asyncpg.Record, owner: UUID, lease_clock: LeaseClock,
                             lease: timedelta) -> bool:
        """Renew this attempt's lease right before sending; False when it is no longer ours."""
        async with self._pool.acquire() as conn:
            ours = await rows.renew_leases(conn, [attempt["attempt_id"]], owner, lease_clock.now() + lease,
                                           timeout_s=self._settings.lease_s)
        if attempt["attempt_id"] in ours:
            return True
        _lease_lost(attempt, owner, "before_send")
        return False

    async def _deliver_one(self, attempt: asyncpg.Record, now: datetime, owner: UUID) -> str | None:
        async with self._pool.acquire() as conn:
            reminder, hold_back = await self._reminder(conn, attempt, now)
            if hold_back is not None:
                status, reason = hold_back
                if not await rows.finish_attempt(conn, attempt["attempt_id"], owner, status, now, reason=reason):
                    _lease_lost(attempt, owner, "hold_back")
                    return None
                return status
        message = build_message(reminder, mail_from=self._settings.mail_from,
                                domain=self._settings.policy.mail_domain, secret=self._settings.unsubscribe_secret)
        result = await self._email.send(message)
        if result.delivery is not Delivery.SENT:
            bot_metrics.CHANNEL_FAILURES.labels("email", result.delivery.value).inc()
        log.info("reminder_delivery", attempt_id=str(attempt["attempt_id"]), step=attempt["step_code"],
                 delivery=result.delivery.value, detail=result.detail)
        detail = {"smtp": result.detail, "smtp_code": result.smtp_code, "to_locale": reminder.locale}
        if result.delivery is Delivery.SENT:
            record = {"status": "SENT", "outcome": "DELIVERED"}
        elif result.delivery is Delivery.PERMANENT_FAILURE:
            record = {"status": "FAILED", "reason": "SMTP_PERMANENT", "outcome": "REJECTED"}
        elif attempt["tries"] >= self._settings.smtp_max_tries:
            record = {"status": "FAILED", "reason": "SMTP_TEMPORARY_EXHAUSTED", "outcome": "UNDELIVERED"}
        else:
            # Tried again on a later pass, backing off.
            backoff = timedelta(minutes=5 * 2 ** min(attempt["tries"] - 1, 6))
            record = {"status": "PENDING", "reason": "SMTP_TEMPORARY", "next_try_at": now + backoff}
        async with self._pool.acquire() as conn:
            recorded = await rows.finish_attempt(conn, attempt["attempt_id"], owner, now=now, detail=detail, **record)
        if not recorded:
            _lease_lost(attempt, owner, "after_send")
            return None
        return result.delivery.value

    async def deliver_voice(self, now: datetime, report: PassReport, lease_clock: LeaseClock | None = None) -> None:
        """Calls one at a time: a call holds a line for minutes, and the caps are per day.
        The lease covers a whole call even if a renewal is missed."""
        lease = timedelta(seconds=self._settings.voice_call_timeout_s + self._settings.lease_s)
        await self._deliver(Channel.VOICE, now, lease_clock or LeaseClock(now), lease, self._call_one, "CALL_",
                            report)

    async def _call_one(self, attempt: asyncpg.Record, now: datetime, owner: UUID) -> str | None:
        async with self._pool.acquire() as conn:
            context, hold_back = await self._contact(conn, attempt, now, Channel.VOICE)
            if hold_back is not None:
                if not await rows.finish_attempt(conn, attempt["attempt_id"], owner, hold_back[0], now,
                                                 reason=hold_back[1]):
                    _lease_lost(attempt, owner, "hold_back")
                    return None
                return hold_back[0]
        account, view, installment = context
        today = local_date(now, account["time_zone"])
        name, _, phone = account_rows.contact(account)
        facts = Facts(name=name, amount=yuan(installment.owed_minor),
                      due_date=installment.due_date, today=today, overdue=installment.due_date < today)
        result = await self._voice.call(str(attempt["attempt_id"]), phone, account["locale"],
                                        facts)
        async with self._pool.acquire() as conn:
            async with conn.transaction():
                if result.failure is not None:
                    bot_metrics.CHANNEL_FAILURES.labels("voice", "call_failed").inc()
                    failures = json.loads(attempt["detail"] or "{}").get("failures", [])
                    detail = {"failures": failures + [{"at": now.isoformat(), "detail": result.failure,
                                                       "transcript": result.transcript}]}
                    if attempt["tries"] >= self._settings.voice_max_tries:
                        record, outcome = {"status": "FAILED"}, "FAILED"
                    else:
                        record, outcome = {"status": "PENDING", "next_try_at": now + timedelta(minutes=10)}, "RETRY"
                    if not await rows.finish_attempt(conn, attempt["attempt_id"], owner, now=now,
                                                     reason="CALL_FAILED", detail=detail, **record):
                        _lease_lost(attempt, owner, "after_send")
                        return None
                    return outcome
                # The call is acted on only by the holder whose record stands: a promise
                # is recorded once even if another replica took the lease over.
                if not await rows.finish_attempt(
                        conn, attempt["attempt_id"], owner, "SENT", now, outcome=result.outcome.value,
                        detail={"transcript": result.transcript,
                                "promised_date": result.promised_date.isoformat() if result.promised_date else None}):
                    _lease_lost(attempt, owner, "after_send")
                    return None
                await self._collections.act_on_call(conn, account["account_id"], result.outcome.value,
                                                    result.promised_date, installment.owed_minor, now)
        log.info("call_finished", attempt_id=str(attempt["attempt_id"]), outcome=result.outcome.value)
        return result.outcome.value

    async def _contact(self, conn: asyncpg.Connection, attempt: asyncpg.Record, now: datetime, channel: Channel):
        """The account, loan and installment to contact about, or why not now (checked
        again at contact time: the customer may have paid, promised or opted out)."""
        account = await account_rows.get(conn, attempt["account_id"])
        loan, installments = await loan_rows.get(conn, attempt["loan_id"])
        view = loan_view(loan, installments, account["time_zone"], now)
        installment = next(i for i in view.installments if i.sequence == attempt["sequence"])
        email_out, voice_out, phone_blocked = await rows.preferences(conn, account["account_id"])
        if installment.owed_minor == 0 or view.status.value != "ACTIVE":
            return None, ("SUPPRESSED", Suppression.PAID.value)
        if await rows.active_promise(conn, account["account_id"]) is not None:
            return None, ("SUPPRESSED", Suppression.PROMISE_ACTIVE.value)
        if (email_out if channel is Channel.EMAIL else voice_out):
            return None, ("SUPPRESSED", Suppression.OPTED_OUT.value)
        if channel is Channel.VOICE and phone_blocked:
            return None, ("SUPPRESSED", Suppression.WRONG_NUMBER.value)
        if not self._collections.policy.window.contains(now, account["time_zone"]):
            return None, ("DEFERRED", Deferral.OUTSIDE_CONTACT_WINDOW.value)
        return (account, view, installment), None

    async def _reminder(self, conn: asyncpg.Connection, attempt: asyncpg.Record,
                        now: datetime) -> tuple[Reminder | None, tuple[str, str] | None]:
        """The reminder to send, or why it must not go now."""
        context, hold_back = await self._contact(conn, attempt, now, Channel.EMAIL)
        if hold_back is not None:
            return None, hold_back
        account, view, installment = context
        template = await rows.step_template(conn, attempt["step_code"])
        kind = template if template in KINDS else "overdue"
        today = local_date(now, account["time_zone"])
        policy = self._collections.policy.penalty
        name, email, _ = account_rows.contact(account)
        return Reminder(
            to_address=email, name=name, locale=account["locale"],
            kind=kind, message_id=attempt["message_id"], account_id=str(account["account_id"]),
            order_id=view.order_id, sequence=installment.sequence, term_months=view.term_months,
            due_date=installment.due_date.isoformat(), days_past_due=max(0, (today - installment.due_date).days),
            principal_minor=installment.principal_minor - installment.principal_paid_minor,
            fee_minor=installment.fee_minor - installment.fee_paid_minor,
            penalty_minor=installment.penalty_minor - installment.penalty_paid_minor,
            owed_minor=installment.owed_minor, apr_bps=view.apr_bps, grace_days=policy.grace_days,
            penalty_rate_bps_per_day=policy.rate_bps_per_day, penalty_cap_bps=policy.cap_bps,
        ), None


def _lease_lost(attempt: asyncpg.Record, owner: UUID, stage: str) -> None:
    """Another replica took this attempt over after our lease ran out: it is theirs to
    send and record now. `stage` says how far we got (after_send: a duplicate may go out)."""
    log.warning("attempt_lease_lost", attempt_id=str(attempt["attempt_id"]), step=attempt["step_code"],
                channel=attempt["channel"], lease_owner=str(owner), stage=stage)
