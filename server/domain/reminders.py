"""Reminder strategy and contact rules: which step runs for an installment now, and
whether the customer may be contacted on a channel now."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo


class Channel(enum.StrEnum):
    EMAIL = "EMAIL"
    VOICE = "VOICE"


class Suppression(enum.StrEnum):
    PAID = "PAID"
    PROMISE_ACTIVE = "PROMISE_ACTIVE"
    OPTED_OUT = "OPTED_OUT"
    WRONG_NUMBER = "WRONG_NUMBER"
    NO_CONTACT_ADDRESS = "NO_CONTACT_ADDRESS"
    CHANNEL_UNAVAILABLE = "CHANNEL_UNAVAILABLE"


class Deferral(enum.StrEnum):
    OUTSIDE_CONTACT_WINDOW = "OUTSIDE_CONTACT_WINDOW"
    FREQUENCY_CAP = "FREQUENCY_CAP"


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
