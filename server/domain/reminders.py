"""Reminder strategy and contact rules: which step runs for a bill now, whether
the customer may be contacted on a channel now, and what a failed send leads to. The
names of a contact attempt's life (status, channel, reason, outcome) live here and only
here; the database, the bot and the API speak these enums."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from uuid import UUID
from zoneinfo import ZoneInfo


class Channel(enum.StrEnum):
    EMAIL = "EMAIL"
    VOICE = "VOICE"


class AttemptKind(enum.StrEnum):
    """REMINDER: a step of the reminder strategy for a bill; DEBIT_FAILED: the notice
    that an auto-debit of the bill failed (it names its payment order)."""

    REMINDER = "REMINDER"
    DEBIT_FAILED = "DEBIT_FAILED"


class AttemptStatus(enum.StrEnum):
    """PENDING: to send; DEFERRED: due but waiting (contact window, frequency cap, a
    channel this bot cannot use yet), looked at again by every review; SENDING: claimed
    by a bot under a lease; SENT and FAILED: final outcomes of sending; SUPPRESSED:
    decided not to send; SKIPPED: superseded by a later step after downtime."""

    PENDING = "PENDING"
    DEFERRED = "DEFERRED"
    SENDING = "SENDING"
    SENT = "SENT"
    FAILED = "FAILED"
    SUPPRESSED = "SUPPRESSED"
    SKIPPED = "SKIPPED"


# An attempt in one of these states is over: no review or bot changes it again.
FINAL_STATUSES = frozenset({AttemptStatus.SENT, AttemptStatus.FAILED, AttemptStatus.SUPPRESSED,
                            AttemptStatus.SKIPPED})


class Reason(enum.StrEnum):
    """Why an attempt was suppressed, deferred, skipped, retried or failed."""

    # Suppressed: the customer must not be contacted about this bill on this channel.
    PAID = "PAID"
    PROMISE_ACTIVE = "PROMISE_ACTIVE"
    OPTED_OUT = "OPTED_OUT"
    WRONG_NUMBER = "WRONG_NUMBER"
    NO_CONTACT_ADDRESS = "NO_CONTACT_ADDRESS"
    # Deferred: not now; the next review looks again.
    CHANNEL_UNAVAILABLE = "CHANNEL_UNAVAILABLE"
    OUTSIDE_CONTACT_WINDOW = "OUTSIDE_CONTACT_WINDOW"
    FREQUENCY_CAP = "FREQUENCY_CAP"
    # Skipped: a later step of the same bill is due.
    SUPERSEDED = "SUPERSEDED"
    # Sending failed: tried again later (PENDING) or given up (FAILED).
    SMTP_TEMPORARY = "SMTP_TEMPORARY"
    SMTP_TEMPORARY_EXHAUSTED = "SMTP_TEMPORARY_EXHAUSTED"
    SMTP_PERMANENT = "SMTP_PERMANENT"
    CALL_FAILED = "CALL_FAILED"


SUPPRESSIONS = frozenset({Reason.PAID, Reason.PROMISE_ACTIVE, Reason.OPTED_OUT, Reason.WRONG_NUMBER,
                          Reason.NO_CONTACT_ADDRESS})
DEFERRALS = frozenset({Reason.CHANNEL_UNAVAILABLE, Reason.OUTSIDE_CONTACT_WINDOW, Reason.FREQUENCY_CAP})


class Outcome(enum.StrEnum):
    """What came of a sent attempt: an email's delivery, or how a call ended."""

    # Email.
    DELIVERED = "DELIVERED"
    REJECTED = "REJECTED"
    UNDELIVERED = "UNDELIVERED"
    # A call in which the customer was reached and identified.
    PROMISE_TO_PAY = "PROMISE_TO_PAY"
    CLAIMS_PAID = "CLAIMS_PAID"
    DISPUTE = "DISPUTE"
    REQUEST_AGENT = "REQUEST_AGENT"
    REFUSED = "REFUSED"
    # A call that did not reach the customer.
    WRONG_PERSON = "WRONG_PERSON"
    NO_ANSWER = "NO_ANSWER"
    # An answering machine took a short message that names no amount.
    ANSWERING_MACHINE = "ANSWERING_MACHINE"


# Outcomes of a call in which the customer was reached (the quiet period follows them).
REACHED = frozenset({Outcome.PROMISE_TO_PAY, Outcome.CLAIMS_PAID, Outcome.DISPUTE, Outcome.REQUEST_AGENT,
                     Outcome.REFUSED})


@dataclass(frozen=True)
class Step:
    code: str
    offset_days: int
    channel: Channel
    template: str
    escalates: bool = False


@dataclass(frozen=True)
class Plan:
    run: tuple[Step, ...]
    superseded: tuple[Step, ...]


def plan_steps(steps: Sequence[Step], due_date: date, today: date, taken: set[str]) -> Plan:
    """Of the steps due by `today` and not yet taken, only those of the latest due
    offset run; older ones are superseded, so downtime never causes a burst."""
    due = [s for s in steps if due_date + timedelta(days=s.offset_days) <= today]
    if not due:
        return Plan((), ())
    latest = max(s.offset_days for s in due)
    open_steps = [s for s in due if s.code not in taken]
    return Plan(tuple(s for s in open_steps if s.offset_days == latest),
                tuple(s for s in open_steps if s.offset_days < latest))


@dataclass(frozen=True)
class ContactWindow:
    start: time = time(8, 0)
    end: time = time(21, 0)

    def contains(self, now: datetime, time_zone: str) -> bool:
        local = now.astimezone(ZoneInfo(time_zone)).time()
        return self.start <= local < self.end


@dataclass(frozen=True)
class FrequencyCaps:
    email_per_day: int = 2
    calls_per_day: int = 1
    calls_per_7_days: int = 7
    quiet_days_after_reached_call: int = 7


@dataclass(frozen=True)
class PastContact:
    at: datetime
    channel: Channel
    reached: bool = False


def within_caps(channel: Channel, now: datetime, time_zone: str, history: Sequence[PastContact],
                caps: FrequencyCaps) -> bool:
    """Whether one more contact on `channel` keeps the customer within the caps. "A day"
    is the customer's calendar day; the history is every contact made, across loans."""
    zone = ZoneInfo(time_zone)
    today = now.astimezone(zone).date()
    same = [c for c in history if c.channel is channel]
    today_count = sum(1 for c in same if c.at.astimezone(zone).date() == today)
    if channel is Channel.EMAIL:
        return today_count < caps.email_per_day
    if today_count >= caps.calls_per_day:
        return False
    week_ago = now - timedelta(days=7)
    if sum(1 for c in same if c.at > week_ago) >= caps.calls_per_7_days:
        return False
    quiet_from = now - timedelta(days=caps.quiet_days_after_reached_call)
    return not any(c.reached and c.at > quiet_from for c in same)


@dataclass(frozen=True)
class ContactFacts:
    """What decides whether a customer may be contacted about one bill now."""

    owed_minor: int
    promise_active: bool
    email_opt_out: bool
    voice_opt_out: bool
    phone_blocked: bool
    has_email: bool = True
    has_phone: bool = True


@dataclass(frozen=True)
class ContactRules:
    window: ContactWindow = field(default_factory=ContactWindow)
    caps: FrequencyCaps = field(default_factory=FrequencyCaps)


def hold_back(channel: Channel, facts: ContactFacts, now: datetime, time_zone: str, rules: ContactRules, *,
              channels: frozenset[Channel], history: Sequence[PastContact] | None) -> tuple[
                  AttemptStatus, Reason] | None:
    """Why a step on `channel` must not go out now (SUPPRESSED for good, or DEFERRED to
    a later review), or None when it may. The one rule for planning a step and for
    sending it: at planning `history` is the customer's recent contacts, checked against
    the caps; at sending it is None, since the attempt took its place under the caps when
    it was planned."""
    if facts.owed_minor <= 0:
        return AttemptStatus.SUPPRESSED, Reason.PAID
    if facts.promise_active:
        return AttemptStatus.SUPPRESSED, Reason.PROMISE_ACTIVE
    if (facts.email_opt_out if channel is Channel.EMAIL else facts.voice_opt_out):
        return AttemptStatus.SUPPRESSED, Reason.OPTED_OUT
    if channel is Channel.VOICE and facts.phone_blocked:
        return AttemptStatus.SUPPRESSED, Reason.WRONG_NUMBER
    if not (facts.has_email if channel is Channel.EMAIL else facts.has_phone):
        return AttemptStatus.SUPPRESSED, Reason.NO_CONTACT_ADDRESS
    if channel not in channels:
        # This bot cannot use the channel (no voice gateway configured): the step waits
        # for a bot that can, or for the next step to supersede it.
        return AttemptStatus.DEFERRED, Reason.CHANNEL_UNAVAILABLE
    if not rules.window.contains(now, time_zone):
        return AttemptStatus.DEFERRED, Reason.OUTSIDE_CONTACT_WINDOW
    if history is not None and not within_caps(channel, now, time_zone, history, rules.caps):
        return AttemptStatus.DEFERRED, Reason.FREQUENCY_CAP
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """How a channel's failed send is tried again: after `first_delay`, multiplied by
    `factor` for each try after the first (at most `max_growth` times), until `max_tries`
    tries have been made."""

    max_tries: int
    first_delay: timedelta
    factor: int = 1
    max_growth: int = 6

    def delay(self, tries: int) -> timedelta:
        return self.first_delay * self.factor ** min(max(tries - 1, 0), self.max_growth)


EMAIL_RETRY = RetryPolicy(max_tries=8, first_delay=timedelta(minutes=5), factor=2)
VOICE_RETRY = RetryPolicy(max_tries=3, first_delay=timedelta(minutes=10))


@dataclass(frozen=True)
class Failed:
    """What a failed send leads to."""

    status: AttemptStatus
    reason: Reason
    outcome: Outcome | None = None
    next_try_at: datetime | None = None


def after_failure(channel: Channel, tries: int, permanent: bool, now: datetime, policy: RetryPolicy) -> Failed:
    """A permanent failure (an SMTP 5xx) ends the attempt; a temporary one is tried again
    after the policy's delay, until its tries are spent. `tries` counts this one."""
    if channel is Channel.VOICE:
        if permanent or tries >= policy.max_tries:
            return Failed(AttemptStatus.FAILED, Reason.CALL_FAILED)
        return Failed(AttemptStatus.PENDING, Reason.CALL_FAILED, next_try_at=now + policy.delay(tries))
    if permanent:
        return Failed(AttemptStatus.FAILED, Reason.SMTP_PERMANENT, Outcome.REJECTED)
    if tries >= policy.max_tries:
        return Failed(AttemptStatus.FAILED, Reason.SMTP_TEMPORARY_EXHAUSTED, Outcome.UNDELIVERED)
    return Failed(AttemptStatus.PENDING, Reason.SMTP_TEMPORARY, next_try_at=now + policy.delay(tries))


@dataclass(frozen=True)
class Attempt:
    """One reminder step taken for one bill: the account's installments due on
    `due_date`. Attempts made before reminders were per bill name the installment they
    were for (`loan_id`, `sequence`); new ones name none. The notice of a failed
    auto-debit of the bill names its DEBIT order (`payment_order_id`)."""

    attempt_id: UUID
    account_id: UUID
    loan_id: UUID | None
    sequence: int | None
    due_date: date
    step_code: str
    channel: Channel
    status: AttemptStatus
    reason: Reason | None
    outcome: Outcome | None
    tries: int
    planned_for: date
    message_id: str | None
    next_try_at: datetime | None
    detail: dict
    created_at: datetime
    updated_at: datetime
    payment_order_id: UUID | None = None

    @property
    def kind(self) -> AttemptKind:
        return AttemptKind.REMINDER if self.payment_order_id is None else AttemptKind.DEBIT_FAILED
