"""Credit lines: the limit arithmetic and what an account's status allows."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from server.domain.pricing import Grade


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
        """A limit cut below what is used leaves nothing available, never a negative."""
        return max(0, self.effective_limit_minor(now) - self.used_minor)
