"""Request validation: every bad field is collected and reported together, by name."""

from __future__ import annotations

import ipaddress
import re
import uuid
from datetime import UTC, date, datetime
from typing import Literal, overload
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from google.protobuf.timestamp_pb2 import Timestamp

from server.domain.billing import MAX_STATEMENT_DAY, MIN_STATEMENT_DAY
from server.domain.errors import FieldViolation, InvalidArgument
from server.domain.identifiers import identifier_problem
from server.domain.money import check_amount

MAX_REASON_LENGTH = 500
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
_MONTH = re.compile(r"^[0-9]{4}-[0-9]{2}$")
# Control characters (NUL among them) have no place in names or reasons, and PostgreSQL
# refuses NUL in text.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_TIME_ZONE_LENGTH = 64
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
_PHONE = re.compile(r"^\+[1-9][0-9]{6,14}$")
LOCALES = ("zh-CN", "en")
# Every list call pages the same way: 0 asks for the default, more than the maximum is refused.
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 100


class Fields:
    """Collects violations while converting a request; `done()` raises them all."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def fail(self, field: str, description: str) -> None:
        self.violations.append(FieldViolation(field, description))

    def done(self) -> None:
        if self.violations:
            raise InvalidArgument(self.violations)

    def uuid(self, value: str, field: str) -> uuid.UUID:
        if not value:
            self.fail(field, "is required")
            return uuid.UUID(int=0)
        try:
            return uuid.UUID(value)
        except ValueError:
            self.fail(field, f"must be a UUID, got {value[:64]!r}")
            return uuid.UUID(int=0)

    def identifier(self, value: str, field: str, *, min_length: int = 1) -> str:
        """A caller's identifier: `min_length`..128 printable ASCII characters without spaces."""
        problem = identifier_problem(value, min_length)
        if problem:
            self.fail(field, problem)
        return value

    def idempotency_key(self, value: str) -> str:
        return self.identifier(value, "idempotency_key")

    def text(self, value: str, field: str, *, max_length: int = MAX_REASON_LENGTH, required: bool = True) -> str:
        value = value.strip()
        if not value:
            if required:
                self.fail(field, "is required")
        elif len(value) > max_length:
            self.fail(field, f"must be at most {max_length} characters")
        elif _CONTROL.search(value):
            self.fail(field, "must not contain control characters")
        return value

    def amount(self, value: int, field: str, *, allow_zero: bool = False) -> int:
        violation = check_amount(value, field, allow_zero=allow_zero)
        if violation:
            self.violations.append(violation)
        return value

    def page_size(self, value: int, name: str = "page_size") -> int:
        """The rows a list call returns: 1..MAX_PAGE_SIZE, or DEFAULT_PAGE_SIZE for 0."""
        if not 0 <= value <= MAX_PAGE_SIZE:
            self.fail(name, f"must be between 1 and {MAX_PAGE_SIZE} (0 for the default of {DEFAULT_PAGE_SIZE})")
            return DEFAULT_PAGE_SIZE
        return value or DEFAULT_PAGE_SIZE

    def statement_day(self, value: int, field: str = "statement_day", *, allow_default: bool = False) -> int:
        """A statement day, 1..28; with `allow_default`, also 0 (the default day)."""
        if value == 0 and allow_default:
            return 0
        if not MIN_STATEMENT_DAY <= value <= MAX_STATEMENT_DAY:
            self.fail(field, f"must be a day of the month from {MIN_STATEMENT_DAY} to {MAX_STATEMENT_DAY}"
                             + (" (0 for the day the account opens)" if allow_default else "") + f", got {value}")
        return value

    def enum(self, value: int, field: str, mapping: dict, *, default=None):
        """Map a proto enum number to a domain value; 0 (UNSPECIFIED) gives `default`,
        or a violation when there is no default."""
        if value == 0 and default is not None:
            return default
        if value in mapping:
            return mapping[value]
        self.fail(field, f"must be one of {sorted(mapping)} (got {value})")
        return default

    def timestamp(self, message, name: str, field: str) -> datetime | None:
        if not message.HasField(name):
            return None
        value: Timestamp = getattr(message, name)
        try:
            return value.ToDatetime(tzinfo=UTC)
        except (ValueError, OverflowError):
            self.fail(field, "is not a valid timestamp")
            return None

    @overload
    def day(self, value: str, field: str, *, required: Literal[True]) -> date: ...

    @overload
    def day(self, value: str, field: str, *, required: Literal[False] = False) -> date | None: ...

    def day(self, value: str, field: str, *, required: bool = False) -> date | None:
        """A calendar date YYYY-MM-DD; optional (None when not given) unless `required`
        (then a missing or malformed one reads as date.min, and is refused by done())."""
        if not value:
            if required:
                self.fail(field, "is required")
                return date.min
            return None
        try:
            if _DATE.match(value):
                return date.fromisoformat(value)
        except ValueError:
            pass
        self.fail(field, f"must be a date YYYY-MM-DD, got {value[:32]!r}")
        return date.min if required else None

    def statement_period(self, value: str, field: str = "period") -> tuple[date | None, date | None]:
        """A statement asked for by "YYYY-MM" (its month, as the month's first day) or
        "YYYY-MM-DD" (its exact date): (exact date, month), one of them set when valid."""
        try:
            if _MONTH.match(value):
                return None, date.fromisoformat(value + "-01")
            if _DATE.match(value):
                return date.fromisoformat(value), None
        except ValueError:
            pass
        self.fail(field, f"must be YYYY-MM or YYYY-MM-DD, got {value[:32]!r}")
        return None, None

    def ip_address(self, value: str, field: str) -> str:
        """Optional; an IPv4 or IPv6 address when given."""
        if value:
            try:
                return str(ipaddress.ip_address(value))
            except ValueError:
                self.fail(field, f"must be an IPv4 or IPv6 address, got {value[:64]!r}")
        return value

    def email(self, value: str, field: str) -> str:
        value = value.strip()
        if not _EMAIL.match(value) or len(value) > 254 or _CONTROL.search(value):
            self.fail(field, "must be an email address")
        return value

    def phone(self, value: str, field: str) -> str:
        value = value.strip()
        if not _PHONE.match(value):
            self.fail(field, "must be an E.164 number such as +8613800138000")
        return value

    def locale(self, value: str, field: str) -> str:
        value = value or "zh-CN"
        if value not in LOCALES:
            self.fail(field, f"must be one of {', '.join(LOCALES)}")
        return value

    def time_zone(self, value: str, field: str) -> str:
        value = value or "Asia/Shanghai"
        if len(value) > MAX_TIME_ZONE_LENGTH or not _is_time_zone(value):
            self.fail(field, f"must be an IANA time zone such as Asia/Shanghai, got {value[:64]!r}")
        return value


def _is_time_zone(name: str) -> bool:
    # ZoneInfo raises more than ZoneInfoNotFoundError for some names ("Asia" is a
    # folder: IsADirectoryError), so any failure to load means "not a zone".
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True
