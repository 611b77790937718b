"""Errors of the credit core, and the gRPC status each one becomes.

    CreditError                      base class; carries the status code name
    +-- InvalidArgument              INVALID_ARGUMENT: names every bad field
    +-- NotFound                     NOT_FOUND: names the field holding the unknown id
    +-- AlreadyExists                ALREADY_EXISTS: the thing to create exists
    |   +-- IdempotencyKeyReused     the key was used before for a different request
    +-- FailedPrecondition           FAILED_PRECONDITION: the state forbids the command
    +-- Aborted                      ABORTED: a conflict the caller may retry

    InvariantViolation               not a CreditError: a bug in our code, INTERNAL

The domain knows no gRPC; `code` is the name of a `grpc.StatusCode` member and the one
error-mapping interceptor turns it into a status with rich details.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class CreditError(Exception):
    code = "UNKNOWN"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(CreditError):
    code = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation]) -> None:
        if not violations:
            raise InvariantViolation("InvalidArgument needs at least one field violation")
        self.violations = tuple(violations)
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))

    @classmethod
    def of(cls, field: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field, description)])


class NotFound(CreditError):
    code = "NOT_FOUND"

    def __init__(self, field: str, value: str, what: str) -> None:
        self.field = field
        super().__init__(f"{field}: no {what} with id {value!r}")


class AlreadyExists(CreditError):
    code = "ALREADY_EXISTS"


class IdempotencyKeyReused(AlreadyExists):
    def __init__(self, method: str) -> None:
        self.field = "idempotency_key"
        super().__init__(
            f"idempotency_key: already used for a different {method} request; "
            "use a new key for a new request"
        )


class FailedPrecondition(CreditError):
    code = "FAILED_PRECONDITION"


class Aborted(CreditError):
    code = "ABORTED"


class InvariantViolation(Exception):
    """A rule of the books does not hold: a bug, never the caller's fault."""
