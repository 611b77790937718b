"""Credit lines: the limit arithmetic and what an account's status allows."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from server.domain.errors import InvalidArgument
from server.domain.pricing import Grade

# The namespace of account ids derived from customer ids; never change it (migration 0013
# derives the same ids in SQL).
ACCOUNT_ID_NAMESPACE = UUID("ebb7e510-9217-4342-8f44-151760c43c71")

# How far ahead a temporary raise may end (TEMPORARY_LIMIT_MAX_DAYS): a raise is for a
# promotion or a holiday, and a longer one is a permanent limit by another name.
DEFAULT_TEMPORARY_LIMIT_MAX_DAYS = 90


def account_id_of_customer(customer_id: str) -> UUID:
    """The id of the one account a customer may have, derived from the customer id:
    OpenAccount knows it before it writes anything, so the request's idempotency record
    and the account land in the same shard, and on a sharded database the account's
    primary key is what keeps one account per customer. SHA-256 of the namespace and
    the customer id, its first 16 bytes with the version (8) and variant bits of
    RFC 9562."""
    digest = hashlib.sha256(ACCOUNT_ID_NAMESPACE.bytes + customer_id.encode()).digest()
    value = int.from_bytes(digest[:16], "big")
    value = (value & ~(0xF << 76)) | (0x8 << 76)
    value = (value & ~(0x3 << 62)) | (0x2 << 62)
    return UUID(int=value)


class AccountStatus(enum.StrEnum):
    ACTIVE = "ACTIVE"
    FROZEN = "FROZEN"
    CLOSED = "CLOSED"


@dataclass(frozen=True)
class CreditLine:
    status: AccountStatus
    risk_grade: Grade
    credit_limit_minor: int
    temporary_limit_minor: int
    temporary_limit_expires_at: datetime | None
    held_minor: int
    outstanding_principal_minor: int

    def temporary_limit_in_force_minor(self, now: datetime) -> int:
        """A temporary raise counts only until it expires."""
        expires_at = self.temporary_limit_expires_at
        if self.temporary_limit_minor <= 0 or expires_at is None or now >= expires_at:
            return 0
        return self.temporary_limit_minor

    def effective_limit_minor(self, now: datetime) -> int:
        return self.credit_limit_minor + self.temporary_limit_in_force_minor(now)

    @property
    def used_minor(self) -> int:
        return self.held_minor + self.outstanding_principal_minor

    def available_minor(self, now: datetime) -> int:
        """What a new authorization may take. A FROZEN or CLOSED account takes none, so
        nothing is available there whatever the limit; a limit cut below what is used
        leaves nothing available, never a negative."""
        if self.status is not AccountStatus.ACTIVE:
            return 0
        return max(0, self.effective_limit_minor(now) - self.used_minor)


def temporary_limit_expiry(limit_minor: int, expires_at: datetime | None, now: datetime,
                           max_days: int) -> datetime | None:
    """When a temporary raise of `limit_minor` granted now ends: after now and at most
    `max_days` ahead (INVALID_ARGUMENT naming `expires_at` otherwise). A raise of zero
    removes the raise and has no end."""
    if limit_minor <= 0:
        return None
    if expires_at is None or expires_at <= now:
        raise InvalidArgument.of("expires_at", "must be in the future for a temporary limit above zero")
    latest = now + timedelta(days=max_days)
    if expires_at > latest:
        raise InvalidArgument.of(
            "expires_at", f"must be at most {max_days} days ahead (by {latest.isoformat()}), "
                          f"got {expires_at.isoformat()}")
    return expires_at
