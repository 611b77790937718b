"""Authorizations: the decision to hold, and the life of a hold.

A hold is PENDING, then exactly one of CAPTURED, VOIDED or EXPIRED; a declined
authorization never held anything. These are pure decisions over values; the caller
applies them to the books in one transaction.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from server.domain.accounts import AccountStatus, CreditLine
from server.domain.errors import FailedPrecondition, FieldViolation, InvalidArgument
from server.domain.pricing import Offer, ProductTable, RepaymentMethod


class AuthorizationStatus(enum.StrEnum):
    PENDING = "PENDING"
    CAPTURED = "CAPTURED"
    VOIDED = "VOIDED"
    EXPIRED = "EXPIRED"
    DECLINED = "DECLINED"


class DeclineReason(enum.StrEnum):
    INSUFFICIENT_LIMIT = "INSUFFICIENT_LIMIT"
    ACCOUNT_FROZEN = "ACCOUNT_FROZEN"
    ACCOUNT_CLOSED = "ACCOUNT_CLOSED"
    TERM_NOT_OFFERED = "TERM_NOT_OFFERED"
    RISK_DECLINED = "RISK_DECLINED"
    RISK_REVIEW = "RISK_REVIEW"


@dataclass(frozen=True)
class Approval:
    offer: Offer


@dataclass(frozen=True)
class Decline:
    reason: DeclineReason
    message: str


def decide(line: CreditLine, products: ProductTable, amount_minor: int, term_months: int,
           method: RepaymentMethod, now: datetime) -> Approval | Decline:
    """Whether this account may hold `amount_minor` for this plan now. Checks run from
    the hardest stop to the softest, so the reason given is the one that matters."""
    if line.status is AccountStatus.CLOSED:
        return Decline(DeclineReason.ACCOUNT_CLOSED, "the account is closed")
    if line.status is AccountStatus.FROZEN:
        return Decline(DeclineReason.ACCOUNT_FROZEN, "the account is frozen")
    offer = products.offer(term_months, method, amount_minor, line.risk_grade)
    if offer is None:
        minimum = products.min_amount_minor(term_months, method)
        detail = (f"needs an order of at least {minimum} fen" if minimum is not None and amount_minor < minimum
                  else f"is not offered to grade {line.risk_grade}")
        return Decline(DeclineReason.TERM_NOT_OFFERED, f"{term_months} months {method} {detail}")
    available = line.available_minor(now)
    if amount_minor > available:
        return Decline(DeclineReason.INSUFFICIENT_LIMIT,
                       f"{amount_minor} fen asked, {available} fen available")
    return Approval(offer)


@dataclass(frozen=True)
class Hold:
    status: AuthorizationStatus
    amount_minor: int
    expires_at: datetime
    term_months: int
    method: RepaymentMethod

    def effective_status(self, now: datetime) -> AuthorizationStatus:
        """A pending hold past its expiry is EXPIRED even before the sweeper books it."""
        if self.status is AuthorizationStatus.PENDING and now >= self.expires_at:
            return AuthorizationStatus.EXPIRED
        return self.status


@dataclass(frozen=True)
class CaptureResult:
    captured_minor: int
    released_minor: int


def capture(hold: Hold, amount_minor: int, min_amount_minor: int, now: datetime) -> CaptureResult:
    """Capture all of a pending hold (`amount_minor` 0) or part of it; the rest is given back."""
    status = hold.effective_status(now)
    if status is not AuthorizationStatus.PENDING:
        raise FailedPrecondition(f"authorization is {status}; only a PENDING hold can be captured")
    captured = hold.amount_minor if amount_minor == 0 else amount_minor
    if captured > hold.amount_minor:
        raise InvalidArgument([FieldViolation(
            "amount_minor", f"{captured} exceeds the authorized {hold.amount_minor}")])
    if captured < min_amount_minor:
        raise InvalidArgument([FieldViolation(
            "amount_minor",
            f"{captured} is below the {min_amount_minor} minimum of a {hold.term_months}-month plan")])
    return CaptureResult(captured_minor=captured, released_minor=hold.amount_minor - captured)


def void(hold: Hold, now: datetime) -> bool:
    """True when the void gives the hold back; False when it was already voided (a
    second void returns the first result)."""
    status = hold.effective_status(now)
    if status is AuthorizationStatus.VOIDED:
        return False
    if status is not AuthorizationStatus.PENDING:
        raise FailedPrecondition(f"authorization is {status}; only a PENDING hold can be voided")
    return True
