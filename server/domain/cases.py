"""A collections case's named values: why a case went to the human queue, and where a
promise to pay was made. The API's enums EscalationReason and PromiseSource carry the
same names behind their prefixes (a test checks both ways).

An escalation is stored as one text: the reason's name, or `STEP_<step code>` for a
reminder step that escalates (step codes are data, so the code is kept with it)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from server.domain.errors import InvariantViolation

STEP_PREFIX = "STEP_"


class PromiseSource(enum.StrEnum):
    API = "API"      # RecordPromiseToPay
    VOICE = "VOICE"  # a reminder call


class EscalationReason(enum.StrEnum):
    BROKEN_PROMISE = "BROKEN_PROMISE"
    DISPUTE = "DISPUTE"
    AGENT_REQUESTED = "AGENT_REQUESTED"
    REMINDER_STEP = "REMINDER_STEP"


@dataclass(frozen=True)
class Escalation:
    reason: EscalationReason
    # REMINDER_STEP only: the step taken.
    step_code: str | None = None

    def __post_init__(self) -> None:
        if (self.reason is EscalationReason.REMINDER_STEP) != bool(self.step_code):
            raise InvariantViolation(f"escalation {self.reason} with step code {self.step_code!r}: a step code "
                                     "goes with REMINDER_STEP and only with it")

    @classmethod
    def by_step(cls, step_code: str) -> Escalation:
        return cls(EscalationReason.REMINDER_STEP, step_code)

    def stored(self) -> str:
        return STEP_PREFIX + self.step_code if self.step_code else self.reason.value

    @classmethod
    def of_stored(cls, text: str) -> Escalation:
        """The escalation that `stored()` wrote as `text`; anything else is a bug."""
        if text.startswith(STEP_PREFIX):
            return cls.by_step(text.removeprefix(STEP_PREFIX))
        try:
            reason = EscalationReason(text)
        except ValueError:
            raise InvariantViolation(f"a case escalated for an unknown reason {text!r}") from None
        if reason is EscalationReason.REMINDER_STEP:
            raise InvariantViolation("a case escalated by a step with no step code")
        return cls(reason)
