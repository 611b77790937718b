"""Contact attempts: the one owner of their life. Reviews plan them (pending, deferred,
suppressed, skipped); bots claim them under a lease, ask whether they may still go out,
and report what came of sending; the API reads them. Every write to an attempt is
here, and every write by a bot is made only while the bot's lease stands, so a bot that
lost its lease to another replica changes nothing.

The bot brings only I/O: it renders and sends the email or holds the call, and hands
the result back. The rules (may this go out now, what a failure leads to, what a call's
outcome changes) are the domain's and this module's."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo

import asyncpg
import structlog

from server.core import promises
from server.core.accounts import lock_account
from server.core.views import LoanView, active_loans
from server.db import accounts as account_rows
from server.db import acquire
from server.db import collections as rows
from server.db import payment_orders as order_rows
from server.domain import auto_debit
from server.domain.bills import Bill, BillLine, bills
from server.domain.calendar import local_date
from server.domain.cases import Escalation, EscalationReason, PromiseSource
from server.domain.errors import InvariantViolation, NotFound
from server.domain.penalties import PenaltyPolicy
from server.domain.reminders import (
    Attempt,
    AttemptKind,
    AttemptStatus,
    Channel,
    ContactFacts,
    ContactRules,
    Failed,
    Outcome,
    Reason,
    RetryPolicy,
    Step,
    after_failure,
    hold_back,
    plan_steps,
)
from server.logging import mask

log = structlog.get_logger(__name__)

# The template of a notice that an auto-debit failed.
NOTICE_TEMPLATE = "debit_failed"

# What a call's outcome does to the case.
ESCALATING_OUTCOMES = {Outcome.DISPUTE: Escalation(EscalationReason.DISPUTE),
                       Outcome.REQUEST_AGENT: Escalation(EscalationReason.AGENT_REQUESTED)}


def message_id(account_id: UUID, due_date: date, step_code: str, domain: str) -> str:
    """Stable per (bill, step): a resend after a crash carries the same id."""
    return f"<reminder.{account_id}.{due_date.isoformat()}.{step_code}@{domain}>"


def attempt_of(row: asyncpg.Record) -> Attempt:
    return Attempt(
        attempt_id=row["attempt_id"], account_id=row["account_id"], loan_id=row["loan_id"],
        sequence=row["sequence"], due_date=row["due_date"], step_code=row["step_code"], channel=Channel(row["channel"]),
        status=AttemptStatus(row["status"]), reason=Reason(row["reason"]) if row["reason"] else None,
        outcome=Outcome(row["outcome"]) if row["outcome"] else None, tries=row["tries"],
        planned_for=row["planned_for"], message_id=row["message_id"], next_try_at=row["next_try_at"],
        detail=json.loads(row["detail"]) if isinstance(row["detail"], str) else dict(row["detail"] or {}),
        created_at=row["created_at"], updated_at=row["updated_at"], payment_order_id=row["payment_order_id"])


def readable(attempt: Attempt, name: str) -> Attempt:
    """An attempt as the API may show it: its transcripts and the SMTP server's answer
    masked. Attempts are stored masked; this also covers rows stored before that, and
    costs nothing on text already masked."""
    detail = dict(attempt.detail)
    if "smtp" in detail:
        detail["smtp"] = mask(str(detail["smtp"]))
    if "transcript" in detail:
        detail["transcript"] = masked_transcript(detail["transcript"] or [], name)
    if "failures" in detail:
        detail["failures"] = [{**failure, "transcript": masked_transcript(failure.get("transcript") or [], name)}
                              for failure in detail["failures"] or []]
    return replace(attempt, detail=detail)


def masked_transcript(transcript: Sequence[dict], name: str) -> list[dict]:
    """A call's transcript as it may be kept and shown: the customer's name and any
    email, phone or card-like number masked, as in the logs."""
    name_pattern = re.compile(re.escape(name), re.IGNORECASE) if name.strip() else None

    def clean(text: str) -> str:
        if name_pattern is not None:
            text = name_pattern.sub("[name]", text)
        return mask(text)

    return [{key: clean(value) if key in ("bot", "callee") else value for key, value in line.items()}
            for line in transcript]


def masked_smtp(detail: dict) -> dict:
    """An SMTP server's answer quotes the recipient's address: it is kept masked."""
    return {**detail, "smtp": mask(str(detail["smtp"]))} if detail.get("smtp") else detail


@dataclass(frozen=True)
class DebitNotice:
    """What the notice of a failed auto-debit says beside the bill: the try, what could
    not be taken and why, from which instrument (its last 4 characters only), when it
    failed and when the next automatic try will be (local times; None: no other)."""

    attempt: int
    amount_minor: int
    failure_reason: str
    token_last4: str
    failed_at: datetime
    next_try_at: datetime | None
    # What is owed now on or before the bill's due date: what the next try would take
    # (earlier bills still unpaid included, as the waterfall pays them first).
    owed_minor: int = 0
    # The last 4 of the instrument the next try will use, when the customer has bound
    # another since; None when it is the one that failed.
    next_last4: str | None = None


@dataclass(frozen=True)
class ReminderContext:
    """Everything a bot needs to contact a customer about one claimed attempt: the bill
    it is for, with its total and its lines; for the notice of a failed auto-debit, the
    failure (`notice`)."""

    attempt: Attempt
    name: str
    email: str
    phone: str
    locale: str
    time_zone: str
    today: date
    template: str
    bill: Bill
    penalty: PenaltyPolicy
    notice: DebitNotice | None = None

    @property
    def days_past_due(self) -> int:
        return self.bill.days_past_due(self.today)


def bill_lines(loans: Sequence[LoanView]) -> list[BillLine]:
    """Every installment of these loans as a line of its bill."""
    return [BillLine(loan.loan_id, loan.order_id, loan.term_months, loan.apr_bps, installment)
            for loan in loans for installment in loan.installments]


@dataclass(frozen=True)
class AttemptPolicy:
    rules: ContactRules
    email_retry: RetryPolicy
    voice_retry: RetryPolicy
    penalty: PenaltyPolicy
    mail_domain: str
    # The local hour of the auto-debit's morning tries (AUTO_DEBIT_HOUR), for the next
    # try that a notice announces.
    auto_debit_hour: int = auto_debit.DEFAULT_MORNING_HOUR

    def retry(self, channel: Channel) -> RetryPolicy:
        return self.email_retry if channel is Channel.EMAIL else self.voice_retry


class ContactAttempts:
    def __init__(self, policy: AttemptPolicy) -> None:
        self.policy = policy

    # -- planning, inside a review's transaction on the locked account -------------------

    async def of_account(self, conn: asyncpg.Connection, account_id: UUID) -> dict[tuple[date, str], Attempt]:
        """The account's attempts by (due date, step). An attempt per installment made
        before reminders were per bill stands for its bill's step; where two loans' made
        one each, the bill's own attempt, else the first made, stands for it."""
        found: dict[tuple[date, str], Attempt] = {}
        for attempt in sorted(map(attempt_of, await rows.attempts_of_account(conn, account_id)),
                              key=lambda a: (a.loan_id is not None, a.created_at, str(a.attempt_id))):
            found.setdefault((attempt.due_date, attempt.step_code), attempt)
        return found

    async def plan(self, conn: asyncpg.Connection, account_id: UUID, due_date: date, step: Step,
                   status: AttemptStatus, reason: Reason | None, existing: Attempt | None, now: datetime, *,
                   payment_order_id: UUID | None = None) -> bool:
        """Record what a review decided for a step (or for the notice of a failed
        auto-debit, which names its payment order): a new attempt, or a DEFERRED one
        moved on. True when something changed."""
        if status not in (AttemptStatus.PENDING, AttemptStatus.DEFERRED, AttemptStatus.SUPPRESSED,
                          AttemptStatus.SKIPPED):
            raise ValueError(f"a review does not plan {status}")
        if existing is not None:
            if existing.status is AttemptStatus.DEFERRED and (status, reason) != (existing.status, existing.reason):
                await rows.set_attempt_status(conn, existing.attempt_id, status.value, now,
                                              reason=reason.value if reason else None)
                return True
            return False
        inserted = await rows.insert_attempt(
            conn, attempt_id=uuid.uuid4(), account_id=account_id, due_date=due_date, step_code=step.code,
            channel=step.channel.value, status=status.value, reason=reason.value if reason else None,
            message_id=message_id(account_id, due_date, step.code, self.policy.mail_domain),
            planned_for=due_date + timedelta(days=step.offset_days), now=now, payment_order_id=payment_order_id)
        return inserted is not None

    # -- a bot's side: claim, check, report ----------------------------------------------

    async def claim(self, pool: asyncpg.Pool, channel: Channel, now: datetime, *, lease_now: datetime,
                    lease_until: datetime, owner: UUID, limit: int) -> list[Attempt]:
        """Up to `limit` attempts ready to send on `channel` (pending and due, or held by a
        bot whose lease ran out), now SENDING under `owner`'s lease."""
        async with acquire(pool) as conn:
            return [attempt_of(r) for r in await rows.claim_attempts(
                conn, channel.value, now, lease_now=lease_now, lease_until=lease_until, owner=owner, limit=limit)]

    async def renew(self, pool: asyncpg.Pool, attempt_ids: Sequence[UUID], owner: UUID, lease_until: datetime,
                    timeout_s: float) -> set[UUID]:
        """The attempts still held by `owner`, their leases extended to `lease_until`."""
        async with acquire(pool, timeout=timeout_s) as conn:
            return await rows.renew_leases(conn, list(attempt_ids), owner, lease_until, timeout_s=timeout_s)

    async def strategy(self, conn: asyncpg.Connection) -> list[Step]:
        """The reminder strategy as it stands (its enabled steps)."""
        return [Step(r["step_code"], r["offset_days"], Channel(r["channel"]), r["template"], r["escalates"])
                for r in await rows.steps(conn)]

    async def context(self, pool: asyncpg.Pool, attempt: Attempt, owner: UUID, now: datetime,
                      channels: frozenset[Channel]) -> ReminderContext | AttemptStatus | None:
        """What to say to whom for a claimed attempt; or, when it must not go out now
        (the customer paid, promised or opted out since it was planned, the contact
        window closed, or a later step of the strategy is due by now, as after a channel
        was away for days), the status it was given instead (SUPPRESSED, DEFERRED or
        SKIPPED); or None when the lease was lost meanwhile (nothing recorded)."""
        async with acquire(pool) as conn:
            account = await account_rows.get(conn, attempt.account_id)
            if account is None:
                raise NotFound("attempt_id", str(attempt.attempt_id), "account of the attempt")
            zone = account["time_zone"]
            loans = await active_loans(conn, attempt.account_id, zone, now)
            bill = bills(bill_lines(loans)).get(attempt.due_date, Bill(attempt.due_date, ()))
            email_out, voice_out, phone_blocked = await rows.preferences(conn, attempt.account_id)
            name, email, phone = account_rows.contact(account)
            facts = ContactFacts(
                owed_minor=bill.owed_minor,
                promise_active=await rows.active_promise(conn, attempt.account_id) is not None,
                email_opt_out=email_out, voice_opt_out=voice_out, phone_blocked=phone_blocked,
                has_email=bool(email), has_phone=bool(phone))
            today = local_date(now, zone)
            strategy = await self.strategy(conn)
            notice = None
            if attempt.kind is AttemptKind.DEBIT_FAILED:
                notice, superseded = await self._notice(conn, attempt, zone, now, loans)
            else:
                superseded = attempt.step_code in {
                    s.code for s in plan_steps(strategy, bill.due_date, today, set()).superseded}
            held = (AttemptStatus.SKIPPED, Reason.SUPERSEDED) if superseded else hold_back(
                attempt.channel, facts, now, zone, self.policy.rules, channels=channels, history=None)
            if held is not None:
                status, reason = held
                if not await rows.finish_attempt(conn, attempt.attempt_id, owner, status.value, now,
                                                 reason=reason.value):
                    return None
                return status
            template = NOTICE_TEMPLATE if notice else next(
                (s.template for s in strategy if s.code == attempt.step_code), "overdue")
        return ReminderContext(attempt=attempt, name=name, email=email, phone=phone, locale=account["locale"],
                               time_zone=zone, today=today, template=template, bill=bill,
                               penalty=self.policy.penalty, notice=notice)

    async def _notice(self, conn: asyncpg.Connection, attempt: Attempt, zone: str, now: datetime,
                      loans: list[LoanView]) -> tuple[DebitNotice, bool]:
        """The failure a notice tells of, and whether it is superseded: a later try of
        its due date has been made since, or the try it would announce is due by now
        (the bot was away): either way it would announce a try that is made or being
        made. No next try is announced once the customer has turned auto-debit off
        (bound an instrument without it)."""
        assert attempt.payment_order_id is not None
        order = await order_rows.failed_debit(conn, attempt.payment_order_id, attempt.account_id)
        if order is None:
            raise InvariantViolation(f"attempt {attempt.attempt_id} tells of no failed debit order")
        failed_at = order["completed_at"].astimezone(ZoneInfo(zone))
        method = await order_rows.active_method(conn, attempt.account_id)
        next_try = auto_debit.next_try(order["attempt"], failed_at, order["due_date"], self.policy.auto_debit_hour)
        debiting = method is not None and bool(method["auto_debit"])
        next_last4 = None
        if method is not None and debiting and method["payment_method_id"] != order["payment_method_id"]:
            next_last4 = method["token_last4"]
        installments = [i for loan in loans for i in loan.installments]
        notice = DebitNotice(attempt=order["attempt"], amount_minor=order["amount_minor"],
                             failure_reason=order["failure_reason"] or "DECLINED", token_last4=order["token_last4"],
                             failed_at=failed_at, next_try_at=next_try if debiting else None,
                             owed_minor=auto_debit.amount_due(installments, order["due_date"]), next_last4=next_last4)
        stale = notice.next_try_at is not None and notice.next_try_at <= now
        return notice, order["tried_again"] or stale

    async def mark_sent(self, pool: asyncpg.Pool, attempt: Attempt, owner: UUID, now: datetime, outcome: Outcome,
                        detail: dict) -> bool:
        """Record a delivered email; False when the lease was lost (nothing recorded)."""
        async with acquire(pool) as conn:
            return await rows.finish_attempt(conn, attempt.attempt_id, owner, AttemptStatus.SENT.value, now,
                                             outcome=outcome.value, detail=masked_smtp(detail))

    async def mark_failed(self, pool: asyncpg.Pool, context: ReminderContext, owner: UUID, now: datetime, *,
                          permanent: bool, detail: dict, transcript: Sequence[dict] = ()) -> Failed | None:
        """Record a failed send and what follows from it under the channel's retry
        policy: tried again later, or given up. None when the lease was lost."""
        attempt = context.attempt
        failed = after_failure(attempt.channel, attempt.tries, permanent, now, self.policy.retry(attempt.channel))
        if attempt.channel is Channel.VOICE:
            # Each failed call is kept, with what was said before the line broke.
            failure = {"at": now.isoformat(), **detail,
                       "transcript": masked_transcript(transcript, context.name)}
            detail = {"failures": attempt.detail.get("failures", []) + [failure]}
        else:
            detail = masked_smtp(detail)
        async with acquire(pool) as conn:
            recorded = await rows.finish_attempt(
                conn, attempt.attempt_id, owner, failed.status.value, now, reason=failed.reason.value,
                outcome=failed.outcome.value if failed.outcome else None, detail=detail,
                next_try_at=failed.next_try_at)
        return failed if recorded else None

    async def record_call(self, pool: asyncpg.Pool, context: ReminderContext, owner: UUID, now: datetime,
                          outcome: Outcome, promised_date: date | None, transcript: Sequence[dict]) -> bool:
        """Record a call that reached an outcome and act on it (a promise, a payment
        check, a human queue, a blocked number), in one transaction and only while the
        lease stands: a promise is recorded once even if another replica took over."""
        detail = {"transcript": masked_transcript(transcript, context.name),
                  "promised_date": promised_date.isoformat() if promised_date else None}
        account_id = context.attempt.account_id
        async with acquire(pool) as conn, conn.transaction():
            # The account first, as every change to its case and promises takes it: a
            # promise recorded through the API meanwhile is seen, never collided with.
            await lock_account(conn, account_id)
            if not await rows.finish_attempt(conn, context.attempt.attempt_id, owner, AttemptStatus.SENT.value, now,
                                             outcome=outcome.value, detail=detail):
                return False
            if outcome is Outcome.PROMISE_TO_PAY and promised_date is not None:
                if await rows.active_promise(conn, account_id) is None:
                    await promises.open_promise(conn, account_id, promised_date,
                                                max(1, context.bill.owed_minor), PromiseSource.VOICE, now)
            elif outcome is Outcome.CLAIMS_PAID:
                await rows.flag_payment_check(conn, account_id, now)
                await rows.event(conn, account_id, "CLAIMS_PAID", {}, now)
            elif outcome in ESCALATING_OUTCOMES:
                await rows.escalate(conn, account_id, ESCALATING_OUTCOMES[outcome].stored(), now)
            elif outcome is Outcome.WRONG_PERSON:
                await rows.block_phone(conn, account_id, now)
                await rows.event(conn, account_id, "PHONE_BLOCKED", {"reason": Outcome.WRONG_PERSON.value}, now)
        return True

    # -- the API's reads -------------------------------------------------------------------

    async def page(self, conn: asyncpg.Connection, account_id: UUID, after: tuple[date, str, UUID] | None,
                   limit: int) -> list[Attempt]:
        account = await account_rows.get(conn, account_id)
        if account is None:
            raise NotFound("account_id", str(account_id), "account")
        name = account_rows.contact(account)[0]
        return [readable(attempt_of(r), name) for r in await rows.attempts_page(conn, account_id, after, limit)]

    async def get(self, conn: asyncpg.Connection, attempt_id: UUID) -> Attempt:
        row = await rows.attempt(conn, attempt_id)
        if row is None:
            raise NotFound("attempt_id", str(attempt_id), "contact attempt")
        account = await account_rows.get(conn, row["account_id"])
        return readable(attempt_of(row), account_rows.contact(account)[0] if account else "")
