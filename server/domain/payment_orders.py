"""Payment orders: our side of every payment through the payment gateway.

1. An order asks for one movement of money of a `OrderKind`. Its id is the payment's
   idempotency key at the gateway, so asking again (after a call that got no answer, or
   from a reconciliation) can never move the money twice.
2. It is REQUESTED from the moment it is written, with the entry that sets its amount
   aside (for a PAYOUT: the credit balance moves to PAYOUTS_IN_FLIGHT), and moves exactly
   once to SUCCEEDED or FAILED when the gateway's final result is known: the answer to
   the call, an event of its stream, or a look-up by the key.
3. Completing an order books what its kind says the result means (`completion`); a
   PENDING answer, or no answer at all, leaves it REQUESTED.
4. A result for an order that is already final (a duplicate or late event, a second
   look-up) changes nothing.

A DEBIT (auto-debit of what is due, server/domain/auto_debit.py) sets nothing aside
when it is written (the money is still the customer's) and is not booked by
`completion`: a SUCCEEDED one is a repayment through the waterfall, recorded under the
order's id, and a FAILED one books nothing. A MERCHANT payment (settling what checkout
owes a merchant) adds its member here and its rows to `completion`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from server.domain import ledger
from server.domain.errors import InvariantViolation
from server.domain.ledger import JournalEntry
from server.domain.payments import FINAL_STATUSES, PaymentKind, PaymentStatus


class OrderKind(enum.Enum):
    PAYOUT = "PAYOUT"  # a customer's credit balance to their bound instrument
    DEBIT = "DEBIT"  # what falls due, from the customer's bound instrument (auto-debit)


class OrderStatus(enum.Enum):
    REQUESTED = "REQUESTED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class PayoutStatus(enum.Enum):
    """A payout as the API shows it: its order's status, REQUESTED read as PENDING."""

    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class PaymentMethodKind(enum.Enum):
    CARD = "CARD"
    WALLET = "WALLET"


class PaymentMethodStatus(enum.Enum):
    ACTIVE = "ACTIVE"
    REPLACED = "REPLACED"


# The gateway's kind of payment for each kind of order.
GATEWAY_KIND = {OrderKind.PAYOUT: PaymentKind.PAYOUT, OrderKind.DEBIT: PaymentKind.DEBIT}


def payout_status(status: OrderStatus) -> PayoutStatus:
    return PayoutStatus.PENDING if status is OrderStatus.REQUESTED else PayoutStatus(status.value)


@dataclass(frozen=True)
class Completion:
    """What a final result books: the journal entry, and how much goes back to the
    customer's credit balance."""

    entry: JournalEntry
    credit_balance_delta_minor: int


def requested(kind: OrderKind, amount_minor: int) -> Completion:
    """What writing a new order books: the amount set aside until the result is known."""
    if kind is OrderKind.PAYOUT:
        return Completion(ledger.payout_requested(amount_minor), -amount_minor)
    raise InvariantViolation(f"no booking for an order of kind {kind}")


def completion(kind: OrderKind, status: PaymentStatus, amount_minor: int) -> Completion:
    """What an order of `kind` books when the gateway's final `status` is known."""
    if status not in FINAL_STATUSES:
        raise InvariantViolation(f"an order completes only as SUCCEEDED or FAILED, not {status.value}")
    if kind is OrderKind.PAYOUT:
        if status is PaymentStatus.SUCCEEDED:
            return Completion(ledger.payout_succeeded(amount_minor), 0)
        return Completion(ledger.payout_failed(amount_minor), amount_minor)
    raise InvariantViolation(f"no booking for an order of kind {kind}")


# The token of an instrument as we keep it: the processor's, 4..128 printable ASCII.
MIN_TOKEN_LENGTH = 4
MAX_DISPLAY_HINT_LENGTH = 64


def last4(token: str) -> str:
    """What replies and logs show of an instrument token."""
    return token[-4:]
