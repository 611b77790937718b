"""Auto-debit: what falls due is taken from the customer's bound instrument on its due
date (docs/payments.md, "Auto-debit").

1. An account is debited when its active instrument was bound with auto-debit on, on a
   due date of one of its installments (its local date), from the local hour
   `morning_hour` on.
2. The amount is what is due and unpaid that day: every installment due on or before
   it, overdue ones with their penalties: the part of a payment the waterfall gives to
   overdue and current installments (server/domain/waterfall.py, steps 1 and 2).
3. Each try is one DEBIT payment order, keyed (account, due date, try number). A try is
   made only when every earlier try for that due date FAILED: one still REQUESTED is
   in flight, one SUCCEEDED paid.
4. A failed try is tried again by a fixed schedule: the second try `RETRY_AFTER` after
   the first failed, the third on the next local morning, and no more (`MAX_ATTEMPTS`).
   After that the reminders (which go on while anything is unpaid) do the work.
5. A due date is tried for `REACH_DAYS` days at most: a bot down longer does not debit
   an old due date; the next one takes what is overdue by then.
6. The customer is told of a failed try at most once, by email (a contact attempt of
   step `AUTO_DEBIT_FAILED_<try>`): of the latest try of a due date only. Its notice is
   planned while the failure is at most `NOTICE_WITHIN` old (older: the bot was down,
   or it failed before notices existed) and, once planned, waits for the contact window
   and the caps like any email; it is dropped (SKIPPED, SUPERSEDED) when a later try is
   made, or when the try it announces is due by the time it could go out. The
   reminders speak of the bill from then on.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from uuid import UUID

from server.domain.loans import InstallmentState

MAX_ATTEMPTS = 3
RETRY_AFTER = timedelta(hours=4)
REACH_DAYS = 3
DEFAULT_MORNING_HOUR = 8
# A failed try is told to the customer at most this long after it failed (rule 6).
NOTICE_WITHIN = timedelta(days=1)
NOTICE_STEP_PREFIX = "AUTO_DEBIT_FAILED_"


@dataclass(frozen=True)
class Attempt:
    """An earlier try for a due date, as its order stands; `completed_at` is local time."""

    number: int
    status: str  # the order's: REQUESTED, SUCCEEDED or FAILED
    completed_at: datetime | None
    order_id: UUID | None = None


def amount_due(installments: Iterable[InstallmentState], today: date) -> int:
    """What the installments due on or before `today` still owe, penalties included."""
    return sum(i.owed_minor for i in installments if i.due_date <= today and i.owed_minor > 0)


def due_date_in_reach(due_dates: Iterable[date], today: date) -> date | None:
    """The latest due date on or before `today` that is still tried (rule 5)."""
    reachable = [d for d in due_dates if today - timedelta(days=REACH_DAYS) < d <= today]
    return max(reachable, default=None)


def retry_at(attempt: int, failed_at: datetime, morning_hour: int) -> datetime | None:
    """When the try after failed try `attempt` may run (local time), or None when no
    try is left (rule 4)."""
    if attempt >= MAX_ATTEMPTS:
        return None
    if attempt == 1:
        return failed_at + RETRY_AFTER
    return datetime.combine(failed_at.date() + timedelta(days=1), time(morning_hour), failed_at.tzinfo)


def next_attempt(due_date: date, attempts: Iterable[Attempt], now: datetime, morning_hour: int) -> int | None:
    """The number of the try to make now (local `now`) for `due_date`, or None."""
    made = sorted(attempts, key=lambda a: a.number)
    if not made:
        start = datetime.combine(due_date, time(morning_hour), now.tzinfo)
        return 1 if now >= start else None
    last = made[-1]
    if last.status != "FAILED" or last.completed_at is None:
        return None
    when = retry_at(last.number, last.completed_at, morning_hour)
    if when is None or now < when:
        return None
    return last.number + 1


def next_try(attempt: int, failed_at: datetime, due_date: date, morning_hour: int) -> datetime | None:
    """When the try after failed try `attempt` of `due_date` will be made (local time,
    at the first pass from then on), or None when there will be no other automatic
    try: it was the last (rule 4), or the next would fall past the days a due date is
    tried (rule 5)."""
    when = retry_at(attempt, failed_at, morning_hour)
    if when is None or when.date() >= due_date + timedelta(days=REACH_DAYS):
        return None
    return when


def notice_step(attempt: int) -> str:
    """The step code of the notice of failed try `attempt`."""
    return f"{NOTICE_STEP_PREFIX}{attempt}"


def latest_failure(attempts: Iterable[Attempt]) -> Attempt | None:
    """The latest try of one due date, when it FAILED."""
    latest = max(attempts, key=lambda a: a.number, default=None)
    if latest is None or latest.status != "FAILED" or latest.completed_at is None:
        return None
    return latest


def failure_to_tell(attempts: Iterable[Attempt], now: datetime) -> Attempt | None:
    """The try of one due date whose failure a new notice is to tell the customer of at
    `now`, if any (rule 6): the latest try, when it FAILED at most `NOTICE_WITHIN` ago. A
    notice planned within that time and held back since (contact window, caps) is still
    sent later, unless a later try was made or the try it announces is due by then."""
    latest = latest_failure(attempts)
    if latest is None or latest.completed_at is None:
        return None
    return latest if now - latest.completed_at <= NOTICE_WITHIN else None
