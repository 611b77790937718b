"""The simulated processor's record: every payment by id and by idempotency key, in the
order taken, and the log of result events that WatchPayments serves.

A payment is taken PENDING and completes once, SUCCEEDED or FAILED, as its behaviour
says: at once, or `delay_s` later on the event loop. Each completion appends one event;
`answers_twice` appends a second one for the same result `delay_s` later.

`snapshot` and `restore` carry the book over a restart (server/payment_sim/state.py),
in the contract's own JSON form; `on_change` is called after every change.
"""

from __future__ import annotations

import asyncio
import collections
import enum
import itertools
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format

from credit.v1 import payment_gateway_pb2 as pb
from server.clock import Clock, SystemClock
from server.domain.errors import CreditError, FailedPrecondition, IdempotencyKeyReused, NotFound
from server.domain.payments import FailureReason, PaymentEvent, PaymentKind, PaymentOrder, PaymentResult, PaymentStatus
from server.payments.messages import event_from_proto, event_to_proto, payment_from_proto, payment_to_proto

MAX_PAYMENTS = 100_000
MAX_EVENTS = 100_000
# Events one read of the log returns at most; the stream reads again for the rest.
EVENT_BATCH = 500


class Answer(enum.Enum):
    AT_ONCE = "at_once"  # the call answers with the final result
    PENDING = "pending"  # the call answers PENDING; the result follows on the stream
    NEVER = "never"  # the call does not answer before the caller's deadline


@dataclass(frozen=True)
class Behaviour:
    name: str
    answer: Answer
    status: PaymentStatus
    reason: FailureReason | None = None
    # The result's event is delivered a second time, late.
    twice: bool = False

    def reason_for(self, kind: PaymentKind) -> FailureReason | None:
        """A bad instrument is a bad merchant account when paying a merchant."""
        if self.reason is FailureReason.INSTRUMENT_INVALID and kind is PaymentKind.MERCHANT:
            return FailureReason.MERCHANT_INVALID
        return self.reason


BEHAVIOURS = {b.name: b for b in (
    Behaviour("succeeds", Answer.AT_ONCE, PaymentStatus.SUCCEEDED),
    Behaviour("insufficient_funds", Answer.AT_ONCE, PaymentStatus.FAILED, FailureReason.INSUFFICIENT_FUNDS),
    Behaviour("instrument_invalid", Answer.AT_ONCE, PaymentStatus.FAILED, FailureReason.INSTRUMENT_INVALID),
    Behaviour("declined", Answer.AT_ONCE, PaymentStatus.FAILED, FailureReason.DECLINED),
    Behaviour("times_out", Answer.NEVER, PaymentStatus.SUCCEEDED),
    Behaviour("times_out_fails", Answer.NEVER, PaymentStatus.FAILED, FailureReason.INSUFFICIENT_FUNDS),
    Behaviour("answers_late", Answer.PENDING, PaymentStatus.SUCCEEDED),
    Behaviour("answers_late_fails", Answer.PENDING, PaymentStatus.FAILED, FailureReason.INSUFFICIENT_FUNDS),
    Behaviour("answers_twice", Answer.AT_ONCE, PaymentStatus.SUCCEEDED, twice=True),
)}
BY_LAST_DIGIT = {"0": "succeeds", "1": "succeeds", "2": "insufficient_funds", "3": "instrument_invalid",
                 "4": "times_out", "5": "answers_late", "6": "answers_twice", "7": "answers_late_fails",
                 "8": "times_out_fails", "9": "succeeds"}


class BookFull(CreditError):
    code = "RESOURCE_EXHAUSTED"


class Book:
    """Payments and result events of one simulator run. `behaviours` maps an instrument
    token or merchant id to a behaviour's name, ahead of the last-digit table."""

    def __init__(self, behaviours: dict[str, str] | None = None, *, delay_s: float = 2.0,
                 clock: Clock | None = None) -> None:
        unknown = {name for name in (behaviours or {}).values() if name not in BEHAVIOURS}
        if unknown:
            raise ValueError(f"unknown behaviours {sorted(unknown)}; known: {sorted(BEHAVIOURS)}")
        self._behaviours = dict(behaviours or {})
        self._delay_s = delay_s
        self._clock = clock or SystemClock()
        self._payments: dict[str, PaymentResult] = {}
        self._by_key: dict[str, str] = {}
        # Payment ids in the order taken: the order ListPayments pages in.
        self._taken: list[str] = []
        self._events: collections.deque[PaymentEvent] = collections.deque(maxlen=MAX_EVENTS)
        self._last_sequence = 0
        self._appended = asyncio.Event()
        self._timers: set[asyncio.TimerHandle] = set()
        # The behaviour of each payment still PENDING, by payment id.
        self._pending: dict[str, Behaviour] = {}
        self.on_change: Callable[[], None] = lambda: None

    def behaviour(self, order: PaymentOrder) -> Behaviour:
        target = order.merchant_id if order.kind is PaymentKind.MERCHANT else order.instrument_token
        return BEHAVIOURS[self._behaviours.get(target) or BY_LAST_DIGIT.get(target[-1:], "succeeds")]

    def submit(self, order: PaymentOrder) -> tuple[PaymentResult, Behaviour | None]:
        """Take `order`: the new payment and its behaviour, or for a repeat of an order
        already taken, that payment as it stands and None."""
        known = self._by_key.get(order.idempotency_key)
        if known is not None:
            payment = self._payments[known]
            if payment.order != order:
                raise IdempotencyKeyReused("payment")
            return payment, None
        if len(self._payments) >= MAX_PAYMENTS:
            raise BookFull(f"the simulator keeps at most {MAX_PAYMENTS} payments; restart it")
        behaviour = self.behaviour(order)
        payment = PaymentResult(payment_id=f"pay_{secrets.token_hex(12)}", order=order,
                                status=PaymentStatus.PENDING, created_at=self._clock.now())
        self._payments[payment.payment_id] = payment
        self._by_key[order.idempotency_key] = payment.payment_id
        self._taken.append(payment.payment_id)
        self._pending[payment.payment_id] = behaviour
        if behaviour.answer is Answer.AT_ONCE:
            self._complete(payment.payment_id, behaviour)
        else:
            self._later(self._complete, payment.payment_id, behaviour)
            self.on_change()
        return self._payments[payment.payment_id], behaviour

    def get(self, payment_id: str) -> PaymentResult:
        payment = self._payments.get(payment_id)
        if payment is None:
            raise NotFound("payment_id", payment_id, "payment")
        return payment

    def by_key(self, idempotency_key: str) -> PaymentResult:
        payment_id = self._by_key.get(idempotency_key)
        if payment_id is None:
            raise NotFound("idempotency_key", idempotency_key, "payment made with the key")
        return self._payments[payment_id]

    def page(self, start: int, size: int, status: PaymentStatus | None,
             kind: PaymentKind | None) -> tuple[list[PaymentResult], int | None]:
        """Up to `size` payments of `status` and `kind` (None: any) taken at position
        `start` or later, and the position the next page starts at (None: no more)."""
        found: list[PaymentResult] = []
        position = start
        while position < len(self._taken) and len(found) < size:
            payment = self._payments[self._taken[position]]
            position += 1
            if (status is None or payment.status is status) and (kind is None or payment.kind is kind):
                found.append(payment)
        return found, position if position < len(self._taken) else None

    def events_after(self, sequence: int) -> list[PaymentEvent]:
        """Events with a sequence above `sequence`, oldest first, at most EVENT_BATCH."""
        if sequence > self._last_sequence:
            raise FailedPrecondition(f"after_sequence: {sequence} is beyond the last event ({self._last_sequence}); "
                                     "a simulator restarted without its state file starts again at 1")
        first = self._events[0].sequence if self._events else self._last_sequence + 1
        if sequence < first - 1:
            raise FailedPrecondition(f"after_sequence: events up to {first - 1} are no longer kept; "
                                     "read the payments with ListPayments instead")
        start = sequence - first + 1
        return list(itertools.islice(self._events, start, start + EVENT_BATCH))

    async def wait_after(self, sequence: int) -> None:
        """Return once an event with a sequence above `sequence` is in the log."""
        while self._last_sequence <= sequence:
            await self._appended.wait()

    def snapshot(self) -> dict[str, Any]:
        """Everything the book holds, as JSON-ready data."""
        return {
            "payments": [_json(payment_to_proto(self._payments[payment_id])) for payment_id in self._taken],
            "pending_behaviours": {payment_id: b.name for payment_id, b in self._pending.items()},
            "events": [_json(event_to_proto(event)) for event in self._events],
            "last_sequence": self._last_sequence,
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Take back a `snapshot` into this empty book; payments still PENDING complete
        `delay_s` from now, as their behaviour says."""
        if self._payments or self._last_sequence:
            raise ValueError("restore needs an empty book")
        for data in snapshot["payments"]:
            payment = payment_from_proto(json_format.ParseDict(data, pb.Payment()))
            self._payments[payment.payment_id] = payment
            self._by_key[payment.idempotency_key] = payment.payment_id
            self._taken.append(payment.payment_id)
        self._events.extend(event_from_proto(json_format.ParseDict(data, pb.PaymentEvent()))
                            for data in snapshot["events"])
        self._last_sequence = int(snapshot["last_sequence"])
        for payment_id, name in snapshot["pending_behaviours"].items():
            if self._payments[payment_id].status is PaymentStatus.PENDING:
                self._pending[payment_id] = BEHAVIOURS[name]
                self._later(self._complete, payment_id, BEHAVIOURS[name])

    def close(self) -> None:
        """Cancel the results still to come."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()

    def _complete(self, payment_id: str, behaviour: Behaviour) -> None:
        payment = self._payments[payment_id]
        done = payment.completed(behaviour.status, self._clock.now(), behaviour.reason_for(payment.kind))
        self._payments[payment_id] = done
        del self._pending[payment_id]
        self._append(done)
        if behaviour.twice:
            self._later(self._append, done)

    def _append(self, payment: PaymentResult) -> None:
        self._last_sequence += 1
        self._events.append(PaymentEvent.of(self._last_sequence, payment))
        # Wake every waiting stream, and give later waiters an event not yet set.
        self._appended.set()
        self._appended = asyncio.Event()
        self.on_change()

    def _later(self, callback, *args) -> None:
        def run() -> None:
            self._timers.discard(timer)
            callback(*args)

        timer = asyncio.get_running_loop().call_later(self._delay_s, run)
        self._timers.add(timer)


def _json(message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)
