"""What a payment's result is, from wherever it came (a call's answer, a look-up, an
event of the gateway's stream), and what applying it did: shared by the customers'
payment orders and the merchants' payments."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from server.domain.payments import FailureReason, PaymentEvent, PaymentKind, PaymentResult, PaymentStatus


class Applied(enum.Enum):
    """What applying a result did."""

    COMPLETED = "completed"  # the order (or merchant-day) became final and its entry was booked
    ALREADY_FINAL = "already_final"  # a duplicate or late result: nothing changed
    NOT_FINAL = "not_final"  # PENDING (or no answer): the order stays REQUESTED
    UNKNOWN_ORDER = "unknown_order"  # no order of ours has this key
    MISMATCH = "mismatch"  # the result disagrees with the order (amount, kind): not applied
    ERROR = "error"  # applying it broke a rule of the books: rolled back, logged, to be looked at


@dataclass(frozen=True)
class Result:
    """A final (or not yet final) result, from a call's answer, a look-up or an event."""

    idempotency_key: str
    account_id: str
    payment_id: str
    status: PaymentStatus
    amount_minor: int
    failure_reason: FailureReason | None
    completed_at: datetime | None
    kind: PaymentKind = PaymentKind.PAYOUT
    merchant_id: str = ""

    @classmethod
    def of(cls, payment: PaymentResult | PaymentEvent) -> Result:
        if isinstance(payment, PaymentEvent):
            return cls(payment.idempotency_key, payment.account_id, payment.payment_id, payment.status,
                       payment.amount_minor, payment.failure_reason, payment.occurred_at, payment.kind,
                       payment.merchant_id)
        return cls(payment.idempotency_key, payment.order.account_id, payment.payment_id, payment.status,
                   payment.amount_minor, payment.failure_reason, payment.completed_at, payment.order.kind,
                   payment.order.merchant_id)


def uuid_or_none(value: str) -> UUID | None:
    try:
        return UUID(value)
    except ValueError:
        return None
