"""Payments through the payment gateway, in pure domain terms: what we ask a payment
processor to do, and what we learn about it.

1. A `PaymentOrder` asks for one movement of money: a DEBIT from a customer's bound
   instrument, a PAYOUT to one, or a MERCHANT payment. Its idempotency key names it:
   sent again, it must be the same order.
2. The processor answers with a `PaymentResult`: PENDING, then exactly once SUCCEEDED or
   FAILED (with a `FailureReason`).
3. A call that ends without an answer (deadline passed, gateway unreachable) is an
   `UnknownOutcome`, never a failure: the processor may have moved the money. The caller
   looks the payment up later by the order's idempotency key.
4. Results also come as `PaymentEvent`s on a stream that delivers at least once: the
   same result may come again, late, under a new sequence. A consumer dedupes by
   payment id (or idempotency key) and keeps the last sequence it has handled.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from datetime import datetime

from server.domain.errors import InvariantViolation


class PaymentKind(enum.Enum):
    DEBIT = "DEBIT"  # from a customer's instrument to us
    PAYOUT = "PAYOUT"  # from us to a customer's instrument
    MERCHANT = "MERCHANT"  # from us to a merchant


class PaymentStatus(enum.Enum):
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    # Never reported by the processor: the call got no answer, so the payment may or may
    # not exist. Only an `UnknownOutcome` has it.
    UNKNOWN = "UNKNOWN"


FINAL_STATUSES = frozenset({PaymentStatus.SUCCEEDED, PaymentStatus.FAILED})


class FailureReason(enum.Enum):
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    INSTRUMENT_INVALID = "INSTRUMENT_INVALID"
    MERCHANT_INVALID = "MERCHANT_INVALID"
    DECLINED = "DECLINED"


@dataclass(frozen=True)
class PaymentOrder:
    """One movement of money as the caller asks for it. DEBIT and PAYOUT name the
    customer's `instrument_token` and our `account_id`; MERCHANT names `merchant_id`."""

    kind: PaymentKind
    idempotency_key: str
    amount_minor: int
    currency: str
    reference: str
    instrument_token: str = ""
    account_id: str = ""
    merchant_id: str = ""


@dataclass(frozen=True)
class PaymentResult:
    """A payment as the processor knows it."""

    payment_id: str
    order: PaymentOrder
    status: PaymentStatus
    created_at: datetime
    # Set exactly when the status is FAILED.
    failure_reason: FailureReason | None = None
    # Set exactly when the status is SUCCEEDED or FAILED.
    completed_at: datetime | None = None

    def __post_init__(self) -> None:
        if self.status is PaymentStatus.UNKNOWN:
            raise InvariantViolation(f"payment {self.payment_id}: a processor's answer is never UNKNOWN")
        if (self.failure_reason is not None) != (self.status is PaymentStatus.FAILED):
            raise InvariantViolation(f"payment {self.payment_id}: a failure reason goes with FAILED and only FAILED")
        if (self.completed_at is not None) != (self.status in FINAL_STATUSES):
            raise InvariantViolation(f"payment {self.payment_id}: completed_at goes with a final status")

    @property
    def idempotency_key(self) -> str:
        return self.order.idempotency_key

    @property
    def kind(self) -> PaymentKind:
        return self.order.kind

    @property
    def amount_minor(self) -> int:
        return self.order.amount_minor

    def completed(self, status: PaymentStatus, at: datetime, reason: FailureReason | None = None) -> PaymentResult:
        """This payment after its final result; a PENDING payment completes once."""
        if self.status is not PaymentStatus.PENDING:
            raise InvariantViolation(f"payment {self.payment_id} is {self.status.value}, it cannot complete again")
        if status not in FINAL_STATUSES:
            raise InvariantViolation(f"payment {self.payment_id} cannot complete as {status.value}")
        return replace(self, status=status, failure_reason=reason, completed_at=at)


@dataclass(frozen=True)
class UnknownOutcome:
    """A call about `order` that ended without the processor's answer. The money may
    have moved: look the payment up by `order.idempotency_key` (or wait for its event)
    before doing anything that assumes it did or did not."""

    order: PaymentOrder
    # Why no answer came: the gRPC status name (DEADLINE_EXCEEDED, UNAVAILABLE, ...).
    cause: str

    status = PaymentStatus.UNKNOWN

    @property
    def idempotency_key(self) -> str:
        return self.order.idempotency_key


@dataclass(frozen=True)
class PaymentEvent:
    """The final result of one payment, as the processor's stream delivers it."""

    sequence: int
    payment_id: str
    idempotency_key: str
    reference: str
    kind: PaymentKind
    amount_minor: int
    currency: str
    status: PaymentStatus
    failure_reason: FailureReason | None
    occurred_at: datetime
    account_id: str = ""
    merchant_id: str = ""

    @classmethod
    def of(cls, sequence: int, payment: PaymentResult) -> PaymentEvent:
        """The event that reports `payment`'s final result under `sequence`."""
        if payment.completed_at is None:
            raise InvariantViolation(f"payment {payment.payment_id} is PENDING: there is no result to report")
        order = payment.order
        return cls(sequence=sequence, payment_id=payment.payment_id, idempotency_key=order.idempotency_key,
                   reference=order.reference, kind=order.kind, amount_minor=order.amount_minor,
                   currency=order.currency, status=payment.status, failure_reason=payment.failure_reason,
                   occurred_at=payment.completed_at, account_id=order.account_id, merchant_id=order.merchant_id)
