"""What a payment's result is, from wherever it came (a call's answer, a look-up, an
event of the gateway's stream), and what applying it did: shared by the customers'
payment orders and the merchants' payments."""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import structlog

from server.domain.payments import (
    FailureReason,
    PaymentEvent,
    PaymentKind,
    PaymentOrder,
    PaymentResult,
    PaymentStatus,
    UnknownOutcome,
)
from server.payments.gateway import PaymentGateway, PaymentRejected

log = structlog.get_logger(__name__)


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


# Applies a result in a transaction of its own.
ApplyAlone = Callable[[Result], Awaitable[Applied]]


async def ask(gateway: PaymentGateway | None, request: PaymentOrder, apply_alone: ApplyAlone, *, rejected: str,
              **fields: str) -> Applied:
    """Ask the gateway for a payment (its key makes asking again safe) and apply the
    answer; no transaction is open during the call. A refusal (`rejected` is logged: our
    request is wrong, a bug to fix), PENDING or no answer leave it REQUESTED for the
    reconciliation."""
    if gateway is None:
        raise RuntimeError("no payment gateway configured")
    try:
        answer = await gateway.submit(request)
    except PaymentRejected as error:
        log.error(rejected, **fields, error=str(error))
        return Applied.NOT_FINAL
    if isinstance(answer, UnknownOutcome):
        log.warning("payment_order_outcome_unknown", **fields, cause=answer.cause)
        return Applied.NOT_FINAL
    return await apply_alone(Result.of(answer))


async def look_up(gateway: PaymentGateway | None, key: str, resubmit: Callable[[], Awaitable[Applied]],
                  apply_alone: ApplyAlone, **fields: str) -> Applied:
    """Settle a REQUESTED payment from what the gateway knows of its key: a final result
    is applied; PENDING waits; one the gateway never took is asked for again
    (`resubmit`, with the same key)."""
    if gateway is None:
        raise RuntimeError("no payment gateway configured")
    found = await gateway.get(idempotency_key=key)
    if found is None:
        log.info("payment_order_resubmitted", **fields)
        return await resubmit()
    return await apply_alone(Result.of(found))
