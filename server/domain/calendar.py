"""Calendar dates of schedules: due date k is the start date plus k months, clamped to
the month's last day."""

from __future__ import annotations

import calendar as _calendar
from datetime import date, datetime
from zoneinfo import ZoneInfo


def add_months(start: date, months: int) -> date:
    month_index = start.month - 1 + months
    year = start.year + month_index // 12
    month = month_index % 12 + 1
    last_day = _calendar.monthrange(year, month)[1]
    return date(year, month, min(start.day, last_day))


def local_date(instant: datetime, time_zone: str) -> date:
    """The calendar date of `instant` in `time_zone` (an aware datetime is required)."""
    return instant.astimezone(ZoneInfo(time_zone)).date()


# The zone furthest ahead of UTC (Kiribati, UTC+14): no account's calendar is later.
LATEST_ZONE = "Pacific/Kiritimati"


def latest_local_date(instant: datetime) -> date:
    """The latest calendar date anywhere at `instant`: a bound on every account's
    "today", for selecting rows by date before each account's own zone is known."""
    return local_date(instant, LATEST_ZONE)
